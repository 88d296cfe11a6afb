"""One bfloat16 denoising step of a released-size transformer with random weights, on this machine's CPU.

``--model`` is a preset of the released transformer config (random initialisers):

- ``wan2_1_t2v_1_3b``: Wan2.1-T2V-1.3B (1,418,996,800 parameters) at ``--frames``
  video frames (17 -> 5 latent frames) of 480x832 (60x104x16 latents: 7,800
  video tokens), 512 UMT5-sized text tokens (4096 wide) — issue 21's check;
- ``cogvideox_2b``: CogVideoX-2b (1,693,783,872 parameters, as diffusers counts them) at 13 frames (4
  latent frames) of 480x720 (60x90x16 latents, 5,400 video + 226 text tokens)
  — issue 20's (``benchmarks/cogvideox_full_size.py`` runs this for its CPU mode).

The model is built in ``bfloat16`` at that latent size, then ONE forward of
``--batch`` rows (1: a step without guidance; 2 with it) runs on random latents
and text embeddings. Recorded: build time and peak RSS, the step's time, the
process' peak RSS, the output's finiteness. ``--eager`` calls the model
directly (on JAX each op is compiled alone: no whole-model program in memory);
otherwise JAX and TensorFlow run ``predict_on_batch`` (one compiled function,
its compile time included); PyTorch always runs eagerly.

    KERAS_BACKEND=jax python benchmarks/full_size_step.py --model wan2_1_t2v_1_3b --eager
    KERAS_BACKEND=jax python benchmarks/full_size_step.py --model cogvideox_2b --eager --output step.json
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# preset -> (model class name in kv.models, latent height, width, channels, text tokens, text width, VAE time stride)
MODELS = {
    "wan2_1_t2v_1_3b": ("Wan", 60, 104, 16, 512, 4096, 4),
    "cogvideox_2b": ("CogVideoX", 60, 90, 16, 226, 4096, 4),
}
DEFAULT_FRAMES = {"wan2_1_t2v_1_3b": 17, "cogvideox_2b": 13}


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def latent_frames(frames, stride):
    if frames < 1 or (frames - 1) % stride:
        raise SystemExit(f"error: --frames must be 1 + {stride}k (the VAE's temporal compression), got {frames}")
    return (frames - 1) // stride + 1


def full_size_step(model_name, frames, batch=1, eager=False):
    """Build ``model_name`` in bfloat16 for ``frames`` video frames and run one forward; the measurements."""
    import keras

    import keras_vdiff as kv

    class_name, height, width, channels, tokens, text_dim, stride = MODELS[model_name]
    latent_shape = (latent_frames(frames, stride), height, width, channels)
    start = time.perf_counter()
    model = getattr(kv.models, class_name).from_preset(model_name, input_shape=latent_shape, dtype="bfloat16")
    build_s = time.perf_counter() - start
    build_rss = peak_rss_gib()
    print(f"built {model.count_params():,} parameters in {build_s:.1f} s, peak RSS {build_rss:.2f} GiB", flush=True)
    rng = np.random.default_rng(0)
    inputs = dict(latents=rng.standard_normal((batch,) + latent_shape).astype("float32"),
                  timesteps=np.full((batch,), 500.0, "float32"),
                  text_embeddings=rng.standard_normal((batch, tokens, text_dim)).astype("float32"),
                  text_mask=np.ones((batch, tokens), "float32"),
                  pooled_text=np.zeros((batch, text_dim), "float32"))
    inputs = {key: value for key, value in inputs.items() if key in model.input}
    compiled = not eager and keras.backend.backend() != "torch"
    start = time.perf_counter()
    output = model.predict_on_batch(inputs) if compiled else keras.ops.convert_to_numpy(model(inputs))
    step_s = time.perf_counter() - start
    output = np.asarray(output, dtype="float32")
    return dict(mode="cpu_step", model=model_name, backend=keras.backend.backend(),
                parameters=int(model.count_params()), frames=frames, latent_shape=[batch, *latent_shape],
                text_tokens=tokens, batch=batch, compiled=compiled, build_s=round(build_s, 1),
                build_peak_rss_gib=round(build_rss, 2), step_s=round(step_s, 1), peak_rss_gib=round(peak_rss_gib(), 2),
                finite=bool(np.isfinite(output).all()), output_std=float(output.std()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--frames", type=int, default=None, help="video frames (Wan: 17, CogVideoX: 13)")
    parser.add_argument("--batch", type=int, default=1, help="rows of the forward (2: a guided step)")
    parser.add_argument("--eager", action="store_true", help="call the model instead of predict_on_batch")
    parser.add_argument("--output", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    report(full_size_step(args.model, args.frames or DEFAULT_FRAMES[args.model], args.batch, args.eager),
           args.output)
    return 0


def report(result, output=None):
    """Print a result dict as JSON and, when ``output`` is given, also write it there."""
    print(json.dumps(result, indent=2))
    if output:
        with open(output, "w") as file:
            json.dump(result, file, indent=2)


if __name__ == "__main__":
    sys.exit(main())
