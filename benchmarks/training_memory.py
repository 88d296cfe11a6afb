"""Peak training memory and step time of the memory levers: float32, mixed bfloat16, + remat, LoRA.

One ``fit`` step (``train_on_batch``, AdamW) of a mid-size class-conditional
Latte (12 layers, width 384, 6 heads; 16 frames of 32x32x3, patch 2: 4,096
tokens; batch 4), in variants built with the same seed:

- ``float32``: the default;
- ``bf16``: ``dtype="mixed_bfloat16"`` (float32 weights, bfloat16 compute);
- ``bf16+remat``: also ``remat=True`` (every block recomputed in the backward pass); ``remat``: float32 with it;
- ``lora``: float32, ``backbone.enable_lora(8)`` (only the low-rank pairs train,
  so AdamW keeps moments for those alone).

Memory, JAX: from the compiled train step itself (``jit(train_step).lower(...)
.compile().memory_analysis()``): arguments (weights, optimizer state, batch),
temporaries (activations kept for the backward pass and workspace), their sum
the training memory; deterministic, whatever else runs on the machine. TensorFlow and
PyTorch: the peak resident memory of a fresh process per variant
(``ru_maxrss``) and, as the training memory, that minus the RSS after
building the model (what training adds). Step time: median of ``--steps`` steps after
the first (compile); on a shared CPU only the ratios within one run mean much.

    KERAS_BACKEND=jax python benchmarks/training_memory.py [--size mid|small] [--steps 3]
    KERAS_BACKEND=torch python benchmarks/training_memory.py --size small
    KERAS_BACKEND=jax python benchmarks/training_memory.py --size wan_1_3b --variants lora+bfloat16+remat --steps 0

``lora+bf16+remat`` combines the three; ``lora+bfloat16+remat`` keeps the frozen weights (and the
pairs) in bfloat16 instead of float32, as one fine-tunes a large model; ``--size wan_1_3b`` is Wan2.1-T2V-1.3B's released
config (random weights) on 5 frames of 240x416 with 512 text tokens, the fine-tuning step
a user of the converted model runs (``--steps 0``: the first step only, compile included).

Results: ``benchmarks/RESULTS.md``, "Training memory: bfloat16, remat, LoRA".
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = ("float32", "bf16", "bf16+remat", "remat", "lora", "lora+bf16+remat", "lora+bfloat16+remat")
SIZES = {  # Latte config, input videos (frames, height, width, channels), batch
    "mid": (dict(hidden_dim=384, num_layers=12, num_heads=6, patch_size=2), (16, 32, 32, 3), 4),
    "small": (dict(hidden_dim=128, num_layers=4, num_heads=4, patch_size=2), (8, 16, 16, 3), 4),
    # Wan2.1-T2V-1.3B's released config (random weights) on the latents of 5 frames of 240x416 (2 x 30 x 52 x 16:
    # 780 tokens), 512 UMT5-sized text tokens (4096 wide): the LoRA fine-tuning step of issue 22.
    "wan_1_3b": ("wan2_1_t2v_1_3b", (2, 30, 52, 16), 1),
}
WAN_TEXT = (512, 4096)
LORA_RANK = 8


def rss_gib():
    """This process' current resident memory (Linux ``/proc``), GiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


def run_variant(variant, size, steps):
    import keras
    import numpy as np

    import keras_vdiff as kv

    config, video_shape, batch = SIZES[size]
    keras.utils.set_random_seed(0)
    dtype = "mixed_bfloat16" if "bf16" in variant else ("bfloat16" if "bfloat16" in variant else None)
    options = dict(dtype=dtype, remat="remat" in variant)
    rng = np.random.default_rng(0)
    data = {"videos": rng.integers(0, 255, (batch,) + video_shape).astype("uint8")}
    if isinstance(config, str):  # a released text-to-video config
        backbone = kv.models.Wan.from_preset(config, input_shape=video_shape, **options)
        data.update(text_embeddings=rng.standard_normal((batch,) + WAN_TEXT).astype("float32"),
                    text_mask=np.ones((batch, WAN_TEXT[0]), "float32"),
                    pooled_text=np.zeros((batch, WAN_TEXT[1]), "float32"))  # unused by Wan, asked by the batch
        process = kv.diffusion.FlowMatching()
    else:
        backbone = kv.models.Latte(input_shape=video_shape, num_classes=10, **config, **options)
        data["labels"] = np.arange(batch) % 10
        process = None
    if variant.startswith("lora"):
        backbone.enable_lora(LORA_RANK)
    print(f"built {backbone.count_params():,} parameters, RSS {rss_gib():.2f} GiB", file=sys.stderr, flush=True)
    model = kv.VideoDiffusion(backbone, process, seed=0)
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    built_rss = rss_gib()
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = float(model.train_on_batch(data))
        times.append(time.perf_counter() - start)
    if not np.isfinite(loss):
        raise FloatingPointError(f"{variant}: non-finite loss {loss}")
    result = dict(variant=variant, backend=keras.backend.backend(), size=size, loss=loss,
                  parameters=backbone.count_params(),
                  trainable=int(sum(np.prod(v.shape) for v in backbone.trainable_variables)),
                  first_step_s=times[0], step_s=float(np.median(times[1:])) if steps else None)
    if keras.backend.backend() == "jax":
        import jax

        state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                     optimizer_variables=True, metrics_variables=True)
        stats = jax.jit(model.train_step, donate_argnums=0).lower(state, (data, None, None)).compile()
        stats = stats.memory_analysis()
        result.update(arguments_gib=stats.argument_size_in_bytes / 2 ** 30,
                      temporaries_gib=stats.temp_size_in_bytes / 2 ** 30)
        result["memory_gib"] = result["arguments_gib"] + result["temporaries_gib"]
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
        result.update(peak_rss_gib=peak, memory_gib=peak - built_rss)
    return result


def timed(seconds, base=None):
    """A table cell: ``seconds`` (or its ratio to ``base``); a dash for a run without timed steps."""
    if seconds is None or (base is not None and not base):
        return "-"
    return f"{seconds / base:.2f}x" if base is not None else f"{seconds:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mid")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the first (default: 3)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a single variant, in this process
    args = parser.parse_args()
    if args.one:
        print("RESULT" + json.dumps(run_variant(args.one, args.size, args.steps)), flush=True)
        return
    rows = []
    for variant in args.variants.split(","):
        if variant not in VARIANTS:
            raise SystemExit(f"error: --variants: {variant!r} is not one of {VARIANTS}")
        print(f"{variant} ...", flush=True)
        done = subprocess.run([sys.executable, __file__, "--one", variant, "--size", args.size,
                               "--steps", str(args.steps)], capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
        if done.returncode or not lines:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT"):]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    jax_columns = "arguments_gib" in base
    extra = "| arguments GiB | temporaries GiB " if jax_columns else "| peak RSS GiB "
    print(f"\n| variant | trainable {extra}| training memory GiB | vs first | step s | vs first |")
    print("|---|---:|" + "---:|" * (2 if jax_columns else 1) + "---:|---:|---:|---:|")
    for row in rows:
        cells = (f"{row['arguments_gib']:.3f} | {row['temporaries_gib']:.3f}" if jax_columns
                 else f"{row['peak_rss_gib']:.2f}")
        print(f"| {row['variant']} | {row['trainable']:,} | {cells} | {row['memory_gib']:.3f} | "
              f"{row['memory_gib'] / base['memory_gib']:.2f}x | {timed(row['step_s'])} | "
              f"{timed(row['step_s'], base['step_s'])} |")


if __name__ == "__main__":
    main()
