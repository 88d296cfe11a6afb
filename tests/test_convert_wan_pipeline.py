"""Pipeline parity: diffusers' ``WanPipeline`` assembled offline from tiny random components vs ours from its folder.

The folder is what ``save_pretrained`` writes (the layout of a
``Wan-AI/Wan2.1-T2V-1.3B-Diffusers`` download): a tiny ``WanTransformer3DModel``
(diffusers' test sizes, RoPE tables of 4 positions, so the converted model's
default size is 13 frames of 64x64: 4 latent frames of 8x8), the tiny causal VAE
of diffusers' tests (x4 time, x8 space, z 16, Wan's latent mean / std), a tiny
UMT5 encoder and T5 tokenizer, and the released 1.3B scheduler config
(``UniPCMultistepScheduler``, flow prediction, ``flow_shift`` 3). Both start from
the same initial latents (diffusers' ``(B, C, F, H, W)``, ours channels-last) and
run 5 steps with guidance; the final latents must agree within 1e-3 relative to
their largest value, the decoded videos within one uint8 level. The prompt
embeddings on their own: UMT5's outputs cut to each prompt's length and
zero-padded to 512 tokens, the empty negative prompt the same way.
"""

import numpy as np
import pytest

import keras_vdiff as kv
from conftest import to_numpy

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
from diffusers_reference import randomize, relative_error, tiny_t5_tokenizer_folder, to_torch, torch  # noqa: E402
from test_diffusion_unipc import WAN  # noqa: E402  (the released 1.3B scheduler_config.json)

PROMPT = "A small dog runs on the beach"
CORPUS = [PROMPT, "a red car drives down a street", "the sun sets over the sea", "two cats play with a ball"]
FRAMES, LATENT_FRAMES, SIZE, STEPS, GUIDANCE = 13, 4, 64, 5, 5.0


@pytest.fixture(scope="module")
def wan_pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_pipeline")
    tokenizer = tiny_t5_tokenizer_folder(root / "tokenizer_source", CORPUS)
    text_encoder = randomize(transformers.UMT5EncoderModel(transformers.UMT5Config(
        vocab_size=tokenizer.vocab_size + 8, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=2,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, relative_attention_max_distance=16,
        dropout_rate=0.0)), seed=1)
    transformer = randomize(diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=4), seed=2)
    vae = randomize(diffusers.AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                                               temperal_downsample=[False, True, True]), seed=3)
    scheduler = diffusers.UniPCMultistepScheduler.from_config(WAN)
    pipeline = diffusers.WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                                     scheduler=scheduler)
    pipeline.save_pretrained(str(root / "pipeline"), safe_serialization=True)
    return pipeline, str(root / "pipeline")


@pytest.fixture(scope="module")
def converted(wan_pipeline):
    return kv.convert.from_diffusers(wan_pipeline[1])


def test_prompt_embeddings_are_the_pipelines(wan_pipeline, converted):
    reference, _ = wan_pipeline
    with torch.no_grad():
        positive, negative = reference.encode_prompt(PROMPT, negative_prompt="", max_sequence_length=512)
    embeddings, mask, _ = converted.text_encoder(converted.preprocessor([PROMPT, ""]))
    embeddings = to_numpy(embeddings)
    assert embeddings.shape == (2, 512, 16)
    assert relative_error(embeddings, np.concatenate([positive.numpy(), negative.numpy()])) <= 1e-4
    assert np.all(embeddings[1, 1:] == 0.0)  # "" is </s> alone: zeros after it


@pytest.mark.slow  # 45-105 s (JAX compiles the text encoder, the sampling loop and the VAE); fast sibling above
def test_wan_pipeline_matches_diffusers(wan_pipeline, converted):
    reference, _ = wan_pipeline
    model = converted
    assert isinstance(model.backbone, kv.models.Wan) and isinstance(model.autoencoder, kv.autoencoders.WanVAE)
    assert (model.sampler, model.negative_prompt, model.tokenizer.sequence_length) == ("unipc", "", 512)
    assert model.backbone.latent_shape == (LATENT_FRAMES, SIZE // 8, SIZE // 8, 16)
    noise = np.random.default_rng(0).standard_normal((1, LATENT_FRAMES, SIZE // 8, SIZE // 8, 16)).astype("float32")
    common = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=STEPS, guidance_scale=GUIDANCE, height=SIZE,
                  width=SIZE, num_frames=FRAMES, latents=to_torch(noise.transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        latents = reference(**common, output_type="latent").frames
        config = reference.vae.config  # the pipeline's decoding of its final latents (without running it twice)
        mean, std = (torch.tensor(v).view(1, -1, 1, 1, 1) for v in (config.latents_mean, config.latents_std))
        video = reference.video_processor.postprocess_video(reference.vae.decode(latents * std + mean).sample, "np")
    ours = model.generate(prompts=[PROMPT], num_frames=FRAMES, steps=STEPS, guidance_scale=GUIDANCE,
                          initial_noise=noise, return_latents=True)
    assert relative_error(ours, latents.numpy().transpose(0, 2, 3, 4, 1)) <= 1e-3
    levels = np.round(np.clip(np.asarray(video, "float64"), 0.0, 1.0) * 255.0)  # diffusers' frames as uint8 levels
    decoded = model.decode_latents(ours)
    assert decoded.shape == levels.shape == (1, FRAMES, SIZE, SIZE, 3) and np.abs(decoded - levels).max() <= 1


@pytest.mark.slow  # about 40 s on JAX (compiles); the text path above is the fast check of the same folder
def test_cli_convert_and_sample(wan_pipeline, converted, tmp_path, capsys):
    import os

    from keras_vdiff import cli

    _, path = wan_pipeline
    preset = str(tmp_path / "wan_preset")
    assert cli.main(["convert", "--diffusers", path, "--output-dir", preset]) == 0
    assert "Pipeline preset" in capsys.readouterr().out
    loaded = kv.VideoDiffusion.from_preset(preset)
    for a, b in zip(loaded.get_weights(), converted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (loaded.sampler, loaded.negative_prompt, loaded.text_encoder.zero_padding) == ("unipc", "", True)
    assert type(loaded.text_encoder) is kv.text.UMT5Encoder and loaded.tokenizer.sequence_length == 512
    samples = str(tmp_path / "samples")
    assert cli.main(["sample", "--preset", preset, "--prompt", PROMPT, "--steps", "2", "--guidance", "5",
                     "--output-dir", samples]) == 0
    assert any(name.endswith(".gif") for name in os.listdir(samples))


@pytest.mark.slow  # about a minute (two pipelines assembled, 2 guided steps each); the text path above is fast
def test_readme_recipe_encode_with_umt5_in_bfloat16_then_free_it(wan_pipeline, converted):
    # README's "free the text encoder before denoising": the prompt and the empty negative prompt encoded by a
    # bfloat16 UMT5, the encoder deleted, the denoiser assembled from the transformer, VAE and scheduler folders,
    # the guided plan's null rows replaced by the negative prompt's. Against `generate` of the same parts with the
    # same bfloat16 encoder as the pipeline's (exact: same embeddings), whose embeddings are the float32 ones to
    # bfloat16 precision.
    import gc
    import os

    from keras_vdiff.convert.schedulers import from_scheduler_config
    from keras_vdiff.convert.t5 import tokenizer_from_folder
    from keras_vdiff.tasks import TextToVideoPreprocessor
    from keras_vdiff.tasks.conditioning import encode_text, with_negative_rows

    _, root = wan_pipeline
    encoder = kv.convert.from_diffusers(os.path.join(root, "text_encoder"), dtype="bfloat16")
    tokenizer = tokenizer_from_folder(os.path.join(root, "tokenizer"), sequence_length=512)
    prompt, negative = (encode_text(encoder, tokenizer([text])) for text in (PROMPT, ""))
    float32 = encode_text(converted.text_encoder, converted.preprocessor([PROMPT]))
    # bfloat16 through two randomised UMT5 blocks: measured 3.4e-2 on the three backends
    assert relative_error(to_numpy(prompt["text_embeddings"]), to_numpy(float32["text_embeddings"])) <= 5e-2
    scheduler = from_scheduler_config(os.path.join(root, "scheduler"))
    parts = dict(autoencoder=kv.convert.from_diffusers(os.path.join(root, "vae")), **scheduler.task_arguments())
    backbone = kv.convert.from_diffusers(os.path.join(root, "transformer"))
    with_encoder = kv.VideoDiffusion(backbone, text_encoder=encoder, preprocessor=TextToVideoPreprocessor(tokenizer),
                                     negative_prompt="", **parts)
    expected = with_encoder.generate(prompts=[PROMPT], steps=2, guidance_scale=GUIDANCE, seed=0, compile=False,
                                     return_latents=True)
    del encoder, with_encoder
    gc.collect()
    model = kv.VideoDiffusion(backbone, **parts)
    plan = model.prepare_generation(text_embeddings=prompt, guidance_scale=GUIDANCE, seed=0, compile=False)
    plan["conditions"] = with_negative_rows(prompt, negative)
    ours = to_numpy(model.sample_latents(plan, steps=2))
    assert relative_error(ours, expected) <= 1e-5
    assert model.decode_latents(ours).shape == (1, FRAMES, SIZE, SIZE, 3)
