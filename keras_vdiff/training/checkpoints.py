"""Checkpoints of a training run: the pipeline preset plus the run's state, saved together, finite or not at all.

A checkpoint directory is a ``VideoDiffusion`` preset with one more file,
``state.json``: the epochs and optimizer steps done, the per-step losses so
far and the states of the random generators. Both are staged in one folder and swapped in at once
(``keras_vdiff.atomic_files.staged_directory``), so the state always describes
the weights next to it, and a run killed at any moment resumes from the last
complete checkpoint with its step count and history intact.
"""

import json
import os

import keras
import numpy as np

from keras_vdiff.atomic_files import staged_directory, write_json

STATE_FILE = "state.json"


def non_finite_variables(model):
    """Paths of the model's (and its optimizer's) variables holding NaN or inf; empty when all are finite."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables += list(optimizer.variables)
    bad = []
    for variable in variables:
        value = keras.ops.convert_to_numpy(variable.value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad.append(variable.path)
    return bad


def _seed_variables(model):
    # keras.random.SeedGenerator states: variables of the model, but not in its saved weights.
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def random_state(model):
    """The states of the model's random seed generators (training's timesteps, noise, dropout), in model order.

    Stored by position, not by variable path: Keras numbers the paths per process
    (``seed_generator_2/...``), so a reloaded model's paths differ.
    """
    return [keras.ops.convert_to_numpy(v.value).tolist() for v in _seed_variables(model)]


def restore_random_state(model, states):
    """Put back seed-generator states saved by :func:`random_state`, so a resumed run draws what it would have."""
    variables = _seed_variables(model)
    if not states:
        return
    if not isinstance(states, list) or len(states) != len(variables):
        raise ValueError(f"The saved random state holds {len(states)} seed generators; the model has {len(variables)}.")
    for variable, value in zip(variables, states):
        variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))


def save_checkpoint(model, directory, state):
    """Save ``model`` (with its optimizer) and the run ``state`` to ``directory``, atomically.

    Raises ``FloatingPointError`` naming the variables, and writes nothing,
    when any weight is non-finite: a diverged run never replaces its last
    good checkpoint.
    """
    bad = non_finite_variables(model)
    if bad:
        raise FloatingPointError(
            f"Not saving a checkpoint to {directory}: {len(bad)} variables are non-finite "
            f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''})."
        )
    with staged_directory(directory) as staging:
        model.save_to_preset(staging)
        write_json(os.path.join(staging, STATE_FILE), dict(state, random_state=random_state(model)))


def load_run_state(directory):
    """The run state saved with the checkpoint in ``directory``: ``epochs``, ``steps``, ``losses``, ``seconds``
    and ``random_state`` (the seed generators' states).

    A checkpoint from before the state carried the history gives empty
    ``losses``; no ``state.json`` at all gives a fresh state.
    """
    path = os.path.join(directory, STATE_FILE)
    state = {"epochs": 0, "steps": 0, "losses": [], "seconds": [], "random_state": []}
    if not os.path.exists(path):
        return state
    try:
        with open(path) as file:
            saved = json.load(file)
    except (OSError, ValueError) as error:
        raise ValueError(f"The run state {path} cannot be read ({error}); it is not a keras_vdiff state.json.")
    state.update({key: saved[key] for key in state if saved.get(key) is not None})
    return state


def run_state(initial_state, budget, losses, epochs):
    """A run's state: ``initial_state`` (what a resumed run started from) extended by this ``fit``'s steps.

    Args:
        initial_state: dict with ``epochs``, ``steps``, ``losses``, ``seconds`` (zeros / empty for a new run).
        budget: the ``TrainingBudget`` of this ``fit`` (its step count includes the initial steps), or None.
        losses: the ``StepLosses`` of this ``fit`` (None: no per-step history).
        epochs: epochs done over the whole run.
    """
    offset = initial_state["seconds"][-1] if initial_state["seconds"] else 0.0
    new_losses, new_seconds = (losses.losses, losses.seconds) if losses is not None else ([], [])
    return {
        "epochs": epochs,
        "steps": budget.steps if budget is not None else initial_state["steps"] + len(new_losses),
        "losses": list(initial_state["losses"]) + [float(v) for v in new_losses],
        "seconds": list(initial_state["seconds"]) + [offset + float(s) for s in new_seconds],
    }


class PresetCheckpoint(keras.callbacks.Callback):
    """Saves the pipeline and the run state (:func:`save_checkpoint`) after every epoch whose weights are finite.

    Args:
        directory: the checkpoint directory.
        budget: the run's ``TrainingBudget`` (its step count goes into the state).
        losses: the run's ``StepLosses`` (the per-step history goes into the state).
        initial_state: the state of the run this one resumes (its epochs, losses and seconds come first).
    """

    def __init__(self, directory, budget=None, losses=None, initial_state=None):
        super().__init__()
        self.directory = directory
        self.budget = budget
        self.losses = losses
        self.initial_state = initial_state or {"epochs": 0, "steps": 0, "losses": [], "seconds": []}
        self.skipped = []

    def state(self, epochs):
        """The run state after ``epochs`` epochs (counted over the whole run, resumes included)."""
        return run_state(self.initial_state, self.budget, self.losses, epochs)

    def on_epoch_end(self, epoch, logs=None):
        try:
            save_checkpoint(self.model, self.directory, self.state(epoch + 1))
        except FloatingPointError as error:
            self.skipped.append(epoch + 1)
            print(f"epoch {epoch + 1}: {error}", flush=True)
