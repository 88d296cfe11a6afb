"""``keras-vdiff``: train, sample, evaluate, list presets and convert checkpoints from the command line.

    keras-vdiff presets [--kind pipeline]
    keras-vdiff train --output-dir runs/mm --max-minutes 10
    keras-vdiff sample --preset latte_tiny_moving_mnist --prompt "The digit 3 is moving up and down"
    keras-vdiff evaluate --preset runs/mm/pipeline --samples-per-caption 4
    keras-vdiff convert --dit-checkpoint DiT-XL-2-256x256.pt --output-dir dit_xl_2_256
    keras-vdiff convert --diffusers Latte-1 --output-dir latte_1

The backend is chosen by ``KERAS_BACKEND`` (jax, tensorflow or torch) before
the command starts. Every command explains its options with ``--help``.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_vdiff.diffusion.samplers import SAMPLERS as SAMPLER_CLASSES
from keras_vdiff.training.loop import LEARNING_RATE_SCHEDULES
from keras_vdiff.validation import check_int

SAMPLERS = tuple(SAMPLER_CLASSES)  # the --sampler choices: the library's registry, in its order


def _int_at_least(text, minimum):
    try:  # the library's own check, so the CLI and the Python API reject the same values
        return check_int(int(text), "value", minimum=minimum)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text):
    return _int_at_least(text, 1)


def _non_negative_int(text):
    return _int_at_least(text, 0)


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _add_sampling_options(parser, default_steps=50, pipeline_defaults=False):
    """The sampling flags; with ``pipeline_defaults`` --sampler / --thresholding default to the pipeline's own."""
    own = "the pipeline's own sampler when it has one (a converted diffusers pipeline: its scheduler's), else "
    own_thresholding = "that of the pipeline's own sampler when that runs, else "
    if not pipeline_defaults:
        own = own_thresholding = ""
    parser.add_argument("--sampler", choices=SAMPLERS, default=None if pipeline_defaults else "ddpm",
                        help=f"sampler (default: {own}ddpm; on the small MovingMNIST models ancestral DDPM with "
                             "many steps scores far better than DDIM with few, see benchmarks/RESULTS.md)")
    parser.add_argument("--steps", type=_positive_int, default=default_steps,
                        help=f"sampler steps (default: {default_steps})")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance scale; 1 disables guidance (default: 3)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default: 0, deterministic)")
    parser.add_argument("--thresholding", choices=("none", "static", "dynamic"),
                        default=None if pipeline_defaults else "static",
                        help=f"x0 thresholding during sampling (default: {own_thresholding}static, clip to [-1, 1])")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")


def _sampling_kwargs(args, model=None):
    """``generate`` arguments; a --sampler / --thresholding left unset (None) defers to ``model``'s default sampler."""
    own = getattr(model, "sampler", None)
    sampler = args.sampler if args.sampler is not None or own is not None else "ddpm"
    thresholding = args.thresholding
    if thresholding is None and (own is None or sampler not in (None, own)):
        thresholding = "static"
    kwargs = dict(steps=args.steps, guidance_scale=args.guidance, seed=args.seed)
    if sampler is not None:  # None: generate runs the pipeline's own sampler with its options
        kwargs["sampler"] = sampler
    if thresholding is not None:  # "none" turns off even the pipeline's own thresholding
        kwargs["thresholding"] = ("none" if model is not None else None) if thresholding == "none" else thresholding
    if args.eta is not None:
        if (sampler or own) != "ddim":
            raise SystemExit("error: --eta applies to --sampler ddim only")
        kwargs["eta"] = args.eta
    return kwargs


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-vdiff",
        description="Video diffusion with Keras 3 on JAX, TensorFlow or PyTorch (set KERAS_BACKEND).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    presets = commands.add_parser("presets", help="list the registered presets",
                                  description="List the registered backbone and pipeline presets.")
    presets.add_argument("--kind", choices=("backbone", "pipeline"), default=None,
                         help="only backbone or only pipeline presets")
    presets.add_argument("--json", action="store_true", help="print JSON instead of a table")

    train = commands.add_parser(
        "train", help="train a text-to-video model on generated MovingMNIST",
        description=(
            "Train a text-to-video pipeline on generated MovingMNIST with model.fit. Writes "
            "<output-dir>/pipeline (a preset directory, saved after every epoch and at the end), "
            "<output-dir>/loss.png, <output-dir>/history.json and sample GIFs."
        ),
    )
    train.add_argument("--preset", default=None,
                       help="start from a pipeline preset name or directory (default: the tiny MovingMNIST "
                            "Latte of keras_vdiff.training.TINY_MOVING_MNIST, random init)")
    train.add_argument("--config", default=None,
                       help="JSON file or string of overrides of TINY_MOVING_MNIST, e.g. "
                            "'{\"backbone\": {\"hidden_dim\": 96}, \"frame_size\": 16}' (new models only)")
    train.add_argument("--dataset", default="moving_mnist", choices=("moving_mnist",),
                       help="training data (default: moving_mnist, generated on the fly)")
    train.add_argument("--num-videos", type=_positive_int, default=6000,
                       help="generated training videos (default: 6000)")
    train.add_argument("--digits-source", choices=("auto", "sklearn", "mnist"), default="auto",
                       help="digit images: MNIST if cached/downloadable, else scikit-learn's offline digits")
    train.add_argument("--steps", type=_positive_int, default=None, help="optimizer steps")
    train.add_argument("--max-minutes", type=_positive_float, default=None,
                       help="wall-clock budget in minutes (training stops at steps or budget, whichever first)")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="batch size (default: 32)")
    train.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="AdamW learning rate")
    train.add_argument("--lr-schedule", choices=LEARNING_RATE_SCHEDULES, default="constant",
                       help="constant, or cosine: the learning rate decays to zero over the budget (--steps or "
                            "--max-minutes, whichever ends first)")
    train.add_argument("--warmup-steps", type=_non_negative_int, default=0,
                       help="linear learning-rate warm-up over the run's first steps (default: 0)")
    train.add_argument("--ema", type=float, default=0.995, help="EMA momentum of the weights; 0 disables")
    train.add_argument("--output-dir", required=True, help="run directory")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --output-dir from its last checkpoint (step count, history, "
                            "optimizer state and data order continue; --steps counts the whole run)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run already in --output-dir (without --resume or --overwrite, train "
                            "refuses a directory holding a run)")
    train.add_argument("--seed", type=int, default=0, help="data and initialisation seed")
    spread = train.add_mutually_exclusive_group()
    spread.add_argument("--devices", type=_positive_int, default=None, metavar="N",
                        help="data parallelism over the first N devices: keras.distribution.DataParallel on JAX, "
                             "tf.distribute.MirroredStrategy on TensorFlow, 1 only on PyTorch; --batch-size is the "
                             "global batch and must be divisible by N")
    spread.add_argument("--mesh", default=None, metavar="batch=B,model=M",
                        help="JAX: model parallelism over a B x M device mesh, attention and MLP kernels sharded "
                             "over `model`, batches over `batch` (kv.distribution.model_parallel)")
    train.add_argument("--samples", type=int, default=3,
                       help="after training, sample this many captions (one per motion) as GIFs; 0 skips")

    sample = commands.add_parser(
        "sample", help="generate videos from a preset or checkpoint",
        description="Generate videos for prompts (text models) or labels (class models); writes one file "
                    "per video and a contact-sheet PNG (a row per video, a column per frame).",
    )
    sample.add_argument("--preset", required=True, help="pipeline preset name or preset directory")
    group = sample.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", action="append", help="a prompt; repeat for several videos")
    group.add_argument("--label", action="append", type=int, help="a class label; repeat for several")
    _add_sampling_options(sample, pipeline_defaults=True)
    sample.add_argument("--format", default="gif", help="comma-separated file formats: gif, mp4 (default: gif)")
    sample.add_argument("--fps", type=_positive_float, default=4, help="frames per second of the files")
    sample.add_argument("--scale", type=_positive_int, default=4, help="nearest-neighbour upscaling of the files")
    sample.add_argument("--output-dir", default="samples", help="where to write (default: samples)")

    evaluate = commands.add_parser(
        "evaluate", help="score a MovingMNIST text-to-video model",
        description="Sample every MovingMNIST caption and report conditional accuracy (the shipped "
                    "classifier recognises digit and motion), the Frechet distance on the classifier's "
                    "features against held-out generated data, and a motion ratio.",
    )
    evaluate.add_argument("--preset", required=True, help="pipeline preset name or preset directory")
    evaluate.add_argument("--samples-per-caption", type=_positive_int, default=4,
                          help="videos per caption; 30 captions (default: 4 -> 120 videos)")
    evaluate.add_argument("--batch-size", type=_positive_int, default=30, help="videos per generate call")
    _add_sampling_options(evaluate)
    evaluate.add_argument("--output", default=None, help="write the results as JSON here (and a .md table)")

    convert = commands.add_parser(
        "convert", help="convert a diffusers folder or an official DiT checkpoint into a keras_vdiff preset",
        description=(
            "Convert a folder written by diffusers' save_pretrained (--diffusers: a pipeline such as a download "
            "of maxin-cn/Latte-1 or facebook/DiT-XL-2-256, or one transformer folder of it) into a keras_vdiff "
            "pipeline preset (load it with keras_vdiff.VideoDiffusion.from_preset(DIR), or sample it with "
            "`keras-vdiff sample --preset DIR`) or backbone preset; or a checkpoint of the official DiT "
            "(--dit-checkpoint, github.com/facebookresearch/DiT, e.g. DiT-XL-2-256x256.pt; needs torch to read "
            "it) into a DiT backbone preset. diffusers folders are read with safetensors, one tensor at a time, "
            "on any KERAS_BACKEND. The directory is written under a temporary name and renamed, so a failed "
            "conversion leaves nothing behind."
        ),
    )
    source = convert.add_mutually_exclusive_group(required=True)
    source.add_argument("--diffusers", metavar="DIR",
                        help="a diffusers pipeline folder (model_index.json) or model folder (config.json + "
                             "*.safetensors)")
    source.add_argument("--dit-checkpoint", metavar="PATH.pt",
                        help="the official DiT state dict (or a training checkpoint of the official train.py, "
                             "whose 'ema' weights are used); read with torch.load(weights_only=True)")
    convert.add_argument("--output-dir", required=True, metavar="DIR", help="the backbone preset directory to write")
    convert.add_argument("--num-heads", type=_positive_int, default=None,
                         help="attention heads, which the weights do not record (default: the paper's for its "
                              "widths, 16 for XL and L, 12 for B, 6 for S; width / 64 otherwise)")
    convert.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "mixed_bfloat16"),
                         help="dtype policy of the converted models (--diffusers; default float32)")
    convert.add_argument("--overwrite", action="store_true", help="replace --output-dir if it exists")
    return parser


def cmd_presets(args):
    import keras_vdiff as kv

    names = kv.presets.list(kind=args.kind)
    records = [kv.presets.get_preset(name) for name in names]
    if args.json:
        print(json.dumps([{k: r[k] for k in ("name", "kind", "class_name", "description", "weights")}
                          for r in records], indent=2))
        return 0
    width = max(len(n) for n in names) if names else 4
    for record in records:
        trained = "trained" if record["weights"] else "random"
        print(f"{record['name']:<{width}}  {record['kind']:<8}  {record['class_name']:<16}  {trained:<7}  "
              f"{record['description']}")
    return 0


def _load_pipeline(preset):
    from keras_vdiff.tasks import VideoDiffusion

    try:
        return VideoDiffusion.from_preset(preset)
    except (ValueError, TypeError, OSError) as error:
        raise SystemExit(f"error: --preset: {error}")


RUN_FILES = ("pipeline", "history.json", "loss.png")


def _load_training_model(args, checkpoint):
    """The model ``train`` starts from (a checkpoint, a preset or a new one) and the run state it resumes."""
    from keras_vdiff import training

    if args.resume:
        if not os.path.isdir(checkpoint):
            raise SystemExit(f"error: --resume: no checkpoint at {checkpoint}")
        model = _load_pipeline(checkpoint)
        if getattr(model, "optimizer", None) is not None:
            # The checkpoint restores the optimizer state; the learning rate is this run's.
            model.optimizer.learning_rate = args.learning_rate
        state = training.load_run_state(checkpoint)
        print(f"Resuming from {checkpoint} at step {state['steps']} (epoch {state['epochs']})")
        return model, state
    if args.preset is not None:
        return _load_pipeline(args.preset), None
    overrides = {}
    if args.config:
        text = open(args.config).read() if os.path.isfile(args.config) else args.config
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as error:
            raise SystemExit(f"error: --config is neither a JSON file nor a JSON string: {error}")
        if not isinstance(overrides, dict):
            raise SystemExit(f"error: --config must be a JSON object, got {type(overrides).__name__}")
    try:
        return training.moving_mnist_text_to_video(**dict(overrides, seed=overrides.get("seed", args.seed))), None
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: --config: {error}")


def _load_distributed(args, checkpoint):
    """``_load_training_model`` built under what ``--devices`` / ``--mesh`` ask for.

    Returns ``(model, state, scope)``, ``scope()`` a fresh context to fit and
    sample in. Model parallelism builds the model twice: a first build gives the
    variable paths and shapes its layout map shards, the second creates the
    variables under it.
    """
    import contextlib

    import keras

    from keras_vdiff import distribution

    backend = keras.backend.backend()
    option = "--mesh" if args.mesh is not None else "--devices"
    try:
        if args.mesh is None and (args.devices is None or backend == "torch"):
            distribution.check_single_device(args.devices or 1)
            return (*_load_training_model(args, checkpoint), contextlib.nullcontext)
        if args.mesh is not None and backend != "jax":
            raise ValueError(f"model parallelism runs on JAX (keras.distribution), not on {backend}; "
                             "use --devices for data parallelism" + (" on TensorFlow" if backend != "torch" else ""))
        replicas = args.devices or distribution.mesh_sizes(args.mesh)[distribution.BATCH_AXIS]
        if args.batch_size % replicas:
            raise ValueError(f"the global --batch-size {args.batch_size} is not divisible by the {replicas} "
                             "replicas of the batch")
        if args.mesh is not None:
            template, _ = _load_training_model(args, checkpoint)
            spread = distribution.model_parallel(args.mesh, template.backbone)
            del template
        elif backend == "jax":
            spread = distribution.data_parallel(args.devices)
        else:
            spread = distribution.mirrored_strategy(args.devices)
    except ValueError as error:  # DistributionError included
        raise SystemExit(f"error: {option}: {error}")
    print(f"Distributing over {args.mesh or f'{args.devices} devices'} ({type(spread).__name__})")
    with spread.scope():
        model, state = _load_training_model(args, checkpoint)
    return model, state, spread.scope


def cmd_train(args):
    import keras

    from keras_vdiff import atomic_files

    if args.steps is None and args.max_minutes is None:
        raise SystemExit("error: give --steps, --max-minutes or both")
    if args.resume and args.overwrite:
        raise SystemExit("error: --resume continues the run in --output-dir and --overwrite replaces it; give one")
    existing = [name for name in RUN_FILES if os.path.exists(os.path.join(args.output_dir, name))]
    if existing and not (args.resume or args.overwrite):
        raise SystemExit(
            f"error: --output-dir {args.output_dir} already holds a run ({', '.join(existing)}); pass --resume to "
            "continue it, --overwrite to replace it, or choose another directory"
        )
    _writable(args.output_dir, "--output-dir")
    checkpoint = os.path.join(args.output_dir, "pipeline")
    try:  # found now, not at the first checkpoint after an epoch of training
        atomic_files.check_replaceable(checkpoint)
    except FileExistsError as error:
        raise SystemExit(f"error: --output-dir: {error}")
    keras.utils.set_random_seed(args.seed)
    model, state, scope = _load_distributed(args, checkpoint)
    with scope():
        return _train(args, model, state, checkpoint)


def _train(args, model, state, checkpoint):
    import keras

    from keras_vdiff import atomic_files, training

    print(model.backbone.describe())
    print(f"Generating {args.num_videos} MovingMNIST videos ...")
    data = training.moving_mnist_training_data(model, args.num_videos, seed=args.seed,
                                               digits_source=args.digits_source)
    budget = [f"{args.steps} steps" if args.steps else None,
              f"{args.max_minutes:g} minutes" if args.max_minutes else None]
    print(f"Training on {keras.backend.backend()} for {' or '.join(b for b in budget if b)} ...")
    result = training.train(
        model, data, steps=args.steps, max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
        batch_size=args.batch_size, learning_rate=args.learning_rate, ema_momentum=args.ema or None,
        checkpoint_dir=checkpoint, seed=args.seed, initial_state=state,
        learning_rate_schedule=args.lr_schedule, warmup_steps=args.warmup_steps,
    )
    if result["stopped_by"] == "non_finite":
        kept = training.load_run_state(checkpoint)["steps"] if os.path.isdir(checkpoint) else None
        where = f"the checkpoint {checkpoint} keeps step {kept}" if kept else "no checkpoint was written"
        print(f"error: {result['message']} Nothing non-finite was saved: {where}; resume from it with "
              "--resume and a smaller --learning-rate.", file=sys.stderr)
        return 1
    history = dict(
        backend=keras.backend.backend(), steps=result["steps"], stopped_by=result["stopped_by"],
        steps_per_second=result["steps_per_second"], seconds=result["seconds"][-1] if result["seconds"] else 0,
        batch_size=args.batch_size, learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps, ema=args.ema, num_videos=args.num_videos,
        losses=result["losses"],
    )
    atomic_files.write_json(os.path.join(args.output_dir, "history.json"), history)
    if result["losses"]:
        training.plot_loss(result["losses"], os.path.join(args.output_dir, "loss.png"))
    print(f"Trained to step {result['steps']} ({result['steps_per_second']:.2f} steps/s, stopped by "
          f"{result['stopped_by']}); final loss {np.mean(result['losses'][-20:]):.4f}")
    if args.samples:
        from keras_vdiff.data.moving_mnist import MOTIONS, caption

        prompts = [caption(d % 10, d % len(MOTIONS)) for d in range(args.samples)]
        videos = model.generate(prompts=prompts, seed=args.seed, **training.RECOMMENDED_SAMPLING)
        paths = training.write_samples(videos, [training.slug(p) for p in prompts],
                                       os.path.join(args.output_dir, "samples"))
        print("Samples: " + ", ".join(paths))
    print(f"Pipeline: {checkpoint}  (keras-vdiff sample --preset {checkpoint} --prompt ...)")
    return 0


def _writable(directory, option):
    from keras_vdiff import training

    try:
        training.check_writable(directory, option)
    except OSError as error:
        raise SystemExit(f"error: {error}")


def _generate(model, **kwargs):
    try:
        return model.generate(**kwargs)
    except (ValueError, FloatingPointError) as error:
        raise SystemExit(f"error: {error}")


def cmd_sample(args):
    from keras_vdiff import training

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("gif", "mp4")]
    if bad or not formats:
        raise SystemExit(f"error: --format must list gif and/or mp4, got {args.format!r}")
    _writable(args.output_dir, "--output-dir")
    model = _load_pipeline(args.preset)
    kwargs = _sampling_kwargs(args, model)
    start = time.perf_counter()
    if args.prompt:
        videos = _generate(model, prompts=args.prompt, progress=True, **kwargs)
        names = [f"{i:02d}_{training.slug(p)}" for i, p in enumerate(args.prompt)]
    else:
        videos = _generate(model, labels=args.label, progress=True, **kwargs)
        names = [f"{i:02d}_label_{label}" for i, label in enumerate(args.label)]
    print(f"Sampled {len(videos)} videos in {time.perf_counter() - start:.1f}s ({model.sampling_mode})")
    paths = training.write_samples(videos, names, args.output_dir, fps=args.fps, scale=args.scale, formats=formats)
    sheet = training.contact_sheet(videos, os.path.join(args.output_dir, "contact_sheet.png"), scale=args.scale,
                                   labels=args.prompt or args.label)
    for path in paths + [sheet]:
        print(path)
    return 0


def cmd_evaluate(args):
    from keras_vdiff import atomic_files, training
    from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy_table

    if args.output:
        _writable(os.path.dirname(os.path.abspath(args.output)), "--output directory")
    model = _load_pipeline(args.preset)
    result = training.evaluate_moving_mnist(model, samples_per_caption=args.samples_per_caption,
                                            batch_size=args.batch_size, **_sampling_kwargs(args))
    accuracy = result["conditional_accuracy"]
    settings = result["settings"]
    lines = [
        f"preset: {args.preset}",
        "sampling: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
        f"videos: {result['num_videos']}",
        f"conditional accuracy (digit and motion): {100 * accuracy['overall']:.1f}%  "
        f"(digit {100 * accuracy['digit']:.1f}%, motion {100 * accuracy['motion']:.1f}%, chance 3.3%)",
        f"Frechet distance (classifier features): {result['frechet_distance']:.3f}",
        f"motion ratio (samples / real frame-to-frame change): {result['motion_ratio']:.2f}",
        f"sampling time: {result['seconds_per_video']:.3f} s/video",
    ]
    print("\n".join(lines))
    table = conditional_accuracy_table(accuracy)
    print(table)
    if args.output:
        payload = {k: v for k, v in result.items() if k not in ("videos", "digits", "motions")}
        payload["conditional_accuracy"] = {
            k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in accuracy.items()
        }
        payload["preset"] = args.preset
        atomic_files.write_json(args.output, json.loads(json.dumps(payload, default=_json_default)))
        markdown = os.path.splitext(args.output)[0] + ".md"
        atomic_files.write_text(markdown, "\n".join(f"- {line}" for line in lines) + "\n\n" + table + "\n")
        print(f"Wrote {args.output} and {markdown}")
    return 0


def _convert_diffusers(args):
    import keras_vdiff as kv
    from keras_vdiff.atomic_files import staged_directory

    start = time.perf_counter()
    try:
        model = kv.convert.from_diffusers(args.diffusers, dtype=args.dtype)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: --diffusers {args.diffusers}: {error}")
    if not hasattr(model, "save_to_preset"):
        raise SystemExit(
            f"error: --diffusers {args.diffusers} holds a {type(model).__name__}, which is not saved as a preset on "
            "its own: convert the pipeline folder above it"
        )
    try:
        with staged_directory(args.output_dir) as staging:
            model.save_to_preset(staging)
    except FileExistsError as error:
        raise SystemExit(f"error: --output-dir: {error}")
    pipeline = isinstance(model, kv.VideoDiffusion)
    loader = "keras_vdiff.VideoDiffusion" if pipeline else f"{type(model).__module__}.{type(model).__name__}"
    print(f"Converted {args.diffusers} in {time.perf_counter() - start:.1f}s")
    print(f"{'Pipeline' if pipeline else type(model).__name__} preset: {args.output_dir}  "
          f"({loader}.from_preset({args.output_dir!r}))")
    return 0


def cmd_convert(args):
    from keras_vdiff.models.conversion import dit_from_torch_state_dict, load_torch_state_dict
    from keras_vdiff.atomic_files import staged_directory

    if os.path.exists(args.output_dir) and not args.overwrite:
        raise SystemExit(f"error: --output-dir {args.output_dir} exists; pass --overwrite to replace it")
    if args.diffusers:
        return _convert_diffusers(args)
    if not os.path.isfile(args.dit_checkpoint):
        raise SystemExit(f"error: --dit-checkpoint: no file at {args.dit_checkpoint}")
    try:
        state_dict = load_torch_state_dict(args.dit_checkpoint)
    except ImportError as error:
        raise SystemExit(f"error: {error}")
    except ValueError as error:
        raise SystemExit(f"error: --dit-checkpoint: {error}")
    overrides = {} if args.num_heads is None else {"num_heads": args.num_heads}
    try:
        backbone = dit_from_torch_state_dict(state_dict, **overrides)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"error: --dit-checkpoint {args.dit_checkpoint}: {error}")
    del state_dict
    try:
        with staged_directory(args.output_dir) as staging:
            backbone.save_to_preset(staging)
    except FileExistsError as error:
        raise SystemExit(f"error: --output-dir: {error}")
    config = backbone.get_config()
    print(backbone.describe())
    print("config: " + ", ".join(f"{k}={config[k]}" for k in (
        "image_size", "in_channels", "patch_size", "hidden_dim", "num_layers", "num_heads", "num_classes",
        "learn_sigma", "pos_embed_order")))
    print(f"Backbone preset: {args.output_dir}  (keras_vdiff.models.DiT.from_preset({args.output_dir!r}))")
    return 0


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


COMMANDS = {"presets": cmd_presets, "train": cmd_train, "sample": cmd_sample, "evaluate": cmd_evaluate,
            "convert": cmd_convert}


def main(argv=None):
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
