"""RIN: Recurrent Interface Networks for video (Jabri, Fleet & Chen 2023, arXiv:2212.11972).

The read / process / write block of SnapVideo-FiT without grouping: the
interface is every tubelet token of the video (3D patches spanning
``tubelet_size`` frames), all latents read all of it, process it with ``k``
latent self-attention layers, and write back::

    latents (B, F, H, W, C) -> tubelet PatchEmbedding (pt x p x p) -> (B, F/pt, N, Dx) + space-time sin-cos
                            -> one group (B, 1, F/pt * N, Dx)
    z = LearnedLatents (B, num_latents, Dl) + LayerNorm(Dense(previous_latents))   (latent self-conditioning)
    num_blocks x [z reads cond tokens; z reads all patches; k x latent self-attention; patches read z;
                  optional: depthwise 3D conv over the token grid (InterfaceConv), and a soft locality
                  prior on the read / write logits (LatentLocalityBias)]
    FinalLayer(x, c) -> Unpatchify -> (B, F, H, W, C_out)

Conditioning is read by cross-attention from the timestep / label / text
tokens (text with learned registers, CAD-RIN, Dufour et al. 2024); the RIN
paper instead appends the timestep and class tokens to the latents. Latent
self-conditioning (the previous step's output latents, stop-gradient in
training) is on by default, as in RIN.
"""

import keras

from keras_vdiff.models.latent_tokens.backbone import LatentTokenBackbone


@keras.saving.register_keras_serializable(package="keras_vdiff")
class RIN(LatentTokenBackbone):
    """RIN video diffusion backbone: tubelet interface tokens and one set of global latents.

    Reference: Jabri, Fleet & Chen, "Scalable Adaptive Computation for Iterative
    Generation" (ICML 2023); the thesis (seed 000), Section 3.3.2, on its
    relation to SnapVideo (no grouping, 3D patches).

    Args:
        input_shape: latent video shape ``(frames, height, width, channels)``.
        patch_size: spatial patch size.
        tubelet_size: frames per patch (RIN's 3D patches); must divide the frames.
        patch_dim: width of the interface (patch) tokens.
        latent_dim: width of the latents.
        num_latents: number of latent tokens (RIN: 256).
        num_blocks: read / process / write blocks.
        num_latent_layers: latent self-attention layers per block (RIN's ``K``: 4).
        num_heads, patch_num_heads, mlp_ratio: attention heads of the latents and
            of the write step, MLP expansion.
        conditioning, num_classes, text_dim, adaln, num_registers, text_layers,
        self_conditioning, learn_sigma, class_dropout_prob, dtype: as in ``SnapVideo``.
        interface_conv_kernel: odd kernel side of a depthwise 3D convolution over the tubelet grid
            after every write step (:class:`InterfaceConv`, the ``conv_kernel_size`` option of the
            authors' implementation); 0 (default) leaves the interface a pure set, as in the paper.
        latent_locality: bias every block's read and write attention towards each latent's spatial
            anchor (:class:`LatentLocalityBias`, learned strength; keras_vdiff's addition, a soft form
            of FiT's groups). Off by default: RIN as published. On the MovingMNIST comparison of
            ``benchmarks/RESULTS.md`` it reached 30% conditional accuracy at 6,000 steps, where RIN as
            published needed 12,000 steps for 35%.

    Inputs and outputs: as ``SnapVideo`` (``previous_latents (B, num_latents,
    latent_dim)`` in, ``{"output", "latents"}`` out with self-conditioning).

    Example:
        >>> model = RIN.from_preset("rin_tiny")
        >>> out = model({"latents": keras.ops.zeros((2, 4, 8, 8, 1)), "timesteps": keras.ops.ones((2,)),
        ...              "class_labels": keras.ops.array([1, 4]),
        ...              "previous_latents": keras.ops.zeros((2,) + model.previous_latents_shape)})
        >>> out["output"].shape
        (2, 4, 8, 8, 1)
    """

    CONFIG_KEYS = (
        "input_shape", "patch_size", "tubelet_size", "patch_dim", "latent_dim", "num_latents", "num_blocks", "num_latent_layers",
        "num_heads", "patch_num_heads", "mlp_ratio", "conditioning", "num_classes", "text_dim", "adaln",
        "num_registers", "text_layers", "self_conditioning", "learn_sigma", "class_dropout_prob",
        "interface_conv_kernel", "latent_locality",
    )

    def __init__(
        self,
        input_shape=(16, 32, 32, 4),
        *,
        tubelet_size=2,
        patch_dim=512,
        num_latents=256,
        num_blocks=6,
        patch_num_heads=8,
        learn_sigma=False,
        interface_conv_kernel=0,
        latent_locality=False,
        **kwargs,
    ):
        super().__init__(
            input_shape=input_shape, patch_dim=patch_dim, num_blocks=num_blocks, patch_num_heads=patch_num_heads,
            learn_sigma=learn_sigma, groups=(1, 1), tubelet_size=tubelet_size, latents_per_group=num_latents,
            interface_conv_kernel=interface_conv_kernel, latent_locality=latent_locality, **kwargs,
        )
