"""The ``"unipc"`` sampler against diffusers' ``UniPCMultistepScheduler``, step loop for step loop, and its config.

diffusers' scheduler is built from a config and runs ``set_timesteps(n)`` + ``step`` on a fixed fake model (a
deterministic function of the model input and the timestep, the same numpy arrays on both sides, from
``test_convert_schedulers``); ours runs ``from_scheduler_config(config)`` on the same model. The timesteps the model
sees must be identical and the final samples agree to 1e-5 relative to their largest value: Gaussian epsilon and v
configs, Wan 2.1's flow config (``flow_prediction``, ``use_flow_sigmas``, ``flow_shift`` 3 for 480p / 5 for 720p),
higher orders, bh1, ``disable_corrector``, thresholding. The same sampler runs in the compiled loop.
"""

import keras
import numpy as np
import pytest
from keras import ops

from test_convert_schedulers import SD, SHAPE, relative_error, run_diffusers, run_ours

from keras_vdiff.convert.checkpoint import ConversionError
from keras_vdiff.convert.schedulers import from_scheduler_config
from keras_vdiff.diffusion import FlowMatching, GaussianDiffusion, NoiseSchedule, get_sampler
from keras_vdiff.diffusion.compile import SamplingLoop, backend_seed

TOLERANCE = 1e-5
UNIPC = "UniPCMultistepScheduler"
# Wan-AI/Wan2.1-T2V-1.3B-Diffusers/scheduler/scheduler_config.json (480p; the 720p pipelines use flow_shift 5).
WAN = dict(_class_name=UNIPC, _diffusers_version="0.33.0.dev0", beta_end=0.02, beta_schedule="linear",
           beta_start=0.0001, disable_corrector=[], dynamic_thresholding_ratio=0.995, final_sigmas_type="zero",
           flow_shift=3.0, lower_order_final=True, num_train_timesteps=1000, predict_x0=True,
           prediction_type="flow_prediction", rescale_betas_zero_snr=False, sample_max_value=1.0, solver_order=2,
           solver_p=None, solver_type="bh2", steps_offset=0, thresholding=False, timestep_spacing="linspace",
           trained_betas=None, use_beta_sigmas=False, use_exponential_sigmas=False, use_flow_sigmas=True,
           use_karras_sigmas=False)

CASES = [
    ("gaussian_epsilon_default", dict(_class_name=UNIPC, **SD), 10),
    ("gaussian_v_trailing_zero_snr", dict(_class_name=UNIPC, prediction_type="v_prediction",
                                          timestep_spacing="trailing", rescale_betas_zero_snr=True, **SD), 7),
    ("gaussian_order_3_leading_sigma_min_bh1", dict(_class_name=UNIPC, solver_order=3, solver_type="bh1",
                                                    timestep_spacing="leading", steps_offset=1,
                                                    final_sigmas_type="sigma_min", lower_order_final=False,
                                                    disable_corrector=[0, 3], **SD), 8),
    ("gaussian_cosine_x0_dynamic_threshold", dict(_class_name=UNIPC, beta_schedule="squaredcos_cap_v2",
                                                  prediction_type="sample", thresholding=True,
                                                  dynamic_thresholding_ratio=0.9, sample_max_value=1.5), 6),
    ("wan_480p_flow_shift_3", WAN, 8),
    ("wan_720p_flow_shift_5_order_3", dict(WAN, flow_shift=5.0, solver_order=3), 9),
    ("flow_shift_1_one_step", dict(WAN, flow_shift=1.0), 1),
    ("flow_match_euler_wan_shift_5", dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=5.0), 6),
]


@pytest.mark.parametrize("name,config,steps", CASES, ids=[case[0] for case in CASES])
def test_unipc_matches_the_diffusers_scheduler(name, config, steps):
    noise = np.random.default_rng(len(name)).normal(size=SHAPE).astype(np.float32)
    conversion = from_scheduler_config(config, learn_sigma=False)
    scheduler, reference = run_diffusers(config, steps, noise, False, seed=0)
    ours_t, ours = run_ours(conversion, steps, noise, seed=0)
    np.testing.assert_array_equal(ours_t, np.asarray(scheduler.timesteps, dtype=np.float32))
    assert np.all(np.isfinite(reference)) and np.all(np.isfinite(ours))
    assert relative_error(ours, reference) <= TOLERANCE


def test_what_unipc_configs_become():
    wan = from_scheduler_config(WAN)
    assert isinstance(wan.process, FlowMatching) and wan.process.shift == 3.0
    assert wan.process.num_train_timesteps == 1000
    assert wan.sampler == "unipc" and wan.sampler_options == {}
    # the betas and the Gaussian spacing of Wan's config play no part on the flow grid (at their defaults: not listed)
    assert wan.ignored == {}
    shifted = from_scheduler_config(dict(WAN, flow_shift=5.0, beta_schedule="scaled_linear",
                                         timestep_spacing="trailing"))
    assert shifted.process.shift == 5.0
    assert set(shifted.ignored) == {"beta_schedule", "timestep_spacing"}
    gaussian = from_scheduler_config(dict(_class_name=UNIPC, prediction_type="v_prediction", solver_order=3,
                                          solver_type="midpoint", timestep_spacing="leading", steps_offset=1,
                                          final_sigmas_type="sigma_min", disable_corrector=[0], flow_shift=2.0, **SD))
    assert isinstance(gaussian.process, GaussianDiffusion) and gaussian.process.prediction == "v"
    assert gaussian.sampler_options == dict(solver_order=3, timestep_spacing="leading_skip_zero", steps_offset=1,
                                            final_timestep=0, disable_corrector=[0])  # midpoint runs as bh2
    assert set(gaussian.ignored) == {"flow_shift"}
    euler = from_scheduler_config(dict(_class_name="FlowMatchEulerDiscreteScheduler", shift=5.0))
    assert euler.sampler == "euler" and euler.process.shift == 5.0


@pytest.mark.parametrize(
    "config,field",
    [
        (dict(WAN, use_karras_sigmas=True), "use_karras_sigmas"),
        (dict(WAN, predict_x0=False), "predict_x0"),
        (dict(WAN, use_dynamic_shifting=True), "use_dynamic_shifting"),
        (dict(WAN, shift_terminal=0.1), "shift_terminal"),
        (dict(WAN, prediction_type="epsilon"), "prediction_type"),
        (dict(WAN, final_sigmas_type="sigma_min"), "final_sigmas_type"),
        (dict(WAN, solver_type="bh1"), "solver_type"),  # diffusers' last step into sigma 0 is NaN
        (dict(WAN, lower_order_final=False), "lower_order_final"),  # ... and diverges at second order
        (dict(WAN, solver_type="bh3"), "solver_type"),
        (dict(WAN, disable_corrector=[-1]), "disable_corrector"),
        (dict(_class_name=UNIPC, prediction_type="flow_prediction"), "prediction_type"),
        (dict(_class_name=UNIPC, beta_schedule="sigmoid"), "beta_schedule"),
    ],
)
def test_unsupported_unipc_fields_raise_naming_them(config, field):
    with pytest.raises(ConversionError, match=f"`{field}`"):
        from_scheduler_config(config, learn_sigma=False)


# torch.compile of the step takes ~45 s here (JAX and TensorFlow compile the whole loop in a few seconds).
@(pytest.mark.slow if keras.backend.backend() == "torch" else (lambda test: test))
def test_unipc_runs_in_the_compiled_loop():
    """Wan's config in the backend's compiled loop (jax.jit / XLA / torch.compile) = the eager steps."""
    conversion = from_scheduler_config(WAN)
    steps = 6
    sampler = get_sampler(conversion.sampler, conversion.process, steps, **conversion.sampler_options)
    phase = ops.convert_to_tensor(np.random.default_rng(7).normal(size=(2, 4, 5, 3)).astype(np.float32))

    def model_fn(x, t, carry):
        return 0.5 * x + 0.3 * ops.cos(0.003 * t + phase), carry

    def step_fn(i, state, args, noise):
        return sampler.step(model_fn, i, state, noise)

    noise = np.random.default_rng(3).normal(size=(2, 4, 5, 3)).astype(np.float32)
    results = []
    for compile in (False, True):
        loop = SamplingLoop(step_fn, steps, sampler.stochastic, noise.shape, variables=[], compile=compile)
        state = loop(sampler.initial_state(ops.convert_to_tensor(noise)), (), backend_seed(0))
        results.append(ops.convert_to_numpy(sampler.result(state)))
    assert np.all(np.isfinite(results[0]))
    assert relative_error(results[1], results[0]) <= 1e-6


def test_unipc_arguments_are_checked():
    flow = FlowMatching(shift=3.0)
    with pytest.raises(ValueError, match="solver_order"):
        get_sampler("unipc", flow, 4, solver_order=0)
    with pytest.raises(ValueError, match="solver_type.*bh3"):
        get_sampler("unipc", flow, 4, solver_type="bh3")
    with pytest.raises(ValueError, match="disable_corrector"):
        get_sampler("unipc", flow, 4, disable_corrector=["1"])
    with pytest.raises(ValueError, match="final_timestep"):
        get_sampler("unipc", flow, 4, final_timestep=0)
    # A zero terminal SNR without diffusers' 2**-24 patch starts at alpha = 0: an infinite log-SNR.
    unpatched = GaussianDiffusion(NoiseSchedule("scaled_linear", beta_start=0.00085, beta_end=0.012,
                                                rescale_zero_terminal_snr=True), prediction="v")
    with pytest.raises(ValueError, match="finite log-SNR"):
        get_sampler("unipc", unpatched, 4, timestep_spacing="trailing")


@pytest.mark.slow  # 30 s on JAX (a DiT built and its loop jitted); the sampler itself is covered by the tests above
@pytest.mark.parametrize("config", [WAN, dict(_class_name=UNIPC, prediction_type="v_prediction", **SD)],
                         ids=["wan_flow", "gaussian_v"])
def test_a_task_samples_with_the_converted_unipc_scheduler(config):
    """``VideoDiffusion(**from_scheduler_config(...).task_arguments())``: unipc is the task's default sampler."""
    from test_video_diffusion import make_model

    conversion = from_scheduler_config(config)
    model = make_model(conversion.process, sampler=conversion.sampler, sampler_options=conversion.sampler_options)
    model.backbone.set_weights([0.05 * np.random.standard_normal(w.shape) for w in model.backbone.get_weights()])
    # JAX runs eager ops one compiled kernel each (slow): it gets the jitted loop, the others the eager one.
    kwargs = dict(labels=[0, 3], steps=3, guidance_scale=2.0, seed=7, return_latents=True,
                  compile=keras.backend.backend() == "jax")
    latents = ops.convert_to_numpy(model.generate(**kwargs))
    assert latents.shape == (2, 8, 8, 3) and np.all(np.isfinite(latents))
    np.testing.assert_array_equal(ops.convert_to_numpy(model.generate(**dict(kwargs, sampler="unipc"))), latents)
