"""Training and sampling jobs shared by the CLI, ``make demo`` and the experiment scripts.

The pieces a user would otherwise rewrite around ``model.fit``, one module per job:

- ``loop``: ``train(model, data, ...)`` runs ``fit`` for a number of optimizer
  steps or a wall-clock budget, with progress output and per-step losses; its
  callbacks (``StepLosses``, ``TrainingBudget``, ``BudgetLearningRate``,
  ``BudgetProgress``, ``StopOnNonFiniteLoss``) work in any ``fit``;
- ``checkpoints``: ``PresetCheckpoint`` / ``save_checkpoint`` save the pipeline
  and the run state together (finite weights only) and ``load_run_state``
  reads it back, so ``--resume`` continues the step count and the history;
- ``moving_mnist``: the demo's recipe (``TINY_MOVING_MNIST``, ``DEMO_TRAINING``,
  ``moving_mnist_text_to_video``, ``evaluate_moving_mnist``);
- ``media``: ``plot_loss``, ``write_samples``, ``contact_sheet``.

Everything writes atomically (temporary name, then rename), so an interrupted
job leaves either the previous file or the new one, never half of one.
"""

from keras_vdiff.training.checkpoints import PresetCheckpoint, load_run_state, non_finite_variables, save_checkpoint
from keras_vdiff.training.loop import (
    LEARNING_RATE_SCHEDULES,
    BudgetLearningRate,
    BudgetProgress,
    StepLosses,
    StopOnNonFiniteLoss,
    TrainingBudget,
    train,
    warmup_cosine,
)
from keras_vdiff.training.media import check_writable, contact_sheet, plot_loss, slug, write_samples
from keras_vdiff.training.moving_mnist import (
    DEMO_TRAINING,
    RECOMMENDED_SAMPLING,
    TINY_MOVING_MNIST,
    all_captions,
    evaluate_moving_mnist,
    generate_in_batches,
    moving_mnist_text_to_video,
    moving_mnist_training_data,
)
