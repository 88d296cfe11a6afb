"""SSIM and PSNR for videos against scikit-image on random data."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from keras_vdiff import metrics


def skimage_video_ssim(a, b):
    """Per-video mean over frames of scikit-image's Gaussian SSIM (Wang et al. settings)."""
    scores = np.zeros(a.shape[0])
    for v in range(a.shape[0]):
        scores[v] = np.mean(
            [
                structural_similarity(
                    a[v, f],
                    b[v, f],
                    gaussian_weights=True,
                    sigma=1.5,
                    use_sample_covariance=False,
                    data_range=255,
                    channel_axis=-1,
                )
                for f in range(a.shape[1])
            ]
        )
    return scores


def noisy_pair(rng, shape, noise):
    a = rng.integers(0, 256, size=shape).astype(np.uint8)
    # Smooth the reference a little so SSIM is far from 0 and from 1.
    smooth = (a.astype(float) + np.roll(a, 1, axis=-2) + np.roll(a, 1, axis=-3)) / 3.0
    b = np.clip(smooth + rng.normal(0.0, noise, size=shape), 0, 255)
    return smooth.astype(np.uint8), b.astype(np.uint8)


@pytest.mark.parametrize("shape", [(2, 3, 24, 20, 3), (3, 2, 16, 16, 1)])
def test_ssim_matches_skimage(shape):
    rng = np.random.default_rng(sum(shape))
    a, b = noisy_pair(rng, shape, noise=25.0)
    expected = skimage_video_ssim(a, b)
    per_video = metrics.ssim(a, b, reduction="none", frames_per_chunk=4)
    assert per_video.shape == (shape[0],)
    # Same float64 arithmetic, different filtering code: 1e-7 absolute.
    np.testing.assert_allclose(per_video, expected, atol=1e-7)
    assert metrics.ssim(a, b) == pytest.approx(expected.mean(), abs=1e-7)
    # Float input in [0, 255] gives the same numbers as uint8.
    assert metrics.ssim(a.astype(np.float32), b.astype(np.float64)) == pytest.approx(expected.mean(), abs=1e-7)


def test_ssim_images_and_identity():
    rng = np.random.default_rng(0)
    a, b = noisy_pair(rng, (2, 16, 16, 3), noise=10.0)
    expected = [
        structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                              data_range=255, channel_axis=-1)
        for i in range(2)
    ]
    np.testing.assert_allclose(metrics.ssim(a, b, reduction="none"), expected, atol=1e-7)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_skimage_per_frame():
    rng = np.random.default_rng(1)
    a, b = noisy_pair(rng, (3, 4, 8, 8, 3), noise=20.0)
    expected = np.array(
        [np.mean([peak_signal_noise_ratio(a[v, f], b[v, f], data_range=255) for f in range(4)]) for v in range(3)]
    )
    np.testing.assert_allclose(metrics.psnr(a, b, reduction="none"), expected, rtol=1e-12)
    assert metrics.psnr(a, b) == pytest.approx(expected.mean(), rel=1e-12)
    # Hand-computed: a constant error of 25.5 gives 20 dB.
    zeros, offset = np.zeros((1, 2, 4, 4, 1)), np.full((1, 2, 4, 4, 1), 25.5)
    assert metrics.psnr(zeros, offset) == pytest.approx(20.0, rel=1e-12)
    assert metrics.psnr(a, a) == np.inf


def test_rejects_bad_input():
    video = np.zeros((1, 2, 16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(video, video[:, :1])
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        metrics.psnr(video.astype(float) - 1.0, video)
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(video[:, :, :8, :8], video[:, :, :8, :8])
    with pytest.raises(ValueError, match="reduction"):
        metrics.psnr(video, video, reduction="sum")
    with pytest.raises(ValueError, match=r"\(N, F, H, W, C\)"):
        metrics.ssim(video[0, 0], video[0, 0])
    with pytest.raises(TypeError, match="dtype"):
        metrics.psnr(video.astype(bool), video.astype(bool))
