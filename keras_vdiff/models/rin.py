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

from keras_vdiff.models.snapvideo import LatentTokenBackbone, build_latent_token_network
from keras_vdiff.presets.registry import register_preset


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
        "patch_size", "tubelet_size", "patch_dim", "latent_dim", "num_latents", "num_blocks", "num_latent_layers",
        "num_heads", "patch_num_heads", "mlp_ratio", "conditioning", "num_classes", "text_dim", "adaln",
        "num_registers", "text_layers", "self_conditioning", "learn_sigma", "class_dropout_prob",
        "interface_conv_kernel", "latent_locality",
    )

    def __init__(
        self,
        input_shape=(16, 32, 32, 4),
        patch_size=2,
        tubelet_size=2,
        patch_dim=512,
        latent_dim=1024,
        num_latents=256,
        num_blocks=6,
        num_latent_layers=4,
        num_heads=16,
        patch_num_heads=8,
        mlp_ratio=4.0,
        conditioning=None,
        num_classes=None,
        text_dim=None,
        adaln=False,
        num_registers=16,
        text_layers=2,
        self_conditioning=True,
        learn_sigma=False,
        class_dropout_prob=0.0,
        interface_conv_kernel=0,
        latent_locality=False,
        dtype=None,
        **kwargs,
    ):
        inputs, outputs, info = build_latent_token_network(
            self, input_shape, patch_size, tubelet_size, patch_dim, latent_dim, num_blocks, num_latent_layers,
            (1, 1), num_latents, num_heads, patch_num_heads, mlp_ratio, conditioning, num_classes, text_dim, adaln,
            num_registers, text_layers, self_conditioning, learn_sigma, class_dropout_prob, dtype,
            interface_conv_kernel=interface_conv_kernel, latent_locality=latent_locality,
        )
        arguments = dict(locals())
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)
        self._store_config(arguments, info)


def _register_presets():
    register_preset(
        "rin_thesis",
        "RIN",
        dict(input_shape=(10, 28, 28, 4), patch_size=2, tubelet_size=2, patch_dim=768, latent_dim=1024,
             num_latents=256, num_blocks=5, num_latent_layers=4, num_heads=16, patch_num_heads=12,
             conditioning="text", text_dim=512, num_registers=16, text_layers=2, self_conditioning=True,
             learn_sigma=True),
        "RIN at the thesis' SnapVideo sizes (10 frames of 28x28x4 latents, 2x2x2 tubelets, patch width 768, "
        "256 latents of width 1024, 5 blocks of 4 latent self-attention layers, CAD-RIN text with 16 registers; "
        "the thesis' Section 3.3.2 RIN comparison); random init.",
        metadata=dict(paper="arXiv:2212.11972; thesis seed 000, Section 3.3.2"),
    )
    register_preset(
        "rin_base",
        "RIN",
        dict(input_shape=(16, 32, 32, 4), patch_size=2, tubelet_size=2, patch_dim=512, latent_dim=1024,
             num_latents=256, num_blocks=6, num_latent_layers=4, num_heads=16, patch_num_heads=8,
             conditioning="class", num_classes=1000, self_conditioning=True, learn_sigma=False),
        "RIN with the paper's latent settings (256 latents of width 1024, K=4 latent self-attention layers per "
        "block, latent self-conditioning) on 16 frames of 32x32x4 latents with 2x2x2 tubelets; class-conditional; "
        "random init.",
        metadata=dict(paper="arXiv:2212.11972"),
    )
    register_preset(
        "rin_tiny",
        "RIN",
        dict(input_shape=(4, 8, 8, 1), patch_size=2, tubelet_size=2, patch_dim=16, latent_dim=32, num_latents=16,
             num_blocks=2, num_latent_layers=1, num_heads=4, patch_num_heads=2, conditioning="class",
             num_classes=4, learn_sigma=False),
        "A tiny RIN for tests and CPU experiments (4 frames of 8x8x1, 2x2x2 tubelets, 16 latents, 4 classes).",
    )


_register_presets()
