"""Vector quantisation (van den Oord et al. 2017, arXiv:1711.00937) and the Gumbel-softmax relaxation of DALL-E's
dVAE (Ramesh et al. 2021), with the options that keep a codebook alive, and the health numbers that show it.

Notation (../shared/EQUATIONS.md, "VQ-VAE"):
    e ∈ R^{K×D}                 the codebook
    z_e(x)                      the encoder output at one location, in R^D
    k = argmin_j ‖z_e − e_j‖₂   its code; z_q = e_k
    L_vq = ‖sg[z_e] − e_k‖² + β ‖z_e − sg[e_k]‖²   (codebook term + β · commitment term)

A quantizer works on (B, D, h, w) maps and treats every location as one vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class QuantizerOutput(BaseOutput):
    """quantized: z_q (B, D, h, w) with the straight-through gradient to z_e; indices: (B, h, w) codes;
    loss: the quantizer's loss term (codebook + β commitment for VQ; the weighted KL for Gumbel), a scalar;
    codebook_loss / commitment_loss: the two terms of L_vq (unweighted; 0 where they do not apply);
    perplexity: exp(entropy) of this batch's code histogram."""

    quantized: torch.Tensor = None
    indices: torch.Tensor = None
    loss: torch.Tensor = None
    codebook_loss: torch.Tensor = None
    commitment_loss: torch.Tensor = None
    perplexity: torch.Tensor = None


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """argmin_j ‖z_n − e_j‖² for z (N, D), codebook (K, D) → (N,), with the squared distance expanded as
    ‖z‖² − 2 z·e + ‖e‖²: one (N, D) × (D, K) matrix product, never an (N, K, D) tensor. ‖z‖² is the same for
    every j, so it does not change the argmin and is left out."""
    distances = torch.addmm((codebook * codebook).sum(1)[None, :], z, codebook.T, alpha=-2.0)  # (N, K)
    return distances.argmin(dim=1)


def perplexity_of(counts: torch.Tensor) -> torch.Tensor:
    """exp(H(p)) of the code histogram `counts` (K,): K when every code is used equally, 1 when one code is."""
    p = counts.float() / counts.sum().clamp(min=1)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())


class _CodebookHealth(nn.Module):
    """Code usage over the last `window` training batches, not one batch: a ring buffer of per-batch histograms,
    and for every code the number of training batches since it was last chosen (what dead-code restart reads).
    Both are buffers, so a checkpoint resumes them."""

    def __init__(self, num_embeddings: int, window: int):
        super().__init__()
        if window < 1:
            raise ValueError(f"usage_window must be ≥ 1 batch, got {window}")
        self.register_buffer("histograms", torch.zeros(window, num_embeddings))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("batches_since_used", torch.zeros(num_embeddings, dtype=torch.long))

    @torch.no_grad()
    def record(self, counts: torch.Tensor) -> None:
        self.histograms[int(self.batches_seen) % len(self.histograms)] = counts.float()
        self.batches_seen += 1
        self.batches_since_used.add_(1).masked_fill_(counts > 0, 0)

    def window_counts(self) -> torch.Tensor:
        return self.histograms[: int(min(int(self.batches_seen), len(self.histograms)))].sum(0)

    def stats(self) -> dict[str, float]:
        """usage (fraction of codes chosen in the window), perplexity over the window, dead codes (unused in the
        window)."""
        counts = self.window_counts()
        used = counts > 0
        return {
            "codebook_usage": float(used.float().mean()),
            "perplexity": float(perplexity_of(counts)),
            "dead_codes": int((~used).sum()),
        }


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (the EMA statistics and histograms must be the same on every rank)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class _Quantizer(nn.Module):
    """What both quantisers share: the codebook, index checks and lookups, and the usage statistics."""

    cosine = False

    def __init__(self, num_embeddings: int, embedding_dim: int, usage_window: int):
        super().__init__()
        if num_embeddings < 2:
            raise ValueError(f"num_embeddings (the codebook size K) must be ≥ 2, got {num_embeddings}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be ≥ 1, got {embedding_dim}")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        self.health = _CodebookHealth(num_embeddings, usage_window)

    @property
    def codebook(self) -> torch.Tensor:
        """The codes as the search sees them (K, D): l2-normalised when `cosine`."""
        weight = self.embedding.weight
        return F.normalize(weight, dim=1) if self.cosine else weight

    def check_indices(self, indices: torch.Tensor) -> None:
        if indices.dtype.is_floating_point:
            raise ValueError(f"code indices must be integers, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(
                f"code indices must be in [0, {self.num_embeddings}) for this codebook of K = {self.num_embeddings} "
                f"codes, got values from {int(indices.min())} to {int(indices.max())}"
            )

    def indices_to_latents(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes (B, h, w) → z_q (B, D, h, w)."""
        self.check_indices(indices)
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def _check_input(self, z_e: torch.Tensor) -> None:
        if z_e.ndim != 4 or z_e.shape[1] != self.embedding_dim:
            raise ValueError(f"expected z_e of shape (batch, {self.embedding_dim}, h, w), got {tuple(z_e.shape)}")


class VectorQuantizer(_Quantizer):
    r"""Nearest-neighbour vector quantiser with a straight-through gradient.

    Parameters:
        num_embeddings (`int`): K, the codebook size.
        embedding_dim (`int`): D, the size of one code.
        beta (`float`, defaults to 0.25): β, the weight of the commitment term ‖z_e − sg[e]‖².
        use_ema (`bool`, defaults to False): update the codebook by exponential moving averages of the vectors
            assigned to each code (van den Oord et al. 2017, appendix A.1) instead of the codebook term; the loss is
            then β · commitment only.
        ema_decay (`float`, defaults to 0.99): γ of those averages.
        ema_epsilon (`float`, defaults to 1e-5): Laplace smoothing of the cluster sizes, so no code divides by zero.
        kmeans_init (`bool`, defaults to False): set the codebook by k-means on the first training batch's z_e.
        dead_code_steps (`int`, defaults to 0): re-seed every code not chosen for this many training batches from
            encoder outputs of the current batch (0: off).
        cosine (`bool`, defaults to False): l2-normalise z_e and the codes, so the search is by cosine similarity.
        usage_window (`int`, defaults to 100): training batches over which usage, perplexity and dead codes are
            measured.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        beta: float = 0.25,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        kmeans_init: bool = False,
        dead_code_steps: int = 0,
        cosine: bool = False,
        usage_window: int = 100,
    ):
        super().__init__(num_embeddings, embedding_dim, usage_window)
        if beta < 0:
            raise ValueError(f"beta (the commitment weight) must be ≥ 0, got {beta}")
        if not 0 < ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        if dead_code_steps < 0:
            raise ValueError(f"dead_code_steps must be ≥ 0 (0: no restarts), got {dead_code_steps}")
        self.beta, self.use_ema, self.ema_decay, self.ema_epsilon = beta, use_ema, ema_decay, ema_epsilon
        self.kmeans_init, self.dead_code_steps, self.cosine = kmeans_init, dead_code_steps, cosine

        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)
        if use_ema:
            self.embedding.weight.requires_grad_(False)  # moved by the averages, not by the optimiser
            # every code starts as a cluster of one vector, itself: a code no vector picks then stays where it is
            # (from zero counts, e_k = m_k / Ñ_k would blow up to ~|e_k| / ε and the code could never be picked)
            self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
            self.register_buffer("ema_embed_sum", self.embedding.weight.detach().clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))

    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """z_e (B, D, h, w) → z_q, codes and the loss. In training mode also updates the EMA codebook, the usage
        statistics and (if on) restarts dead codes."""
        self._check_input(z_e)
        B, D, h, w = z_e.shape
        z = z_e.float().permute(0, 2, 3, 1).reshape(-1, D)  # (N, D), N = B·h·w
        if self.cosine:
            z = F.normalize(z, dim=1)
        if self.training and not bool(self.initialized):
            self._kmeans_init(z.detach())

        codebook = self.codebook.float()
        indices = nearest_codes(z.detach(), codebook.detach())  # (N,)
        z_q = codebook[indices]  # (N, D), differentiable w.r.t. the codebook
        counts = torch.bincount(indices, minlength=self.num_embeddings).float()  # (K,)
        if self.training:
            counts = _all_reduce(counts)  # the codebook updates and statistics see every rank's batch

        # L_vq = ‖sg[z_e] − e‖² + β ‖z_e − sg[e]‖²  (EQUATIONS.md, VQ-VAE; means over locations and dimensions)
        codebook_loss = F.mse_loss(z_q, z.detach())
        commitment_loss = F.mse_loss(z, z_q.detach())
        loss = self.beta * commitment_loss if self.use_ema else codebook_loss + self.beta * commitment_loss

        if self.training:
            with torch.no_grad():
                if self.use_ema:
                    self._ema_update(z.detach(), indices, counts)
                self.health.record(counts)
                if self.dead_code_steps:
                    self._restart_dead_codes(z.detach())

        # straight-through: the forward value is z_q, the gradient at z_q is copied to z_e
        z_q = z + (z_q - z).detach()
        quantized = z_q.view(B, h, w, D).permute(0, 3, 1, 2).to(z_e.dtype)
        return QuantizerOutput(
            quantized=quantized.contiguous(),
            indices=indices.view(B, h, w),
            loss=loss,
            codebook_loss=codebook_loss.detach(),
            commitment_loss=commitment_loss.detach(),
            perplexity=perplexity_of(counts),
        )

    # ---- keeping the codebook alive ------------------------------------------------------------------------

    @torch.no_grad()
    def _set_codes(self, which: torch.Tensor, vectors: torch.Tensor) -> None:
        self.embedding.weight[which] = vectors.to(self.embedding.weight.dtype)
        if self.use_ema:  # the restarted code starts as a cluster of one vector
            self.ema_cluster_size[which] = 1.0
            self.ema_embed_sum[which] = vectors.to(self.ema_embed_sum.dtype)

    @torch.no_grad()
    def _kmeans_init(self, z: torch.Tensor, iterations: int = 10) -> None:
        """Lloyd's k-means on the first batch's vectors z (N, D), seeded by k-means++ (Arthur & Vassilvitskii
        2007: each next seed drawn with probability ∝ its squared distance to the nearest seed so far). Every rank
        uses rank 0's result."""
        centres = torch.empty(self.num_embeddings, z.shape[1], device=z.device, dtype=z.dtype)
        centres[0] = z[torch.randint(len(z), (1,))]
        nearest = (z - centres[0]).pow(2).sum(1)  # (N,) squared distance to the nearest seed
        for k in range(1, self.num_embeddings):
            weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)  # N < K: repeats are fine
            centres[k] = z[torch.multinomial(weights, 1)]
            nearest = torch.minimum(nearest, (z - centres[k]).pow(2).sum(1))
        for _ in range(iterations):
            assignment = nearest_codes(z, centres)
            sums = torch.zeros_like(centres).index_add_(0, assignment, z)
            sizes = torch.bincount(assignment, minlength=self.num_embeddings).float()
            moved = sizes > 0  # an empty cluster keeps its seed
            centres[moved] = sums[moved] / sizes[moved, None]
            if self.cosine:
                centres = F.normalize(centres, dim=1)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(centres, src=0)
        self._set_codes(torch.arange(self.num_embeddings, device=z.device), centres)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """N_k ← γ N_k + (1 − γ) n_k;  m_k ← γ m_k + (1 − γ) Σ_{i: k_i = k} z_i;  e_k = m_k / Ñ_k with the
        Laplace-smoothed Ñ_k = (N_k + ε) / (Σ N + K ε) · Σ N (van den Oord et al. 2017, appendix A.1)."""
        sums = _all_reduce(torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, z.to(self.ema_embed_sum.dtype)))
        self.ema_cluster_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
        self.ema_embed_sum.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.ema_epsilon) / (total + self.num_embeddings * self.ema_epsilon) * total
        self.embedding.weight.copy_(self.ema_embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _restart_dead_codes(self, z: torch.Tensor) -> None:
        """Codes not chosen for `dead_code_steps` batches take the place of random encoder outputs of this batch
        (the same ones on every rank)."""
        dead = torch.nonzero(self.health.batches_since_used >= self.dead_code_steps).squeeze(1)
        if len(dead) == 0:
            return
        picks = torch.randint(len(z), (len(dead),), device=z.device)
        vectors = z[picks].clone()
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(vectors, src=0)
        self._set_codes(dead, vectors)
        self.health.batches_since_used[dead] = 0


class GumbelQuantizer(_Quantizer):
    r"""The dVAE relaxation (Ramesh et al. 2021; EQUATIONS.md): the encoder output is projected to K logits per
    location, y = softmax((g + log π) / τ) with g ~ Gumbel(0, 1), and z = Σ_j y_j e_j. The loss is
    `kl_weight` · KL(π ‖ uniform) per location. `temperature` τ is an attribute the training script anneals; in
    eval mode the code is argmax π (hard, no noise).

    Parameters:
        num_embeddings (`int`): K.
        embedding_dim (`int`): D, the size of one code and of the input.
        temperature (`float`, defaults to 1.0): the starting τ.
        kl_weight (`float`, defaults to 5e-4): weight of the KL to the uniform prior.
        straight_through (`bool`, defaults to False): one-hot forward, relaxed gradient.
        usage_window (`int`, defaults to 100): as for `VectorQuantizer`.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        temperature: float = 1.0,
        kl_weight: float = 5e-4,
        straight_through: bool = False,
        usage_window: int = 100,
    ):
        super().__init__(num_embeddings, embedding_dim, usage_window)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature, self.kl_weight, self.straight_through = temperature, kl_weight, straight_through
        self.proj = nn.Conv2d(embedding_dim, num_embeddings, 1)

    def forward(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> QuantizerOutput:
        self._check_input(z_e)
        logits = self.proj(z_e).float()  # (B, K, h, w): log π up to a constant
        indices = logits.argmax(dim=1)  # (B, h, w)
        if self.training:
            uniform = torch.rand(logits.shape, generator=generator).to(logits.device).clamp(1e-10, 1 - 1e-10)
            gumbel = -torch.log(-torch.log(uniform))  # g ~ Gumbel(0, 1)
            y = F.softmax((logits + gumbel) / self.temperature, dim=1)
            if self.straight_through:
                hard = F.one_hot(y.argmax(dim=1), self.num_embeddings).permute(0, 3, 1, 2).to(y.dtype)
                y = hard + y - y.detach()
        else:
            y = F.one_hot(indices, self.num_embeddings).permute(0, 3, 1, 2).float()
        quantized = torch.einsum("bkhw,kd->bdhw", y, self.embedding.weight.float())  # z = Σ_j y_j e_j
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * (log_q + torch.log(torch.tensor(float(self.num_embeddings))))).sum(1).mean()
        counts = torch.bincount(indices.flatten(), minlength=self.num_embeddings).float()
        if self.training:
            self.health.record(_all_reduce(counts))
        zero = torch.zeros((), device=z_e.device)
        return QuantizerOutput(
            quantized=quantized.to(z_e.dtype),
            indices=indices,
            loss=self.kl_weight * kl,
            codebook_loss=zero,
            commitment_loss=zero,
            perplexity=perplexity_of(counts),
        )
