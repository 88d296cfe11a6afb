"""CLIP similarity (CLIPSIM) between generated videos and their prompts.

Wu et al., 2021 ("GODIVA") introduced CLIPSIM for text-to-video: the cosine
similarity between the CLIP embedding of each frame and the CLIP embedding of
the prompt, averaged over frames (and videos). The thesis behind this project
reports it in its Tables 4.2 and 4.4.

The metric talks to CLIP through a two-method interface, so any CLIP
implementation can be plugged in:

    encoder.encode_images(frames)  # (N, H, W, 3) in [0, 255] -> (N, D)
    encoder.encode_text(prompts)   # list of M strings        -> (M, D)

:class:`KerasHubCLIPEncoder` implements it over a keras-hub ``CLIPBackbone``
(and its ``CLIPPreprocessor`` for tokenising and image normalisation); build
it with :meth:`KerasHubCLIPEncoder.from_preset` when you have CLIP weights
(e.g. ``"clip_vit_base_patch32"``). Nothing here downloads anything by itself.
"""

import keras
import numpy as np

__all__ = ["KerasHubCLIPEncoder", "clip_similarity"]

# Image normalisation of the OpenAI CLIP models (per RGB channel, on [0, 1] pixels).
CLIP_PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)


class KerasHubCLIPEncoder:
    """The ``encode_images`` / ``encode_text`` interface over a keras-hub CLIP model.

    Args:
        backbone: a ``keras_hub.models.CLIPBackbone``.
        preprocessor: a ``keras_hub.models.CLIPPreprocessor`` (its tokenizer
            and packer turn prompts into token ids; its ``image_converter``,
            when set, resizes and normalises frames).
        batch_size: images or prompts per forward pass.

    Frames without an image converter are resized bilinearly to the vision
    encoder's input size and normalised with the OpenAI CLIP mean and std.

    Example:
    >>> encoder = KerasHubCLIPEncoder.from_preset("clip_vit_base_patch32")
    >>> clip_similarity(videos, captions, encoder)

    Paper: Radford et al., 2021, "Learning Transferable Visual Models From
    Natural Language Supervision".
    """

    def __init__(self, backbone, preprocessor, batch_size=32):
        if not (hasattr(backbone, "get_vision_embeddings") and hasattr(backbone, "get_text_embeddings")):
            raise TypeError(
                "`backbone` must be a keras_hub CLIPBackbone (with `get_vision_embeddings` and "
                f"`get_text_embeddings`); received {type(backbone).__name__}."
            )
        if not callable(preprocessor):
            raise TypeError(
                "`preprocessor` must be a keras_hub CLIPPreprocessor; received "
                f"{type(preprocessor).__name__}."
            )
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.batch_size = int(batch_size)

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """Loads backbone and preprocessor of a keras-hub CLIP preset (name or local directory)."""
        import keras_hub

        backbone = keras_hub.models.CLIPBackbone.from_preset(preset)
        preprocessor = keras_hub.models.CLIPPreprocessor.from_preset(preset)
        return cls(backbone, preprocessor, **kwargs)

    @property
    def image_size(self):
        shape = self.backbone.vision_encoder.image_shape
        return int(shape[0]), int(shape[1])

    def _normalise(self, images):
        converter = getattr(self.preprocessor, "image_converter", None)
        if converter is not None:
            return keras.ops.convert_to_numpy(converter(images))
        height, width = self.image_size
        images = keras.ops.image.resize(images, (height, width), interpolation="bilinear")
        images = keras.ops.convert_to_numpy(images) / 255.0
        return (images - np.array(CLIP_PIXEL_MEAN, "float32")) / np.array(CLIP_PIXEL_STD, "float32")

    def encode_images(self, images):
        """``(N, H, W, 3)`` frames in ``[0, 255]`` -> ``(N, D)`` numpy projected embeddings."""
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"`images` must have shape (N, H, W, 3); received {images.shape}.")
        outputs = []
        for start in range(0, images.shape[0], self.batch_size):
            batch = self._normalise(images[start : start + self.batch_size])
            outputs.append(keras.ops.convert_to_numpy(self.backbone.get_vision_embeddings(batch)))
        return np.concatenate(outputs).astype(np.float64)

    def encode_text(self, prompts):
        """List of strings -> ``(M, D)`` numpy projected embeddings."""
        prompts = list(prompts)
        outputs = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.preprocessor({"prompts": prompts[start : start + self.batch_size], "images": None})
            token_ids = keras.ops.convert_to_numpy(tokens["token_ids"])
            outputs.append(keras.ops.convert_to_numpy(self.backbone.get_text_embeddings(token_ids)))
        return np.concatenate(outputs).astype(np.float64)


def _unit_rows(matrix, name):
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"The CLIP encoder returned a zero {name} embedding; cosine similarity is undefined.")
    return matrix / norms


def clip_similarity(videos, prompts, clip_encoder, reduction="mean", frames_per_batch=256):
    """Mean cosine similarity between each frame and its video's prompt (CLIPSIM).

    Args:
        videos: ``(N, F, H, W, C)`` videos in ``[0, 255]`` (uint8 or float);
            ``C`` is 3, or 1 (repeated to RGB).
        prompts: ``N`` strings, one per video.
        clip_encoder: object with ``encode_images(frames)`` and
            ``encode_text(prompts)`` (see the module docstring), e.g.
            :class:`KerasHubCLIPEncoder`.
        reduction: ``"mean"`` (float over all videos) or ``"none"`` (``(N,)``
            array of per-video means over frames).
        frames_per_batch: frames sent to ``encode_images`` at once.

    Returns:
        float or ``(N,)`` numpy array in ``[-1, 1]``. Papers often report
        ``100 * max(value, 0)``; this function returns the raw cosine.

    Paper: Wu et al., 2021, "GODIVA: Generating Open-DomaIn Videos from
    nAtural Descriptions" (CLIPSIM).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"`reduction` must be 'mean' or 'none'; received {reduction!r}.")
    if not (callable(getattr(clip_encoder, "encode_images", None)) and callable(getattr(clip_encoder, "encode_text", None))):
        raise TypeError(
            "`clip_encoder` must have `encode_images(frames)` and `encode_text(prompts)` methods "
            f"(e.g. KerasHubCLIPEncoder); received {type(clip_encoder).__name__}."
        )
    videos = np.asarray(videos)
    if videos.ndim != 5:
        raise ValueError(f"`videos` must have shape (N, F, H, W, C); received {videos.shape}.")
    if videos.shape[-1] not in (1, 3):
        raise ValueError(f"`videos` must have 1 or 3 channels; received {videos.shape[-1]}.")
    if videos.size and (videos.min() < 0 or videos.max() > 255):
        raise ValueError(
            f"`videos` must lie in [0, 255]; received values in [{videos.min()}, {videos.max()}]."
        )
    if isinstance(prompts, str):
        raise TypeError("`prompts` must be a sequence of strings, one per video, not a single string.")
    prompts = [str(p) for p in prompts]
    num_videos, num_frames = videos.shape[:2]
    if len(prompts) != num_videos:
        raise ValueError(f"Got {len(prompts)} prompts for {num_videos} videos; pass one prompt per video.")
    if num_videos == 0 or num_frames == 0:
        raise ValueError(f"`videos` holds no frames; received shape {videos.shape}.")

    text = _unit_rows(clip_encoder.encode_text(prompts), "text")
    if text.shape[0] != num_videos:
        raise ValueError(f"`encode_text` returned {text.shape[0]} embeddings for {num_videos} prompts.")
    frames = videos.reshape((num_videos * num_frames,) + videos.shape[2:])
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    scores = np.empty(num_videos * num_frames)
    owner = np.repeat(np.arange(num_videos), num_frames)
    step = max(1, int(frames_per_batch))
    for start in range(0, frames.shape[0], step):
        image = _unit_rows(clip_encoder.encode_images(frames[start : start + step]), "image")
        if image.shape != (min(step, frames.shape[0] - start), text.shape[1]):
            raise ValueError(
                f"`encode_images` returned shape {image.shape}; expected "
                f"({min(step, frames.shape[0] - start)}, {text.shape[1]}) to match the text embeddings."
            )
        scores[start : start + step] = np.sum(image * text[owner[start : start + step]], axis=-1)
    per_video = scores.reshape(num_videos, num_frames).mean(axis=1)
    return float(per_video.mean()) if reduction == "mean" else per_video
