"""``AutoencoderKL``: the Stable Diffusion 1/2 VAE (diffusers' ``AutoencoderKL``), channels last, frame by frame.

The KL-f8 autoencoder of Rombach et al. 2022 as diffusers builds it, layer
for layer, so that ``kv.convert.from_diffusers("Latte-1/vae")`` (or the ``vae/``
of ``facebook/DiT-XL-2-256``, ``stabilityai/sd-vae-ft-ema``) reproduces its
numbers::

    encoder: conv_in -> [ResBlock x layers_per_block, pad (0, 1) + stride-2 conv] per level (no down on the last)
             -> mid (ResBlock, GroupNorm self-attention, ResBlock) -> GN -> SiLU -> conv_out (2 * latent)
             -> quant_conv (1x1)
    decoder: post_quant_conv (1x1) -> conv_in -> mid (ResBlock, attention, ResBlock)
             -> [ResBlock x (layers_per_block + 1), nearest x2 + conv] per level, widths reversed (no up on the last)
             -> GN -> SiLU -> conv_out

Images are ``(B, H, W, C)``; the frames of videos ``(B, F, H, W, C)`` are
folded into the batch and coded one by one, so a video latent is the stack of
its frames' image latents (what Latte and the other frame-wise latent video
models use).
"""

import keras
from keras import ops

from keras_vdiff.autoencoders.frame_vae import FrameVAE, check_layout_ints, output_head
from keras_vdiff.autoencoders.kl_autoencoder import KLAutoencoder, check_frames, fold_frames
from keras_vdiff.autoencoders.residual_block import VAEResidualBlock, check_groups
from keras_vdiff.layers.attention import Attention
from keras_vdiff.validation import check_bool, check_divisible, check_int, check_optional_int, check_pair, is_int

__all__ = ["AutoencoderKL", "VAEAttentionBlock"]

SD_BLOCK_OUT_CHANNELS = (128, 256, 512, 512)
SD_SCALING_FACTOR = 0.18215


@keras.saving.register_keras_serializable(package="keras_vdiff")
class VAEAttentionBlock(keras.layers.Layer):
    """Single-head self-attention over the pixels of an image with a GroupNorm in front and a residual.

    ``x + proj(softmax(q k^T / sqrt(C)) v)`` with ``q, k, v`` projections of
    ``GroupNorm(x)`` (eps 1e-6): the mid-block attention of the LDM / SD
    autoencoders (Rombach et al. 2022).

    Args:
        norm_groups: groups of the group normalization (divides the channels).

    Example:
        >>> VAEAttentionBlock(norm_groups=4)(keras.ops.zeros((2, 8, 8, 16))).shape
        (2, 8, 8, 16)
    """

    def __init__(self, norm_groups=32, **kwargs):
        super().__init__(**kwargs)
        self.norm_groups = check_int(norm_groups, "norm_groups")
        self.norm = keras.layers.GroupNormalization(norm_groups, epsilon=1e-6, dtype="float32", name="norm")
        self.attention = None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"VAEAttentionBlock takes images (B, H, W, C), got shape {tuple(input_shape)}.")
        channels = input_shape[-1]
        check_groups(channels, self.norm_groups, "input channels")
        self.norm.build((None, None, None, channels))
        self.attention = Attention(num_heads=1, head_dim=channels, name="attention", dtype=self.dtype_policy)
        self.attention.build((None, None, channels))
        self.built = True

    def call(self, x):
        shape = ops.shape(x)
        h = ops.cast(self.norm(x), self.compute_dtype)
        tokens = ops.reshape(h, (shape[0], shape[1] * shape[2], shape[3]))
        return x + ops.reshape(self.attention(tokens), shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(norm_groups=self.norm_groups)
        return config


def _block_out_channels(value, norm_num_groups):
    widths = tuple(value) if isinstance(value, (list, tuple)) else None
    if not widths or not all(is_int(w) and w > 0 for w in widths):
        raise ValueError(
            f"`block_out_channels` must be a non-empty list of positive ints (one width per resolution level), "
            f"got {value!r}."
        )
    for width in widths:
        check_divisible(width, "block_out_channels", norm_num_groups, "norm_num_groups")
    return tuple(int(w) for w in widths)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class AutoencoderKL(KLAutoencoder):
    """The Stable Diffusion 1/2 VAE, diffusers' ``AutoencoderKL`` (Rombach et al. 2022, "High-Resolution Image
    Synthesis with Latent Diffusion Models", arXiv:2112.10752), coding videos frame by frame.

    The defaults are the SD / KL-f8 layout (RGB, factor 8, 4 latent channels,
    scaling factor 0.18215). Argument names are diffusers' config fields, so a
    diffusers ``config.json`` maps one to one; pretrained weights come with
    ``kv.convert.from_diffusers(folder)``, which builds this class.

    Args:
        in_channels: pixel channels of the input.
        out_channels: pixel channels of the output (``in_channels`` to train with ``fit``).
        block_out_channels: width per resolution level (SD: ``(128, 256, 512,
            512)``); the spatial factor is ``2 ** (len - 1)``.
        layers_per_block: residual blocks per encoder level (the decoder has one more).
        latent_channels: latent channels.
        norm_num_groups: group-normalization groups (divides every width).
        sample_size: the image size the VAE was trained at (int or ``(height,
            width)``, kept as a pair; or None); informational: inputs of any
            size divisible by the factor are accepted.
        scaling_factor: latents are ``(mean - shift_factor) * scaling_factor`` (SD: 0.18215).
        shift_factor: see ``scaling_factor`` (0 for SD 1/2).
        use_quant_conv: a 1x1 convolution on the encoder's moments.
        use_post_quant_conv: a 1x1 convolution on the latents before the decoder.
        mid_block_add_attention: self-attention between the two mid-block residual blocks.
        frame_batch_size: outside training, encode and decode at most this many
            frames (or images) at a time and concatenate, so that long videos
            take bounded memory (the activations of this many frames, plus the
            output); None: all at once. Changes no number; an attribute, so it
            can be set on a loaded model.
        kl_weight, reconstruction_loss: the ``fit`` loss (see ``KLAutoencoder``; SD trained with 1e-6, L1).
        **kwargs: ``seed`` (see ``KLAutoencoder``) and Keras ``name`` / ``dtype`` (policy of the
            convolutions and attention; norms stay float32).

    Input of ``encode``: ``(B, F, H, W, C)`` or ``(B, H, W, C)`` in [-1, 1] (or
    uint8) with ``H`` and ``W`` divisible by ``downsampling_factor``. Layer
    names follow diffusers' modules: ``encoder_down_{i}_resnet_{j}``,
    ``decoder_up_{i}_resnet_{j}`` (``i`` = diffusers' ``up_blocks`` index, the
    lowest resolution first), ``{encoder,decoder}_mid_attention``, ...

    Example:
        >>> vae = kv.convert.from_diffusers("Latte-1/vae")      # a diffusers AutoencoderKL folder
        >>> vae.trainable = False
        >>> latents = vae.encode(videos)                          # (B, F, 256, 256, 3) -> (B, F, 32, 32, 4)
        >>> vae.frame_batch_size = 8                              # decode long videos 8 frames at a time
        >>> videos = vae.decode(latents)                          # in [-1, 1]
        >>> model = kv.VideoDiffusion(backbone, process, autoencoder=vae)
        >>> small = AutoencoderKL(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)  # factor 2
    """

    def __init__(
        self,
        in_channels=3,
        out_channels=3,
        block_out_channels=SD_BLOCK_OUT_CHANNELS,
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=None,
        scaling_factor=SD_SCALING_FACTOR,
        shift_factor=0.0,
        use_quant_conv=True,
        use_post_quant_conv=True,
        mid_block_add_attention=True,
        frame_batch_size=None,
        kl_weight=1e-6,
        reconstruction_loss="l1",
        **kwargs,
    ):
        super().__init__(scaling_factor=scaling_factor, shift_factor=shift_factor, kl_weight=kl_weight,
                         reconstruction_loss=reconstruction_loss, **kwargs)
        check_layout_ints(in_channels=in_channels, out_channels=out_channels, layers_per_block=layers_per_block,
                          latent_channels=latent_channels, norm_num_groups=norm_num_groups)
        widths = _block_out_channels(block_out_channels, norm_num_groups)
        self.sample_size = None if sample_size is None else check_pair(sample_size, "sample_size")
        self.frame_batch_size = check_optional_int(frame_batch_size, "frame_batch_size")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.block_out_channels = widths
        self.layers_per_block = int(layers_per_block)
        self.latent_channels = int(latent_channels)
        self.norm_num_groups = int(norm_num_groups)
        self.use_quant_conv = check_bool(use_quant_conv, "use_quant_conv")
        self.use_post_quant_conv = check_bool(use_post_quant_conv, "use_post_quant_conv")
        self.mid_block_add_attention = check_bool(mid_block_add_attention, "mid_block_add_attention")
        self.downsampling_factor = 2 ** (len(widths) - 1)

        self.encoder = keras.Sequential(self._encoder_layers(), name="encoder")
        self.decoder = keras.Sequential(self._decoder_layers(), name="decoder")
        self.encoder.build((None, None, None, self.in_channels))
        self.decoder.build((None, None, None, self.latent_channels))
        self.built = True

    # --- the two networks --------------------------------------------------------------------------
    def _conv(self, filters, kernel_size, name, **options):
        options.setdefault("padding", "same")
        return keras.layers.Conv2D(filters, kernel_size, dtype=self.dtype_policy, name=name, **options)

    def _mid_block(self, prefix):
        """ResBlock, (attention), ResBlock at the lowest resolution (diffusers' ``UNetMidBlock2D``)."""
        width, groups, dtype = self.block_out_channels[-1], self.norm_num_groups, self.dtype_policy
        layers = [VAEResidualBlock(width, groups, dtype=dtype, name=f"{prefix}_mid_resnet_{j}") for j in (0, 1)]
        if self.mid_block_add_attention:
            layers.insert(1, VAEAttentionBlock(groups, dtype=dtype, name=f"{prefix}_mid_attention"))
        return layers

    def _encoder_layers(self):
        widths, groups, dtype = self.block_out_channels, self.norm_num_groups, self.dtype_policy
        layers = [self._conv(widths[0], 3, "encoder_conv_in")]
        for i, width in enumerate(widths):
            layers += [VAEResidualBlock(width, groups, dtype=dtype, name=f"encoder_down_{i}_resnet_{j}")
                       for j in range(self.layers_per_block)]
            if i < len(widths) - 1:  # diffusers' Downsample2D(padding=0): zeros after, none before
                layers += [keras.layers.ZeroPadding2D(((0, 1), (0, 1)), dtype=dtype, name=f"encoder_down_{i}_pad"),
                           self._conv(width, 3, f"encoder_down_{i}_downsample", strides=2, padding="valid")]
        layers += self._mid_block("encoder")
        layers += output_head(2 * self.latent_channels, groups, dtype, "encoder_out")
        if self.use_quant_conv:
            layers.append(self._conv(2 * self.latent_channels, 1, "quant_conv"))
        return layers

    def _decoder_layers(self):
        widths, groups, dtype = self.block_out_channels[::-1], self.norm_num_groups, self.dtype_policy
        layers = [self._conv(self.latent_channels, 1, "post_quant_conv")] if self.use_post_quant_conv else []
        layers.append(self._conv(widths[0], 3, "decoder_conv_in"))
        layers += self._mid_block("decoder")
        for i, width in enumerate(widths):
            layers += [VAEResidualBlock(width, groups, dtype=dtype, name=f"decoder_up_{i}_resnet_{j}")
                       for j in range(self.layers_per_block + 1)]
            if i < len(widths) - 1:
                layers += [keras.layers.UpSampling2D(2, dtype=dtype, name=f"decoder_up_{i}_upsample"),
                           self._conv(width, 3, f"decoder_up_{i}_upsample_conv")]
        layers += output_head(self.out_channels, groups, dtype, "decoder_out")
        return layers

    def _frame_batches(self, network, x, training):
        """``network`` on the frames of ``x`` (folded into the batch), ``frame_batch_size`` at a time."""
        folded, unfold = fold_frames(x)
        total, size = folded.shape[0], self.frame_batch_size
        if training or size is None or total is None or total <= size:
            return unfold(network(folded, training=training))
        parts = [network(folded[start : start + size], training=False) for start in range(0, total, size)]
        return unfold(ops.concatenate(parts, axis=0))

    # --- the KLAutoencoder interface ----------------------------------------------------------------
    def posterior_moments(self, x, training=False):
        check_frames(x, "videos", self.in_channels, self.downsampling_factor)
        moments = self._frame_batches(self.encoder, x, training)
        return moments[..., : self.latent_channels], moments[..., self.latent_channels :]

    def reconstruct(self, z, training=False):
        check_frames(z, "latents", self.latent_channels, 1)
        return self._frame_batches(self.decoder, z, training)

    # ``(..., H, W, C)`` -> ``(..., H / f, W / f, latent_channels)``, as in FrameVAE (the same attributes).
    compute_latent_shape = FrameVAE.compute_latent_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            block_out_channels=list(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.norm_num_groups,
            sample_size=None if self.sample_size is None else list(self.sample_size),
            use_quant_conv=self.use_quant_conv,
            use_post_quant_conv=self.use_post_quant_conv,
            mid_block_add_attention=self.mid_block_add_attention,
            frame_batch_size=self.frame_batch_size,
        )
        return config
