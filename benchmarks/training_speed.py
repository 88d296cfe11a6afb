"""Training speed on identical weights: keras_vdiff ``fit`` per backend vs a plain PyTorch loop over diffusers' Latte.

One run of this script:

1. builds diffusers' ``LatteTransformer3DModel`` in the reference configuration
   (``../shared/bench/diffusers_latte_baseline.py``: ``tiny`` or ``medium``, 8
   frames of 16x16x4 latents, patch 2, adaLN-single, learned sigma, text of 8
   tokens x 64; with q/k/v biases, as Latte-1, where the reference has none),
   gives every tensor random values (seed 0) and saves it to a temporary folder;
2. converts that folder with ``kv.convert.from_diffusers`` (the same weights)
   and times ``VideoDiffusion.fit`` on the backend of ``KERAS_BACKEND``
   (AdamW, batch ``--batch``, the epsilon + learned-variance hybrid loss of
   the converted Latte's process);
3. in a subprocess, times a plain PyTorch training loop over the diffusers
   model loaded from the same folder: AdamW at the same learning rate, the
   same batch, DDPM-linear noising, MSE on the predicted noise; eager and,
   with ``--reference-compile``, ``torch.compile``d.

Both sides draw fresh timesteps and noise each step from a fixed batch of
latents and text. The loss differs by the learned-variance term keras_vdiff
adds (Nichol & Dhariwal's ``L_vlb`` with weight 1e-3, elementwise on the
latents: well under 1% of a step's FLOPs). Steps/s is measured over
``--steps`` steps after ``--warmup`` steps (which include compilation; its
time is reported apart), up to the end of ``fit``'s epoch (the time ``fit``
then takes to return is ``fit_teardown_seconds``), and the ratios to the
PyTorch loop are printed.

    KERAS_BACKEND=jax python benchmarks/training_speed.py --config tiny
    KERAS_BACKEND=tensorflow python benchmarks/training_speed.py --config medium --reference-compile

Appends one JSON line per measurement to ``benchmarks/results/training_speed.jsonl``.
``--dry-run`` runs 1 + 1 steps of everything (a check that the script works, not a measurement).
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
from latte_reference import CHANNELS, FRAMES, SIZE, TEXT_DIM, TEXT_TOKENS, save_reference_model  # noqa: E402
from fit_timing import timed_fit  # noqa: E402
from results_log import append_rows  # noqa: E402


def batch_arrays(batch, seed=0):
    """A fixed training batch: latent-space videos in [0, 1] (B, F, H, W, C) and text inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return dict(
        videos=rng.uniform(0, 1, (batch, FRAMES, SIZE, SIZE, CHANNELS)).astype("float32"),
        text_embeddings=rng.standard_normal((batch, TEXT_TOKENS, TEXT_DIM)).astype("float32"),
        text_mask=np.ones((batch, TEXT_TOKENS), "float32"),
        pooled_text=rng.standard_normal((batch, TEXT_DIM)).astype("float32"),
    )


def time_keras(folder, batch, steps, warmup, learning_rate, jit_compile="auto", remat=False):
    """keras_vdiff ``fit`` on the converted folder: (warm-up seconds, steps/s, params, jit_compile, teardown seconds).

    ``jit_compile`` goes to ``model.compile`` (``"auto"``: Keras' choice); the value the model resolved it to is
    returned, so a row says whether the step ran through XLA. ``remat``: every block rematerialised
    (``models/remat.py``), as ``remat=True`` on a backbone does. Steps/s is measured from the call of ``fit`` to
    the end of its epoch, and the time ``fit`` then takes to return is reported apart (``fit_timing.py``).
    """
    import keras

    from keras_vdiff import convert
    from keras_vdiff.diffusion.gaussian import GaussianDiffusion
    from keras_vdiff.tasks import VideoDiffusion

    backbone = convert.from_diffusers(folder)
    if remat:
        from keras_vdiff.models.remat import remat_blocks

        remat_blocks(backbone)
        backbone.remat = True
    model = VideoDiffusion(backbone, GaussianDiffusion("linear", learn_sigma=True), seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate), jit_compile=jit_compile)
    data = batch_arrays(batch)

    def run(num_steps):
        """(seconds to the end of the epoch, seconds from there until ``fit`` returned)."""
        repeated = {key: value.repeat(num_steps, axis=0) for key, value in data.items()}
        history, seconds, teardown = timed_fit(model, repeated, batch_size=batch, shuffle=False, verbose=0)
        float(history.history["loss"][-1])  # the last step has finished
        return seconds, teardown

    first, _ = run(warmup)  # builds and compiles the train step (kept for the next fit)
    seconds, teardown = run(steps)
    return first, steps / seconds, int(backbone.count_params()), bool(model.jit_compile), teardown


def reference_loop(folder, batch, steps, warmup, learning_rate, compile, threads):
    """A plain PyTorch loop over diffusers' Latte from ``folder``: (warm-up seconds, steps/s)."""
    import numpy as np
    import torch
    from diffusers import LatteTransformer3DModel

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = LatteTransformer3DModel.from_pretrained(folder).train()
    forward = torch.compile(model) if compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    arrays = batch_arrays(batch)
    latents = torch.from_numpy(arrays["videos"] * 2 - 1).permute(0, 4, 1, 2, 3).contiguous()  # (B, C, F, H, W)
    text = torch.from_numpy(arrays["text_embeddings"])
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alphas_cumprod = torch.from_numpy(np.cumprod(1 - betas)).float()

    def step():
        t = torch.randint(0, 1000, (batch,))
        noise = torch.randn_like(latents)
        a = alphas_cumprod[t].view(-1, 1, 1, 1, 1)
        x_t = a.sqrt() * latents + (1 - a).sqrt() * noise
        output = forward(x_t, encoder_hidden_states=text, timestep=t, enable_temporal_attentions=True,
                         return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(output[:, :CHANNELS], noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss)

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return first, steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=("tiny", "medium"), default="tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"), default="auto",
                        help="model.compile's jit_compile for our fit (auto: Keras' choice, no XLA on a CPU-only "
                             "TensorFlow)")
    parser.add_argument("--remat", action="store_true", help="rematerialise every block of our model")
    parser.add_argument("--reference-compile", action="store_true", help="also time the loop under torch.compile")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="1 warm-up + 1 timed step of everything")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "training_speed.jsonl"))
    parser.add_argument("--reference-loop", metavar="FOLDER", help=argparse.SUPPRESS)  # the subprocess side
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run:
        args.steps, args.warmup = 1, 1
    if args.steps < 1 or args.warmup < 1 or args.batch < 1:
        parser.error(f"--steps, --warmup and --batch must be >= 1, got {args.steps}, {args.warmup}, {args.batch}.")
    if args.reference_loop:
        first, rate = reference_loop(args.reference_loop, args.batch, args.steps, args.warmup, args.learning_rate,
                                     args.compile, args.threads)
        print(json.dumps(dict(first_seconds=round(first, 3), steps_per_second=round(rate, 3))))
        return 0

    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    common = dict(config=args.config, batch=args.batch, steps=args.steps, dry_run=args.dry_run)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        reference_params = save_reference_model(args.config, folder)
        jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
        first, rate, params, jit, teardown = time_keras(folder, args.batch, args.steps, args.warmup,
                                                        args.learning_rate, jit_compile, args.remat)
        ours = dict(impl="keras_vdiff fit", backend=backend, params=params, steps_per_second=round(rate, 3),
                    warmup_seconds=round(first, 3), fit_teardown_seconds=round(teardown, 3), jit_compile=jit,
                    remat=args.remat,
                    **common)
        rows.append(ours)
        print(json.dumps(ours), flush=True)
        if not args.skip_reference:
            for compile in [False] + ([True] if args.reference_compile else []):
                command = [sys.executable, os.path.abspath(__file__), "--reference-loop", folder,
                           "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
                           "--learning-rate", str(args.learning_rate), "--threads", str(args.threads)]
                output = subprocess.run(command + (["--compile"] if compile else []), capture_output=True,
                                        text=True, check=True).stdout
                measured = json.loads(output.strip().splitlines()[-1])
                reference = dict(impl="torch loop over diffusers" + (" (torch.compile)" if compile else ""),
                                 backend="torch", params=reference_params, **measured, **common)
                rows.append(reference)
                print(json.dumps(reference), flush=True)
                key = "ratio_to_torch_loop_compiled" if compile else "ratio_to_torch_loop"
                ours[key] = round(rate / measured["steps_per_second"], 3)
            print(json.dumps({k: v for k, v in ours.items() if k.startswith("ratio")}), flush=True)
    if not args.dry_run:
        append_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
