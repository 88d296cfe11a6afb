"""diffusers schedulers -> a keras_vdiff diffusion process, a sampler name and its options.

:func:`from_scheduler_config` reads a diffusers ``scheduler_config.json`` (or its
dict) and returns a :class:`SchedulerConversion`: the ``GaussianDiffusion`` /
``FlowMatching`` the model was trained with, and the sampler plus options that
reproduce the scheduler's ``set_timesteps(n)`` + ``step`` loop for any ``n``
(``tests/test_convert_schedulers.py`` runs both on the same model outputs)::

    conversion = from_scheduler_config("Latte-1/scheduler", learn_sigma=backbone.learn_sigma)
    model = kv.VideoDiffusion(backbone, **conversion.task_arguments(), ...)
    model.generate(prompts=[...], steps=50)          # samples the way the scheduler does

==================================  =========  ==============================================
diffusers class                     sampler    notes
==================================  =========  ==============================================
``DDIMScheduler``                   ddim       eta 0, diffusers' stride to the previous step,
                                               its own (unclipped) eps with ``clip_sample``
``DDPMScheduler``                   ddpm       fixed_small / fixed_large / learned_range;
                                               noise at a last step above t = 0, as diffusers
``DPMSolverMultistepScheduler``     dpmpp_2m   dpmsolver++, order 2, midpoint, its
                                               lower-order-final rule
``EulerDiscreteScheduler``          euler      fractional linspace grid, ``init_noise_sigma``
``FlowMatchEulerDiscreteScheduler`` euler      ``FlowMatching(shift=...)``
``UniPCMultistepScheduler``         unipc      bh1 / bh2, any order, predict_x0; Gaussian
                                               or ``use_flow_sigmas`` (``FlowMatching(shift=
                                               flow_shift)``, Wan's)
``CogVideoXDDIMScheduler``          ddim       eta 0, the stride; the schedule's SNR divided
                                               by ``snr_shift_scale`` before the zero-SNR
                                               rescaling; its step never clips
``CogVideoXDPMScheduler``           dpmpp_2m_  SDE-DPM-Solver++(2M) with the stride and the
                                    sde        same schedule
==================================  =========  ==============================================

Every field of the config is mapped, recognised as irrelevant (recorded in
``SchedulerConversion.ignored`` with the reason), or refused with a
:class:`~keras_vdiff.convert.checkpoint.ConversionError` naming the field and
its value (Karras / exponential / beta sigmas, SDE and first-order variants,
dynamic shifting, ...). A field the converter does not know at all is refused
too: a newer diffusers may have given it a meaning. Fields of other diffusers
schedulers, which diffusers itself ignores for this class (an SD config holding
PNDM's ``skip_prk_steps``), are recorded as ignored.

What stays with the pipeline converter: the backbone decides ``learn_sigma``
(pass it; diffusers' pipelines drop the variance channels themselves), and
pipelines that never multiply their initial latents by ``init_noise_sigma``
(DiT's) differ from Euler's ``initial_noise_scale="sigma"`` chosen here.
"""

import dataclasses
import json
import math
import os

import numpy as np

from keras_vdiff.convert.checkpoint import ConversionError, check_config
from keras_vdiff.diffusion.flow_matching import FlowMatching
from keras_vdiff.diffusion.gaussian import GaussianDiffusion
from keras_vdiff.diffusion.schedules import NoiseSchedule, rescale_to_zero_terminal_snr

__all__ = ["from_scheduler_config", "SchedulerConversion", "SCHEDULER_DEFAULTS", "SCHEDULER_CONFIG_FILE"]

SCHEDULER_CONFIG_FILE = "scheduler_config.json"
# diffusers' Euler and DPM-Solver put this abar at the last step of a zero-SNR schedule (float16's smallest subnormal).
ZERO_SNR_TERMINAL_ALPHA_BAR = 2.0**-24

# The constructor defaults of diffusers 0.42 (a config without a field means this value; the tests check the table
# against the installed diffusers).
_GAUSSIAN_BASE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                      trained_betas=None, prediction_type="epsilon", timestep_spacing="leading", steps_offset=0,
                      rescale_betas_zero_snr=False)
_THRESHOLDS = dict(thresholding=False, dynamic_thresholding_ratio=0.995, sample_max_value=1.0)
_CLIPPING = dict(clip_sample=True, clip_sample_range=1.0)
_COGVIDEOX = dict(_GAUSSIAN_BASE, **_CLIPPING, set_alpha_to_one=True, sample_max_value=1.0, snr_shift_scale=3.0,
                  beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")  # both classes (not their docs)
SCHEDULER_DEFAULTS = {
    "DDIMScheduler": dict(_GAUSSIAN_BASE, **_THRESHOLDS, **_CLIPPING, set_alpha_to_one=True),
    "DDPMScheduler": dict(_GAUSSIAN_BASE, **_THRESHOLDS, **_CLIPPING, variance_type="fixed_small"),
    "DPMSolverMultistepScheduler": dict(
        _GAUSSIAN_BASE, **_THRESHOLDS, timestep_spacing="linspace", solver_order=2, algorithm_type="dpmsolver++",
        solver_type="midpoint", lower_order_final=True, euler_at_final=False, use_karras_sigmas=False,
        use_exponential_sigmas=False, use_beta_sigmas=False, use_lu_lambdas=False, use_flow_sigmas=False,
        flow_shift=1.0, final_sigmas_type="zero", lambda_min_clipped=-math.inf, variance_type=None,
        use_dynamic_shifting=False, time_shift_type="exponential"),
    "EulerDiscreteScheduler": dict(
        _GAUSSIAN_BASE, timestep_spacing="linspace", interpolation_type="linear", use_karras_sigmas=False,
        use_exponential_sigmas=False, use_beta_sigmas=False, sigma_min=None, sigma_max=None,
        timestep_type="discrete", final_sigmas_type="zero"),
    "FlowMatchEulerDiscreteScheduler": dict(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096, invert_sigmas=False, shift_terminal=None,
        use_karras_sigmas=False, use_exponential_sigmas=False, use_beta_sigmas=False,
        time_shift_type="exponential", stochastic_sampling=False),
    "UniPCMultistepScheduler": dict(
        _GAUSSIAN_BASE, **_THRESHOLDS, timestep_spacing="linspace", solver_order=2, predict_x0=True,
        solver_type="bh2", lower_order_final=True, disable_corrector=[], solver_p=None, use_karras_sigmas=False,
        use_exponential_sigmas=False, use_beta_sigmas=False, use_flow_sigmas=False, flow_shift=1.0,
        final_sigmas_type="zero", use_dynamic_shifting=False, time_shift_type="exponential", sigma_min=None,
        sigma_max=None, shift_terminal=None),
    "CogVideoXDDIMScheduler": _COGVIDEOX,
    "CogVideoXDPMScheduler": _COGVIDEOX,
}
# Fields of other diffusers schedulers that configs carry along (diffusers ignores them for a class without them).
FOREIGN_FIELDS = set().union(*SCHEDULER_DEFAULTS.values()) | {"skip_prk_steps", "set_alpha_to_zero"}

PREDICTIONS = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "squaredcos_cap_v2": "cosine",
                  "sigmoid": "sigmoid"}


@dataclasses.dataclass(frozen=True)
class SchedulerConversion:
    """What a diffusers scheduler config becomes.

    Attributes:
        process: the ``GaussianDiffusion`` (schedule, prediction, learned sigma) or ``FlowMatching``.
        sampler: the sampler name (``"ddim"``, ``"ddpm"``, ``"dpmpp_2m"``, ``"dpmpp_2m_sde"``, ``"euler"``,
            ``"unipc"``).
        sampler_options: JSON-friendly keyword arguments of that sampler (``timestep_spacing``,
            ``thresholding`` as a dict, ...): ``get_sampler(sampler, process, steps, **sampler_options)``.
        scheduler_class: the diffusers class name.
        ignored: ``{field: reason}`` for the config fields that do not change sampling.
    """

    process: object
    sampler: str
    sampler_options: dict
    scheduler_class: str
    ignored: dict

    def task_arguments(self):
        """``process``, ``sampler`` and ``sampler_options`` as ``VideoDiffusion`` constructor arguments."""
        return dict(process=self.process, sampler=self.sampler, sampler_options=dict(self.sampler_options))


def read_scheduler_config(config):
    """A config dict from a dict, a ``scheduler_config.json`` path or a folder holding one."""
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, (str, os.PathLike)):
        raise TypeError(f"`config` must be a dict or a path, got {type(config).__name__}.")
    path = os.fspath(config)
    if os.path.isdir(path):
        path = os.path.join(path, SCHEDULER_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"`config`={os.fspath(config)!r}: no {SCHEDULER_CONFIG_FILE} there.")
    with open(path) as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ConversionError(f"{path} is not valid JSON ({error}).") from None


class _Fields:
    """The fields of one config: read with the class' defaults, each marked as used, ignored or refused."""

    def __init__(self, config, where):
        self.config = config
        self.where = where
        self.defaults = SCHEDULER_DEFAULTS[where]
        self.used = set()
        self.ignored = {}

    def get(self, field, allowed=None):
        """The field's value (diffusers' default when absent), checked against ``allowed`` if given."""
        if allowed is not None:
            check_config(self.config, {field: allowed}, self.where)
        self.used.add(field)
        return self.config.get(field, self.defaults[field])

    def ignore(self, field, reason):
        self.used.add(field)
        if field in self.config and self.config[field] != self.defaults.get(field):
            self.ignored[field] = reason

    def finish(self):
        """Record the fields diffusers ignores for this class; refuse fields no scheduler has."""
        for field, value in self.config.items():
            if field.startswith("_") or field in self.used:
                continue
            if field in self.defaults:  # a field of this class that no rule read: a bug of this module
                raise AssertionError(f"{self.where} field {field!r} was not handled.")
            if field not in FOREIGN_FIELDS:
                raise ConversionError(
                    f"{self.where} config field `{field}`={value!r} is not a field this converter knows (diffusers "
                    "0.42): it cannot tell whether it changes sampling."
                )
            self.ignored[field] = f"not a {self.where} argument: diffusers ignores it"
        return self.ignored


def _is_false(value):
    return value is False or value is None or value == 0


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _non_negative_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def shifted_snr_betas(betas, scale):
    """Betas whose SNR ``abar / (1 - abar)`` is that of ``betas`` divided by ``scale`` at every step, float64.

    ``abar' = abar / (scale + (1 - scale) abar)`` (CogVideoX's ``snr_shift_scale``: 3 moves
    every step towards noise).
    """
    alpha_bar = np.cumprod(1.0 - np.asarray(betas, dtype=np.float64))
    alpha_bar = alpha_bar / (scale + (1.0 - scale) * alpha_bar)
    return 1.0 - alpha_bar / np.append(1.0, alpha_bar[:-1])


def _schedule(fields, kinds, terminal_alpha_bar=None, snr_shift_scale=1.0):
    """The ``NoiseSchedule`` of the beta fields (``terminal_alpha_bar``: Euler's and DPM's zero-SNR patch;
    ``snr_shift_scale``: CogVideoX's SNR shift, applied before the zero-SNR rescaling)."""
    num_timesteps = fields.get("num_train_timesteps", _positive_int)
    kind_name = fields.get("beta_schedule", tuple(kinds))
    rescale = fields.get("rescale_betas_zero_snr", (False, True))
    trained = fields.get("trained_betas")
    terminal = terminal_alpha_bar if rescale else None
    if trained is not None:
        betas = np.asarray(trained, dtype=np.float64)
        if betas.shape != (num_timesteps,):
            raise ConversionError(
                f"{fields.where} config field `trained_betas` has {betas.size} values but "
                f"`num_train_timesteps`={num_timesteps}."
            )
        for field in ("beta_start", "beta_end", "beta_schedule"):
            fields.ignore(field, "`trained_betas` are given")
        if snr_shift_scale != 1.0:
            betas = shifted_snr_betas(betas, snr_shift_scale)
        if rescale:
            betas = rescale_to_zero_terminal_snr(betas)
            if terminal is not None:
                betas[-1] = 1.0 - terminal / np.prod(1.0 - betas[:-1])
        return NoiseSchedule(BETA_SCHEDULES[kind_name], betas=betas)
    kind = BETA_SCHEDULES[kind_name]
    shifted = snr_shift_scale != 1.0
    zero_snr = {} if shifted else dict(rescale_zero_terminal_snr=rescale, terminal_alpha_bar=terminal)
    if kind == "cosine":
        for field in ("beta_start", "beta_end"):
            fields.ignore(field, "the squaredcos_cap_v2 schedule has no beta end points")
        schedule = NoiseSchedule("cosine", num_timesteps=num_timesteps, cosine_s=0.008, max_beta=0.999, **zero_snr)
    else:
        start, end = fields.get("beta_start", _number), fields.get("beta_end", _number)
        schedule = NoiseSchedule(kind, num_timesteps=num_timesteps, beta_start=float(start), beta_end=float(end),
                                 **zero_snr)
    if not shifted:
        return schedule
    betas = shifted_snr_betas(schedule.betas, snr_shift_scale)  # the kind's betas shifted, then rescaled
    return NoiseSchedule(kind, betas=rescale_to_zero_terminal_snr(betas) if rescale else betas)


def _prediction(fields, extra=()):
    value = fields.get("prediction_type", tuple(PREDICTIONS) + tuple(extra))
    return PREDICTIONS.get(value, "x0")  # Euler's "original_sample" is x0


def _spacing(fields, names, options):
    """Set ``timestep_spacing`` (our name for diffusers' ``names[value]``) and ``steps_offset`` where it applies."""
    spacing = fields.get("timestep_spacing", tuple(names))
    options["timestep_spacing"] = names[spacing]
    offset = fields.get("steps_offset", _non_negative_int)
    if spacing == "leading":
        if offset:
            options["steps_offset"] = int(offset)
    else:
        fields.ignore("steps_offset", f"diffusers adds it to leading timesteps only, not {spacing!r}")
    return spacing


def _thresholding(fields, clipping):
    """The sampler's thresholding dict (dynamic wins over ``clip_sample``, as in diffusers), or None."""
    dynamic = fields.get("thresholding", (False, True))
    ratio = fields.get("dynamic_thresholding_ratio", lambda v: _number(v) and 0 < v <= 1)
    max_value = fields.get("sample_max_value", _number)
    clip, clip_range = (None, None)
    if clipping:
        clip = fields.get("clip_sample", (False, True))
        clip_range = fields.get("clip_sample_range", lambda v: _number(v) and v > 0)
    if dynamic:
        if clipping:
            fields.ignore("clip_sample", "`thresholding` (dynamic) takes precedence")
            fields.ignore("clip_sample_range", "`thresholding` (dynamic) takes precedence")
        return dict(kind="dynamic", percentile=float(ratio), max_value=float(max_value))
    for field in ("dynamic_thresholding_ratio", "sample_max_value"):
        fields.ignore(field, "used only with `thresholding=True`")
    if clip:
        return dict(kind="static", clip_range=float(clip_range))
    if clipping:
        fields.ignore("clip_sample_range", "used only with `clip_sample=True`")
    return None


def _learn_sigma(learn_sigma, variance_type):
    """The backbone's ``learn_sigma`` when given, else the hint of ``variance_type``."""
    return variance_type in ("learned", "learned_range") if learn_sigma is None else bool(learn_sigma)


def _ddim(fields, config, learn_sigma):
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2"))
    prediction = _prediction(fields)
    options = dict(eta=0.0, use_clipped_model_output=False, previous_timestep="stride")
    _spacing(fields, {"leading": "leading", "trailing": "trailing", "linspace": "linspace_to_zero"}, options)
    if not fields.get("set_alpha_to_one", (True, False)):
        options["final_timestep"] = 0
    threshold = _thresholding(fields, clipping=True)
    if threshold:
        options["thresholding"] = threshold
    # a DDIM config has no variance_type of its own; Latte's carries DDPM's along as a hint
    learn = _learn_sigma(learn_sigma, config.get("variance_type"))
    return GaussianDiffusion(schedule, prediction=prediction, learn_sigma=learn), "ddim", options


DDPM_VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
                  "learned_range": "learned"}


def _ddpm(fields, config, learn_sigma):
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"))
    prediction = _prediction(fields)
    variance_type = fields.get("variance_type", tuple(DDPM_VARIANCES))
    learn = _learn_sigma(learn_sigma, variance_type)
    if variance_type == "learned_range" and not learn:
        raise ConversionError(
            "DDPMScheduler config field `variance_type`='learned_range' needs a backbone that predicts the "
            "variance (learn_sigma=True), got learn_sigma=False."
        )
    options = dict(variance=DDPM_VARIANCES[variance_type], final_noise=True)
    _spacing(fields, {"leading": "leading", "trailing": "trailing", "linspace": "linspace_to_zero"}, options)
    threshold = _thresholding(fields, clipping=True)
    if threshold:
        options["thresholding"] = threshold
    return GaussianDiffusion(schedule, prediction=prediction, learn_sigma=learn), "ddpm", options


def _dpm_solver(fields, config, learn_sigma):
    where = fields.where
    # diffusers maps "deis" to dpmsolver++ and the UniPC solver types to midpoint.
    fields.get("algorithm_type", ("dpmsolver++", "deis"))
    fields.get("solver_order", (2,))
    fields.get("solver_type", ("midpoint", "logrho", "bh1", "bh2"))
    for field in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas",
                  "use_flow_sigmas", "use_dynamic_shifting"):
        fields.get(field, _is_false)
    fields.ignore("flow_shift", "used only with `use_flow_sigmas=True`")
    fields.ignore("time_shift_type", "used only with `use_dynamic_shifting=True`")
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2"), ZERO_SNR_TERMINAL_ALPHA_BAR)
    prediction = _prediction(fields)
    variance_type = fields.get("variance_type", (None, "learned", "learned_range"))
    learn = _learn_sigma(learn_sigma, variance_type)
    options = {}
    _spacing(fields, {"linspace": "linspace", "leading": "leading_skip_zero", "trailing": "trailing"}, options)
    final = fields.get("final_sigmas_type", ("zero", "sigma_min"))
    lower_order_final = fields.get("lower_order_final", (True, False))
    euler_at_final = fields.get("euler_at_final", (True, False))
    if final == "sigma_min":
        options["final_timestep"] = 0
        options["lower_order_final"] = (
            "always" if euler_at_final else "under_15_steps" if lower_order_final else "never"
        )
    lambda_min = fields.get("lambda_min_clipped", lambda v: _number(v) or v == -math.inf)
    if lambda_min > -math.inf:
        lam = 0.5 * schedule.log_snr
        clipped = int(np.sum(lam < lambda_min))
        if clipped:
            raise ConversionError(
                f"{where} config field `lambda_min_clipped`={lambda_min!r} removes the last {clipped} training "
                "timesteps from the grid, which is not supported."
            )
    threshold = _thresholding(fields, clipping=False)
    if threshold:
        options["thresholding"] = threshold
    return GaussianDiffusion(schedule, prediction=prediction, learn_sigma=learn), "dpmpp_2m", options


def _euler(fields, config, learn_sigma):
    for field in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"):
        fields.get(field, _is_false)
    for field in ("sigma_min", "sigma_max"):
        fields.ignore(field, "used only with Karras / exponential / beta sigmas")
    fields.get("interpolation_type", ("linear",))
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2"), ZERO_SNR_TERMINAL_ALPHA_BAR)
    prediction = _prediction(fields, extra=("original_sample",))
    if prediction == "v":
        fields.get("timestep_type", ("discrete",))
    else:
        fields.ignore("timestep_type", "continuous timesteps apply to v_prediction only")
    options = {}
    spacing = _spacing(fields, {"linspace": "fractional_linspace", "leading": "leading", "trailing": "trailing"},
                       options)
    # init_noise_sigma: sigma_0 / alpha_0 (linspace, trailing) or sqrt(1 + (sigma_0 / alpha_0)^2) (leading)
    options["initial_noise_scale"] = "unit" if spacing == "leading" else "sigma"
    if fields.get("final_sigmas_type", ("zero", "sigma_min")) == "sigma_min":
        options["final_timestep"] = 0
    learn = _learn_sigma(learn_sigma, config.get("variance_type"))
    return GaussianDiffusion(schedule, prediction=prediction, learn_sigma=learn), "euler", options


def _flow_match_euler(fields, config, learn_sigma):
    num_timesteps = fields.get("num_train_timesteps", _positive_int)
    shift = fields.get("shift", lambda v: _number(v) and v > 0)
    fields.get("use_dynamic_shifting", _is_false)
    for field in ("base_shift", "max_shift", "base_image_seq_len", "max_image_seq_len", "time_shift_type"):
        fields.ignore(field, "used only with `use_dynamic_shifting=True`")
    for field in ("invert_sigmas", "shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                  "use_beta_sigmas", "stochastic_sampling"):
        fields.get(field, _is_false)
    if learn_sigma:
        raise ConversionError("FlowMatchEulerDiscreteScheduler: flow matching has no learned variance "
                              "(learn_sigma=True).")
    return FlowMatching(shift=float(shift), num_train_timesteps=int(num_timesteps)), "euler", {}


# diffusers' UniPC accepts DPM-Solver's solver types and runs them as bh2.
UNIPC_SOLVER_TYPES = {"bh1": "bh1", "bh2": "bh2", "midpoint": "bh2", "heun": "bh2", "logrho": "bh2"}


def _unipc(fields, config, learn_sigma):
    """UniPC: the Gaussian grid (DPM-Solver's spacings) or, with ``use_flow_sigmas``, flow matching."""
    where = fields.where
    for field in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_dynamic_shifting",
                  "solver_p", "shift_terminal"):
        fields.get(field, _is_false)
    for field in ("sigma_min", "sigma_max"):
        fields.ignore(field, "used only with Karras / exponential / beta sigmas")
    fields.ignore("time_shift_type", "used only with `use_dynamic_shifting=True`")
    fields.get("predict_x0", (True,))
    order = fields.get("solver_order", _positive_int)
    solver_type = UNIPC_SOLVER_TYPES[fields.get("solver_type", tuple(UNIPC_SOLVER_TYPES))]
    lower_order_final = fields.get("lower_order_final", (True, False))
    disabled = fields.get("disable_corrector", lambda v: isinstance(v, list) and all(map(_non_negative_int, v)))
    final = fields.get("final_sigmas_type", ("zero", "sigma_min"))
    flow = fields.get("use_flow_sigmas", (False, True))
    options = {}
    for name, value, default in (("solver_order", order, 2), ("solver_type", solver_type, "bh2"),
                                 ("lower_order_final", lower_order_final, True),
                                 ("disable_corrector", list(disabled), [])):
        if value != default:
            options[name] = value
    if final == "zero":  # diffusers' last step into sigma = 0 divides by an infinite log-SNR step
        if solver_type == "bh1":
            raise ConversionError(f"{where} config field `solver_type`={config['solver_type']!r} with "
                                  "final_sigmas_type='zero' is not supported: diffusers' last step is NaN "
                                  "(B(h) = -h is infinite there).")
        if not lower_order_final and order > 1:
            raise ConversionError(f"{where} config field `lower_order_final`=False with solver_order={order} and "
                                  "final_sigmas_type='zero' is not supported: diffusers' last step diverges.")
    threshold = _thresholding(fields, clipping=False)
    if threshold:
        options["thresholding"] = threshold
    if flow:
        fields.get("prediction_type", ("flow_prediction",))
        shift = fields.get("flow_shift", lambda v: _number(v) and v > 0)
        num_timesteps = fields.get("num_train_timesteps", _positive_int)
        if final != "zero":
            raise ConversionError(f"{where} config field `final_sigmas_type`={final!r} with use_flow_sigmas=True is "
                                  "not supported: its last step does not move (a zero log-SNR step).")
        for field in ("beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr"):
            fields.ignore(field, "the flow sigmas do not use the betas")
        for field in ("timestep_spacing", "steps_offset"):
            fields.ignore(field, "the flow sigmas have their own grid")
        if learn_sigma:
            raise ConversionError(f"{where}: flow matching has no learned variance (learn_sigma=True).")
        return FlowMatching(shift=float(shift), num_train_timesteps=int(num_timesteps)), "unipc", options
    fields.ignore("flow_shift", "used only with `use_flow_sigmas=True`")
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2"), ZERO_SNR_TERMINAL_ALPHA_BAR)
    prediction = _prediction(fields)
    _spacing(fields, {"linspace": "linspace", "leading": "leading_skip_zero", "trailing": "trailing"}, options)
    if final == "sigma_min":
        options["final_timestep"] = 0
    learn = _learn_sigma(learn_sigma, config.get("variance_type"))
    return GaussianDiffusion(schedule, prediction=prediction, learn_sigma=learn), "unipc", options


def _cogvideox(fields, config, learn_sigma):
    """CogVideoX's DDIM and DPM schedulers: the SNR-shifted schedule; DDIM's stride, never clipping."""
    shift = fields.get("snr_shift_scale", lambda v: _number(v) and v > 0)
    schedule = _schedule(fields, ("linear", "scaled_linear", "squaredcos_cap_v2"), snr_shift_scale=float(shift))
    prediction = _prediction(fields)
    options = dict(previous_timestep="stride")
    _spacing(fields, {"leading": "leading", "trailing": "trailing", "linspace": "linspace_to_zero"}, options)
    if not fields.get("set_alpha_to_one", (True, False)):
        options["final_timestep"] = 0
    for field in ("clip_sample", "clip_sample_range", "sample_max_value"):
        fields.ignore(field, f"{fields.where}.step never clips or thresholds x0")
    if learn_sigma:
        raise ConversionError(f"{fields.where}: the CogVideoX pipelines have no learned variance (learn_sigma=True).")
    process = GaussianDiffusion(schedule, prediction=prediction)
    if fields.where == "CogVideoXDPMScheduler":
        return process, "dpmpp_2m_sde", options
    return process, "ddim", dict(options, eta=0.0)  # its step has no noise, whatever `eta` the pipeline passes


CONVERTERS = {
    "DDIMScheduler": _ddim,
    "DDPMScheduler": _ddpm,
    "DPMSolverMultistepScheduler": _dpm_solver,
    "EulerDiscreteScheduler": _euler,
    "FlowMatchEulerDiscreteScheduler": _flow_match_euler,
    "UniPCMultistepScheduler": _unipc,
    "CogVideoXDDIMScheduler": _cogvideox,
    "CogVideoXDPMScheduler": _cogvideox,
}


def from_scheduler_config(config, learn_sigma=None):
    """A diffusers scheduler config as a keras_vdiff process, sampler and sampler options.

    Args:
        config: the parsed ``scheduler_config.json``, a path to it, or the scheduler folder
            of a pipeline (``<pipeline>/scheduler``).
        learn_sigma: whether the backbone also outputs the variance channels (pass the
            backbone's ``learn_sigma``); None takes it from ``variance_type`` (learned,
            learned_range), which a DDIM or Euler config usually lacks.

    Returns: a :class:`SchedulerConversion` (``process``, ``sampler``, ``sampler_options``,
    ``scheduler_class``, ``ignored``); ``VideoDiffusion(backbone, **conversion.task_arguments())``
    then samples as the scheduler does when ``generate`` is called without a sampler.

    Raises:
        ConversionError: an unsupported class, or a field whose value this library
            cannot reproduce (named with its value).

    Example:
        >>> conversion = from_scheduler_config({"_class_name": "DDIMScheduler", "clip_sample": False})
        >>> conversion.sampler, conversion.sampler_options["timestep_spacing"]
        ('ddim', 'leading')
    """
    config = read_scheduler_config(config)
    name = config.get("_class_name")
    if name not in CONVERTERS:
        raise ConversionError(
            f"Scheduler config `_class_name`={name!r} is not supported; supported: {sorted(CONVERTERS)}."
        )
    fields = _Fields(config, name)
    process, sampler, options = CONVERTERS[name](fields, config, learn_sigma)
    ignored = fields.finish()
    return SchedulerConversion(process=process, sampler=sampler, sampler_options=options, scheduler_class=name,
                               ignored=ignored)
