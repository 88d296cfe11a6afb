"""Noise schedules against the papers' formulas (float64 numpy) and diffusers' betas."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from keras_vdiff.diffusion import NoiseSchedule, shift_flow_time


def cosine_alpha_bar_reference(T, s=0.008):
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), 0.999) for i in range(T)]
    return np.cumprod(1 - np.array(betas))


def test_cosine_schedule_matches_the_improved_ddpm_formula():
    schedule = NoiseSchedule("cosine", num_timesteps=1000)
    np.testing.assert_allclose(schedule.alphas_cumprod, cosine_alpha_bar_reference(1000), rtol=1e-12)
    assert schedule.betas.max() <= 0.999


def test_linear_schedule_scales_with_the_number_of_steps():
    for T in (1000, 250, 4000):
        schedule = NoiseSchedule("linear", num_timesteps=T)
        scale = 1000 / T
        np.testing.assert_allclose(schedule.betas[[0, -1]], [scale * 1e-4, scale * 0.02], rtol=1e-12)
        assert np.allclose(np.diff(schedule.betas), np.diff(schedule.betas)[0])


@pytest.mark.parametrize(
    "kind,diffusers_kind,extra",
    [
        ("linear", "linear", {}),
        ("cosine", "squaredcos_cap_v2", {}),
        ("scaled_linear", "scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
        ("sigmoid", "sigmoid", {}),
    ],
)
def test_betas_match_diffusers(kind, diffusers_kind, extra):
    reference = DDPMScheduler(num_train_timesteps=1000, beta_schedule=diffusers_kind, **extra)
    ours = NoiseSchedule(kind, num_timesteps=1000)
    np.testing.assert_allclose(ours.betas, reference.betas.numpy().astype(np.float64), rtol=2e-6, atol=1e-9)


def test_derived_tables_follow_the_ddpm_posterior():
    s = NoiseSchedule("linear", num_timesteps=100)
    ab, ab_prev, b = s.alphas_cumprod, s.alphas_cumprod_prev, s.betas
    np.testing.assert_allclose(ab_prev[1:], ab[:-1])
    assert ab_prev[0] == 1.0
    np.testing.assert_allclose(s.posterior_variance, b * (1 - ab_prev) / (1 - ab))
    np.testing.assert_allclose(s.posterior_log_variance_clipped[1:], np.log(s.posterior_variance[1:]))
    assert s.posterior_log_variance_clipped[0] == s.posterior_log_variance_clipped[1]
    np.testing.assert_allclose(s.log_snr, np.log(ab / (1 - ab)))
    # The posterior mean coefficients reproduce x0 exactly when x_t is noiseless.
    x0 = 0.7
    x_t = np.sqrt(ab) * x0
    mean = s.posterior_mean_coef1 * x0 + s.posterior_mean_coef2 * x_t
    np.testing.assert_allclose(mean[1:], np.sqrt(ab_prev[1:]) * x0, rtol=1e-10)


def test_continuous_log_snr():
    schedule = NoiseSchedule("cosine", num_timesteps=1000)
    t = np.array([0.1, 0.5, 0.9])
    s = 0.008
    # abar(t) = f(t) / f(0) with f the cosine of improved DDPM
    f0 = np.cos(s / (1 + s) * np.pi / 2) ** 2
    ab = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2 / f0
    expected = np.log(ab / (1 - ab))
    np.testing.assert_allclose(schedule.log_snr_continuous(t), expected, rtol=1e-10)
    # Between grid points the discrete kinds interpolate their own table.
    linear = NoiseSchedule("linear", num_timesteps=1000)
    np.testing.assert_allclose(linear.log_snr_continuous(np.array([0.5])), linear.log_snr[499], rtol=1e-9)
    assert np.all(np.diff(linear.log_snr_continuous(np.linspace(0.01, 1, 50))) < 0)
    with pytest.raises(ValueError):
        schedule.log_snr_continuous(1.5)


def test_respacing_keeps_the_marginals():
    schedule = NoiseSchedule("cosine", num_timesteps=1000)
    fast = schedule.respace(250)
    assert fast.num_timesteps == 250
    np.testing.assert_allclose(fast.alphas_cumprod, schedule.alphas_cumprod[fast.timestep_map], rtol=1e-12)
    assert fast.timestep_map[0] == 0 and fast.timestep_map[-1] == 999
    custom = schedule.respace([0, 10, 500, 999])
    np.testing.assert_allclose(custom.betas[1], 1 - schedule.alphas_cumprod[10] / schedule.alphas_cumprod[0])
    restored = NoiseSchedule.from_config(fast.get_config())
    np.testing.assert_allclose(restored.alphas_cumprod, fast.alphas_cumprod)
    np.testing.assert_array_equal(restored.timestep_map, fast.timestep_map)
    with pytest.raises(ValueError, match="num_steps_or_timesteps"):
        schedule.respace([5, 3])


def test_flow_time_shift():
    t = np.linspace(0, 1, 11)
    np.testing.assert_allclose(shift_flow_time(t, 3.0), 3 * t / (1 + 2 * t))
    assert shift_flow_time(0.5, 1.0) == 0.5
    np.testing.assert_allclose(
        shift_flow_time(torch.tensor([0.25]), 3.0).numpy(), [0.75 / 1.5], rtol=1e-6
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kind"):
        NoiseSchedule("quadratic")
    with pytest.raises(ValueError, match="num_timesteps"):
        NoiseSchedule("linear", num_timesteps=0)
