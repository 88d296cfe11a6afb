"""Converting a diffusers ``AutoencoderKLCogVideoX`` folder (``THUDM/CogVideoX-2b/vae``) into :class:`kv.autoencoders.CogVideoXVAE`.

Config fields map one to one (same names; a missing field takes diffusers'
default, which is the released 2b VAE; ``shift_factor`` None -> 0). Tensor
names map onto the layers of the model (``vae.get_layer(name)``)::

    encoder.conv_in.conv                             -> encoder_conv_in.conv
    encoder.down_blocks.i.resnets.j                  -> encoder_down_{i}_resnet_{j}
    encoder.down_blocks.i.downsamplers.0.conv        -> encoder_down_{i}_downsample.conv  (Conv2d -> 1x3x3)
    encoder.mid_block.resnets.j                      -> encoder_mid_resnet_{j}
    encoder.norm_out / encoder.conv_out.conv         -> encoder_norm_out / encoder_conv_out.conv
    decoder.conv_in.conv                             -> decoder_conv_in.conv
    decoder.mid_block.resnets.j                      -> decoder_mid_resnet_{j}
    decoder.up_blocks.i.resnets.j                    -> decoder_up_{i}_resnet_{j}
    decoder.up_blocks.i.upsamplers.0.conv            -> decoder_up_{i}_upsample.conv      (Conv2d -> 1x3x3)
    decoder.norm_out / decoder.conv_out.conv         -> decoder_norm_out / decoder_conv_out.conv

    inside a resnet:  norm1, conv1.conv, norm2, conv2.conv, conv_shortcut  -> norm_1, conv_1.conv, norm_2,
                                                                              conv_2.conv, skip.conv
    a spatial norm:   norm_layer, conv_y.conv, conv_b.conv                 -> norm, conv_y.conv, conv_b.conv

A PyTorch ``Conv3d`` weight ``(out, in, kt, kh, kw)`` becomes a Keras kernel
``(kt, kh, kw, in, out)``; the per-frame ``Conv2d`` of the down / up samplers
becomes a ``(1, kh, kw, in, out)`` kernel; GroupNorm weight and bias are gamma
and beta.
"""

from keras_vdiff.autoencoders.cogvideox_vae import CogVideoXVAE
from keras_vdiff.convert.autoencoder_kl import build_converted, group_norm, merged_vae_config
from keras_vdiff.convert.checkpoint import assign

__all__ = ["convert_cogvideox_vae", "cogvideox_vae_config"]

WHERE = "AutoencoderKLCogVideoX"

# diffusers' AutoencoderKLCogVideoX defaults (the released CogVideoX-2b VAE), for configs that leave a field out.
DIFFUSERS_DEFAULTS = dict(
    in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
    up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(128, 256, 256, 512), latent_channels=16,
    layers_per_block=3, act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4,
    sample_height=480, sample_width=720, scaling_factor=1.15258426, shift_factor=None, latents_mean=None,
    latents_std=None, force_upcast=True, use_quant_conv=False, use_post_quant_conv=False, invert_scale_latents=False,
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
    # diffusers sizes these 1x1 convolutions by out_channels, not latent_channels; no released VAE has them
    use_quant_conv=(False,),
    use_post_quant_conv=(False,),
    invert_scale_latents=(True, False),
)
BLOCK_TYPES = dict(down_block_types="CogVideoXDownBlock3D", up_block_types="CogVideoXUpBlock3D")
PASSED = ("in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_eps", "norm_num_groups",
          "temporal_compression_ratio", "sample_height", "sample_width", "invert_scale_latents")


def cogvideox_vae_config(config):
    """The :class:`CogVideoXVAE` arguments of a diffusers ``config.json`` (checked; raises ``ConversionError``)."""
    merged = merged_vae_config(config, DIFFUSERS_DEFAULTS, SUPPORTED, BLOCK_TYPES, WHERE)
    shift = merged["shift_factor"]
    return dict({k: merged[k] for k in PASSED}, block_out_channels=tuple(merged["block_out_channels"]),
                scaling_factor=float(merged["scaling_factor"]), shift_factor=0.0 if shift is None else float(shift))


def _conv3d(folder, prefix, layer):
    """A diffusers ``CogVideoXCausalConv3d`` / ``Conv3d`` (``prefix.weight``, ``.bias``) into a ``CausalConv3D``."""
    assign(layer.conv.kernel, folder.take(prefix + ".weight").transpose(2, 3, 4, 1, 0), prefix + ".weight")
    assign(layer.conv.bias, folder.take(prefix + ".bias"), prefix + ".bias")


def _conv2d(folder, prefix, layer):
    """A per-frame ``Conv2d`` into a 1 x kh x kw ``CausalConv3D``."""
    assign(layer.conv.kernel, folder.take(prefix + ".weight").transpose(2, 3, 1, 0)[None], prefix + ".weight")
    assign(layer.conv.bias, folder.take(prefix + ".bias"), prefix + ".bias")


def _norm(folder, prefix, layer):
    if hasattr(layer, "conv_y"):  # SpatialNorm3D
        group_norm(folder, prefix + ".norm_layer", layer.norm)
        _conv3d(folder, prefix + ".conv_y.conv", layer.conv_y)
        _conv3d(folder, prefix + ".conv_b.conv", layer.conv_b)
    else:
        group_norm(folder, prefix, layer)


def _resnet(folder, prefix, block):
    _norm(folder, prefix + ".norm1", block.norm_1)
    _conv3d(folder, prefix + ".conv1.conv", block.conv_1)
    _norm(folder, prefix + ".norm2", block.norm_2)
    _conv3d(folder, prefix + ".conv2.conv", block.conv_2)
    if block.skip is not None:
        _conv3d(folder, prefix + ".conv_shortcut", block.skip)


def convert_cogvideox_vae(folder, dtype=None):
    """A built :class:`CogVideoXVAE` with every tensor of a diffusers ``AutoencoderKLCogVideoX`` folder assigned.

    Args:
        folder: a :class:`keras_vdiff.convert.checkpoint.PretrainedFolder`.
        dtype: dtype policy of the model (``"float32"`` default, ``"bfloat16"``,
            ``"mixed_bfloat16"``); the weights are cast as they load (norms stay float32).

    Raises:
        ConversionError: an unsupported config value (naming the field), a
            missing tensor, a tensor of the wrong shape, or a tensor left unused.

    Example:
        >>> vae = kv.convert.from_diffusers("CogVideoX-2b/vae")    # calls this
    """
    vae = build_converted(CogVideoXVAE, cogvideox_vae_config(folder.config), folder, WHERE, dtype)
    levels, blocks = len(vae.block_out_channels), vae.layers_per_block
    layer = vae.get_layer

    _conv3d(folder, "encoder.conv_in.conv", layer("encoder_conv_in"))
    for i in range(levels):
        for j in range(blocks):
            _resnet(folder, f"encoder.down_blocks.{i}.resnets.{j}", layer(f"encoder_down_{i}_resnet_{j}"))
        if i < levels - 1:
            _conv2d(folder, f"encoder.down_blocks.{i}.downsamplers.0.conv", layer(f"encoder_down_{i}_downsample"))
    for j in (0, 1):
        _resnet(folder, f"encoder.mid_block.resnets.{j}", layer(f"encoder_mid_resnet_{j}"))
    group_norm(folder, "encoder.norm_out", layer("encoder_norm_out"))
    _conv3d(folder, "encoder.conv_out.conv", layer("encoder_conv_out"))

    _conv3d(folder, "decoder.conv_in.conv", layer("decoder_conv_in"))
    for j in (0, 1):
        _resnet(folder, f"decoder.mid_block.resnets.{j}", layer(f"decoder_mid_resnet_{j}"))
    for i in range(levels):
        for j in range(blocks + 1):
            _resnet(folder, f"decoder.up_blocks.{i}.resnets.{j}", layer(f"decoder_up_{i}_resnet_{j}"))
        if i < levels - 1:
            _conv2d(folder, f"decoder.up_blocks.{i}.upsamplers.0.conv", layer(f"decoder_up_{i}_upsample"))
    _norm(folder, "decoder.norm_out", layer("decoder_norm_out"))
    _conv3d(folder, "decoder.conv_out.conv", layer("decoder_conv_out"))

    folder.check_all_taken()
    return vae
