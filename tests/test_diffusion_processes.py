"""Processes, losses, thresholding, guidance and the mixed noise prior against numpy references."""

import numpy as np
import pytest
from keras import ops
from scipy.stats import norm

from keras_vdiff.diffusion import (
    FlowMatching,
    GaussianDiffusion,
    NoiseSchedule,
    Thresholding,
    combine_guidance,
    guidance_scales,
    mixed_video_noise,
)


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def hybrid_loss_reference(schedule, prediction, x0, noise, t, v_values, pred):
    """improved-DDPM L_hybrid written out in float64 numpy (Nichol & Dhariwal 2021, Eqs. 4-6, 15, 16)."""
    ab = schedule.alphas_cumprod[t][:, None, None, None]
    ab_prev = schedule.alphas_cumprod_prev[t][:, None, None, None]
    beta = schedule.betas[t][:, None, None, None]
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    target = noise if prediction == "epsilon" else np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0
    mse = ((pred - target) ** 2).mean(axis=(1, 2, 3))
    if prediction == "epsilon":
        x0_hat = (x_t - np.sqrt(1 - ab) * pred) / np.sqrt(ab)
    else:
        x0_hat = np.sqrt(ab) * x_t - np.sqrt(1 - ab) * pred

    def posterior_mean(start):
        return np.sqrt(ab_prev) * beta / (1 - ab) * start + np.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab) * x_t

    beta_tilde = np.where(t[:, None, None, None] == 0, schedule.posterior_variance[1], beta * (1 - ab_prev) / (1 - ab))
    model_log_var = (v_values + 1) / 2 * np.log(beta) + (1 - (v_values + 1) / 2) * np.log(beta_tilde)
    true_log_var = np.log(beta_tilde)
    mu_model, mu_true = posterior_mean(x0_hat), posterior_mean(x0)
    kl = 0.5 * (-1 + model_log_var - true_log_var + np.exp(true_log_var - model_log_var)
                + (mu_true - mu_model) ** 2 / np.exp(model_log_var))
    std = np.exp(0.5 * model_log_var)
    upper = np.where(x0 > 0.999, 1.0, norm.cdf((x0 + 1 / 255 - mu_model) / std))
    lower = np.where(x0 < -0.999, 0.0, norm.cdf((x0 - 1 / 255 - mu_model) / std))
    nll = -np.log(np.maximum(upper - lower, 1e-12))
    vb = np.where(t == 0, nll.mean(axis=(1, 2, 3)), kl.mean(axis=(1, 2, 3))) / np.log(2)
    return mse + 0.001 * schedule.num_timesteps * vb


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
def test_hybrid_loss_matches_numpy_reference(prediction):
    rng = np.random.default_rng(0)
    schedule = NoiseSchedule("linear", num_timesteps=1000)
    process = GaussianDiffusion(schedule, prediction=prediction, learn_sigma=True)
    x0 = np.clip(rng.normal(size=(4, 3, 3, 2)) * 0.6, -1, 1)
    x0[0, 0, 0, 0], x0[0, 0, 1, 0] = 1.0, -1.0  # the edge bins of the decoder
    noise = rng.normal(size=x0.shape)
    t = np.array([0, 1, 400, 999])
    pred = rng.normal(size=x0.shape) * 0.5 + noise * 0.5
    v_values = np.tanh(rng.normal(size=x0.shape))
    model_output = np.concatenate([pred, v_values], axis=-1).astype(np.float32)
    x_t = process.add_noise(x0.astype(np.float32), noise.astype(np.float32), ops.convert_to_tensor(t, "int32"))
    loss = process.compute_loss(model_output, x0.astype(np.float32), noise.astype(np.float32), x_t,
                                ops.convert_to_tensor(t, "int32"))
    expected = hybrid_loss_reference(schedule, prediction, x0, noise, t, v_values, pred)
    assert to_numpy(loss).shape == (4,)
    np.testing.assert_allclose(to_numpy(loss), expected, rtol=2e-4, atol=2e-4)


def test_vlb_term_does_not_train_the_mean():
    """Only the variance channels get gradient from the VLB: the mean channels' gradient is the MSE's."""
    import keras

    rng = np.random.default_rng(1)
    process = GaussianDiffusion("cosine", prediction="epsilon", learn_sigma=True)
    plain = GaussianDiffusion("cosine", prediction="epsilon", learn_sigma=False)
    x0 = rng.uniform(-1, 1, size=(2, 2, 2, 1)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = ops.convert_to_tensor(np.array([3, 500]), "int32")
    x_t = process.add_noise(x0, noise, t)
    output = rng.normal(size=(2, 2, 2, 2)).astype(np.float32)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.grad(lambda o: process.compute_loss(o, x0, noise, x_t, t).sum())(output)
        grad_plain = jax.grad(lambda o: plain.compute_loss(o, x0, noise, x_t, t).sum())(output[..., :1])
    elif backend == "tensorflow":
        import tensorflow as tf

        o, o_plain = tf.Variable(output), tf.Variable(output[..., :1])
        with tf.GradientTape(persistent=True) as tape:
            loss, loss_plain = ops.sum(process.compute_loss(o, x0, noise, x_t, t)), ops.sum(
                plain.compute_loss(o_plain, x0, noise, x_t, t)
            )
        grad, grad_plain = tape.gradient(loss, o), tape.gradient(loss_plain, o_plain)
    else:
        import torch

        o = torch.tensor(output, requires_grad=True)
        o_plain = torch.tensor(output[..., :1], requires_grad=True)
        process.compute_loss(o, x0, noise, x_t, t).sum().backward()
        plain.compute_loss(o_plain, x0, noise, x_t, t).sum().backward()
        grad, grad_plain = o.grad, o_plain.grad
    grad, grad_plain = to_numpy(grad), to_numpy(grad_plain)
    np.testing.assert_allclose(grad[..., :1], grad_plain, rtol=1e-5, atol=1e-7)
    assert np.abs(grad[..., 1:]).max() > 0


def test_targets_and_predictions_are_consistent():
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(3, 4, 4, 2)).astype(np.float32)
    noise = rng.normal(size=x0.shape).astype(np.float32)
    t = ops.convert_to_tensor(np.array([0, 300, 999]), "int32")
    for prediction in ("epsilon", "v", "x0"):
        process = GaussianDiffusion("cosine", prediction=prediction)
        x_t = process.add_noise(x0, noise, t)
        target = process.target(x0, noise, t)
        np.testing.assert_allclose(to_numpy(process.predict_x0(target, x_t, t)), x0, atol=2e-3)
        assert float(to_numpy(ops.mean(process.compute_loss(target, x0, noise, x_t, t)))) < 1e-10
    flow = FlowMatching()
    t_flow = ops.convert_to_tensor(np.array([0.1, 0.5, 0.9]), "float32")
    x_t = flow.add_noise(x0, noise, t_flow)
    tt = np.array([0.1, 0.5, 0.9], np.float32)[:, None, None, None]
    np.testing.assert_allclose(to_numpy(x_t), (1 - tt) * x0 + tt * noise, rtol=1e-5, atol=1e-6)
    velocity = flow.target(x0, noise, t_flow)
    np.testing.assert_allclose(to_numpy(velocity), noise - x0, atol=1e-6)
    np.testing.assert_allclose(to_numpy(flow.predict_x0(velocity, x_t, t_flow)), x0, atol=1e-5)
    np.testing.assert_allclose(to_numpy(flow.predict_epsilon(velocity, x_t, t_flow)), noise, atol=1e-5)
    np.testing.assert_allclose(to_numpy(flow.model_timesteps(t_flow)), [100.0, 500.0, 900.0], rtol=1e-6)


def test_min_snr_weights():
    schedule = NoiseSchedule("cosine")
    snr = schedule.alphas_cumprod / (1 - schedule.alphas_cumprod)
    t = np.array([0, 100, 900])
    for prediction, expected in (
        ("epsilon", np.minimum(snr, 5.0) / snr),
        ("v", np.minimum(snr, 5.0) / (snr + 1)),
        ("x0", np.minimum(snr, 5.0)),
    ):
        process = GaussianDiffusion(schedule, prediction=prediction, loss_weighting="min_snr", min_snr_gamma=5.0)
        np.testing.assert_allclose(to_numpy(process.loss_weights(ops.convert_to_tensor(t, "int32"))),
                                   expected[t], rtol=1e-5)


def test_flow_timestep_sampling():
    uniform = to_numpy(FlowMatching().sample_timesteps(4000, seed=0))
    assert 0 <= uniform.min() and uniform.max() <= 1 and abs(uniform.mean() - 0.5) < 0.03
    logit = to_numpy(FlowMatching(timestep_sampling="logit_normal").sample_timesteps(4000, seed=0))
    logits = np.log(logit / (1 - logit))
    assert abs(logits.mean()) < 0.1 and abs(logits.std() - 1.0) < 0.1
    shifted = to_numpy(FlowMatching(shift=3.0).sample_timesteps(4000, seed=0))
    np.testing.assert_allclose(shifted, 3 * uniform / (1 + 2 * uniform), rtol=1e-5)
    t = to_numpy(GaussianDiffusion("linear").sample_timesteps(5000, seed=1))
    assert t.dtype == np.int32 and t.min() >= 0 and t.max() <= 999 and len(np.unique(t)) > 900


def test_static_and_dynamic_thresholding():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(2, 5, 5, 3)) * np.array([0.5, 3.0])[:, None, None, None]).astype(np.float32)
    np.testing.assert_allclose(to_numpy(Thresholding("static")(x)), np.clip(x, -1, 1))
    dynamic = to_numpy(Thresholding("dynamic", percentile=0.9)(x))
    s = np.maximum(np.quantile(np.abs(x).reshape(2, -1), 0.9, axis=1), 1.0)[:, None, None, None]
    np.testing.assert_allclose(dynamic, np.clip(x, -s, s) / s, rtol=1e-5)
    assert np.abs(dynamic).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(dynamic[0], np.clip(x[0], -1, 1), rtol=1e-6)  # small sample: s = 1
    with pytest.raises(ValueError, match="thresholding"):
        Thresholding("soft")


def test_guidance_combines_prediction_channels_only():
    rng = np.random.default_rng(4)
    cond = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    null = rng.normal(size=(2, 3, 3, 4)).astype(np.float32)
    stacked = np.concatenate([cond, null], axis=0)
    guided = to_numpy(combine_guidance(stacked, 3.0, prediction_channels=2))
    np.testing.assert_allclose(guided[..., :2], null[..., :2] + 3.0 * (cond[..., :2] - null[..., :2]), rtol=1e-5)
    np.testing.assert_allclose(guided[..., 2:], cond[..., 2:])
    np.testing.assert_allclose(to_numpy(combine_guidance(stacked, 1.0, 4)), cond, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(guidance_scales(5, 15.0, "oscillating"), [15, 1, 15, 1, 15])
    np.testing.assert_array_equal(guidance_scales(3, 4.0), [4, 4, 4])


def test_mixed_noise_shares_a_fraction_of_variance_across_frames():
    noise = to_numpy(mixed_video_noise((400, 4, 4, 4, 2), shared_weight=0.6, seed=0))
    assert abs(noise.std() - 1.0) < 0.02 and abs(noise.mean()) < 0.02
    a, b = noise[:, 0].ravel(), noise[:, 3].ravel()
    assert abs(np.corrcoef(a, b)[0, 1] - 0.6) < 0.03
    plain = to_numpy(mixed_video_noise((400, 4, 4, 4, 2), shared_weight=0.0, seed=0))
    assert abs(np.corrcoef(plain[:, 0].ravel(), plain[:, 3].ravel())[0, 1]) < 0.03
    with pytest.raises(ValueError, match="shared_weight"):
        mixed_video_noise((1, 2, 2, 2, 1), shared_weight=1.5)
