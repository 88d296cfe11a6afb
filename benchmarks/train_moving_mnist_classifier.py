"""Train the MovingMNIST digit/motion classifier whose weights ship with keras_vdiff.

Produces ``keras_vdiff/metrics/weights/moving_mnist_classifier.weights.h5`` (the
judge of ``kv.metrics.conditional_accuracy``) and
``benchmarks/results/moving_mnist_classifier.json`` with the held-out accuracy.

Data: ``kv.data.moving_mnist`` with scikit-learn's bundled digits (offline),
train split, 10 frames, at 32x32 and at 16x16 (upsampled to 32x32 inside the
classifier). Every epoch, half of the videos get a random affine map of the
digit's shape (``jitter_shapes``: with only ~1,400 training digit images this is
what makes the classifier generalise to unseen handwriting) and 70% get a fresh
degradation (``augment_like_samples``: blur, noise, contrast, speckles), so the
classifier recognises blurry/noisy generated digits; new trajectories are drawn
every ``--fresh-every`` epochs. Evaluation uses the test split, whose digit
images the classifier never saw, clean and degraded.

Measured: 40 minutes on the 2-core CPU next to a training job (an estimated
15 on a quiet one) with the TensorFlow backend, whose Conv3D is much faster
than JAX's on CPU; the weights load on every backend.

    KERAS_BACKEND=tensorflow python benchmarks/train_moving_mnist_classifier.py
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_vdiff.data.moving_mnist import moving_mnist
from keras_vdiff.metrics.moving_mnist_classifier import (
    DEFAULT_WEIGHTS,
    MovingMNISTClassifier,
    augment_like_samples,
)
from keras_vdiff.atomic_files import staged_file
from keras_vdiff.atomic_files import write_json as atomic_write_json
from keras_vdiff.atomic_files import write_text as atomic_write_text

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "moving_mnist_classifier.json")


def write_markdown(results, path):
    """The held-out accuracies of a results dict as a markdown table (written atomically)."""
    lines = [
        "# MovingMNIST classifier (judge of conditional accuracy)",
        "",
        f"{results['parameters']:,} parameters, trained in {results['train_seconds']:.0f} s on a 2-core CPU "
        f"({results['backend']} backend), {results['epochs']} epochs over "
        f"{results['train_videos']['32']:,} 32x32 + {results['train_videos']['16']:,} 16x16 videos "
        "(scikit-learn digits, train split).",
        "Held out: 1,200 videos per row from the test split (digit images never seen in training); "
        "'degraded' adds blur, noise, contrast changes and speckles like diffusion samples.",
        "",
        "| videos | digit accuracy | motion accuracy | both |",
        "|---|---|---|---|",
    ]
    for name, row in results["held_out"].items():
        lines.append(f"| {name} | {100 * row['digit']:.1f}% | {100 * row['motion']:.1f}% | {100 * row['both']:.1f}% |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def upsampled(model, videos, chunk=512):
    """float [0, 1] videos at any size -> the classifier's input size, via its own resize."""
    parts = [keras.ops.convert_to_numpy(model.resize_frames(videos[i : i + chunk]))
             for i in range(0, len(videos), chunk)]
    return np.concatenate(parts).astype(np.float32)


def jitter_shapes(videos, rng, rotation=12.0, shear=0.15, scale=0.1):
    """A random affine map per video (rotation, shear, anisotropic scale about the frame centre).

    The same map is applied to every frame of a video, so the digit's shape
    changes (a new handwriting, in effect) while its motion stays the same
    kind of motion. With only ~1,400 training digit images, this is what lets
    the classifier generalise to digit images it never saw.
    """
    from scipy.ndimage import affine_transform

    videos = np.asarray(videos, np.float32)
    out = np.empty_like(videos)
    size = videos.shape[2]
    centre = np.array([(size - 1) / 2.0] * 2)
    for i in range(len(videos)):
        angle = np.deg2rad(rng.uniform(-rotation, rotation))
        rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shear_map = np.array([[1.0, rng.uniform(-shear, shear)], [0.0, 1.0]])
        matrix2d = rotate @ shear_map @ np.diag(1.0 + rng.uniform(-scale, scale, 2))
        matrix = np.eye(3)
        matrix[1:, 1:] = matrix2d
        offset = np.zeros(3)
        offset[1:] = centre - matrix2d @ centre
        out[i, ..., 0] = affine_transform(videos[i, ..., 0], matrix, offset=offset, order=1, mode="constant")
    return out


def make_epoch(model, sets, rng, augment_fraction, jitter_fraction=0.0):
    """One epoch of inputs: each size's videos, some shape-jittered, some degraded, resized to the model size."""
    inputs, digits, motions = [], [], []
    for data in sets:
        videos = data["videos"].astype(np.float32) / 255.0
        jittered = rng.random(len(videos)) < jitter_fraction
        if jittered.any():
            videos[jittered] = jitter_shapes(videos[jittered], rng)
        chosen = rng.random(len(videos)) < augment_fraction
        videos[chosen] = augment_like_samples(videos[chosen], rng)
        inputs.append(upsampled(model, videos))
        digits.append(data["digits"])
        motions.append(data["motions"])
    order = rng.permutation(sum(len(d) for d in digits))
    return (np.concatenate(inputs)[order],
            {"digits": np.concatenate(digits)[order], "motions": np.concatenate(motions)[order]})


def evaluate(model, frame_size, num_videos, seed, degraded):
    data = moving_mnist(num_videos, frame_size=frame_size, seed=seed, digits_source="sklearn", split="test")
    videos = data["videos"]
    if degraded:
        videos = augment_like_samples(videos / 255.0, np.random.default_rng(seed))
    digits, motions = model.predict(videos)
    return {
        "digit": float(np.mean(digits == data["digits"])),
        "motion": float(np.mean(motions == data["motions"])),
        "both": float(np.mean((digits == data["digits"]) & (motions == data["motions"]))),
    }


def save_without_optimizer(model, path):
    """Write only the model variables (not the optimizer's) to ``path``, atomically."""
    inference = MovingMNISTClassifier(**{k: v for k, v in model.get_config().items()
                                         if k in ("frame_size", "filters", "dropout")})
    inference.build((None, 10, inference.frame_size, inference.frame_size, 1))
    inference.set_weights(model.get_weights())
    with staged_file(path) as staging:
        inference.save_weights(staging, overwrite=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos-32", type=int, default=9000)
    parser.add_argument("--videos-16", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--augment-fraction", type=float, default=0.7)
    parser.add_argument("--jitter-fraction", type=float, default=0.5,
                        help="fraction of videos per epoch whose digit shape is randomly sheared/rotated/scaled")
    parser.add_argument("--fresh-every", type=int, default=2,
                        help="draw new trajectories (same training digit images) every this many epochs")
    parser.add_argument("--filters", default="24,48,64,96", help="channels of the four 3D convolutions")
    parser.add_argument("--init", default=None,
                        help="start from these weights (fine-tuning; e.g. the shipped file) instead of random ones")
    parser.add_argument("--output", default=DEFAULT_WEIGHTS)
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args()

    start = time.time()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    filters = tuple(int(f) for f in args.filters.split(","))

    def training_sets(round_):
        return [
            moving_mnist(args.videos_32, frame_size=32, seed=1 + 10 * round_, digits_source="sklearn", split="train"),
            moving_mnist(args.videos_16, frame_size=16, seed=2 + 10 * round_, digits_source="sklearn", split="train"),
        ]

    sets = training_sets(0)
    model = MovingMNISTClassifier(filters=filters)
    model.build((None, 10, model.frame_size, model.frame_size, 1))
    if args.init:
        model.load_weights(args.init)
        print(f"fine-tuning from {args.init}", flush=True)
    steps = args.epochs * ((args.videos_32 + args.videos_16) // args.batch_size + 1)
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, decay_steps=steps, alpha=0.02)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
        loss={"digits": cross_entropy, "motions": cross_entropy},
    )
    for epoch in range(args.epochs):
        if epoch and args.fresh_every and epoch % args.fresh_every == 0:
            sets = training_sets(epoch // args.fresh_every)
        x, y = make_epoch(model, sets, rng, args.augment_fraction, args.jitter_fraction)
        history = model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {history.history['loss'][-1]:.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
    train_seconds = time.time() - start

    save_without_optimizer(model, args.output)

    results = {
        "backend": keras.backend.backend(),
        "train_seconds": round(train_seconds, 1),
        "train_videos": {"32": args.videos_32, "16": args.videos_16},
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "init": os.path.basename(args.init) if args.init else None,
        "filters": list(filters),
        "jitter_fraction": args.jitter_fraction,
        "fresh_every": args.fresh_every,
        "parameters": int(model.count_params()),
        "held_out": {
            f"{size}x{size} {'degraded' if degraded else 'clean'}": evaluate(model, size, 1200, 100 + size, degraded)
            for size in (32, 16)
            for degraded in (False, True)
        },
    }
    atomic_write_json(args.results, results)
    write_markdown(results, os.path.splitext(args.results)[0] + ".md")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
