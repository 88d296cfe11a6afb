"""Training throughput of the demo's model on each backend, in one run: which backend should ``make demo`` use?

``make demo`` trains ``training.moving_mnist_text_to_video()`` (the text-to-video Latte
of ``TINY_MOVING_MNIST``) for a wall-clock budget, so its accuracy follows the steps
it gets. For each backend, in a fresh subprocess one after the other (the machine
otherwise idle), this script runs ``training.train`` as the demo does (AdamW, EMA,
batch 32, generated MovingMNIST) for ``--steps`` steps and reports the first step
(compilation included) and the steady rate over the steps after ``--warmup``; then
the steps each backend would fit in the demo's 8 minutes.

    python benchmarks/demo_throughput.py [--steps 120] [--backends jax tensorflow torch]

Appends one JSON line per backend to ``benchmarks/results/demo_throughput.jsonl``.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_log import append_rows  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "demo_throughput.jsonl")
DEMO_SECONDS = 8 * 60


def measure(steps, warmup, batch_size):
    """Train the demo's model for ``steps`` steps on this process' backend; first-step and steady timings."""
    import keras

    from keras_vdiff import training

    model = training.moving_mnist_text_to_video(seed=0)
    data = training.moving_mnist_training_data(model, max(4 * batch_size, 640), seed=0)
    result = training.train(model, data, steps=steps, batch_size=batch_size, verbose=0, seed=0)
    seconds = result["seconds"]
    steady = (len(seconds) - 1 - warmup) / (seconds[-1] - seconds[warmup])
    return dict(backend=keras.backend.backend(), steps=len(seconds), batch_size=batch_size,
                first_step_s=round(seconds[0], 2), steady_steps_per_s=round(steady, 3),
                demo_steps=int(max(0.0, DEMO_SECONDS - seconds[0]) * steady))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=10, help="steps after the first left out of the rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps <= args.warmup + 1:
        parser.error(f"--steps must exceed --warmup + 1 ({args.warmup + 1}), got {args.steps}")
    if args.one:
        print("RESULT" + json.dumps(measure(args.steps, args.warmup, args.batch_size)), flush=True)
        return 0
    rows = []
    for backend in args.backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, __file__, "--one", "--steps", str(args.steps), "--warmup",
                               str(args.warmup), "--batch-size", str(args.batch_size)],
                              env=env, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
        if done.returncode or not lines:
            raise SystemExit(f"{backend} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT"):]))
        row = rows[-1]
        print(f"{backend:>10}: first step {row['first_step_s']:6.1f} s, {row['steady_steps_per_s']:.2f} steps/s, "
              f"~{row['demo_steps']} steps in the demo's 8 minutes", flush=True)
    best = max(row["steady_steps_per_s"] for row in rows)
    for row in rows:
        row["vs_fastest"] = round(row["steady_steps_per_s"] / best, 3)
    append_rows(RESULTS, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
