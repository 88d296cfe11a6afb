"""Building blocks of video diffusion models, one concept per module."""

from keras_vdiff.layers.attention import Attention, JointAttention
from keras_vdiff.layers.embeddings import (
    LabelEmbedding,
    PooledTextEmbedding,
    TimestepEmbedding,
    apply_rope,
    rope_frequencies,
    sincos_embedding_1d,
    sincos_embedding_2d,
    sincos_embedding_3d,
    timestep_sinusoids,
)
from keras_vdiff.layers.modulation import AdaLNModulation, FinalLayer, modulate
from keras_vdiff.layers.patching import PatchEmbedding, Unpatchify, patchify, unpatchify
from keras_vdiff.layers.transformer import (
    MLP,
    DiTBlock,
    fold_spatial,
    fold_temporal,
    unfold_spatial,
    unfold_temporal,
)
from keras_vdiff.layers.video_blocks import (
    ConditionEmbedding,
    FactorizedBlock,
    GenTronBlock,
    MMDiTBlock,
    SpatioTemporalBlock,
    SplitHeadBlock,
    TextCrossAttentionBlock,
)
from keras_vdiff.layers.convolution import CausalConv3D, PseudoConv3D
from keras_vdiff.layers.unet_blocks import (
    Downsample,
    ResBlock,
    SpatialAttention,
    TemporalAttention,
    UNetConditionEmbedding,
    Upsample,
)
from keras_vdiff.layers.latent_tokens import (
    ConditionTokens,
    InterfaceConv,
    LatentLocalityBias,
    LatentReadWriteBlock,
    LatentSelfConditioning,
    LearnedLatents,
    TextRegisterEncoder,
    group_patches,
    ungroup_patches,
)
