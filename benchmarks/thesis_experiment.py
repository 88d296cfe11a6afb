"""The thesis' MovingMNIST text-to-video comparison (its Table 4.4), reproduced with an equal budget.

Every model of the thesis (GenTron, Latte with the text cross-attention in
placements v1 / v2 / v3, SnapVideo-FiT v1 / v2) plus RIN and a full-3D video
DiT is built at a tiny width for 10 frames of 16x16 MovingMNIST, trained
with the same data, optimizer, batch size, learning rate and number of steps
(or the same wall-clock budget), sampled with the same sampler, and scored
with the project's metrics: conditional accuracy (the shipped MovingMNIST
classifier recognises digit and motion), Frechet distance on the
classifier's features, the motion ratio (frame-to-frame change of the
samples over that of real videos; the thesis' SnapVideo produced static
videos), training time and sampling throughput.

    KERAS_BACKEND=jax python benchmarks/thesis_experiment.py --steps 1500
    KERAS_BACKEND=jax python benchmarks/thesis_experiment.py --models latte_v1,snapvideo_v1 --minutes 5

Writes ``benchmarks/results/thesis_experiment.json`` and ``.md``. The same
command scales to the thesis' widths on a GPU with ``--scale thesis`` (the
presets ``latte_thesis``, ``gentron_thesis``, ``snapvideo_thesis``).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MODELS = ("gentron", "latte_v1", "latte_v2", "latte_v3", "snapvideo_v1", "snapvideo_v2", "rin", "video_dit")


def build_backbone(name, input_shape, text_dim, width=96, fit_groups=4, fit_latents_per_group=8,
                   latent_patch_dim=None, latent_blocks=2, latent_layers=2, rin_conv_kernel=0,
                   rin_locality=False):
    """A tiny text-conditional backbone of family ``name`` for ``input_shape`` (F, H, W, C).

    ``fit_groups`` and ``fit_latents_per_group`` set SnapVideo-FiT's grouping (the ablations of issue 5).
    ``latent_patch_dim`` (default ``width // 2``), ``latent_blocks`` and ``latent_layers`` set the patch-stream
    width, the read / process / write blocks and the latent self-attention layers per block of SnapVideo
    and RIN; ``rin_conv_kernel`` RIN's depthwise convolution of the interface (0: off), ``rin_locality`` its
    soft locality prior on reads and writes.
    """
    from keras_vdiff.models.gentron import GenTron
    from keras_vdiff.models.latte import Latte
    from keras_vdiff.models.video_dit import VideoDiT

    common = dict(input_shape=input_shape, conditioning="text", text_dim=text_dim, learn_sigma=False)
    latent = dict(patch_dim=latent_patch_dim or width // 2, latent_dim=width, num_blocks=latent_blocks,
                  num_latent_layers=latent_layers, num_heads=4, patch_num_heads=4)
    if name == "gentron":
        # One GenTron block holds spatial and temporal attention: 2 blocks ~ 4 Latte v1 blocks.
        return GenTron(patch_size=4, hidden_dim=width, num_layers=2, num_heads=4, **common)
    if name.startswith("latte_v"):
        return Latte(patch_size=4, hidden_dim=width, num_layers=4, num_heads=4, variant=1,
                     text_placement=name.split("_")[1], **common)
    if name.startswith("snapvideo_v"):
        from keras_vdiff.models.snapvideo import SnapVideo

        return SnapVideo(patch_size=4, num_groups=fit_groups, latents_per_group=fit_latents_per_group, **latent,
                         adaln=name.endswith("v2"), num_registers=4, text_layers=2, **common)
    if name == "rin":
        from keras_vdiff.models.rin import RIN

        return RIN(patch_size=4, tubelet_size=2, num_latents=32, interface_conv_kernel=rin_conv_kernel,
                   latent_locality=rin_locality, **latent, **common)
    if name == "video_dit":
        return VideoDiT(patch_size=4, hidden_dim=width, num_layers=2, num_heads=4, text_mode="cross", **common)
    raise ValueError(f"Unknown model {name!r}; valid: {', '.join(MODELS)}.")


def run_model(name, args, data, real_videos):
    import keras

    from keras_vdiff import training
    from keras_vdiff.diffusion.gaussian import GaussianDiffusion
    from keras_vdiff.text.small_text_encoder import SmallTextEncoder
    from keras_vdiff.video_diffusion import VideoDiffusion

    keras.utils.set_random_seed(args.seed)
    encoder = SmallTextEncoder.from_texts(training.all_captions(), **training.TINY_MOVING_MNIST["text_encoder"])
    backbone = build_backbone(name, (args.frames, args.size, args.size, 1), encoder.hidden_dim, args.width,
                              args.fit_groups, args.fit_latents_per_group, args.latent_patch_dim,
                              args.latent_blocks, args.latent_layers, args.rin_conv_kernel,
                              args.rin_locality)
    process = GaussianDiffusion(**dict(training.TINY_MOVING_MNIST["process"], learn_sigma=False))
    model = VideoDiffusion(backbone, process, text_encoder=encoder, seed=args.seed)
    print(f"\n=== {name}: {backbone.describe()}", flush=True)
    start = time.perf_counter()
    result = training.train(model, data, steps=args.steps, max_seconds=None if args.minutes is None else 60 * args.minutes,
                            batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed, verbose=2)
    train_seconds = time.perf_counter() - start
    scores = training.evaluate_moving_mnist(model, samples_per_caption=args.samples_per_caption, sampler=args.sampler,
                                            steps=args.sample_steps,
                                            guidance_scale=args.guidance, seed=args.seed + 1, real_videos=real_videos,
                                            progress=False)
    accuracy = scores["conditional_accuracy"]
    row = dict(
        model=name, parameters=int(backbone.count_params()), steps=result["steps"],
        train_seconds=round(train_seconds, 1), steps_per_second=round(result["steps_per_second"], 3),
        final_loss=float(np.mean(result["losses"][-50:])), accuracy=accuracy["overall"], digit=accuracy["digit"],
        motion=accuracy["motion"], frechet=scores["frechet_distance"], motion_ratio=scores["motion_ratio"],
        videos_per_second=1.0 / scores["seconds_per_video"],
    )
    print(json.dumps(row), flush=True)
    return row


def markdown(rows, args):
    models = {r["model"] for r in rows}
    has_fit = any(m.startswith("snapvideo") for m in models)
    has_rin = "rin" in models
    setup = [
        f"Backend {args.backend}; {args.frames} frames of {args.size}x{args.size}; batch {args.batch_size}, "
        f"AdamW {args.learning_rate:g}; budget: " + (f"{args.steps} steps" if args.steps else f"{args.minutes:g} min"),
        f"{args.sampler} {args.sample_steps} steps, guidance {args.guidance:g}, {30 * args.samples_per_caption} samples",
    ]
    if has_fit:
        setup.append(f"SnapVideo-FiT {args.fit_groups} groups x {args.fit_latents_per_group} latents")
    if has_fit or has_rin:
        setup.append(f"SnapVideo / RIN patch stream {args.latent_patch_dim or args.width // 2} wide, "
                     f"{args.latent_blocks} blocks x {args.latent_layers} latent layers")
        if has_rin and args.rin_conv_kernel:
            setup.append(f"RIN interface conv {args.rin_conv_kernel}x{args.rin_conv_kernel}x{args.rin_conv_kernel}")
        if has_rin and args.rin_locality:
            setup.append("RIN locality prior")
    lines = [
        "; ".join(setup) + ".",
        "",
        "| model | params | steps | train s | loss | cond. acc. | digit | motion | Frechet (clf) | motion ratio | videos/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e6:.2f}M | {r['steps']} | {r['train_seconds']:.0f} | "
            f"{r['final_loss']:.4f} | {100 * r['accuracy']:.1f}% | {100 * r['digit']:.1f}% | {100 * r['motion']:.1f}% | "
            f"{r['frechet']:.2f} | {r['motion_ratio']:.2f} | {r['videos_per_second']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget per model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=96, help="model width of the tiny configs")
    parser.add_argument("--size", type=int, default=16, help="frame size")
    parser.add_argument("--fit-groups", type=int, default=4, help="SnapVideo-FiT: spatial groups (thesis: 4 or 49)")
    parser.add_argument("--fit-latents-per-group", type=int, default=8, help="SnapVideo-FiT: latent tokens per group")
    parser.add_argument("--latent-patch-dim", type=int, default=None,
                        help="SnapVideo / RIN: width of the patch stream (default: half of --width)")
    parser.add_argument("--latent-blocks", type=int, default=2, help="SnapVideo / RIN: read-process-write blocks")
    parser.add_argument("--latent-layers", type=int, default=2,
                        help="SnapVideo / RIN: latent self-attention layers per block")
    parser.add_argument("--rin-conv-kernel", type=int, default=0,
                        help="RIN: kernel of the depthwise 3D convolution of the interface after each write (0: off)")
    parser.add_argument("--rin-locality", action="store_true",
                        help="RIN: soft locality prior on the read / write attention (LatentLocalityBias)")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--num-videos", type=int, default=6000)
    parser.add_argument("--samples-per-caption", type=int, default=2)
    parser.add_argument("--sampler", default="ddpm", help="sampler of the evaluation (see the sampler study)")
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results", "thesis_experiment.json"))
    args = parser.parse_args(argv)
    if args.steps is None and args.minutes is None:
        parser.error("give --steps or --minutes (the equal budget)")
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; valid: {', '.join(MODELS)}")

    import keras

    from keras_vdiff.data.moving_mnist import moving_mnist
    from keras_vdiff.atomic_files import write_json, write_text

    args.backend = keras.backend.backend()
    data = moving_mnist(args.num_videos, frame_size=args.size, num_frames=args.frames, seed=args.seed)
    real = moving_mnist(300, frame_size=args.size, num_frames=args.frames, seed=12345, split="test")["videos"]
    rows = [run_model(name, args, data, real) for name in names]
    write_json(args.output, dict(settings={k: v for k, v in vars(args).items()}, rows=rows))
    table = markdown(rows, args)
    write_text(os.path.splitext(args.output)[0] + ".md", table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
