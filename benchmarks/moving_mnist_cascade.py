"""Train, export and score the MovingMNIST cascade: ``latte_tiny_moving_mnist`` (16x16x10) -> a 16 -> 32 SSR stage.

    # train the SSR stage on 16x16x4 crops of 32x32 MovingMNIST (checkpoint every epoch), export it at 32x32x10
    KERAS_BACKEND=jax python benchmarks/moving_mnist_cascade.py train --output-dir runs/ssr --minutes 40
    # export a checkpoint as the 32x32x10 preset (what `train` does at its end)
    python benchmarks/moving_mnist_cascade.py export --checkpoint runs/ssr/checkpoint --output runs/ssr/pipeline
    # the cascade's 32x32 samples vs the base's samples upsampled bicubically (the classifier at 32x32)
    KERAS_BACKEND=jax python benchmarks/moving_mnist_cascade.py evaluate --ssr runs/ssr/pipeline --output eval.json

The training data: ``kv.data.moving_mnist`` at 32x32 (the low-resolution input is its 2x2 area
downsampling, done by the task); the stage is fully convolutional, so it trains on crops and
samples whole videos (``keras_vdiff.training.moving_mnist_cascade``).
"""

import argparse
import json
import os
import sys
import time

import keras_vdiff as kv
from keras_vdiff.atomic_files import write_json
from keras_vdiff.training.moving_mnist_cascade import (
    SSR_MOVING_MNIST,
    evaluate_cascade,
    moving_mnist_super_resolution,
    random_crops,
    with_frame_shape,
)


def export(checkpoint, output):
    model = kv.VideoDiffusion.from_preset(checkpoint)
    full = with_frame_shape(model, SSR_MOVING_MNIST["frame_size"], SSR_MOVING_MNIST["num_frames"])
    full.save_to_preset(output, include_optimizer=False)
    return full


def train(args):
    data = kv.data.moving_mnist(args.num_videos, frame_size=SSR_MOVING_MNIST["frame_size"],
                                num_frames=SSR_MOVING_MNIST["num_frames"], seed=args.seed)
    crops = random_crops(data, args.crop, args.crop_frames, seed=args.seed)
    model = moving_mnist_super_resolution(frame_size=args.crop, num_frames=args.crop_frames, seed=args.seed)
    print(f"SSR stage: {model.backbone.count_params():,} parameters, crops {crops['videos'].shape}", flush=True)
    start = time.time()
    result = kv.training.train(model, {"videos": crops["videos"], "captions": crops["captions"]},
                               max_seconds=args.minutes * 60, batch_size=args.batch_size,
                               learning_rate=args.learning_rate, ema_momentum=args.ema, seed=args.seed,
                               checkpoint_dir=os.path.join(args.output_dir, "checkpoint"))
    print(f"trained {result['steps']} steps in {(time.time() - start) / 60:.1f} min, stopped by "
          f"{result['stopped_by']}", flush=True)
    export(os.path.join(args.output_dir, "checkpoint"), os.path.join(args.output_dir, "pipeline"))
    write_json(os.path.join(args.output_dir, "training.json"), dict(
        command="KERAS_BACKEND=" + os.environ.get("KERAS_BACKEND", "jax") + " python "
                + " ".join(sys.argv),
        steps=result["steps"], minutes=round((time.time() - start) / 60, 1), batch_size=args.batch_size,
        learning_rate=args.learning_rate, ema_momentum=args.ema, crops=list(crops["videos"].shape),
        final_loss_mean_100=float(sum(result["losses"][-100:]) / max(1, len(result["losses"][-100:]))),
    ))


def evaluate(args):
    base = kv.VideoDiffusion.from_preset(args.base)
    ssr = kv.VideoDiffusion.from_preset(args.ssr)
    cascade = kv.Cascade([base, ssr])
    result = evaluate_cascade(
        cascade, samples_per_caption=args.samples_per_caption, seed=args.seed, batch_size=args.batch_size,
        base_options=dict(sampler="ddim", steps=args.base_steps, guidance_scale=args.guidance),
        stage_options=[dict(sampler=args.ssr_sampler, steps=args.ssr_steps, aug_level=args.aug_level,
                            guidance_scale=args.ssr_guidance)])
    summary = {name: {key: result[name][key] for key in ("overall", "digit", "motion") if key in result[name]}
               for name in ("cascade", "bicubic", "base")}
    summary.update(seconds_per_video=result["seconds_per_video"], num_videos=result["num_videos"],
                   settings=vars(args))
    print(json.dumps(summary, indent=2, default=str), flush=True)
    if args.output:
        write_json(args.output, summary)
    if args.sheet:
        kv.training.contact_sheet(result["videos"][:30:3], args.sheet)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--minutes", type=float, default=40.0)
    t.add_argument("--num-videos", type=int, default=3200)
    t.add_argument("--crop", type=int, default=16)
    t.add_argument("--crop-frames", type=int, default=4)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--ema", type=float, default=0.99)
    t.add_argument("--seed", type=int, default=0)
    x = commands.add_parser("export")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--output", required=True)
    e = commands.add_parser("evaluate")
    e.add_argument("--base", default="latte_tiny_moving_mnist")
    e.add_argument("--ssr", required=True)
    e.add_argument("--samples-per-caption", type=int, default=4)
    e.add_argument("--base-steps", type=int, default=50)
    e.add_argument("--guidance", type=float, default=3.0)
    e.add_argument("--ssr-steps", type=int, default=25)
    e.add_argument("--ssr-sampler", default="ddim")
    e.add_argument("--ssr-guidance", type=float, default=1.0)
    e.add_argument("--aug-level", type=float, default=0.1)
    e.add_argument("--batch-size", type=int, default=30)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--output")
    e.add_argument("--sheet")
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args)
    elif args.command == "export":
        export(args.checkpoint, args.output)
    else:
        evaluate(args)


if __name__ == "__main__":
    main()
