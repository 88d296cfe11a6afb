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
    ExpertAdaLNBlock,
    FactorizedBlock,
    GenTronBlock,
    MMDiTBlock,
    SpatioTemporalBlock,
    SplitHeadBlock,
    TextCrossAttentionBlock,
)
from keras_vdiff.layers.convolution import CausalConv3D, PseudoConv3D
from keras_vdiff.layers.conditioning import (
    CONDITIONINGS,
    TEXT_KEYS,
    ConditionEmbedding,
    backbone_inputs,
    condition_inputs,
)
from keras_vdiff.layers.normalization import layer_norm
from keras_vdiff.layers.packing import block_diagonal_mask, pack_tokens, unpack_tokens


def __getattr__(name):
    # The U-Net and latent-token layers moved to their family's folder under keras_vdiff.models; the old
    # names forward lazily (with a DeprecationWarning), so importing the layers never imports the models.
    from keras_vdiff.layers.moved import forward

    return forward(__name__, name)
