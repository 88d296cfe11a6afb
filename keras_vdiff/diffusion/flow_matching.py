"""Flow matching on the straight path (rectified flow / conditional OT).

``x_t = (1 - t) x0 + t noise`` for t in [0, 1] (t = 1 is pure noise, the SD3
convention), and the backbone regresses the velocity ``noise - x0``
(Lipman et al. 2023, Liu et al. 2023). Training times are uniform or
logit-normal (Esser et al. 2024) and optionally shifted towards noise.
"""

import keras
import numpy as np
from keras import ops

from keras_vdiff.diffusion.process import DiffusionProcess, per_example_mean
from keras_vdiff.diffusion.schedules import shift_flow_time

TIMESTEP_SAMPLINGS = ("uniform", "logit_normal")


@keras.saving.register_keras_serializable(package="keras_vdiff")
class FlowMatching(DiffusionProcess):
    """Straight-path flow matching with a velocity target.

    Args:
        shift: SD3 timestep shift (``t' = shift t / (1 + (shift - 1) t)``),
            applied to training times and to the sampling grid. 1 = none.
        timestep_sampling: ``"uniform"`` or ``"logit_normal"`` (``t = sigmoid(n)``,
            ``n ~ N(logit_mean, logit_std^2)``).
        logit_mean, logit_std: parameters of the logit-normal density.
        num_train_timesteps: the backbone receives ``t * num_train_timesteps``
            (1000, as the discrete models and diffusers' flow schedulers).

    Example:
        >>> process = FlowMatching(shift=3.0, timestep_sampling="logit_normal")
        >>> t = process.sample_timesteps(4, seed=0)              # float32 in (0, 1)
        >>> x_t = process.add_noise(x0, noise, t)
        >>> loss = process.compute_loss(backbone_output, x0, noise, x_t, t)
    """

    prediction = "velocity"
    default_sampler = "euler"

    def __init__(
        self,
        shift=1.0,
        timestep_sampling="uniform",
        logit_mean=0.0,
        logit_std=1.0,
        num_train_timesteps=1000,
    ):
        if timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"`timestep_sampling` must be one of {TIMESTEP_SAMPLINGS}, got {timestep_sampling!r}.")
        if not shift > 0:
            raise ValueError(f"`shift` must be positive, got {shift!r}.")
        if logit_std <= 0:
            raise ValueError(f"`logit_std` must be positive, got {logit_std!r}.")
        self.shift = float(shift)
        self.timestep_sampling = timestep_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)
        self.num_train_timesteps = int(num_train_timesteps)
        self.learn_sigma = False

    def sample_timesteps(self, batch_size, seed=None):
        """Training times in (0, 1), float32 (B,), shifted by ``shift``."""
        if self.timestep_sampling == "uniform":
            t = keras.random.uniform((batch_size,), 0.0, 1.0, dtype="float32", seed=seed)
        else:
            n = keras.random.normal((batch_size,), self.logit_mean, self.logit_std, dtype="float32", seed=seed)
            t = ops.sigmoid(n)
        return shift_flow_time(t, self.shift)

    def _time(self, t, ndim):
        return ops.reshape(ops.cast(t, "float32"), (-1,) + (1,) * (ndim - 1))

    def add_noise(self, x0, noise, t):
        """``x_t = (1 - t) x0 + t noise``."""
        x0 = ops.cast(x0, "float32")
        t = self._time(t, len(x0.shape))
        return (1.0 - t) * x0 + t * ops.cast(noise, "float32")

    def model_timesteps(self, t):
        """``t * num_train_timesteps`` as float32 (B,)."""
        return ops.cast(t, "float32") * float(self.num_train_timesteps)

    def target(self, x0, noise, t):
        """The velocity ``noise - x0``."""
        return ops.cast(noise, "float32") - ops.cast(x0, "float32")

    def predict_x0(self, model_output, x_t, t):
        """``x0 = x_t - t v``."""
        velocity, _ = self.split_output(model_output)
        return ops.cast(x_t, "float32") - self._time(t, len(x_t.shape)) * velocity

    def predict_epsilon(self, model_output, x_t, t):
        """``noise = x_t + (1 - t) v``."""
        velocity, _ = self.split_output(model_output)
        return ops.cast(x_t, "float32") + (1.0 - self._time(t, len(x_t.shape))) * velocity

    def compute_loss(self, model_output, x0, noise, x_t, t):
        """Per-example velocity MSE (B,)."""
        velocity, _ = self.split_output(model_output)
        return per_example_mean(ops.square(velocity - self.target(x0, noise, t)))

    def split_prediction(self, prediction, x, alpha, sigma):
        """(x0, eps) from a velocity at ``x = alpha x0 + sigma eps`` with ``alpha = 1 - t``, ``sigma = t``."""
        return x - sigma * prediction, x + alpha * prediction

    def sampling_grid(self, num_steps, spacing=None, steps_offset=0, final_timestep=None, previous_timestep="next"):
        """Numpy tables of a ``num_steps`` reverse run (SD3 / diffusers ``FlowMatchEulerDiscreteScheduler``).

        Times run linearly from 1 to the smallest (shifted) training time
        ``shift(1 / num_train_timesteps)``, are shifted, and end with t = 0.
        ``spacing`` is accepted for a uniform sampler interface and ignored; the
        options of the Gaussian grid (``steps_offset``, ``final_timestep``,
        ``previous_timestep``) must keep their defaults.
        """
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 1:
            raise ValueError(f"`steps` must be a positive integer, got {num_steps!r}.")
        for name, value, default in (("steps_offset", steps_offset, 0), ("final_timestep", final_timestep, None),
                                     ("previous_timestep", previous_timestep, "next")):
            if value != default:
                raise ValueError(f"`{name}`={value!r} applies to Gaussian diffusion only, not to flow matching.")
        # Rounded where diffusers rounds (its smallest training time is float32, its timesteps are
        # float32 times * T), so that the backbone sees the very same timesteps.
        T = self.num_train_timesteps
        first = np.float32(1.0) / np.float32(T)
        t_min = float(np.float32(self.shift) * first / (np.float32(1.0) + np.float32(self.shift - 1.0) * first))
        times = shift_flow_time(np.linspace(float(T), T * t_min, num_steps, dtype=np.float64) / T, self.shift)
        times = np.append(times, 0.0)
        return dict(
            timesteps=times[:-1],
            model_timesteps=times[:-1].astype(np.float32) * np.float32(T),
            alpha=1.0 - times,
            sigma=times,
        )

    def get_config(self):
        return dict(
            shift=self.shift,
            timestep_sampling=self.timestep_sampling,
            logit_mean=self.logit_mean,
            logit_std=self.logit_std,
            num_train_timesteps=self.num_train_timesteps,
        )

    def __repr__(self):
        return f"FlowMatching(shift={self.shift}, timestep_sampling={self.timestep_sampling!r})"
