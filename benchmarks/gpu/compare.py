"""GPU comparison on identical weights: keras_vdiff (JAX / TensorFlow compiled) vs diffusers (eager / torch.compile).

Each sub-command is one process (a Keras backend is fixed per process);
``benchmarks/gpu/run.sh`` chains them. For a model of ``MODELS`` (the
Latte-1-size ``latte1``, the Wan-2.1-1.3B-size ``wan1_3b``):

- ``prepare``: builds diffusers' transformer from the released config with
  random weights (seed 0, torch's initialisers), saves it in bfloat16 to
  ``<workdir>/<model>/transformer`` and draws the initial latents and text
  embeddings (``inputs.npz``), so every implementation starts from the same
  weights and inputs;
- ``diffusers [--compile]``: diffusers' model on ``cuda`` in bfloat16, the
  pipeline's loop (Latte: DDIM, Wan: UniPC with flow shift 3) for ``--steps``
  steps with classifier-free guidance (the two halves in one batched forward,
  as ours), then, with ``--train``, a plain AdamW loop under bf16 autocast;
- ``keras``: the same folder through ``kv.convert.from_diffusers`` on the
  process' ``KERAS_BACKEND``, ``VideoDiffusion.generate`` (compiled loop; the
  first call includes compilation and is reported apart) with the scheduler's
  conversion, and with ``--train`` ``fit`` steps/s in ``mixed_bfloat16``;
- ``report``: the markdown table of everything measured, as ratios to
  diffusers, with the final latents' relative difference to diffusers eager
  (bfloat16: expect ~1e-2, not float32 parity).

``--dry-run`` (every sub-command) uses diffusers' tiny test configs, float32
and the CPU, 2 steps: a check that the script runs before a GPU is at hand.

    python benchmarks/gpu/compare.py prepare --model latte1 --workdir /tmp/gpu
    python benchmarks/gpu/compare.py diffusers --model latte1 --workdir /tmp/gpu --compile --train
    KERAS_BACKEND=jax python benchmarks/gpu/compare.py keras --model latte1 --workdir /tmp/gpu --train
    python benchmarks/gpu/compare.py report --workdir /tmp/gpu
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/
from fit_timing import timed_fit  # noqa: E402

# Released transformer configs (maxin-cn/Latte-1, Wan-AI/Wan2.1-T2V-1.3B-Diffusers) and diffusers' test sizes.
LATTE1 = dict(activation_fn="gelu-approximate", attention_bias=True, attention_head_dim=72, caption_channels=4096,
              cross_attention_dim=1152, in_channels=4, norm_elementwise_affine=False, norm_eps=1e-6,
              norm_type="ada_norm_single", num_attention_heads=16, num_embeds_ada_norm=1000, num_layers=28,
              out_channels=8, patch_size=2, sample_size=64, video_length=16)
LATTE_TINY = dict(LATTE1, attention_head_dim=8, num_attention_heads=2, num_layers=1, caption_channels=8,
                  cross_attention_dim=16, sample_size=8, video_length=2)
WAN_1_3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
WAN_TINY = dict(WAN_1_3B, num_attention_heads=2, attention_head_dim=12, text_dim=16, ffn_dim=32, num_layers=2,
                rope_max_seq_len=32)
DDIM = dict(_class_name="DDIMScheduler", beta_schedule="linear", beta_start=0.0001, beta_end=0.02,
            num_train_timesteps=1000, clip_sample=False, set_alpha_to_one=True, steps_offset=0,
            timestep_spacing="leading", prediction_type="epsilon")
WAN_UNIPC = dict(_class_name="UniPCMultistepScheduler", beta_end=0.02, beta_schedule="linear", beta_start=0.0001,
                 disable_corrector=[], dynamic_thresholding_ratio=0.995, final_sigmas_type="zero", flow_shift=3.0,
                 lower_order_final=True, num_train_timesteps=1000, predict_x0=True, prediction_type="flow_prediction",
                 rescale_betas_zero_snr=False, sample_max_value=1.0, solver_order=2, solver_p=None, solver_type="bh2",
                 steps_offset=0, thresholding=False, timestep_spacing="linspace", trained_betas=None,
                 use_beta_sigmas=False, use_exponential_sigmas=False, use_flow_sigmas=True, use_karras_sigmas=False)
# latents (F, H, W, C) and text (tokens, width) of a run: Latte-1 at 16 frames of 512x512 (120 T5 tokens); Wan at
# 17 frames of 480x832 (5 latent frames; 512 UMT5 tokens), short enough for the whole script's 10 minutes.
MODELS = {
    "latte1": dict(cls="LatteTransformer3DModel", config=LATTE1, tiny=LATTE_TINY, scheduler=DDIM, guidance=7.5,
                   latents=(16, 64, 64, 4), text=(120, 4096), tiny_latents=(2, 8, 8, 4), tiny_text=(8, 8)),
    "wan1_3b": dict(cls="WanTransformer3DModel", config=WAN_1_3B, tiny=WAN_TINY, scheduler=WAN_UNIPC, guidance=5.0,
                    latents=(5, 60, 104, 16), text=(512, 4096), tiny_latents=(2, 16, 16, 16), tiny_text=(12, 16)),
}


def model_dir(args):
    return os.path.join(args.workdir, args.model)


def record(args, row):
    """Print ``row`` and append it to ``<workdir>/results.jsonl`` (what ``report`` reads)."""
    row = dict(row, model=args.model, dry_run=args.dry_run, steps=args.steps)
    print(json.dumps(row), flush=True)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "results.jsonl"), "a") as file:
        file.write(json.dumps(row) + "\n")


def shapes(args):
    """Latent (F, H, W, C) and text shapes of the run; ``--frames`` sets the video frames (Wan: 1 + 4k)."""
    spec = MODELS[args.model]
    latents, text = (spec["tiny_latents"], spec["tiny_text"]) if args.dry_run else (spec["latents"], spec["text"])
    if args.frames:
        if args.model == "wan1_3b" and (args.frames - 1) % 4:
            raise SystemExit(f"error: --frames must be 1 + 4k for Wan (its VAE's time stride), got {args.frames}")
        latents = ((args.frames - 1) // 4 + 1 if args.model == "wan1_3b" else args.frames,) + tuple(latents[1:])
    return latents, text


def torch_device(args):
    import torch

    if args.dry_run:
        return "cpu", torch.float32
    if not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device for torch; use --dry-run on a CPU")
    return "cuda", torch.bfloat16


def prepare(args):
    """The shared checkpoint and inputs of ``args.model``."""
    import diffusers
    import torch

    spec = MODELS[args.model]
    device, dtype = torch_device(args)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = getattr(diffusers, spec["cls"])(**(spec["tiny"] if args.dry_run else spec["config"]))
    model.to(dtype).save_pretrained(os.path.join(model_dir(args), "transformer"), safe_serialization=True)
    latents, text = shapes(args)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(model_dir(args), "inputs.npz"), noise=rng.standard_normal((1,) + latents).astype("float32"),
             text=rng.standard_normal((1,) + text).astype("float32"))
    record(args, dict(impl="prepare", params=sum(p.numel() for p in model.parameters()),
                      seconds=round(time.perf_counter() - start, 1)))


def inputs(args):
    with np.load(os.path.join(model_dir(args), "inputs.npz")) as data:
        return data["noise"], data["text"]


def diffusers_sample(model, spec, noise, text, steps, torch):
    """The pipeline's guided loop on channels-first latents; (final latents (B, F, H, W, C), seconds)."""
    import diffusers

    scheduler = getattr(diffusers, spec["scheduler"]["_class_name"]).from_config(spec["scheduler"])
    scheduler.set_timesteps(steps)
    latents = noise
    both_text = torch.cat([text, torch.zeros_like(text)])
    extra = dict(enable_temporal_attentions=True) if spec["cls"] == "LatteTransformer3DModel" else {}
    channels = latents.shape[1]
    start = time.perf_counter()
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model(torch.cat([latents] * 2), encoder_hidden_states=both_text, timestep=t.expand(2),
                           return_dict=False, **extra)[0][:, :channels].float()
            cond, uncond = output.chunk(2)
            latents = scheduler.step(uncond + spec["guidance"] * (cond - uncond), t, latents.float(),
                                     return_dict=False)[0].to(text.dtype)
    if latents.is_cuda:
        torch.cuda.synchronize()
    return latents.float().cpu().numpy().transpose(0, 2, 3, 4, 1), time.perf_counter() - start


def torch_training_rate(model, spec, noise, text, steps, torch, device):
    """A plain AdamW loop (bf16 autocast on cuda) over the diffusers model: steps/s after one warm-up step."""
    model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    extra = dict(enable_temporal_attentions=True) if spec["cls"] == "LatteTransformer3DModel" else {}
    x0, text = noise.float(), text.float()
    channels = x0.shape[1]

    def step():
        s = torch.rand(1, device=device)
        eps = torch.randn_like(x0)
        x_t = (1 - s) * x0 + s * eps  # the loss form does not change a step's cost
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(x_t, encoder_hidden_states=text, timestep=s * 1000, return_dict=False, **extra)[0]
        loss = torch.nn.functional.mse_loss(out[:, :channels].float(), eps - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args_train_steps(steps)):
        loss = step()
    loss.item()  # waits for the last step
    return args_train_steps(steps) / (time.perf_counter() - start)


def args_train_steps(steps):
    return max(2, min(10, steps // 5))


def load_reference(cls, folder, dtype):
    """``cls.from_pretrained(folder, torch_dtype=dtype)``, or its equivalent where ``accelerate`` is missing.

    Without ``accelerate`` diffusers refuses models that keep modules in float32 (Wan); then the weights are
    loaded by hand and those modules (``_keep_in_fp32_modules``) are put back in float32, as it does.
    """
    import glob

    import safetensors.torch
    import torch

    try:
        return cls.from_pretrained(folder, torch_dtype=dtype)
    except ValueError as error:
        if "low_cpu_mem_usage" not in str(error):
            raise
    model = cls.from_config(cls.load_config(folder))
    state = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        state.update(safetensors.torch.load_file(path))
    model.load_state_dict(state, strict=True)
    model = model.to(dtype)
    keep = getattr(cls, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():
        if any(part in keep for part in name.split(".")):
            module.to(torch.float32)
    for name, parameter in model.named_parameters():
        if name.split(".")[-1] in keep:
            parameter.data = parameter.data.float()
    return model


def run_diffusers(args):
    import diffusers
    import torch

    spec = MODELS[args.model]
    device, dtype = torch_device(args)
    model = load_reference(getattr(diffusers, spec["cls"]), os.path.join(model_dir(args), "transformer"), dtype)
    model = model.to(device).eval()
    forward = torch.compile(model) if args.compile else model
    noise, text = inputs(args)
    noise_t = torch.from_numpy(noise.transpose(0, 4, 1, 2, 3)).to(device, dtype)
    text_t = torch.from_numpy(text).to(device, dtype)
    _, first = diffusers_sample(forward, spec, noise_t, text_t, args.steps, torch)
    latents, seconds = diffusers_sample(forward, spec, noise_t, text_t, args.steps, torch)
    impl = "diffusers torch.compile" if args.compile else "diffusers eager"
    if not args.compile:
        np.save(os.path.join(model_dir(args), "diffusers_latents.npy"), latents)
    row = dict(impl=impl, backend="torch", device=device, seconds=round(seconds, 3), first_seconds=round(first, 3))
    if args.train:
        row["train_steps_per_second"] = round(torch_training_rate(forward, spec, noise_t, text_t, args.steps, torch,
                                                                  device), 3)
    record(args, row)


def run_keras(args):
    import keras

    import keras_vdiff as kv
    from keras_vdiff.convert.schedulers import from_scheduler_config

    spec = MODELS[args.model]
    policy = "float32" if args.dry_run else "bfloat16"
    folder = os.path.join(model_dir(args), "transformer")
    noise, text = inputs(args)
    backbone = kv.convert.from_diffusers(folder, dtype=policy)
    if tuple(backbone.input["latents"].shape[1:]) != noise.shape[1:]:  # Wan's converter builds the default grid
        backbone = rebuilt(backbone, noise.shape[1:])
    conversion = from_scheduler_config(spec["scheduler"], learn_sigma=getattr(backbone, "learn_sigma", None))
    model = kv.VideoDiffusion(backbone, **conversion.task_arguments())
    embeddings = dict(text_embeddings=text, text_mask=np.ones(text.shape[:2], "float32"),
                      pooled_text=np.zeros((1, text.shape[2]), "float32"))
    plan = model.prepare_generation(text_embeddings=embeddings, guidance_scale=spec["guidance"])
    # The null rows as diffusers' loop has them: zero embeddings that are attended to (our default null row masks
    # every text token, which a cross-attention turns into a zero output, unlike an unmasked zero caption).
    null = dict({key: np.zeros_like(value) for key, value in embeddings.items()}, text_mask=embeddings["text_mask"])
    plan["conditions"] = {key: keras.ops.convert_to_tensor(np.concatenate([embeddings[key], null[key]]))
                          for key in embeddings}
    times = []
    for _ in range(2):  # the first call compiles the loop
        start = time.perf_counter()
        latents = keras.ops.convert_to_numpy(model.sample_latents(dict(plan), steps=args.steps, initial_noise=noise))
        times.append(time.perf_counter() - start)
    row = dict(impl=f"keras_vdiff {keras.backend.backend()}", backend=keras.backend.backend(),
               mode=model.sampling_mode, seconds=round(times[1], 3), first_seconds=round(times[0], 3))
    reference = os.path.join(model_dir(args), "diffusers_latents.npy")
    if os.path.exists(reference):
        expected = np.load(reference)
        row["relative_difference_to_diffusers"] = float(np.abs(latents - expected).max() / np.abs(expected).max())
    if args.train:
        row["train_steps_per_second"] = round(keras_training_rate(folder, conversion, noise, embeddings, args), 3)
    record(args, row)


def rebuilt(backbone, latent_shape):
    """The same weights in a backbone built for ``latent_shape`` (the documented route for other sizes)."""
    config = dict(backbone.get_config(), input_shape=tuple(int(v) for v in latent_shape))
    other = type(backbone).from_config(config)
    other.set_weights(backbone.get_weights())
    return other


def keras_training_rate(folder, conversion, noise, embeddings, args):
    """``fit`` steps/s in mixed bfloat16 (AdamW, batch 1) after one warm-up ``fit`` that compiles the step."""
    import keras

    import keras_vdiff as kv

    backbone = kv.convert.from_diffusers(folder, dtype="float32" if args.dry_run else "mixed_bfloat16")
    if tuple(backbone.input["latents"].shape[1:]) != noise.shape[1:]:
        backbone = rebuilt(backbone, noise.shape[1:])
    model = kv.VideoDiffusion(backbone, **conversion.task_arguments())
    model.compile(optimizer=keras.optimizers.AdamW(1e-5))
    videos = (np.tanh(noise) + 1) / 2  # latent-space "videos" in [0, 1]
    steps = args_train_steps(args.steps)

    def fit(n):
        """Seconds to the end of ``fit``'s epoch (its teardown left out, see ``benchmarks/fit_timing.py``)."""
        data = {key: np.repeat(value, n, axis=0) for key, value in dict(embeddings, videos=videos).items()}
        history, seconds, _ = timed_fit(model, data, batch_size=1, shuffle=False, verbose=0)
        float(history.history["loss"][-1])
        return seconds

    fit(1)
    return steps / fit(steps)


def report(args):
    path = os.path.join(args.workdir, "results.jsonl")
    with open(path) as file:
        rows = [json.loads(line) for line in file if line.strip()]
    lines = ["| model | implementation | sampling s | x diffusers eager | x torch.compile | first call s | "
             "fit steps/s | rel. diff. |", "|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        model_rows = [r for r in rows if r["model"] == name and r["impl"] != "prepare"]
        base = {r["impl"]: r["seconds"] for r in model_rows}
        for r in model_rows:
            def ratio(key):
                return f"{base[key] / r['seconds']:.2f}" if key in base else "-"
            lines.append(f"| {name} | {r['impl']} | {r['seconds']} | {ratio('diffusers eager')} | "
                         f"{ratio('diffusers torch.compile')} | {r.get('first_seconds', '-')} | "
                         f"{r.get('train_steps_per_second', '-')} | {r.get('relative_difference_to_diffusers', '-')} |")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("prepare", "diffusers", "keras", "report"))
    parser.add_argument("--model", choices=sorted(MODELS), default="latte1")
    parser.add_argument("--workdir", required=True, help="where the checkpoint, inputs and results.jsonl live")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (50; --dry-run: 2)")
    parser.add_argument("--frames", type=int, default=None,
                        help="prepare: video frames (default Latte 16, Wan 17; Wan's full 81 takes longer)")
    parser.add_argument("--compile", action="store_true", help="diffusers: torch.compile the transformer")
    parser.add_argument("--train", action="store_true", help="also measure training steps/s")
    parser.add_argument("--dry-run", action="store_true", help="tiny configs, float32, CPU, 2 steps")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.dry_run else 50)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    {"prepare": prepare, "diffusers": run_diffusers, "keras": run_keras, "report": report}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
