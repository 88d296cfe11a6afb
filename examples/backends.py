"""The same code on TensorFlow, JAX and PyTorch: pick the backend with KERAS_BACKEND before importing Keras.

    KERAS_BACKEND=jax python examples/backends.py
    KERAS_BACKEND=tensorflow python examples/backends.py
    KERAS_BACKEND=torch python examples/backends.py

Weights saved on one backend load on another; this script saves a DiT's weights on the first run
and, on later runs (any backend), loads them and checks the output is the same to float32 precision.
"""

import argparse
import os

import keras
import numpy as np

import keras_vdiff as kv


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="dit_tiny_shared.weights.h5")
    args = parser.parse_args(argv)
    backbone = kv.models.DiT.from_preset("dit_tiny")
    rng = np.random.default_rng(0)
    inputs = {"latents": rng.standard_normal((2, 16, 16, 3)).astype("float32"),
              "timesteps": np.array([10.0, 500.0], "float32"), "class_labels": np.array([1, 3])}
    if os.path.exists(args.weights):
        backbone.load_weights(args.weights)
        reference = np.load(args.weights + ".output.npy")
        output = keras.ops.convert_to_numpy(backbone(inputs))
        print(f"{keras.backend.backend()}: max difference to the saved output {np.abs(output - reference).max():.2e}")
    else:
        keras.utils.set_random_seed(0)
        backbone.set_weights([0.1 * rng.standard_normal(w.shape).astype("float32") for w in backbone.get_weights()])
        backbone.save_weights(args.weights)
        np.save(args.weights + ".output.npy", keras.ops.convert_to_numpy(backbone(inputs)))
        print(f"{keras.backend.backend()}: saved {args.weights}; run again with another KERAS_BACKEND")


if __name__ == "__main__":
    main()
