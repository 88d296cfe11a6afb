"""``kv.convert.from_diffusers`` on a transformers ``T5EncoderModel`` (T5 v1.1 layout, small random config) and
``kv.convert.t5.tokenizer_from_folder`` on a T5 tokenizer folder (a tiny sentencepiece model trained here).

The encoder matches transformers on the valid positions (and, with ``zero_padding=False``, on the padded ones,
which attend to the valid keys); the contract output has zeros at padded positions. The tokenizer gives
transformers' ids and attention masks (``padding="max_length"``, truncation, ``</s>``) from the Hub layout
(``spiece.model``) and from what transformers 5 re-saves (``tokenizer.json``). Everything runs offline.
"""

import io
import json
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff import convert
from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.convert.t5 import tokenizer_from_folder
from keras_vdiff.tasks import TextToVideoPreprocessor
from keras_vdiff.text import T5Encoder, T5Tokenizer
from keras_vdiff.text.t5_encoder import relative_position_buckets

SMALL = dict(vocab_size=100, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, feed_forward_proj="gated-gelu",
             relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0)
LENGTH = 12  # one sequence length everywhere: JAX compiles eager ops once per shape
EXTRA_IDS = 3
TOLERANCE = 1e-4  # max relative error on the valid positions, float32
CORPUS = [
    "a dog running on the beach", "the digit 7 is moving left and right", "a cat sitting on a red sofa",
    "two people walking in the rain at night", "a car driving fast down a mountain road",
    "fireworks over the city skyline", "the ocean waves crashing on rocks", "a bird flying over a lake",
    "A Man Playing Guitar, Slowly.", "snow falling on a quiet village street",
]
PROMPTS = [
    "a dog running on the beach",
    "",  # the null prompt: </s> alone
    "fireworks over the city skyline and the ocean waves crashing on the rocks at night",  # truncated to LENGTH
    "  a  cat\ton the </s> sofa <extra_id_0>x",  # whitespace runs, special tokens written in the text
    "Ünïcode café ① and 🐶 中文",  # normalisation and unknown characters
    "A Man Playing Guitar",
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomized transformers T5EncoderModel saved with save_pretrained: (torch model, folder)."""
    import diffusers_reference as ref
    import transformers

    model = ref.randomize(transformers.T5EncoderModel(transformers.T5Config(**SMALL)), seed=0)
    return model, ref.save(model, tmp_path_factory.mktemp("t5_encoder"))


@pytest.fixture(scope="module")
def encoder(reference):
    return convert.from_diffusers(reference[1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Tokenizer folders of one tiny sentencepiece model: the Hub layout, the transformers 5 re-save, the old one."""
    import sentencepiece
    import transformers

    root = tmp_path_factory.mktemp("t5_tokenizer")
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 3), model_writer=proto, vocab_size=72, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        hard_vocab_limit=False, minloglevel=2,
    )
    hub = root / "hub"  # what maxin-cn/Latte-1's tokenizer/ holds
    hub.mkdir()
    (hub / "spiece.model").write_bytes(proto.getvalue())
    extras = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    (hub / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
        "extra_ids": EXTRA_IDS, "additional_special_tokens": extras, "model_max_length": 512,
    }))
    hf = transformers.AutoTokenizer.from_pretrained(str(hub))
    resaved = root / "resaved"  # transformers 5 writes tokenizer.json and tokenizer_config.json only
    hf.save_pretrained(str(resaved))
    assert not (resaved / "spiece.model").exists() and (resaved / "tokenizer.json").exists()
    old = root / "old"  # transformers 4's slow layout: the sentinels' ids in added_tokens.json
    shutil.copytree(hub, old)
    (old / "added_tokens.json").write_text(json.dumps({t: hf.convert_tokens_to_ids(t) for t in extras}))
    return hf, {"hub": hub, "resaved": resaved, "old": old}


def transformers_tokens(hf):
    batch = hf(PROMPTS, padding="max_length", max_length=LENGTH, truncation=True, add_special_tokens=True)
    return np.array(batch["input_ids"]), np.array(batch["attention_mask"])


def relative_error(actual, expected):
    import diffusers_reference as ref

    return ref.relative_error(actual, expected)


def test_relative_position_buckets_match_transformers():
    import diffusers_reference as ref
    from transformers.models.t5.modeling_t5 import T5Attention as Reference

    for buckets, distance in ((32, 128), (8, 16), (32, 256)):
        relative = np.arange(-3 * distance, 3 * distance + 1)
        expected = Reference._relative_position_bucket(ref.torch.tensor(relative), True, buckets, distance).numpy()
        table = relative_position_buckets(buckets, distance)
        np.testing.assert_array_equal(table[np.clip(relative, -distance, distance) + distance], expected)


def test_tokenizer_matches_transformers_and_round_trips_in_a_preset(folders, tmp_path):
    hf, paths = folders
    expected_ids, expected_mask = transformers_tokens(hf)
    assert expected_mask[2].all() and expected_mask[1].sum() == 1  # one prompt truncated, one empty
    for name, path in paths.items():
        tokenizer = tokenizer_from_folder(path, sequence_length=LENGTH)
        assert tokenizer.backend == ("tokenizers" if name == "resaved" else "sentencepiece"), name
        batch = tokenizer(PROMPTS)
        np.testing.assert_array_equal(batch["token_ids"], expected_ids, err_msg=name)
        np.testing.assert_array_equal(batch["padding_mask"], expected_mask, err_msg=name)
    # The preprocessor saves the sentencepiece model as the tokenizer's asset and reloads it.
    tokenizer = tokenizer_from_folder(paths["hub"], sequence_length=LENGTH)
    preprocessor = TextToVideoPreprocessor(tokenizer)
    preprocessor.save_to_preset(str(tmp_path))
    assert os.path.isfile(tmp_path / "assets" / "tokenizer" / "spiece.model")
    restored = TextToVideoPreprocessor.from_preset(str(tmp_path))
    assert isinstance(restored.tokenizer, T5Tokenizer)
    for key, value in restored(PROMPTS).items():
        np.testing.assert_array_equal(value, preprocessor(PROMPTS)[key])
    with pytest.raises(ValueError, match="no vocabulary"):
        T5Tokenizer.from_config(tokenizer.get_config())(PROMPTS)
    config = json.loads((paths["hub"] / "tokenizer_config.json").read_text())
    bad = tmp_path / "bad"
    shutil.copytree(paths["hub"], bad)
    (bad / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "LlamaTokenizer"}))
    with pytest.raises(ConversionError, match="tokenizer_class.*LlamaTokenizer"):
        tokenizer_from_folder(bad)
    with pytest.raises(FileNotFoundError, match="neither spiece.model nor tokenizer.json"):
        tokenizer_from_folder(tmp_path / "assets")


def test_encoder_matches_transformers_on_tokenized_prompts(reference, encoder, folders):
    import diffusers_reference as ref

    model, _ = reference
    ids, mask = transformers_tokens(folders[0])
    with ref.torch.no_grad():
        expected = model(input_ids=ref.torch.tensor(ids), attention_mask=ref.torch.tensor(mask))
    expected = expected.last_hidden_state.numpy()
    assert isinstance(encoder, T5Encoder) and not encoder.trainable
    batch = tokenizer_from_folder(folders[1]["hub"], sequence_length=LENGTH)(PROMPTS)  # what the task feeds
    embeddings, text_mask, pooled = (to_numpy(x) for x in encoder(batch))
    valid = mask.astype(bool)
    assert relative_error(embeddings[valid], expected[valid]) <= TOLERANCE
    np.testing.assert_array_equal(embeddings[~valid], 0.0)  # the contract: padded positions are zero
    np.testing.assert_array_equal(text_mask, mask)
    mean = (embeddings * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, mean, rtol=1e-5, atol=1e-6)
    # Token ids alone: the mask is where the ids are not <pad>, the same here.
    np.testing.assert_allclose(to_numpy(encoder(batch["token_ids"])[0]), embeddings, rtol=1e-6, atol=1e-6)
    # zero_padding=False is transformers' last_hidden_state everywhere (padded queries see the valid keys).
    raw = T5Encoder.from_config({**encoder.get_config(), "zero_padding": False, "initializer": "zeros"})
    raw.set_weights(encoder.get_weights())
    assert relative_error(to_numpy(raw(batch)[0]), expected) <= TOLERANCE


def test_original_t5_relu_feed_forward_matches_transformers(folders, tmp_path):
    import diffusers_reference as ref
    import transformers

    model = transformers.T5EncoderModel(transformers.T5Config(**{**SMALL, "feed_forward_proj": "relu"}))
    model = ref.randomize(model, seed=1)
    encoder = convert.from_diffusers(ref.save(model, tmp_path))
    assert not encoder.gated and encoder.activation == "relu"
    ids, mask = transformers_tokens(folders[0])
    with ref.torch.no_grad():
        expected = model(input_ids=ref.torch.tensor(ids), attention_mask=ref.torch.tensor(mask)).last_hidden_state
    valid = mask.astype(bool)
    embeddings = to_numpy(encoder({"token_ids": ids, "padding_mask": mask})[0])
    assert relative_error(embeddings[valid], expected.numpy()[valid]) <= TOLERANCE


def test_stored_embed_tokens_unsupported_config_and_unused_or_missing_tensors(reference, encoder, tmp_path):
    from safetensors.numpy import load_file, save_file

    source = reference[1]
    tensors = load_file(os.path.join(source, "model.safetensors"))
    config = json.loads(open(os.path.join(source, "config.json")).read())

    def folder(name, tensors=tensors, **changes):
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(json.dumps({**config, **changes}))
        save_file(tensors, str(path / "model.safetensors"))
        return str(path)

    # Older files store the tied encoder.embed_tokens.weight next to shared.weight.
    both = convert.from_diffusers(folder("both", {**tensors, "encoder.embed_tokens.weight": tensors["shared.weight"]}))
    for a, b in zip(both.weights, encoder.weights):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    only = {("encoder.embed_tokens.weight" if k == "shared.weight" else k): v for k, v in tensors.items()}
    convert.from_diffusers(folder("only_embed_tokens", only))
    with pytest.raises(ConversionError, match="feed_forward_proj.*gated-swiglu"):
        convert.from_diffusers(folder("swiglu", feed_forward_proj="gated-swiglu"))
    with pytest.raises(ConversionError, match="dense_act_fn.*relu"):
        convert.from_diffusers(folder("mismatch", dense_act_fn="relu"))
    with pytest.raises(ConversionError, match="model_type.*umt5"):
        convert.from_diffusers(folder("umt5", model_type="umt5"))
    extra = {**tensors, "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": np.ones((8, 4), "f")}
    with pytest.raises(ConversionError, match="block 1"):
        convert.from_diffusers(folder("per_layer_bias", extra))
    with pytest.raises(ConversionError, match="encoder.unexpected.weight"):
        convert.from_diffusers(folder("unused", {**tensors, "encoder.unexpected.weight": np.ones((3,), "f")}))
    missing = {k: v for k, v in tensors.items() if k != "encoder.final_layer_norm.weight"}
    with pytest.raises(ConversionError, match="encoder.final_layer_norm.weight"):
        convert.from_diffusers(folder("missing", missing))


def test_encoder_arguments_are_checked():
    sizes = dict(vocabulary_size=10, hidden_dim=8, num_layers=1, num_heads=2, head_dim=4, intermediate_dim=8)
    with pytest.raises(ValueError, match="float16"):
        T5Encoder(**sizes, dtype="mixed_float16")
    with pytest.raises(ValueError, match="activation.*swiglu"):
        T5Encoder(**sizes, activation="swiglu")
    with pytest.raises(ValueError, match="num_heads"):
        T5Encoder(**{**sizes, "num_heads": 0})


@pytest.mark.slow
def test_bfloat16_encoder_is_close_to_transformers(reference, folders):
    import diffusers_reference as ref

    model, path = reference
    ids, mask = transformers_tokens(folders[0])
    with ref.torch.no_grad():
        expected = model(input_ids=ref.torch.tensor(ids), attention_mask=ref.torch.tensor(mask)).last_hidden_state
    expected = expected.numpy()[mask.astype(bool)]
    for dtype in ("bfloat16", "mixed_bfloat16"):
        encoder = convert.from_diffusers(path, dtype=dtype)
        assert encoder.compute_dtype == "bfloat16"
        embeddings = to_numpy(encoder({"token_ids": ids, "padding_mask": mask})[0])[mask.astype(bool)]
        # bfloat16 keeps ~3 significant digits: transformers' own bfloat16 model is 0.02 from its float32 one
        # (norm ratio), this encoder 0.02-0.03 depending on the backend.
        assert np.linalg.norm(embeddings - expected) / np.linalg.norm(expected) <= 0.05, dtype


@pytest.mark.slow
def test_encoder_serves_a_video_diffusion_task_and_its_preset(encoder, folders, tmp_path):
    from keras_vdiff.diffusion.gaussian import GaussianDiffusion
    from keras_vdiff.tasks import VideoDiffusion
    from test_text_conditioning import TinyTextBackbone

    tokenizer = tokenizer_from_folder(folders[1]["hub"], sequence_length=LENGTH)
    with pytest.raises(ValueError, match="no `tokenizer`"):
        encoder(PROMPTS)
    backbone = TinyTextBackbone(text_dim=SMALL["d_model"], sequence_length=LENGTH)
    model = VideoDiffusion(backbone, GaussianDiffusion("cosine", prediction="epsilon"), text_encoder=encoder,
                           preprocessor=TextToVideoPreprocessor(tokenizer), seed=0)
    options = dict(prompts=PROMPTS, steps=1, guidance_scale=2.0, seed=0, compile=False)
    videos = model.generate(**options)
    assert videos.shape[0] == len(PROMPTS) and videos.dtype == np.uint8
    model.save_to_preset(str(tmp_path / "pipeline"))
    restored = VideoDiffusion.from_preset(str(tmp_path / "pipeline"))
    assert isinstance(restored.text_encoder, T5Encoder) and isinstance(restored.tokenizer, T5Tokenizer)
    np.testing.assert_array_equal(restored.generate(**options), videos)
