"""The condition tokens the latents read in step 1, and the pooled condition (adaLN, final layer).

:class:`ConditionTokens` extends the backbones' :class:`ConditionEmbedding` (same
sub-layers, so the same weights) with the token set; the text tokens go through
:class:`TextRegisterEncoder` (CAD-RIN / SnapVideo v1: text + learned registers).
"""

import keras
from keras import ops

from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.conditioning import ConditionEmbedding
from keras_vdiff.layers.core import Dense
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.layers.transformer import MLP
from keras_vdiff.models.latent_tokens.read_write_block import PreNormResidual
from keras_vdiff.validation import check_divisible, check_int


@keras.saving.register_keras_serializable(package="keras_vdiff")
class TextRegisterEncoder(keras.layers.Layer):
    """Text tokens + learned register tokens through a few self-attention layers (CAD-RIN).

    ``text (B, L, Dt) -> Dense(D)``, concatenated with ``num_registers``
    learned tokens (Darcet et al. 2024, "Vision Transformers Need Registers"),
    then ``num_layers`` pre-norm self-attention + MLP layers in which padded
    text tokens are never attended to. Returns the tokens and their mask
    (registers always valid), so an all-padding (null) prompt still yields the
    learned registers: a trainable unconditional context.

    Args:
        hidden_dim: width of the output tokens.
        num_heads: attention heads.
        num_registers: number of learned register tokens (thesis: 16).
        num_layers: self-attention layers (thesis: 2).
        mlp_ratio: MLP expansion.

    Call:
        ``text_embeddings (B, L, Dt)``, ``text_mask (B, L)`` ->
        ``(tokens (B, L + R, D), mask (B, L + R))``.

    Example:
        >>> enc = TextRegisterEncoder(64, num_heads=4, num_registers=4)
        >>> tokens, mask = enc(keras.ops.ones((2, 7, 32)), keras.ops.ones((2, 7)))
        >>> tokens.shape, mask.shape
        ((2, 11, 64), (2, 11))
    """

    def __init__(self, hidden_dim, num_heads, num_registers=16, num_layers=2, mlp_ratio=4.0, **kwargs):
        super().__init__(**kwargs)
        check_int(hidden_dim, "hidden_dim")
        check_int(num_heads, "num_heads")
        if not isinstance(num_registers, int) or num_registers < 0:
            raise ValueError(f"`num_registers` must be an integer >= 0, got {num_registers!r}.")
        if not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"`num_layers` must be an integer >= 0, got {num_layers!r}.")
        check_divisible(hidden_dim, "hidden_dim", num_heads, "num_heads")
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.num_layers = num_layers
        self.mlp_ratio = mlp_ratio
        policy = self.dtype_policy
        self.input_projection = Dense(hidden_dim, name="input_projection", dtype=policy)
        head_dim = hidden_dim // num_heads
        self.attentions = [
            PreNormResidual(Attention(num_heads, head_dim, name=f"attention_{i}", dtype=policy),
                            name=f"self_attention_{i}", dtype=policy)
            for i in range(num_layers)
        ]
        self.mlps = [
            PreNormResidual(MLP(hidden_dim, mlp_ratio, name=f"mlp_{i}", dtype=policy), name=f"ff_{i}", dtype=policy)
            for i in range(num_layers)
        ]
        self.output_norm = layer_norm("output_norm", affine=True)

    def build(self, text_embeddings_shape, text_mask_shape=None):
        self.input_projection.build(text_embeddings_shape)
        if self.num_registers:
            self.registers = self.add_weight(
                name="registers",
                shape=(self.num_registers, self.hidden_dim),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )
        shape = (None, None, self.hidden_dim)
        for attention, mlp in zip(self.attentions, self.mlps):
            attention.build(shape)
            mlp.build(shape)
        self.output_norm.build(shape)
        self.built = True

    def call(self, text_embeddings, text_mask):
        x = self.input_projection(text_embeddings)
        mask = ops.cast(text_mask, "bool")
        if self.num_registers:
            batch = ops.shape(x)[0]
            registers = ops.broadcast_to(
                ops.cast(self.registers, x.dtype)[None], (batch, self.num_registers, self.hidden_dim)
            )
            x = ops.concatenate([x, registers], axis=1)
            mask = ops.concatenate([mask, ops.ones((batch, self.num_registers), dtype="bool")], axis=1)
        for attention, mlp in zip(self.attentions, self.mlps):
            x = mlp(attention(x, context_mask=mask))
        return normed(self.output_norm, x), mask

    def compute_output_shape(self, text_shape, mask_shape=None):
        length = None if text_shape[1] is None else text_shape[1] + self.num_registers
        return (text_shape[0], length, self.hidden_dim), (text_shape[0], length)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_dim=self.hidden_dim,
            num_heads=self.num_heads,
            num_registers=self.num_registers,
            num_layers=self.num_layers,
            mlp_ratio=self.mlp_ratio,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vdiff")
class ConditionTokens(ConditionEmbedding):
    """Timestep, class or text as the token set read by the latents, plus a pooled vector.

    ::

        t_emb = TimestepEmbedding(t)                                   (B, D)
        None:    tokens = [t_emb]                                      pooled = t_emb
        "class": tokens = [t_emb, LabelEmbedding(y)]                   pooled = t_emb + y_emb
        "text":  tokens = [t_emb, TextRegisterEncoder(text, mask)]     pooled = t_emb + PooledTextEmbedding(pooled_text)

    The mask is 1 for the timestep (and label) token and for the text
    registers, and follows ``text_mask`` on the text tokens (thesis appendix
    7.5: "only mask out empty tokens in text, don't mask timestep"). The
    pooled vector drives SnapVideo v2's adaLN and the final layer; for the
    null prompt (all-zero mask) it uses the learned null text embedding.

    Args:
        hidden_dim: width ``D`` of the tokens (the latent width).
        conditioning: ``None``, ``"class"`` or ``"text"``.
        num_classes: classes of ``"class"`` (label ``num_classes`` is the null class).
        num_heads: heads of the text-register encoder.
        num_registers: learned text register tokens (thesis: 16).
        text_layers: self-attention layers of the text-register encoder (thesis: 2).
        class_dropout_prob: in-model label dropping (keep 0 with ``VideoDiffusion``).

    Call:
        ``timesteps (B,)``, ``class_labels (B,)`` | ``text_embeddings (B, L, Dt)``, ``text_mask (B, L)``,
        ``pooled_text (B, Dt)`` -> ``(tokens (B, M, D), mask (B, M), pooled (B, D))`` with
        ``M = 1``, ``2`` or ``1 + L + num_registers``.

    Example:
        >>> cond = ConditionTokens(64, conditioning="class", num_classes=10)
        >>> tokens, mask, pooled = cond(keras.ops.ones((2,)), class_labels=keras.ops.array([1, 10]))
        >>> tokens.shape, mask.shape, pooled.shape
        ((2, 2, 64), (2, 2), (2, 64))
    """

    def __init__(self, hidden_dim, conditioning=None, num_classes=None, num_heads=1, num_registers=16,
                 text_layers=2, class_dropout_prob=0.0, **kwargs):
        self.num_heads = num_heads
        self.num_registers = num_registers
        self.text_layers = text_layers
        # The timestep / label / pooled-text embeddings are ConditionEmbedding's (same names, same weights).
        super().__init__(hidden_dim, conditioning, num_classes, class_dropout_prob=class_dropout_prob, **kwargs)

    def _create_text_layers(self):
        self.text_encoder = TextRegisterEncoder(
            self.hidden_dim, self.num_heads, num_registers=self.num_registers, num_layers=self.text_layers,
            name="text_encoder", dtype=self.dtype_policy,
        )

    def build(self, timesteps_shape, class_labels_shape=None, text_embeddings_shape=None, text_mask_shape=None,
              pooled_text_shape=None):
        self.timestep_embedding.build(timesteps_shape)
        if self.conditioning == "class":
            self.label_embedding.build(class_labels_shape or (None,))
        elif self.conditioning == "text":
            if text_embeddings_shape is None or pooled_text_shape is None:
                raise ValueError("A text ConditionTokens is built from `text_embeddings` and `pooled_text` shapes.")
            self.text_encoder.build(text_embeddings_shape, text_mask_shape)
            self.pooled_text_embedding.build(pooled_text_shape, text_mask_shape)
        self.built = True

    def call(self, timesteps, class_labels=None, text_embeddings=None, text_mask=None, pooled_text=None,
             training=None):
        t = self.timestep_embedding(timesteps)
        batch = ops.shape(t)[0]
        tokens, pooled = [t[:, None, :]], t
        masks = [ops.ones((batch, 1), dtype=t.dtype)]
        if self.conditioning == "class":
            if class_labels is None:
                raise ValueError("A class-conditional ConditionTokens needs `class_labels`.")
            y = self.label_embedding(class_labels, training=training)
            tokens.append(y[:, None, :])
            masks.append(ops.ones((batch, 1), dtype=t.dtype))
            pooled = pooled + y
        elif self.conditioning == "text":
            if text_embeddings is None or text_mask is None or pooled_text is None:
                raise ValueError(
                    "A text-conditional ConditionTokens needs `text_embeddings`, `text_mask` and `pooled_text`."
                )
            text, mask = self.text_encoder(text_embeddings, text_mask)
            tokens.append(ops.cast(text, t.dtype))
            masks.append(ops.cast(mask, t.dtype))
            pooled = pooled + self.pooled_text_embedding(pooled_text, text_mask)
        tokens = tokens[0] if len(tokens) == 1 else ops.concatenate(tokens, axis=1)
        mask = masks[0] if len(masks) == 1 else ops.concatenate(masks, axis=1)
        return tokens, mask, pooled

    def compute_output_shape(self, timesteps_shape, class_labels_shape=None, text_embeddings_shape=None,
                             *args, **kwargs):
        batch = timesteps_shape[0]
        if self.conditioning == "text":
            length = text_embeddings_shape[1]
            count = None if length is None else 1 + length + self.num_registers
        else:
            count = 2 if self.conditioning == "class" else 1
        return (batch, count, self.hidden_dim), (batch, count), (batch, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, num_registers=self.num_registers, text_layers=self.text_layers)
        return config
