"""Pipeline parity: diffusers' ``LattePipeline`` assembled offline from tiny random components vs ours from its folder.

The folder is what ``save_pretrained`` writes for a pipeline (``model_index.json``
and one folder per component), i.e. the layout of a ``maxin-cn/Latte-1``
download. Both pipelines start from the same initial latents and run 10 DDIM
steps with guidance; the final latents must agree within 1e-3 (relative to
their largest value) and the decoded videos within one uint8 level.
"""

import os

import numpy as np
import pytest

import keras_vdiff as kv

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers_reference import randomize, relative_error, tiny_t5_tokenizer_folder, to_torch, torch  # noqa: E402

PROMPT = "A small dog runs on the beach"
CORPUS = [PROMPT.lower(), "a red car drives down a street", "the sun sets over the sea", "two cats play with a ball"]
FRAMES, SIZE, STEPS, GUIDANCE = 3, 16, 10, 4.5


@pytest.fixture(scope="module")
def latte_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("latte_pipeline")
    tokenizer = tiny_t5_tokenizer_folder(root / "tokenizer_source", CORPUS)
    text_encoder = randomize(transformers.T5EncoderModel(transformers.T5Config(
        vocab_size=tokenizer.vocab_size + 8, d_model=16, d_kv=4, d_ff=24, num_layers=1, num_heads=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0)), seed=1)
    transformer = randomize(diffusers.LatteTransformer3DModel(
        sample_size=SIZE // 2, num_layers=2, patch_size=2, attention_head_dim=4, num_attention_heads=2,
        caption_channels=16, in_channels=4, cross_attention_dim=8, out_channels=8, attention_bias=True,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, video_length=FRAMES), seed=2)
    vae = randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=SIZE), seed=3)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    pipeline = diffusers.LattePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                       transformer=transformer, scheduler=scheduler)
    pipeline.save_pretrained(str(root / "pipeline"), safe_serialization=True)
    return pipeline, str(root / "pipeline")


def test_latte_pipeline_matches_diffusers(latte_pipeline):
    reference, path = latte_pipeline
    model = kv.convert.from_diffusers(path)
    assert isinstance(model, kv.VideoDiffusion) and isinstance(model.backbone, kv.models.Latte)
    noise = np.random.default_rng(0).standard_normal((1, FRAMES, SIZE // 2, SIZE // 2, 4)).astype("float32")
    common = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                  height=SIZE, width=SIZE, video_length=FRAMES, latents=to_torch(noise.transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        expected = reference(**common, output_type="latent").frames.numpy().transpose(0, 2, 3, 4, 1)
        video = reference(**common, output_type="np").frames  # (B, F, H, W, 3) in [0, 1]
    ours = model.generate(prompts=[PROMPT], steps=STEPS, guidance_scale=GUIDANCE, initial_noise=noise,
                          return_latents=True)
    assert relative_error(ours, expected) <= 1e-3
    videos = model.decode_latents(ours)
    reference_uint8 = np.round(np.clip(np.asarray(video), 0, 1) * 255).astype(np.int32)
    assert np.abs(videos.astype(np.int32) - reference_uint8).max() <= 1


def test_cli_convert_writes_a_preset_that_loads_and_samples(latte_pipeline, tmp_path, capsys):
    from keras_vdiff import cli

    _, path = latte_pipeline
    preset = str(tmp_path / "latte_preset")
    assert cli.main(["convert", "--diffusers", path, "--output-dir", preset]) == 0
    assert "Pipeline preset" in capsys.readouterr().out
    loaded, converted = kv.VideoDiffusion.from_preset(preset), kv.convert.from_diffusers(path)
    for a, b in zip(loaded.get_weights(), converted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (loaded.negative_prompt, loaded.negative_prompt_mask, loaded.sampler) == ("", "prompt", "ddim")
    np.testing.assert_array_equal(loaded.preprocessor([PROMPT])["token_ids"], converted.preprocessor([PROMPT])["token_ids"])
    samples = str(tmp_path / "samples")
    assert cli.main(["sample", "--preset", preset, "--prompt", PROMPT, "--steps", "2", "--output-dir", samples]) == 0
    assert any(name.endswith(".gif") for name in os.listdir(samples))
    with pytest.raises(SystemExit, match="exists"):  # never replaces what is there without --overwrite
        cli.main(["convert", "--diffusers", path, "--output-dir", preset])


def test_dit_pipeline_matches_diffusers(tmp_path):
    """DiTPipeline draws its own noise (no `latents` argument): the same torch generator gives ours the same start."""
    transformer = randomize(diffusers.DiTTransformer2DModel(
        sample_size=8, num_layers=1, patch_size=2, attention_head_dim=4, num_attention_heads=2, in_channels=4,
        out_channels=8, num_embeds_ada_norm=1000), seed=4)  # DiTPipeline's null class is label 1000
    vae = randomize(diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=4, sample_size=SIZE), seed=5)
    scheduler = diffusers.DDIMScheduler(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, clip_sample=False)
    reference = diffusers.DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler)
    path = str(tmp_path / "dit_pipeline")
    reference.save_pretrained(path, safe_serialization=True)
    model = kv.convert.from_diffusers(path)
    assert isinstance(model.backbone, kv.models.DiT) and model.sampler == "ddim"
    labels, steps, guidance = [3, 999], 4, 4.0
    noise = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0)).numpy()
    with torch.no_grad():
        expected = reference(class_labels=labels, guidance_scale=guidance, num_inference_steps=steps,
                             generator=torch.Generator().manual_seed(0), output_type="np").images
    ours = model.generate(labels=labels, steps=steps, guidance_scale=guidance,
                          initial_noise=noise.transpose(0, 2, 3, 1))[:, 0]
    assert np.abs(ours.astype(np.int32) - np.round(np.asarray(expected) * 255).astype(np.int32)).max() <= 1
