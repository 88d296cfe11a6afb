"""``train``: ``model.fit`` for a number of steps or a wall-clock budget, with checkpoints, resume and a NaN stop.

The callbacks are usable in any ``fit``: :class:`StepLosses` (per-step
losses), :class:`TrainingBudget` (stop at a step count or a time limit),
:class:`BudgetLearningRate` (warm-up and cosine decay over that budget, steps
or seconds), :class:`BudgetProgress` (one line per epoch for a time budget) and
:class:`StopOnNonFiniteLoss` (stop at the first NaN / inf loss, naming the
step and the last finite loss).
"""

import math
import time

import keras
import numpy as np

from keras_vdiff.data.pipelines import VideoBatches
from keras_vdiff.training.checkpoints import PresetCheckpoint, restore_random_state, run_state, save_checkpoint
from keras_vdiff.validation import check_int


def step_loss(batch, mean, previous_mean):
    """The loss of step ``batch`` (0-based in its epoch) from Keras' running mean after it and the one before."""
    return (batch + 1) * mean - batch * previous_mean


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
        self.losses.append(step_loss(batch, mean, self._previous_mean))
        self._previous_mean = mean
        self.seconds.append(time.perf_counter() - self._start)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops ``fit`` at the first non-finite loss, saying at which step and what the last finite loss was.

    Unlike ``keras.callbacks.TerminateOnNaN`` it keeps the report (``message``,
    ``step``, ``last_finite_loss``) for the caller, and ``PresetCheckpoint``
    refuses to save the non-finite weights that follow such a step.

    Args:
        initial_step: optimizer steps done before this ``fit`` (a resumed run), so
            the reported step counts the whole run.

    Example:
        >>> stop = StopOnNonFiniteLoss()
        >>> model.fit(batches, epochs=10, callbacks=[stop])
        >>> if stop.step is not None: print(stop.message)
    """

    def __init__(self, initial_step=0):
        super().__init__()
        self.initial_step = int(initial_step)
        self.step = None
        self.last_finite_loss = None
        self.message = None
        self._steps = 0
        self._previous_mean = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1
        mean = float(logs["loss"])
        if np.isfinite(mean):
            self.last_finite_loss = step_loss(batch, mean, self._previous_mean)
            self._previous_mean = mean
            return
        self.step = self.initial_step + self._steps
        last = "none" if self.last_finite_loss is None else f"{self.last_finite_loss:.6g}"
        self.message = (
            f"Training stopped: the loss is non-finite ({mean}) at step {self.step}; the last finite loss was {last}. "
            "Common causes: a learning rate too high, or labels outside [0, num_classes) in streamed data."
        )
        print(self.message, flush=True)
        self.model.stop_training = True


class TrainingBudget(keras.callbacks.Callback):
    """Stops ``fit`` after ``max_steps`` optimizer steps or ``max_seconds`` of wall time, whichever first.

    ``initial_steps`` (a resumed run) count towards ``max_steps`` and ``steps``.
    """

    def __init__(self, max_steps=None, max_seconds=None, initial_steps=0):
        super().__init__()
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.steps = int(initial_steps)
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


def warmup_cosine(peak, step, progress, warmup_steps=0, final_fraction=0.0):
    """A learning rate: linear warm-up over ``warmup_steps``, then a cosine from ``peak`` to ``final_fraction * peak``.

    ``progress`` is the fraction of the run done, in [0, 1] (of its steps, or of
    its wall-clock budget); the cosine follows it, so one schedule serves a step
    budget and a time budget alike.
    """
    progress = min(max(float(progress), 0.0), 1.0)
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    cosine = final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak * warmup * cosine


class BudgetLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every step from how much of a :class:`TrainingBudget` is used.

    A step-indexed ``LearningRateSchedule`` needs the run's length in steps; a
    wall-clock budget (``make demo``'s 8 minutes) does not know it in advance.
    This callback decays over whichever end of the budget is nearer: progress is
    ``max(steps / max_steps, elapsed / max_seconds)``. The rate is
    :func:`warmup_cosine` of ``peak``.

    The optimizer must have been built with a float learning rate (a variable).
    On JAX, ``fit`` keeps the training state outside the variables during an
    epoch; the callback syncs it before assigning, so the new rate reaches the
    next step. Steps whose rate is unchanged (a constant rate after its warm-up)
    are left alone, so they cost no sync.

    Args:
        budget: the run's :class:`TrainingBudget` (its ``steps`` and ``elapsed``).
        peak: the learning rate after warm-up.
        warmup_steps: linear warm-up from ``peak / warmup_steps``.
        final_fraction: the rate at the end of the budget, as a fraction of ``peak``.
    """

    def __init__(self, budget, peak, warmup_steps=0, final_fraction=0.0):
        super().__init__()
        if budget.max_steps is None and budget.max_seconds is None:
            raise ValueError("BudgetLearningRate needs a budget with `max_steps` or `max_seconds` to decay over.")
        if not peak > 0:
            raise ValueError(f"`peak` must be a positive learning rate, got {peak!r}.")
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(f"`final_fraction` must be in [0, 1], got {final_fraction!r}.")
        self.budget = budget
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        self.rates = []  # (step, rate) each time the rate was set

    def progress(self):
        """The fraction of the budget used: of its steps or of its seconds, whichever is further along."""
        fractions = []
        if self.budget.max_steps is not None:
            fractions.append(self.budget.steps / self.budget.max_steps)
        if self.budget.max_seconds is not None:
            fractions.append(self.budget.elapsed / self.budget.max_seconds)
        return max(fractions)

    def on_train_batch_begin(self, batch, logs=None):
        step = self.budget.steps
        rate = warmup_cosine(self.peak, step, self.progress(), self.warmup_steps, self.final_fraction)
        if self.rates and rate == self.rates[-1][1]:
            return
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # the optimizer variables hold the latest state; the next step reads them
        self.model.optimizer.learning_rate = rate
        self.rates.append((step, rate))


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


def _check_budget(steps, max_seconds, batch_size, data):
    if steps is None and max_seconds is None:
        raise ValueError("Give `steps`, `max_seconds` or both: training needs an end.")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"`max_seconds` must be positive, got {max_seconds!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not isinstance(data, dict) or "videos" not in data:
        raise ValueError("`data` must be a dict of arrays with a `videos` entry (and `captions` or `labels`).")


LEARNING_RATE_SCHEDULES = ("constant", "cosine")


def train(model, data, steps=None, max_seconds=None, batch_size=32, learning_rate=1e-3, weight_decay=0.0,
          ema_momentum=0.995, checkpoint_dir=None, seed=0, verbose=1, initial_state=None,
          learning_rate_schedule="constant", warmup_steps=0):
    """Train ``model`` on ``data`` with ``fit`` until ``steps`` optimizer steps in all and/or ``max_seconds``.

    Args:
        model: a ``VideoDiffusion`` (compiled here with AdamW unless already compiled).
        data: dict of numpy arrays with ``videos`` and ``captions`` (strings, tokenized
            here with the model's text encoder) or ``labels``.
        steps: optimizer steps of the whole run, resumed steps included (``None``: until ``max_seconds``).
        max_seconds: wall-clock budget of this call (``None``: until ``steps``).
        batch_size, learning_rate, weight_decay: the AdamW run.
        learning_rate_schedule: ``"constant"``, or ``"cosine"``: ``learning_rate``
            decays to zero over the budget (its steps or its seconds, whichever
            ends first; :class:`BudgetLearningRate`). A resumed run continues a
            step budget's cosine; a time budget is this call's, so its cosine
            starts again. (``make demo``'s 8 minutes learned more with a constant
            rate: benchmarks/RESULTS.md.)
        warmup_steps: linear learning-rate warm-up over the run's first steps (a resumed run past
            them does not warm up again).
        ema_momentum: EMA of the weights kept by the optimizer and swapped in
            at the end (``None`` disables it).
        checkpoint_dir: save the pipeline and the run state there after every
            epoch whose weights are finite (``keras_vdiff.training.save_checkpoint``).
        verbose: progress output (1: the Keras bar, or one line per epoch with
            a time budget and no ``steps``) or none (0).
        initial_state: the state saved with the checkpoint a resumed run starts from
            (``load_run_state(checkpoint_dir)``): its steps count towards ``steps``,
            the data order continues from its epoch, its losses start the history.

    Returns: dict with ``losses`` and ``seconds`` (per step, the whole run's), ``steps``,
    ``stopped_by`` (``"steps"``, ``"time"``, ``"epochs"`` or ``"non_finite"``), ``message``
    (why it stopped, for ``"non_finite"``) and ``steps_per_second`` (of this call).
    """
    _check_budget(steps, max_seconds, batch_size, data)
    if learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
        raise ValueError(f"`learning_rate_schedule` must be one of {LEARNING_RATE_SCHEDULES}, "
                         f"got {learning_rate_schedule!r}.")
    check_int(warmup_steps, "warmup_steps", minimum=0)
    state = dict(initial_state or {"epochs": 0, "steps": 0, "losses": [], "seconds": []})
    keys = ["videos"] + [key for key in ("captions", "labels") if key in data]
    tokenizer = getattr(model.text_encoder, "tokenizer", None) if "captions" in data else None
    batches = VideoBatches({key: data[key] for key in keys}, batch_size=batch_size, tokenizer=tokenizer,
                           drop_remainder=True, seed=seed)
    for _ in range(state["epochs"]):
        batches.on_epoch_end()  # the data order an uninterrupted run would see in this epoch
    restore_random_state(model, state.get("random_state"))  # and the timesteps and noise it would draw
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=keras.optimizers.AdamW(
            learning_rate, weight_decay=weight_decay, use_ema=ema_momentum is not None,
            ema_momentum=ema_momentum or 0.99,
        ))
    remaining = None if steps is None else steps - state["steps"]
    result = dict(losses=list(state["losses"]), seconds=list(state["seconds"]), steps=state["steps"],
                  stopped_by="steps", message=None, steps_per_second=float("nan"))
    if remaining is not None and remaining <= 0:
        return result
    losses, budget = StepLosses(), TrainingBudget(steps, max_seconds, initial_steps=state["steps"])
    stop = StopOnNonFiniteLoss(initial_step=state["steps"])
    callbacks = [losses, stop, budget]
    if steps is None and verbose:
        # A time budget has no epoch count for the Keras bar ("Epoch 3/1000000"): print our own lines.
        callbacks.append(BudgetProgress(budget, losses, max_seconds))
        verbose = 0
    if learning_rate_schedule == "cosine" or warmup_steps:
        final = 0.0 if learning_rate_schedule == "cosine" else 1.0
        callbacks.append(BudgetLearningRate(budget, learning_rate, warmup_steps, final_fraction=final))
    if getattr(model.optimizer, "use_ema", False):
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=False))
    checkpoint = None
    if checkpoint_dir is not None:
        checkpoint = PresetCheckpoint(checkpoint_dir, budget, losses, initial_state=state)
        callbacks.append(checkpoint)
    epochs = state["epochs"] + (math.ceil(remaining / len(batches)) if remaining is not None else 1_000_000)
    # With EMA, SwapEMAWeights(swap_on_epoch=False) copies the averaged weights in when fit ends.
    # shuffle=False: VideoBatches reshuffles every epoch from its own seed, so a resumed run sees the same
    # batches as an uninterrupted one (Keras would also shuffle the batch order, from the global RNG).
    history = model.fit(batches, initial_epoch=state["epochs"], epochs=epochs, callbacks=callbacks, verbose=verbose,
                        shuffle=False)
    epochs_done = state["epochs"] + len(history.epoch)
    if checkpoint is not None and stop.step is None:
        save_checkpoint(model, checkpoint_dir, checkpoint.state(epochs_done))
    run = run_state(state, budget, losses, epochs_done)
    elapsed = losses.seconds[-1] if losses.seconds else 0.0
    result.update(losses=run["losses"], seconds=run["seconds"], steps=budget.steps, message=stop.message,
                  stopped_by="non_finite" if stop.step is not None else (budget.stopped_by or "epochs"),
                  steps_per_second=len(losses.losses) / elapsed if elapsed else float("nan"))
    return result
