"""CogVideoX's text path: T5 called without an attention mask, as ``CogVideoXPipeline._get_t5_prompt_embeds`` calls it.

The prompts are padded to ``max_sequence_length`` and transformers' ``T5EncoderModel``
runs on the ids alone, so every position attends to the padding too
(``T5Encoder(attend_to_padding=True)``).
"""

import numpy as np
import pytest

import keras_vdiff as kv

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers_reference import randomize, relative_error, save, torch  # noqa: E402


def tiny_t5(vocab_size, seed=1):
    return randomize(transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=vocab_size, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0)), seed=seed)


def test_t5_attending_to_padding_matches_transformers_without_a_mask(tmp_path):
    reference = tiny_t5(40)
    encoder = kv.convert.from_diffusers(save(reference, tmp_path / "t5"))
    ids = np.array([[5, 6, 7, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]], "int32")
    inputs = {"token_ids": ids, "padding_mask": (ids > 0).astype("int32")}
    masked = np.asarray(encoder(inputs)[0])
    encoder.attend_to_padding = True
    embeddings, mask, _ = (np.asarray(value) for value in encoder(inputs))
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids.astype("int64")))[0].numpy()
    assert relative_error(embeddings, expected) <= 1e-5 and np.all(mask == 1.0)
    assert relative_error(masked[:, :3], expected[:, :3]) > 1e-3  # the masked encoder differs on the same rows
    assert kv.text.T5Encoder.from_config(encoder.get_config()).attend_to_padding
