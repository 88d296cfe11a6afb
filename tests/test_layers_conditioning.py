"""The conditioning contract, the validation checks, the LayerNorm factory and the forwarding of moved paths."""

import importlib
import warnings

import keras
import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy
from keras_vdiff.layers.conditioning import (
    CONDITIONINGS,
    TEXT_KEYS,
    ConditionEmbedding,
    backbone_inputs,
    check_conditioning,
)
from keras_vdiff.layers.normalization import layer_norm, normed
from keras_vdiff.models.latent_tokens import ConditionTokens
from keras_vdiff.validation import check_bool, check_divisible, check_int, check_one_of, check_pair


def test_backbone_inputs_follow_the_contract():
    assert CONDITIONINGS == (None, "class", "text") and TEXT_KEYS == ("text_embeddings", "text_mask", "pooled_text")
    assert sorted(backbone_inputs((2, 8, 8, 1))) == ["latents", "timesteps"]
    class_inputs = backbone_inputs((8, 8, 1), "class")
    assert class_inputs["class_labels"].dtype == "int32" and tuple(class_inputs["latents"].shape) == (None, 8, 8, 1)
    text = backbone_inputs((2, 8, 8, 1), "text", text_dim=6)
    assert set(text) == {"latents", "timesteps", *TEXT_KEYS}
    assert tuple(text["text_embeddings"].shape) == (None, None, 6) and tuple(text["pooled_text"].shape) == (None, 6)
    for bad, match in (("audio", "conditioning"), ("class", "num_classes")):
        with pytest.raises(ValueError, match=match):
            check_conditioning(bad, num_classes=0)


@pytest.mark.parametrize("conditioning", ["class", "text"])
def test_condition_tokens_pool_exactly_as_the_condition_embedding_with_the_same_weights(conditioning):
    # ConditionTokens extends ConditionEmbedding: same sub-layers and weight names, so the same pooled vector.
    dim, rng = 16, np.random.default_rng(0)
    extra = dict(num_classes=3) if conditioning == "class" else {}
    tokens_layer = ConditionTokens(dim, conditioning, num_heads=2, num_registers=2, text_layers=1, **extra)
    embedding = ConditionEmbedding(dim, conditioning, **extra)
    t = np.array([3.0, 700.0], "float32")
    if conditioning == "class":
        kwargs = dict(class_labels=np.array([0, 3], "int32"))
        tokens_layer(t, **kwargs), embedding(t, **kwargs)
    else:
        kwargs = dict(pooled_text=rng.standard_normal((2, 6)).astype("float32"),
                      text_mask=np.array([[1, 1, 0], [0, 0, 0]], "float32"))
        text = rng.standard_normal((2, 3, 6)).astype("float32")
        tokens_layer(t, text_embeddings=text, **kwargs), embedding(t, **kwargs)
    by_path = {v.path.split("/", 1)[1]: v for v in tokens_layer.weights}
    for variable in embedding.weights:
        relative = variable.path.split("/", 1)[1]
        variable.assign(0.1 * rng.standard_normal(variable.shape).astype("float32"))
        by_path[relative].assign(variable)
    if conditioning == "class":
        _, _, pooled = tokens_layer(t, **kwargs)
    else:
        _, _, pooled = tokens_layer(t, text_embeddings=text, **kwargs)
    np.testing.assert_allclose(to_numpy(pooled), to_numpy(embedding(t, **kwargs)), atol=1e-6)


def test_checks_name_the_argument_the_value_and_what_is_valid():
    assert check_int(np.int64(3), "dim") == 3 and type(check_int(np.int64(3), "dim")) is int
    assert check_int(0, "layers", minimum=0) == 0
    assert check_pair(8, "image_size") == (8, 8) and check_pair([4, 6], "image_size") == (4, 6)
    assert check_bool(True, "flag") is True and check_one_of("a", "mode", ("a", "b")) == "a"
    for call, message in (
        (lambda: check_int(True, "num_heads"), "`num_heads` must be a positive integer, got True."),
        (lambda: check_int(2.0, "dim"), "`dim` must be a positive integer, got 2.0."),
        (lambda: check_int(-1, "layers", minimum=0), "`layers` must be an integer >= 0, got -1."),
        (lambda: check_pair((4, 0), "image_size"), "`image_size` must be a positive int or a pair of positive"),
        (lambda: check_pair("ab", "image_size"), "`image_size` must be a positive int or a pair"),
        (lambda: check_bool(1, "learn_sigma"), "`learn_sigma` must be True or False, got 1."),
        (lambda: check_one_of("c", "mode", ("a", "b")), "`mode` must be one of ('a', 'b'), got 'c'."),
        (lambda: check_divisible(30, "latent_dim", 4, "num_heads"), "`latent_dim`=30 must be divisible by `num_heads`=4."),
    ):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value).startswith(message), str(error.value)


def test_layer_norm_factory_forms_and_float32_statistics():
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype("float32")
    plain, affine, scale_only = layer_norm("a"), layer_norm("b", affine=True), layer_norm("c", affine=True, center=False)
    for norm, count in ((plain, 0), (affine, 2), (scale_only, 1)):
        norm.build(x.shape)
        assert len(norm.weights) == count and norm.dtype_policy.name == "float32"
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(to_numpy(normed(plain, x)), (x - mean) / np.sqrt(var + 1e-6), atol=1e-5)
    half = keras.ops.cast(x, "float16")
    assert keras.backend.standardize_dtype(normed(plain, half).dtype) == "float16"


def test_moved_paths_forward_with_a_deprecation_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from keras_vdiff.layers.latent_tokens import ConditionTokens as old_tokens
        from keras_vdiff.layers.unet_blocks import ResBlock as old_resblock

        assert old_tokens is ConditionTokens and old_resblock is kv.models.unet.ResBlock
        assert kv.layers.TemporalAttention is kv.models.unet.TemporalAttention
        for module in ("snapvideo", "rin", "vdm_unet", "inflation"):
            importlib.reload(importlib.import_module(f"keras_vdiff.models.{module}"))
        assert importlib.import_module("keras_vdiff.models.rin").RIN is kv.models.RIN
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    for name in ("layers.latent_tokens.ConditionTokens", "layers.unet_blocks.ResBlock", "layers.TemporalAttention",
                 "models.snapvideo", "models.rin", "models.vdm_unet", "models.inflation"):
        assert any(name in message for message in messages), name
    with pytest.raises(AttributeError, match="NoSuchLayer"):
        kv.layers.NoSuchLayer
    # Layers keep their registered names, so saved models find them.
    assert keras.saving.get_registered_name(ConditionTokens) == "keras_vdiff>ConditionTokens"
    assert keras.saving.get_registered_object("keras_vdiff>ResBlock") is kv.models.unet.ResBlock
