"""``Cascade``: a chain of diffusion models, base -> temporal / spatial super-resolution (Imagen Video, CDM).

Each stage is a task of its own, trained on its own and saved as its own preset:

- the **base** stage, any ``VideoDiffusion``, samples from the condition alone;
- a **temporal super-resolution** stage (frame interpolation) is a
  ``FrameConditionedDiffusion`` trained with the ``"interpolation"`` mask
  (``temporal_super_resolution``): the previous stage's ``F`` frames become
  its known frames ``0, s, 2s, ...`` of ``(F - 1) * s + 1``, the masked-frame
  input ``[m * z_0 | m]`` telling it which frames are given;
- a **spatial super-resolution** stage is a ``SuperResolutionDiffusion``: the
  previous stage's video is its low-resolution input (noise-conditioning
  augmentation level chosen per stage at sampling).

``Cascade.generate`` passes the prompts (or labels) to every stage whose backbone
is text- (or class-) conditional and runs the chain. ``save_to_preset`` writes
one pipeline preset per stage (``stage_0``, ``stage_1``, ...) and ``cascade.json``
listing them; ``Cascade.from_preset`` reads that folder, or takes a list of
stage presets (names, folders or loaded tasks).
"""

import json
import os

import numpy as np

from keras_vdiff.atomic_files import staged_directory, write_json
from keras_vdiff.diffusion.frame_masks import interpolation_mask
from keras_vdiff.tasks.frame_conditioned import FrameConditionedDiffusion
from keras_vdiff.tasks.super_resolution import SuperResolutionDiffusion
from keras_vdiff.tasks.video_diffusion import VideoDiffusion
from keras_vdiff.validation import check_int

CASCADE_FILE = "cascade.json"


def temporal_super_resolution(backbone, process=None, stride=2, **kwargs):
    """A frame-interpolation stage: ``FrameConditionedDiffusion`` trained on the ``"interpolation"`` mask.

    Args:
        backbone: a video backbone of ``(F - 1) * stride + 1`` frames (``num_extra_input_channels`` 0 or
            ``in_channels + 1``, as for ``FrameConditionedDiffusion``).
        process: its diffusion process.
        stride: the frame-rate factor: every ``stride``-th frame (and the last) is given.
        **kwargs: further ``FrameConditionedDiffusion`` arguments (``text_encoder``, ``substitute_known_frames``, ...).

    Example:
        >>> tsr = temporal_super_resolution(kv.models.VDMUNet(num_frames=19, num_extra_input_channels=2, ...))
        >>> tsr.fit({"videos": videos_19_frames}, epochs=5)    # learns frames 1, 3, 5, ... from 0, 2, 4, ...
    """
    return FrameConditionedDiffusion(backbone, process, mask_modes=("interpolation",),
                                     interpolation_stride=check_int(stride, "stride"), **kwargs)


def frames_at_stride(videos, stride, num_frames):
    """Low-frame-rate videos ``(B, F, ...)`` placed at frames ``0, s, 2s, ...`` of ``num_frames``; with the mask.

    Returns ``(known_frames (B, num_frames, ...) of videos' dtype, zero elsewhere, frame_mask (B, num_frames))``.
    """
    videos = np.asarray(videos)
    batch, frames = videos.shape[:2]
    if (frames - 1) * stride + 1 != num_frames:
        raise ValueError(
            f"A temporal super-resolution stage of {num_frames} frames with stride {stride} takes "
            f"{(num_frames - 1) / stride + 1:g} frames, got videos of {frames}."
        )
    known = np.zeros((batch, num_frames) + videos.shape[2:], videos.dtype)
    known[:, ::stride] = videos
    return known, interpolation_mask(num_frames, stride, batch)


def stage_kind(stage):
    """``"spatial"``, ``"temporal"`` or ``"base"``: how a stage takes the previous stage's videos."""
    if isinstance(stage, SuperResolutionDiffusion):
        return "spatial"
    if isinstance(stage, FrameConditionedDiffusion) and "interpolation" in stage.mask_modes:
        return "temporal"
    return "base"


def output_shape(stage):
    """The video shape ``(F, H, W, C)`` a stage produces (None where an autoencoder decides it)."""
    if stage.autoencoder is not None:
        return None
    return tuple(stage.backbone.latent_shape)


def check_chain(stages):
    """Raise unless each stage takes the previous stage's output (kinds and video shapes)."""
    if not stages:
        raise ValueError("A Cascade needs at least one stage.")
    previous = None
    for index, stage in enumerate(stages):
        if not isinstance(stage, VideoDiffusion):
            raise TypeError(f"Cascade stage {index} must be a VideoDiffusion task, got {type(stage).__name__}.")
        kind = stage_kind(stage)
        if index == 0:
            previous = output_shape(stage)
            continue
        if kind == "base":
            raise ValueError(
                f"Cascade stage {index} ({type(stage).__name__}) does not take a video: later stages must be "
                "SuperResolutionDiffusion or a temporal_super_resolution FrameConditionedDiffusion."
            )
        if previous is not None:
            frames, height, width, channels = previous
            if kind == "spatial":
                expected = stage.low_res_shape
            else:
                stride = stage.interpolation_stride
                expected = ((stage.backbone.latent_shape[0] - 1) // stride + 1,) + tuple(
                    stage.backbone.latent_shape[1:])
            if tuple(expected) != tuple(previous):
                raise ValueError(
                    f"Cascade stage {index} ({kind} super-resolution) takes videos of shape {tuple(expected)}, "
                    f"but stage {index - 1} gives {tuple(previous)}."
                )
        previous = output_shape(stage)


class Cascade:
    """A base model followed by temporal and spatial super-resolution stages (Imagen Video's cascade).

    Args:
        stages: ``VideoDiffusion`` tasks in order: a base, then ``SuperResolutionDiffusion`` and / or
            ``temporal_super_resolution`` stages, each taking the previous stage's videos.

    Example:
        >>> base = kv.VideoDiffusion.from_preset("latte_tiny_moving_mnist")               # 10 x 16 x 16
        >>> ssr = kv.SuperResolutionDiffusion.from_preset("ssr_moving_mnist_16_to_32")    # -> 10 x 32 x 32
        >>> cascade = kv.Cascade([base, ssr])
        >>> videos = cascade.generate(prompts=["The digit 3 is moving up and down"], seed=0,
        ...                           stage_options=[dict(guidance_scale=3.0), dict(aug_level=0.1)])
    """

    def __init__(self, stages):
        self.stages = list(stages)
        check_chain(self.stages)

    def generate(self, prompts=None, labels=None, seed=0, steps=50, sampler=None, stage_options=None,
                 return_stages=False, batch_size=1):
        """Run the chain: the base samples from the condition, each later stage from the previous videos.

        Args:
            prompts, labels: the condition, passed to every stage whose backbone is text / class conditional.
            seed: the base stage's seed; stage ``k`` uses ``seed + k``.
            steps, sampler: defaults of every stage's ``generate``.
            stage_options: None or one dict per stage of further ``generate`` arguments (``guidance_scale``,
                ``aug_level``, ``steps``, ...), overriding the defaults.
            return_stages: also return every stage's videos.
            batch_size: videos of an unconditional base.

        Returns: numpy uint8 videos of the last stage; with ``return_stages``, the list of every stage's.
        """
        options = [dict(o or {}) for o in (stage_options or [None] * len(self.stages))]
        if len(options) != len(self.stages):
            raise ValueError(f"`stage_options` has {len(options)} entries for {len(self.stages)} stages.")
        outputs = []
        videos = None
        for index, (stage, extra) in enumerate(zip(self.stages, options)):
            kwargs = dict(steps=steps, sampler=sampler, seed=seed + index)
            if stage.conditioning == "text":
                kwargs["prompts"] = prompts
            elif stage.conditioning == "class":
                kwargs["labels"] = labels
            elif index == 0:
                kwargs["batch_size"] = batch_size
            kwargs.update(extra)
            kind = stage_kind(stage) if index else "base"
            if kind == "spatial":
                videos = stage.generate(videos, **kwargs)
            elif kind == "temporal":
                known, mask = frames_at_stride(videos, stage.interpolation_stride, stage.backbone.latent_shape[0])
                videos = stage.generate(known_frames=known, frame_mask=mask, **kwargs)
            else:
                videos = stage.generate(**kwargs)
            outputs.append(videos)
        return (videos, outputs) if return_stages else videos

    def save_to_preset(self, preset_dir, include_optimizer=False):
        """Write every stage's pipeline preset (``stage_<k>``) and ``cascade.json`` to ``preset_dir``, atomically."""
        with staged_directory(preset_dir) as staging:
            names = []
            for index, stage in enumerate(self.stages):
                names.append(f"stage_{index}")
                stage.save_to_preset(os.path.join(staging, names[-1]), include_optimizer=include_optimizer)
            write_json(os.path.join(staging, CASCADE_FILE), {"stages": names})

    @classmethod
    def from_preset(cls, preset, **kwargs):
        """A cascade from a folder written by ``save_to_preset``, or from a list of stage presets.

        Args:
            preset: a cascade folder, or a list whose items are pipeline preset names, folders or tasks.
            **kwargs: passed to every stage's ``from_preset``.
        """
        if isinstance(preset, (str, os.PathLike)):
            path = os.path.join(os.fspath(preset), CASCADE_FILE)
            if not os.path.isfile(path):
                raise ValueError(f"{os.fspath(preset)!r} is not a cascade folder (no {CASCADE_FILE}).")
            with open(path) as file:
                names = json.load(file)["stages"]
            preset = [os.path.join(os.fspath(preset), name) for name in names]
        stages = [item if isinstance(item, VideoDiffusion) else VideoDiffusion.from_preset(item, **kwargs)
                  for item in preset]
        return cls(stages)
