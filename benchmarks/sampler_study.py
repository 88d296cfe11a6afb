"""Sampler study: conditional accuracy and Frechet distance of one trained model across samplers and steps.

The analogue of the DDIM paper's eta x steps table (Song et al. 2021, Table 1;
reference notes section 5.2) on MovingMNIST text-to-video: DDIM with
eta in {0, 0.5, 1} and DDPM ancestral sampling across 10 / 20 / 50 / 100 / 250
steps, plus DPM-Solver++(2M), Euler and Heun, all with the same prompts,
seeds and guidance.

    KERAS_BACKEND=jax python benchmarks/sampler_study.py --preset latte_tiny_moving_mnist

Writes ``benchmarks/results/sampler_study.json`` and ``.md``.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def configurations(step_counts):
    for steps in step_counts:
        for eta in (0.0, 0.5, 1.0):
            yield ("ddim", steps, dict(eta=eta))
        yield ("ddpm", steps, {})
    for steps in [s for s in step_counts if s <= 50]:
        yield ("dpmpp_2m", steps, {})
        yield ("euler", steps, {})
        yield ("heun", steps, {})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="latte_tiny_moving_mnist", help="pipeline preset name or directory")
    parser.add_argument("--steps", default="10,20,50,100,250", help="comma-separated step counts")
    parser.add_argument("--samples-per-caption", type=int, default=1, help="videos per caption (30 captions)")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "sampler_study.json"))
    args = parser.parse_args(argv)
    step_counts = [int(s) for s in args.steps.split(",") if s.strip()]
    if not step_counts or min(step_counts) < 1:
        parser.error("--steps must list positive integers")

    import keras

    from keras_vdiff import atomic_files, training
    from keras_vdiff.data.moving_mnist import moving_mnist
    from keras_vdiff.video_diffusion import VideoDiffusion

    model = VideoDiffusion.from_preset(args.preset)
    frames, size = model.backbone.latent_shape[0], model.backbone.latent_shape[1]
    real = moving_mnist(300, frame_size=size, num_frames=frames, seed=12345, split="test")["videos"]
    rows = []
    for sampler, steps, options in configurations(step_counts):
        start = time.perf_counter()
        scores = training.evaluate_moving_mnist(model, samples_per_caption=args.samples_per_caption, sampler=sampler,
                                                steps=steps, guidance_scale=args.guidance, seed=args.seed,
                                                real_videos=real, progress=False, **options)
        accuracy = scores["conditional_accuracy"]
        row = dict(sampler=sampler, steps=steps, **options, accuracy=accuracy["overall"], digit=accuracy["digit"],
                   motion=accuracy["motion"], frechet=scores["frechet_distance"], motion_ratio=scores["motion_ratio"],
                   seconds=round(time.perf_counter() - start, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    atomic_files.write_json(args.output, dict(preset=args.preset, backend=keras.backend.backend(),
                                                 samples_per_caption=args.samples_per_caption,
                                                 guidance=args.guidance, rows=rows))
    lines = [
        f"Preset `{args.preset}`, backend {keras.backend.backend()}, {30 * args.samples_per_caption} videos per "
        f"row (every caption), guidance {args.guidance:g}, static thresholding, seed {args.seed}.",
        "",
        "| sampler | steps | cond. acc. | digit | motion | Frechet (clf) | motion ratio | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"ddim eta={r['eta']:g}" if r["sampler"] == "ddim" else r["sampler"]
        lines.append(f"| {name} | {r['steps']} | {100 * r['accuracy']:.1f}% | {100 * r['digit']:.1f}% | "
                     f"{100 * r['motion']:.1f}% | {r['frechet']:.2f} | {r['motion_ratio']:.2f} | {r['seconds']:.0f} |")
    table = "\n".join(lines) + "\n"
    atomic_files.write_text(os.path.splitext(args.output)[0] + ".md", table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
