"""The JAX gradient against depth, with and without the gradient boundary between blocks.

Times the jitted forward and the jitted gradient (``stateless_call``, mean-square
loss) of ``kv.models.DiT`` (16x16x4 latents, patch 2, width 128, 4 heads, batch
32, the shapes of issue 23) at several depths, with the gradient boundary of
``keras_vdiff/layers/gradient_boundary.py`` off (the old behaviour) and on. For
each it also prints what the compiler built: the compiled gradient's HLO line
count and ``cost_analysis()`` bytes accessed and flops, which are deterministic
(the timings are not on a shared CPU). Forward and gradients of both modes are
timed in alternation, round after round, and the medians are reported, so load
from other processes hits both modes alike.

``--fit`` times ``fit`` steps of the demo's model instead
(``kv.training.moving_mnist_text_to_video()``, Latte, batch 32) on the current
backend, boundary off and on (on TensorFlow and PyTorch both are the same code).

    KERAS_BACKEND=jax python benchmarks/jax_gradient_depth.py [--layers 1,2,4,8] [--rounds 5]
    KERAS_BACKEND=jax python benchmarks/jax_gradient_depth.py --layers 28 --modes on
    KERAS_BACKEND=tensorflow python benchmarks/jax_gradient_depth.py --fit [--steps 12]

Results: ``benchmarks/RESULTS.md``, "JAX gradient and depth".
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_vdiff as kv  # noqa: E402
from keras_vdiff.layers.gradient_boundary import gradient_boundaries  # noqa: E402

BATCH = 32


def dit_inputs(batch=BATCH):
    rng = np.random.default_rng(0)
    return {"latents": rng.standard_normal((batch, 16, 16, 4)).astype("float32"),
            "timesteps": np.arange(batch).astype("float32"), "class_labels": np.arange(batch) % 10}


def build_dit(depth):
    keras.utils.set_random_seed(depth)
    return kv.models.DiT(image_size=16, in_channels=4, patch_size=2, hidden_dim=128, num_layers=depth,
                         num_heads=4, num_classes=10, learn_sigma=False)


def compiled_functions(model, inputs, mode):
    """Jitted forward and gradient of ``model`` traced with the boundary ``mode``, with their HLO statistics."""
    import jax

    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def forward(trainable, frozen, inputs):
        return model.stateless_call(trainable, frozen, inputs)[0]

    def loss(trainable, frozen, inputs):
        return jax.numpy.mean(forward(trainable, frozen, inputs) ** 2)

    functions, stats = {}, {}
    with gradient_boundaries(mode):
        for name, fn in (("forward", forward), ("gradient", jax.grad(loss))):
            start = time.perf_counter()
            compiled = jax.jit(fn).lower(trainable, frozen, inputs).compile()
            cost = compiled.cost_analysis()
            cost = cost[0] if isinstance(cost, (list, tuple)) else cost
            stats[name] = dict(compile_s=time.perf_counter() - start, hlo_lines=len(compiled.as_text().splitlines()),
                               bytes=cost.get("bytes accessed", float("nan")), flops=cost.get("flops", float("nan")))
            functions[name] = (lambda c: lambda: jax.block_until_ready(c(trainable, frozen, inputs)))(compiled)
    return functions, stats


def depth_benchmark(depths, modes, rounds):
    inputs = dit_inputs()
    print(f"DiT 16x16x4, patch 2, width 128, 4 heads, batch {BATCH}; medians of {rounds} alternating rounds")
    print("layers  boundary  forward ms  gradient ms  ratio   HLO lines  GB accessed  GFLOP   compile s")
    for depth in depths:
        model = build_dit(depth)
        runs = {}
        for mode in modes:
            functions, stats = compiled_functions(model, inputs, mode)
            for fn in functions.values():
                fn()  # warm-up
            runs[mode] = (functions, stats, {"forward": [], "gradient": []})
        for _ in range(rounds):
            for functions, _, times in runs.values():
                for name, fn in functions.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append((time.perf_counter() - start) * 1e3)
        for mode, (_, stats, times) in runs.items():
            f, g = np.median(times["forward"]), np.median(times["gradient"])
            s = stats["gradient"]
            print(f"{depth:6d}  {mode:8s}  {f:10.1f}  {g:11.1f}  {g / f:5.1f}x  {s['hlo_lines']:9d}  "
                  f"{s['bytes'] / 1e9:11.2f}  {s['flops'] / 1e9:6.1f}  {s['compile_s']:9.1f}", flush=True)


def fit_benchmark(modes, steps):
    """Median seconds per ``fit`` step (after the first, which compiles) of the demo's model, batch 32."""
    from keras_vdiff import training

    print(f"backend {keras.backend.backend()}: fit steps of moving_mnist_text_to_video(), batch {BATCH}, "
          f"median of steps 2..{steps}")
    for mode in modes:
        with gradient_boundaries(mode):
            keras.utils.set_random_seed(0)
            model = training.moving_mnist_text_to_video()
            data = training.moving_mnist_training_data(model, BATCH * steps, digits_source="sklearn")
            result = training.train(model, data, steps=steps, batch_size=BATCH, verbose=0)
        step_seconds = np.diff([0.0] + list(result["seconds"]))
        print(f"  boundary {mode:4s}: first step {step_seconds[0]:.1f} s, then {np.median(step_seconds[1:]):.3f} s "
              f"per step ({1 / np.median(step_seconds[1:]):.1f} steps/s)", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="1,2,4,8", help="comma-separated depths")
    parser.add_argument("--modes", default="off,on", help="gradient-boundary modes to compare (off, on, auto)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per depth (medians reported)")
    parser.add_argument("--fit", action="store_true", help="time fit steps of the demo's model instead")
    parser.add_argument("--steps", type=int, default=12, help="fit steps per mode with --fit")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if args.fit:
        fit_benchmark(modes, args.steps)
        return
    if keras.backend.backend() != "jax":
        raise SystemExit("The depth benchmark needs KERAS_BACKEND=jax (use --fit on other backends).")
    depth_benchmark([int(v) for v in args.layers.split(",")], modes, args.rounds)


if __name__ == "__main__":
    main()
