"""Native sizes on MovingMNIST: one tiny Latte trained on 16x16 and 16x24 videos, sampled at both shapes.

The shipped ``latte_tiny_moving_mnist`` (trained at 10x16x16) is fine-tuned on
aspect-ratio buckets (``kv.data.BucketedBatches``: each batch all 16x16 or all
16x24; 16x24 MovingMNIST from ``moving_mnist(frame_size=(16, 24))``) with the same
weights serving both shapes (``VideoBackbone.at_shape``: the positions are
computed for each shape). Every caption is sampled at both shapes before and
after the fine-tuning and scored with the MovingMNIST classifier, which takes
square frames: 16x24 videos are scored on their central 16x16 crop and, zero
padded, at 24x24 (real held-out 16x24 videos give the ceiling of each reading).

    KERAS_BACKEND=jax python benchmarks/native_sizes_moving_mnist.py --minutes 35 --output-dir runs/native_sizes
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import keras_vdiff as kv
from keras_vdiff.data.moving_mnist import MOTIONS, moving_mnist
from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy
from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier
from keras_vdiff.training.media import contact_sheet
from keras_vdiff.training.moving_mnist import RECOMMENDED_SAMPLING, all_captions, generate_in_batches

SHAPES = ((16, 16), (16, 24))


def square_readings(videos):
    """The classifier's square inputs of videos ``(N, F, H, W, 1)``: ``{name: videos}``."""
    height, width = videos.shape[2:4]
    if height == width:
        return {"as is": videos}
    side, extra = min(height, width), abs(width - height)
    if width > height:
        crop = videos[:, :, :, extra // 2:extra // 2 + side]
        pad = ((0, 0), (0, 0), (extra // 2, extra - extra // 2), (0, 0), (0, 0))
    else:
        crop = videos[:, :, extra // 2:extra // 2 + side]
        pad = ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2), (0, 0))
    return {"central crop": crop, "zero padded": np.pad(videos, pad)}


def scores(videos, digits, motions, classifier):
    return {name: conditional_accuracy(v, digits, motions, classifier=classifier)
            for name, v in square_readings(videos).items()}


def summary(result):
    return {name: {key: round(float(value[key]), 4) for key in ("overall", "digit", "motion")}
            for name, value in result.items()}


def sample_all(model, samples_per_caption, frame_size, seed):
    captions = all_captions() * samples_per_caption
    start = time.perf_counter()
    videos = generate_in_batches(model, captions, batch_size=30, progress=False, seed=seed, frame_size=frame_size,
                                 **RECOMMENDED_SAMPLING)
    return videos, (time.perf_counter() - start) / len(captions)


def evaluate(model, samples_per_caption, classifier, seed=0):
    digits = np.array([d for _ in range(samples_per_caption) for d in range(10) for _ in MOTIONS])
    motions = np.array([m for _ in range(samples_per_caption) for _ in range(10) for m in range(len(MOTIONS))])
    results, videos = {}, {}
    for shape in SHAPES:
        sampled, seconds = sample_all(model, samples_per_caption, shape, seed)
        videos[shape] = sampled
        results["x".join(map(str, shape))] = dict(summary(scores(sampled, digits, motions, classifier)),
                                                  seconds_per_video=round(seconds, 3))
    return results, videos


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=35.0, help="fine-tuning wall-time budget")
    parser.add_argument("--num-videos", type=int, default=4000, help="training videos per shape")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--samples-per-caption", type=int, default=2)
    parser.add_argument("--output-dir", default="runs/native_sizes")
    parser.add_argument("--sheet", default="benchmarks/results/native_sizes_moving_mnist.png")
    args = parser.parse_args()
    os.makedirs(args.output_dir, exist_ok=True)
    report = dict(backend=keras.backend.backend(), args=vars(args))

    classifier = MovingMNISTClassifier.load()
    digits_source = "auto"
    real = {}
    for shape in SHAPES:
        data = moving_mnist(300, frame_size=shape, seed=12345, split="test", digits_source=digits_source)
        real["x".join(map(str, shape))] = summary(scores(data["videos"], data["digits"], data["motions"], classifier))
    report["real_test_videos"] = real
    print("real:", json.dumps(real))

    model = kv.VideoDiffusion.from_preset("latte_tiny_moving_mnist")
    report["before"], _ = evaluate(model, args.samples_per_caption, classifier)
    print("before:", json.dumps(report["before"]))

    train = [moving_mnist(args.num_videos, frame_size=shape, seed=100 + k, digits_source=digits_source)
             for k, shape in enumerate(SHAPES)]
    batches = kv.data.BucketedBatches(train, batch_size=args.batch_size, tokenizer=model.text_encoder.tokenizer,
                                      drop_remainder=True, seed=7)
    optimizer = keras.optimizers.AdamW(args.learning_rate, weight_decay=0.0, use_ema=True, ema_momentum=0.995)
    model.compile(optimizer=optimizer)
    budget = kv.training.TrainingBudget(max_seconds=args.minutes * 60)
    losses = kv.training.StepLosses()
    start = time.perf_counter()
    model.fit(batches, epochs=1000, callbacks=[budget, losses], verbose=0)
    model.optimizer.finalize_variable_values(model.trainable_variables)
    report["training"] = dict(steps=budget.steps, seconds=round(time.perf_counter() - start, 1),
                              final_loss=float(np.mean(losses.losses[-100:])) if losses.losses else None)
    print("training:", json.dumps(report["training"]))
    model.save_to_preset(os.path.join(args.output_dir, "pipeline"))

    report["after"], videos = evaluate(model, args.samples_per_caption, classifier)
    print("after:", json.dumps(report["after"]))
    # Contact sheet: the same six captions at both shapes, 10 frames each (16x16 rows padded to 24 wide).
    rows = [0, 4, 8, 13, 20, 28]
    square = np.pad(videos[SHAPES[0]][rows], ((0, 0), (0, 0), (0, 0), (4, 4), (0, 0)), constant_values=32)
    sheet = np.concatenate([square, videos[SHAPES[1]][rows]])
    labels = [f"16x16: {all_captions()[r]}" for r in rows] + [f"16x24: {all_captions()[r]}" for r in rows]
    contact_sheet(sheet, args.sheet, scale=2, labels=labels)
    with open(os.path.join(args.output_dir, "report.json"), "w") as file:
        json.dump(report, file, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
