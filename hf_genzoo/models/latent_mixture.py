"""A Gaussian mixture fitted to a trained model's latent codes, to sample from instead of N(0, I).

A VAE trained for a short while leaves holes in its aggregate posterior q(z) = (1/N) Σ_n q(z | x_n): much of
N(0, I) decodes to no training-like image. Ex-post density estimation (Ghosh et al. 2020, "From Variational
to Deterministic Autoencoders", arXiv:1903.12436, §4; Dai & Wipf 2019 fit a second VAE for the same reason)
fits a density to the latent means μ(x_n) of the training set after training and samples it instead. The
mixture here

    p_M(z) = Σ_j π_j N(z; m_j, L_j L_jᵀ)                     (full covariances, Cholesky factors L_j)

is fitted by expectation-maximisation (Bishop 2006, PRML §9.2.2):

    E-step  r_nj = π_j N(z_n; m_j, Σ_j) / Σ_i π_i N(z_n; m_i, Σ_i)
    M-step  N_j = Σ_n r_nj,  π_j = N_j / N,  m_j = Σ_n r_nj z_n / N_j,
            Σ_j = Σ_n r_nj (z_n − m_j)(z_n − m_j)ᵀ / N_j + εI        (ε keeps every Σ_j invertible)

The E-step loops over the components (never over the data), so memory stays O(N·M + N·d).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)


@dataclass
class GaussianMixtureFit:
    """log_weights (M,), means (M, d), scale_tril (M, d, d); mean_log_likelihood per point, in nats."""

    log_weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor
    mean_log_likelihood: float
    iterations: int


def component_log_densities(z: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """ln N(z_n; m_j, L_j L_jᵀ) for every point and component: (N, d) → (M, N)."""
    d = z.shape[1]
    out = []
    for m, tril in zip(means, scale_tril):
        white = torch.linalg.solve_triangular(tril, (z - m).T, upper=False)  # L⁻¹(z − m), (d, N)
        log_det = 2 * tril.diagonal().log().sum()  # ln |Σ|
        out.append(-0.5 * (white.pow(2).sum(0) + log_det + d * LOG_2PI))
    return torch.stack(out)


def mixture_log_prob(z: torch.Tensor, log_weights: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """ln p_M(z) per point, (N, d) → (N,)."""
    z = z.to(means.dtype)
    return torch.logsumexp(log_weights[:, None] + component_log_densities(z, means, scale_tril), dim=0)


@torch.no_grad()
def fit_gaussian_mixture(
    z: torch.Tensor,
    num_components: int,
    *,
    max_iterations: int = 200,
    tolerance: float = 1e-5,
    regularization: float = 1e-4,
    generator: torch.Generator | None = None,
) -> GaussianMixtureFit:
    """EM for a full-covariance Gaussian mixture on points z (N, d), in float64.

    Components start at distinct random points with the data's covariance; EM stops when the mean
    log-likelihood improves by less than `tolerance` nats. `regularization` ε is added to every covariance's
    diagonal, relative to the data's mean variance."""
    if z.ndim != 2:
        raise ValueError(f"expected latents of shape (num_points, dims), got {tuple(z.shape)}")
    num_points, dims = z.shape
    if not 1 <= num_components <= num_points:
        raise ValueError(f"num_components must be between 1 and the number of points ({num_points}), got {num_components}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be ≥ 1, got {max_iterations}")
    z = z.detach().to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(z).all():
        raise ValueError("the latents contain NaN or Inf values")
    eye = torch.eye(dims, dtype=z.dtype)
    epsilon = regularization * z.var(0).mean().clamp_min(1e-12)
    start = torch.randperm(num_points, generator=generator)[:num_components]
    means = z[start].clone()
    data_covariance = torch.cov(z.T).reshape(dims, dims) if num_points > 1 else eye.clone()
    scale_tril = torch.linalg.cholesky(data_covariance + epsilon * eye).expand(num_components, dims, dims).clone()
    log_weights = torch.full((num_components,), -math.log(num_components), dtype=z.dtype)
    previous = -math.inf
    for iteration in range(1, max_iterations + 1):
        # E-step: responsibilities r (M, N), and the log-likelihood of the current parameters
        joint = log_weights[:, None] + component_log_densities(z, means, scale_tril)
        log_likelihood = torch.logsumexp(joint, dim=0)
        r = (joint - log_likelihood).exp()
        current = log_likelihood.mean().item()
        # M-step
        counts = r.sum(1).clamp_min(1e-10)  # N_j
        log_weights = (counts / num_points).log()
        means = (r @ z) / counts[:, None]
        covariances = []
        for j in range(num_components):
            centered = z - means[j]
            covariances.append((centered * r[j, :, None]).T @ centered / counts[j] + epsilon * eye)
        scale_tril = torch.linalg.cholesky(torch.stack(covariances))
        if current - previous < tolerance:
            break
        previous = current
    final = mixture_log_prob(z, log_weights, means, scale_tril).mean().item()
    return GaussianMixtureFit(log_weights, means, scale_tril, final, iteration)


def sample_mixture(
    num_samples: int,
    log_weights: torch.Tensor,
    means: torch.Tensor,
    scale_tril: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z ~ p_M: a component j ~ Categorical(π), then m_j + L_j ε with ε ~ N(0, I). Draws on the generator's
    device (CPU by default), returned on the parameters' device."""
    device = generator.device if generator is not None else means.device
    probs = log_weights.exp().to(device=device, dtype=torch.float64)
    components = torch.multinomial(probs, num_samples, replacement=True, generator=generator).to(means.device)
    eps = torch.randn(num_samples, means.shape[1], generator=generator, device=device, dtype=torch.float32)
    eps = eps.to(device=means.device, dtype=means.dtype)
    return means[components] + torch.einsum("bij,bj->bi", scale_tril[components], eps)
