"""The shared builder and base class of the latent-token backbones (SnapVideo-FiT and RIN).

Both families run the same network (see ``read_write_block.py`` for the shape
story): patch tokens with space-time positions, learned latents (plus latent
self-conditioning), ``num_blocks`` read / process / write blocks and DiT's final
layer. They differ in how the patch tokens are grouped (SnapVideo: ``G``
spatial regions over all frames, 2D patches; RIN: one group of tubelets) and in
RIN's two interface options, so :class:`LatentTokenBackbone` takes the grouping
from its subclass and everything else as shared, documented keyword arguments.
"""

import keras
from keras import ops

from keras_vdiff.layers.conditioning import backbone_inputs, check_conditioning
from keras_vdiff.layers.modulation import output_head
from keras_vdiff.layers.patching import PatchEmbedding
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.models.latent_tokens.condition_tokens import ConditionTokens
from keras_vdiff.models.latent_tokens.grouping import (
    group_grid,
    group_patches,
    spacetime_position_table,
    ungroup_patches,
)
from keras_vdiff.models.latent_tokens.interface import InterfaceConv, LatentLocalityBias
from keras_vdiff.models.latent_tokens.latents import LatentSelfConditioning, LearnedLatents
from keras_vdiff.models.latent_tokens.read_write_block import LatentReadWriteBlock
from keras_vdiff.models.latte import check_video_transformer
from keras_vdiff.validation import check_bool, check_divisible, check_int


def check_latent_token_arguments(*, input_shape, patch_size, tubelet_size, patch_dim, latent_dim, num_blocks,
                                 num_latent_layers, groups, latents_per_group, num_heads, patch_num_heads,
                                 conditioning, num_classes, text_dim, adaln, num_registers, text_layers,
                                 self_conditioning, learn_sigma, num_local_layers, interface_conv_kernel,
                                 latent_locality, **unused):
    """Validate the arguments of :func:`build_latent_token_network`; returns ``(F, H, W, C)``."""
    shape = check_video_transformer(input_shape, patch_size, tubelet_size, patch_dim, num_blocks, patch_num_heads)
    check_conditioning(conditioning, num_classes, text_dim)
    check_int(latent_dim, "latent_dim")
    check_int(num_heads, "num_heads")
    check_int(latents_per_group, "latents_per_group" if groups != (1, 1) else "num_latents")
    for name, value in (("num_latent_layers", num_latent_layers), ("num_local_layers", num_local_layers),
                        ("interface_conv_kernel", interface_conv_kernel), ("num_registers", num_registers),
                        ("text_layers", text_layers)):
        check_int(value, name, minimum=0)
    if interface_conv_kernel % 2 == 0 and interface_conv_kernel:
        raise ValueError(f"`interface_conv_kernel` must be 0 (off) or odd, got {interface_conv_kernel}.")
    check_divisible(latent_dim, "latent_dim", num_heads, "num_heads")
    for name, value in (("adaln", adaln), ("self_conditioning", self_conditioning), ("learn_sigma", learn_sigma),
                        ("latent_locality", latent_locality)):
        check_bool(value, name)
    return shape


def build_latent_token_network(model, **arguments):
    """Create the layers of a latent-token backbone on ``model``; returns ``(inputs, outputs, info)``.

    Shared by :class:`SnapVideo` (per-frame patches, ``G`` spatial groups) and
    :class:`RIN` (tubelet patches, one group). Takes the keyword arguments of
    :class:`LatentTokenBackbone` (all of them, by name) and validates every one first.
    """
    frames, height, width, in_channels = check_latent_token_arguments(**arguments)
    a = arguments
    patch_size, tubelet_size, patch_dim, dtype = a["patch_size"], a["tubelet_size"], a["patch_dim"], a["dtype"]
    latent_dim, num_heads, num_blocks = a["latent_dim"], a["num_heads"], a["num_blocks"]
    grid = (height // patch_size, width // patch_size)
    groups = group_grid(a["groups"], grid)
    token_frames = frames // tubelet_size
    num_latents = groups[0] * groups[1] * a["latents_per_group"]
    out_channels = in_channels * (2 if a["learn_sigma"] else 1)
    if a["interface_conv_kernel"] and groups != (1, 1):
        # A convolution over the whole token grid would let groups see each other before the global step.
        raise ValueError("`interface_conv_kernel` needs one group (RIN); FiT's groups must stay separate.")
    if a["latent_locality"] and groups != (1, 1):
        raise ValueError("`latent_locality` is a soft replacement for FiT's groups: it needs one group (RIN).")

    # === Layers ===
    model.patch_embedding = PatchEmbedding(
        patch_size, patch_dim, tubelet_size=tubelet_size, name="patch_embedding", dtype=dtype
    )
    model.condition_tokens = ConditionTokens(
        latent_dim, a["conditioning"], a["num_classes"], num_heads=num_heads, num_registers=a["num_registers"],
        text_layers=a["text_layers"], class_dropout_prob=a["class_dropout_prob"], name="condition_tokens", dtype=dtype,
    )
    model.learned_latents = LearnedLatents(num_latents, latent_dim, name="learned_latents", dtype=dtype)
    model.latent_self_conditioning = (
        LatentSelfConditioning(latent_dim, name="latent_self_conditioning", dtype=dtype)
        if a["self_conditioning"] else None
    )
    model.blocks = [
        LatentReadWriteBlock(
            patch_dim, latent_dim, a["latents_per_group"], num_heads, patch_num_heads=a["patch_num_heads"],
            num_latent_layers=a["num_latent_layers"], mlp_ratio=a["mlp_ratio"], use_adaln=a["adaln"],
            num_local_layers=a["num_local_layers"], name=f"block_{i}", dtype=dtype,
        )
        for i in range(num_blocks)
    ]
    model.interface_convs = [
        InterfaceConv(a["interface_conv_kernel"], grid, name=f"interface_conv_{i}", dtype=dtype)
        for i in range(num_blocks if a["interface_conv_kernel"] else 0)
    ]
    model.locality_biases = [
        LatentLocalityBias(num_latents, grid, token_frames, num_heads, a["patch_num_heads"] or num_heads,
                           name=f"locality_bias_{i}", dtype=dtype)
        for i in range(num_blocks if a["latent_locality"] else 0)
    ]
    model.final_layer, model.unpatchify = output_head(patch_size, out_channels, grid, tubelet_size, dtype)

    # === Functional model ===
    inputs = backbone_inputs((frames, height, width, in_channels), a["conditioning"], a["text_dim"])
    if a["self_conditioning"]:
        inputs["previous_latents"] = keras.Input(shape=(num_latents, latent_dim), name="previous_latents")
    timesteps = inputs["timesteps"]
    cond = {key: value for key, value in inputs.items() if key not in ("latents", "timesteps", "previous_latents")}
    tokens, token_mask, pooled = model.condition_tokens(timesteps, **cond)

    x = model.patch_embedding(inputs["latents"])  # (B, F', N, Dx)
    table = spacetime_position_table(token_frames, grid[0], grid[1], patch_dim)
    x = x + ops.cast(table[None], x.dtype)
    x = group_patches(x, grid, groups)  # (B, G, P, Dx)
    z = model.learned_latents(timesteps)  # (B, G*L, Dl)
    if a["self_conditioning"]:
        z = model.latent_self_conditioning(z, inputs["previous_latents"])
    for i, block in enumerate(model.blocks):
        biases = {}
        if model.locality_biases:
            biases["read_bias"], biases["write_bias"] = model.locality_biases[i](timesteps)
        if a["adaln"]:
            x, z = block(x, z, tokens, token_mask, pooled, **biases)
        else:
            x, z = block(x, z, tokens, token_mask, **biases)
        if model.interface_convs:  # the convolution sees the token grid (B, F', N, Dx)
            x = group_patches(model.interface_convs[i](ungroup_patches(x, token_frames, grid, groups)), grid, groups)
    x = ungroup_patches(x, token_frames, grid, groups)  # (B, F', N, Dx)
    prediction = model.unpatchify(model.final_layer(x, pooled))
    outputs = {"output": prediction, "latents": z} if a["self_conditioning"] else prediction
    info = dict(
        latent_shape=(frames, height, width, in_channels),
        in_channels=in_channels,
        out_channels=out_channels,
        groups=groups,
        num_latents=num_latents,
        grid_size=grid,
    )
    return inputs, outputs, info


class LatentTokenBackbone(VideoBackbone):
    """The base class of the latent-token backbones (:class:`SnapVideo`, :class:`RIN`).

    Builds the network of :func:`build_latent_token_network`. The arguments both
    families share are keyword arguments here, with their common defaults; a
    subclass names its own arguments (and the defaults that differ), passes the
    grouping (``groups``, ``tubelet_size``, ``latents_per_group``), lists its
    constructor arguments in ``CONFIG_KEYS`` (what ``get_config`` writes, see
    ``VideoBackbone.store_config``) and stores those that are not arguments here.

    Args:
        The shared arguments are documented in :class:`SnapVideo` (and :class:`RIN`);
        ``groups``, ``tubelet_size`` and ``latents_per_group`` are the grouping, from the
        subclass; ``num_local_layers`` (SnapVideo), ``interface_conv_kernel`` and
        ``latent_locality`` (RIN) are the family options.
    """

    def __init__(
        self,
        *,
        input_shape,
        patch_dim,
        num_blocks,
        patch_num_heads,
        learn_sigma,
        groups,
        tubelet_size,
        latents_per_group,
        patch_size=2,
        latent_dim=1024,
        num_latent_layers=4,
        num_heads=16,
        mlp_ratio=4.0,
        conditioning=None,
        num_classes=None,
        text_dim=None,
        adaln=False,
        num_registers=16,
        text_layers=2,
        self_conditioning=True,
        class_dropout_prob=0.0,
        num_local_layers=0,
        interface_conv_kernel=0,
        latent_locality=False,
        dtype=None,
        **kwargs,
    ):
        arguments = {key: value for key, value in locals().items() if key not in ("self", "kwargs", "__class__")}
        inputs, outputs, info = build_latent_token_network(self, **arguments)
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self.store_config(arguments)  # the subclass stores the keys that are its own
        for key, value in info.items():
            setattr(self, key, value)

    @property
    def previous_latents_shape(self):
        """``(num_latents, latent_dim)``: the per-example shape of ``previous_latents``."""
        return (self.num_latents, self.latent_dim)
