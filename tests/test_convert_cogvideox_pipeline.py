"""Pipeline parity: diffusers' ``CogVideoXPipeline`` assembled offline from tiny random components vs ours from its folder.

The folder is what ``save_pretrained`` writes (the layout of a ``THUDM/CogVideoX-2b``
download): the 2b-form transformer (3D sin-cos positions) of diffusers' test
sizes, the causal 3D VAE (x4 time, x8 space), a tiny T5 encoder and tokenizer,
and the released 2b scheduler config (``CogVideoXDDIMScheduler``: v prediction,
zero terminal SNR after an SNR shift of 3, trailing spacing). Both start from the
same initial latents (diffusers' ``(B, F, C, H, W)``, ours channels-last) and run
5 steps with guidance; the final latents must agree within 1e-3 relative to
their largest value. The text path on its own: T5 called without an attention
mask, as ``CogVideoXPipeline._get_t5_prompt_embeds`` calls it (the prompts padded
to ``max_sequence_length`` and every position attending to the padding too:
``T5Encoder(attend_to_padding=True)``).
"""

import numpy as np
import pytest

import keras_vdiff as kv

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers_reference import (  # noqa: E402
    randomize, relative_error, save, tiny_t5_tokenizer_folder, to_torch, torch)
from test_convert_cogvideox_schedulers import COGVIDEOX_2B  # noqa: E402

PROMPT = "A small dog runs on the beach"
CORPUS = [PROMPT, "a red car drives down a street", "the sun sets over the sea", "two cats play with a ball"]
FRAMES, LATENT_FRAMES, SIZE, TEXT_LENGTH, STEPS, GUIDANCE = 9, 3, 64, 8, 5, 6.0


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


@pytest.fixture(scope="module")
def cogvideox_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox_pipeline")
    tokenizer = tiny_t5_tokenizer_folder(root / "tokenizer_source", CORPUS)
    transformer = randomize(diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=16, num_layers=2, sample_width=SIZE // 8, sample_height=SIZE // 8, sample_frames=FRAMES,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TEXT_LENGTH), seed=2)
    vae = randomize(diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4), seed=3)
    scheduler = diffusers.CogVideoXDDIMScheduler.from_config(COGVIDEOX_2B)
    pipeline = diffusers.CogVideoXPipeline(tokenizer=tokenizer, text_encoder=tiny_t5(tokenizer.vocab_size + 8),
                                           vae=vae, transformer=transformer, scheduler=scheduler)
    pipeline.save_pretrained(str(root / "pipeline"), safe_serialization=True)
    return pipeline, str(root / "pipeline")


def test_cogvideox_pipeline_matches_diffusers(cogvideox_pipeline):
    reference, path = cogvideox_pipeline
    model = kv.convert.from_diffusers(path)
    assert isinstance(model.backbone, kv.models.CogVideoX) and isinstance(model.autoencoder, kv.autoencoders.CogVideoXVAE)
    assert (model.sampler, model.negative_prompt, model.tokenizer.sequence_length) == ("ddim", "", TEXT_LENGTH)
    noise = np.random.default_rng(0).standard_normal((1, LATENT_FRAMES, SIZE // 8, SIZE // 8, 4)).astype("float32")
    common = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE,
                  width=SIZE, num_frames=FRAMES, max_sequence_length=TEXT_LENGTH,
                  latents=to_torch(noise.transpose(0, 1, 4, 2, 3)))
    with torch.no_grad():
        expected = reference(**common, output_type="latent").frames.numpy().transpose(0, 1, 3, 4, 2)
        video = reference(**common, output_type="np").frames  # (B, F, H, W, 3) in [0, 1]
    ours = model.generate(prompts=[PROMPT], num_frames=FRAMES, steps=STEPS, guidance_scale=GUIDANCE,
                          initial_noise=noise, return_latents=True)
    error = relative_error(ours, expected)
    print(f"final latents: max relative error {error:.2e}")
    assert error <= 1e-3
    videos = model.decode_latents(ours)
    assert videos.shape == (1, FRAMES, SIZE, SIZE, 3)
    reference_uint8 = np.round(np.clip(np.asarray(video), 0, 1) * 255).astype(np.int32)
    assert np.abs(videos.astype(np.int32) - reference_uint8).max() <= 1
