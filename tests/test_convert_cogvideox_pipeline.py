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

import os

import numpy as np
import pytest

import keras_vdiff as kv

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers_reference import randomize, relative_error, tiny_t5_tokenizer_folder, to_torch, torch  # noqa: E402
from test_convert_cogvideox_schedulers import COGVIDEOX_2B  # noqa: E402

PROMPT = "A small dog runs on the beach"
CORPUS = [PROMPT, "a red car drives down a street", "the sun sets over the sea", "two cats play with a ball"]
FRAMES, LATENT_FRAMES, SIZE, TEXT_LENGTH, STEPS, GUIDANCE = 9, 3, 64, 32, 5, 6.0


@pytest.fixture(scope="module")
def cogvideox_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("cogvideox_pipeline")
    tokenizer = tiny_t5_tokenizer_folder(root / "tokenizer_source", CORPUS)
    text_encoder = randomize(transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=tokenizer.vocab_size + 8, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0)), seed=1)
    transformer = randomize(diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=16, num_layers=2, sample_width=SIZE // 8, sample_height=SIZE // 8, sample_frames=FRAMES,
        patch_size=2, temporal_compression_ratio=4, max_text_seq_length=TEXT_LENGTH), seed=2)
    vae = randomize(diffusers.AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        temporal_compression_ratio=4, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4), seed=3)
    scheduler = diffusers.CogVideoXDDIMScheduler.from_config(COGVIDEOX_2B)
    pipeline = diffusers.CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                           transformer=transformer, scheduler=scheduler)
    pipeline.save_pretrained(str(root / "pipeline"), safe_serialization=True)
    return pipeline, str(root / "pipeline")


@pytest.fixture(scope="module")
def converted(cogvideox_pipeline):
    return kv.convert.from_diffusers(cogvideox_pipeline[1])


def test_t5_attending_to_padding_matches_the_pipelines_prompt_embeddings(cogvideox_pipeline, converted):
    reference, _ = cogvideox_pipeline
    with torch.no_grad():
        expected = reference.encode_prompt(PROMPT, do_classifier_free_guidance=True, max_sequence_length=TEXT_LENGTH,
                                           device="cpu")
    tokens = converted.preprocessor([PROMPT, ""])
    assert 2 < tokens["padding_mask"][0].sum() < TEXT_LENGTH  # the prompt is padded, not cut
    embeddings, mask, _ = (np.asarray(value) for value in converted.text_encoder(tokens))
    assert np.all(mask == 1.0) and converted.text_encoder.attend_to_padding
    for ours, theirs in zip(embeddings, expected):  # the prompt, then the empty negative prompt
        assert relative_error(ours, theirs[0].numpy()) <= 1e-4
    converted.text_encoder.attend_to_padding = False  # masked, the padded positions differ: the test can fail
    try:
        masked = np.asarray(converted.text_encoder(tokens)[0])
    finally:
        converted.text_encoder.attend_to_padding = True
    assert relative_error(masked[1], expected[1][0].numpy()) > 1e-3
    assert kv.text.T5Encoder.from_config(converted.text_encoder.get_config()).attend_to_padding


def _run_both(reference, model, output_type="latent"):
    noise = np.random.default_rng(0).standard_normal((1, LATENT_FRAMES, SIZE // 8, SIZE // 8, 4)).astype("float32")
    with torch.no_grad():
        expected = reference(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                             height=SIZE, width=SIZE, num_frames=FRAMES, max_sequence_length=TEXT_LENGTH,
                             latents=to_torch(noise.transpose(0, 1, 4, 2, 3)), output_type=output_type).frames
    ours = model.generate(prompts=[PROMPT], num_frames=FRAMES, steps=STEPS, guidance_scale=GUIDANCE,
                          initial_noise=noise, return_latents=True)
    return ours, expected


def test_cogvideox_pipeline_matches_diffusers(cogvideox_pipeline, converted):
    reference, _ = cogvideox_pipeline
    model = converted
    assert isinstance(model.backbone, kv.models.CogVideoX) and isinstance(model.autoencoder, kv.autoencoders.CogVideoXVAE)
    assert (model.sampler, model.negative_prompt, model.tokenizer.sequence_length) == ("ddim", "", TEXT_LENGTH)
    ours, expected = _run_both(reference, model)
    error = relative_error(ours, expected.numpy().transpose(0, 1, 3, 4, 2))
    print(f"final latents: max relative error {error:.2e}")
    assert error <= 1e-3


@pytest.mark.slow
def test_cogvideox_pipeline_videos_match_diffusers(cogvideox_pipeline, converted):
    """The decoded videos (the VAE's latent scaling included) within one uint8 level; ~40 s of VAE decodes."""
    ours, video = _run_both(cogvideox_pipeline[0], converted, output_type="np")  # video (B, F, H, W, 3) in [0, 1]
    videos = converted.decode_latents(ours)
    assert videos.shape == (1, FRAMES, SIZE, SIZE, 3)
    reference_uint8 = np.round(np.clip(np.asarray(video), 0, 1) * 255).astype(np.int32)
    assert np.abs(videos.astype(np.int32) - reference_uint8).max() <= 1


@pytest.mark.slow
def test_cli_convert_and_sample_a_cogvideox_pipeline(cogvideox_pipeline, converted, tmp_path, capsys):
    """``keras-vdiff convert --diffusers`` writes a preset that loads with the same weights and settings, and
    ``keras-vdiff sample`` writes videos from it (decoding makes it slow)."""
    from keras_vdiff import cli

    preset = str(tmp_path / "cogvideox_preset")
    assert cli.main(["convert", "--diffusers", cogvideox_pipeline[1], "--output-dir", preset]) == 0
    assert "Pipeline preset" in capsys.readouterr().out
    loaded = kv.VideoDiffusion.from_preset(preset)
    for a, b in zip(loaded.get_weights(), converted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (loaded.sampler, loaded.sampler_options) == (converted.sampler, converted.sampler_options)
    assert loaded.text_encoder.attend_to_padding and loaded.negative_prompt == ""
    np.testing.assert_array_equal(loaded.preprocessor([PROMPT])["token_ids"],
                                  converted.preprocessor([PROMPT])["token_ids"])
    samples = str(tmp_path / "samples")
    assert cli.main(["sample", "--preset", preset, "--prompt", PROMPT, "--steps", "2", "--guidance", "6",
                     "--output-dir", samples]) == 0
    assert any(name.endswith(".gif") for name in os.listdir(samples))
