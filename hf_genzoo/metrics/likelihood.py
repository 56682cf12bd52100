"""VAE likelihood bounds on held-out data: the ELBO and the importance-weighted bound (Burda et al. 2016).

    log p(x) ≥ E_q log p(x|z) − KL(q(z|x) ‖ p(z))                      ELBO (Kingma & Welling 2014)
    log p(x) ≥ E log (1/k) Σ_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x)      IWAE bound, tighter as k grows

Both under the model's own likelihood p(x|z), or, with `decoder_log_scale`, under the discretised Gaussian decoder
over the 256 grey levels (`VAEModel.log_likelihood_8bit`): bounds on ln P of the 8-bit images, whose bits/dim
compare with a diffusion model's. For a Bernoulli VAE the first are bounds under the Bernoulli model only.
"""

from __future__ import annotations

import math

import torch

from ..models.vae import standard_normal_log_prob
from ..schedulers.scheduling_ddpm import discretized_gaussian_log_likelihood


def _log_likelihood(model, images: torch.Tensor, z: torch.Tensor, decoder_log_scale) -> torch.Tensor:
    """ln p(x|z) per image: the model's own likelihood, or the 8-bit discretised one with ln σ = `decoder_log_scale`."""
    if decoder_log_scale is None:
        return model.log_likelihood(images, model.decoder(z))
    return model.log_likelihood_8bit(images, model.decoder(z), decoder_log_scale)


@torch.no_grad()
def vae_elbo(
    model, images: torch.Tensor, generator: torch.Generator | None = None, posterior=None, decoder_log_scale=None
) -> torch.Tensor:
    """The ELBO per image in nats, (B,), with a one-sample reconstruction term and the closed-form KL.
    `posterior`: q(z|x) of `images` if the caller has it already (saves an encoder pass). `decoder_log_scale`: ln σ
    of the 8-bit discretised decoder to bound ln P of the 8-bit images with instead of the model's likelihood."""
    posterior = posterior if posterior is not None else model.encode(images).latent_dist
    z = posterior.sample(generator)
    return _log_likelihood(model, images, z, decoder_log_scale) - posterior.kl()


@torch.no_grad()
def iwae_bound(
    model,
    images: torch.Tensor,
    num_samples: int = 64,
    generator: torch.Generator | None = None,
    posterior=None,
    decoder_log_scale=None,
) -> torch.Tensor:
    """The k-sample importance-weighted bound per image in nats, (B,); `posterior`, `decoder_log_scale` as in
    `vae_elbo`."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
    posterior = posterior if posterior is not None else model.encode(images).latent_dist
    log_weights = []
    for _ in range(num_samples):
        z = posterior.sample(generator)
        # log w_i = ln p(x|z_i) + ln p(z_i) − ln q(z_i|x)
        log_weights.append(_log_likelihood(model, images, z, decoder_log_scale) + standard_normal_log_prob(z) - posterior.log_prob(z).float())
    log_weights = torch.stack(log_weights, dim=0)  # (k, B)
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)


@torch.no_grad()
def fit_decoder_log_scale(
    model,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
    search_range: tuple[float, float] = (-9.0, 2.0),
) -> float:
    """ln σ of the 8-bit discretised Gaussian decoder for a VAE trained with another likelihood: the value that
    maximises the ELBO of `images` (the KL does not depend on σ, so the summed ln P(x | z), z ~ q(z|x) one draw per
    image). Fit it to training images, as the weights were: then the held-out bounds stay bounds of a model fitted
    without the held-out data. A grid of step 0.25 over `search_range`, then golden-section search around its best."""
    device, dtype = model.device, model.dtype
    means = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device, dtype)
        z = model.encode(x).latent_dist.sample(generator)
        means.append(model.decode(z).sample.float().cpu())  # the decoder's mean x̂(z)
    means = torch.cat(means)

    def log_likelihood(log_scale: float) -> float:
        total = 0.0
        for start in range(0, len(images), 4 * batch_size):
            x = images[start : start + 4 * batch_size].float()
            mean = means[start : start + 4 * batch_size]
            total += discretized_gaussian_log_likelihood(x, mean, 2 * log_scale).sum().item()
        return total

    low, high = search_range
    grid = torch.arange(low, high + 1e-9, 0.25).tolist()
    best = max(grid, key=log_likelihood)
    a, b = best - 0.25, best + 0.25
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    f_c, f_d = log_likelihood(c), log_likelihood(d)
    while b - a > 1e-3:
        if f_c > f_d:
            b, d, f_d = d, c, f_c
            c = b - ratio * (b - a)
            f_c = log_likelihood(c)
        else:
            a, c, f_c = c, d, f_d
            d = a + ratio * (b - a)
            f_d = log_likelihood(d)
    return (a + b) / 2
