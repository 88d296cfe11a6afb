"""Peak memory of Wan 2.1 VAE decodes of growing frame counts (random weights, the released config).

``kv.autoencoders.WanVAE()`` is ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``' VAE (base_dim 96,
z_dim 16, dim_mult [1, 2, 4, 4], num_res_blocks 2, temperal_downsample [False,
True, True]: 126.9M parameters, float32). Each measurement runs in a fresh
process (allocators keep what they freed), builds the model, decodes random
latents ``(1, L, h, w, 16)`` into ``1 + 4 (L - 1)`` frames of ``8h x 8w`` and
reports the resident memory after building (``model``), the highest resident
memory during the decode (``decode_peak``, read every 5 ms by a thread), the
process' peak (``ru_maxrss``, which may be the build's) and the decoded video's
own size. The decoder runs one latent frame at a time with Wan's feature cache
(two frames per causal convolution), so ``decode_peak - model - video`` (the
working memory) should not grow with ``L``.

    python benchmarks/wan_vae_memory.py                          # the grid: L = 2, 6, 11, 21 at 4 x 4 latents
    python benchmarks/wan_vae_memory.py --one 21 8 8             # one decode (what the grid runs)
    KERAS_BACKEND=jax python benchmarks/wan_vae_memory.py --frames 1 3 6 --size 8 8

Results: ``benchmarks/RESULTS.md``, section "Wan 2.1 VAE decode memory".
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

MIB = 1024 ** 2


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler(threading.Thread):
    """The highest resident memory seen while the ``with`` block runs (sampled every ``interval`` seconds)."""

    def __init__(self, interval=0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, resident_bytes(), threading.Event()

    def run(self):
        while not self._done.is_set():
            self.peak = max(self.peak, resident_bytes())
            time.sleep(self.interval)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self.join()
        self.peak = max(self.peak, resident_bytes())


def one(latent_frames, height, width, dtype):
    """Build the released VAE and decode ``(1, latent_frames, height, width, 16)``; a dict of measurements."""
    import keras
    import numpy as np

    from keras_vdiff.autoencoders import WanVAE

    start = time.time()
    vae = WanVAE(dtype=dtype)  # the class defaults are the released config
    vae.trainable = False
    build_seconds = time.time() - start
    model = resident_bytes()
    latents = np.random.default_rng(0).normal(size=(1, latent_frames, height, width, vae.z_dim)).astype("float32")
    start = time.time()
    with PeakSampler() as sampler:
        video = keras.ops.convert_to_numpy(vae.decode(latents))
    decode_seconds = time.time() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(
        backend=keras.backend.backend(), dtype=dtype, parameters=int(vae.count_params()),
        latent_shape=list(latents.shape), video_shape=list(video.shape), finite=bool(np.isfinite(video).all()),
        build_seconds=round(build_seconds, 1), decode_seconds=round(decode_seconds, 1),
        model_mib=round(model / MIB), decode_peak_mib=round(sampler.peak / MIB), maxrss_mib=round(peak / MIB),
        video_mib=round(video.nbytes / MIB, 1), working_mib=round((sampler.peak - model - video.nbytes) / MIB),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--one", nargs=3, type=int, metavar=("L", "H", "W"), help="one decode (latent sizes)")
    parser.add_argument("--frames", nargs="+", type=int, default=[2, 6, 11, 21], help="latent frame counts")
    parser.add_argument("--size", nargs=2, type=int, default=[4, 4], metavar=("H", "W"), help="latent height, width")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.dtype)))
        return
    for frames in args.frames:
        command = [sys.executable, os.path.abspath(__file__), "--one", str(frames), *map(str, args.size),
                   "--dtype", args.dtype]
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        print(result.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
