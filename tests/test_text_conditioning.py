"""Text encoders inside VideoDiffusion: captions as token ids in fit, prompts as strings in generate.

The backbone here is a deliberately tiny text-conditional VideoBackbone written for this test
(tokens cross-attend to the text with ``kv.layers.Attention`` and its key padding mask; adaLN-free
shift by timestep + pooled text), so the text encoders are checked against the backbone contract
independently of the model zoo's text backbones.
"""

import keras
import numpy as np
import pytest

from conftest import to_numpy
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.layers.attention import Attention
from keras_vdiff.layers.embeddings import TimestepEmbedding
from keras_vdiff.models.backbone import VideoBackbone
from keras_vdiff.text.keras_hub_adapters import CLIPTextAdapter
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.video_diffusion import VideoDiffusion
from test_text_keras_hub_adapters import clip_tokenizer, small_clip

FRAMES, SIZE = 2, 4
# The compiled sampling loop is tested with the task model; torch.compile costs a minute here, the others seconds.
COMPILE = keras.backend.backend() != "torch"
CAPTIONS = ["The digit 1 is moving up and down", "The digit 2 is moving left and right"]


@keras.saving.register_keras_serializable(package="keras_vdiff_tests")
class TinyTextBackbone(VideoBackbone):
    conditioning = "text"

    def __init__(self, text_dim, sequence_length, hidden_dim=16, **kwargs):
        latents = keras.Input((FRAMES, SIZE, SIZE, 1), name="latents")
        timesteps = keras.Input((), name="timesteps")
        text = keras.Input((sequence_length, text_dim), name="text_embeddings")
        text_mask = keras.Input((sequence_length,), name="text_mask")
        pooled = keras.Input((text_dim,), name="pooled_text")
        x = keras.layers.Reshape((FRAMES * SIZE * SIZE, 1))(latents)
        x = keras.layers.Dense(hidden_dim)(x)
        condition = TimestepEmbedding(hidden_dim)(timesteps) + keras.layers.Dense(hidden_dim)(pooled)
        x = x + condition[:, None, :]
        x = x + Attention(num_heads=2, head_dim=8)(x, context=text, mask=text_mask)
        x = keras.layers.Dense(1)(keras.layers.Activation("silu")(x))
        outputs = keras.layers.Reshape((FRAMES, SIZE, SIZE, 1))(x)
        super().__init__(
            inputs={"latents": latents, "timesteps": timesteps, "text_embeddings": text, "text_mask": text_mask,
                    "pooled_text": pooled},
            outputs=outputs,
            **kwargs,
        )
        self.text_dim, self.sequence_length, self.hidden_dim = text_dim, sequence_length, hidden_dim
        self.learn_sigma, self.in_channels, self.out_channels = False, 1, 1
        self.latent_shape = (FRAMES, SIZE, SIZE, 1)

    def get_config(self):
        config = super().get_config()
        config.update(text_dim=self.text_dim, sequence_length=self.sequence_length, hidden_dim=self.hidden_dim)
        return config


def videos_for(captions):
    """Caption 0: bright top half; caption 1: bright left half (uint8)."""
    videos = np.zeros((len(captions), FRAMES, SIZE, SIZE, 1), np.uint8)
    for n, text in enumerate(captions):
        if text == CAPTIONS[0]:
            videos[n, :, : SIZE // 2] = 255
        else:
            videos[n, :, :, : SIZE // 2] = 255
    return videos


def make_model(encoder, sequence_length, text_dim):
    backbone = TinyTextBackbone(text_dim=text_dim, sequence_length=sequence_length)
    model = VideoDiffusion(backbone, GaussianDiffusion("cosine", prediction="epsilon"), text_encoder=encoder,
                           condition_dropout=0.1, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3))
    return model


def test_small_text_encoder_trains_with_fit_and_conditions_generate(tmp_path):
    encoder = SmallTextEncoder.from_texts(CAPTIONS, hidden_dim=16, num_layers=1, num_heads=2)
    model = make_model(encoder, encoder.sequence_length, 16)
    captions = [CAPTIONS[i % 2] for i in range(16)]
    batch = {"videos": videos_for(captions), "captions": encoder.tokenizer(captions)}  # ids: portable in fit
    before = [to_numpy(w).copy() for w in encoder.trainable_weights]
    history = model.fit(batch, batch_size=8, epochs=1, verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    changed = [not np.allclose(b, to_numpy(w)) for b, w in zip(before, encoder.trainable_weights)]
    assert any(changed), "the text encoder must be trained jointly by fit"
    videos = model.generate(prompts=CAPTIONS, steps=3, sampler="ddim", guidance_scale=2.0, seed=0, compile=COMPILE)
    assert videos.shape == (2, FRAMES, SIZE, SIZE, 1) and videos.dtype == np.uint8
    # Same noise, different prompt -> different video: the prompt reaches the backbone.
    assert np.abs(videos[0].astype(int) - videos[1].astype(int)).sum() > 0
    # The whole pipeline, text encoder (vocabulary + trained weights) included, survives a preset round trip.
    model.save_to_preset(str(tmp_path / "pipeline"))
    restored = VideoDiffusion.from_preset(str(tmp_path / "pipeline"))
    assert isinstance(restored.text_encoder, SmallTextEncoder)
    assert restored.text_encoder.vocabulary == encoder.vocabulary
    again = restored.generate(prompts=CAPTIONS, steps=3, sampler="ddim", guidance_scale=2.0, seed=0, compile=COMPILE)
    np.testing.assert_array_equal(videos, again)


def test_clip_adapter_plugs_into_a_text_backbone():
    tokenizer = clip_tokenizer()
    adapter = CLIPTextAdapter(small_clip(tokenizer), tokenizer, projection=keras.layers.Dense(16))
    adapter.trainable = False  # a pretrained encoder is usually frozen
    model = make_model(adapter, adapter.sequence_length, 16)
    frozen = [to_numpy(w).copy() for w in adapter.weights]
    captions = [CAPTIONS[i % 2] for i in range(16)]
    ids = adapter.tokenize(captions)["token_ids"]  # the mask is recovered from end-of-text inside fit
    history = model.fit({"videos": videos_for(captions), "captions": ids}, batch_size=8, epochs=1,
                        verbose=0).history["loss"]
    assert np.all(np.isfinite(history))
    for before, after in zip(frozen, adapter.weights):
        np.testing.assert_array_equal(before, to_numpy(after))  # frozen stays frozen
    videos = model.generate(prompts=CAPTIONS, steps=2, sampler="ddim", guidance_scale=2.0, seed=1, compile=COMPILE)
    assert videos.shape == (2, FRAMES, SIZE, SIZE, 1) and videos.dtype == np.uint8
    assert np.abs(videos[0].astype(int) - videos[1].astype(int)).sum() > 0


# Slow (28 s on JAX); the CLIP adapter keeps its contract and plug-in tests, the padding rule its unit tests.
@pytest.mark.slow
def test_clip_adapter_feeds_latte_and_padding_is_ignored_end_to_end():
    from keras_vdiff.models.latte import Latte

    tokenizer = clip_tokenizer()
    encoder = small_clip(tokenizer, sequence_length=12)
    long_adapter = CLIPTextAdapter(encoder, tokenizer, sequence_length=12)
    short_adapter = CLIPTextAdapter(encoder, tokenizer, sequence_length=9)  # same weights, less padding
    backbone = Latte(input_shape=(FRAMES, SIZE, SIZE, 1), patch_size=2, hidden_dim=16, num_layers=2, num_heads=2,
                     conditioning="text", text_dim=16, learn_sigma=False)
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(2, FRAMES, SIZE, SIZE, 1)).astype(np.float32)
    outputs = []
    for adapter in (long_adapter, short_adapter):
        embeddings, mask, pooled = adapter(CAPTIONS)
        timesteps = keras.ops.convert_to_tensor(np.array([3.0, 500.0], np.float32))
        outputs.append(to_numpy(backbone({"latents": keras.ops.convert_to_tensor(latents), "timesteps": timesteps,
                                           "text_embeddings": embeddings, "text_mask": mask, "pooled_text": pooled})))
    assert outputs[0].shape == (2, FRAMES, SIZE, SIZE, 1)
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-4)  # 3 more padding tokens change nothing
    other, _, _ = short_adapter(CAPTIONS[::-1])
    assert np.abs(to_numpy(other) - to_numpy(short_adapter(CAPTIONS)[0])).max() > 1e-3  # the words do matter


def test_negative_prompt_rows_replace_the_zero_null_rows_with_their_own_or_the_prompts_mask():
    from keras_vdiff.tasks import conditioning as contract

    rng = np.random.default_rng(0)
    text = {"text_embeddings": rng.standard_normal((2, 4, 3)).astype("float32"),
            "text_mask": np.array([[1, 1, 0, 0], [1, 1, 1, 0]], "float32"), "pooled_text": np.ones((2, 3), "float32")}
    negative = {"text_embeddings": rng.standard_normal((2, 2, 3)).astype("float32"),
                "text_mask": np.array([[1, 0], [1, 0]], "float32"), "pooled_text": np.zeros((2, 3), "float32")}
    own = {k: to_numpy(v) for k, v in contract.with_negative_rows(text, negative, "own").items()}
    assert own["text_embeddings"].shape == (4, 4, 3)  # the shorter negatives are padded (and masked) to 4 tokens
    np.testing.assert_array_equal(own["text_mask"][2:], [[1, 0, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(own["text_embeddings"][2:, :2], negative["text_embeddings"])
    np.testing.assert_array_equal(own["text_embeddings"][:2], text["text_embeddings"])
    shared = {k: to_numpy(v) for k, v in contract.with_negative_rows(text, negative, "prompt").items()}
    np.testing.assert_array_equal(shared["text_mask"][2:], text["text_mask"])  # LattePipeline's rule
    with pytest.raises(ValueError, match="negative_prompts.*3 entries for 2 videos"):
        contract.checked_negative_prompts(["a", "b", "c"], 2)
    with pytest.raises(ValueError, match="negative_prompt_mask"):
        contract.with_negative_rows(text, negative, "theirs")
