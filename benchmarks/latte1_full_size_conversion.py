"""Full-size conversion check of Latte-1: a random-weight checkpoint with the released config through ``from_diffusers``.

The issue's requirement: a checkpoint with Latte-1's released transformer
config (``maxin-cn/Latte-1``, ``transformer/config.json``; 1,057,246,880
parameters) converts on a 2-core, 24 GB CPU, with peak memory and time
recorded, and one denoising step runs in bfloat16.

What one run does:

1. Writes the checkpoint: ``LatteTransformer3DModel(**config)`` is built on
   torch's *meta* device (names and shapes only, no memory), then each tensor
   is filled from one reused random block (sliced at a random offset, scaled
   per tensor: distinct, not identical, and cheap, so the disk write dominates)
   and written shard by shard with ``safetensors.numpy.save_file``, plus
   ``diffusion_pytorch_model.safetensors.index.json`` (``weight_map``) and
   ``config.json``. Float32 by default (``--file-dtype float16`` for a half
   file); at most one shard is in memory at a time.
2. Converts it with ``kv.convert.from_diffusers(folder)`` and with
   ``dtype="bfloat16"``, each in a fresh subprocess (so ``ru_maxrss`` is that
   conversion's own peak), on each backend of ``--backends``; records the
   model build time and peak, the whole conversion's time and peak RSS, the
   RSS the converted model holds afterwards, and the parameter count. A
   thread samples ``RssAnon`` / ``RssFile`` meanwhile: the pages of the
   memory-mapped shards count in ``ru_maxrss`` but are not a copy of the model.
3. In the bfloat16 conversion's process (and the float32 one with
   ``--step-float32``) runs ONE forward (denoising) step at the released size:
   batch 1, 16 frames of 64x64x4 latents, 120 text tokens x 4096 of random
   embeddings, mask ones; records its time, its peak RSS and that the output
   is finite. The step runs eagerly (no jit / tf.function: one step does not
   pay back a whole-model compile).
4. Prints a markdown table (and the JSON of each measurement).

On the project's 2-core CPU one conversion takes 1-1.5 minutes per backend and
dtype, but one full-size step is about 34 TFLOP, roughly 45-55 minutes there
(the 2-pair ``--quick`` step, at the same input size, took 200-250 s). So use
``--no-step`` for the conversions alone, and ``--quick --no-step`` for a smoke
run of under a minute (see benchmarks/RESULTS.md).

    python benchmarks/latte1_full_size_conversion.py --backends jax
    python benchmarks/latte1_full_size_conversion.py --backends jax --no-step   # conversions only
    python benchmarks/latte1_full_size_conversion.py --quick --no-step          # num_layers 2: a smoke run

The temporary checkpoint is deleted at the end unless ``--keep``; ``--workdir``
puts it somewhere else than the system's temp folder, ``--checkpoint`` reuses
a folder written before (it is then never deleted).
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# maxin-cn/Latte-1, transformer/config.json (diffusers' num_layers counts spatial + temporal pairs).
LATTE1_CONFIG = {
    "_class_name": "LatteTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 72,
    "caption_channels": 4096,
    "cross_attention_dim": 1152,
    "dropout": 0.0,
    "in_channels": 4,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_type": "ada_norm_single",
    "num_attention_heads": 16,
    "num_embeds_ada_norm": 1000,
    "num_layers": 28,
    "out_channels": 8,
    "patch_size": 2,
    "sample_size": 64,
    "video_length": 16,
}
QUICK_LAYERS = 2
TEXT_TOKENS = 120  # the pipeline's max_sequence_length
INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json"
BLOCK = 1 << 22  # elements of the reused random block (16 MiB in float32)
STD = 0.02


def rss_now_mb():
    """The current resident set of this process (``/proc/self/statm``), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def status_mb(field):
    """One ``/proc/self/status`` field (``RssAnon``, ``RssFile``, ...), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == field:
                return int(value.split()[0]) / 1024
    return float("nan")


def peak_rss_mb():
    """``ru_maxrss`` of this process (Linux: KiB), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """The largest ``RssAnon`` / ``RssFile`` / ``VmRSS`` of ``/proc/self/status``, sampled in a daemon thread.

    ``ru_maxrss`` counts file-backed pages too: the pages of a memory-mapped
    safetensors file that were read stay resident (and counted) while the file
    is open, though the kernel can drop them. The sampler tells the two apart.
    """

    FIELDS = ("RssAnon", "RssFile", "VmRSS")

    def __init__(self, interval=0.02):
        import threading

        self.interval = interval
        self.reset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self):
        self.max = dict.fromkeys(self.FIELDS, 0)

    def sample(self):
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in self.max:
                    self.max[key] = max(self.max[key], int(value.split()[0]))

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def peaks_mb(self):
        self.sample()
        return {key: value / 1024 for key, value in self.max.items()}


# === 1. Writing the checkpoint ===
def checkpoint_shapes(config):
    """``[(name, shape)]`` of a ``LatteTransformer3DModel`` state dict, built on the meta device (no memory)."""
    import torch
    from diffusers import LatteTransformer3DModel

    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = LatteTransformer3DModel(**kwargs)
    return [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]


class RandomTensors:
    """Distinct random tensors from one reused normal block: slices at random offsets, scaled per tensor."""

    def __init__(self, seed=0, dtype="float32"):
        import numpy as np

        self.np = np
        self.rng = np.random.default_rng(seed)
        self.block = self.rng.standard_normal(2 * BLOCK, dtype="float32")
        self.dtype = dtype

    def __call__(self, shape):
        np = self.np
        size = int(np.prod(shape))
        out = np.empty(size, dtype=self.dtype)
        scale = np.float32(STD * self.rng.uniform(0.5, 1.5))
        for start in range(0, size, BLOCK):
            n = min(BLOCK, size - start)
            offset = int(self.rng.integers(0, BLOCK))
            np.multiply(self.block[offset:offset + n], scale, out=out[start:start + n], casting="same_kind")
        return out.reshape(shape)


def write_checkpoint(folder, config, shard_bytes, file_dtype="float32", seed=0):
    """Write ``config.json``, safetensors shards of random tensors and their index into ``folder``.

    Returns ``{"write_s", "bytes", "shards", "tensors", "parameters", "write_peak_rss_mb"}``.
    """
    import numpy as np
    from safetensors.numpy import save_file

    start = time.perf_counter()
    shapes = checkpoint_shapes(config)
    itemsize = np.dtype(file_dtype).itemsize
    groups, group, group_bytes = [], [], 0
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * itemsize
        if group and group_bytes + nbytes > shard_bytes:
            groups.append(group)
            group, group_bytes = [], 0
        group.append((name, shape))
        group_bytes += nbytes
    groups.append(group)
    os.makedirs(folder, exist_ok=True)
    make = RandomTensors(seed, file_dtype)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        shard = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {name: make(shape) for name, shape in group}
        save_file(tensors, os.path.join(folder, shard), metadata={"format": "pt"})
        for name in tensors:
            weight_map[name] = shard
        total += sum(t.nbytes for t in tensors.values())
        del tensors
    with open(os.path.join(folder, INDEX_FILE), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({**config, "_diffusers_version": "0.30.0"}, f, indent=2, sort_keys=True)
    on_disk = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    return dict(write_s=time.perf_counter() - start, bytes=on_disk, shards=len(groups), tensors=len(shapes),
                parameters=int(sum(np.prod(s) for _, s in shapes)), write_peak_rss_mb=peak_rss_mb())


# === 2-3. One conversion (run in a child process) ===
def measure(folder, dtype, step, frames, size, text_tokens, text_dim):
    """Convert ``folder`` in this (fresh) process; optionally run one forward step. Returns the measurement."""
    start = time.perf_counter()
    import keras
    import numpy as np

    import keras_vdiff as kv
    import keras_vdiff.convert.latte as latte_converter

    result = dict(backend=keras.backend.backend(), dtype=dtype or "float32", import_s=time.perf_counter() - start,
                  import_rss_mb=rss_now_mb(), import_anon_mb=status_mb("RssAnon"))
    # Time the model build apart from the tensor-by-tensor assignment (the converter's own Latte, wrapped).
    latte_class = latte_converter.Latte

    def timed_latte(**config):
        begin = time.perf_counter()
        model = latte_class(**config)
        result.update(build_s=time.perf_counter() - begin, build_peak_rss_mb=peak_rss_mb(),
                      built_rss_mb=rss_now_mb())
        return model

    latte_converter.Latte = timed_latte
    sampler = RssSampler()
    begin = time.perf_counter()
    model = kv.convert.from_diffusers(folder, dtype=dtype)
    result["convert_s"] = time.perf_counter() - begin
    result["assign_s"] = result["convert_s"] - result["build_s"]
    result["convert_peak_rss_mb"] = peak_rss_mb()
    result["converted_rss_mb"] = rss_now_mb()
    result["converted_anon_mb"] = status_mb("RssAnon")
    try:  # what of the RSS left is freed memory glibc's malloc kept (returned by malloc_trim) rather than live data
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        result["trimmed_anon_mb"] = status_mb("RssAnon")
    except (OSError, AttributeError):
        pass
    peaks = sampler.peaks_mb()
    result.update(convert_max_anon_mb=peaks["RssAnon"], convert_max_file_mb=peaks["RssFile"],
                  convert_max_sampled_mb=peaks["VmRSS"])
    result["parameters"] = int(model.count_params())
    result["weights_mb"] = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights) / 2**20
    if step:
        rng = np.random.default_rng(0)
        inputs = {
            "latents": rng.standard_normal((1, frames, size, size, 4), dtype="float32"),
            "timesteps": np.array([500.0], "float32"),
            "text_embeddings": rng.standard_normal((1, text_tokens, text_dim), dtype="float32"),
            "text_mask": np.ones((1, text_tokens), "float32"),
            "pooled_text": np.zeros((1, text_dim), "float32"),
        }
        sampler.reset()
        begin = time.perf_counter()
        if os.environ.get("LATTE1_STEP_COMPILED"):  # --step-compiled: the jitted predict step (XLA / tf.function)
            output = np.asarray(model.predict_on_batch(inputs))
        else:
            output = keras.ops.convert_to_numpy(model(inputs, training=False))
        result["step_s"] = time.perf_counter() - begin
        result["step_output_shape"] = list(output.shape)
        result["step_output_dtype"] = str(output.dtype)
        output = output.astype("float32")
        result["step_finite"] = bool(np.isfinite(output).all())
        result["step_output_std"] = float(output.std())
        result["step_peak_rss_mb"] = peak_rss_mb()
        result["step_max_anon_mb"] = sampler.peaks_mb()["RssAnon"]
    return result


def run_child(folder, backend, dtype, step, config, timeout):
    """One measurement in a fresh interpreter with ``KERAS_BACKEND=backend``; its JSON, or the failure."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, os.path.abspath(__file__), "--child", folder, "--child-dtype", dtype,
               "--child-config", json.dumps(config)] + (["--child-step"] if step else [])
    begin = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(backend=backend, dtype=dtype, error=f"timed out after {timeout} s")
    wall = time.perf_counter() - begin
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return dict(backend=backend, dtype=dtype, error=f"exit {done.returncode}: " + " | ".join(tail))
    result = json.loads(lines[-1][len("RESULT "):])
    result["process_s"] = wall
    return result


# === 4. The table ===
def gib(mb):
    return f"{mb / 1024:.2f}"


def table(checkpoint, results):
    lines = [
        f"Checkpoint: {checkpoint['parameters']:,} parameters, {checkpoint['tensors']} tensors, "
        f"{checkpoint['file_dtype']}, {checkpoint['shards']} shards, {checkpoint['bytes'] / 2**30:.2f} GiB on disk, "
        f"written in {checkpoint['write_s']:.1f} s (writer peak RSS {gib(checkpoint['write_peak_rss_mb'])} GiB)."
        if checkpoint.get("write_s") is not None else f"Checkpoint: {checkpoint['bytes'] / 2**30:.2f} GiB (reused).",
        "",
        "| backend | dtype | weights GiB | import RSS GiB | build s | build peak GiB | convert s (build + assign) "
        "| convert peak RSS GiB | of which anon / file GiB | RSS after GiB | peak / weights | anon peak / weights "
        "| step s | step peak GiB | step finite |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['dtype']} | failed: {r['error']} |")
            continue
        over = (r["convert_peak_rss_mb"] - r["import_rss_mb"]) / r["weights_mb"]
        split = (f"{gib(r['convert_max_anon_mb'])} / {gib(r['convert_max_file_mb'])}"
                 if "convert_max_anon_mb" in r else "–")
        anon = (f"{(r['convert_max_anon_mb'] - r['import_anon_mb']) / r['weights_mb']:.2f}x"
                if "convert_max_anon_mb" in r else "–")
        step = (f"{r['step_s']:.1f} | {gib(r['step_peak_rss_mb'])} | {r['step_finite']}"
                if "step_s" in r else "– | – | –")
        lines.append(
            f"| {r['backend']} | {r['dtype']} | {gib(r['weights_mb'])} | {gib(r['import_rss_mb'])} "
            f"| {r['build_s']:.1f} | {gib(r['build_peak_rss_mb'])} "
            f"| {r['convert_s']:.1f} ({r['build_s']:.1f} + {r['assign_s']:.1f}) | {gib(r['convert_peak_rss_mb'])} "
            f"| {split} | {gib(r['converted_rss_mb'])} | {over:.2f}x | {anon} | {step} |"
        )
    lines.append("")
    lines.append("peak / weights: (conversion peak RSS - RSS after imports) / the converted weights' bytes; anon "
                 "peak / weights: the same with anonymous memory only (the largest sampled RssAnon minus RssAnon after "
                 "the imports; the file-backed pages of the memory-mapped shards and libraries left out).")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="jax,tensorflow,torch", help="comma-separated Keras backends")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="conversion dtypes, in order")
    parser.add_argument("--quick", action="store_true", help=f"num_layers {QUICK_LAYERS} (a smoke run)")
    parser.add_argument("--no-step", action="store_true", help="skip the bfloat16 forward step")
    parser.add_argument("--step-float32", action="store_true", help="also run the step after the float32 conversion")
    parser.add_argument("--step-compiled", action="store_true",
                        help="run the step compiled (predict_on_batch) instead of eagerly; its time includes the compile")
    parser.add_argument("--file-dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="shard size of the written checkpoint (GB)")
    parser.add_argument("--workdir", help="where the checkpoint folder is made (default: the system temp)")
    parser.add_argument("--checkpoint", help="reuse this checkpoint folder instead of writing one (never deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per measurement (subprocess)")
    # Internal: one measurement in a child process.
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-dtype", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step_compiled:
        os.environ["LATTE1_STEP_COMPILED"] = "1"  # read by the child processes (they inherit the environment)

    if args.child:
        config = json.loads(args.child_config)
        dtype = None if args.child_dtype == "float32" else args.child_dtype
        result = measure(args.child, dtype, args.child_step, config["video_length"], config["sample_size"],
                         TEXT_TOKENS, config["caption_channels"])
        print("RESULT " + json.dumps(result), flush=True)
        return

    config = dict(LATTE1_CONFIG, num_layers=QUICK_LAYERS if args.quick else LATTE1_CONFIG["num_layers"])
    created = None
    if args.checkpoint:
        folder = args.checkpoint
        checkpoint = dict(bytes=sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)))
        with open(os.path.join(folder, "config.json")) as f:
            config = {**json.load(f)}
    else:
        created = tempfile.mkdtemp(prefix="latte1_full_size_", dir=args.workdir)
        folder = os.path.join(created, "transformer")
        print(f"Writing the checkpoint ({'quick, ' if args.quick else ''}num_layers {config['num_layers']}, "
              f"{args.file_dtype}) to {folder} ...", flush=True)
        checkpoint = write_checkpoint(folder, config, int(args.shard_gb * 1e9), args.file_dtype)
        checkpoint["file_dtype"] = args.file_dtype
        print("CHECKPOINT " + json.dumps(checkpoint), flush=True)
    results = []
    try:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
                step = not args.no_step and (dtype == "bfloat16" or args.step_float32)
                print(f"Converting on {backend}, {dtype}{' + one step' if step else ''} ...", flush=True)
                result = run_child(folder, backend, dtype, step, config, args.timeout)
                print("RESULT " + json.dumps(result), flush=True)
                results.append(result)
    finally:
        if created and not args.keep:
            shutil.rmtree(created, ignore_errors=True)
        elif created:
            print(f"Kept the checkpoint in {folder}.")
    print()
    print(table(checkpoint, results))


if __name__ == "__main__":
    main()
