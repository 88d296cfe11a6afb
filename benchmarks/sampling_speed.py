"""Sampling speed: keras_vdiff's compiled loop vs the same loop run eagerly, vs diffusers' Latte.

One run of this script times, on the backend of ``KERAS_BACKEND`` and on the
same machine and thread count:

- ``keras_vdiff compiled``: ``VideoDiffusion.generate(compile=True)`` (jax.jit
  of the whole loop / tf.function with XLA / torch.compile of one step);
- ``keras_vdiff eager``: the same step in a Python loop (``compile=False``);
- ``diffusers``: the reference script ``../shared/bench/diffusers_latte_baseline.py``
  (LatteTransformer3DModel + DDIMScheduler, PyTorch eager; with ``--reference-compile``
  also with its ``torch.compile`` option) in a subprocess,

all with 50 DDIM steps, batch 2 with classifier-free guidance (4 rows per
forward), on the reference's ``tiny`` (or ``medium``) configuration: 8 frames
of 16x16x4 latents, patch 2, 4 heads, text of 8 tokens x 64. The keras_vdiff
model is a Latte variant 1 of the same width, heads, depth (diffusers'
``num_layers`` counts spatial+temporal pairs; ours counts blocks) and learned
sigma, with the text cross-attention inside every spatial block before its MLP
(``text_placement="v2"``), where diffusers' ``BasicTransformerBlock`` has it. It
conditions with adaLN-Zero per block rather than diffusers' shared adaLN-single,
so it has more parameters; both counts are reported.

    KERAS_BACKEND=jax python benchmarks/sampling_speed.py --config tiny

Appends one JSON line per measurement to ``benchmarks/results/sampling_speed.jsonl``.
Compilation time is reported apart (first call minus a timed call).
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_log import append_rows  # noqa: E402
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "bench", "diffusers_latte_baseline.py")
# Reference configs: diffusers num_attention_heads=4, attention_head_dim, num_layers (= spatial/temporal pairs).
CONFIGS = {"tiny": dict(head_dim=32, num_pairs=4), "medium": dict(head_dim=64, num_pairs=6)}


def build(config):
    from keras_vdiff.diffusion.gaussian import GaussianDiffusion
    from keras_vdiff.models.latte import Latte
    from keras_vdiff.video_diffusion import VideoDiffusion

    c = CONFIGS[config]
    backbone = Latte(input_shape=(8, 16, 16, 4), patch_size=2, hidden_dim=4 * c["head_dim"], num_heads=4,
                     num_layers=2 * c["num_pairs"], variant=1, conditioning="text", text_dim=64,
                     text_placement="v2", learn_sigma=True)
    return VideoDiffusion(backbone, GaussianDiffusion("linear", learn_sigma=True), seed=0)


def time_keras(model, compile, steps, batch, repeats):
    import numpy as np

    rng = np.random.default_rng(0)
    text = dict(text_embeddings=rng.standard_normal((batch, 8, 64)).astype("float32"),
                text_mask=np.ones((batch, 8), "float32"),
                pooled_text=rng.standard_normal((batch, 64)).astype("float32"))
    kwargs = dict(text_embeddings=text, steps=steps, sampler="ddim", guidance_scale=4.0, seed=0, compile=compile,
                  return_latents=True)
    start = time.perf_counter()
    model.generate(**kwargs)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(**kwargs)
        times.append(time.perf_counter() - start)
    return first, min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-reference", action="store_true", help="do not run the diffusers reference")
    parser.add_argument("--skip-eager", action="store_true")
    parser.add_argument("--skip-compiled", action="store_true",
                        help="skip the compiled loop (torch.compile of the step takes minutes on a CPU)")
    parser.add_argument("--reference-compile", action="store_true",
                        help="also time the reference with torch.compile (its --compile flag)")
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "sampling_speed.jsonl"))
    args = parser.parse_args(argv)

    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    model = build(args.config)
    params = int(model.backbone.count_params())
    rows = []
    modes = ([] if args.skip_compiled else [True]) + ([] if args.skip_eager else [False])
    for compile in modes:
        first, best = time_keras(model, compile, args.steps, args.batch, args.repeats)
        rows.append(dict(impl="keras_vdiff", backend=backend, mode=model.sampling_mode, config=args.config,
                         params=params, steps=args.steps, batch=args.batch, seconds=round(best, 3),
                         first_call_seconds=round(first, 3), compile_seconds=round(max(first - best, 0.0), 3)))
        print(json.dumps(rows[-1]), flush=True)
    if not args.skip_reference:
        if not os.path.exists(REFERENCE):
            raise SystemExit(f"The reference script is missing: {REFERENCE}")
        ours = list(rows)
        command = [sys.executable, REFERENCE, "--config", args.config, "--steps", str(args.steps),
                   "--batch", str(args.batch), "--threads", str(args.threads), "--repeats", str(args.repeats)]
        for reference_compile in [False] + ([True] if args.reference_compile else []):
            output = subprocess.run(command + (["--compile"] if reference_compile else []), capture_output=True,
                                    text=True, check=True).stdout
            reference = json.loads(output.strip().splitlines()[-1])
            reference["backend"] = "torch (diffusers)"
            rows.append(reference)
            print(json.dumps(reference), flush=True)
            key = "ratio_to_diffusers_compiled" if reference_compile else "ratio_to_diffusers"
            for row in ours:
                row[key] = round(row["seconds"] / reference["seconds"], 3)
    append_rows(args.output, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
