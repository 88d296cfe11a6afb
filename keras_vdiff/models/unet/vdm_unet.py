"""``VDMUNet``: the 3D U-Net of Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi & Fleet 2022).

The image U-Net with space-only convolutions (a 1x3x3 3D convolution is a 3x3
2D convolution per frame; ``conv_type="pseudo3d"`` adds an identity-initialised
temporal convolution), spatial attention per frame at ``attention_resolutions``
and, after it, temporal attention over the frames of every pixel with a T5
relative position bias (so no absolute frame embedding is needed).

Image-video joint training ("masking the temporal computation paths"): the
optional input ``temporal_mask`` ``(B,)`` is 1 for videos and 0 for samples
whose frames are independent images; for those every temporal attention sees
only the frame itself and every temporal convolution only its centre tap, so
frame ``i`` of the output depends on frame ``i`` of the input alone.
"""

import keras

from keras_vdiff.models.unet.unet2d import UNetBackbone
from keras_vdiff.validation import check_int, check_pair


def _as_resolutions(value, name):
    if value == "all":
        return value
    if value is None:
        return ()
    if isinstance(value, str):
        raise ValueError(f"`{name}` must be 'all' or a sequence of feature-map sizes, got {value!r}.")
    return tuple(value)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VDMUNet(UNetBackbone):
    """VDM's factorized space-time 3D U-Net for video diffusion.

    Args:
        image_size: frame height/width (int or pair).
        num_frames: frames per video.
        in_channels: latent channels.
        dim, dim_mults, num_res_blocks, num_heads, norm_groups, dropout: as in ``UNet2D``.
        attention_resolutions: feature-map sizes with spatial attention.
        temporal_attention_resolutions: sizes with temporal attention, ``"all"``
            (every level; VDM) or ``None``/``()`` (none, the middle block then has none either).
        conv_type: ``"spatial"`` (1x3x3, VDM) or ``"pseudo3d"`` (3x3 + 3-frame temporal).
        relative_position_bias: T5 relative position bias in temporal attention (VDM).
        learned_mix: Video-LDM's learned ``alpha`` mix in temporal attention.
        fps_conditioning: optional ``fps`` input embedded and added to the timestep embedding.
        aug_level_conditioning: optional ``aug_level`` input (B,) in [0, 1], the noise-conditioning
            augmentation level of a super-resolution stage (``kv.SuperResolutionDiffusion``), embedded
            and added to the timestep embedding (its last layer starts at zero).
        mid_attention: spatial attention in the middle block (default). ``mid_attention=False`` with
            ``attention_resolutions=()`` and ``temporal_attention_resolutions=()`` gives a fully
            convolutional U-Net; with ``conv_type="pseudo3d"`` its frames interact through temporal
            convolutions only (Imagen Video's high-resolution stages). Text then enters through the
            pooled text of the embedding alone.
        num_extra_input_channels: extra ``latents`` channels for masked-frame
            conditioning (known-frame latents and mask; see
            ``keras_vdiff.diffusion.frame_conditioning``). The output keeps ``out_channels``.
        conditioning: None, ``"class"`` or ``"text"`` (as in ``UNet2D``; the text
            tokens are shared by all frames).
        num_classes: class count (label ``num_classes`` is the null class).
        text_dim: text width for ``conditioning="text"``.
        embedding_mode: ``"scale_shift"`` or ``"add"`` (as in ``UNet2D``).
        learn_sigma: also output the improved-DDPM variance channels.
        dtype: dtype policy.

    Inputs: ``latents (B, F, H, W, C [+ extra])``, ``timesteps (B,)``, ``class_labels (B,)``
    (class conditioning), optional ``temporal_mask (B,)``, ``fps (B,)`` and ``aug_level (B,)``.
    Output: ``(B, F, H, W, out_channels)``.

    Example:
        >>> unet = VDMUNet(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2),
        ...                attention_resolutions=(8,), num_heads=2, norm_groups=8)
        >>> unet({"latents": keras.ops.zeros((2, 4, 16, 16, 3)),
        ...       "timesteps": keras.ops.array([1.0, 2.0])}).shape
        (2, 4, 16, 16, 3)
    """

    is_video = True

    CONFIG_KEYS = (
        "image_size", "num_frames", "in_channels", "dim", "dim_mults", "num_res_blocks", "attention_resolutions",
        "temporal_attention_resolutions", "num_heads", "norm_groups", "dropout", "conv_type",
        "relative_position_bias", "learned_mix", "fps_conditioning", "num_extra_input_channels", "conditioning",
        "num_classes", "text_dim", "embedding_mode", "learn_sigma", "aug_level_conditioning", "mid_attention",
    )

    def __init__(
        self,
        image_size=64,
        num_frames=16,
        *,
        attention_resolutions=(16, 8),
        temporal_attention_resolutions="all",
        conv_type="spatial",
        relative_position_bias=True,
        learned_mix=False,
        fps_conditioning=False,
        num_extra_input_channels=0,
        aug_level_conditioning=False,
        mid_attention=True,
        **kwargs,
    ):
        check_int(num_frames, "num_frames")
        temporal_attention_resolutions = _as_resolutions(
            temporal_attention_resolutions, "temporal_attention_resolutions"
        )
        video = dict(
            num_frames=num_frames, conv_type=conv_type, temporal_attention_resolutions=temporal_attention_resolutions,
            relative_position_bias=relative_position_bias, learned_mix=learned_mix, fps_conditioning=fps_conditioning,
            num_extra_input_channels=num_extra_input_channels, temporal_mask_input=True,
            aug_level_conditioning=bool(aug_level_conditioning), mid_attention=bool(mid_attention),
        )
        super().__init__(image_size=image_size, attention_resolutions=attention_resolutions, video=video, **kwargs)
        for key, value in video.items():
            if key in self.CONFIG_KEYS:
                setattr(self, key, value)
        self.latent_shape = (num_frames,) + check_pair(image_size, "image_size") + (self.in_channels,)
