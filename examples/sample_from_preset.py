"""Sample text-to-video MovingMNIST from the shipped trained preset (no training needed).

    python examples/sample_from_preset.py --prompt "The digit 4 is moving to and fro" --output-dir samples

The same with the CLI: `keras-vdiff sample --preset latte_tiny_moving_mnist --prompt "..."`.
A directory written by `keras-vdiff train` (its `pipeline/` folder) works as `--preset` too.
"""

import argparse

import keras_vdiff as kv
from keras_vdiff import training


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="latte_tiny_moving_mnist")
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--sampler", default="ddpm")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--output-dir", default="samples")
    parser.add_argument("--smoke", action="store_true", help="4 sampler steps (for tests)")
    args = parser.parse_args(argv)
    prompts = args.prompt or ["The digit 3 is moving up and down", "The digit 8 is moving left and right"]
    model = kv.VideoDiffusion.from_preset(args.preset)
    videos = model.generate(prompts=prompts, steps=4 if args.smoke else args.steps, sampler=args.sampler,
                            guidance_scale=args.guidance, seed=0, thresholding="static")
    paths = training.write_samples(videos, [training.slug(p) for p in prompts], args.output_dir)
    paths.append(training.contact_sheet(videos, f"{args.output_dir}/contact_sheet.png", scale=4, labels=prompts))
    print("\n".join(paths))
    return paths


if __name__ == "__main__":
    main()
