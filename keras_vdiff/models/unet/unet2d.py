"""``UNet2D``: the DDPM / ADM image U-Net, and the U-Net graph that the video U-Nets share.

::

    latents -> conv_in -> [ResBlock x n (+ SpatialAttention) (+ TemporalAttention)] per level, Downsample
            -> middle: ResBlock, SpatialAttention, (TemporalAttention), ResBlock
            -> [ResBlock x (n+1) on concat(skip) (+ attention)] per level, Upsample
            -> GroupNorm, SiLU, conv_out (zero-initialised) -> output
    emb = TimestepEmbedding(t) (+ LabelEmbedding(y) | + PooledTextEmbedding(text)) (+ fps) (+ aug_level), width 4 * dim,
          broadcast-added (or as scale and shift) in every ResBlock
    text conditioning: every attention block also cross-attends to the text tokens (LDM)

(Ho et al. 2020; Dhariwal & Nichol 2021.) ``build_unet_graph`` builds this graph
for images and, with temporal options, for videos (``VDMUNet``,
``MakeAVideoUNet``); every layer it creates is listed by name in
``model.unet_layers`` so ``inflate_unet`` can copy an image U-Net into a video one.
"""

import keras
from keras import ops

from keras_vdiff.layers.conditioning import CONDITIONINGS, condition_inputs
from keras_vdiff.layers.convolution import apply_per_frame
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.unet.attention import SpatialAttention, TemporalAttention
from keras_vdiff.models.unet.blocks import Downsample, ResBlock, Upsample, group_norm
from keras_vdiff.models.unet.condition_embedding import UNetConditionEmbedding
from keras_vdiff.validation import check_int, check_pair


def _check_unet_args(image_size, dim, dim_mults, attention_resolutions, conditioning, num_classes, num_heads,
                     text_dim=None):
    height, width = check_pair(image_size, "image_size")
    check_int(dim, "dim")
    if dim % 2:
        raise ValueError(f"`dim` must be even (sinusoidal timestep features), got {dim}.")
    dim_mults = tuple(dim_mults)
    if not dim_mults or not all(isinstance(m, int) and m > 0 for m in dim_mults):
        raise ValueError(f"`dim_mults` must be a non-empty sequence of positive ints, got {dim_mults!r}.")
    factor = 2 ** (len(dim_mults) - 1)
    if height % factor or width % factor:
        raise ValueError(
            f"`image_size`={image_size} must be divisible by 2**(len(dim_mults)-1)={factor} "
            f"for `dim_mults`={dim_mults}."
        )
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"`conditioning` must be one of {CONDITIONINGS} for U-Nets, got {conditioning!r}.")
    if conditioning == "class":
        check_int(num_classes, "num_classes")
    if conditioning == "text":
        check_int(text_dim, "text_dim")
    check_int(num_heads, "num_heads")
    attention_resolutions = tuple(attention_resolutions or ())
    for r in attention_resolutions:
        check_int(r, "attention_resolutions")
    return (height, width), dim_mults, attention_resolutions


class UNetBackbone(VideoBackbone):
    """Common base of the U-Net backbones: the arguments every U-Net shares, the graph, the config.

    The arguments below (with the defaults the U-Nets share) are documented in
    :class:`UNet2D`; the video U-Nets add theirs through ``video`` (the keyword
    arguments of :func:`build_unet_graph` for time). Every constructor argument
    named in the subclass's ``CONFIG_KEYS`` is kept as an attribute of the same
    name (sequences as tuples) and written back by ``get_config`` (as lists).

    ``temporal_mask`` and ``fps`` are optional inputs of the video U-Nets; a
    caller (e.g. ``VideoDiffusion``) that does not know them may omit them,
    which means "all frames interact" and "no fps information".
    """

    optional_input_names = ("temporal_mask", "fps", "aug_level")
    CONFIG_KEYS = ()

    def __init__(
        self,
        *,
        image_size,
        attention_resolutions,
        in_channels=3,
        dim=64,
        dim_mults=(1, 2, 4, 8),
        num_res_blocks=2,
        num_heads=4,
        norm_groups=32,
        dropout=0.0,
        conditioning=None,
        num_classes=None,
        text_dim=None,
        embedding_mode="scale_shift",
        learn_sigma=False,
        video=None,
        dtype=None,
        **kwargs,
    ):
        check_int(in_channels, "in_channels")
        out_channels = in_channels * (2 if learn_sigma else 1)
        inputs, outputs = build_unet_graph(
            self, image_size=image_size, in_channels=in_channels, out_channels=out_channels, dim=dim,
            dim_mults=dim_mults, num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
            num_heads=num_heads, norm_groups=norm_groups, dropout=dropout, conditioning=conditioning,
            num_classes=num_classes, text_dim=text_dim, embedding_mode=embedding_mode, dtype=dtype, **(video or {}),
        )
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.image_size = image_size
        self.in_channels = in_channels
        self.dim = dim
        self.dim_mults = tuple(dim_mults)
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = tuple(attention_resolutions or ())
        self.num_heads = num_heads
        self.norm_groups = norm_groups
        self.dropout = dropout
        self.conditioning = conditioning
        self.num_classes = num_classes if conditioning == "class" else None
        self.text_dim = text_dim if conditioning == "text" else None
        self.embedding_mode = embedding_mode
        self.learn_sigma = learn_sigma
        self.out_channels = out_channels

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, dict) and isinstance(self.input, dict):
            missing = [k for k in self.optional_input_names if k in self.input and k not in inputs]
            if missing:
                inputs = dict(inputs, **{k: None for k in missing})
        return super().__call__(inputs, *args, **kwargs)

    def get_config(self):
        config = super().get_config()
        for key in self.CONFIG_KEYS:
            value = getattr(self, key)
            config[key] = list(value) if isinstance(value, tuple) and key != "image_size" else value
        return config


def build_unet_graph(
    model,
    *,
    image_size,
    in_channels,
    out_channels,
    dim,
    dim_mults,
    num_res_blocks,
    attention_resolutions,
    num_heads,
    norm_groups,
    dropout,
    conditioning,
    num_classes,
    num_frames=None,
    conv_type="spatial",
    temporal_attention_resolutions=(),
    relative_position_bias=True,
    learned_mix=False,
    fps_conditioning=False,
    aug_level_conditioning=False,
    mid_attention=True,
    num_extra_input_channels=0,
    temporal_mask_input=False,
    text_dim=None,
    embedding_mode="scale_shift",
    dtype=None,
):
    """Create the U-Net's layers on ``model`` (``model.unet_layers``) and return ``(inputs, outputs)``.

    ``num_frames=None`` builds the image U-Net; an int builds a video U-Net
    whose temporal parts are chosen by ``conv_type``, ``temporal_attention_resolutions``
    (sizes, or ``"all"``), ``relative_position_bias`` and ``learned_mix``.
    ``num_extra_input_channels`` widens ``latents``; those channels enter
    through their own zero-initialised 3x3 convolution ``condition_in`` added to
    ``conv_in`` (equal to one ``conv_in`` over all channels, but ``conv_in``
    stays the image model's and can be frozen). ``aug_level_conditioning`` adds the
    optional input ``aug_level`` (B,) to the embedding; ``mid_attention=False`` drops
    the middle block's spatial attention (with no attention resolutions: a fully
    convolutional U-Net, Imagen Video's last stages).
    """
    (height, width), dim_mults, attention_resolutions = _check_unet_args(
        image_size, dim, dim_mults, attention_resolutions, conditioning, num_classes, num_heads, text_dim
    )
    check_int(num_res_blocks, "num_res_blocks")
    check_int(num_extra_input_channels, "num_extra_input_channels", minimum=0)
    video = num_frames is not None
    if video:
        check_int(num_frames, "num_frames")
    layers = {}

    def add(name, layer):
        layers[name] = layer
        return layer

    common = dict(dtype=dtype)
    res_kwargs = dict(norm_groups=norm_groups, dropout=dropout, conv_type=conv_type if video else "spatial",
                      embedding_mode=embedding_mode, **common)
    context_dim = text_dim if conditioning == "text" else None

    def temporal_here(size):
        if not video:
            return False
        if temporal_attention_resolutions == "all":
            return True
        return size in tuple(temporal_attention_resolutions or ())

    def make_temporal(name):
        return add(name, TemporalAttention(
            num_heads, relative_position_bias=relative_position_bias, learned_mix=learned_mix, name=name, **common
        ))

    # === Inputs ===
    frame_shape = (height, width, in_channels + num_extra_input_channels)
    latents = keras.Input(shape=((num_frames,) if video else ()) + frame_shape, name="latents")
    timesteps = keras.Input(shape=(), name="timesteps")
    inputs = {"latents": latents, "timesteps": timesteps}
    class_labels = fps = aug_level = temporal_mask = None
    inputs.update(condition_inputs(conditioning, text_dim))
    class_labels = inputs.get("class_labels")
    context, context_mask = inputs.get("text_embeddings"), inputs.get("text_mask")
    if fps_conditioning:
        fps = inputs["fps"] = keras.Input(shape=(), name="fps", optional=True)
    if aug_level_conditioning:
        aug_level = inputs["aug_level"] = keras.Input(shape=(), name="aug_level", optional=True)
    if temporal_mask_input:
        temporal_mask = inputs["temporal_mask"] = keras.Input(shape=(), name="temporal_mask", optional=True)

    # === Graph ===
    emb_layer = add("condition_embedding", UNetConditionEmbedding(
        4 * dim, frequency_dim=dim, num_classes=num_classes if conditioning == "class" else None,
        fps_conditioning=fps_conditioning, text_dim=context_dim, aug_level_conditioning=aug_level_conditioning,
        name="condition_embedding", **common
    ))
    emb = emb_layer(timesteps, class_labels, fps, inputs.get("pooled_text"), context_mask, aug_level)
    conv_in = add("conv_in", keras.layers.Conv2D(dim, 3, padding="same", name="conv_in", **common))
    if num_extra_input_channels:
        condition_in = add("condition_in", keras.layers.Conv2D(
            dim, 3, padding="same", use_bias=False, kernel_initializer="zeros", name="condition_in", **common))
        x = apply_per_frame(conv_in, latents[..., :in_channels]) + apply_per_frame(
            condition_in, latents[..., in_channels:])
    else:
        x = apply_per_frame(conv_in, latents)

    def spatial_attention(name, x):
        layer = add(name, SpatialAttention(num_heads, norm_groups=norm_groups, context_dim=context_dim, name=name,
                                           **common))
        return layer(x) if context_dim is None else layer(x, context, context_mask)

    skips = [x]
    size = height
    for level, mult in enumerate(dim_mults):
        for j in range(num_res_blocks):
            x = add(f"down_{level}_res_{j}", ResBlock(dim * mult, name=f"down_{level}_res_{j}", **res_kwargs))(
                x, emb, temporal_mask
            )
            if size in attention_resolutions:
                x = spatial_attention(f"down_{level}_attn_{j}", x)
            if temporal_here(size):
                x = make_temporal(f"down_{level}_tattn_{j}")(x, temporal_mask)
            skips.append(x)
        if level != len(dim_mults) - 1:
            x = add(f"down_{level}_downsample", Downsample(name=f"down_{level}_downsample", **common))(x)
            skips.append(x)
            size //= 2
    mid = dim * dim_mults[-1]
    x = add("mid_res_0", ResBlock(mid, name="mid_res_0", **res_kwargs))(x, emb, temporal_mask)
    if mid_attention:
        x = spatial_attention("mid_attn", x)
    if video and (temporal_attention_resolutions == "all" or tuple(temporal_attention_resolutions or ())):
        x = make_temporal("mid_tattn")(x, temporal_mask)
    x = add("mid_res_1", ResBlock(mid, name="mid_res_1", **res_kwargs))(x, emb, temporal_mask)
    for level in reversed(range(len(dim_mults))):
        for j in range(num_res_blocks + 1):
            x = ops.concatenate([x, skips.pop()], axis=-1)
            x = add(f"up_{level}_res_{j}", ResBlock(dim * dim_mults[level], name=f"up_{level}_res_{j}", **res_kwargs))(
                x, emb, temporal_mask
            )
            if size in attention_resolutions:
                x = spatial_attention(f"up_{level}_attn_{j}", x)
            if temporal_here(size):
                x = make_temporal(f"up_{level}_tattn_{j}")(x, temporal_mask)
        if level != 0:
            x = add(f"up_{level}_upsample", Upsample(name=f"up_{level}_upsample", **common))(x)
            size *= 2
    norm_out = add("norm_out", group_norm(dim, norm_groups, "norm_out", dtype))
    conv_out = add("conv_out", keras.layers.Conv2D(
        out_channels, 3, padding="same", kernel_initializer="zeros", name="conv_out", **common))
    x = ops.silu(apply_per_frame(norm_out, x))
    outputs = apply_per_frame(conv_out, x)
    model.unet_layers = layers
    return inputs, outputs


@keras.saving.register_keras_serializable(package="keras_vdiff")
class UNet2D(UNetBackbone):
    """The DDPM / ADM image U-Net (Ho et al. 2020; Dhariwal & Nichol 2021), unconditional or class-conditional.

    Args:
        image_size: latent height/width (int or pair), divisible by ``2**(len(dim_mults)-1)``.
        in_channels: latent channels.
        dim: base width; level ``i`` has ``dim * dim_mults[i]`` channels.
        dim_mults: width multipliers per resolution level (DDPM CIFAR: (1, 2, 2, 2)).
        num_res_blocks: residual blocks per level on the way down (one more up).
        attention_resolutions: feature-map heights at which spatial attention runs
            (DDPM: (16,)); the middle block always has attention.
        num_heads: attention heads.
        norm_groups: group-norm groups (gcd with the channel count is used).
        dropout: ResBlock dropout.
        conditioning: None, ``"class"`` (label ``num_classes`` is the null class;
            the label embedding is added to the timestep embedding that every
            ResBlock broadcast-adds) or ``"text"`` (pooled text added to the
            timestep embedding, cross-attention to the text tokens in every
            attention block, LDM-style).
        num_classes: class count for ``conditioning="class"``.
        text_dim: text width for ``conditioning="text"``.
        embedding_mode: how ResBlocks take the embedding: ``"scale_shift"``
            (ADM) or ``"add"`` (DDPM / the MNIST lab's broadcast-add).
        learn_sigma: also output the improved-DDPM variance channels.
        dtype: dtype policy.

    Inputs: ``{"latents": (B, H, W, C), "timesteps": (B,)}`` plus ``"class_labels": (B,)``
    (class) or ``"text_embeddings": (B, L, text_dim), "text_mask": (B, L), "pooled_text": (B, text_dim)`` (text).
    Output: ``(B, H, W, out_channels)``.

    Example:
        >>> unet = UNet2D(image_size=16, in_channels=3, dim=16, dim_mults=(1, 2), conditioning="class",
        ...               num_classes=4)
        >>> unet({"latents": keras.ops.zeros((2, 16, 16, 3)), "timesteps": keras.ops.array([1.0, 2.0]),
        ...       "class_labels": keras.ops.array([0, 4])}).shape
        (2, 16, 16, 3)
    """

    is_video = False
    CONFIG_KEYS = (
        "image_size", "in_channels", "dim", "dim_mults", "num_res_blocks", "attention_resolutions", "num_heads",
        "norm_groups", "dropout", "conditioning", "num_classes", "text_dim", "embedding_mode", "learn_sigma",
    )

    def __init__(self, image_size=32, *, attention_resolutions=(16,), **kwargs):
        super().__init__(image_size=image_size, attention_resolutions=attention_resolutions, **kwargs)
        self.latent_shape = check_pair(image_size, "image_size") + (self.in_channels,)
