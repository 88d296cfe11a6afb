"""Full-size CogVideoX-2b with random weights: one bfloat16 step on a CPU; 50 steps against diffusers on a GPU.

CPU mode (default): ``kv.models.CogVideoX.from_preset("cogvideox_2b")`` (the
released ``THUDM/CogVideoX-2b`` transformer config: 30 layers, 30 heads x 64,
3D sin-cos positions, 1,693,783,872 parameters, as diffusers counts them) built with its random
initialisers in ``bfloat16`` at ``--frames`` video frames (13 -> 4 latent frames)
of 480x720 (60x90x16 latents, 5,400 video tokens + 226 text tokens), then ONE
denoising step: one forward of ``--batch`` rows (1: a step without guidance; 2
with classifier-free guidance) on random latents and T5-sized text embeddings
(226 x 4096). Records the build time, the step's time, the output's finiteness
and the process' peak RSS. On JAX (and TensorFlow) the step runs through
``predict_on_batch`` (one compiled function: its compile time is included),
``--eager`` calls the model directly; PyTorch runs eagerly. One batch-1 step is
about 22 TFLOP (15 in the projections, 7 in the attention).

GPU mode (``--gpu``): diffusers' ``CogVideoXTransformer3DModel()`` (its defaults
are the 2b config) gets random weights (``tests/diffusers_reference.randomize``),
is saved and loaded by ``kv.convert.from_diffusers(dtype="bfloat16")``, so both
hold identical weights; both run CogVideoXPipeline's loop with the released
``CogVideoXDDIMScheduler`` config, classifier-free guidance 6 (2 rows per step),
``--steps`` (50) steps of ``--frames`` (49 -> 13 latent frames) from the same
initial latents and text embeddings (the negative rows all zero on both sides),
diffusers in bfloat16 on ``cuda``, ours through ``VideoDiffusion.generate``
(compiled loop; the first run includes its compile, the second is timed
again). Prints both times and the final latents' relative difference
(bfloat16: expect ~1e-2, not float32 parity). Run it with the Keras backend on
the GPU (``KERAS_BACKEND=jax`` with jax[cuda], or ``torch``).

``--dry-run`` runs the GPU mode's code with a tiny config on the CPU in float32
(2 steps), as a check that the script works before a GPU is at hand.

    KERAS_BACKEND=jax python benchmarks/cogvideox_full_size.py                  # the CPU step
    KERAS_BACKEND=jax python benchmarks/cogvideox_full_size.py --gpu            # 50 steps of 49 frames
    KERAS_BACKEND=torch python benchmarks/cogvideox_full_size.py --dry-run
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import full_size_step  # noqa: E402  (the CPU step, shared with Wan's)

# CogVideoX-2b's released scheduler (THUDM/CogVideoX-2b scheduler/scheduler_config.json)
SCHEDULER_2B = dict(_class_name="CogVideoXDDIMScheduler", beta_end=0.012, beta_schedule="scaled_linear",
                    beta_start=0.00085, clip_sample=False, clip_sample_range=1.0, num_train_timesteps=1000,
                    prediction_type="v_prediction", rescale_betas_zero_snr=True, sample_max_value=1.0,
                    set_alpha_to_one=True, snr_shift_scale=3.0, steps_offset=0, timestep_spacing="trailing",
                    trained_betas=None)
# A tiny transformer of the 2b form for --dry-run (diffusers' test sizes).
TINY = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
            text_embed_dim=16, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
            max_text_seq_length=8)


def latent_frames(frames):
    return full_size_step.latent_frames(frames, 4)


def cpu_step(args):
    """Build the released config in bfloat16 and run one forward of ``args.batch`` rows (``full_size_step``)."""
    return full_size_step.full_size_step("cogvideox_2b", args.frames, args.batch, args.eager)


def diffusers_loop(transformer, scheduler_config, latents, text, steps, guidance, torch):
    """CogVideoXPipeline's denoising loop (2b: no RoPE) on (B, F, C, H, W) latents; returns them and the seconds."""
    import diffusers

    scheduler = diffusers.CogVideoXDDIMScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(steps)
    text = torch.cat([torch.zeros_like(text), text])  # negative rows first, as the pipeline stacks them
    start = time.perf_counter()
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = transformer(hidden_states=torch.cat([latents] * 2), encoder_hidden_states=text,
                                 timestep=t.expand(2 * latents.shape[0]), return_dict=False)[0].float()
            uncond, cond = output.chunk(2)
            latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents, return_dict=False)[0]
            latents = latents.to(text.dtype)
    if latents.is_cuda:
        torch.cuda.synchronize()
    return latents, time.perf_counter() - start


def gpu_compare(args):
    """diffusers vs ours with identical random weights: ``args.steps`` guided steps of ``args.frames`` frames."""
    import diffusers
    import keras
    import torch

    import keras_vdiff as kv
    from keras_vdiff.convert.schedulers import from_scheduler_config

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from diffusers_reference import randomize, relative_error

    device, dtype, config = ("cpu", torch.float32, TINY) if args.dry_run else ("cuda", torch.bfloat16, {})
    reference = randomize(diffusers.CogVideoXTransformer3DModel(**dict(config, sample_frames=args.frames)), seed=0)
    reference = reference.to(device=device, dtype=dtype)  # diffusers keeps no module of this model in float32
    height, width = reference.config.sample_height, reference.config.sample_width
    channels, text_shape = reference.config.in_channels, (reference.config.max_text_seq_length,
                                                          reference.config.text_embed_dim)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        start = time.perf_counter()
        reference.save_pretrained(folder, safe_serialization=True)
        backbone = kv.convert.from_diffusers(folder, dtype="float32" if args.dry_run else "bfloat16")
        convert_s = time.perf_counter() - start
    model = kv.VideoDiffusion(backbone, **from_scheduler_config(SCHEDULER_2B).task_arguments())
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((1, latent_frames(args.frames), height, width, channels)).astype("float32")
    text = rng.standard_normal((1,) + text_shape).astype("float32")
    expected, diffusers_s = diffusers_loop(
        reference, SCHEDULER_2B, torch.from_numpy(noise.transpose(0, 1, 4, 2, 3)).to(device, dtype),
        torch.from_numpy(text).to(device, dtype), args.steps, args.guidance, torch)
    embeddings = dict(text_embeddings=text, text_mask=np.ones(text.shape[:2], "float32"),
                      pooled_text=np.zeros((1, text.shape[2]), "float32"))
    times = []
    for _ in range(2):  # the first run compiles the loop
        start = time.perf_counter()
        ours = model.generate(text_embeddings=embeddings, steps=args.steps, guidance_scale=args.guidance,
                              initial_noise=noise, return_latents=True)
        times.append(time.perf_counter() - start)
    expected = expected.float().cpu().numpy().transpose(0, 1, 3, 4, 2)
    return dict(mode="dry_run" if args.dry_run else "gpu", backend=keras.backend.backend(), device=device,
                steps=args.steps, frames=args.frames, guidance=args.guidance, convert_s=round(convert_s, 1),
                diffusers_s=round(diffusers_s, 2), ours_first_s=round(times[0], 2), ours_s=round(times[1], 2),
                final_latents_relative_difference=relative_error(ours, expected))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="time --steps guided steps against diffusers on cuda")
    mode.add_argument("--dry-run", action="store_true", help="the --gpu code with a tiny config on the CPU")
    parser.add_argument("--frames", type=int, default=None, help="video frames (CPU: 13, --gpu: 49, dry run: 9)")
    parser.add_argument("--batch", type=int, default=1, help="CPU step: rows of the forward (2: with guidance)")
    parser.add_argument("--eager", action="store_true", help="CPU step: call the model instead of predict_on_batch")
    parser.add_argument("--steps", type=int, default=None, help="--gpu: sampling steps (50; dry run: 2)")
    parser.add_argument("--guidance", type=float, default=6.0, help="--gpu: guidance scale (diffusers' 6)")
    parser.add_argument("--workdir", default=None, help="--gpu: where the checkpoint is written (temp)")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.gpu or args.dry_run:
        args.frames = args.frames or (9 if args.dry_run else 49)
        args.steps = args.steps or (2 if args.dry_run else 50)
        result = gpu_compare(args)
    else:
        args.frames = args.frames or 13
        result = cpu_step(args)
    full_size_step.report(result, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
