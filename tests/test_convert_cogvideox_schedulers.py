"""CogVideoX's schedulers (``CogVideoXDDIMScheduler``, ``CogVideoXDPMScheduler``) -> our process + sampler, step for step.

diffusers' scheduler runs the loop of ``CogVideoXPipeline`` (DDIM: ``step(v, t, x)``;
DPM: ``step(v, old_x0, t, timesteps[i - 1], x)``) on the toy model of
``test_convert_schedulers`` (a deterministic function of the model input and the
timestep); ours runs ``from_scheduler_config(config)`` on the same model. The DPM
scheduler draws its noise inside ``step`` (twice at a second-order step, the
first draw unused); its ``randn_tensor`` is replaced by one that returns the
noise ours gets at that step. The timesteps must be identical and the final
samples agree to 1e-5 relative to their largest value. Configs: CogVideoX-2b's
released one (v prediction, zero terminal SNR after an SNR shift of 3, trailing
spacing) and variants that reach every other field value.
"""

from unittest import mock

import diffusers
import numpy as np
import pytest
import torch
from diffusers.schedulers import scheduling_dpm_cogvideox
from keras import ops

from test_convert_schedulers import model_output, relative_error, to_nchw, to_nhwc

from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.convert.schedulers import from_scheduler_config
from keras_vdiff.diffusion import get_sampler

TOLERANCE = 1e-5
SHAPE = (2, 3, 4, 5)  # NCHW
# THUDM/CogVideoX-2b scheduler/scheduler_config.json (the 5b's differs in snr_shift_scale: 1.0)
COGVIDEOX_2B = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
                    clip_sample_range=1.0, num_train_timesteps=1000, prediction_type="v_prediction",
                    rescale_betas_zero_snr=True, sample_max_value=1.0, set_alpha_to_one=True, snr_shift_scale=3.0,
                    steps_offset=0, timestep_spacing="trailing", trained_betas=None)
TRAINED = np.linspace(1e-4, 0.03, 1000).tolist()


def run_diffusers(config, steps, noises):
    """``CogVideoXPipeline``'s denoising loop on the toy model; ``noises[i]`` is what step i's ``randn_tensor`` gives."""
    name = config["_class_name"]
    scheduler = getattr(diffusers, name).from_config(config)
    if config.get("beta_schedule") == "linear":
        # diffusers makes linear betas and their product in float32 (2.2e-5 off after 8 steps of the case below);
        # its steps run here on the same table in float64 (its scaled_linear tables are float64 already)
        assert not config.get("rescale_betas_zero_snr") and config.get("set_alpha_to_one", True)
        betas = torch.linspace(config["beta_start"], config["beta_end"], config.get("num_train_timesteps", 1000),
                               dtype=torch.float64)
        alpha_bar, shift = torch.cumprod(1.0 - betas, 0), config["snr_shift_scale"]
        scheduler.alphas_cumprod = alpha_bar / (shift + (1.0 - shift) * alpha_bar)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps
    x, old_x0 = torch.from_numpy(noises[0]), None
    for i, t in enumerate(timesteps):
        output = torch.from_numpy(model_output(scheduler.scale_model_input(x, t).numpy(), float(t), False))
        if name == "CogVideoXDDIMScheduler":
            x = scheduler.step(output, t, x, eta=0.0, return_dict=False)[0]
        else:
            with mock.patch.object(scheduling_dpm_cogvideox, "randn_tensor",
                                   lambda *args, **kwargs: torch.from_numpy(noises[i + 1]).clone()):
                x, old_x0 = scheduler.step(output, old_x0, t, timesteps[i - 1] if i > 0 else None, x, eta=0.0,
                                           return_dict=False)
    return timesteps.numpy(), x.numpy().astype(np.float64)


def run_ours(conversion, steps, noises):
    sampler = get_sampler(conversion.sampler, conversion.process, steps, **conversion.sampler_options)

    def model_fn(x, t, carry):
        return ops.convert_to_tensor(to_nhwc(model_output(to_nchw(ops.convert_to_numpy(x)), float(t), False))), carry

    state = sampler.initial_state(ops.convert_to_tensor(to_nhwc(noises[0])))
    for i in range(steps):
        step_noise = ops.convert_to_tensor(to_nhwc(noises[i + 1])) if sampler.stochastic else None
        state = sampler.step(model_fn, i, state, step_noise)
    return sampler.model_timesteps, to_nchw(ops.convert_to_numpy(sampler.result(state))).astype(np.float64)


CASES = [
    ("ddim_2b", dict(COGVIDEOX_2B, _class_name="CogVideoXDDIMScheduler"), 7),
    ("ddim_2b_50", dict(COGVIDEOX_2B, _class_name="CogVideoXDDIMScheduler"), 50),
    ("ddim_5b_no_shift", dict(COGVIDEOX_2B, _class_name="CogVideoXDDIMScheduler", snr_shift_scale=1.0), 6),
    ("ddim_leading_offset_final_alpha", dict(_class_name="CogVideoXDDIMScheduler", steps_offset=1,
                                             set_alpha_to_one=False, snr_shift_scale=2.0), 8),
    ("ddim_linspace_cosine_x0", dict(_class_name="CogVideoXDDIMScheduler", timestep_spacing="linspace",
                                     beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                                     rescale_betas_zero_snr=True, clip_sample=True), 6),
    ("ddim_trained_betas_v", dict(_class_name="CogVideoXDDIMScheduler", trained_betas=TRAINED,
                                  prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                  timestep_spacing="trailing"), 5),
    ("dpm_2b", dict(COGVIDEOX_2B, _class_name="CogVideoXDPMScheduler"), 7),
    ("dpm_2b_50", dict(COGVIDEOX_2B, _class_name="CogVideoXDPMScheduler"), 50),
    ("dpm_linspace_stride_off_grid", dict(COGVIDEOX_2B, _class_name="CogVideoXDPMScheduler",
                                          timestep_spacing="linspace"), 6),
    ("dpm_leading_epsilon_final_alpha", dict(_class_name="CogVideoXDPMScheduler", timestep_spacing="leading",
                                             set_alpha_to_one=False, steps_offset=2), 7),
    ("dpm_linear_x0_shift_2", dict(_class_name="CogVideoXDPMScheduler", beta_schedule="linear", beta_start=1e-4,
                                   beta_end=0.02, prediction_type="sample", snr_shift_scale=2.0), 8),
]


@pytest.mark.parametrize("name,config,steps", CASES, ids=[case[0] for case in CASES])
def test_sampler_matches_the_cogvideox_scheduler(name, config, steps):
    rng = np.random.default_rng(len(name))
    noises = [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(steps + 1)]
    conversion = from_scheduler_config(config)
    reference_t, reference = run_diffusers(config, steps, noises)
    ours_t, ours = run_ours(conversion, steps, noises)
    np.testing.assert_array_equal(ours_t, reference_t.astype(np.float32))
    assert np.all(np.isfinite(reference)) and np.all(np.isfinite(ours))
    assert relative_error(ours, reference) <= TOLERANCE


def test_what_the_2b_config_becomes():
    ddim = from_scheduler_config(dict(COGVIDEOX_2B, _class_name="CogVideoXDDIMScheduler", _diffusers_version="0.30"))
    assert ddim.sampler == "ddim" and ddim.process.prediction == "v"
    assert ddim.sampler_options == dict(eta=0.0, previous_timestep="stride", timestep_spacing="trailing")
    assert set(ddim.ignored) == {"clip_sample"}  # diffusers' CogVideoX DDIM never clips, whatever the config says
    schedule = ddim.process.schedule
    assert schedule.alphas_cumprod[-1] == 0.0 and schedule.num_timesteps == 1000
    reference = diffusers.CogVideoXDDIMScheduler.from_config(COGVIDEOX_2B).alphas_cumprod.numpy()
    np.testing.assert_allclose(schedule.alphas_cumprod, reference, rtol=1e-12, atol=1e-15)
    dpm = from_scheduler_config(dict(COGVIDEOX_2B, _class_name="CogVideoXDPMScheduler", set_alpha_to_one=False))
    assert dpm.sampler == "dpmpp_2m_sde" and dpm.sampler_options["final_timestep"] == 0
    assert get_sampler(dpm.sampler, dpm.process, 4, **dpm.sampler_options).stochastic


@pytest.mark.parametrize(
    "config,field",
    [
        (dict(_class_name="CogVideoXDDIMScheduler", beta_schedule="sigmoid"), "beta_schedule"),
        (dict(_class_name="CogVideoXDPMScheduler", timestep_spacing="karras"), "timestep_spacing"),
        (dict(_class_name="CogVideoXDDIMScheduler", snr_shift_scale=0.0), "snr_shift_scale"),
        (dict(_class_name="CogVideoXDPMScheduler", prediction_type="flow_prediction"), "prediction_type"),
        (dict(_class_name="CogVideoXDDIMScheduler", steps_offset=-1), "steps_offset"),
        (dict(_class_name="CogVideoXDDIMScheduler", timestep_shift=2.0), "timestep_shift"),
    ],
)
def test_unsupported_fields_raise_naming_them(config, field):
    with pytest.raises(ConversionError, match=f"`{field}`"):
        from_scheduler_config(config)
