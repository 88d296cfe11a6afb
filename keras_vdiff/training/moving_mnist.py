"""The MovingMNIST recipe: the demo's text-to-video model, its data, how to sample and score it.

- ``moving_mnist_text_to_video(...)`` builds a text-to-video ``VideoDiffusion``
  (Latte + ``SmallTextEncoder`` by default) for generated MovingMNIST;
- ``moving_mnist_training_data`` generates matching videos and captions;
- ``evaluate_moving_mnist`` samples every caption and scores the samples with
  the shipped classifier.
"""

import time

import keras
import numpy as np

from keras_vdiff.data.moving_mnist import MOTIONS, caption, moving_mnist
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.models.latte import Latte
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.tasks import VideoDiffusion


def all_captions():
    """The 30 MovingMNIST captions (10 digits x 3 motions), digit-major."""
    return [caption(digit, motion) for digit in range(10) for motion in range(len(MOTIONS))]


# The tiny text-to-video configuration of the demo and of the `latte_tiny_moving_mnist`
# preset: 10 frames of 16x16 grey pixels, 4x4 patches -> 16 tokens per frame, 160 per video,
# a token budget a 2-core CPU can train in minutes (benchmarks/RESULTS.md).
TINY_MOVING_MNIST = dict(
    frame_size=16,
    num_frames=10,
    backbone=dict(
        patch_size=4,
        hidden_dim=96,
        num_layers=4,
        num_heads=4,
        variant=1,
        text_placement="v1",
        temporal_position="sincos",
        learn_sigma=False,
    ),
    text_encoder=dict(hidden_dim=64, num_layers=1, num_heads=4, sequence_length=8),
    # v-prediction with min-SNR-5 weighting (Hang et al. 2023): the loss is not dominated by the
    # nearly-clean timesteps, which speeds up learning the coarse content (digit, position) a lot.
    process=dict(schedule="cosine", prediction="v", loss_weighting="min_snr"),
)


# How ``make demo`` trains that model in its 8 minutes, chosen by conditional accuracy at equal wall time on
# the project's 2-core CPU (``benchmarks/demo_recipe.py``; the ablation table is in benchmarks/RESULTS.md):
# a short run is step-limited, so a small batch (twice the steps of batch 32 at nearly the same rate) and a
# higher learning rate after a short warm-up learn the digits much sooner; decaying the rate over so short a
# budget cost accuracy.
DEMO_TRAINING = dict(batch_size=16, learning_rate=2e-3, warmup_steps=100, learning_rate_schedule="constant")


# How to sample the tiny MovingMNIST models (benchmarks/RESULTS.md): ancestral DDPM is the most
# forgiving of a small, briefly trained model (on a 4,105-step checkpoint DDIM 50 was 17 points behind
# DDPM 50); on the fine-tuned preset every sampler scores 93-100% from 10 steps on (sampler study).
RECOMMENDED_SAMPLING = dict(sampler="ddpm", steps=50, guidance_scale=3.0, thresholding="static")


def moving_mnist_text_to_video(frame_size=None, num_frames=None, backbone=None, text_encoder=None, process=None,
                               seed=0, condition_dropout=0.1):
    """A text-to-video ``VideoDiffusion`` for MovingMNIST: Latte + a small word-level text encoder.

    Arguments left ``None`` take ``TINY_MOVING_MNIST``'s values; ``backbone``,
    ``text_encoder`` and ``process`` are dicts of overrides of those configs.

    Example:
        >>> model = moving_mnist_text_to_video()
        >>> model.backbone.latent_shape
        (10, 16, 16, 1)
    """
    frame_size = TINY_MOVING_MNIST["frame_size"] if frame_size is None else frame_size
    num_frames = TINY_MOVING_MNIST["num_frames"] if num_frames is None else num_frames
    text_config = dict(TINY_MOVING_MNIST["text_encoder"], **(text_encoder or {}))
    encoder = SmallTextEncoder.from_texts(all_captions(), **text_config)
    backbone_config = dict(TINY_MOVING_MNIST["backbone"], **(backbone or {}))
    network = Latte(input_shape=(num_frames, frame_size, frame_size, 1), conditioning="text",
                    text_dim=encoder.hidden_dim, **backbone_config)
    process_config = dict(TINY_MOVING_MNIST["process"], **(process or {}))
    process_config.setdefault("learn_sigma", network.learn_sigma)
    return VideoDiffusion(network, GaussianDiffusion(**process_config), text_encoder=encoder,
                          condition_dropout=condition_dropout, seed=seed)


def moving_mnist_training_data(model, num_videos, seed=0, digits_source="auto", split="train"):
    """Generated MovingMNIST matching ``model``'s frame count and size: dict of numpy arrays."""
    if model.autoencoder is not None:
        raise ValueError("moving_mnist_training_data builds pixel-space data; this model has an autoencoder.")
    frames, height, width, channels = model.backbone.latent_shape
    if height != width or channels != 1:
        raise ValueError(f"MovingMNIST videos are square and grey; the backbone expects {(frames, height, width, channels)}.")
    return moving_mnist(num_videos, frame_size=height, num_frames=frames, seed=seed, digits_source=digits_source,
                        split=split)


def generate_in_batches(model, prompts, batch_size=30, progress=True, **generate_kwargs):
    """``model.generate`` over many prompts, ``batch_size`` at a time (one compiled loop serves all full batches).

    The seed of batch ``k`` is ``seed + k``, so a run is reproducible for a given batch size.
    """
    prompts = list(prompts)
    seed = int(generate_kwargs.pop("seed", 0))
    chunks = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    bar = keras.utils.Progbar(len(prompts), unit_name="video") if progress and len(chunks) > 1 else None
    videos = []
    for k, chunk in enumerate(chunks):
        videos.append(model.generate(prompts=chunk, seed=seed + k, **generate_kwargs))
        if bar is not None:
            bar.add(len(chunk))
    return np.concatenate(videos, axis=0)


def evaluate_moving_mnist(model, samples_per_caption=4, sampler="ddpm", steps=50, guidance_scale=3.0, seed=0,
                          thresholding="static", batch_size=30, real_videos=None, progress=True, **sampler_options):
    """Sample every MovingMNIST caption and score the samples.

    Returns a dict with ``conditional_accuracy`` (the full result of
    ``keras_vdiff.metrics.conditional_accuracy``: overall, digit, motion, per
    class), ``frechet_distance`` on the MovingMNIST classifier's features
    against ``real_videos`` (generated held-out data of the same shape when
    ``None``), ``motion_ratio`` (mean absolute frame-to-frame change of the
    samples over that of the real videos: near 1 moves like the data, near 0
    is static), ``seconds_per_video`` and the settings.
    """
    from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy
    from keras_vdiff.metrics.feature_statistics import frechet_video_distance
    from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier

    if not isinstance(samples_per_caption, int) or samples_per_caption < 1:
        raise ValueError(f"`samples_per_caption` must be a positive integer, got {samples_per_caption!r}.")
    captions = all_captions() * samples_per_caption
    digits = np.array([d for _ in range(samples_per_caption) for d in range(10) for _ in MOTIONS])
    motions = np.array([m for _ in range(samples_per_caption) for _ in range(10) for m in range(len(MOTIONS))])
    start = time.perf_counter()
    videos = generate_in_batches(model, captions, batch_size=batch_size, progress=progress, sampler=sampler,
                                 steps=steps, guidance_scale=guidance_scale, seed=seed, thresholding=thresholding,
                                 **sampler_options)
    seconds = time.perf_counter() - start
    if real_videos is None:
        frames, size = videos.shape[1], videos.shape[2]
        real_videos = moving_mnist(max(len(videos), 300), frame_size=size, num_frames=frames, seed=12345,
                                   split="test")["videos"]
    classifier = MovingMNISTClassifier.load()
    accuracy = conditional_accuracy(videos, digits, motions, classifier=classifier)
    distance = frechet_video_distance(real_videos, videos, classifier.features)

    def motion(v):
        return float(np.mean(np.abs(np.diff(v.astype(np.float32), axis=1))))

    return dict(
        conditional_accuracy=accuracy,
        frechet_distance=float(distance),
        motion_ratio=motion(videos) / motion(real_videos),
        seconds_per_video=seconds / len(videos),
        num_videos=len(videos),
        settings=dict(sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                      thresholding=thresholding, **sampler_options),
        videos=videos,
        digits=digits,
        motions=motions,
    )
