"""Evaluate a MovingMNIST text-to-video pipeline: conditional accuracy, Frechet distance, motion.

    python examples/evaluate.py --preset latte_tiny_moving_mnist --samples-per-caption 4

Same as `keras-vdiff evaluate`; this shows the Python API behind it.
"""

import argparse

import keras_vdiff as kv
from keras_vdiff import training


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="latte_tiny_moving_mnist")
    parser.add_argument("--samples-per-caption", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="1 video per caption, 4 steps (for tests)")
    args = parser.parse_args(argv)
    model = kv.VideoDiffusion.from_preset(args.preset)
    scores = training.evaluate_moving_mnist(model, samples_per_caption=1 if args.smoke else args.samples_per_caption,
                                            steps=4 if args.smoke else 50, sampler="ddpm", guidance_scale=3.0)
    accuracy = scores["conditional_accuracy"]
    print(f"conditional accuracy {100 * accuracy['overall']:.1f}% (digit {100 * accuracy['digit']:.1f}%, "
          f"motion {100 * accuracy['motion']:.1f}%), Frechet {scores['frechet_distance']:.2f}, "
          f"motion ratio {scores['motion_ratio']:.2f}")
    print(kv.metrics.conditional_accuracy_table(accuracy))
    return scores


if __name__ == "__main__":
    main()
