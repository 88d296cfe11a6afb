"""Samplers: pure step functions over explicit state, usable inside ``keras.ops.fori_loop``.

Each sampler precomputes its per-step coefficients as numpy tables at
construction; ``step`` gathers them with ``ops.take`` at the (tensor) step
index, so the same code runs eagerly, under ``jax.jit``, in an XLA
``tf.while_loop`` or under ``torch.compile``.

Interface (all samplers)::

    sampler = get_sampler("ddim", process, steps=50, eta=0.0, thresholding="static")
    state = sampler.initial_state(x_T, model_carry)          # tuple of tensors
    for i in range(sampler.steps):                            # or ops.fori_loop
        state = sampler.step(model_fn, i, state, noise_i)     # noise_i only if sampler.stochastic
    x_0 = sampler.result(state)

``model_fn(x, t, carry) -> (backbone_output, carry)`` evaluates the backbone at
the scalar model timestep ``t`` (float32) and threads an arbitrary tuple
``carry`` (self-conditioning latents; ``()`` otherwise).

Every point of the reverse path is ``x = alpha x0 + sigma eps`` (see
``process.py``), so DDIM, Euler, Heun and DPM-Solver++ serve both Gaussian
diffusion and flow matching. Papers: DDPM (Ho et al. 2020; learned variance,
Nichol & Dhariwal 2021), DDIM (Song et al. 2021), Heun (Karras et al. 2022),
DPM-Solver++(2M) and its SDE form (Lu et al. 2022), flow Euler (Esser et al. 2024),
UniPC (Zhao et al. 2023; diffusers' ``UniPCMultistepScheduler``, Wan's sampler).
The step rules and timestep grids follow diffusers' ``DDPMScheduler``,
``DDIMScheduler``, ``DPMSolverMultistepScheduler``, ``CogVideoXDPMScheduler`` and
``FlowMatchEulerDiscreteScheduler`` (the tests check them step for step).
"""

import numpy as np
from keras import ops

from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.schedules import shift_flow_time
from keras_vdiff.diffusion.thresholding import Thresholding

DDPM_VARIANCES = ("fixed_small", "fixed_large", "learned")


class Sampler:
    """Base class: per-step tables, the denoising evaluation and the state layout.

    Args:
        process: a ``GaussianDiffusion`` or ``FlowMatching``.
        steps: number of reverse steps.
        thresholding: ``None``, ``"static"``, ``"dynamic"``, a dict of
            ``Thresholding`` arguments or a ``Thresholding``; applied to x0.
        timestep_spacing: a name of ``keras_vdiff.diffusion.process.TIMESTEP_SPACINGS``
            (``"leading"``, ``"linspace"``, ``"trailing"``, ...; Gaussian processes; the
            sampler's default otherwise).
        steps_offset: added to the timesteps of the leading spacings (diffusers' ``steps_offset``).
        final_timestep: None (the last step lands on the clean point) or a training
            timestep whose noise level the last step lands on (diffusers'
            ``set_alpha_to_one=False`` / ``final_sigmas_type="sigma_min"``: 0).

    State: ``(x, model_carry, sampler_carry)``, each carry a tuple of tensors.
    Subclasses add ``step(model_fn, i, state, noise=None) -> state``.
    """

    name = None
    stochastic = False
    default_spacing = "linspace"

    def __init__(self, process, steps, thresholding=None, timestep_spacing=None, steps_offset=0,
                 final_timestep=None):
        self.process = process
        self.steps = steps
        self.thresholding = Thresholding.from_argument(thresholding)
        self.grid = self._sampling_grid(steps, timestep_spacing or self.default_spacing, steps_offset=steps_offset,
                                        final_timestep=final_timestep, **self._grid_options())
        self.model_timesteps = self.grid["model_timesteps"]
        alpha, sigma = self.grid["alpha"], self.grid["sigma"]
        self.tables = dict(
            model_t=self.model_timesteps,
            alpha=alpha[:-1],
            sigma=sigma[:-1],
            # where each step lands: the next grid point, unless the grid says otherwise (DDIM's stride)
            alpha_next=self.grid.get("alpha_next", alpha[1:]),
            sigma_next=self.grid.get("sigma_next", sigma[1:]),
        )
        self.tables.update(self._tables())
        self.tables = {k: np.asarray(v, dtype=np.float32) for k, v in self.tables.items()}
        # Backend tensors made here, outside any compiled loop: converting numpy inside
        # the step would be a graph break under torch.compile.
        self._table_tensors = {k: ops.convert_to_tensor(v) for k, v in self.tables.items()}

    def _grid_options(self):
        return {}

    def _sampling_grid(self, steps, spacing, **options):
        """The run's grid: the process' ``sampling_grid`` (a sampler with a grid of its own overrides this)."""
        return self.process.sampling_grid(steps, spacing, **options)

    def _tables(self):
        return {}

    def coefficient(self, name, i):
        """Scalar float32 tensor ``tables[name][i]`` (``i`` may be a traced tensor)."""
        return ops.take(self._table_tensors[name], i)

    def initial_state(self, x, model_carry=()):
        return (ops.cast(x, "float32"), tuple(model_carry), self._initial_carry(x))

    def _initial_carry(self, x):
        return ()

    def result(self, state):
        return state[0]

    def evaluate(self, model_fn, x, t, alpha, sigma, carry, recompute_epsilon=False):
        """Run the model at (x, t): returns (x0, eps, variance_values or None, carry)."""
        output, carry = model_fn(x, t, carry)
        prediction, variance_values = self.process.split_output(output)
        x0, eps = self.process.split_prediction(prediction, x, alpha, sigma)
        if self.thresholding.kind is not None:
            x0 = self.thresholding(x0)
            if recompute_epsilon:
                eps = (x - alpha * x0) / sigma
        return x0, eps, variance_values, carry


class DDPMSampler(Sampler):
    """DDPM ancestral sampling: posterior mean from x0 plus fixed or learned variance.

    Args (beyond ``Sampler``):
        variance: ``"fixed_small"`` (posterior variance), ``"fixed_large"`` (beta)
            or ``"learned"`` (improved DDPM interpolation, needs ``learn_sigma``);
            default learned when the process learns sigma, else fixed_small.
        final_noise: also add noise at the last step when its timestep is above 0, as
            diffusers' ``DDPMScheduler`` does (``if t > 0``: the last step of trailing
            spacing or of leading spacing with ``steps_offset``). Default: the last step
            into the clean point adds none.
    """

    name = "ddpm"
    stochastic = True
    default_spacing = "leading"

    def __init__(self, process, steps, variance=None, final_noise=False, **kwargs):
        if not isinstance(process, GaussianDiffusion):
            raise ValueError(f"Sampler 'ddpm' needs a GaussianDiffusion process, got {type(process).__name__}.")
        if variance is None:
            variance = "learned" if process.learn_sigma else "fixed_small"
        if variance not in DDPM_VARIANCES:
            raise ValueError(f"`variance` must be one of {DDPM_VARIANCES}, got {variance!r}.")
        if variance == "learned" and not process.learn_sigma:
            raise ValueError("`variance='learned'` needs a process with `learn_sigma=True`.")
        self.variance = variance
        self.final_noise = bool(final_noise)
        super().__init__(process, steps, **kwargs)

    def _tables(self):
        alpha_bar = self.grid["alpha_bar"]
        current, following = alpha_bar[:-1], alpha_bar[1:]
        beta = 1.0 - current / following
        posterior_variance = np.maximum((1.0 - following) / (1.0 - current) * beta, 1e-20)
        noise_on = np.ones(self.steps)
        noise_on[-1] = 1.0 if self.final_noise and self.grid["timesteps"][-1] > 0 else 0.0
        return dict(
            coef_x0=np.sqrt(following) * beta / (1.0 - current),
            coef_xt=np.sqrt(1.0 - beta) * (1.0 - following) / (1.0 - current),
            log_var_small=np.log(posterior_variance),
            log_var_large=np.log(beta),
            noise_on=noise_on,
        )

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, sampler_carry = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        x0, _, variance_values, model_carry = self.evaluate(
            model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry
        )
        mean = c("coef_x0") * x0 + c("coef_xt") * x
        if self.variance == "fixed_small":
            log_var = c("log_var_small")
        elif self.variance == "fixed_large":
            log_var = c("log_var_large")
        else:
            frac = (variance_values + 1.0) / 2.0
            log_var = frac * c("log_var_large") + (1.0 - frac) * c("log_var_small")
        x = mean + c("noise_on") * ops.exp(0.5 * log_var) * noise
        return (x, model_carry, sampler_carry)


class DDIMSampler(Sampler):
    """DDIM: ``x' = alpha' x0 + sqrt(sigma'^2 - std^2) eps + std z``, ``std = eta * sigma_DDPM``.

    Args (beyond ``Sampler``):
        eta: 0 deterministic DDIM, 1 DDPM-like noise (Gaussian processes only).
        use_clipped_model_output: with thresholding, recompute eps from the
            thresholded x0 so the update stays on the line through x0 and x_t
            (default). ``False`` keeps the model's own eps, as diffusers'
            ``DDIMScheduler`` does by default; that mix of a clipped x0 and an
            unclipped eps breaks small models (on ``latte_tiny_moving_mnist``,
            DDIM 50 with static thresholding: 7% conditional accuracy against
            80-90% with the consistent update; benchmarks/RESULTS.md).
        previous_timestep: ``"next"`` (each step lands on the next timestep of the grid)
            or ``"stride"``: on timestep ``t - T // steps``, the final point below 0, as
            diffusers' ``DDIMScheduler`` does with every spacing (with ``linspace_to_zero``
            and ``trailing`` grids whose stride is not ``T // steps`` the two differ).
    """

    name = "ddim"
    default_spacing = "leading"

    def __init__(self, process, steps, eta=0.0, use_clipped_model_output=True, previous_timestep="next", **kwargs):
        if eta < 0:
            raise ValueError(f"`eta` must be >= 0, got {eta!r}.")
        if eta > 0 and not isinstance(process, GaussianDiffusion):
            raise ValueError(f"`eta` > 0 needs a GaussianDiffusion process, got {type(process).__name__}.")
        self.eta = float(eta)
        self.use_clipped_model_output = bool(use_clipped_model_output)
        self.stochastic = self.eta > 0
        self.previous_timestep = previous_timestep
        super().__init__(process, steps, **kwargs)

    def _grid_options(self):
        return dict(previous_timestep=self.previous_timestep)

    def _tables(self):
        a, s = self.tables["alpha"], self.tables["sigma"]
        a_next, s_next = self.tables["alpha_next"], self.tables["sigma_next"]
        if self.eta > 0:
            ab, ab_next = a**2, a_next**2
            std = self.eta * np.sqrt((1.0 - ab_next) / (1.0 - ab)) * np.sqrt(1.0 - ab / ab_next)
        else:
            std = np.zeros_like(a)
        return dict(std=std, direction=np.sqrt(np.maximum(s_next**2 - std**2, 0.0)))

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, sampler_carry = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        x0, eps, _, model_carry = self.evaluate(model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry,
                                                recompute_epsilon=self.use_clipped_model_output)
        x = c("alpha_next") * x0 + c("direction") * eps
        if self.stochastic:
            x = x + c("std") * noise
        return (x, model_carry, sampler_carry)


def _flow_tables(grid):
    """Coefficients of one Euler step ``x' = x_coef x + d_coef v`` of a flow in ``(x, t)``, ``v = eps - x0``."""
    return np.ones_like(grid["alpha"][:-1]), grid["sigma"][1:] - grid["sigma"][:-1]


def _log_snr_increments(grid):
    """``h_i = lambda_{i+1} - lambda_i`` with ``lambda = log(alpha / sigma)`` over a sampling grid.

    ``inf`` into the clean point (``sigma = 0``) and out of pure noise (``alpha = 0``).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.log(grid["alpha"]) - np.log(grid["sigma"])
        return lam[1:] - lam[:-1]


INITIAL_NOISE_SCALES = ("unit", "sigma")
LOWER_ORDER_FINAL = ("always", "under_15_steps", "never")


class EulerSampler(Sampler):
    """First-order ODE solver, one model evaluation per step.

    Flow matching: ``x' = x + (t' - t) v`` with the velocity ``v = eps - x0``
    (diffusers' ``FlowMatchEulerDiscreteScheduler``). Gaussian diffusion: the
    Euler step of the probability-flow ODE in ``(x / alpha, sigma / alpha)``
    (diffusers' ``EulerDiscreteScheduler``), computed through the denoised
    sample as ``x' = alpha' x0 + sigma' eps`` -- the same step exactly (it is
    DDIM with eta = 0). The direct form ``x' = (alpha'/alpha) x + d eps`` has
    coefficients of about +-3,150 at a first step from t = 999 (cosine schedule,
    10-step trailing grid, ``alpha = 5e-5``), whose cancellation left float32
    samples 2.7e-4 (v) / 2.3e-4 (x0) from float64, relative to their largest
    value; through x0 every coefficient is at most 1 and the error is below 1e-6
    (``tests/test_diffusion_samplers.py``).

    Args (beyond ``Sampler``):
        initial_noise_scale: ``"unit"`` (default): the run starts at ``x_T``, the
            noise at the first grid point, as every sampler does; ``"sigma"``
            (Gaussian processes): it starts at ``sigma_0 x_T``, as diffusers' Euler
            pipelines with ``linspace`` or ``trailing`` spacing do (their latents are
            ``noise * init_noise_sigma`` in the variance-exploding frame, with
            ``init_noise_sigma = sigma_0 / alpha_0``; with ``leading`` spacing it is
            ``sqrt(1 + (sigma_0 / alpha_0)^2)``, which is ``"unit"``).
    """

    name = "euler"

    def __init__(self, process, steps, initial_noise_scale="unit", **kwargs):
        if initial_noise_scale not in INITIAL_NOISE_SCALES:
            raise ValueError(
                f"`initial_noise_scale` must be one of {INITIAL_NOISE_SCALES}, got {initial_noise_scale!r}."
            )
        self.initial_noise_scale = initial_noise_scale
        super().__init__(process, steps, **kwargs)

    def _tables(self):
        if isinstance(self.process, GaussianDiffusion):
            return {}
        x_coef, d_coef = _flow_tables(self.grid)
        return dict(x_coef=x_coef, d_coef=d_coef)

    def initial_state(self, x, model_carry=()):
        x = ops.cast(x, "float32")
        if self.initial_noise_scale == "sigma":
            x = x * float(self.tables["sigma"][0])
        return super().initial_state(x, model_carry)

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, sampler_carry = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        x0, eps, _, model_carry = self.evaluate(
            model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry, recompute_epsilon=True
        )
        if isinstance(self.process, GaussianDiffusion):
            x = c("alpha_next") * x0 + c("sigma_next") * eps
        else:
            x = c("x_coef") * x + c("d_coef") * (eps - x0)
        return (x, model_carry, sampler_carry)


class HeunSampler(Sampler):
    """Second-order Heun: Euler predictor, trapezoidal corrector; two model evaluations per step.

    Flow matching: Karras et al. (2022, Alg. 1) on the velocity ``eps - x0``
    in ``(x, t)``. Gaussian processes: the same predictor-corrector written as
    an exponential integrator in log-SNR ``lambda = log(alpha / sigma)``. The
    predictor is the exact DDIM step ``x_e = (sigma'/sigma) x + alpha'(1 - e^-h) x0``
    (``h = lambda' - lambda``); the corrector lets the data prediction vary
    linearly in ``lambda`` between ``x0`` (at ``x``) and ``x0_e`` (at ``x_e``)
    and integrates exactly::

        x' = x_e + alpha' * (h - 1 + e^-h) / h * (x0_e - x0)

    This is second order like Karras' trapezoid on ``(x / alpha, sigma / alpha)``,
    but every coefficient stays bounded when the first noise level is extreme.
    Karras' form fails there: a cosine schedule's first grid point has
    ``sigma / alpha = 2e4``, and the trapezoid multiplies the difference of two
    ``eps`` estimates by about 1e4. That made the tiny MovingMNIST model score
    8% with Heun 10 (Euler 10: 98%; benchmarks/RESULTS.md, sampler study).

    The final step into the clean point is a plain first-order step.
    """

    name = "heun"

    def _tables(self):
        model_t = self.grid["model_timesteps"]
        next_model_t = np.append(model_t[1:], model_t[-1])
        correct = (self.grid["sigma"][1:] > 0).astype(np.float64)
        tables = dict(next_model_t=next_model_t, correct=correct)
        if not isinstance(self.process, GaussianDiffusion):
            x_coef, d_coef = _flow_tables(self.grid)
            return dict(tables, x_coef=x_coef, d_coef=d_coef)
        a, s = self.grid["alpha"], self.grid["sigma"]
        h = _log_snr_increments(self.grid)
        with np.errstate(invalid="ignore"):
            decay = np.where(np.isfinite(h), np.exp(-h), 0.0)
            # (h - 1 + e^-h) / h -> 1 as h -> inf; only steps with sigma' > 0 use it.
            slope = np.where(np.isfinite(h) & (h > 0), (h - 1.0 + decay) / h, 1.0)
        return dict(tables, x_coef=s[1:] / s[:-1], c0=a[1:] * (1.0 - decay), c1=a[1:] * slope * correct)

    def _corrector_point(self, i):
        """(alpha, sigma) of the corrector's evaluation; at the last step a safe point whose result is discarded."""
        correct = self.coefficient("correct", i)
        alpha = correct * self.coefficient("alpha_next", i) + (1.0 - correct) * self.coefficient("alpha", i)
        sigma = correct * self.coefficient("sigma_next", i) + (1.0 - correct) * self.coefficient("sigma", i)
        return alpha, sigma

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, sampler_carry = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        gaussian = isinstance(self.process, GaussianDiffusion)
        x0, eps, _, model_carry = self.evaluate(
            model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry, recompute_epsilon=not gaussian
        )
        if gaussian:
            x_euler = c("x_coef") * x + c("c0") * x0
        else:
            d1 = eps - x0
            x_euler = c("x_coef") * x + c("d_coef") * d1
        alpha2, sigma2 = self._corrector_point(i)
        x0_2, eps_2, _, model_carry = self.evaluate(
            model_fn, x_euler, c("next_model_t"), alpha2, sigma2, model_carry, recompute_epsilon=not gaussian
        )
        if gaussian:
            return (x_euler + c("c1") * (x0_2 - x0), model_carry, sampler_carry)
        d2 = eps_2 - x0_2
        x = c("x_coef") * x + c("d_coef") * (d1 + c("correct") * 0.5 * (d2 - d1))
        return (x, model_carry, sampler_carry)


class DPMSolverPlusPlus2MSampler(Sampler):
    """DPM-Solver++(2M), data prediction, midpoint form; first order at the first step.

    Args (beyond ``Sampler``):
        lower_order_final: when the last step is first order: ``"always"`` (default),
            ``"under_15_steps"`` (only in runs of fewer than 15 steps) or ``"never"``.
            diffusers' ``DPMSolverMultistepScheduler`` is ``"always"`` with its default
            ``final_sigmas_type="zero"`` or with ``euler_at_final``, otherwise
            ``"under_15_steps"`` with ``lower_order_final=True`` and ``"never"`` without.
            A last step into the clean point (``final_timestep=None``) is always first
            order: the second-order term is undefined there.
    """

    name = "dpmpp_2m"

    def __init__(self, process, steps, lower_order_final="always", **kwargs):
        if lower_order_final not in LOWER_ORDER_FINAL:
            raise ValueError(f"`lower_order_final` must be one of {LOWER_ORDER_FINAL}, got {lower_order_final!r}.")
        self.lower_order_final = lower_order_final
        super().__init__(process, steps, **kwargs)

    def _tables(self):
        a, s = self.grid["alpha"], self.grid["sigma"]
        h = _log_snr_increments(self.grid)
        n = self.steps
        second_order_last = self.lower_order_final == "never" or (
            self.lower_order_final == "under_15_steps" and n >= 15
        )
        x_coef, c0, c1 = np.zeros(n), np.zeros(n), np.zeros(n)
        with np.errstate(divide="ignore", invalid="ignore"):
            for i in range(n):
                x_coef[i] = s[i + 1] / s[i]
                phi = np.expm1(-h[i])  # exp(-h) - 1, -1 when h = inf
                c0[i] = -a[i + 1] * phi
                if 0 < i < n - 1 or (0 < i and second_order_last and np.isfinite(h[i])):
                    inv_r = h[i] / h[i - 1] if np.isfinite(h[i - 1]) else 0.0
                    c1[i] = -0.5 * a[i + 1] * phi * inv_r
        return dict(x_coef=x_coef, c0=c0, c1=c1)

    def _initial_carry(self, x):
        return (ops.zeros_like(ops.cast(x, "float32")),)

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, (previous_x0,) = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        x0, _, _, model_carry = self.evaluate(model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry)
        x = c("x_coef") * x + c("c0") * x0 + c("c1") * (x0 - previous_x0)
        return (x, model_carry, (x0,))


class DPMSolverPlusPlus2MSDESampler(DPMSolverPlusPlus2MSampler):
    """SDE-DPM-Solver++(2M), data prediction, midpoint form (Lu et al. 2022); diffusers' ``CogVideoXDPMScheduler``.

    With ``h = lambda' - lambda`` (``lambda = log(alpha / sigma)``) each step is::

        x' = (sigma' / sigma) e^-h x + alpha' (1 - e^-2h) D + sigma' sqrt(1 - e^-2h) z
        D  = x0 + (h / 2 h_last) (x0 - x0_last)

    ``h_last = lambda - lambda_last`` between this step's point and the previous
    step's; ``D = x0`` (first order) at the first step and at a step that lands on
    the final point. One noise draw per step. Infinite ``h`` (out of a zero
    terminal SNR, into the clean point) gives the limits: no ``x`` term, ``D = x0``.

    Args (beyond ``Sampler``):
        previous_timestep: ``"next"`` or ``"stride"`` (as ``DDIMSampler``; the CogVideoX
            scheduler lands on ``t - T // steps``).
    """

    name = "dpmpp_2m_sde"
    stochastic = True
    default_spacing = "trailing"

    def __init__(self, process, steps, previous_timestep="next", **kwargs):
        if not isinstance(process, GaussianDiffusion):
            raise ValueError(
                f"Sampler 'dpmpp_2m_sde' needs a GaussianDiffusion process, got {type(process).__name__}."
            )
        if "lower_order_final" in kwargs:
            raise TypeError("Sampler 'dpmpp_2m_sde' has no `lower_order_final`: its last step is always first order.")
        self.previous_timestep = previous_timestep
        super().__init__(process, steps, **kwargs)

    def _grid_options(self):
        return dict(previous_timestep=self.previous_timestep)

    def _tables(self):
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = np.log(self.grid["alpha"][:-1]) - np.log(self.grid["sigma"][:-1])
            a_next = self.grid.get("alpha_next", self.grid["alpha"][1:])
            s_next = self.grid.get("sigma_next", self.grid["sigma"][1:])
            h = np.log(a_next) - np.log(s_next) - lam
            decay = np.exp(-h)  # 0 where h = inf
            x_coef = np.where(decay > 0, s_next / self.grid["sigma"][:-1] * decay, 0.0)
            one_minus = -np.expm1(-2.0 * h)
            c0 = a_next * one_minus
            lands_final = np.zeros(self.steps, bool)
            lands_final[-1] = True
            if self.previous_timestep == "stride":
                lands_final = self.grid["timesteps"] - self.process.num_timesteps // self.steps < 0
            h_last = np.append(np.inf, lam[1:] - lam[:-1])
            ratio = np.where(np.isfinite(h_last) & np.isfinite(h), h / h_last, 0.0)
            c1 = np.where(lands_final, 0.0, 0.5 * c0 * ratio)
        return dict(x_coef=x_coef, c0=c0, c1=c1, noise_coef=s_next * np.sqrt(one_minus))

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, sampler_carry = super().step(model_fn, i, state)
        return (x + self.coefficient("noise_coef", i) * noise, model_carry, sampler_carry)


UNIPC_SOLVER_TYPES = ("bh1", "bh2")
UNIPC_FLOW_FIRST_SIGMA_OFFSET = 1e-6  # diffusers moves a first flow sigma of 1 to 1 - 1e-6 (finite log-SNR)


def unipc_flow_grid(process, steps):
    """diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)`` grid for a ``FlowMatching`` process.

    Times ``linspace(1, 1 / T, steps + 1)`` without the last, shifted by the process' ``shift``,
    the first moved off 1 by 1e-6 (its log-SNR stays finite), then 0. The backbone gets
    ``int(t * T)`` (truncated, as diffusers' int64 timesteps); the solver uses the times
    rounded to float32, as diffusers' sigmas are.
    """
    T = process.num_train_timesteps
    times = shift_flow_time(np.linspace(1.0, 1.0 / T, steps + 1)[:-1], process.shift)
    if abs(times[0] - 1.0) < UNIPC_FLOW_FIRST_SIGMA_OFFSET:
        times[0] -= UNIPC_FLOW_FIRST_SIGMA_OFFSET
    model_timesteps = (times * T).astype(np.int64).astype(np.float32)
    times = np.append(times, 0.0).astype(np.float32).astype(np.float64)
    return dict(timesteps=times[:-1], model_timesteps=model_timesteps, alpha=1.0 - times, sigma=times)


def _unipc_terms(lam, source, target, order, solver_type, corrector):
    """One UniP (``corrector=False``) or UniC update from grid point ``source`` to ``target`` in data prediction.

    Returns ``(h_phi_1, B_h, rhos, r)``: ``e^-h - 1``, ``B(h)``, the weights of the
    differences ``D_k = (m_{source-k} - m_source) / r_k`` (k = 1..order-1; the
    corrector's last weight multiplies ``m_target - m_source``) and the ratios
    ``r_k = (lambda_{source-k} - lambda_source) / h``.
    """
    h = lam[target] - lam[source]
    hh = -h
    h_phi_1 = np.expm1(hh)
    b_h = hh if solver_type == "bh1" else np.expm1(hh)
    r = [(lam[source - k] - lam[source]) / h for k in range(1, order)]
    unknowns = order if corrector else order - 1
    if unknowns == 0:
        return h_phi_1, b_h, [], r
    if unknowns == 1 and (corrector or order == 2):  # diffusers' closed forms for orders 1 (UniC) and 2 (UniP)
        return h_phi_1, b_h, [0.5], r
    h_phi_k, factorial, b = h_phi_1 / hh - 1.0, 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    R = np.array([[rk ** (i - 1) for rk in r + [1.0]] for i in range(1, order + 1)])
    rhos = np.linalg.solve(R[:unknowns, :unknowns], np.array(b[:unknowns]))
    return h_phi_1, b_h, list(rhos), r


class UniPCSampler(Sampler):
    """UniPC (Zhao et al. 2023): multistep UniP predictor + UniC corrector, data prediction; one evaluation per step.

    diffusers' ``UniPCMultistepScheduler`` with ``predict_x0=True`` (its default): at
    step i the model's x0 at the predicted point first corrects that point (UniC,
    from the previous point with the new x0; not at the first step), then UniP
    extrapolates the history of x0 predictions to the next point. Every update
    is linear in ``(x, x_previous, x0_i, x0_{i-1}, ...)`` with coefficients that
    depend on the grid only, precomputed in ``_tables`` (the step has no branches).

    On a ``GaussianDiffusion`` the grid is the process' (``timestep_spacing``
    default ``"linspace"``, diffusers' UniPC default). On ``FlowMatching`` it is
    diffusers' ``use_flow_sigmas`` grid (:func:`unipc_flow_grid`, shifted by the
    process' ``shift``: Wan's ``flow_shift``), with ``alpha = 1 - t``, ``sigma = t``.

    Args (beyond ``Sampler``):
        solver_order: order of the predictor (2, diffusers' default and Wan's; any
            positive integer). The first steps warm up from order 1.
        solver_type: ``"bh2"`` (default, ``B(h) = e^-h - 1``) or ``"bh1"`` (``B(h) = -h``).
        lower_order_final: the last steps use lower orders (``min(order, steps - i)``,
            diffusers' rule, whatever the number of steps). A last step into the
            clean point is first order either way (diffusers' higher order there
            divides by an infinite step and diverges).
        disable_corrector: step indices whose corrector is skipped (diffusers'
            ``disable_corrector`` list: index i skips the correction at step i + 1).

    Example:
        >>> sampler = get_sampler("unipc", FlowMatching(shift=3.0), steps=50)   # Wan 2.1's scheduler
    """

    name = "unipc"

    def __init__(self, process, steps, solver_order=2, solver_type="bh2", lower_order_final=True,
                 disable_corrector=(), **kwargs):
        if isinstance(solver_order, bool) or not isinstance(solver_order, (int, np.integer)) or solver_order < 1:
            raise ValueError(f"`solver_order` must be a positive integer, got {solver_order!r}.")
        if solver_type not in UNIPC_SOLVER_TYPES:
            raise ValueError(f"`solver_type` must be one of {UNIPC_SOLVER_TYPES}, got {solver_type!r}.")
        disabled = tuple(disable_corrector)
        if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in disabled):
            raise ValueError(f"`disable_corrector` must be a list of step indices, got {disable_corrector!r}.")
        self.solver_order = int(solver_order)
        self.solver_type = solver_type
        self.lower_order_final = bool(lower_order_final)
        self.disable_corrector = tuple(int(i) for i in disabled)
        super().__init__(process, steps, **kwargs)

    def _sampling_grid(self, steps, spacing, steps_offset=0, final_timestep=None):
        if isinstance(self.process, GaussianDiffusion):
            return self.process.sampling_grid(steps, spacing, steps_offset=steps_offset,
                                              final_timestep=final_timestep)
        for name, value, default in (("steps_offset", steps_offset, 0), ("final_timestep", final_timestep, None)):
            if value != default:
                raise ValueError(f"`{name}`={value!r} applies to Gaussian diffusion only, not to flow matching.")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
        return unipc_flow_grid(self.process, steps)

    def _orders(self):
        """The predictor's order at each step: warm-up, diffusers' lower-order-final rule, first order into x0."""
        n, sigma = self.steps, self.grid["sigma"]
        orders = [min(self.solver_order, i + 1, n - i if self.lower_order_final else self.solver_order)
                  for i in range(n)]
        return [1 if sigma[i + 1] == 0 else order for i, order in enumerate(orders)]

    def _tables(self):
        a, s = self.grid["alpha"], self.grid["sigma"]
        n, p = self.steps, self.solver_order
        with np.errstate(divide="ignore"):
            lam = np.log(a) - np.log(s)
        if not np.all(np.isfinite(lam[:-1])):
            raise ValueError("Sampler 'unipc' needs a finite log-SNR at every grid point but the last (alpha > 0 and "
                             "sigma > 0); a zero-terminal-SNR schedule needs its last alpha_bar patched above 0 "
                             "(diffusers' 2**-24).")
        orders = self._orders()
        tables = {name: np.zeros(n) for name in ["c_x", "c_prev", "p_x"] + [f"c_m{j}" for j in range(p + 1)]
                  + [f"p_m{j}" for j in range(p)]}
        for i in range(n):
            # UniC at point i from point i - 1 with the order of the step that predicted it.
            if i == 0 or i - 1 in self.disable_corrector:
                tables["c_x"][i] = 1.0
            else:
                q = orders[i - 1]
                h_phi_1, b_h, rhos, r = _unipc_terms(lam, i - 1, i, q, self.solver_type, corrector=True)
                scale = a[i] * b_h
                tables["c_prev"][i] = s[i] / s[i - 1]
                tables["c_m0"][i] = -scale * rhos[-1]
                tables["c_m1"][i] = -a[i] * h_phi_1 + scale * rhos[-1] + scale * sum(
                    rho / rk for rho, rk in zip(rhos[:-1], r))
                for k in range(1, q):
                    tables[f"c_m{k + 1}"][i] = -scale * rhos[k - 1] / r[k - 1]
            # UniP from point i to i + 1.
            q = orders[i]
            h_phi_1, b_h, rhos, r = _unipc_terms(lam, i, i + 1, q, self.solver_type, corrector=False)
            tables["p_x"][i] = s[i + 1] / s[i]
            tables["p_m0"][i] = -a[i + 1] * h_phi_1 + sum(a[i + 1] * b_h * rho / rk for rho, rk in zip(rhos, r))
            for k in range(1, q):
                tables[f"p_m{k}"][i] = -a[i + 1] * b_h * rhos[k - 1] / r[k - 1]
        for name, values in tables.items():
            if not np.all(np.isfinite(values)):
                raise ValueError(f"Sampler 'unipc': non-finite coefficient {name!r} on this grid.")
        return tables

    def _initial_carry(self, x):
        zeros = ops.zeros_like(ops.cast(x, "float32"))
        return (zeros,) * (self.solver_order + 1)  # the previous point, then x0 of the last `solver_order` steps

    def step(self, model_fn, i, state, noise=None):
        x, model_carry, (previous, *history) = state
        c = lambda name: self.coefficient(name, i)  # noqa: E731
        x0, _, _, model_carry = self.evaluate(model_fn, x, c("model_t"), c("alpha"), c("sigma"), model_carry)
        outputs = [x0] + history  # x0 at steps i, i - 1, ..., i - solver_order
        x = c("c_x") * x + c("c_prev") * previous
        for j, output in enumerate(outputs):
            x = x + c(f"c_m{j}") * output
        x_next = c("p_x") * x
        for j, output in enumerate(outputs[:-1]):
            x_next = x_next + c(f"p_m{j}") * output
        return (x_next, model_carry, (x, *outputs[:-1]))


SAMPLERS = {
    cls.name: cls for cls in (DDPMSampler, DDIMSampler, EulerSampler, HeunSampler, DPMSolverPlusPlus2MSampler,
                              DPMSolverPlusPlus2MSDESampler, UniPCSampler)
}


def get_sampler(name, process, steps, **options):
    """A sampler by name for ``process`` and ``steps``.

    Args:
        name: one of ``"ddpm"``, ``"ddim"``, ``"euler"``, ``"heun"``, ``"dpmpp_2m"``, ``"dpmpp_2m_sde"``, ``"unipc"``
            (or a ``Sampler`` subclass).
        process: the diffusion process the backbone was trained with.
        steps: number of reverse steps.
        **options: sampler arguments: every sampler's ``thresholding``,
            ``timestep_spacing``, ``steps_offset``, ``final_timestep``; ``eta``,
            ``use_clipped_model_output``, ``previous_timestep`` (ddim); ``variance``,
            ``final_noise`` (ddpm); ``initial_noise_scale`` (euler);
            ``lower_order_final`` (dpmpp_2m); ``previous_timestep`` (dpmpp_2m_sde); ``solver_order``,
            ``solver_type``, ``lower_order_final``, ``disable_corrector`` (unipc).
            ``keras_vdiff.convert.schedulers`` chooses them to match a diffusers scheduler.

    Example:
        >>> sampler = get_sampler("dpmpp_2m", GaussianDiffusion("cosine"), steps=20)
    """
    if isinstance(name, type) and issubclass(name, Sampler):
        return name(process, steps, **options)
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; valid names: {sorted(SAMPLERS)}.")
    return SAMPLERS[name](process, steps, **options)
