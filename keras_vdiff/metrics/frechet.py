"""Frechet distance between two Gaussians, the core of FID and FVD.

The Frechet (2-Wasserstein) distance between ``N(mu1, S1)`` and ``N(mu2, S2)`` is

    ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

(Dowson & Landau, 1982; used as FID by Heusel et al., 2017, "GANs Trained by a
Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", and as FVD by
Unterthiner et al., 2018, "Towards Accurate Generative Models of Video").

``S1 S2`` is not symmetric, so its square root is usually taken with
``scipy.linalg.sqrtm`` (a Schur decomposition that can return complex values
and fails on singular matrices). Here the trace is computed from the symmetric
positive semi-definite matrix ``M = S1^(1/2) S2 S1^(1/2)``: ``S1 S2`` is similar
to ``M`` (``S1 S2 = S1^(1/2) M S1^(-1/2)`` when ``S1`` is invertible, and by
continuity otherwise), so ``tr((S1 S2)^(1/2)) = tr(M^(1/2)) = sum(sqrt(eig(M)))``.
Both square roots are symmetric eigen-decompositions with negative round-off
eigenvalues clipped to zero, which stays real and finite for rank-deficient
covariances (fewer samples than feature dimensions).
"""

import numpy as np

__all__ = ["frechet_distance", "symmetric_sqrtm", "trace_sqrt_product"]


def _as_float64_vector(value, name):
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D mean vector; received shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return array


def _as_float64_covariance(value, name, dim):
    array = np.asarray(value, dtype=np.float64)
    if array.shape != (dim, dim):
        raise ValueError(
            f"`{name}` must be a ({dim}, {dim}) covariance matrix matching the "
            f"mean's dimension {dim}; received shape {array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    return array


def symmetric_sqrtm(matrix):
    """Square root of a symmetric positive semi-definite matrix.

    The matrix is symmetrised, diagonalised with ``numpy.linalg.eigh`` and its
    eigenvalues clipped at zero, so round-off in a rank-deficient covariance
    never produces NaN or complex values.

    Args:
        matrix: array of shape ``(d, d)``, symmetric positive semi-definite.

    Returns:
        float64 array ``R`` of shape ``(d, d)`` with ``R @ R ~= matrix``.

    Example:
    >>> symmetric_sqrtm(np.diag([4.0, 9.0]))
    array([[2., 0.],
           [0., 3.]])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(
            f"`matrix` must be square; received shape {matrix.shape}."
        )
    symmetric = 0.5 * (matrix + matrix.T)
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


def trace_sqrt_product(sigma1, sigma2, eps=0.0):
    """``tr((sigma1 @ sigma2)^(1/2))`` for two covariance matrices.

    Computed as ``sum(sqrt(eig(S1^(1/2) S2 S1^(1/2))))``, a symmetric problem
    whose eigenvalues are real and non-negative up to round-off.

    Args:
        sigma1: ``(d, d)`` covariance.
        sigma2: ``(d, d)`` covariance.
        eps: non-negative offset added to both diagonals first. ``0`` (the
            default) is exact; a small value such as ``1e-6`` regularises
            covariances whose eigenvalues are all but zero.

    Returns:
        Python float.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    if eps:
        offset = eps * np.eye(sigma1.shape[0])
        sigma1 = sigma1 + offset
        sigma2 = sigma2 + offset
    root1 = symmetric_sqrtm(sigma1)
    middle = root1 @ (0.5 * (sigma2 + sigma2.T)) @ root1
    eigenvalues = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    return float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=0.0):
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    The quantity behind FID and FVD: feature means and covariances of real and
    generated samples go in, a non-negative float comes out.

    Args:
        mu1: ``(d,)`` mean of the first set of features.
        sigma1: ``(d, d)`` covariance of the first set.
        mu2: ``(d,)`` mean of the second set.
        sigma2: ``(d, d)`` covariance of the second set.
        eps: non-negative diagonal offset added to both covariances before the
            matrix square root (``0`` by default; ``1e-6`` is the customary
            value for near-singular covariances). The result changes by
            ``O(eps)``.

    Returns:
        Python float, ``>= 0`` up to round-off (small negative round-off is
        clipped to ``0``).

    Example:
    >>> mu = np.zeros(3); sigma = np.eye(3)
    >>> frechet_distance(mu, sigma, mu + 1.0, sigma)
    3.0

    Paper: Heusel et al., 2017 (FID); Unterthiner et al., 2018 (FVD).
    """
    mu1 = _as_float64_vector(mu1, "mu1")
    mu2 = _as_float64_vector(mu2, "mu2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"`mu1` and `mu2` must have the same dimension; received "
            f"{mu1.shape} and {mu2.shape}."
        )
    dim = mu1.shape[0]
    sigma1 = _as_float64_covariance(sigma1, "sigma1", dim)
    sigma2 = _as_float64_covariance(sigma2, "sigma2", dim)
    if not np.isscalar(eps) or eps < 0:
        raise ValueError(f"`eps` must be a non-negative number; received {eps!r}.")
    difference = mu1 - mu2
    trace_term = (
        np.trace(sigma1)
        + np.trace(sigma2)
        + 2.0 * eps * dim
        - 2.0 * trace_sqrt_product(sigma1, sigma2, eps=eps)
    )
    distance = float(difference @ difference + trace_term)
    return max(distance, 0.0)
