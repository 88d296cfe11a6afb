"""The main job behind ``make demo``: train a tiny text-to-video model on MovingMNIST (CPU) and sample it.

Steps, each printed as it runs:

1. generate MovingMNIST text-to-video data (16x16 frames, 10 frames, the
   thesis' captions "The digit 7 is moving left and right");
2. train the tiny Latte + word-level text encoder of
   ``keras_vdiff.training.TINY_MOVING_MNIST`` with ``model.fit`` for a
   wall-clock budget (default 8 minutes), with the recipe of
   ``keras_vdiff.training.DEMO_TRAINING`` (batch, learning rate, warm-up);
3. sample one video per motion (DDPM, classifier-free guidance) and write
   GIFs, a contact sheet and the loss curve under ``--output-dir``;
4. score 30 samples (one per caption) with the shipped MovingMNIST
   classifier: conditional accuracy (digit and motion right);
5. if the trained preset ``latte_tiny_moving_mnist`` ships with the package,
   sample and score it too, to show what a longer run reaches.

Run ``python -m keras_vdiff.demo --help`` for the options; any backend via
``KERAS_BACKEND`` (``make demo`` uses JAX, the fastest on its recipe: benchmarks/RESULTS.md).
"""

import argparse
import os
import sys
import time


def main(argv=None):
    from keras_vdiff.training.loop import LEARNING_RATE_SCHEDULES
    from keras_vdiff.training.moving_mnist import DEMO_TRAINING

    parser = argparse.ArgumentParser(description="Train a tiny text-to-video model on MovingMNIST and sample it.")
    parser.add_argument("--output-dir", default="outputs", help="where GIFs, plots and the model go")
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget in minutes (default: 8)")
    parser.add_argument("--num-videos", type=int, default=6000, help="generated training videos")
    recipe = DEMO_TRAINING
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=recipe["learning_rate"], help="AdamW, after warm-up")
    parser.add_argument("--warmup-steps", type=int, default=recipe["warmup_steps"])
    parser.add_argument("--lr-schedule", choices=LEARNING_RATE_SCHEDULES,
                        default=recipe["learning_rate_schedule"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-preset", action="store_true", help="do not sample the shipped trained preset")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error("--minutes must be positive")

    import keras
    import numpy as np

    from keras_vdiff import atomic_files, presets, training
    from keras_vdiff.data.moving_mnist import MOTIONS, caption
    from keras_vdiff.tasks import VideoDiffusion

    start = time.perf_counter()
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    print(f"[1/5] backend {keras.backend.backend()}; generating {args.num_videos} MovingMNIST videos ...", flush=True)
    model = training.moving_mnist_text_to_video(seed=args.seed)
    data = training.moving_mnist_training_data(model, args.num_videos, seed=args.seed)
    print(f"      {model.backbone.describe()}", flush=True)
    print(f"[2/5] training for {args.minutes:g} minutes with model.fit ...", flush=True)
    result = training.train(model, data, max_seconds=60 * args.minutes, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, checkpoint_dir=os.path.join(out, "pipeline"),
                            seed=args.seed, warmup_steps=args.warmup_steps, learning_rate_schedule=args.lr_schedule)
    loss_plot = training.plot_loss(result["losses"], os.path.join(out, "loss.png"),
                                   title=f"MovingMNIST text-to-video, {result['steps']} steps")
    atomic_files.write_json(os.path.join(out, "history.json"), {
        "backend": keras.backend.backend(), "steps": result["steps"], "steps_per_second": result["steps_per_second"],
        "losses": result["losses"]})
    print(f"      {result['steps']} steps at {result['steps_per_second']:.2f} steps/s; "
          f"loss {np.mean(result['losses'][:20]):.3f} -> {np.mean(result['losses'][-50:]):.3f}", flush=True)

    print("[3/5] sampling one video per motion (DDPM 50 steps, guidance 3) ...", flush=True)
    prompts = [caption(digit, motion) for digit, motion in zip((3, 7, 5), range(len(MOTIONS)))]
    videos = model.generate(prompts=prompts, seed=args.seed, **training.RECOMMENDED_SAMPLING)
    gifs = training.write_samples(videos, [training.slug(p) for p in prompts], os.path.join(out, "samples"))
    sheet = training.contact_sheet(videos, os.path.join(out, "samples", "contact_sheet.png"), scale=4,
                                   labels=prompts)

    print("[4/5] scoring 30 samples (one per caption) with the MovingMNIST classifier ...", flush=True)
    scores = training.evaluate_moving_mnist(model, samples_per_caption=1, seed=args.seed + 1, progress=False)
    accuracy = scores["conditional_accuracy"]
    lines = [f"demo model ({result['steps']} steps, {args.minutes:g} min): conditional accuracy "
             f"{100 * accuracy['overall']:.0f}% (digit {100 * accuracy['digit']:.0f}%, motion "
             f"{100 * accuracy['motion']:.0f}%, chance 3%), motion ratio {scores['motion_ratio']:.2f}"]

    preset = "latte_tiny_moving_mnist"
    if not args.skip_preset and preset in presets.list() and presets.get_preset(preset)["weights"]:
        print(f"[5/5] sampling the shipped trained preset {preset} ...", flush=True)
        trained = VideoDiffusion.from_preset(preset)
        preset_videos = trained.generate(prompts=prompts, seed=args.seed, **training.RECOMMENDED_SAMPLING)
        gifs += training.write_samples(preset_videos, [f"preset_{training.slug(p)}" for p in prompts],
                                       os.path.join(out, "samples"))
        gifs.append(training.contact_sheet(preset_videos, os.path.join(out, "samples", "contact_sheet_preset.png"),
                                           scale=4, labels=prompts))
        preset_scores = training.evaluate_moving_mnist(trained, samples_per_caption=1, seed=args.seed + 1,
                                                       progress=False)
        preset_accuracy = preset_scores["conditional_accuracy"]
        lines.append(f"shipped preset {preset}: conditional accuracy {100 * preset_accuracy['overall']:.0f}% "
                     f"(digit {100 * preset_accuracy['digit']:.0f}%, motion {100 * preset_accuracy['motion']:.0f}%)")
    else:
        print("[5/5] no shipped trained preset to compare with; skipped.", flush=True)

    print("\nResults")
    for line in lines:
        print("  " + line)
    print("Files")
    for path in gifs + [sheet, loss_plot, os.path.join(out, "pipeline")]:
        print("  " + os.path.relpath(path))
    print(f"Done in {(time.perf_counter() - start) / 60:.1f} minutes.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
