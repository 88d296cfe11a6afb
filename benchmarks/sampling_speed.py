"""Sampling speed on identical weights: keras_vdiff's compiled and eager loops vs diffusers' Latte, and GFLOP/s.

One run of this script, on the backend of ``KERAS_BACKEND`` and on the same
machine and thread count:

1. saves the reference Latte (``latte_reference.py``: diffusers'
   ``LatteTransformer3DModel`` in the shared reference script's ``tiny`` or
   ``medium`` configuration, with q/k/v biases, every tensor random) to a
   temporary folder and converts it with ``kv.convert.from_diffusers``: one
   model, the same weights on both sides;
2. times ``VideoDiffusion.generate`` on it: ``compiled`` (jax.jit of the whole
   loop / tf.function with XLA / torch.compile of one step) and ``eager`` (the
   same step in a Python loop);
3. in a subprocess, times diffusers' loop over the same folder
   (``LatteTransformer3DModel.from_pretrained`` + ``DDIMScheduler``, the shared
   reference script's loop), eager and, with ``--reference-compile``,
   ``torch.compile``d;

all with 50 DDIM steps, batch 2 with classifier-free guidance (4 rows per
forward). Achieved GFLOP/s: the FLOPs of one forward (PyTorch's
``FlopCounterMode`` on the reference model: the same count for every row) times
the steps over the seconds, set against the machine's dense float32 matmul
rate measured in the same run (``matmul_gflops``).

    KERAS_BACKEND=jax python benchmarks/sampling_speed.py --config tiny

Appends one JSON line per measurement to ``benchmarks/results/sampling_speed.jsonl``
(rows before 2026-12-02 timed our own Latte variant, not the converted weights).
Compilation time is reported apart (first call minus a timed call).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latte_reference import (CHANNELS, FRAMES, SIZE, TEXT_DIM, TEXT_TOKENS, forward_flops,  # noqa: E402
                             matmul_gflops, save_reference_model)
from results_log import append_rows  # noqa: E402


def build(folder):
    """The converted reference Latte as a text-to-video ``VideoDiffusion`` (DDPM-linear, learned sigma)."""
    from keras_vdiff import convert
    from keras_vdiff.diffusion.gaussian import GaussianDiffusion
    from keras_vdiff.tasks import VideoDiffusion

    return VideoDiffusion(convert.from_diffusers(folder), GaussianDiffusion("linear", learn_sigma=True), seed=0)


def reference_sampling(folder, steps, batch, repeats, threads, compile, guidance=4.0):
    """diffusers' loop over the model in ``folder`` (the shared reference script's): first call and best seconds."""
    import torch
    from diffusers import DDIMScheduler, LatteTransformer3DModel

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = LatteTransformer3DModel.from_pretrained(folder).eval()
    forward = torch.compile(model) if compile else model
    x0 = torch.randn(batch, CHANNELS, FRAMES, SIZE, SIZE)
    text = torch.randn(batch, TEXT_TOKENS, TEXT_DIM)
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(steps)

    def sample():
        latents = x0.clone()
        with torch.no_grad():
            for t in scheduler.timesteps:
                out = forward(torch.cat([latents, latents]),
                              encoder_hidden_states=torch.cat([text, torch.zeros_like(text)]),
                              timestep=t.expand(2 * batch), enable_temporal_attentions=True, return_dict=False)[0]
                cond, uncond = out[:, :CHANNELS].chunk(2)
                latents = scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        return latents

    first, best = first_and_best(sample, repeats)
    return dict(first_call_seconds=round(first, 3), seconds=round(best, 3),
                forward_flops=forward_flops(model, 2 * batch), matmul_gflops=round(matmul_gflops(threads), 1))


def first_and_best(call, repeats):
    """Seconds of ``call()``'s first run (compilation included) and the best of ``repeats`` runs after it."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, min(times)


def time_keras(model, compile, steps, batch, repeats):
    import numpy as np

    rng = np.random.default_rng(0)
    text = dict(text_embeddings=rng.standard_normal((batch, TEXT_TOKENS, TEXT_DIM)).astype("float32"),
                text_mask=np.ones((batch, TEXT_TOKENS), "float32"),
                pooled_text=rng.standard_normal((batch, TEXT_DIM)).astype("float32"))
    kwargs = dict(text_embeddings=text, steps=steps, sampler="ddim", guidance_scale=4.0, seed=0, compile=compile,
                  return_latents=True)
    return first_and_best(lambda: model.generate(**kwargs), repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("tiny", "medium"), default="tiny")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-reference", action="store_true", help="do not run the diffusers reference")
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--skip-compiled", action="store_true",
                        help="skip the compiled loop (torch.compile of the step takes minutes on a CPU)")
    parser.add_argument("--reference-compile", action="store_true", help="also time diffusers under torch.compile")
    parser.add_argument("--dry-run", action="store_true", help="2 steps, 1 repeat, nothing appended to the log")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "sampling_speed.jsonl"))
    parser.add_argument("--reference-sampling", metavar="FOLDER", help=argparse.SUPPRESS)  # the subprocess side
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps, args.repeats = 2, 1
    if min(args.steps, args.batch, args.repeats) < 1:
        parser.error(f"--steps, --batch and --repeats must be >= 1, got {args.steps}, {args.batch}, {args.repeats}.")
    if args.reference_sampling:
        print(json.dumps(reference_sampling(args.reference_sampling, args.steps, args.batch, args.repeats,
                                            args.threads, args.compile)))
        return 0

    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    common = dict(config=args.config, steps=args.steps, batch=args.batch, dry_run=args.dry_run)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        reference_params = save_reference_model(args.config, folder)
        model = build(folder)
        params = int(model.backbone.count_params())
        modes = ([] if args.skip_compiled else [True]) + ([] if args.skip_eager else [False])
        for compile in modes:
            first, best = time_keras(model, compile, args.steps, args.batch, args.repeats)
            rows.append(dict(impl="keras_vdiff", backend=backend, mode=model.sampling_mode, params=params,
                             seconds=round(best, 3), first_call_seconds=round(first, 3),
                             compile_seconds=round(max(first - best, 0.0), 3), **common))
            print(json.dumps(rows[-1]), flush=True)
        command = [sys.executable, os.path.abspath(__file__), "--reference-sampling", folder, "--steps",
                   str(args.steps), "--batch", str(args.batch), "--threads", str(args.threads), "--repeats",
                   str(args.repeats)]
        ours, flops, ceiling = list(rows), None, None
        for reference_compile in ([] if args.skip_reference else [False] + ([True] if args.reference_compile else [])):
            output = subprocess.run(command + (["--compile"] if reference_compile else []), capture_output=True,
                                    text=True, check=True).stdout
            measured = json.loads(output.strip().splitlines()[-1])
            flops, ceiling = measured.pop("forward_flops"), measured.pop("matmul_gflops")
            rows.append(dict(impl="diffusers", backend="torch", compiled=reference_compile, params=reference_params,
                             **measured, **common))
            print(json.dumps(rows[-1]), flush=True)
            key = "ratio_to_diffusers_compiled" if reference_compile else "ratio_to_diffusers"
            for row in ours:
                row[key] = round(row["seconds"] / measured["seconds"], 3)
    if flops is not None:  # the same model everywhere: one FLOP count, one ceiling
        for row in rows:
            row["gflops"] = round(flops * args.steps / row["seconds"] / 1e9, 2)
            row["matmul_gflops"] = ceiling
            row["fraction_of_matmul"] = round(row["gflops"] / ceiling, 3)
        print(f"one forward ({2 * args.batch} rows): {flops / 1e9:.2f} GFLOP; dense matmul {ceiling} GFLOP/s",
              flush=True)
    if not args.dry_run:
        append_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
