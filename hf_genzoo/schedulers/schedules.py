"""Noise schedules and timestep spacings as pure functions, shared by the DDPM and DDIM schedulers.

Notation (../shared/EQUATIONS.md, "DDPM"):
    β_t                  the forward-process variance at training step t, t = 0 … T−1 in code (1 … T in the paper)
    α_t = 1 − β_t
    ᾱ_t = Π_{τ≤t} α_τ    `alphas_cumprod`; x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε
    SNR(t) = ᾱ_t / (1 − ᾱ_t)

Every function returns float32 tensors computed in the same precision and order as diffusers, so
`betas` and `alphas_cumprod` of our schedulers equal those of diffusers' to the last bit.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")


def check_choice(name: str, value, allowed: Sequence[str]) -> None:
    """Raise a ValueError naming `value` and the `allowed` values of the config key `name`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, allowed))}.")


def betas_for_alpha_bar(
    num_train_timesteps: int,
    alpha_bar: Literal["cosine", "laplace"] = "cosine",
    max_beta: float = 0.999,
) -> torch.Tensor:
    """β_t = min(1 − ᾱ((t+1)/T) / ᾱ(t/T), max_beta) for a continuous ᾱ(s), s ∈ [0, 1].

    cosine:  ᾱ(s) = cos²(((s + 0.008)/1.008) · π/2)      (Nichol & Dhariwal 2021, eq. 17; GLIDE's "squaredcos_cap_v2")
    laplace: ᾱ(s) = √(snr/(1+snr)), log snr = −sign(½−s) log(1 − 2|½−s| + 10⁻⁶)   (as diffusers' "laplace")
    """
    check_choice("alpha_bar", alpha_bar, ("cosine", "laplace"))
    if alpha_bar == "cosine":

        def alpha_bar_fn(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    else:

        def alpha_bar_fn(s: float) -> float:
            log_snr = -0.5 * math.copysign(1, 0.5 - s) * math.log(1 - 2 * math.fabs(0.5 - s) + 1e-6)
            snr = math.exp(log_snr)
            return math.sqrt(snr / (1 + snr))

    steps = [t / num_train_timesteps for t in range(num_train_timesteps + 1)]
    betas = [min(1 - alpha_bar_fn(s1) / alpha_bar_fn(s0), max_beta) for s0, s1 in zip(steps[:-1], steps[1:])]
    return torch.tensor(betas, dtype=torch.float32)


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: np.ndarray | list[float] | None = None,
) -> torch.Tensor:
    """β_0 … β_{T−1} (float32, shape (T,)) for one of `BETA_SCHEDULES`, or `trained_betas` when given.

    linear:        β_t evenly spaced from beta_start to beta_end               (Ho et al. 2020, §4)
    scaled_linear: √β_t evenly spaced, squared                                 (latent diffusion, Rombach et al. 2022)
    squaredcos_cap_v2: the cosine ᾱ schedule, β capped at 0.999               (Nichol & Dhariwal 2021, eq. 17)
    sigmoid:       β_t = beta_start + (beta_end − beta_start)·sigmoid(s), s evenly in [−6, 6]  (GeoDiff, Xu et al. 2022)
    laplace:       see `betas_for_alpha_bar`
    """
    if trained_betas is not None:
        betas = torch.tensor(trained_betas, dtype=torch.float32)
        if betas.ndim != 1 or betas.shape[0] != num_train_timesteps:
            raise ValueError(
                f"trained_betas has shape {tuple(betas.shape)}; expected ({num_train_timesteps},) "
                f"for num_train_timesteps={num_train_timesteps}."
            )
        return betas
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_train_timesteps, "cosine")
    if beta_schedule == "laplace":
        return betas_for_alpha_bar(num_train_timesteps, "laplace")
    # sigmoid
    return torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps)) * (beta_end - beta_start) + beta_start


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale √ᾱ_t so that √ᾱ_{T−1} = 0 (zero terminal SNR) while √ᾱ_0 is unchanged.

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.
    """
    sqrt_alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_alphas_cumprod[0].clone(), sqrt_alphas_cumprod[-1].clone()
    # 1. shift so that the last √ᾱ is 0, 2. scale so that the first is back to its old value
    sqrt_alphas_cumprod = (sqrt_alphas_cumprod - last) * (first / (first - last))
    alphas_cumprod = sqrt_alphas_cumprod**2
    # 3. undo the cumulative product: α_t = ᾱ_t / ᾱ_{t−1}, α_0 = ᾱ_0
    alphas = torch.cat([alphas_cumprod[0:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def check_num_inference_steps(num_inference_steps, num_train_timesteps: int) -> None:
    if not isinstance(num_inference_steps, (int, np.integer)) or isinstance(num_inference_steps, bool):
        raise ValueError(f"num_inference_steps must be an int, got {num_inference_steps!r}.")
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps={num_inference_steps} must be between 1 and "
            f"num_train_timesteps={num_train_timesteps}."
        )


def spaced_timesteps(
    num_train_timesteps: int,
    num_inference_steps: int,
    timestep_spacing: str,
    steps_offset: int = 0,
) -> np.ndarray:
    """The S = num_inference_steps training steps a sampler visits, in decreasing order (int64, shape (S,)).

    Lin et al. 2024, Table 2, with T = num_train_timesteps:
        linspace: round(linspace(0, T−1, S))
        leading:  0, k, 2k, …, (S−1)k with k = T // S, plus steps_offset
        trailing: round(T − i·T/S) − 1 for i = 0 … S−1 (always includes T−1)

    diffusers' "trailing" returns S+1 steps for some (T, S) (e.g. T=100, S=29), the last one −1 (floating-point
    `np.arange(T, 0, −T/S)` overshoots); here exactly S are returned, the first S of diffusers'.
    """
    check_num_inference_steps(num_inference_steps, num_train_timesteps)
    check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
    T, S = num_train_timesteps, num_inference_steps
    if timestep_spacing == "linspace":
        timesteps = np.linspace(0, T - 1, S).round()[::-1].astype(np.int64)
    elif timestep_spacing == "leading":
        timesteps = (np.arange(S) * (T // S))[::-1].astype(np.int64) + steps_offset
    else:  # trailing; `arange` can give S+1 values (the last ≈ 0), only the first S are used
        timesteps = np.round(np.arange(T, 0, -T / S)[:S]).astype(np.int64) - 1
    if timesteps.max() >= T or timesteps.min() < 0:
        raise ValueError(
            f"timestep_spacing={timestep_spacing!r} with steps_offset={steps_offset} gives timesteps outside "
            f"[0, {T - 1}] for num_inference_steps={S}, num_train_timesteps={T}."
        )
    return timesteps.copy()


def dynamic_threshold(pred_original_sample: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Dynamic thresholding of a predicted x̂_0 (Saharia et al. 2022, Imagen, §2.3).

    Per image, s = the `ratio`-quantile of |x̂_0|, clamped to [1, max_value]; x̂_0 is clipped to [−s, s] and divided
    by s. With s = 1 this is plain clipping to [−1, 1].
    """
    dtype, shape = pred_original_sample.dtype, pred_original_sample.shape
    flat = pred_original_sample.reshape(shape[0], -1)  # (B, C·H·W)
    if dtype not in (torch.float32, torch.float64):
        flat = flat.float()  # quantile needs float32/64
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)  # (B, 1)
    return (torch.clamp(flat, -s, s) / s).reshape(shape).to(dtype)


def make_alphas_cumprod(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_zero_snr):
    """(β_t, α_t = 1 − β_t, ᾱ_t = Π_{τ≤t} α_τ), each float32 (T,), with the optional zero-terminal-SNR rescale."""
    betas = make_betas(num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas)
    if rescale_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    alphas = 1.0 - betas
    return betas, alphas, torch.cumprod(alphas, dim=0)


def per_timestep(values: torch.Tensor, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[timesteps] shaped (B, 1, …, 1) to broadcast against `like` (B, …)."""
    return values[timesteps].reshape(-1, *([1] * (like.ndim - 1)))


class ForwardProcessMixin:
    """The forward process q(x_t | x_0) that every scheduler of the DDPM family shares (needs `alphas_cumprod`
    and `config.num_train_timesteps`): `add_noise`, `get_velocity`, and the scheduler-interface no-ops."""

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """x_t goes to the model unscaled; kept for the scheduler interface."""
        return sample

    def _sqrt_alphas_cumprod(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ, √(1−ᾱ)) over all training steps, on `like`'s device and in its dtype (cached)."""
        cache = self._sqrt_alphas_cumprod_cache  # {(device, dtype): tensors}, set in each scheduler's __init__
        key = (like.device, like.dtype)
        if key not in cache:
            alphas_cumprod = self.alphas_cumprod.to(device=like.device, dtype=like.dtype)
            cache[key] = (alphas_cumprod**0.5, (1 - alphas_cumprod) ** 0.5)
        return cache[key]

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, the closed form of q(x_t | x_0) (EQUATIONS.md; Ho et al. eq. 4)."""
        sqrt_alpha_prod, sqrt_beta_prod = self._sqrt_alphas_cumprod(original_samples)
        timesteps = torch.as_tensor(timesteps, device=original_samples.device).reshape(-1)
        return (
            per_timestep(sqrt_alpha_prod, timesteps, original_samples) * original_samples
            + per_timestep(sqrt_beta_prod, timesteps, original_samples) * noise
        )

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """v = √ᾱ_t ε − √(1−ᾱ_t) x_0, the v-prediction target (Salimans & Ho 2022, §4); `sample` is x_0."""
        sqrt_alpha_prod, sqrt_beta_prod = self._sqrt_alphas_cumprod(sample)
        timesteps = torch.as_tensor(timesteps, device=sample.device).reshape(-1)
        return (
            per_timestep(sqrt_alpha_prod, timesteps, sample) * noise
            - per_timestep(sqrt_beta_prod, timesteps, sample) * sample
        )

    def __len__(self) -> int:
        return self.config.num_train_timesteps
