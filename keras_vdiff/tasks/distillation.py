"""Few-step students: progressive distillation and guided distillation, trained with ``fit``.

- ``ProgressiveDistillation`` (Salimans & Ho 2022, "Progressive Distillation for Fast
  Sampling of Diffusion Models", Algorithms 2-4 of seed 001 ref. Algorithms 3 and 4): a
  student initialised from the teacher learns to take in one DDIM step what the teacher
  takes in two. The student samples ``N`` DDIM steps on the ``trailing`` grid
  ``t_k = k / N`` (training timestep ``round(k T / N) - 1``, ``k = N..1``, then the clean
  point); the teacher runs the ``2N`` grid of the same spacing, whose even points are the
  student's. Per example a student point ``t`` is drawn, ``z_t = alpha_t x + sigma_t eps``,
  the teacher takes two DDIM steps ``t -> t - 0.5/N -> t - 1/N`` (the library's
  ``DDIMSampler.step``) and the target ``x~`` is the clean sample from which one DDIM step
  lands on the teacher's ``z_t''``::

      x~ = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

  (``x~ = z_t''`` into the clean point), converted to the student's prediction
  (``v = alpha eps~ - sigma x~`` with ``eps~ = (z_t - alpha x~) / sigma``, ``eps~``, or ``x~``).
  The loss weights the x-space error by ``1 + SNR`` (``"snr+1"``: exactly the MSE of
  ``v``) or ``max(SNR, 1)`` (``"truncated_snr"``). A round halves ``N``: the next round's
  teacher is this round's ``student``. Given a plain conditional teacher and a
  ``GuidanceConditionedDiffusion.from_teacher`` student, a round also folds the teacher's
  classifier-free guidance into the student (both of Meng et al.'s stages in one round,
  trained on the student's grid points only).
- ``GuidedDistillation`` (Meng et al. 2023, "On Distillation of Guided Diffusion Models",
  stage one): a student conditioned on the guidance scale ``w`` learns the teacher's guided
  prediction ``null + w (cond - null)`` (the library's convention, ``diffusion/guidance.py``;
  Meng's ``(1 + w') cond - w' null`` is ``w = 1 + w'``) at every training timestep, ``w``
  drawn uniformly in ``guidance_range`` per example. Stage two is ``ProgressiveDistillation``
  of that student (``w`` drawn the same way, passed to teacher and student).
- ``GuidanceConditionedDiffusion``: the w-conditioned student, a ``VideoDiffusion`` whose
  ``generate(guidance_scale=w)`` runs one forward per step (no null pass). ``w`` reaches the
  backbone as ``GuidanceEmbedding(w)`` (sinusoidal features of ``w`` and an MLP whose last
  layer starts at zero, so the fresh student is the teacher's conditional model) added to the
  ``pooled_text`` input, which the backbone turns into its adaLN vector
  (``c = t_emb + PooledTextEmbedding(pooled_text)``, ``layers/conditioning.py``): Meng et al.
  add a w embedding to the time embedding; here it enters the same vector through the
  pooled-text path without changing the backbone. It needs a text backbone that uses the
  pooled text.

The students are plain tasks (``VideoDiffusion`` / ``GuidanceConditionedDiffusion``): save
them with ``distiller.student.save_to_preset`` and sample with ``generate(steps=N)``; their
default sampler is DDIM on the trailing grid. The distillers themselves are not saved
(``get_config`` raises): they hold a teacher.

Example:
    >>> teacher = kv.VideoDiffusion.from_preset("latte_tiny_moving_mnist")
    >>> guided = kv.GuidedDistillation(teacher, guidance_range=(2.0, 4.0))
    >>> guided.compile(optimizer=keras.optimizers.AdamW(1e-4)); guided.fit(batches, epochs=1)
    >>> teacher = guided.student
    >>> for steps in (16, 8, 4):
    ...     round_ = kv.ProgressiveDistillation(teacher, student_steps=steps)
    ...     round_.compile(optimizer=keras.optimizers.AdamW(1e-4)); round_.fit(batches, epochs=1)
    ...     teacher = round_.student
    >>> videos = teacher.generate(prompts=["The digit 3 is moving up and down"], steps=4, guidance_scale=3.0)
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.guidance import combine_guidance
from keras_vdiff.diffusion.process import gather_per_example, per_example_mean
from keras_vdiff.diffusion.samplers import DDIMSampler
from keras_vdiff.layers.conditioning import CONDITION_KEYS
from keras_vdiff.layers.embeddings import TimestepEmbedding
from keras_vdiff.tasks import conditioning as contract
from keras_vdiff.tasks.replicas import global_batch_draw, scaled_for_replicas
from keras_vdiff.tasks.video_diffusion import VideoDiffusion, training_latents

WEIGHTINGS = ("snr+1", "truncated_snr")
# The student's sampler: DDIM on the grid the distillation trains on.
STUDENT_SAMPLER = ("ddim", {"timestep_spacing": "trailing"})


def checked_guidance_range(guidance_range, name="guidance_range"):
    """``(low, high)`` floats with ``low <= high``, or a ``ValueError`` naming the argument."""
    try:
        low, high = (float(v) for v in guidance_range)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a pair (low, high) of numbers, got {guidance_range!r}.") from None
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise ValueError(f"`{name}` must be finite with low <= high, got {guidance_range!r}.")
    return low, high


def x_space_weights(weighting, alpha, sigma):
    """The weight of the x-space error ``|x^ - x~|^2``: ``1 + SNR`` or ``max(SNR, 1)`` (Salimans & Ho, Sec. 4)."""
    snr = ops.square(alpha) / ops.square(sigma)
    return snr + 1.0 if weighting == "snr+1" else ops.maximum(snr, 1.0)


def prediction_space_factor(prediction, alpha, sigma):
    """``|x^ - x~|^2 / |p^ - p~|^2`` for the prediction ``p``: ``sigma^2`` (v), ``sigma^2 / alpha^2`` (eps), 1 (x0)."""
    if prediction == "v":
        return ops.square(sigma)
    if prediction == "epsilon":
        return ops.square(sigma) / ops.square(alpha)
    return ops.ones_like(alpha)


def prediction_from_x0(prediction, x0, z, alpha, sigma):
    """The prediction (``"v"``, ``"epsilon"`` or ``"x0"``) whose implied clean sample at ``z`` is ``x0``."""
    eps = (z - alpha * x0) / sigma
    if prediction == "epsilon":
        return eps
    if prediction == "x0":
        return x0
    return alpha * eps - sigma * x0


def one_step_target(z_t, z_target, alpha, sigma, alpha_next, sigma_next):
    """The ``x~`` from which one DDIM step ``z_t -> alpha' x~ + sigma' (z_t - alpha x~) / sigma`` gives ``z_target``."""
    ratio = sigma_next / sigma
    return (z_target - ratio * z_t) / (alpha_next - ratio * alpha)


def clone_task(task):
    """A copy of ``task`` with its own weights (same class and config; the text encoder's weights too)."""
    clone = type(task).from_config(task.get_config())
    clone.set_weights(task.get_weights())
    return clone


def freeze(task):
    """``task`` with ``trainable = False`` (a teacher); returned for chaining."""
    task.trainable = False
    return task


@keras.saving.register_keras_serializable(package="keras_vdiff")
class GuidanceEmbedding(TimestepEmbedding):
    """The guidance scale ``w`` -> a vector added to the backbone's pooled-text input (zero at initialisation).

    ``TimestepEmbedding`` of ``w * time_scale`` (sinusoids, ``Dense -> SiLU -> Dense``) whose last
    ``Dense`` starts at zero: a fresh student is its teacher's conditional model.

    Args:
        hidden_dim: output width (the backbone's ``text_dim``).
        frequency_dim, time_scale: of the sinusoids (``w`` in [1, 10] -> [100, 1000] with the default 100).

    Example:
        >>> GuidanceEmbedding(64)(keras.ops.array([2.0, 4.0])).shape
        (2, 64)
    """

    def __init__(self, hidden_dim, frequency_dim=64, time_scale=100.0, **kwargs):
        super().__init__(hidden_dim, frequency_dim=frequency_dim, time_scale=time_scale, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
        for weight in self.dense_2.weights:
            weight.assign(ops.zeros(weight.shape, weight.dtype))


def check_guidance_backbone(backbone):
    """The w embedding enters through ``pooled_text``: the backbone must be text-conditioned and use it."""
    if backbone.conditioning != "text" or not getattr(backbone, "pooled_text", True):
        raise ValueError(
            "GuidanceConditionedDiffusion adds the guidance embedding to the `pooled_text` input: it needs a "
            f"text-conditioned backbone that uses the pooled text, got conditioning={backbone.conditioning!r}, "
            f"pooled_text={getattr(backbone, 'pooled_text', True)!r}."
        )


@keras.saving.register_keras_serializable(package="keras_vdiff")
class GuidanceConditionedDiffusion(VideoDiffusion):
    """A ``VideoDiffusion`` told the guidance scale: ``generate(guidance_scale=w)`` runs without the null pass.

    Trained by ``GuidedDistillation`` (and halved by ``ProgressiveDistillation``); the scale reaches
    the backbone as ``GuidanceEmbedding(w)`` added to ``pooled_text`` (module docstring).

    Args:
        backbone: a text-conditioned backbone that uses the pooled text.
        guidance_range: ``(low, high)``, the scales it was trained on (``generate`` refuses others).
        **kwargs: those of ``VideoDiffusion``.

    Example:
        >>> student = GuidanceConditionedDiffusion(backbone, process, text_encoder=encoder)
        >>> videos = student.generate(prompts=["The digit 3 is moving up and down"], guidance_scale=3.0, steps=8)
    """

    def __init__(self, backbone, process=None, guidance_range=(1.0, 5.0), **kwargs):
        super().__init__(backbone, process, **kwargs)
        check_guidance_backbone(backbone)
        self.guidance_range = checked_guidance_range(guidance_range)
        self.guidance_embedding = GuidanceEmbedding(backbone.text_dim, name="guidance_embedding")
        self.guidance_embedding.build((None,))

    @classmethod
    def from_teacher(cls, teacher, guidance_range=(1.0, 5.0)):
        """A fresh student of the conditional ``teacher``: its weights copied, a zero w embedding.

        ``GuidedDistillation``'s default student; give it to ``ProgressiveDistillation(teacher,
        student=...)`` to fold the guidance into a halving round instead.
        """
        copy = clone_task(teacher)
        return cls(copy.backbone, copy.process, guidance_range=guidance_range, text_encoder=copy.text_encoder,
                   autoencoder=copy.autoencoder, preprocessor=copy.preprocessor, condition_dropout=0.0,
                   sampler=teacher.sampler, sampler_options=dict(teacher.sampler_options) or None)

    def with_guidance(self, inputs, guidance):
        """Backbone inputs with ``guidance`` ((B,) scales) embedded into their ``pooled_text``."""
        return dict(inputs, pooled_text=inputs["pooled_text"] + self.guidance_embedding(guidance))

    def denoiser_inputs(self, latents, timesteps, args):
        """The backbone's inputs at a sampling step: the plan's guidance vector added to ``pooled_text``."""
        inputs = super().denoiser_inputs(latents, timesteps, args)
        return dict(inputs, pooled_text=inputs["pooled_text"] + args["task_inputs"]["guidance_vector"])

    def prepare_generation(self, guidance_scale=4.0, **kwargs):
        """``VideoDiffusion.prepare_generation`` without null rows; the scale's embedding goes in ``task_inputs``.

        The embedding does not change over the steps: computed here, it enters the compiled loop as
        an explicit argument (the loop maps only the backbone's variables).
        """
        low, high = self.guidance_range
        if not low <= guidance_scale <= high:
            raise ValueError(
                f"`guidance_scale`={guidance_scale!r} is outside the range this model was distilled on, "
                f"[{low}, {high}]."
            )
        plan = super().prepare_generation(guidance_scale=1.0, **kwargs)
        scales = ops.full((plan["batch"],), float(guidance_scale), dtype="float32")
        vector = ops.cast(self.guidance_embedding(scales), "float32")
        return dict(plan, guidance_scale=float(guidance_scale), task_inputs=dict(plan["task_inputs"],
                                                                                 guidance_vector=vector))

    def get_config(self):
        config = super().get_config()
        config.update(guidance_range=list(self.guidance_range))
        return config


class DistillationTask(VideoDiffusion):
    """What both distillers share: a frozen teacher, a student task, its backbone trained by ``fit``.

    The distiller is a ``VideoDiffusion`` over the student's backbone (``fit`` and its checks);
    ``generate`` samples with the student. It is not serializable: save ``student``.
    """

    def __init__(self, teacher, student, weighting="snr+1", seed=None, **kwargs):
        if not isinstance(teacher, VideoDiffusion):
            raise TypeError(f"`teacher` must be a VideoDiffusion, got {type(teacher).__name__}.")
        if not isinstance(teacher.process, GaussianDiffusion):
            raise ValueError(f"Distillation needs a GaussianDiffusion teacher, got {type(teacher.process).__name__}.")
        if teacher.backbone.self_conditioning:
            raise ValueError("Distillation of self-conditioning backbones is not supported.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
        if student.process.get_config() != teacher.process.get_config():
            raise ValueError("The student's process must be the teacher's (the same schedule and prediction).")
        super().__init__(student.backbone, student.process, text_encoder=student.text_encoder,
                         autoencoder=student.autoencoder, condition_dropout=0.0, seed=seed,
                         preprocessor=student.preprocessor, **kwargs)
        self.teacher = freeze(teacher)
        if student.text_encoder is not None:
            student.text_encoder.trainable = False  # the teacher's text features, kept
        self.student = student
        self.weighting = weighting

    def generate(self, *args, **kwargs):
        """The student's ``generate``."""
        return self.student.generate(*args, **kwargs)

    def get_config(self):
        raise NotImplementedError(
            f"A {type(self).__name__} holds its teacher and is not saved: save `.student` "
            "(`distiller.student.save_to_preset(path)`)."
        )

    def _draw_guidance(self, batch_size, guidance_range):
        """Per-example scales, uniform in ``guidance_range`` (B,)."""
        low, high = guidance_range
        draw = global_batch_draw(lambda n: keras.random.uniform((n,), seed=self.seed_generator), batch_size)
        return low + (high - low) * draw

    def _training_batch(self, x):
        """A batch dict -> ``(latents, noise, conditions)``: [-1, 1] latents, standard normal noise, no dropout."""
        if not isinstance(x, dict) or "videos" not in x:
            raise ValueError("Distillation batches must be dicts with a `videos` entry.")
        latents, repeats = training_latents(contract.videos_to_unit_range(x["videos"]), self.backbone,
                                            self.autoencoder)
        batch_size = ops.shape(latents)[0]
        noise = global_batch_draw(lambda n: keras.random.normal((n,) + tuple(latents.shape[1:]),
                                                                seed=self.seed_generator), batch_size)
        if self.conditioning is None:
            return latents, noise, {}
        drop = ops.zeros((batch_size,), dtype="bool")
        conditions = contract.training_conditions(x, self.backbone, drop, repeats, self.text_encoder,
                                                  self.preprocessor)
        return latents, noise, conditions

    def _loss(self, output, target, alpha, sigma):
        """Per-example weighted MSE in the student's prediction space (the x-space weighting converted)."""
        prediction, _ = self.process.split_output(output)
        factor = x_space_weights(self.weighting, alpha, sigma) * prediction_space_factor(
            self.process.prediction, alpha, sigma)
        return per_example_mean(ops.square(prediction - target) * factor)

    def _finish_loss(self, per_example, sample_weight):
        return scaled_for_replicas(contract.batch_loss(per_example, sample_weight, self.losses))


def guided_output(task, inputs, guidance, prediction_channels):
    """``task``'s prediction at ``inputs`` under guidance ``guidance`` ((B,) scales) as the library combines it.

    A ``GuidanceConditionedDiffusion`` takes the scale as an input (one forward); another task runs
    the conditional and the null rows in one stacked forward and combines them (``combine_guidance``);
    ``guidance=None``: the conditional prediction.
    """
    if isinstance(task, GuidanceConditionedDiffusion):
        return task.backbone(task.with_guidance(inputs, guidance), training=False)
    if guidance is None or task.conditioning is None:
        return task.backbone(inputs, training=False)
    conditions = {key: inputs[key] for key in CONDITION_KEYS[task.conditioning]}
    batch = ops.shape(inputs["latents"])[0]
    null = contract.drop_conditions(conditions, ops.ones((batch,), dtype="bool"), task.backbone.num_classes)
    stacked = {key: ops.concatenate([value, value], axis=0) for key, value in inputs.items()}
    stacked.update({key: ops.concatenate([conditions[key], null[key]], axis=0) for key in conditions})
    output = task.backbone(stacked, training=False)
    scale = ops.reshape(guidance, (-1,) + (1,) * (len(inputs["latents"].shape) - 1))
    return combine_guidance(output, scale, prediction_channels)


class ProgressiveDistillation(DistillationTask):
    """One round of progressive distillation (Salimans & Ho 2022): the student takes two teacher DDIM steps in one.

    Args:
        teacher: the ``VideoDiffusion`` to distil (Gaussian process; frozen here), sampled with DDIM on the
            ``trailing`` grid of ``2 * student_steps`` steps. A ``GuidanceConditionedDiffusion`` teacher
            (guided distillation's stage one, or an earlier round) takes per-example scales.
        student: the task trained (default: a copy of the teacher, Algorithm 2's initialisation); it keeps
            the teacher's class, process and text encoder (frozen) and samples DDIM on the trailing grid.
            For a plain conditional teacher it may be a ``GuidanceConditionedDiffusion``
            (``GuidanceConditionedDiffusion.from_teacher(teacher, range)``): the round then folds the teacher's
            classifier-free guidance into the student too, the scale embedded (Meng et al.'s two
            stages in one; it trains only on the student's grid points, not on every timestep).
        student_steps: ``N``, the student's number of DDIM steps (the teacher takes ``2N``).
        guidance_scale: a plain conditional teacher is distilled with this fixed classifier-free
            guidance (its null rows stacked in one forward); ``None`` or 1: without guidance.
        guidance_range: ``(low, high)`` scales drawn per example for a ``GuidanceConditionedDiffusion``
            teacher (default: its own ``guidance_range``) or, with a plain teacher, for a
            guidance-conditioned student (default: the student's range; ``guidance_scale`` fixes one).
        weighting: ``"snr+1"`` (``(1 + SNR) |x^ - x~|^2``, the MSE of v) or ``"truncated_snr"``
            (``max(SNR, 1) |x^ - x~|^2``). An epsilon student's MSE then carries ``weight / SNR``, huge at
            the noisiest grid point (the reason Salimans & Ho distil v or x): prefer a v-prediction teacher.
        teacher_thresholding: thresholding of the teacher's DDIM steps (``None``, ``"static"``, ...).
        seed: seed of the training randomness (grid points, noise, scales).

    Example:
        >>> distiller = ProgressiveDistillation(teacher, student_steps=8)
        >>> distiller.compile(optimizer=keras.optimizers.AdamW(1e-4))
        >>> distiller.fit(batches, epochs=1)
        >>> distiller.student.generate(prompts=["..."], steps=8)
    """

    def __init__(self, teacher, student=None, student_steps=8, guidance_scale=None, guidance_range=None,
                 weighting="snr+1", teacher_thresholding=None, seed=None, **kwargs):
        if isinstance(student_steps, bool) or not isinstance(student_steps, (int, np.integer)) or student_steps < 1:
            raise ValueError(f"`student_steps` must be a positive integer, got {student_steps!r}.")
        student = clone_task(teacher) if student is None else student
        conditioned = isinstance(teacher, GuidanceConditionedDiffusion)
        folding = not conditioned and isinstance(student, GuidanceConditionedDiffusion)
        if type(student) is not type(teacher) and not folding:
            raise ValueError(
                f"The student must be a task of the teacher's class {type(teacher).__name__} (or a "
                f"GuidanceConditionedDiffusion for a plain teacher), got {type(student).__name__}."
            )
        if folding and teacher.conditioning is None:
            raise ValueError("A guidance-conditioned student needs a conditional teacher (classifier-free guidance).")
        name, options = STUDENT_SAMPLER
        super().__init__(teacher, student, weighting=weighting, seed=seed, sampler=name, sampler_options=options,
                         **kwargs)
        self.student_steps = int(student_steps)
        if conditioned and guidance_scale is not None:
            raise ValueError("`guidance_scale` is for a plain teacher; a guidance-conditioned one takes "
                             "`guidance_range`.")
        if not (conditioned or folding) and guidance_range is not None:
            raise ValueError("`guidance_range` is for a GuidanceConditionedDiffusion teacher or student; a plain "
                             "teacher and student take a fixed `guidance_scale`.")
        if guidance_scale is not None and not np.isfinite(guidance_scale):
            raise ValueError(f"`guidance_scale` must be a finite number or None, got {guidance_scale!r}.")
        plain_scale = guidance_scale is None or (guidance_scale == 1 and not folding)
        self.guidance_scale = None if plain_scale else float(guidance_scale)
        if folding and guidance_scale is not None and guidance_range is not None:
            raise ValueError("Give a guidance-conditioned student's teacher either `guidance_scale` or "
                             "`guidance_range`, not both.")
        if conditioned or (folding and guidance_scale is None):
            default = teacher.guidance_range if conditioned else student.guidance_range
            self.guidance_range = checked_guidance_range(guidance_range if guidance_range is not None else default)
        else:
            self.guidance_range = None
        if folding:
            low, high = student.guidance_range
            drawn = self.guidance_range or (float(guidance_scale),) * 2
            if not low <= drawn[0] <= drawn[1] <= high:
                raise ValueError(f"The teacher's guidance {drawn} must lie in the student's `guidance_range` "
                                 f"{student.guidance_range}.")
        self.teacher_sampler = DDIMSampler(self.process, 2 * self.student_steps, timestep_spacing="trailing",
                                           thresholding=teacher_thresholding)
        student_grid = self.process.sampling_grid(self.student_steps, "trailing")
        if not np.array_equal(student_grid["timesteps"], self.teacher_sampler.grid["timesteps"][::2]):
            raise ValueError(
                f"The trailing grid of {self.student_steps} steps is not every other point of the grid of "
                f"{2 * self.student_steps} steps for this schedule ({self.process.num_timesteps} timesteps)."
            )
        grid = self.teacher_sampler.grid
        self._alpha, self._sigma = grid["alpha"].astype(np.float32), grid["sigma"].astype(np.float32)
        student.sampler, student.sampler_options = name, dict(options)  # after the checks above

    def _guidance(self, batch_size):
        if self.guidance_range is not None:
            return self._draw_guidance(batch_size, self.guidance_range)
        if self.guidance_scale is None:
            return None
        return ops.full((batch_size,), self.guidance_scale, dtype="float32")

    def distillation_targets(self, latents, noise, student_index, conditions, guidance=None):
        """The training example of student grid points ``student_index`` (B,) int: ``(z_t, x~, target, alpha, sigma)``.

        ``z_t`` is noised at student point ``k`` (teacher point ``2k``), the teacher takes DDIM
        steps ``2k -> 2k+1 -> 2k+2`` (``DDIMSampler.step`` with per-example indices), ``x~`` is
        ``one_step_target`` and ``target`` its student prediction (``prediction_from_x0``);
        ``alpha`` / ``sigma`` of ``z_t`` are shaped to broadcast against the latents.
        """
        latents = ops.cast(latents, "float32")
        ndim = len(latents.shape)
        i = ops.reshape(ops.cast(student_index, "int32") * 2, (-1,) + (1,) * (ndim - 1))
        alpha = gather_per_example(self._alpha, ops.reshape(i, (-1,)), ndim)
        sigma = gather_per_example(self._sigma, ops.reshape(i, (-1,)), ndim)
        z_t = alpha * latents + sigma * ops.cast(noise, "float32")
        channels = self.process.prediction_channels(self.teacher.backbone.out_channels)

        def model_fn(x, t, carry):
            inputs = dict({"latents": x, "timesteps": ops.reshape(t, (-1,))}, **conditions)
            return ops.cast(guided_output(self.teacher, inputs, guidance, channels), "float32"), carry

        state = self.teacher_sampler.initial_state(z_t)
        state = self.teacher_sampler.step(model_fn, i, state)
        state = self.teacher_sampler.step(model_fn, i + 1, state)
        z_target = ops.stop_gradient(self.teacher_sampler.result(state))
        alpha_next = gather_per_example(self._alpha, ops.reshape(i + 2, (-1,)), ndim)
        sigma_next = gather_per_example(self._sigma, ops.reshape(i + 2, (-1,)), ndim)
        x_target = one_step_target(z_t, z_target, alpha, sigma, alpha_next, sigma_next)
        target = prediction_from_x0(self.process.prediction, x_target, z_t, alpha, sigma)
        return z_t, x_target, target, alpha, sigma

    def student_inputs(self, z_t, student_index, conditions, guidance=None):
        """The student backbone's inputs at its grid points (the scale embedded for a guidance-conditioned one)."""
        timesteps = ops.take(ops.convert_to_tensor(self.teacher_sampler.tables["model_t"]),
                             ops.cast(student_index, "int32") * 2)
        inputs = dict({"latents": z_t, "timesteps": timesteps}, **conditions)
        if isinstance(self.student, GuidanceConditionedDiffusion):
            inputs = self.student.with_guidance(inputs, guidance)
        return inputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Algorithm 3's loss on a batch dict ``x`` (``videos`` and the conditions, as ``VideoDiffusion``'s)."""
        latents, noise, conditions = self._training_batch(x)
        batch_size = ops.shape(latents)[0]
        k = global_batch_draw(lambda n: keras.random.randint((n,), 0, self.student_steps, dtype="int32",
                                                             seed=self.seed_generator), batch_size)
        guidance = self._guidance(batch_size)
        z_t, _, target, alpha, sigma = self.distillation_targets(latents, noise, k, conditions, guidance)
        output = self.backbone(self.student_inputs(z_t, k, conditions, guidance), training=training)
        return self._finish_loss(self._loss(output, ops.stop_gradient(target), alpha, sigma), sample_weight)


class GuidedDistillation(DistillationTask):
    """Guided distillation, stage one (Meng et al. 2023): a w-conditioned student learns the guided teacher.

    Args:
        teacher: a conditional ``VideoDiffusion`` trained with condition dropout (frozen here); its
            guided prediction ``null + w (cond - null)`` is the target, one stacked forward per batch.
        student: a ``GuidanceConditionedDiffusion`` (default: the teacher's backbone, process, text
            encoder and preprocessor copied, a fresh zero-output ``GuidanceEmbedding``).
        guidance_range: ``(low, high)``: ``w`` is drawn uniformly per example.
        weighting: of the x-space error, as ``ProgressiveDistillation``'s.
        seed: seed of the training randomness.

    Example:
        >>> guided = GuidedDistillation(teacher, guidance_range=(2.0, 4.0))
        >>> guided.compile(optimizer=keras.optimizers.AdamW(1e-4)); guided.fit(batches, epochs=1)
        >>> guided.student.generate(prompts=["..."], guidance_scale=3.0, steps=50)   # one forward per step
    """

    def __init__(self, teacher, student=None, guidance_range=(1.0, 5.0), weighting="snr+1", seed=None, **kwargs):
        if teacher.conditioning is None:
            raise ValueError("Guided distillation needs a conditional teacher (classifier-free guidance).")
        guidance_range = checked_guidance_range(guidance_range)
        if student is None:
            student = GuidanceConditionedDiffusion.from_teacher(teacher, guidance_range)
        if not isinstance(student, GuidanceConditionedDiffusion):
            raise TypeError(f"`student` must be a GuidanceConditionedDiffusion, got {type(student).__name__}.")
        super().__init__(teacher, student, weighting=weighting, seed=seed, **kwargs)
        self.guidance_range = guidance_range

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Meng et al.'s stage-one loss on a batch dict ``x``: the student at ``(z_t, w)`` vs the guided teacher."""
        latents, noise, conditions = self._training_batch(x)
        batch_size = ops.shape(latents)[0]
        t = global_batch_draw(lambda n: self.process.sample_timesteps(n, seed=self.seed_generator), batch_size)
        z_t = self.process.add_noise(latents, noise, t)
        guidance = self._draw_guidance(batch_size, self.guidance_range)
        inputs = dict({"latents": z_t, "timesteps": self.process.model_timesteps(t)}, **conditions)
        channels = self.process.prediction_channels(self.teacher.backbone.out_channels)
        target, _ = self.process.split_output(guided_output(self.teacher, inputs, guidance, channels))
        output = self.backbone(self.student.with_guidance(inputs, guidance), training=training)
        alpha, sigma = self.process._scales(z_t, t)
        return self._finish_loss(self._loss(output, ops.stop_gradient(target), alpha, sigma), sample_weight)
