"""Noise schedules of discrete Gaussian diffusion and the flow-matching time shift.

A ``NoiseSchedule`` holds the constant tables of a discrete variance-preserving
process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` as float64 numpy arrays
(computed once at construction; processes and samplers cast them to float32
tensors). Kinds:

- ``linear``: DDPM (Ho et al. 2020), betas from 1e-4 to 0.02, both scaled by
  ``1000 / num_timesteps`` as improved DDPM does so that any T gives the same process.
- ``cosine``: improved DDPM (Nichol & Dhariwal 2021),
  ``abar(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2``, s = 0.008, betas clipped at 0.999.
- ``sigmoid``: betas ``sigmoid(linspace(-6, 6, T)) * (0.02 - 1e-4) + 1e-4`` (GeoDiff).
- ``scaled_linear``: Stable Diffusion, betas linear in square-root space 0.00085..0.012.

``respace`` keeps a subset of the timesteps and recomputes the betas so the
marginals at kept steps are unchanged (improved DDPM Sec. 4); ``timestep_map``
keeps the original index the backbone was trained with.

``rescale_zero_terminal_snr`` rescales any of them to a zero terminal SNR
(Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
Flawed", Algorithm 1): ``sqrt(abar)`` is shifted and scaled so its last value
is 0 and its first unchanged; the last beta becomes 1.
"""

import math

import keras
import numpy as np

SCHEDULE_KINDS = ("linear", "cosine", "sigmoid", "scaled_linear")


def _cosine_alpha_bar(t, s):
    return np.cos((t + s) / (1.0 + s) * math.pi / 2.0) ** 2


def _betas_for_kind(kind, num_timesteps, beta_start, beta_end, cosine_s, max_beta):
    if kind == "linear":
        scale = 1000.0 / num_timesteps
        start = scale * 1e-4 if beta_start is None else beta_start
        end = scale * 0.02 if beta_end is None else beta_end
        return np.linspace(start, end, num_timesteps, dtype=np.float64)
    if kind == "scaled_linear":
        start = 0.00085 if beta_start is None else beta_start
        end = 0.012 if beta_end is None else beta_end
        return np.linspace(start**0.5, end**0.5, num_timesteps, dtype=np.float64) ** 2
    if kind == "sigmoid":
        start = 1e-4 if beta_start is None else beta_start
        end = 0.02 if beta_end is None else beta_end
        x = np.linspace(-6.0, 6.0, num_timesteps, dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-x)) * (end - start) + start
    # cosine
    steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    alpha_bar = _cosine_alpha_bar(steps, cosine_s)
    return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], max_beta)


def rescale_to_zero_terminal_snr(betas):
    """Betas whose ``abar`` reaches exactly 0 at the last step (Lin et al. 2024, Algorithm 1), float64.

    ``sqrt(abar)`` is shifted by its last value and scaled to keep its first:
    ``r = (sqrt(abar) - sqrt(abar_T)) * sqrt(abar_1) / (sqrt(abar_1) - sqrt(abar_T))``;
    the first beta is unchanged and the last is 1.
    """
    root = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = root[0], root[-1]
    root = (root - last) * first / (first - last)
    alpha_bar = root**2
    alphas = np.append(alpha_bar[0], alpha_bar[1:] / alpha_bar[:-1])
    return 1.0 - alphas


def evenly_spaced_timesteps(num_timesteps, num_steps):
    """``num_steps`` timesteps from 0 to ``num_timesteps - 1`` evenly spaced (improved-DDPM respacing)."""
    if not isinstance(num_steps, int) or not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"`num_steps` must be an integer in [1, {num_timesteps}], got {num_steps!r}.")
    if num_steps == 1:
        return np.array([num_timesteps - 1], dtype=np.int64)
    stride = (num_timesteps - 1) / (num_steps - 1)
    return np.round(np.arange(num_steps) * stride).astype(np.int64)


@keras.saving.register_keras_serializable(package="keras_vdiff")
class NoiseSchedule:
    """Discrete noise schedule with its derived tables (numpy float64).

    Args:
        kind: ``"linear"``, ``"cosine"``, ``"sigmoid"`` or ``"scaled_linear"``.
        num_timesteps: number of diffusion steps T.
        beta_start, beta_end: override the kind's end points (linear, sigmoid, scaled_linear).
        cosine_s: offset s of the cosine schedule.
        max_beta: clip of the cosine betas.
        betas: explicit betas (then ``kind`` is only a label); used by ``respace`` and for
            diffusers' ``trained_betas``; kept in ``get_config``.
        timestep_map: original timestep index of each step (identity unless respaced).
        rescale_zero_terminal_snr: rescale the kind's betas to a zero terminal SNR
            (``rescale_to_zero_terminal_snr``; diffusers' ``rescale_betas_zero_snr``).
            The last step is then pure noise (``abar = 0``): epsilon prediction is
            undefined there, v and x0 prediction are not.
        terminal_alpha_bar: replace the last ``abar`` by this value (and the last beta
            accordingly); diffusers' Euler and DPM-Solver schedulers set 2**-24 after the
            zero-SNR rescaling so that their first sigma stays finite. Both options
            apply to the kind's betas and are ignored with explicit ``betas``.

    Attributes: ``betas``, ``alphas``, ``alphas_cumprod``, ``alphas_cumprod_prev``,
    ``posterior_variance``, ``posterior_log_variance_clipped``,
    ``posterior_mean_coef1`` (of x0), ``posterior_mean_coef2`` (of x_t), ``log_snr``.

    Example:
        >>> schedule = NoiseSchedule("cosine", num_timesteps=1000)
        >>> schedule.alphas_cumprod.shape
        (1000,)
        >>> fast = schedule.respace(250)   # 250 steps with the same marginals
    """

    def __init__(
        self,
        kind="cosine",
        num_timesteps=1000,
        beta_start=None,
        beta_end=None,
        cosine_s=0.008,
        max_beta=0.999,
        betas=None,
        timestep_map=None,
        rescale_zero_terminal_snr=False,
        terminal_alpha_bar=None,
    ):
        if kind not in SCHEDULE_KINDS:
            raise ValueError(f"`kind` must be one of {SCHEDULE_KINDS}, got {kind!r}.")
        self._explicit_betas = betas is not None
        if betas is None:
            if not isinstance(num_timesteps, int) or isinstance(num_timesteps, bool) or num_timesteps < 1:
                raise ValueError(f"`num_timesteps` must be a positive integer, got {num_timesteps!r}.")
            betas = _betas_for_kind(kind, num_timesteps, beta_start, beta_end, cosine_s, max_beta)
            if rescale_zero_terminal_snr:
                betas = rescale_to_zero_terminal_snr(betas)
            if terminal_alpha_bar is not None:
                if not 0.0 <= terminal_alpha_bar < 1.0 or len(betas) < 2:
                    raise ValueError(f"`terminal_alpha_bar` must lie in [0, 1) (T >= 2), got {terminal_alpha_bar!r}.")
                previous = np.prod(1.0 - betas[:-1])
                betas = np.append(betas[:-1], 1.0 - terminal_alpha_bar / previous)
        betas = np.asarray(betas, dtype=np.float64)
        # The last beta may be 1: a zero terminal SNR (abar_T = 0).
        if betas.ndim != 1 or len(betas) == 0 or np.any(betas <= 0) or np.any(betas[:-1] >= 1) or betas[-1] > 1:
            raise ValueError(
                f"`betas` must be a 1-D array with values in (0, 1) (the last may be 1), got shape {betas.shape}."
            )
        num_timesteps = len(betas)
        self.rescale_zero_terminal_snr = bool(rescale_zero_terminal_snr)
        self.terminal_alpha_bar = None if terminal_alpha_bar is None else float(terminal_alpha_bar)
        self.kind = kind
        self.num_timesteps = num_timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.cosine_s = cosine_s
        self.max_beta = max_beta
        self.timestep_map = (
            np.arange(num_timesteps, dtype=np.int64) if timestep_map is None else np.asarray(timestep_map, np.int64)
        )
        if self.timestep_map.shape != (num_timesteps,):
            raise ValueError(f"`timestep_map` must have {num_timesteps} entries, got {self.timestep_map.shape}.")

        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The variance is 0 at t=0; improved DDPM clips its log to the value at t=1.
        first = self.posterior_variance[1] if num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        with np.errstate(divide="ignore"):  # -inf at a zero terminal SNR
            self.log_snr = np.log(self.alphas_cumprod) - np.log1p(-self.alphas_cumprod)
        self._respaced = timestep_map is not None

    def log_snr_continuous(self, t):
        """log-SNR at continuous time ``t`` in [0, 1] (numpy).

        Cosine: the closed form of the continuous cosine schedule,
        ``log SNR(t) = -2 log tan(((t + s)/(1 + s)) pi/2)`` (normalised by abar(0)).
        Other kinds: ``log abar`` interpolated linearly between the discrete
        steps, step i sitting at ``t = (i + 1) / T`` and ``abar = 1`` at t = 0.
        """
        t = np.asarray(t, dtype=np.float64)
        if np.any(t < 0) or np.any(t > 1):
            raise ValueError("`t` must lie in [0, 1].")
        if self.kind == "cosine" and not self._respaced:
            s = self.cosine_s
            alpha_bar = _cosine_alpha_bar(t, s) / _cosine_alpha_bar(0.0, s)
            alpha_bar = np.clip(alpha_bar, 1e-20, 1.0)
            return np.log(alpha_bar) - np.log1p(-np.minimum(alpha_bar, 1.0 - 1e-12))
        grid = np.arange(self.num_timesteps + 1, dtype=np.float64) / self.num_timesteps
        log_alpha_bar = np.interp(t, grid, np.append(0.0, np.log(self.alphas_cumprod)))
        return log_alpha_bar - np.log(-np.expm1(np.minimum(log_alpha_bar, -1e-12)))

    def respace(self, num_steps_or_timesteps):
        """A schedule on a subset of timesteps with the same marginals (improved DDPM).

        Args:
            num_steps_or_timesteps: an int (that many evenly spaced timesteps) or
                an increasing list of original timestep indices to keep.

        Returns: a ``NoiseSchedule`` whose betas are
        ``1 - abar[t_i] / abar[t_{i-1}]`` and whose ``timestep_map`` gives the
        original index of each step (what the backbone was trained with).
        """
        if isinstance(num_steps_or_timesteps, (int, np.integer)) and not isinstance(num_steps_or_timesteps, bool):
            keep = evenly_spaced_timesteps(self.num_timesteps, int(num_steps_or_timesteps))
        else:
            keep = np.asarray(num_steps_or_timesteps, dtype=np.int64)
            if keep.ndim != 1 or len(keep) == 0 or np.any(np.diff(keep) <= 0) or keep[0] < 0 or (
                keep[-1] >= self.num_timesteps
            ):
                raise ValueError(
                    f"`num_steps_or_timesteps` must be an int or increasing indices in [0, {self.num_timesteps}), "
                    f"got {num_steps_or_timesteps!r}."
                )
        alpha_bar = self.alphas_cumprod[keep]
        previous = np.append(1.0, alpha_bar[:-1])
        betas = 1.0 - alpha_bar / previous
        return NoiseSchedule(kind=self.kind, betas=betas, timestep_map=self.timestep_map[keep], cosine_s=self.cosine_s)

    def get_config(self):
        config = dict(
            kind=self.kind,
            num_timesteps=self.num_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            cosine_s=self.cosine_s,
            max_beta=self.max_beta,
        )
        if self._respaced:
            config.update(betas=self.betas.tolist(), timestep_map=self.timestep_map.tolist())
        elif self._explicit_betas:
            config.update(betas=self.betas.tolist())
        else:
            if self.rescale_zero_terminal_snr:
                config.update(rescale_zero_terminal_snr=True)
            if self.terminal_alpha_bar is not None:
                config.update(terminal_alpha_bar=self.terminal_alpha_bar)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"NoiseSchedule(kind={self.kind!r}, num_timesteps={self.num_timesteps})"


def shift_flow_time(t, shift):
    """SD3 timestep shift ``t' = shift * t / (1 + (shift - 1) * t)`` (numpy or tensors).

    ``shift > 1`` moves time towards the noisy end (t = 1 is pure noise), which
    larger images and videos need (Esser et al. 2024, Sec. 5.3.2).
    """
    if shift == 1.0:
        return t
    return shift * t / (1.0 + (shift - 1.0) * t)
