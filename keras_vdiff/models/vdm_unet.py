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

from keras_vdiff.models.backbone import as_pair, checked_int
from keras_vdiff.models.unet import UNetBackbone, build_unet_graph
from keras_vdiff.presets.registry import register_preset


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
    (class conditioning), optional ``temporal_mask (B,)`` and ``fps (B,)``.
    Output: ``(B, F, H, W, out_channels)``.

    Example:
        >>> unet = VDMUNet(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2),
        ...                attention_resolutions=(8,), num_heads=2, norm_groups=8)
        >>> unet({"latents": keras.ops.zeros((2, 4, 16, 16, 3)),
        ...       "timesteps": keras.ops.array([1.0, 2.0])}).shape
        (2, 4, 16, 16, 3)
    """

    is_video = True

    def __init__(
        self,
        image_size=64,
        num_frames=16,
        in_channels=3,
        dim=64,
        dim_mults=(1, 2, 4, 8),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        temporal_attention_resolutions="all",
        num_heads=4,
        norm_groups=32,
        dropout=0.0,
        conv_type="spatial",
        relative_position_bias=True,
        learned_mix=False,
        fps_conditioning=False,
        num_extra_input_channels=0,
        conditioning=None,
        num_classes=None,
        text_dim=None,
        embedding_mode="scale_shift",
        learn_sigma=False,
        dtype=None,
        **kwargs,
    ):
        checked_int(in_channels, "in_channels")
        checked_int(num_frames, "num_frames")
        temporal_attention_resolutions = _as_resolutions(
            temporal_attention_resolutions, "temporal_attention_resolutions"
        )
        out_channels = in_channels * (2 if learn_sigma else 1)
        inputs, outputs = build_unet_graph(
            self, image_size=image_size, in_channels=in_channels, out_channels=out_channels, dim=dim,
            dim_mults=dim_mults, num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
            num_heads=num_heads, norm_groups=norm_groups, dropout=dropout, conditioning=conditioning,
            num_classes=num_classes, text_dim=text_dim, embedding_mode=embedding_mode, num_frames=num_frames,
            conv_type=conv_type,
            temporal_attention_resolutions=temporal_attention_resolutions,
            relative_position_bias=relative_position_bias, learned_mix=learned_mix,
            fps_conditioning=fps_conditioning, num_extra_input_channels=num_extra_input_channels,
            temporal_mask_input=True, dtype=dtype,
        )
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.image_size = image_size
        self.num_frames = num_frames
        self.in_channels = in_channels
        self.dim = dim
        self.dim_mults = tuple(dim_mults)
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions or ())
        self.temporal_attention_resolutions = temporal_attention_resolutions
        self.num_heads = num_heads
        self.norm_groups = norm_groups
        self.dropout = dropout
        self.conv_type = conv_type
        self.relative_position_bias = relative_position_bias
        self.learned_mix = learned_mix
        self.fps_conditioning = fps_conditioning
        self.num_extra_input_channels = num_extra_input_channels
        self.conditioning = conditioning
        self.num_classes = num_classes if conditioning == "class" else None
        self.text_dim = text_dim if conditioning == "text" else None
        self.embedding_mode = embedding_mode
        self.learn_sigma = learn_sigma
        self.out_channels = out_channels
        self.latent_shape = (num_frames,) + as_pair(image_size, "image_size") + (in_channels,)

    def get_config(self):
        config = super().get_config()
        temporal = self.temporal_attention_resolutions
        config.update(
            image_size=self.image_size,
            num_frames=self.num_frames,
            in_channels=self.in_channels,
            dim=self.dim,
            dim_mults=list(self.dim_mults),
            num_res_blocks=self.num_res_blocks,
            attention_resolutions=list(self.attention_resolutions),
            temporal_attention_resolutions=temporal if temporal == "all" else list(temporal),
            num_heads=self.num_heads,
            norm_groups=self.norm_groups,
            dropout=self.dropout,
            conv_type=self.conv_type,
            relative_position_bias=self.relative_position_bias,
            learned_mix=self.learned_mix,
            fps_conditioning=self.fps_conditioning,
            num_extra_input_channels=self.num_extra_input_channels,
            conditioning=self.conditioning,
            num_classes=self.num_classes,
            text_dim=self.text_dim,
            embedding_mode=self.embedding_mode,
            learn_sigma=self.learn_sigma,
        )
        return config


def _register_presets():
    register_preset(
        "vdm_unet_small",
        "VDMUNet",
        dict(image_size=64, num_frames=16, in_channels=3, dim=64, dim_mults=(1, 2, 4, 8), num_res_blocks=2,
             attention_resolutions=(16, 8), temporal_attention_resolutions="all", num_heads=4, norm_groups=32,
             conv_type="spatial", relative_position_bias=True, learn_sigma=False),
        "VDM 3D U-Net (Ho et al. 2022) at width 64, multipliers (1,2,4,8), 16 frames of 64x64x3, "
        "1x3x3 convolutions, temporal attention with relative position bias at every level; random init.",
        metadata=dict(paper="arXiv:2204.03458"),
    )
    register_preset(
        "vdm_unet_tiny",
        "VDMUNet",
        dict(image_size=16, num_frames=4, in_channels=3, dim=16, dim_mults=(1, 2), num_res_blocks=1,
             attention_resolutions=(8,), temporal_attention_resolutions="all", num_heads=2, norm_groups=8,
             conv_type="spatial", relative_position_bias=True, conditioning="class", num_classes=4,
             learn_sigma=False),
        "A tiny class-conditional VDM 3D U-Net for tests and CPU experiments (4 frames of 16x16x3, 4 classes).",
        metadata=dict(paper="arXiv:2204.03458"),
    )


_register_presets()
