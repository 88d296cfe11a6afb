"""``kv.convert.from_diffusers`` on a transformers ``UMT5EncoderModel`` (Wan's text encoder; small random config)
and ``kv.convert.t5.tokenizer_from_folder`` on a T5 tokenizer folder (UMT5's tokenizer is T5's).

UMT5 is T5 with one relative-position table per block. The encoder matches transformers' ``last_hidden_state``
with a padding mask, and its zero-padded output is exactly what ``WanPipeline._get_t5_prompt_embeds`` builds
(each prompt's rows cut to its length, zeros after). Everything runs offline.
"""

import os

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff import convert
from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.convert.t5 import tokenizer_from_folder
from keras_vdiff.text import T5Encoder, T5Tokenizer, UMT5Encoder

SMALL = dict(vocab_size=100, d_model=16, d_kv=4, num_heads=4, num_layers=2, d_ff=32, relative_attention_num_buckets=8,
             relative_attention_max_distance=16, feed_forward_proj="gated-gelu", dropout_rate=0.0)
LENGTH = 12
TOLERANCE = 1e-4  # max relative error, float32 (the bound)
CORPUS = [
    "a cat walking on the grass", "a dog running on the beach at sunset", "two boats on a calm lake",
    "une voiture rouge dans la rue", "ein Hund spielt im Schnee", "fireworks over the city skyline",
    "A Man Playing Guitar, Slowly.", "snow falling on a quiet village street",
]
PROMPTS = [
    "a cat walking on the grass",
    "",  # the empty negative prompt: </s> alone
    "fireworks over the city skyline and a dog running on the beach at sunset, slowly",  # truncated
    "ein Hund <extra_id_0> im  Schnee",
    "Ünïcode café 🐶 中文",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomized transformers UMT5EncoderModel saved with save_pretrained: (torch model, folder)."""
    import diffusers_reference as ref
    import transformers

    model = ref.randomize(transformers.UMT5EncoderModel(transformers.UMT5Config(**SMALL)), seed=0)
    return model, ref.save(model, tmp_path_factory.mktemp("umt5_encoder"))


@pytest.fixture(scope="module")
def encoder(reference):
    return convert.from_diffusers(reference[1])


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(transformers' tokenizer, ours, the folder) of one tiny sentencepiece T5 tokenizer folder (the Hub layout)."""
    import diffusers_reference as ref

    path = tmp_path_factory.mktemp("umt5_tokenizer") / "tokenizer"
    hf = ref.tiny_t5_tokenizer_folder(path, CORPUS)
    return hf, tokenizer_from_folder(path, sequence_length=LENGTH), path


def transformers_tokens(hf):
    batch = hf(PROMPTS, padding="max_length", max_length=LENGTH, truncation=True, add_special_tokens=True,
               return_attention_mask=True)
    return np.array(batch["input_ids"]), np.array(batch["attention_mask"])


def transformers_states(model, ids, mask):
    import diffusers_reference as ref

    with ref.torch.no_grad():
        return model(input_ids=ref.torch.tensor(ids), attention_mask=ref.torch.tensor(mask)).last_hidden_state.numpy()


def wan_prompt_embeds(states, mask):
    """``WanPipeline._get_t5_prompt_embeds``: each prompt's rows up to its length, then zeros."""
    lengths = mask.sum(1)
    return np.stack([np.concatenate([s[:n], np.zeros_like(s[n:])]) for s, n in zip(states, lengths)])


def test_tokenizer_ids_match_transformers(tokenizers):
    hf, tokenizer, tokenizer_folder = tokenizers
    expected_ids, expected_mask = transformers_tokens(hf)
    assert expected_mask[2].all() and expected_mask[1].sum() == 1  # one prompt truncated, one empty
    assert isinstance(tokenizer, T5Tokenizer)
    batch = tokenizer(PROMPTS)
    np.testing.assert_array_equal(batch["token_ids"], expected_ids)
    np.testing.assert_array_equal(batch["padding_mask"], expected_mask)
    # WanPipeline's max_sequence_length=512
    wan = hf(PROMPTS, padding="max_length", max_length=512, truncation=True, add_special_tokens=True,
             return_attention_mask=True)
    batch = tokenizer_from_folder(tokenizer_folder, sequence_length=512)(PROMPTS)
    np.testing.assert_array_equal(batch["token_ids"], np.array(wan["input_ids"]))
    np.testing.assert_array_equal(batch["padding_mask"], np.array(wan["attention_mask"]))


def test_encoder_matches_transformers_with_a_padding_mask(reference, encoder, tokenizers):
    import diffusers_reference as ref

    hf, tokenizer, _ = tokenizers
    ids, mask = transformers_tokens(hf)
    expected = transformers_states(reference[0], ids, mask)
    assert isinstance(encoder, UMT5Encoder) and not encoder.trainable
    assert all(block.attention.has_relative_attention_bias for block in encoder.blocks)  # one table per block
    tables = [to_numpy(block.attention.relative_attention_bias) for block in encoder.blocks]
    assert not np.allclose(tables[0], tables[1])
    embeddings, text_mask, _ = (to_numpy(x) for x in encoder(tokenizer(PROMPTS)))
    np.testing.assert_array_equal(text_mask, mask)
    valid = mask.astype(bool)
    assert ref.relative_error(embeddings[valid], expected[valid]) <= TOLERANCE
    # What Wan's pipeline feeds the transformer: exact zeros after each prompt.
    assert ref.relative_error(embeddings, wan_prompt_embeds(expected, mask)) <= TOLERANCE
    np.testing.assert_array_equal(embeddings[~valid], 0.0)


def test_config_round_trip_and_unpadded_rows(reference, encoder, tokenizers):
    import diffusers_reference as ref

    ids, mask = transformers_tokens(tokenizers[0])
    config = encoder.get_config()
    assert keras.saving.get_registered_object("keras_vdiff>UMT5Encoder") is UMT5Encoder
    # zero_padding=False: transformers' last_hidden_state on the padded rows too.
    raw = UMT5Encoder.from_config({**config, "zero_padding": False, "initializer": "zeros"})
    assert {k: v for k, v in raw.get_config().items() if k != "zero_padding"} == \
        {k: v for k, v in config.items() if k != "zero_padding"}
    raw.set_weights(encoder.get_weights())
    expected = transformers_states(reference[0], ids, mask)
    assert ref.relative_error(to_numpy(raw({"token_ids": ids, "padding_mask": mask})[0]), expected) <= TOLERANCE


def test_bfloat16_loading(reference, tokenizers):
    model, path = reference
    hf, tokenizer, _ = tokenizers
    ids, mask = transformers_tokens(hf)
    valid = mask.astype(bool)
    expected = transformers_states(model, ids, mask)[valid]
    encoder = convert.from_diffusers(path, dtype="bfloat16")
    assert isinstance(encoder, UMT5Encoder) and encoder.compute_dtype == "bfloat16"
    assert all(w.dtype == "bfloat16" for w in encoder.blocks[1].attention.weights)
    embeddings = to_numpy(encoder(tokenizer(PROMPTS))[0])
    assert embeddings.dtype == np.float32
    # bfloat16 keeps ~3 significant digits (T5's bfloat16 encoder is 0.02-0.03 from float32 by norm ratio).
    error = np.linalg.norm(embeddings[valid] - expected) / np.linalg.norm(expected)
    assert error <= 0.05, error


def test_t5_and_umt5_folders_are_not_mixed_up(reference, tmp_path):
    import diffusers_reference as ref
    from safetensors.numpy import load_file

    source = reference[1]
    tensors = load_file(os.path.join(source, "model.safetensors"))

    def folder(name, tensors=None, **changes):
        return ref.edited_folder(source, tmp_path / name, tensors, **changes)

    # A T5EncoderModel with per-block tables is a UMT5 checkpoint: T5Encoder refuses it, naming the block.
    with pytest.raises(ConversionError, match="block 1.*UMT5EncoderModel"):
        convert.from_diffusers(folder("as_t5", architectures=["T5EncoderModel"], model_type="t5"))
    with pytest.raises(ConversionError, match="UMT5EncoderModel config field `model_type`='t5'"):
        convert.from_diffusers(folder("wrong_type", model_type="t5"))
    with pytest.raises(ConversionError, match="feed_forward_proj.*gated-swiglu"):
        convert.from_diffusers(folder("swiglu", feed_forward_proj="gated-swiglu"))
    missing = {k: v for k, v in tensors.items() if "block.1.layer.0.SelfAttention.relative_attention_bias" not in k}
    with pytest.raises(ConversionError, match="block.1.layer.0.SelfAttention.relative_attention_bias"):
        convert.from_diffusers(folder("missing_table", missing))
    sizes = dict(vocabulary_size=10, hidden_dim=8, num_layers=2, num_heads=2, head_dim=4, intermediate_dim=8)
    assert [b.attention.has_relative_attention_bias for b in T5Encoder(**sizes).blocks] == [True, False]
    assert [b.attention.has_relative_attention_bias for b in UMT5Encoder(**sizes).blocks] == [True, True]
