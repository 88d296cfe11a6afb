"""Peak memory of a CogVideoX VAE decode at the released size (random weights), and how it scales.

``kv.autoencoders.CogVideoXVAE`` at ``THUDM/CogVideoX-2b``'s VAE config (215.6M
parameters, float32) decodes random latents ``(1, L, h, w, 16)``; each
measurement runs in a fresh process (the backend's allocator keeps what it
freed) and reports its resident memory after building the model and its peak
(``ru_maxrss``) after the decode. Decoding goes in diffusers' frame batches (2
latent frames, 8-9 video frames each) with the causal context handed on, so the
activations depend on the batch, not on ``L``; they grow with ``h x w``. The
script fits ``peak - model = a + b * pixels`` over the grid and extrapolates to
a 480 x 720 frame and to a 240 x 360 tile (``use_tiling``, diffusers'
``enable_tiling`` default), the two ways a 49-frame 480 x 720 decode runs.

    python benchmarks/cogvideox_vae_memory.py                       # the grid, torch backend
    python benchmarks/cogvideox_vae_memory.py --one 3 8 12          # one decode (what the grid runs)
    KERAS_BACKEND=jax python benchmarks/cogvideox_vae_memory.py --grid 3x8x12 5x8x12

Results: ``benchmarks/RESULTS.md``, section "CogVideoX VAE decode memory".
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

GIB = 1024 ** 3


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one(latent_frames, height, width, dtype):
    """Build the released VAE, decode ``(1, latent_frames, height, width, 16)``; a JSON line of measurements."""
    import numpy as np
    import keras

    from keras_vdiff.autoencoders import CogVideoXVAE

    start = time.time()
    vae = CogVideoXVAE(dtype=dtype)  # THUDM/CogVideoX-2b's VAE: the class defaults
    vae.trainable = False
    built = time.time() - start
    model_rss = rss_bytes()
    z = np.random.default_rng(0).normal(size=(1, latent_frames, height, width, 16)).astype("float32")
    start = time.time()
    video = keras.ops.convert_to_numpy(vae.decode(z))
    seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(backend=keras.backend.backend(), dtype=dtype, parameters=int(vae.count_params()),
                latent_shape=list(z.shape), video_shape=list(video.shape), finite=bool(np.isfinite(video).all()),
                build_seconds=round(built, 1), decode_seconds=round(seconds, 1), model_rss_gib=model_rss / GIB,
                peak_rss_gib=peak / GIB, activations_gib=(peak - model_rss) / GIB)


def run_grid(cases, dtype):
    rows = []
    for frames, height, width in cases:
        command = [sys.executable, os.path.abspath(__file__), "--one", str(frames), str(height), str(width),
                   "--dtype", dtype]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def extrapolate(rows):
    """Least-squares ``activations = a + b * pixels`` (pixels of a decoded frame) and its 240x360 / 480x720 values,
    over the decodes with as many latent frames as the first (the others show the frame count's effect)."""
    import numpy as np

    rows = [r for r in rows if r["latent_shape"][1] == rows[0]["latent_shape"][1]]
    pixels = np.array([64.0 * r["latent_shape"][2] * r["latent_shape"][3] for r in rows])
    memory = np.array([r["activations_gib"] for r in rows])
    b, a = np.polyfit(pixels, memory, 1)
    return dict(intercept_gib=a, gib_per_megapixel=b * 1e6,
                tile_240x360_gib=a + b * 240 * 360, frame_480x720_gib=a + b * 480 * 720)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=3, type=int, metavar=("L", "H", "W"), help="one decode (latent sizes)")
    parser.add_argument("--grid", nargs="+", default=["3x8x12", "5x8x12", "3x12x18", "3x16x24"],
                        help="latent frames x height x width of each decode")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.dtype)))
        return
    rows = run_grid([tuple(int(v) for v in case.split("x")) for case in args.grid], args.dtype)
    print(json.dumps(extrapolate(rows)))


if __name__ == "__main__":
    main()
