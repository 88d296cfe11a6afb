"""Distil the shipped ``latte_tiny_moving_mnist`` into a few-step, guidance-free student.

Stage one (guided distillation, Meng et al. 2023): a ``GuidanceConditionedDiffusion`` learns the
teacher's guided prediction for ``w`` in ``--guidance-range``. Stage two (progressive distillation,
Salimans & Ho 2022): rounds of ``ProgressiveDistillation`` halve the DDIM steps, from
``--first-steps`` (the teacher of the first round runs twice as many) down to ``--last-steps``.
After every stage the student is saved as a pipeline preset under ``--output-dir/<stage>``
(the last one also as ``--output-dir/final``), with ``log.json`` (steps, seconds, losses).

    KERAS_BACKEND=jax python benchmarks/distill_moving_mnist.py --output-dir runs/distill \\
        --guided-minutes 8 --round-minutes 10 --first-steps 32 --last-steps 4

``--fold-guidance`` skips stage one: the first round's student is a fresh guidance-conditioned
copy of the teacher (``GuidanceConditionedDiffusion.from_teacher``) learning two *guided* teacher
steps in one, with ``w`` drawn in ``--guidance-range`` — it trains on the student's grid points
only, where stage one spreads the same budget over all 1000 timesteps.
"""

import argparse
import json
import os
import time

import numpy as np


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="latte_tiny_moving_mnist")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-videos", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--guidance-range", type=float, nargs=2, default=(2.0, 4.0))
    parser.add_argument("--guided-minutes", type=float, default=8.0)
    parser.add_argument("--round-minutes", type=float, default=10.0)
    parser.add_argument("--guided-steps", type=int, default=None, help="stop stage one after these steps too")
    parser.add_argument("--round-steps", type=int, default=None, help="stop each round after these steps too")
    parser.add_argument("--first-steps", type=int, default=32)
    parser.add_argument("--last-steps", type=int, default=4)
    parser.add_argument("--ema", type=float, default=0.995)
    parser.add_argument("--fold-guidance", action="store_true",
                        help="no stage one: the first round folds the guidance into a w-conditioned student")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras_vdiff as kv
    from keras_vdiff import training

    os.makedirs(args.output_dir, exist_ok=True)
    log_path = os.path.join(args.output_dir, "log.json")
    log = {"arguments": vars(args), "stages": []}
    teacher = kv.VideoDiffusion.from_preset(args.preset)
    data = training.moving_mnist_training_data(teacher, args.num_videos, seed=args.seed)

    def run(stage, distiller, minutes, steps, seed):
        start = time.time()
        result = training.train(distiller, data, steps=steps, max_seconds=60 * minutes, batch_size=args.batch_size,
                                learning_rate=args.learning_rate, ema_momentum=args.ema, seed=seed, verbose=1)
        seconds = time.time() - start
        directory = os.path.join(args.output_dir, stage)
        distiller.student.save_to_preset(directory, include_optimizer=False)
        losses = result["losses"]
        log["stages"].append(dict(stage=stage, steps=result["steps"], seconds=round(seconds, 1),
                                  stopped_by=result["stopped_by"], steps_per_second=result["steps_per_second"],
                                  first_loss=float(np.mean(losses[:50])) if losses else None,
                                  last_loss=float(np.mean(losses[-50:])) if losses else None))
        with open(log_path, "w") as file:
            json.dump(log, file, indent=2)
        print(f"[{stage}] {result['steps']} steps in {seconds:.0f}s -> {directory}", flush=True)
        return distiller.student

    guidance_range = tuple(args.guidance_range)
    if args.fold_guidance:
        student = None
    else:
        guided = kv.GuidedDistillation(teacher, guidance_range=guidance_range, seed=args.seed)
        student = run("guided", guided, args.guided_minutes, args.guided_steps, args.seed)
    steps = args.first_steps
    while steps >= args.last_steps:
        if student is None:  # the folding round: the plain guided teacher, a fresh w-conditioned student
            distiller = kv.ProgressiveDistillation(
                teacher, student=kv.GuidanceConditionedDiffusion.from_teacher(teacher, guidance_range),
                student_steps=steps, seed=args.seed + steps)
        else:
            distiller = kv.ProgressiveDistillation(student, student_steps=steps, seed=args.seed + steps)
        student = run(f"steps_{steps}", distiller, args.round_minutes, args.round_steps, args.seed + steps)
        steps //= 2
    student.save_to_preset(os.path.join(args.output_dir, "final"), include_optimizer=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
