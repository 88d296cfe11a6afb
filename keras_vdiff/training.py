"""Training and sampling jobs shared by the CLI, ``make demo`` and the experiment scripts.

The pieces a user would otherwise rewrite around ``model.fit``:

- ``moving_mnist_text_to_video(...)`` builds a text-to-video ``VideoDiffusion``
  (Latte + ``SmallTextEncoder`` by default) for generated MovingMNIST;
- ``train(model, data, ...)`` runs ``fit`` for a number of optimizer steps or
  a wall-clock budget, with a progress bar, per-step losses, optional
  checkpoints every epoch and resume;
- ``plot_loss``, ``write_samples`` and ``contact_sheet`` turn the results into
  a loss-curve PNG, GIF / MP4 files and one PNG grid of all frames.

Everything writes atomically (temporary name, then rename), so an interrupted
job leaves either the previous file or the new one, never half of one.
"""

import math
import os
import time

import keras
import numpy as np

from keras_vdiff.atomic_files import staged_file
# Kept under training's names: the CLI, the demo and the benchmarks write their results through these.
from keras_vdiff.atomic_files import write_json
from keras_vdiff.data.moving_mnist import MOTIONS, caption, moving_mnist
from keras_vdiff.data.pipelines import VideoBatches
from keras_vdiff.data.video_folder import write_video
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.models.latte import Latte
from keras_vdiff.text.small_text_encoder import SmallTextEncoder
from keras_vdiff.video_diffusion import VideoDiffusion


def all_captions():
    """The 30 MovingMNIST captions (10 digits x 3 motions), digit-major."""
    return [caption(digit, motion) for digit in range(10) for motion in range(len(MOTIONS))]


# The tiny text-to-video configuration of the demo and of the `latte_tiny_moving_mnist`
# preset: 10 frames of 16x16 grey pixels, 4x4 patches -> 16 tokens per frame, 160 per video,
# a token budget a 2-core CPU can train in minutes (see DESIGN.md, "Measured facts").
TINY_MOVING_MNIST = dict(
    frame_size=16,
    num_frames=10,
    backbone=dict(
        patch_size=4,
        hidden_dim=96,
        num_layers=4,
        num_heads=4,
        variant=1,
        text_placement="v1",
        temporal_position="sincos",
        learn_sigma=False,
    ),
    text_encoder=dict(hidden_dim=64, num_layers=1, num_heads=4, sequence_length=8),
    # v-prediction with min-SNR-5 weighting (Hang et al. 2023): the loss is not dominated by the
    # nearly-clean timesteps, which speeds up learning the coarse content (digit, position) a lot.
    process=dict(schedule="cosine", prediction="v", loss_weighting="min_snr"),
)


# How to sample the tiny MovingMNIST models (benchmarks/RESULTS.md): ancestral DDPM is the most
# forgiving of a small, briefly trained model (on a 4,105-step checkpoint DDIM 50 was 17 points behind
# DDPM 50); on the fine-tuned preset every sampler scores 93-100% from 10 steps on (sampler study).
RECOMMENDED_SAMPLING = dict(sampler="ddpm", steps=50, guidance_scale=3.0, thresholding="static")


def moving_mnist_text_to_video(frame_size=None, num_frames=None, backbone=None, text_encoder=None, process=None,
                               seed=0, condition_dropout=0.1):
    """A text-to-video ``VideoDiffusion`` for MovingMNIST: Latte + a small word-level text encoder.

    Arguments left ``None`` take ``TINY_MOVING_MNIST``'s values; ``backbone``,
    ``text_encoder`` and ``process`` are dicts of overrides of those configs.

    Example:
        >>> model = moving_mnist_text_to_video()
        >>> model.backbone.latent_shape
        (10, 16, 16, 1)
    """
    frame_size = TINY_MOVING_MNIST["frame_size"] if frame_size is None else frame_size
    num_frames = TINY_MOVING_MNIST["num_frames"] if num_frames is None else num_frames
    text_config = dict(TINY_MOVING_MNIST["text_encoder"], **(text_encoder or {}))
    encoder = SmallTextEncoder.from_texts(all_captions(), **text_config)
    backbone_config = dict(TINY_MOVING_MNIST["backbone"], **(backbone or {}))
    network = Latte(input_shape=(num_frames, frame_size, frame_size, 1), conditioning="text",
                    text_dim=encoder.hidden_dim, **backbone_config)
    process_config = dict(TINY_MOVING_MNIST["process"], **(process or {}))
    process_config.setdefault("learn_sigma", network.learn_sigma)
    return VideoDiffusion(network, GaussianDiffusion(**process_config), text_encoder=encoder,
                          condition_dropout=condition_dropout, seed=seed)


def moving_mnist_training_data(model, num_videos, seed=0, digits_source="auto", split="train"):
    """Generated MovingMNIST matching ``model``'s frame count and size: dict of numpy arrays."""
    if model.autoencoder is not None:
        raise ValueError("moving_mnist_training_data builds pixel-space data; this model has an autoencoder.")
    frames, height, width, channels = model.backbone.latent_shape
    if height != width or channels != 1:
        raise ValueError(f"MovingMNIST videos are square and grey; the backbone expects {(frames, height, width, channels)}.")
    return moving_mnist(num_videos, frame_size=height, num_frames=frames, seed=seed, digits_source=digits_source,
                        split=split)


class StepLosses(keras.callbacks.Callback):
    """Records the loss of every optimizer step (Keras reports a running mean; this undoes it)."""

    def __init__(self):
        super().__init__()
        self.losses = []
        self.seconds = []
        self._start = None
        self._previous_mean = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        self.losses.append((batch + 1) * mean - batch * self._previous_mean)
        self._previous_mean = mean
        self.seconds.append(time.perf_counter() - self._start)


class TrainingBudget(keras.callbacks.Callback):
    """Stops ``fit`` after ``max_steps`` optimizer steps or ``max_seconds`` of wall time, whichever first."""

    def __init__(self, max_steps=None, max_seconds=None):
        super().__init__()
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.steps = 0
        self.stopped_by = None
        self._start = None

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    @property
    def elapsed(self):
        """Seconds since ``fit`` began (0 before it began)."""
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.max_steps is not None and self.steps >= self.max_steps:
            self.stopped_by = "steps"
        elif self.max_seconds is not None and self.elapsed >= self.max_seconds:
            self.stopped_by = "time"
        if self.stopped_by:
            self.model.stop_training = True


class BudgetProgress(keras.callbacks.Callback):
    """One line per epoch for a wall-clock budget: steps so far, the epoch's mean loss, time used of the budget.

    Keras' progress bar needs a number of epochs, which a time budget does not
    have (``train`` then runs ``fit`` with a huge epoch count and stops it from
    ``TrainingBudget``); this callback replaces the bar in that case.
    """

    def __init__(self, budget, losses, max_seconds):
        super().__init__()
        self.budget = budget
        self.losses = losses
        self.max_seconds = max_seconds
        self._epoch_first_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_first_step = len(self.losses.losses)

    def on_epoch_end(self, epoch, logs=None):
        epoch_losses = self.losses.losses[self._epoch_first_step:]
        loss = f"loss {np.mean(epoch_losses):.4f}, " if epoch_losses else ""
        clock = f"{_clock(self.budget.elapsed)} of {_clock(self.max_seconds)}"
        print(f"epoch {epoch + 1}: step {self.budget.steps}, {loss}{clock}", flush=True)


def _clock(seconds):
    minutes, seconds = divmod(int(round(seconds)), 60)
    return f"{minutes}:{seconds:02d}"


class PresetCheckpoint(keras.callbacks.Callback):
    """Saves the pipeline with ``save_to_preset`` after every epoch (atomic) plus ``state.json`` for resume."""

    def __init__(self, directory, steps_callback=None):
        super().__init__()
        self.directory = directory
        self.steps_callback = steps_callback

    def on_epoch_end(self, epoch, logs=None):
        self.model.save_to_preset(self.directory)
        steps = None if self.steps_callback is None else self.steps_callback.steps
        write_json(os.path.join(self.directory, "state.json"), {"epochs": epoch + 1, "steps": steps})


def train(model, data, steps=None, max_seconds=None, batch_size=32, learning_rate=1e-3, weight_decay=0.0,
          ema_momentum=0.995, checkpoint_dir=None, seed=0, verbose=1):
    """Train ``model`` on ``data`` with ``fit`` for ``steps`` optimizer steps and/or ``max_seconds``.

    Args:
        model: a ``VideoDiffusion`` (compiled here with AdamW unless already compiled).
        data: dict of numpy arrays with ``videos`` and ``captions`` (strings, tokenized
            here with the model's text encoder) or ``labels``.
        steps: optimizer steps (``None``: until ``max_seconds``).
        max_seconds: wall-clock budget (``None``: until ``steps``).
        batch_size, learning_rate, weight_decay: the AdamW run.
        ema_momentum: EMA of the weights kept by the optimizer and swapped in
            at the end (``None`` disables it).
        checkpoint_dir: save the pipeline there after every epoch (resume with
            ``VideoDiffusion.from_preset(checkpoint_dir)``).
        verbose: progress output (1: the Keras bar, or one line per epoch with
            a time budget and no ``steps``) or none (0).

    Returns: dict with ``losses`` (per step), ``seconds`` (elapsed at each step),
    ``steps``, ``stopped_by`` (``"steps"`` or ``"time"``) and ``steps_per_second``.
    """
    if steps is None and max_seconds is None:
        raise ValueError("Give `steps`, `max_seconds` or both: training needs an end.")
    if steps is not None and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"`max_seconds` must be positive, got {max_seconds!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not isinstance(data, dict) or "videos" not in data:
        raise ValueError("`data` must be a dict of arrays with a `videos` entry (and `captions` or `labels`).")
    keys = ["videos"] + [key for key in ("captions", "labels") if key in data]
    tokenizer = getattr(model.text_encoder, "tokenizer", None) if "captions" in data else None
    batches = VideoBatches({key: data[key] for key in keys}, batch_size=batch_size, tokenizer=tokenizer,
                           drop_remainder=True, seed=seed)
    if len(batches) == 0:
        raise ValueError(f"`data` holds {len(data['videos'])} videos, fewer than one batch of {batch_size}.")
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=keras.optimizers.AdamW(
            learning_rate, weight_decay=weight_decay, use_ema=ema_momentum is not None,
            ema_momentum=ema_momentum or 0.99,
        ))
    epochs = math.ceil(steps / len(batches)) if steps is not None else 1_000_000
    losses, budget = StepLosses(), TrainingBudget(steps, max_seconds)
    callbacks = [losses, budget]
    if steps is None and verbose:
        # A time budget has no epoch count for the Keras bar ("Epoch 3/1000000"): print our own lines.
        callbacks.append(BudgetProgress(budget, losses, max_seconds))
        verbose = 0
    if getattr(model.optimizer, "use_ema", False):
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    if checkpoint_dir is not None:
        callbacks.append(PresetCheckpoint(checkpoint_dir, budget))
    # With EMA, SwapEMAWeights(swap_on_epoch=False) copies the averaged weights in when fit ends.
    model.fit(batches, epochs=epochs, callbacks=callbacks, verbose=verbose)
    if checkpoint_dir is not None:
        model.save_to_preset(checkpoint_dir)
        write_json(os.path.join(checkpoint_dir, "state.json"), {"steps": budget.steps})
    elapsed = losses.seconds[-1] if losses.seconds else 0.0
    return dict(
        losses=losses.losses,
        seconds=losses.seconds,
        steps=budget.steps,
        stopped_by=budget.stopped_by or "epochs",
        steps_per_second=budget.steps / elapsed if elapsed else float("nan"),
    )


def plot_loss(losses, path, title="training loss"):
    """Save a PNG of the per-step loss (light) and its moving average (dark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.asarray(losses, dtype=np.float64)
    if losses.size == 0:
        raise ValueError("`losses` is empty: nothing to plot.")
    window = max(1, min(50, losses.size // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(np.arange(1, losses.size + 1), losses, color="#9ecae1", linewidth=0.8, label="per step")
    axis.plot(np.arange(window, losses.size + 1), smooth, color="#08519c", linewidth=1.6,
              label=f"moving average ({window})")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_yscale("log")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    with staged_file(path) as staging:
        figure.savefig(staging)
    plt.close(figure)
    return path


def contact_sheet(videos, path, scale=2, labels=None):
    """Save one PNG with a row per video and a column per frame (grey or RGB uint8 ``(B, F, H, W, C)``)."""
    from PIL import Image

    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.dtype != np.uint8:
        raise ValueError(f"`videos` must be uint8 (B, F, H, W, C); got {videos.dtype} {videos.shape}.")
    batch, frames, height, width, channels = videos.shape
    gap = 1
    sheet = np.full((batch * (height + gap) - gap, frames * (width + gap) - gap, channels), 64, np.uint8)
    for b in range(batch):
        for f in range(frames):
            sheet[b * (height + gap):b * (height + gap) + height, f * (width + gap):f * (width + gap) + width] = videos[b, f]
    image = Image.fromarray(sheet[..., 0] if channels == 1 else sheet)
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    with staged_file(path) as staging:
        image.save(staging, format="PNG")
    if labels is not None:
        write_json(os.path.splitext(path)[0] + ".json", {"rows": list(labels)})
    return path


def write_samples(videos, names, output_dir, fps=4, scale=4, formats=("gif",)):
    """Write every video as ``<output_dir>/<name>.<format>`` (upscaled ``scale``x, nearest) and return the paths."""
    videos = np.asarray(videos)
    if len(names) != len(videos):
        raise ValueError(f"`names` has {len(names)} entries for {len(videos)} videos.")
    for fmt in formats:
        if fmt not in ("gif", "mp4"):
            raise ValueError(f"`formats` entries must be 'gif' or 'mp4', got {fmt!r}.")
    paths = []
    for video, name in zip(videos, names):
        big = np.repeat(np.repeat(video, scale, axis=1), scale, axis=2) if scale > 1 else video
        for fmt in formats:
            path = os.path.join(output_dir, f"{name}.{fmt}")
            write_video(path, big, fps=fps)
            paths.append(path)
    return paths


def slug(text):
    """A file-name-safe form of a caption: lower case, words joined by ``_``."""
    return "_".join("".join(c for c in word if c.isalnum()) for word in text.lower().split()).strip("_")


def generate_in_batches(model, prompts, batch_size=30, progress=True, **generate_kwargs):
    """``model.generate`` over many prompts, ``batch_size`` at a time (one compiled loop serves all full batches).

    The seed of batch ``k`` is ``seed + k``, so a run is reproducible for a given batch size.
    """
    prompts = list(prompts)
    seed = int(generate_kwargs.pop("seed", 0))
    chunks = [prompts[i:i + batch_size] for i in range(0, len(prompts), batch_size)]
    bar = keras.utils.Progbar(len(prompts), unit_name="video") if progress and len(chunks) > 1 else None
    videos = []
    for k, chunk in enumerate(chunks):
        videos.append(model.generate(prompts=chunk, seed=seed + k, **generate_kwargs))
        if bar is not None:
            bar.add(len(chunk))
    return np.concatenate(videos, axis=0)


def evaluate_moving_mnist(model, samples_per_caption=4, sampler="ddpm", steps=50, guidance_scale=3.0, seed=0,
                          thresholding="static", batch_size=30, real_videos=None, progress=True, **sampler_options):
    """Sample every MovingMNIST caption and score the samples.

    Returns a dict with ``conditional_accuracy`` (the full result of
    ``keras_vdiff.metrics.conditional_accuracy``: overall, digit, motion, per
    class), ``frechet_distance`` on the MovingMNIST classifier's features
    against ``real_videos`` (generated held-out data of the same shape when
    ``None``), ``motion_ratio`` (mean absolute frame-to-frame change of the
    samples over that of the real videos: near 1 moves like the data, near 0
    is static), ``seconds_per_video`` and the settings.
    """
    from keras_vdiff.metrics.conditional_accuracy import conditional_accuracy
    from keras_vdiff.metrics.feature_statistics import frechet_video_distance
    from keras_vdiff.metrics.moving_mnist_classifier import MovingMNISTClassifier

    if not isinstance(samples_per_caption, int) or samples_per_caption < 1:
        raise ValueError(f"`samples_per_caption` must be a positive integer, got {samples_per_caption!r}.")
    captions = all_captions() * samples_per_caption
    digits = np.array([d for _ in range(samples_per_caption) for d in range(10) for _ in MOTIONS])
    motions = np.array([m for _ in range(samples_per_caption) for _ in range(10) for m in range(len(MOTIONS))])
    start = time.perf_counter()
    videos = generate_in_batches(model, captions, batch_size=batch_size, progress=progress, sampler=sampler,
                                 steps=steps, guidance_scale=guidance_scale, seed=seed, thresholding=thresholding,
                                 **sampler_options)
    seconds = time.perf_counter() - start
    if real_videos is None:
        frames, size = videos.shape[1], videos.shape[2]
        real_videos = moving_mnist(max(len(videos), 300), frame_size=size, num_frames=frames, seed=12345,
                                   split="test")["videos"]
    classifier = MovingMNISTClassifier.load()
    accuracy = conditional_accuracy(videos, digits, motions, classifier=classifier)
    distance = frechet_video_distance(real_videos, videos, classifier.features)

    def motion(v):
        return float(np.mean(np.abs(np.diff(v.astype(np.float32), axis=1))))

    return dict(
        conditional_accuracy=accuracy,
        frechet_distance=float(distance),
        motion_ratio=motion(videos) / motion(real_videos),
        seconds_per_video=seconds / len(videos),
        num_videos=len(videos),
        settings=dict(sampler=sampler, steps=steps, guidance_scale=guidance_scale, seed=seed,
                      thresholding=thresholding, **sampler_options),
        videos=videos,
        digits=digits,
        motions=motions,
    )
