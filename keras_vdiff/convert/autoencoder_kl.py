"""Converting a diffusers ``AutoencoderKL`` folder (the SD 1/2 VAE) into :class:`kv.autoencoders.AutoencoderKL`.

The ``vae/`` folders of ``maxin-cn/Latte-1``, ``facebook/DiT-XL-2-256`` and
``stabilityai/sd-vae-ft-ema`` are such folders. Config fields map one to one
(same names; a missing field takes diffusers' default, e.g. ``scaling_factor``
0.18215 in configs written before it existed; ``shift_factor`` None -> 0).
The tensor names map onto the layers of ``vae.encoder`` / ``vae.decoder``::

    encoder.conv_in                               -> encoder_conv_in
    encoder.down_blocks.i.resnets.j               -> encoder_down_{i}_resnet_{j}
    encoder.down_blocks.i.downsamplers.0.conv     -> encoder_down_{i}_downsample   (after encoder_down_{i}_pad)
    {en,de}coder.mid_block.resnets.{0,1}          -> {en,de}coder_mid_resnet_{0,1}
    {en,de}coder.mid_block.attentions.0           -> {en,de}coder_mid_attention
    encoder.conv_norm_out / encoder.conv_out      -> encoder_out_norm / encoder_out_conv
    quant_conv / post_quant_conv                  -> quant_conv (encoder) / post_quant_conv (decoder)
    decoder.conv_in                               -> decoder_conv_in
    decoder.up_blocks.i.resnets.j                 -> decoder_up_{i}_resnet_{j}
    decoder.up_blocks.i.upsamplers.0.conv         -> decoder_up_{i}_upsample_conv  (after nearest x2)
    decoder.conv_norm_out / decoder.conv_out      -> decoder_out_norm / decoder_out_conv

    inside a ResnetBlock2D:   norm1, conv1, norm2, conv2, conv_shortcut -> norm_1, conv_1, norm_2, conv_2, skip
    inside an attention:      group_norm                       -> norm
                              to_q, to_k, to_v, to_out.0       -> attention.query, .key, .value, .output_projection
                              (query, key, value, proj_attn: the names of folders saved before diffusers 0.15,
                              e.g. sd-vae-ft-ema; diffusers renames them on load, so does this converter)

A PyTorch ``Conv2d`` weight ``(out, in, kh, kw)`` becomes a Keras kernel
``(kh, kw, in, out)``; a ``Linear`` weight is transposed; GroupNorm weight and
bias are gamma and beta. diffusers' ``Downsample2D`` pads one zero row and
column after (none before) and convolves with stride 2 unpadded; the Keras
model does the same with an explicit ``ZeroPadding2D``, so every input size
matches. The attention is single-headed (head width = channels, scale
``1 / sqrt(C)``), as diffusers builds it for the VAE.
"""

from keras_vdiff.autoencoders.autoencoder_kl import AutoencoderKL
from keras_vdiff.convert.checkpoint import ConversionError, assign, check_config, linear

__all__ = ["convert_autoencoder_kl", "autoencoder_kl_config", "merged_vae_config", "build_converted", "group_norm"]

WHERE = "AutoencoderKL"

# diffusers' AutoencoderKL defaults, for configs that leave a field out.
DIFFUSERS_DEFAULTS = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    block_out_channels=(64,), layers_per_block=1, act_fn="silu", latent_channels=4, norm_num_groups=32,
    sample_size=32, scaling_factor=0.18215, shift_factor=None, latents_mean=None, latents_std=None,
    force_upcast=True, use_quant_conv=True, use_post_quant_conv=True, mid_block_add_attention=True,
)


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


SUPPORTED = dict(
    act_fn=("silu", "swish"),  # both are SiLU in diffusers
    latents_mean=(None,),
    latents_std=(None,),
    scaling_factor=lambda v: _number(v) and v > 0,
    shift_factor=lambda v: v is None or _number(v),
    force_upcast=(True, False),  # the precision diffusers' pipelines run the VAE in; the math is the same
    use_quant_conv=(True, False),
    use_post_quant_conv=(True, False),
    mid_block_add_attention=(True, False),
)
BLOCK_TYPES = dict(down_block_types="DownEncoderBlock2D", up_block_types="UpDecoderBlock2D")


def completed_config(config, defaults, supported, where):
    """A diffusers ``config.json`` checked and completed with ``defaults`` (diffusers' own).

    Raises ``ConversionError`` for a field not in ``defaults`` or a value
    ``supported`` refuses (see ``check_config``).
    """
    unknown = sorted(k for k in config if not k.startswith("_") and k not in defaults)
    if unknown:
        raise ConversionError(
            f"{where} config field(s) {unknown} are not known to this converter (a newer diffusers?); "
            f"known: {sorted(defaults)}."
        )
    check_config(config, supported, where)
    return dict(defaults, **{k: v for k, v in config.items() if not k.startswith("_")})


def merged_vae_config(config, defaults, supported, block_types, where):
    """:func:`completed_config` of a VAE with ``block_out_channels`` and per-level block types.

    Also raises ``ConversionError`` for ``block_types`` fields (``{field: the
    one block class}``) with another class or not one entry per
    ``block_out_channels`` level.
    """
    merged = completed_config(config, defaults, supported, where)
    widths = merged["block_out_channels"]
    if not isinstance(widths, (list, tuple)) or not widths:
        raise ConversionError(f"{where} config field `block_out_channels`={widths!r} must be a non-empty list.")
    for field, block in block_types.items():
        blocks = merged[field]
        if not isinstance(blocks, (list, tuple)) or any(b != block for b in blocks):
            raise ConversionError(f"{where} config field `{field}`={blocks!r} is not supported; supported: "
                                  f"{block!r} for every level.")
        if len(blocks) != len(widths):
            raise ConversionError(f"{where} config field `{field}`={blocks!r} must have one entry per "
                                  f"`block_out_channels` level ({widths!r}).")
    return merged


def build_converted(cls, arguments, folder, where, dtype):
    """``cls(**arguments, dtype=dtype)``; a layout the model rejects becomes a ``ConversionError`` naming the folder."""
    try:
        return cls(**arguments, dtype=dtype)
    except ConversionError:
        raise
    except ValueError as error:  # e.g. groups that do not divide a width
        raise ConversionError(f"The {where} config of {folder.path!r} does not build: {error}") from error


def autoencoder_kl_config(config):
    """The ``AutoencoderKL`` constructor arguments of a diffusers ``config.json`` (checked; raises ``ConversionError``)."""
    merged = merged_vae_config(config, DIFFUSERS_DEFAULTS, SUPPORTED, BLOCK_TYPES, WHERE)
    widths = merged["block_out_channels"]
    shift = merged["shift_factor"]
    return dict(
        in_channels=merged["in_channels"],
        out_channels=merged["out_channels"],
        block_out_channels=tuple(widths),
        layers_per_block=merged["layers_per_block"],
        latent_channels=merged["latent_channels"],
        norm_num_groups=merged["norm_num_groups"],
        sample_size=merged["sample_size"],
        scaling_factor=float(merged["scaling_factor"]),
        shift_factor=0.0 if shift is None else float(shift),
        use_quant_conv=merged["use_quant_conv"],
        use_post_quant_conv=merged["use_post_quant_conv"],
        mid_block_add_attention=merged["mid_block_add_attention"],
    )


def _conv(folder, prefix, layer):
    assign(layer.kernel, folder.take(prefix + ".weight").transpose(2, 3, 1, 0), prefix + ".weight")
    assign(layer.bias, folder.take(prefix + ".bias"), prefix + ".bias")


def group_norm(folder, prefix, layer):
    """A PyTorch ``GroupNorm`` (``prefix.weight``, ``.bias``) into a Keras ``GroupNormalization``."""
    assign(layer.gamma, folder.take(prefix + ".weight"), prefix + ".weight")
    assign(layer.beta, folder.take(prefix + ".bias"), prefix + ".bias")


def _resnet(folder, prefix, block):
    group_norm(folder, prefix + ".norm1", block.norm_1)
    _conv(folder, prefix + ".conv1", block.conv_1)
    group_norm(folder, prefix + ".norm2", block.norm_2)
    _conv(folder, prefix + ".conv2", block.conv_2)
    if block.skip is not None:
        _conv(folder, prefix + ".conv_shortcut", block.skip)


_ATTENTION_NAMES = {  # diffusers' names, then the names of folders saved before the rename
    "query": ("to_q", "query"),
    "key": ("to_k", "key"),
    "value": ("to_v", "value"),
    "output_projection": ("to_out.0", "proj_attn"),
}


def _attention(folder, prefix, block):
    group_norm(folder, prefix + ".group_norm", block.norm)
    for attribute, names in _ATTENTION_NAMES.items():
        name = next((n for n in names if f"{prefix}.{n}.weight" in folder), names[0])  # missing: take names it
        linear(folder, f"{prefix}.{name}", getattr(block.attention, attribute))


def _mid_block(folder, prefix, network, vae):
    _resnet(folder, f"{prefix}.mid_block.resnets.0", network.get_layer(f"{prefix}_mid_resnet_0"))
    if vae.mid_block_add_attention:
        _attention(folder, f"{prefix}.mid_block.attentions.0", network.get_layer(f"{prefix}_mid_attention"))
    _resnet(folder, f"{prefix}.mid_block.resnets.1", network.get_layer(f"{prefix}_mid_resnet_1"))


def convert_autoencoder_kl(folder, dtype=None):
    """A built :class:`AutoencoderKL` with every tensor of a diffusers ``AutoencoderKL`` folder assigned.

    Args:
        folder: a :class:`keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (``"float32"`` default, ``"bfloat16"``,
            ``"mixed_bfloat16"``); the weights are cast as they load (norms stay float32).

    Raises:
        ConversionError: an unsupported config value (naming the field), a
            missing tensor, a tensor of the wrong shape, or a tensor left unused.

    Example:
        >>> vae = kv.convert.from_diffusers("Latte-1/vae")    # calls this
    """
    vae = build_converted(AutoencoderKL, autoencoder_kl_config(folder.config), folder, WHERE, dtype)
    encoder, decoder = vae.encoder, vae.decoder
    levels = len(vae.block_out_channels)

    _conv(folder, "encoder.conv_in", encoder.get_layer("encoder_conv_in"))
    for i in range(levels):
        for j in range(vae.layers_per_block):
            _resnet(folder, f"encoder.down_blocks.{i}.resnets.{j}", encoder.get_layer(f"encoder_down_{i}_resnet_{j}"))
        if i < levels - 1:
            _conv(folder, f"encoder.down_blocks.{i}.downsamplers.0.conv",
                  encoder.get_layer(f"encoder_down_{i}_downsample"))
    _mid_block(folder, "encoder", encoder, vae)
    group_norm(folder, "encoder.conv_norm_out", encoder.get_layer("encoder_out_norm"))
    _conv(folder, "encoder.conv_out", encoder.get_layer("encoder_out_conv"))
    if vae.use_quant_conv:
        _conv(folder, "quant_conv", encoder.get_layer("quant_conv"))

    if vae.use_post_quant_conv:
        _conv(folder, "post_quant_conv", decoder.get_layer("post_quant_conv"))
    _conv(folder, "decoder.conv_in", decoder.get_layer("decoder_conv_in"))
    _mid_block(folder, "decoder", decoder, vae)
    for i in range(levels):
        for j in range(vae.layers_per_block + 1):
            _resnet(folder, f"decoder.up_blocks.{i}.resnets.{j}", decoder.get_layer(f"decoder_up_{i}_resnet_{j}"))
        if i < levels - 1:
            _conv(folder, f"decoder.up_blocks.{i}.upsamplers.0.conv",
                  decoder.get_layer(f"decoder_up_{i}_upsample_conv"))
    group_norm(folder, "decoder.conv_norm_out", decoder.get_layer("decoder_out_norm"))
    _conv(folder, "decoder.conv_out", decoder.get_layer("decoder_out_conv"))

    folder.check_all_taken()
    return vae
