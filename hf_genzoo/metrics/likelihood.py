"""VAE likelihood bounds on held-out data: the ELBO and the importance-weighted bound (Burda et al. 2016).

    log p(x) ≥ E_q log p(x|z) − KL(q(z|x) ‖ p(z))                      ELBO (Kingma & Welling 2014)
    log p(x) ≥ E log (1/k) Σ_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x)      IWAE bound, tighter as k grows
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def vae_elbo(model, images: torch.Tensor, generator: torch.Generator | None = None, posterior=None) -> torch.Tensor:
    """The ELBO per image in nats, (B,), with a one-sample reconstruction term and the closed-form KL.
    `posterior`: q(z|x) of `images` if the caller has it already (saves an encoder pass)."""
    posterior = posterior if posterior is not None else model.encode(images).latent_dist
    z = posterior.sample(generator)
    return model.log_likelihood(images, model.decoder(z)) - posterior.kl()


@torch.no_grad()
def iwae_bound(
    model, images: torch.Tensor, num_samples: int = 64, generator: torch.Generator | None = None, posterior=None
) -> torch.Tensor:
    """The k-sample importance-weighted bound per image in nats, (B,); `posterior` as in `vae_elbo`."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1, got {num_samples}")
    posterior = posterior if posterior is not None else model.encode(images).latent_dist
    log_weights = []
    for _ in range(num_samples):
        z = posterior.sample(generator)
        # log w_i = ln p(x|z_i) + ln p(z_i) − ln q(z_i|x)
        log_weights.append(model.log_joint_terms(images, z) - posterior.log_prob(z).float())
    log_weights = torch.stack(log_weights, dim=0)  # (k, B)
    return torch.logsumexp(log_weights, dim=0) - math.log(num_samples)
