"""Converting a diffusers ``AutoencoderKLWan`` folder (the Wan 2.1 VAE) into :class:`kv.autoencoders.WanVAE`.

The ``vae/`` folder of ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` (and of the 14B
T2V / I2V pipelines) is such a folder. Config fields map one to one (same
names; a missing field takes diffusers' default); Wan 2.2's residual
up / down blocks (``is_residual``), ``patch_size`` and encoder attention
(``attn_scales``) are refused by name. The tensor names map onto the layers::

    encoder.conv_in / encoder.conv_out / encoder.norm_out  -> encoder_conv_in / encoder_conv_out / encoder_norm_out
    encoder.down_blocks.k                                  -> encoder_down_{k}   (a resblock or a resample)
    {en,de}coder.mid_block.resnets.{0,1}                   -> {en,de}coder_mid_resnet_{0,1}
    {en,de}coder.mid_block.attentions.0                    -> {en,de}coder_mid_attention
    quant_conv / post_quant_conv                           -> quant_conv / post_quant_conv
    decoder.conv_in / decoder.conv_out / decoder.norm_out  -> decoder_conv_in / decoder_conv_out / decoder_norm_out
    decoder.up_blocks.i.resnets.j                          -> decoder_up_{i}_resnet_{j}
    decoder.up_blocks.i.upsamplers.0                       -> decoder_up_{i}_upsample

    inside a resblock:   norm1.gamma, conv1, norm2.gamma, conv2, conv_shortcut -> norm_1, conv_1, norm_2, conv_2, skip
    inside a resample:   resample.1 (the 2D conv), time_conv                     -> spatial conv, time_conv
    inside an attention: norm.gamma, to_qkv (split in q, k, v), proj              -> norm, attention.{query, key,
                                                                                    value, output_projection}

A ``Conv3d`` weight ``(out, in, t, h, w)`` becomes a Keras kernel ``(t, h, w,
in, out)``, a ``Conv2d`` weight ``(out, in, h, w)`` one of ``(h, w, in, out)``,
the 1x1 attention convolutions ``Dense`` kernels; an RMS-norm ``gamma``
``(C, 1, 1[, 1])`` is the norm's ``scale``.
"""

from keras_vdiff.autoencoders.wan_vae import WAN_LATENTS_MEAN, WAN_LATENTS_STD, WanResample, WanVAE
from keras_vdiff.convert.autoencoder_kl import build_converted, completed_config
from keras_vdiff.convert.checkpoint import ConversionError, assign

__all__ = ["convert_wan_vae", "wan_vae_config"]

WHERE = "AutoencoderKLWan"

# diffusers' AutoencoderKLWan defaults (the Wan 2.1 release), for configs that leave a field out.
DIFFUSERS_DEFAULTS = dict(
    base_dim=96, decoder_base_dim=None, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2, attn_scales=(),
    temperal_downsample=(False, True, True), dropout=0.0, latents_mean=WAN_LATENTS_MEAN, latents_std=WAN_LATENTS_STD,
    is_residual=False, in_channels=3, out_channels=3, patch_size=None, scale_factor_temporal=4,
    scale_factor_spatial=8,
)
SUPPORTED = dict(
    attn_scales=((),),  # attention inside the encoder's levels: no released Wan VAE has it
    dropout=(0, 0.0),  # the released value; the Keras model trains without dropout
    is_residual=(False,),  # Wan 2.2's residual up / down blocks (AvgDown3D / DupUp3D)
    patch_size=(None,),  # Wan 2.2's patchified input
)
LAYOUT = ("base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks", "temperal_downsample",
          "latents_mean", "latents_std", "in_channels", "out_channels")


def wan_vae_config(config):
    """The ``WanVAE`` constructor arguments of a diffusers ``config.json`` (checked; raises ``ConversionError``)."""
    merged = completed_config(config, DIFFUSERS_DEFAULTS, SUPPORTED, WHERE)
    arguments = {name: merged[name] for name in LAYOUT}
    for name in ("dim_mult", "temperal_downsample", "latents_mean", "latents_std"):
        arguments[name] = tuple(arguments[name]) if isinstance(arguments[name], (list, tuple)) else arguments[name]
    return arguments


def _check_factors(config, vae):
    """diffusers' ``scale_factor_*`` fields are informational (its pipelines read them); they must fit the layout."""
    for field, value in (("scale_factor_spatial", vae.spatial_downsampling),
                         ("scale_factor_temporal", vae.temporal_downsampling)):
        if config.get(field) is not None and config[field] != value:
            raise ConversionError(
                f"{WHERE} config field `{field}`={config[field]!r} does not match the layout, which resamples by "
                f"{value} (`dim_mult`, `temperal_downsample`)."
            )


def _conv(folder, prefix, layer):
    """A PyTorch ``Conv3d`` / ``Conv2d`` into a Keras convolution (or a ``CausalConv3D``'s inner one)."""
    layer = getattr(layer, "conv", layer)
    weight = folder.take(prefix + ".weight")
    assign(layer.kernel, weight.transpose(tuple(range(2, weight.ndim)) + (1, 0)), prefix + ".weight")
    assign(layer.bias, folder.take(prefix + ".bias"), prefix + ".bias")


def _norm(folder, prefix, norm):
    assign(norm.scale, folder.take(prefix + ".gamma").reshape(-1), prefix + ".gamma")


def _resnet(folder, prefix, block):
    _norm(folder, prefix + ".norm1", block.norm_1)
    _conv(folder, prefix + ".conv1", block.conv_1)
    _norm(folder, prefix + ".norm2", block.norm_2)
    _conv(folder, prefix + ".conv2", block.conv_2)
    if block.skip is not None:
        _conv(folder, prefix + ".conv_shortcut", block.skip)


def _attention(folder, prefix, block):
    _norm(folder, prefix + ".norm", block.norm)
    attention, name = block.attention, prefix + ".to_qkv"
    weight, bias = folder.take(name + ".weight"), folder.take(name + ".bias")
    channels = weight.shape[1]
    weight = weight.reshape(weight.shape[0], channels)
    for i, dense in enumerate((attention.query, attention.key, attention.value)):  # to_qkv's rows: q, then k, then v
        rows = slice(i * channels, (i + 1) * channels)
        assign(dense.kernel, weight[rows].T, f"{name}.weight[{rows.start}:{rows.stop}]")
        assign(dense.bias, bias[rows], f"{name}.bias[{rows.start}:{rows.stop}]")
    weight = folder.take(prefix + ".proj.weight")
    assign(attention.output_projection.kernel, weight.reshape(weight.shape[:2]).T, prefix + ".proj.weight")
    assign(attention.output_projection.bias, folder.take(prefix + ".proj.bias"), prefix + ".proj.bias")


def _resample(folder, prefix, layer):
    _conv(folder, prefix + ".resample.1", layer.spatial.get_layer("conv"))
    if layer.time_conv is not None:
        _conv(folder, prefix + ".time_conv", layer.time_conv)


def _mid(folder, prefix, layers):
    _resnet(folder, prefix + ".mid_block.resnets.0", layers[0])
    _attention(folder, prefix + ".mid_block.attentions.0", layers[1])
    _resnet(folder, prefix + ".mid_block.resnets.1", layers[2])


def convert_wan_vae(folder, dtype=None):
    """A built :class:`WanVAE` with every tensor of a diffusers ``AutoencoderKLWan`` folder assigned.

    Args:
        folder: a :class:`keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (``"float32"`` default, ``"bfloat16"``,
            ``"mixed_bfloat16"``); the weights are cast as they load (norms stay float32).

    Raises:
        ConversionError: an unsupported config value (naming the field), a
            missing tensor, a tensor of the wrong shape, or a tensor left unused.

    Example:
        >>> vae = kv.convert.from_diffusers("Wan2.1-T2V-1.3B-Diffusers/vae")    # calls this
    """
    vae = build_converted(WanVAE, wan_vae_config(folder.config), folder, WHERE, dtype)  # e.g. 3 time halvings
    _check_factors(folder.config, vae)

    _conv(folder, "encoder.conv_in", vae.encoder_conv_in)
    for k, layer in enumerate(vae.encoder_down):
        (_resample if isinstance(layer, WanResample) else _resnet)(folder, f"encoder.down_blocks.{k}", layer)
    _mid(folder, "encoder", vae.encoder_mid)
    _norm(folder, "encoder.norm_out", vae.encoder_norm_out)
    _conv(folder, "encoder.conv_out", vae.encoder_conv_out)
    _conv(folder, "quant_conv", vae.quant_conv)

    _conv(folder, "post_quant_conv", vae.post_quant_conv)
    _conv(folder, "decoder.conv_in", vae.decoder_conv_in)
    _mid(folder, "decoder", vae.decoder_mid)
    for i, level in enumerate(vae.decoder_up):
        for j in range(vae.num_res_blocks + 1):
            _resnet(folder, f"decoder.up_blocks.{i}.resnets.{j}", level[j])
        if len(level) > vae.num_res_blocks + 1:
            _resample(folder, f"decoder.up_blocks.{i}.upsamplers.0", level[-1])
    _norm(folder, "decoder.norm_out", vae.decoder_norm_out)
    _conv(folder, "decoder.conv_out", vae.decoder_conv_out)

    folder.check_all_taken()
    return vae
