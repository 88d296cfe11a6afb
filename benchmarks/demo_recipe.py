"""Time to quality of ``make demo``'s recipe: train for a wall-clock budget, score conditional accuracy (issue 23, item 4).

``make demo`` trains ``training.moving_mnist_text_to_video()`` for 8 minutes on
this CPU and scores it. This script runs the same ``training.train`` call with
one recipe change at a time (learning rate and its schedule, warm-up, batch
size, EMA, backbone overrides), then samples every caption ``--samples-per-caption``
times with the demo's sampling (DDPM 50, guidance 3) and scores them with the
shipped classifier, so recipes compare by accuracy at equal wall time:

    python benchmarks/demo_recipe.py --name cosine-2e-3 --learning-rate 2e-3 --schedule cosine --warmup 100
    python benchmarks/demo_recipe.py --name patch-2 --backbone '{"patch_size": 2}'

Each run appends one JSON line to ``benchmarks/results/demo_recipe.jsonl``
(steps, steps/s, final loss, accuracy, the recipe). Run one at a time on an
otherwise idle CPU: the budget is wall time.
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results_log import append_rows  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "demo_recipe.jsonl")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the recipe's label in the results")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--num-videos", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--schedule", default="constant", help="train()'s learning_rate_schedule")
    parser.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    parser.add_argument("--ema", type=float, default=0.995, help="EMA momentum; 0 disables")
    parser.add_argument("--backbone", default="{}", help="JSON dict of backbone overrides")
    parser.add_argument("--process", default="{}", help="JSON dict of diffusion-process overrides")
    parser.add_argument("--condition-dropout", type=float, default=0.1, help="caption dropout for guidance")
    parser.add_argument("--samples-per-caption", type=int, default=3)
    parser.add_argument("--guidance", default=None,
                        help="comma-separated guidance scales to score (default: the demo's, "
                             "training.RECOMMENDED_SAMPLING); one row per scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", default=None, help="also save the trained pipeline (no optimizer) there")
    args = parser.parse_args(argv)

    import keras
    import numpy as np

    from keras_vdiff import training

    backbone, process = json.loads(args.backbone), json.loads(args.process)
    keras.utils.set_random_seed(args.seed)
    model = training.moving_mnist_text_to_video(seed=args.seed, backbone=backbone, process=process,
                                                condition_dropout=args.condition_dropout)
    data = training.moving_mnist_training_data(model, args.num_videos, seed=args.seed)
    print(f"[{args.name}] {model.backbone.describe()}", flush=True)
    result = training.train(model, data, max_seconds=60 * args.minutes, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, ema_momentum=args.ema or None, seed=args.seed,
                            learning_rate_schedule=args.schedule, warmup_steps=args.warmup)
    if args.save:
        model.save_to_preset(args.save, include_optimizer=False)
    sampling = dict(training.RECOMMENDED_SAMPLING)
    scales = [float(g) for g in args.guidance.split(",")] if args.guidance else [sampling["guidance_scale"]]
    rows = []
    for scale in scales:
        start = time.perf_counter()
        sampling["guidance_scale"] = scale
        scores = training.evaluate_moving_mnist(model, samples_per_caption=args.samples_per_caption,
                                                seed=args.seed + 1, progress=False, **sampling)
        accuracy = scores["conditional_accuracy"]
        rows.append(dict(
            name=args.name, backend=keras.backend.backend(), minutes=args.minutes, steps=result["steps"],
            steps_per_second=round(result["steps_per_second"], 3), batch_size=args.batch_size,
            learning_rate=args.learning_rate, schedule=args.schedule, warmup=args.warmup, ema=args.ema,
            condition_dropout=args.condition_dropout, backbone=backbone, process=process, seed=args.seed, parameters=int(model.backbone.count_params()),
            final_loss=round(float(np.mean(result["losses"][-100:])), 4), guidance_scale=scale,
            videos=scores["num_videos"], accuracy=round(accuracy["overall"], 4), digit=round(accuracy["digit"], 4),
            motion=round(accuracy["motion"], 4), frechet=round(scores["frechet_distance"], 1),
            eval_seconds=round(time.perf_counter() - start, 1)))
        print("RESULT " + json.dumps(rows[-1]), flush=True)
    append_rows(RESULTS, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
