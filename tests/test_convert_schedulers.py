"""diffusers scheduler configs -> our process + sampler, run step for step against diffusers itself.

For each config, diffusers' scheduler is built from the config and runs its
``set_timesteps(n)`` + ``step`` loop on a fixed toy "model" (a deterministic
function of the model input and the timestep, the same numpy arrays on both
sides); our sampler runs ``from_scheduler_config(config)`` through the same
model. The timesteps the model sees must be identical and the final sample
agree to ``TOLERANCE`` relative to its largest value. diffusers is NCHW and
float32 throughout (its betas too); our schedules are float64.
"""

import inspect
import math

import diffusers
import numpy as np
import pytest
import torch
from keras import ops

from test_diffusion_samplers import replay_euler_in_float64

from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.convert.schedulers import SCHEDULER_DEFAULTS, from_scheduler_config
from keras_vdiff.diffusion import FlowMatching, GaussianDiffusion, get_sampler

TOLERANCE = 1e-5
SHAPE = (2, 3, 4, 5)  # NCHW
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
PHASE = np.random.default_rng(7).normal(size=SHAPE).astype(np.float32)
VARIANCE_PHASE = np.random.default_rng(8).normal(size=SHAPE).astype(np.float32)


def model_output(x, t, learn_sigma):
    """The toy model on the model input ``x`` (NCHW numpy) at timestep ``t``."""
    out = 0.5 * x + 0.3 * np.cos(0.003 * np.float32(t) + PHASE)
    if learn_sigma:
        out = np.concatenate([out, np.tanh(0.4 * x + 0.001 * np.float32(t) + VARIANCE_PHASE)], axis=1)
    return out.astype(np.float32)


def to_nhwc(x):
    return np.transpose(np.asarray(x), (0, 2, 3, 1))


def to_nchw(x):
    return np.transpose(np.asarray(x), (0, 3, 1, 2))


def run_diffusers(config, steps, noise, learn_sigma, seed):
    """diffusers' loop as its pipelines run it: latents * init_noise_sigma, scale_model_input, step."""
    scheduler = getattr(diffusers, config["_class_name"]).from_config(config)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(noise) * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching has none
    for t in scheduler.timesteps:
        model_input = (scheduler.scale_model_input(x, t) if hasattr(scheduler, "scale_model_input") else x).numpy()
        output = torch.from_numpy(model_output(model_input, float(t), learn_sigma))
        if config["_class_name"] == "DDPMScheduler":
            x = scheduler.step(output, t, x, generator=generator).prev_sample
        else:
            if learn_sigma:  # the pipelines drop the variance channels before other schedulers
                output = output[:, : SHAPE[1]]
            x = scheduler.step(output, t, x).prev_sample
    x = x.numpy().astype(np.float64)
    if config["_class_name"] == "EulerDiscreteScheduler":
        x = x / math.sqrt(float(scheduler.sigmas[-1]) ** 2 + 1)  # its variance-exploding sample -> ours
    return scheduler, x


def run_ours(conversion, steps, noise, seed):
    """Our sampler on the same model; DDPM's noise drawn as diffusers draws it (only where t > 0)."""
    sampler = get_sampler(conversion.sampler, conversion.process, steps, **conversion.sampler_options)
    learn_sigma = conversion.process.learn_sigma
    twin = torch.Generator().manual_seed(seed)

    def model_fn(x, t, carry):
        return ops.convert_to_tensor(to_nhwc(model_output(to_nchw(ops.convert_to_numpy(x)), float(t),
                                                          learn_sigma))), carry

    state = sampler.initial_state(ops.convert_to_tensor(to_nhwc(noise)))
    for i in range(steps):
        step_noise = None
        if sampler.stochastic:
            drawn = torch.zeros(SHAPE)
            if sampler.grid["timesteps"][i] > 0:
                drawn = torch.randn(SHAPE, generator=twin)
            step_noise = ops.convert_to_tensor(to_nhwc(drawn.numpy()))
        state = sampler.step(model_fn, i, state, step_noise)
    return sampler.model_timesteps, to_nchw(ops.convert_to_numpy(sampler.result(state))).astype(np.float64)


def relative_error(ours, reference):
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


CASES = [
    # DDIM
    ("ddim_default", dict(_class_name="DDIMScheduler"), 10, None),
    ("ddim_trailing_v_zero_snr", dict(_class_name="DDIMScheduler", timestep_spacing="trailing",
                                      prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                      clip_sample=False, **SD), 7, None),
    ("ddim_linspace_final_alpha", dict(_class_name="DDIMScheduler", timestep_spacing="linspace",
                                       set_alpha_to_one=False, clip_sample=False, **SD), 6, None),
    ("ddim_leading_offset_sd", dict(_class_name="DDIMScheduler", steps_offset=1, set_alpha_to_one=False,
                                    clip_sample=False, skip_prk_steps=True, **SD), 8, None),
    ("ddim_cosine_dynamic", dict(_class_name="DDIMScheduler", beta_schedule="squaredcos_cap_v2",
                                 prediction_type="sample", thresholding=True, dynamic_thresholding_ratio=0.9,
                                 sample_max_value=1.5), 5, None),
    # DDPM
    ("ddpm_learned_range", dict(_class_name="DDPMScheduler", variance_type="learned_range", beta_start=2e-3), 8,
     True),
    ("ddpm_leading_offset", dict(_class_name="DDPMScheduler", steps_offset=1, clip_sample=False, **SD), 6, None),
    ("ddpm_trailing_v_zero_snr", dict(_class_name="DDPMScheduler", timestep_spacing="trailing",
                                      prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                      variance_type="fixed_large", clip_sample_range=2.0), 5, None),
    # DPM-Solver++(2M)
    ("dpm_default", dict(_class_name="DPMSolverMultistepScheduler", **SD), 10, None),
    ("dpm_trailing_v_zero_snr", dict(_class_name="DPMSolverMultistepScheduler", timestep_spacing="trailing",
                                     prediction_type="v_prediction", rescale_betas_zero_snr=True, **SD), 7, None),
    ("dpm_leading_offset_sigma_min", dict(_class_name="DPMSolverMultistepScheduler", timestep_spacing="leading",
                                          steps_offset=1, final_sigmas_type="sigma_min", **SD), 16, None),
    ("dpm_epsilon_learned_range", dict(_class_name="DPMSolverMultistepScheduler", variance_type="learned_range",
                                       thresholding=True, sample_max_value=2.0, **SD), 6, True),
    # Euler
    ("euler_default_fractional", dict(_class_name="EulerDiscreteScheduler", **SD), 7, None),
    ("euler_trailing_v_zero_snr", dict(_class_name="EulerDiscreteScheduler", timestep_spacing="trailing",
                                       prediction_type="v_prediction", rescale_betas_zero_snr=True, **SD), 6, None),
    ("euler_leading_offset_sigma_min", dict(_class_name="EulerDiscreteScheduler", timestep_spacing="leading",
                                            steps_offset=1, final_sigmas_type="sigma_min", **SD), 6, None),
    ("euler_cosine_trailing_x0", dict(_class_name="EulerDiscreteScheduler", beta_schedule="squaredcos_cap_v2",
                                      timestep_spacing="trailing", prediction_type="sample"), 6, None),
    # flow matching
    ("flow_shift_3", dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=3.0), 7, None),
]


@pytest.mark.parametrize("name,config,steps,learn_sigma", CASES, ids=[case[0] for case in CASES])
def test_sampler_matches_the_diffusers_scheduler(name, config, steps, learn_sigma):
    noise = np.random.default_rng(len(name)).normal(size=SHAPE).astype(np.float32)
    conversion = from_scheduler_config(config, learn_sigma=learn_sigma)
    scheduler, reference = run_diffusers(config, steps, noise, bool(learn_sigma), seed=3)
    ours_t, ours = run_ours(conversion, steps, noise, seed=3)
    np.testing.assert_array_equal(ours_t, np.asarray(scheduler.timesteps, dtype=np.float32))
    assert np.all(np.isfinite(ours))
    if config["_class_name"] == "EulerDiscreteScheduler":
        # diffusers' float32 Euler cancels terms of the size of its first sigma (2e4 on a cosine schedule from
        # t = 999, 4096 with a zero terminal SNR): there it is 2.3e-4 / 3.0e-5 from its own update replayed in
        # float64, and ours within 4e-7 of that replay.
        exact = replay_euler_in_float64(scheduler, noise, lambda x, t: model_output(x, t, False))
        assert relative_error(ours, exact) <= TOLERANCE
        # as close to diffusers' float32 run as that run is to its float64 replay (or within TOLERANCE)
        assert relative_error(ours, reference) <= relative_error(reference, exact) + TOLERANCE
    else:
        assert relative_error(ours, reference) <= TOLERANCE


def test_what_each_config_becomes():
    ddim = from_scheduler_config(dict(_class_name="DDIMScheduler", timestep_spacing="linspace", clip_sample=False,
                                      variance_type="learned_range", _diffusers_version="0.24.0"))
    assert ddim.sampler == "ddim" and ddim.process.learn_sigma  # the foreign variance_type as a hint
    assert ddim.sampler_options == dict(eta=0.0, use_clipped_model_output=False, previous_timestep="stride",
                                        timestep_spacing="linspace_to_zero")
    assert "variance_type" in ddim.ignored
    assert ddim.task_arguments()["sampler"] == "ddim"
    ddpm = from_scheduler_config(dict(_class_name="DDPMScheduler", beta_schedule="squaredcos_cap_v2",
                                      beta_start=0.5, steps_offset=2, timestep_spacing="trailing"))
    assert ddpm.process.schedule.kind == "cosine"
    assert set(ddpm.ignored) == {"beta_start", "steps_offset"}
    assert ddpm.sampler_options["thresholding"] == dict(kind="static", clip_range=1.0)
    flow = from_scheduler_config(dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=5))
    assert isinstance(flow.process, FlowMatching) and flow.process.shift == 5.0 and flow.sampler == "euler"
    euler = from_scheduler_config(dict(_class_name="EulerDiscreteScheduler", **SD), learn_sigma=True)
    assert isinstance(euler.process, GaussianDiffusion) and euler.process.learn_sigma
    assert euler.sampler_options == dict(timestep_spacing="fractional_linspace", initial_noise_scale="sigma")


def test_reads_a_scheduler_folder(tmp_path):
    scheduler = diffusers.DDIMScheduler(**SD, steps_offset=1, set_alpha_to_one=False)
    scheduler.save_config(tmp_path / "scheduler")
    conversion = from_scheduler_config(tmp_path / "scheduler")
    assert conversion.sampler_options["steps_offset"] == 1 and conversion.sampler_options["final_timestep"] == 0
    assert from_scheduler_config(tmp_path / "scheduler" / "scheduler_config.json").sampler == "ddim"
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        from_scheduler_config(tmp_path)


@pytest.mark.parametrize(
    "config,field",
    [
        (dict(_class_name="EulerDiscreteScheduler", use_karras_sigmas=True), "use_karras_sigmas"),
        (dict(_class_name="DPMSolverMultistepScheduler", algorithm_type="sde-dpmsolver++"), "algorithm_type"),
        (dict(_class_name="DPMSolverMultistepScheduler", solver_order=3), "solver_order"),
        (dict(_class_name="DPMSolverMultistepScheduler", solver_type="heun"), "solver_type"),
        (dict(_class_name="DPMSolverMultistepScheduler", beta_schedule="squaredcos_cap_v2",
              lambda_min_clipped=-5.1), "lambda_min_clipped"),
        (dict(_class_name="DDPMScheduler", variance_type="learned"), "variance_type"),
        (dict(_class_name="DDPMScheduler", variance_type="learned_range"), "variance_type"),
        (dict(_class_name="DDIMScheduler", beta_schedule="sigmoid"), "beta_schedule"),
        (dict(_class_name="DDIMScheduler", timestep_spacing="karras"), "timestep_spacing"),
        (dict(_class_name="DDIMScheduler", prediction_type="flow_prediction"), "prediction_type"),
        (dict(_class_name="EulerDiscreteScheduler", prediction_type="v_prediction", timestep_type="continuous"),
         "timestep_type"),
        (dict(_class_name="EulerDiscreteScheduler", interpolation_type="log_linear"), "interpolation_type"),
        (dict(_class_name="FlowMatchEulerDiscreteScheduler", use_dynamic_shifting=True), "use_dynamic_shifting"),
        (dict(_class_name="FlowMatchEulerDiscreteScheduler", stochastic_sampling=True), "stochastic_sampling"),
        (dict(_class_name="DDIMScheduler", timestep_shift=2.0), "timestep_shift"),
        (dict(_class_name="PNDMScheduler"), "_class_name"),
    ],
)
def test_unsupported_fields_raise_naming_them(config, field):
    with pytest.raises(ConversionError, match=f"`{field}`"):
        from_scheduler_config(config, learn_sigma=False)


def test_defaults_table_matches_the_installed_diffusers():
    for name, defaults in SCHEDULER_DEFAULTS.items():
        signature = inspect.signature(getattr(diffusers, name).__init__)
        installed = {k: p.default for k, p in signature.parameters.items() if k != "self"}
        assert installed == defaults, name


def test_zero_terminal_snr_schedule_matches_diffusers_and_round_trips():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    from keras_vdiff.diffusion import NoiseSchedule

    plain = NoiseSchedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
    ours = NoiseSchedule("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True)
    # diffusers' function in float64 (its schedulers run it in float32: betas ~1e-3 from 1 - ratio keep 4 digits)
    reference = rescale_zero_terminal_snr(torch.from_numpy(plain.betas)).numpy()
    np.testing.assert_allclose(ours.betas, reference, rtol=1e-10)
    assert ours.alphas_cumprod[-1] == 0.0 and ours.betas[-1] == 1.0
    patched = NoiseSchedule("scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True,
                            terminal_alpha_bar=2.0**-24)
    np.testing.assert_allclose(patched.alphas_cumprod[-1], 2.0**-24, rtol=1e-12)
    np.testing.assert_allclose(patched.alphas_cumprod[:-1], ours.alphas_cumprod[:-1], rtol=1e-12)
    for schedule in (ours, patched, NoiseSchedule("linear", betas=ours.betas)):
        restored = NoiseSchedule.from_config(schedule.get_config())
        np.testing.assert_array_equal(restored.alphas_cumprod, schedule.alphas_cumprod)
