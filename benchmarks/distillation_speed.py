"""Wall time per sample: a distilled student at few steps against its teacher at many steps with guidance.

Each configuration samples ``--batch`` videos once to compile its loop, then ``--repeats`` timed
``generate`` calls; the best time per video is reported (the CPU is shared: the minimum is the least
disturbed run). Rows alternate between configurations so that a busy stretch hits them alike.

    KERAS_BACKEND=jax python benchmarks/distillation_speed.py \\
        --teacher latte_tiny_moving_mnist --student presets/.../latte_tiny_moving_mnist_distilled \\
        --student-steps 4 8 --teacher-steps 50 --guidance 3
"""

import argparse
import json
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="latte_tiny_moving_mnist")
    parser.add_argument("--student", required=True, nargs="+", help="student preset(s), one per --student-steps")
    parser.add_argument("--student-steps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--teacher-steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import keras_vdiff as kv
    from keras_vdiff.training.moving_mnist import all_captions

    prompts = all_captions()[: args.batch]
    students = args.student if len(args.student) == len(args.student_steps) else args.student * len(args.student_steps)
    rows = [("teacher", kv.VideoDiffusion.from_preset(args.teacher), args.teacher_steps,
             dict(sampler="ddim", thresholding="static"))]
    for preset, steps in zip(students, args.student_steps):
        rows.append((f"student {steps}", kv.VideoDiffusion.from_preset(preset), steps, dict(thresholding="static")))
    times = {name: [] for name, *_ in rows}
    for name, model, steps, options in rows:  # compile every loop first
        model.generate(prompts=prompts, steps=steps, guidance_scale=args.guidance, seed=0, **options)
    for _ in range(args.repeats):
        for name, model, steps, options in rows:
            start = time.perf_counter()
            model.generate(prompts=prompts, steps=steps, guidance_scale=args.guidance, seed=0, **options)
            times[name].append((time.perf_counter() - start) / len(prompts))
    teacher_time = min(times["teacher"])
    result = {}
    for name, model, steps, _ in rows:
        best = min(times[name])
        forwards = steps * (2 if name == "teacher" and args.guidance != 1 else 1)
        result[name] = dict(steps=steps, backbone_rows_per_video=forwards, seconds_per_video=best,
                            speedup=teacher_time / best, all_seconds_per_video=times[name])
        print(f"{name:12s} {steps:3d} steps, {forwards:3d} forward rows/video: {1000 * best:7.1f} ms/video "
              f"(x{teacher_time / best:.1f})")
    if args.output:
        with open(args.output, "w") as file:
            json.dump(result, file, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
