"""The MovingMNIST cascade: the shipped 16x16 base followed by a 16 -> 32 spatial super-resolution stage.

- ``moving_mnist_super_resolution(...)`` builds the SSR stage: a fully convolutional
  ``VDMUNet`` (pseudo-3D convolutions: 3x3 spatial + 3-frame temporal, no attention;
  Imagen Video's high-resolution stages) taking the bicubically upsampled 16x16
  video on extra channels and the noise-augmentation level as ``aug_level``,
  text-conditioned through the pooled prompt (its own ``SmallTextEncoder``);
- ``random_crops`` cuts training crops out of 32x32 videos (a fully convolutional
  stage trains on crops and samples whole frames, as Imagen's last stage does);
- ``with_frame_shape`` rebuilds such a stage for another frame count / size with the same weights;
- ``evaluate_cascade`` scores the cascade's 32x32 samples and, on the same base
  samples, their bicubic upsampling, with the MovingMNIST classifier.
"""

import time

import numpy as np

from keras_vdiff.data.moving_mnist import MOTIONS
from keras_vdiff.diffusion.conditioning_augmentation import resize_frames
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.models.unet.vdm_unet import VDMUNet
from keras_vdiff.tasks.super_resolution import SuperResolutionDiffusion
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.training.moving_mnist import TINY_MOVING_MNIST, all_captions

# The 16 -> 32 stage: fully convolutional (mid_attention=False, no attention resolutions), pseudo-3D
# convolutions, the low-resolution video concatenated (num_extra_input_channels=1), aug_level embedded.
SSR_MOVING_MNIST = dict(
    frame_size=32,
    num_frames=10,
    scale_factor=2,
    backbone=dict(dim=16, dim_mults=(1, 2), num_res_blocks=1, norm_groups=8, conv_type="pseudo3d",
                  attention_resolutions=(), temporal_attention_resolutions=(), mid_attention=False,
                  relative_position_bias=False),
    process=dict(schedule="cosine", prediction="v", loss_weighting="min_snr"),
    max_aug_level=0.5,
    aug_level=0.1,
)


def moving_mnist_super_resolution(frame_size=None, num_frames=None, backbone=None, text_encoder=None, seed=0,
                                  condition_dropout=0.1, **task_options):
    """The MovingMNIST SSR stage (``SSR_MOVING_MNIST``; dicts override its backbone / text encoder configs).

    ``frame_size`` / ``num_frames`` set the backbone's shape (the crops it trains on, or the
    32x32x10 videos it samples); the weights do not depend on them.

    Example:
        >>> ssr = moving_mnist_super_resolution()
        >>> ssr.low_res_shape
        (10, 16, 16, 1)
    """
    frame_size = SSR_MOVING_MNIST["frame_size"] if frame_size is None else frame_size
    num_frames = SSR_MOVING_MNIST["num_frames"] if num_frames is None else num_frames
    if text_encoder is None or isinstance(text_encoder, dict):
        text_encoder = SmallTextEncoder.from_texts(
            all_captions(), **dict(TINY_MOVING_MNIST["text_encoder"], **(text_encoder or {})))
    network = VDMUNet(image_size=frame_size, num_frames=num_frames, in_channels=1, num_extra_input_channels=1,
                      aug_level_conditioning=True, conditioning="text", text_dim=text_encoder.hidden_dim,
                      **dict(SSR_MOVING_MNIST["backbone"], **(backbone or {})))
    options = dict(scale_factor=SSR_MOVING_MNIST["scale_factor"], max_aug_level=SSR_MOVING_MNIST["max_aug_level"],
                   aug_level=SSR_MOVING_MNIST["aug_level"], **task_options)
    return SuperResolutionDiffusion(network, GaussianDiffusion(**SSR_MOVING_MNIST["process"]),
                                    text_encoder=text_encoder, condition_dropout=condition_dropout, seed=seed,
                                    **options)


def random_crops(data, size, num_frames, seed=0):
    """One random crop ``(num_frames, size, size)`` of every video of ``data``; the captions / labels follow.

    Crop corners are even (multiples of 2), so a crop's area downsampling is a crop of the
    downsampled video.
    """
    videos = np.asarray(data["videos"])
    rng = np.random.default_rng(seed)
    count, frames, height = videos.shape[:3]
    start = rng.integers(0, frames - num_frames + 1, count)
    rows = 2 * rng.integers(0, (height - size) // 2 + 1, count)
    cols = 2 * rng.integers(0, (videos.shape[3] - size) // 2 + 1, count)
    crops = np.stack([v[s:s + num_frames, r:r + size, c:c + size] for v, s, r, c in zip(videos, start, rows, cols)])
    return dict({key: value for key, value in data.items() if key != "videos"}, videos=crops)


def with_frame_shape(model, frame_size, num_frames):
    """The same fully convolutional SR stage (same weights, same text encoder) built for another frame shape."""
    config = model.backbone.get_config()
    config.update(image_size=frame_size, num_frames=num_frames)
    backbone = type(model.backbone).from_config(config)
    backbone.set_weights(model.backbone.get_weights())
    task_config = model.get_config()
    task_config.update(backbone=backbone, text_encoder=model.text_encoder)
    for key in ("preprocessor", "autoencoder"):
        task_config.pop(key, None)
    task = type(model).from_config(task_config)
    if model.condition_projection is not None:
        task.condition_projection.set_weights(model.condition_projection.get_weights())
    return task


def evaluate_cascade(cascade, samples_per_caption=4, seed=0, batch_size=30, base_options=None, stage_options=None,
                     progress=True):
    """Sample every caption through ``cascade`` and score its last stage and the bicubic upsampling of its base.

    Returns a dict: ``cascade`` and ``bicubic`` (``conditional_accuracy`` results of the last
    stage's videos and of the base's videos bicubically upsampled to the same size),
    ``base`` (the base's own videos scored), ``seconds_per_video`` and the videos.
    """
    from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy
    from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier

    captions = all_captions() * samples_per_caption
    digits = np.array([d for _ in range(samples_per_caption) for d in range(10) for _ in MOTIONS])
    motions = np.array([m for _ in range(samples_per_caption) for _ in range(10) for m in range(len(MOTIONS))])
    options = [dict(base_options or {})] + [dict(o) for o in (stage_options or [{}] * (len(cascade.stages) - 1))]
    finals, bases = [], []
    start = time.perf_counter()
    for k in range(0, len(captions), batch_size):
        final, stages = cascade.generate(prompts=captions[k:k + batch_size], seed=seed + k, stage_options=options,
                                         return_stages=True)
        finals.append(final)
        bases.append(stages[0])
        if progress:
            print(f"cascade: {k + len(final)} of {len(captions)} videos", flush=True)
    seconds = time.perf_counter() - start
    final, base = np.concatenate(finals), np.concatenate(bases)
    upsampled = resize_frames(base.astype("float32"), final.shape[2:4], "bicubic")
    upsampled = np.clip(np.round(np.asarray(upsampled)), 0, 255).astype("uint8")
    classifier = MovingMNISTClassifier.load()
    return dict(
        cascade=conditional_accuracy(final, digits, motions, classifier=classifier),
        bicubic=conditional_accuracy(upsampled, digits, motions, classifier=classifier),
        base=conditional_accuracy(base, digits, motions, classifier=classifier),
        seconds_per_video=seconds / len(final), num_videos=len(final),
        videos=final, base_videos=base, bicubic_videos=upsampled, digits=digits, motions=motions,
    )
