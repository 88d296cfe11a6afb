"""Discrete Gaussian diffusion (DDPM) with epsilon / v / x0 prediction and learned variance.

Training follows Ho et al. 2020 (simple loss), Salimans & Ho 2022 (v
prediction), Nichol & Dhariwal 2021 (learned variance with the hybrid loss
``L_simple + lambda * L_vlb``, lambda = 0.001) and Hang et al. 2023 (min-SNR-gamma
weighting). All arithmetic is float32 ``keras.ops`` on constant tables.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vdiff.diffusion.process import (
    TIMESTEP_SPACINGS,
    DiffusionProcess,
    gather_per_example,
    per_example_mean,
)
from keras_vdiff.diffusion.schedules import NoiseSchedule

PREDICTIONS = ("epsilon", "v", "x0")
LOSS_WEIGHTINGS = (None, "min_snr")


def normal_kl(mean1, log_var1, mean2, log_var2):
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))), elementwise, in nats."""
    return 0.5 * (
        -1.0 + log_var2 - log_var1 + ops.exp(log_var1 - log_var2) + ops.square(mean1 - mean2) * ops.exp(-log_var2)
    )


def discretized_gaussian_log_likelihood(x, mean, log_scale, num_bins=256):
    """log P(x) of data in [-1, 1] quantised to ``num_bins`` levels under N(mean, exp(log_scale)^2).

    The decoder term L_0 of DDPM: each value owns a bin of width ``2 / (num_bins - 1)``;
    the edge bins extend to -inf / +inf (Ho et al. 2020, Eq. 13).
    """
    half_bin = 1.0 / (num_bins - 1)
    centered = x - mean
    inv_std = ops.exp(-log_scale)

    def standard_normal_cdf(value):
        return 0.5 * (1.0 + ops.erf(value / math.sqrt(2.0)))

    cdf_plus = standard_normal_cdf(inv_std * (centered + half_bin))
    cdf_min = standard_normal_cdf(inv_std * (centered - half_bin))
    log_cdf_plus = ops.log(ops.maximum(cdf_plus, 1e-12))
    log_one_minus_cdf_min = ops.log(ops.maximum(1.0 - cdf_min, 1e-12))
    log_delta = ops.log(ops.maximum(cdf_plus - cdf_min, 1e-12))
    return ops.where(x < -0.999, log_cdf_plus, ops.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def spaced_timesteps(num_timesteps, num_steps, spacing, steps_offset=0):
    """Descending timesteps of a ``num_steps`` sampling run (diffusers' ``set_timesteps`` conventions).

    With T = ``num_timesteps`` and n = ``num_steps``:

    - ``leading``: ``k * (T // n) + steps_offset`` for k = n-1..0 (diffusers DDPM / DDIM /
      Euler default ``leading``);
    - ``trailing``: ``round(T - k T / n) - 1`` for k = 0..n-1, starts at T - 1 (every
      diffusers scheduler's ``trailing``);
    - ``linspace``: ``round(linspace(0, T-1, n+1))``, the highest n (starts at T - 1,
      never 0; DPM-Solver's ``linspace``);
    - ``linspace_to_zero``: ``round(linspace(0, T-1, n))``, from T - 1 down to 0
      (DDPM's and DDIM's ``linspace``);
    - ``fractional_linspace``: ``linspace(0, T-1, n)`` unrounded, float (Euler's
      ``linspace``: the noise level between two training steps is interpolated);
    - ``leading_skip_zero``: ``k * (T // (n+1)) + steps_offset`` for k = n..1
      (DPM-Solver's ``leading``).

    ``steps_offset`` applies to the leading spacings only (as in diffusers).
    Returns int64 indices, float64 for ``fractional_linspace``.
    """
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"`steps` must be an integer in [1, {num_timesteps}], got {num_steps!r}.")
    if spacing not in TIMESTEP_SPACINGS:
        raise ValueError(f"`timestep_spacing` must be one of {TIMESTEP_SPACINGS}, got {spacing!r}.")
    if not isinstance(steps_offset, (int, np.integer)) or isinstance(steps_offset, bool) or steps_offset < 0:
        raise ValueError(f"`steps_offset` must be a non-negative integer, got {steps_offset!r}.")
    if steps_offset and not spacing.startswith("leading"):
        raise ValueError(
            f"`steps_offset`={steps_offset} applies to the leading spacings only, not `timestep_spacing`={spacing!r}."
        )
    T, n = num_timesteps, num_steps
    if spacing == "leading":
        timesteps = (np.arange(n) * (T // n))[::-1] + steps_offset
    elif spacing == "leading_skip_zero":
        timesteps = (np.arange(n + 1) * (T // (n + 1)))[::-1][:-1] + steps_offset
    elif spacing == "trailing":
        timesteps = np.round(np.arange(T, 0, -T / n)) - 1
    elif spacing == "linspace":
        timesteps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
    elif spacing == "linspace_to_zero":
        timesteps = np.linspace(0, T - 1, n).round()[::-1]
    else:  # float32 as diffusers computes it, so the backbone sees the very same timesteps
        return np.linspace(0, T - 1, n, dtype=np.float32)[::-1].astype(np.float64)
    timesteps = timesteps.astype(np.int64)
    if timesteps.max() >= T:
        raise ValueError(
            f"`steps_offset`={steps_offset} with {n} steps gives timestep {int(timesteps.max())}, past the last "
            f"training timestep {T - 1}."
        )
    return timesteps


@keras.saving.register_keras_serializable(package="keras_vdiff")
class GaussianDiffusion(DiffusionProcess):
    """Discrete-time Gaussian diffusion process and its training loss.

    Args:
        schedule: a ``NoiseSchedule`` (or a kind name such as ``"cosine"``).
        prediction: what the backbone predicts: ``"epsilon"``, ``"v"`` or ``"x0"``.
        learn_sigma: the backbone also outputs the variance interpolation values
            ``v`` (improved DDPM: ``log var = frac * log beta + (1 - frac) * log beta_tilde``,
            ``frac = (v + 1) / 2``) and the loss adds ``vlb_weight * L_vlb``.
        loss_weighting: ``None`` or ``"min_snr"`` (weight ``min(SNR, gamma) / SNR`` for
            epsilon, ``/(SNR + 1)`` for v, ``min(SNR, gamma)`` for x0).
        min_snr_gamma: gamma of the min-SNR weighting.
        vlb_weight: lambda of the hybrid loss. ``L_vlb`` is estimated from one
            uniformly drawn term as ``T * L_t``, so with T = 1000 the added term is
            ``L_t`` in bits per dimension, as improved DDPM and DiT train.

    Example:
        >>> process = GaussianDiffusion(NoiseSchedule("linear"), prediction="epsilon", learn_sigma=True)
        >>> t = process.sample_timesteps(4, seed=0)
        >>> x_t = process.add_noise(x0, noise, t)
        >>> loss = process.compute_loss(backbone_output, x0, noise, x_t, t)   # (4,)
    """

    def __init__(
        self,
        schedule="cosine",
        prediction="epsilon",
        learn_sigma=False,
        loss_weighting=None,
        min_snr_gamma=5.0,
        vlb_weight=0.001,
    ):
        if isinstance(schedule, str):
            schedule = NoiseSchedule(schedule)
        elif isinstance(schedule, dict):
            schedule = NoiseSchedule.from_config(schedule)
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"`schedule` must be a NoiseSchedule or a kind name, got {type(schedule).__name__}.")
        if prediction not in PREDICTIONS:
            raise ValueError(f"`prediction` must be one of {PREDICTIONS}, got {prediction!r}.")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"`loss_weighting` must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}.")
        if min_snr_gamma <= 0:
            raise ValueError(f"`min_snr_gamma` must be positive, got {min_snr_gamma!r}.")
        self.schedule = schedule
        self.prediction = prediction
        self.learn_sigma = bool(learn_sigma)
        self.loss_weighting = loss_weighting
        self.min_snr_gamma = float(min_snr_gamma)
        self.vlb_weight = float(vlb_weight)
        self.num_timesteps = schedule.num_timesteps
        s = schedule
        self._sqrt_alpha_bar = np.sqrt(s.alphas_cumprod)
        self._sqrt_one_minus_alpha_bar = np.sqrt(1.0 - s.alphas_cumprod)
        self._snr = s.alphas_cumprod / (1.0 - s.alphas_cumprod)
        self._log_betas = np.log(s.betas)

    # --- training -----------------------------------------------------------------------------
    def sample_timesteps(self, batch_size, seed=None):
        """Uniform integer timesteps in [0, T), int32 (B,)."""
        return keras.random.randint((batch_size,), 0, self.num_timesteps, dtype="int32", seed=seed)

    def add_noise(self, x0, noise, t):
        """``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (float32)."""
        x0 = ops.cast(x0, "float32")
        noise = ops.cast(noise, "float32")
        ndim = len(x0.shape)
        return gather_per_example(self._sqrt_alpha_bar, t, ndim) * x0 + gather_per_example(
            self._sqrt_one_minus_alpha_bar, t, ndim
        ) * noise

    def model_timesteps(self, t):
        """The timestep the backbone receives: the original index (respaced schedules map back), float32."""
        return ops.take(ops.convert_to_tensor(self.schedule.timestep_map.astype(np.float32)), t)

    def target(self, x0, noise, t):
        """The regression target of the prediction channels."""
        if self.prediction == "epsilon":
            return ops.cast(noise, "float32")
        if self.prediction == "x0":
            return ops.cast(x0, "float32")
        ndim = len(x0.shape)
        alpha = gather_per_example(self._sqrt_alpha_bar, t, ndim)
        sigma = gather_per_example(self._sqrt_one_minus_alpha_bar, t, ndim)
        return alpha * ops.cast(noise, "float32") - sigma * ops.cast(x0, "float32")

    def _scales(self, x, t):
        ndim = len(x.shape)
        return gather_per_example(self._sqrt_alpha_bar, t, ndim), gather_per_example(
            self._sqrt_one_minus_alpha_bar, t, ndim
        )

    def predict_x0(self, model_output, x_t, t):
        """x0 implied by the backbone output at timestep indices ``t`` (B,)."""
        prediction, _ = self.split_output(model_output)
        alpha, sigma = self._scales(x_t, t)
        return self.split_prediction(prediction, ops.cast(x_t, "float32"), alpha, sigma)[0]

    def predict_epsilon(self, model_output, x_t, t):
        """Noise implied by the backbone output at timestep indices ``t`` (B,)."""
        prediction, _ = self.split_output(model_output)
        alpha, sigma = self._scales(x_t, t)
        return self.split_prediction(prediction, ops.cast(x_t, "float32"), alpha, sigma)[1]

    def posterior_mean_variance(self, x0, x_t, t):
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x0)."""
        ndim = len(x_t.shape)
        mean = gather_per_example(self.schedule.posterior_mean_coef1, t, ndim) * x0 + gather_per_example(
            self.schedule.posterior_mean_coef2, t, ndim
        ) * x_t
        return mean, gather_per_example(self.schedule.posterior_log_variance_clipped, t, ndim)

    def loss_weights(self, t):
        """Per-example weights of the MSE term (ones without ``loss_weighting``)."""
        if self.loss_weighting is None:
            return ops.ones(ops.shape(t), dtype="float32")
        snr = self._snr
        clipped = np.minimum(snr, self.min_snr_gamma)
        if self.prediction == "epsilon":
            with np.errstate(invalid="ignore", divide="ignore"):  # -> 1 as SNR -> 0 (a zero terminal SNR)
                weights = np.where(snr > 0, clipped / snr, 1.0)
        elif self.prediction == "v":
            weights = clipped / (snr + 1.0)
        else:
            weights = clipped
        return ops.take(ops.convert_to_tensor(weights.astype(np.float32)), t)

    def variational_bound_terms(self, prediction, variance_values, x0, x_t, t):
        """L_t in bits per dimension (B,): Gaussian KL for t > 0, discretised decoder NLL at t = 0."""
        ndim = len(x_t.shape)
        alpha, sigma = self._scales(x_t, t)
        x0_hat = self.split_prediction(prediction, x_t, alpha, sigma)[0]
        model_mean, _ = self.posterior_mean_variance(x0_hat, x_t, t)
        min_log = gather_per_example(self.schedule.posterior_log_variance_clipped, t, ndim)
        max_log = gather_per_example(self._log_betas, t, ndim)
        frac = (variance_values + 1.0) / 2.0
        model_log_var = frac * max_log + (1.0 - frac) * min_log
        true_mean, true_log_var = self.posterior_mean_variance(x0, x_t, t)
        kl = per_example_mean(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / math.log(2.0)
        nll = -per_example_mean(discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)) / math.log(
            2.0
        )
        return ops.where(t == 0, nll, kl)

    def compute_loss(self, model_output, x0, noise, x_t, t):
        """Per-example loss (B,): weighted MSE (+ ``vlb_weight * T * L_t`` with learned variance).

        The VLB term sees the mean prediction under stop-gradient, so it trains
        only the variance channels (improved DDPM, Sec. 3.1).
        """
        x0 = ops.cast(x0, "float32")
        x_t = ops.cast(x_t, "float32")
        prediction, variance_values = self.split_output(model_output)
        target = self.target(x0, noise, t)
        loss = per_example_mean(ops.square(prediction - target)) * self.loss_weights(t)
        if self.learn_sigma:
            vb = self.variational_bound_terms(ops.stop_gradient(prediction), variance_values, x0, x_t, t)
            loss = loss + self.vlb_weight * self.num_timesteps * vb
        return loss

    # --- sampling -----------------------------------------------------------------------------
    def split_prediction(self, prediction, x, alpha, sigma):
        """(x0, eps) from the prediction channels at a point ``x = alpha x0 + sigma eps``."""
        if self.prediction == "epsilon":
            return (x - sigma * prediction) / alpha, prediction
        if self.prediction == "x0":
            return prediction, (x - alpha * prediction) / sigma
        return alpha * x - sigma * prediction, sigma * x + alpha * prediction

    def sampling_grid(self, num_steps, spacing="leading", steps_offset=0, final_timestep=None,
                      previous_timestep="next"):
        """Numpy tables of a ``num_steps`` reverse run.

        Args:
            num_steps: number of steps n.
            spacing: a name of ``TIMESTEP_SPACINGS`` (``spaced_timesteps``).
            steps_offset: added to the leading spacings' timesteps (diffusers' ``steps_offset``).
            final_timestep: where the last step lands: None, the clean point ``abar = 1``;
                an index k, the noise level of training step k (diffusers'
                ``set_alpha_to_one=False`` and ``final_sigmas_type="sigma_min"`` land on k = 0).
            previous_timestep: the point each step moves to: ``"next"``, the next timestep of
                the grid (the final point after the last); ``"stride"``, timestep
                ``t - T // n``, the final point when below 0 (diffusers' ``DDIMScheduler``,
                whatever its spacing). Single-step samplers only.

        Returns a dict: ``timesteps`` (n,) indices into the schedule (float for
        ``fractional_linspace``, whose noise level is interpolated linearly in
        ``sqrt((1 - abar) / abar)`` as diffusers' Euler does), ``model_timesteps`` (n,)
        float32 what the backbone receives, ``alpha_bar``, ``alpha`` and ``sigma``
        (n + 1,) with the final point appended; with ``previous_timestep="stride"`` also
        ``alpha_next`` and ``sigma_next`` (n,), where each step lands.
        """
        schedule = self.schedule
        timesteps = spaced_timesteps(self.num_timesteps, num_steps, spacing, steps_offset)
        if final_timestep is None:
            final = 1.0
        elif isinstance(final_timestep, (int, np.integer)) and 0 <= final_timestep < self.num_timesteps:
            final = float(schedule.alphas_cumprod[final_timestep])
        else:
            raise ValueError(
                f"`final_timestep` must be None (the clean point) or an index in [0, {self.num_timesteps}), "
                f"got {final_timestep!r}."
            )
        if spacing == "fractional_linspace":
            if schedule._respaced:
                raise ValueError("`timestep_spacing='fractional_linspace'` needs a schedule that is not respaced.")
            with np.errstate(divide="ignore"):
                ve_sigma = np.sqrt((1.0 - schedule.alphas_cumprod) / schedule.alphas_cumprod)
            ve_sigma = np.interp(timesteps, np.arange(self.num_timesteps), ve_sigma)
            current = 1.0 / (1.0 + ve_sigma**2)
            model_timesteps = timesteps.astype(np.float32)
        else:
            current = schedule.alphas_cumprod[timesteps]
            model_timesteps = schedule.timestep_map[timesteps].astype(np.float32)
        alpha_bar = np.append(current, final)
        grid = dict(
            timesteps=timesteps,
            model_timesteps=model_timesteps,
            alpha_bar=alpha_bar,
            alpha=np.sqrt(alpha_bar),
            sigma=np.sqrt(1.0 - alpha_bar),
        )
        if previous_timestep == "stride":
            if spacing == "fractional_linspace":
                raise ValueError("`previous_timestep='stride'` needs integer timesteps, not 'fractional_linspace'.")
            previous = timesteps - self.num_timesteps // num_steps
            landing = np.where(previous >= 0, schedule.alphas_cumprod[np.maximum(previous, 0)], final)
            grid.update(alpha_next=np.sqrt(landing), sigma_next=np.sqrt(1.0 - landing))
        elif previous_timestep != "next":
            raise ValueError(f"`previous_timestep` must be 'next' or 'stride', got {previous_timestep!r}.")
        return grid

    def get_config(self):
        return dict(
            schedule=self.schedule.get_config(),
            prediction=self.prediction,
            learn_sigma=self.learn_sigma,
            loss_weighting=self.loss_weighting,
            min_snr_gamma=self.min_snr_gamma,
            vlb_weight=self.vlb_weight,
        )

    def __repr__(self):
        return (
            f"GaussianDiffusion({self.schedule!r}, prediction={self.prediction!r}, learn_sigma={self.learn_sigma})"
        )
