"""The task side of native sizes (Sora, seed 004 §5.3): training on bucketed batches, sampling at any size.

A backbone with ``native_sizes`` runs at any latent shape its patches divide
(``VideoBackbone.at_shape``, ``models/native_sizes.py``). ``VideoDiffusion``
then trains on batches of several shapes (``kv.data.BucketedBatches``: each batch
one shape) and samples at the ``frame_size`` asked for.
"""

import numpy as np

from keras_vdiff.data.pipelines import fit_input
from keras_vdiff.validation import check_int, check_pair


def native_size_latents(backbone, shape):
    """Whether per-example latents of ``shape`` are a native size of ``backbone`` (its rank and channels; sizes
    unknown in a TensorFlow graph of bucketed batches are accepted, the backbone's graph choice checks them)."""
    trained = tuple(backbone.latent_shape)
    shape = tuple(shape)
    if not getattr(backbone, "native_sizes", False) or len(shape) != len(trained) or shape[-1] != trained[-1]:
        return False
    if any(size is None for size in shape[:-1]):
        return True
    backbone.at_shape(tuple(int(size) for size in shape))  # raises naming a size the patches do not divide
    return True


def latent_shape_of(task, video_shape):
    """The per-example latent shape of videos of ``video_shape`` ``(F, H, W, C)`` (through the autoencoder)."""
    if task.autoencoder is None:
        return tuple(video_shape) if task.is_video else tuple(video_shape)[1:]
    return tuple(task.autoencoder.compute_latent_shape(tuple(video_shape)))


def prepared_buckets(task, batches, fit_kwargs):
    """``BucketedBatches`` ready for ``task.fit``: the backbone's graph built at each of its shapes.

    On TensorFlow the batches are returned as ``batches.to_tf_dataset()`` (``data.pipelines.fit_input``): the
    compiled step sees sizes that vary between batches as ``None`` and branches on
    them (``models/native_sizes.call_by_runtime_shape``); elsewhere unchanged.
    ``fit_kwargs`` get ``shuffle=False`` unless set: the batches shuffle themselves.
    """
    fit_kwargs.setdefault("shuffle", False)
    for shape in batches.video_shapes:
        latent_shape = latent_shape_of(task, shape)
        if not native_size_latents(task.backbone, latent_shape):
            raise ValueError(
                f"Bucketed batches of videos {shape} give latents {latent_shape}, which "
                f"{type(task.backbone).__name__} (latents {tuple(task.backbone.latent_shape)}) cannot take: it "
                "needs native sizes (Latte, VideoDiT, GenTron, DiT) and the same channels."
            )
    return fit_input(batches)


def native_sampling_shape(backbone, autoencoder, num_frames, frame_size):
    """The per-video latent shape to sample for videos of ``frame_size`` ``(height, width)`` (and ``num_frames``)."""
    height, width = check_pair(frame_size, "frame_size")
    if not getattr(backbone, "native_sizes", False):
        raise ValueError(
            f"`frame_size`={frame_size!r} needs a backbone with native sizes (Latte, VideoDiT, GenTron, DiT); "
            f"{type(backbone).__name__} runs at its training shape only."
        )
    trained = tuple(backbone.latent_shape)
    if backbone.is_video:
        frames = trained[0] if num_frames is None else check_int(num_frames, "num_frames")
        video_shape = (frames, height, width, None)
    else:
        if num_frames not in (None, 1):
            raise ValueError(f"An image backbone generates 1 frame, got `num_frames`={num_frames}.")
        video_shape = (height, width, None)
    if autoencoder is not None:
        if backbone.is_video and hasattr(autoencoder, "latent_num_frames") and num_frames is not None:
            video_shape = (autoencoder.latent_num_frames(num_frames),) + video_shape[1:]
        factor = int(getattr(autoencoder, "downsampling_factor", 1))
        if height % factor or width % factor:
            raise ValueError(f"`frame_size`={frame_size!r} must be divisible by the autoencoder's factor {factor}.")
        video_shape = video_shape[:-3] + (height // factor, width // factor, None)
    shape = tuple(video_shape[:-1]) + (trained[-1],)
    backbone.at_shape(shape)  # checks the size against the patches and builds the graph once
    return tuple(int(size) for size in np.asarray(shape))
