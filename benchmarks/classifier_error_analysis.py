"""Where the MovingMNIST classifier errs: held-out accuracy per frame size and the digit images behind the errors.

Generates ``--num-videos`` test-split videos per frame size (digit images the
classifier never saw), scores the shipped (or ``--weights``) classifier and
groups the digit errors by the digit image each video shows
(``moving_mnist(...)["image_ids"]``). If a few images account for most errors,
the ceiling is those images (ambiguous handwriting at 8x8), not the
classifier's grasp of the rest. Writes
``benchmarks/results/moving_mnist_classifier_errors.{json,md}`` and a PNG of
the most-misread images.

    KERAS_BACKEND=tensorflow python benchmarks/classifier_error_analysis.py
"""

import argparse
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def analyse(model, frame_size, num_videos, seed):
    from keras_vdiff.data.moving_mnist import load_digit_images, moving_mnist

    data = moving_mnist(num_videos, frame_size=frame_size, seed=seed, digits_source="sklearn", split="test")
    _, labels = load_digit_images("sklearn", "test")
    digits, motions = model.predict(data["videos"])
    wrong = digits != data["digits"]
    ids = data["image_ids"]
    per_image = []
    for image in np.unique(ids[wrong]):
        shown = ids == image
        misread = wrong & shown
        per_image.append(dict(image=int(image), label=int(labels[image]), videos=int(shown.sum()),
                              misread=int(misread.sum()),
                              read_as=int(np.bincount(digits[misread], minlength=10).argmax())))
    per_image.sort(key=lambda r: (-r["misread"] / r["videos"], -r["misread"]))
    hard = [r for r in per_image if r["misread"] >= r["videos"] / 2]
    return dict(
        frame_size=frame_size, videos=num_videos, test_images=int(len(labels)),
        digit=float(np.mean(~wrong)), motion=float(np.mean(motions == data["motions"])),
        both=float(np.mean(~wrong & (motions == data["motions"]))), digit_errors=int(wrong.sum()),
        images_with_errors=len(per_image), hard_images=len(hard),
        errors_on_hard_images=int(sum(r["misread"] for r in hard)), per_image=per_image,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=None, help="classifier weights (default: the shipped file)")
    parser.add_argument("--num-videos", type=int, default=5000, help="held-out videos per frame size")
    parser.add_argument("--sizes", default="16,32",
                        help="comma-separated frame sizes (the first one's errors are listed per image)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--output", default=os.path.join(ROOT, "benchmarks", "results",
                                                         "moving_mnist_classifier_errors.json"))
    args = parser.parse_args(argv)
    if args.num_videos < 1:
        parser.error("--num-videos must be positive")
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) < 8:
        parser.error(f"--sizes needs at least one frame size >= 8, got {args.sizes!r}")

    from PIL import Image

    from keras_vdiff.atomic_files import staged_file
    from keras_vdiff.atomic_files import write_json as atomic_write_json
    from keras_vdiff.atomic_files import write_text as atomic_write_text
    from keras_vdiff.data.moving_mnist import load_digit_images
    from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier

    model = MovingMNISTClassifier.load(weights=args.weights)
    rows = [analyse(model, size, args.num_videos, args.seed) for size in sizes]
    lines = [
        f"Held-out: {args.num_videos:,} test-split videos per frame size (seed {args.seed}), "
        f"{rows[0]['test_images']} test digit images. 'Hard' images are misread in at least half of their videos.",
        "",
        "| frames | digit | motion | both | digit errors | images with errors | hard images | errors on hard images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['frame_size']}x{r['frame_size']} | {100 * r['digit']:.2f}% | {100 * r['motion']:.2f}% | "
                     f"{100 * r['both']:.2f}% | {r['digit_errors']} | {r['images_with_errors']} | {r['hard_images']} | "
                     f"{r['errors_on_hard_images']} ({100 * r['errors_on_hard_images'] / max(1, r['digit_errors']):.0f}%) |")
    lines += ["", f"Most-misread images at {sizes[0]}x{sizes[0]} "
              "(image id in the test split: label -> read as, misread / shown):", ""]
    worst = rows[0]["per_image"][:8]
    lines += [f"- {r['image']}: {r['label']} -> {r['read_as']}, {r['misread']}/{r['videos']}" for r in worst]
    base = os.path.splitext(args.output)[0]
    if worst:
        images, _ = load_digit_images("sklearn", "test")
        tiles = [np.pad(np.kron(images[r["image"]], np.ones((12, 12))), 3, constant_values=0.5) for r in worst]
        with staged_file(base + ".png") as staging:
            Image.fromarray((np.concatenate(tiles, axis=1) * 255).astype(np.uint8)).save(staging)
        lines += ["", f"![the most-misread test digits]({os.path.basename(base)}.png)"]
    atomic_write_json(args.output, dict(weights=args.weights or "shipped", rows=rows))
    atomic_write_text(base + ".md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
