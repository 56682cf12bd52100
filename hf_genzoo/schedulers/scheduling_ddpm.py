"""DDPM ancestral sampling, posterior and variational bound (Ho et al. 2020, arXiv:2006.11239).

`GenZooDDPMScheduler` is a drop-in replacement for diffusers' `DDPMScheduler`: same config keys and defaults, same
`step` / `add_noise` / `get_velocity` numbers (see tests/test_schedulers.py), with every per-timestep constant computed
once, when the timesteps change, instead of in every `step`. On top it gives q(x_{t−1} | x_t, x_0) (`posterior`) and
the variational bound in nats and bits/dim (`variational_bound`, Ho et al. §3.3).

Notation (../shared/EQUATIONS.md, "DDPM"; steps counted from 0 in code, from 1 in the paper):
    x_t                         `sample`, the noisy sample at step t
    ᾱ_t = Π_{τ≤t} (1 − β_τ)     `alphas_cumprod[t]`; alpha_prod_t
    t'                          the step the sampler goes to: t−1 in the training chain, the next entry of
                                `timesteps` when sampling with fewer steps (ᾱ_{t'} = 1 past the end)
    ᾱ_{t'}                      alpha_prod_t_prev
    1 − ᾱ_t, 1 − ᾱ_{t'}         beta_prod_t, beta_prod_t_prev
    α_t = ᾱ_t / ᾱ_{t'}          current_alpha_t (the α of one sampler step; 1 − β_t in the training chain)
    β_t = 1 − α_t               current_beta_t
    x̂_0 = f_θ(x_t, t)           pred_original_sample, eq. (15) for an ε-model
    μ̃_t(x_t, x_0)              the posterior mean, eq. (7): pred_original_sample_coeff·x_0 + current_sample_coeff·x_t
    β̃_t = (1−ᾱ_{t'})/(1−ᾱ_t) β_t   posterior_variance, eq. (7)
    σ_t²                        the reverse-process variance: β̃_t ("fixed_small"), β_t ("fixed_large"), or learned
    v = √ᾱ_t ε − √(1−ᾱ_t) x_0   the "v_prediction" target (Salimans & Ho 2022, §4)

Variance types, as diffusers names them: fixed_small σ_t² = β̃_t; fixed_large σ_t² = β_t (Ho et al. §3.2); the "_log"
variants are the same variances (GLIDE computes them in log space); learned: the model outputs σ_t² in C extra
channels (diffusers' reading); learned_range: the model outputs v ∈ [−1, 1] and log σ_t² = ½(v+1) log β_t +
½(1−v) log β̃_t (Nichol & Dhariwal 2021, eq. 15). Where this departs from diffusers ("fixed_large_log") is said at
`step`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .schedules import (
    BETA_SCHEDULES,
    PREDICTION_TYPES,
    TIMESTEP_SPACINGS,
    ForwardProcessMixin,
    check_choice,
    dynamic_threshold,
    make_alphas_cumprod,
    per_timestep,
    spaced_timesteps,
)

VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
LN2 = math.log(2.0)


@dataclass
class GenZooDDPMSchedulerOutput(BaseOutput):
    """One reverse step.

    prev_sample: x_{t'} ~ p_θ(x_{t'} | x_t), the sample for the next model call. Same shape as `sample`.
    pred_original_sample: x̂_0, the model's estimate of the clean sample (after clipping / thresholding).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass
class VariationalBoundOutput(BaseOutput):
    """The variational bound L = L_T + Σ_{t>1} L_{t−1} + L_0 of Ho et al. 2020, eq. (5), per image.

    nats: (B,) L, an upper bound on −log p_θ(x_0) (an unbiased estimate of it when timesteps were sampled).
    bits_per_dim: (B,) L / (D · ln 2), D the number of values in one image.
    prior_nats: (B,) L_T = KL(q(x_T | x_0) ‖ N(0, I)).
    decoder_nats: (B,) L_0 = −log p_θ(x_0 | x_1) under the discretised Gaussian decoder, eq. (13).
    kl_nats: (B, K) L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t)) for each step in `timesteps`.
    timesteps: (K,) the steps t (0-based, model input) of the columns of `kl_nats`; all of 1 … T−1, or a sample.
    """

    nats: torch.Tensor
    bits_per_dim: torch.Tensor
    prior_nats: torch.Tensor
    decoder_nats: torch.Tensor
    kl_nats: torch.Tensor
    timesteps: torch.Tensor


class _StepConstants(NamedTuple):
    """What `step` needs at one timestep t, as Python floats (see the notation table)."""

    sqrt_alpha_prod_t: float  # √ᾱ_t
    sqrt_beta_prod_t: float  # √(1 − ᾱ_t)
    pred_original_sample_coeff: float  # √ᾱ_{t'} β_t / (1 − ᾱ_t)            eq. (7)
    current_sample_coeff: float  # √α_t (1 − ᾱ_{t'}) / (1 − ᾱ_t)            eq. (7)
    std_dev_t: float  # σ_t for the fixed variance types
    log_posterior_variance: float  # log max(β̃_t, 1e-20)
    log_current_beta_t: float  # log β_t


def normal_kl(
    mean_1: torch.Tensor,
    log_variance_1: torch.Tensor | float,
    mean_2: torch.Tensor,
    log_variance_2: torch.Tensor | float,
) -> torch.Tensor:
    """KL(N(mean_1, e^{log_variance_1}) ‖ N(mean_2, e^{log_variance_2})) per element, in nats."""
    log_variance_1 = torch.as_tensor(log_variance_1, dtype=mean_1.dtype, device=mean_1.device)
    log_variance_2 = torch.as_tensor(log_variance_2, dtype=mean_1.dtype, device=mean_1.device)
    return 0.5 * (
        log_variance_2
        - log_variance_1
        - 1.0
        + torch.exp(log_variance_1 - log_variance_2)
        + (mean_1 - mean_2) ** 2 * torch.exp(-log_variance_2)
    )


def _log_normal_cdf_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for upper > lower, accurate in both tails (Φ the standard normal CDF)."""
    # In the upper tail use Φ(u) − Φ(l) = Φ(−l) − Φ(−u), so both arguments are where Φ is small and log Φ is exact.
    flip = lower > 0
    high = torch.where(flip, -lower, upper)
    low = torch.where(flip, -upper, lower)
    log_high = torch.special.log_ndtr(high)
    return log_high + torch.log(-torch.expm1(torch.special.log_ndtr(low) - log_high))


def discretized_gaussian_log_likelihood(
    x_0: torch.Tensor, mean: torch.Tensor, log_variance: torch.Tensor | float
) -> torch.Tensor:
    """log p(x_0) per element for the 256-bin discretised Gaussian decoder, Ho et al. 2020 eq. (13).

    Data lie in [−1, 1] on the grid 2k/255 − 1; each value owns the bin [x − 1/255, x + 1/255], except the first
    (x = −1), which extends to −∞, and the last (x = 1), which extends to +∞.
    """
    inv_std = torch.exp(-0.5 * torch.as_tensor(log_variance, dtype=mean.dtype, device=mean.device))
    upper = (x_0 - mean + 1.0 / 255) * inv_std  # standardised upper bin edge δ₊
    lower = (x_0 - mean - 1.0 / 255) * inv_std  # standardised lower bin edge δ₋
    log_first_bin = torch.special.log_ndtr(upper)  # log Φ(δ₊)          for x = −1
    log_last_bin = torch.special.log_ndtr(-lower)  # log (1 − Φ(δ₋))    for x = +1
    log_bin = _log_normal_cdf_difference(upper, lower)
    return torch.where(x_0 < -0.999, log_first_bin, torch.where(x_0 > 0.999, log_last_bin, log_bin))


class GenZooDDPMScheduler(ForwardProcessMixin, SchedulerMixin, ConfigMixin):
    """Ancestral sampling of Ho et al. 2020 (Algorithm 2), with the posterior q(x_{t−1} | x_t, x_0) and the
    variational bound.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of steps of the forward process.
        beta_start (`float`, defaults to 0.0001): β of the first step (linear, scaled_linear, sigmoid).
        beta_end (`float`, defaults to 0.02): β of the last step (linear, scaled_linear, sigmoid).
        beta_schedule (`"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"`, `"sigmoid"` or `"laplace"`, defaults to
            `"linear"`): how β_t goes from beta_start to beta_end; see `schedules.make_betas`.
        trained_betas (`np.ndarray` or `list[float]`, *optional*): β_0 … β_{T−1} given directly; overrides the above.
            Must have length num_train_timesteps: any other raises a ValueError (diffusers accepts it; a shorter one
            fails later with an IndexError, a longer one is silently cut to its first num_train_timesteps steps).
        variance_type (`"fixed_small"`, `"fixed_small_log"`, `"fixed_large"`, `"fixed_large_log"`, `"learned"` or
            `"learned_range"`, defaults to `"fixed_small"`): σ_t² of p_θ(x_{t−1} | x_t); see the module docstring.
            Any other value raises a ValueError (diffusers accepts it and samples with σ_t² = β̃_t).
        clip_sample (`bool`, defaults to `True`): clip x̂_0 to [−clip_sample_range, clip_sample_range].
        prediction_type (`"epsilon"`, `"sample"` or `"v_prediction"`, defaults to `"epsilon"`): what the model
            predicts: ε, x_0, or v = √ᾱ_t ε − √(1−ᾱ_t) x_0.
        thresholding (`bool`, defaults to `False`): dynamic thresholding of x̂_0 (Imagen); replaces clip_sample.
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the quantile of |x̂_0| used by thresholding.
        clip_sample_range (`float`, defaults to 1.0): the bound used by clip_sample.
        sample_max_value (`float`, defaults to 1.0): the largest threshold thresholding may use.
        timestep_spacing (`"leading"`, `"trailing"` or `"linspace"`, defaults to `"leading"`): which training steps
            `set_timesteps` picks (Lin et al. 2024, Table 2).
        steps_offset (`int`, defaults to 0): added to every timestep with "leading" spacing.
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale β so that ᾱ_{T−1} = 0 (Lin et al. 2024).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["GenZooDDIMScheduler", "GenZooDDIMInverseScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ] = "fixed_small",
        clip_sample: bool = True,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        if trained_betas is None:
            check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)

        self.betas, self.alphas, self.alphas_cumprod = make_alphas_cumprod(  # β_t, α_t, ᾱ_t: float32 (T,)
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        self.one = torch.tensor(1.0)  # ᾱ past the last step

        self.init_noise_sigma = 1.0  # x_T ~ N(0, I)
        self.variance_type = variance_type
        self.custom_timesteps = False
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)

        self._step_constants: dict[int, _StepConstants] = {}
        self._step_constants_timesteps = None  # the `timesteps` tensor the table was built for
        self._sqrt_alphas_cumprod_cache: dict = {}
        self._train_chain_cache: dict[str, torch.Tensor] = {}

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the steps to sample with: `num_inference_steps` spaced by `timestep_spacing`, or `timesteps`
        given in strictly decreasing order in [0, num_train_timesteps)."""
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("Pass either num_inference_steps or timesteps, not both.")
        if timesteps is not None:
            steps = np.asarray(timesteps.cpu() if torch.is_tensor(timesteps) else timesteps, dtype=np.int64)
            if steps.ndim != 1 or steps.size == 0:
                raise ValueError(f"timesteps must be a non-empty 1-D sequence, got shape {steps.shape}.")
            if np.any(steps[1:] >= steps[:-1]):
                raise ValueError(f"timesteps must be strictly decreasing, got {steps.tolist()}.")
            if steps[0] >= T or steps[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {T - 1}] (num_train_timesteps={T}), got {steps.tolist()}.")
            self.custom_timesteps = True
        elif num_inference_steps is None:
            raise ValueError("Pass num_inference_steps or timesteps.")
        else:
            steps = spaced_timesteps(T, num_inference_steps, self.config.timestep_spacing, self.config.steps_offset)
            self.custom_timesteps = False
        self.num_inference_steps = len(steps)
        self.timesteps = torch.from_numpy(steps).to(device)

    def _build_step_constants(self) -> None:
        """Tabulate `_StepConstants` for every t in `timesteps`, t' being the next entry (−1: ᾱ_{t'} = 1).

        The arithmetic is float32, in the order of the formulas below, as diffusers does it in every `step`: ᾱ is a
        float32 table, so float64 here would not be more accurate (1 − ᾱ_t/ᾱ_{t'} loses the same digits either way)
        and would only move the numbers away from diffusers' by up to ~1e-4 relative at small strides.
        """
        timesteps = self.timesteps.cpu()
        prev_timesteps = torch.cat([timesteps[1:], torch.tensor([-1])])
        alpha_prod_t = self.alphas_cumprod[timesteps]
        alpha_prod_t_prev = torch.where(prev_timesteps >= 0, self.alphas_cumprod[prev_timesteps.clamp(min=0)], self.one)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev
        current_beta_t = 1 - current_alpha_t
        # β̃_t, eq. (7); floored because its log is taken (β̃ = 0 when t' is past the end)
        posterior_variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
        std_dev_t = {
            "fixed_small": posterior_variance**0.5,
            "fixed_small_log": torch.exp(0.5 * torch.log(posterior_variance)),
            "fixed_large": current_beta_t**0.5,
            "fixed_large_log": torch.exp(0.5 * torch.log(current_beta_t)),
        }.get(self.variance_type, torch.zeros_like(current_beta_t))  # learned: from the model output
        columns = (
            alpha_prod_t**0.5,
            beta_prod_t**0.5,
            alpha_prod_t_prev**0.5 * current_beta_t / beta_prod_t,
            current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t,
            std_dev_t,
            torch.log(posterior_variance),
            torch.log(current_beta_t),
        )
        rows = zip(*(column.tolist() for column in columns))
        self._step_constants = {t: _StepConstants(*row) for t, row in zip(timesteps.tolist(), rows)}
        self._step_constants_timesteps = self.timesteps

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """t', the step that `step` at `timestep` goes to (−1 after the last)."""
        index = (self.timesteps.cpu() == int(timestep)).nonzero()
        if len(index) == 0:
            raise ValueError(f"timestep {int(timestep)} is not one of scheduler.timesteps.")
        index = int(index[0, 0])
        prev = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1
        return torch.tensor(prev) if torch.is_tensor(timestep) else prev

    def _get_variance(
        self,
        t: int | torch.Tensor,
        predicted_variance: torch.Tensor | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ]
        | None = None,
    ) -> torch.Tensor:
        """diffusers' `DDPMScheduler._get_variance`, same signature and the same float32 numbers, for code written
        against it (`step` itself reads tabulated constants). Note that, as in diffusers, what it returns depends on
        `variance_type`:

            fixed_small      β̃_t = (1−ᾱ_{t'})/(1−ᾱ_t) β_t     the variance σ_t², Ho et al. 2020 eq. (7)
            fixed_small_log  √β̃_t = exp(½ log β̃_t)            the standard deviation σ_t (diffusers' rl-diffuser path)
            fixed_large      β_t = 1 − ᾱ_t/ᾱ_{t'}               the variance σ_t², Ho et al. §3.2
            fixed_large_log  log β_t                            the log variance (GLIDE's max_log)
            learned          `predicted_variance` unchanged     σ_t² as the model outputs it
            learned_range    ½(v+1) log β_t + ½(1−v) log β̃_t    the log variance, Nichol & Dhariwal 2021 eq. (15)

        β̃_t is floored at 1e-20 before use (β̃ = 0 at the last step, and its log is taken). t' is the step `step`
        goes to from t: t − 1 before `set_timesteps`, the next entry of `timesteps` after it (ᾱ_{t'} = 1 past the end).

        Args:
            t: the current step, an entry of `timesteps`.
            predicted_variance: the model's variance channels (B, C, …); needed for "learned" and "learned_range".
            variance_type: one of `VARIANCE_TYPES`; None: `config.variance_type`.

        Two departures from diffusers, where it gives a silent wrong answer: an unknown `variance_type` raises a
        ValueError (diffusers returns β̃_t), and so does a learned type without `predicted_variance` (diffusers returns
        None, or fails inside the arithmetic for "learned_range").
        """
        if variance_type is None:
            variance_type = self.config.variance_type
        check_choice("variance_type", variance_type, VARIANCE_TYPES)
        if variance_type in ("learned", "learned_range") and predicted_variance is None:
            raise ValueError(f"variance_type={variance_type!r} needs predicted_variance, the model's variance output.")

        # 1. ᾱ_t, ᾱ_{t'} and β_t = 1 − ᾱ_t/ᾱ_{t'} (the β of one sampler step)
        prev_t = int(self.previous_timestep(int(t)))
        alpha_prod_t = self.alphas_cumprod[int(t)]
        alpha_prod_t_prev = self.alphas_cumprod[prev_t] if prev_t >= 0 else self.one
        current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev

        # 2. β̃_t = (1−ᾱ_{t'})/(1−ᾱ_t) β_t, eq. (7), floored because its log is taken
        posterior_variance = torch.clamp((1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t, min=1e-20)

        # 3. the quantity diffusers returns for this variance type (table above)
        if variance_type == "fixed_small":
            return posterior_variance
        if variance_type == "fixed_small_log":
            return torch.exp(0.5 * torch.log(posterior_variance))
        if variance_type == "fixed_large":
            return current_beta_t
        if variance_type == "fixed_large_log":
            return torch.log(current_beta_t)
        if variance_type == "learned":
            return predicted_variance
        # learned_range: frac = (v + 1)/2 between log β̃_t (min_log) and log β_t (max_log)
        min_log, max_log = torch.log(posterior_variance), torch.log(current_beta_t)
        frac = (predicted_variance + 1) / 2
        return frac * max_log + (1 - frac) * min_log

    def _predict_original_sample(self, model_output, sample, sqrt_alpha_prod_t, sqrt_beta_prod_t):
        """x̂_0 from the model output and x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, before clipping."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":  # x̂_0 = (x_t − √(1−ᾱ_t) ε_θ) / √ᾱ_t, eq. (15)
            return torch.sub(sample, model_output, alpha=sqrt_beta_prod_t).div_(sqrt_alpha_prod_t)
        if prediction_type == "sample":
            return model_output
        # v_prediction: x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v_θ
        return torch.sub(sample * sqrt_alpha_prod_t, model_output, alpha=sqrt_beta_prod_t)

    def _clip_or_threshold(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        config = self.config
        if config.thresholding:
            return dynamic_threshold(pred_original_sample, config.dynamic_thresholding_ratio, config.sample_max_value)
        if config.clip_sample:
            return pred_original_sample.clamp(-config.clip_sample_range, config.clip_sample_range)
        return pred_original_sample

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        variance_noise: torch.Tensor | None = None,
    ) -> GenZooDDPMSchedulerOutput | tuple:
        """One step of Algorithm 2: x_{t'} ~ N(μ̃_t(x_t, x̂_0), σ_t² I).

        Args:
            model_output: the model's output at (x_t, t): ε, x_0 or v (B, C, …); for the learned variance types
                (B, 2C, …), the second half being σ_t² ("learned", as diffusers reads it) or v ∈ [−1, 1]
                ("learned_range").
            timestep: t, one of `timesteps`.
            sample: x_t (B, C, …).
            generator: for the noise z; no noise is drawn at t = 0 (as in diffusers, so generator states agree).
            return_dict: return a `GenZooDDPMSchedulerOutput` rather than a tuple (prev_sample, pred_original_sample).
            variance_noise: z given directly instead of drawn from `generator`.

        One departure from diffusers 0.42, where its numbers cannot be meant: "fixed_large_log" uses σ_t² = β_t
        (diffusers takes √(log β_t), which is NaN).
        """
        t = int(timestep)
        if self._step_constants_timesteps is not self.timesteps:
            self._build_step_constants()
        constants = self._step_constants.get(t)
        if constants is None:
            raise ValueError(f"timestep {t} is not one of scheduler.timesteps; call set_timesteps first.")

        predicted_variance = None
        if self.variance_type in ("learned", "learned_range"):
            channels = sample.shape[1]
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"variance_type={self.variance_type!r} needs a model output of {2 * channels} channels "
                    f"(prediction and variance), got {model_output.shape[1]}."
                )
            model_output, predicted_variance = model_output.split(channels, dim=1)

        # 1. x̂_0 = f_θ(x_t, t), eq. (15), then clipped or thresholded
        pred_original_sample = self._predict_original_sample(
            model_output, sample, constants.sqrt_alpha_prod_t, constants.sqrt_beta_prod_t
        )
        pred_original_sample = self._clip_or_threshold(pred_original_sample)

        # 2. μ̃_t(x_t, x̂_0) = √ᾱ_{t'} β_t/(1−ᾱ_t) x̂_0 + √α_t (1−ᾱ_{t'})/(1−ᾱ_t) x_t, eq. (7)
        prev_sample = torch.add(
            pred_original_sample * constants.pred_original_sample_coeff, sample, alpha=constants.current_sample_coeff
        )

        # 3. x_{t'} = μ̃_t + σ_t z, z ~ N(0, I) if t > 0 else 0, Algorithm 2 line 4
        if t > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("Pass either generator or variance_noise, not both.")
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            if predicted_variance is None:
                prev_sample.add_(variance_noise, alpha=constants.std_dev_t)
            else:
                log_variance = self._learned_log_variance(
                    predicted_variance, constants.log_current_beta_t, constants.log_posterior_variance
                )
                prev_sample = prev_sample + torch.exp(0.5 * log_variance) * variance_noise

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return GenZooDDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _learned_log_variance(self, predicted_variance, log_beta, log_posterior_variance):
        """log σ_t² from the model's variance channels."""
        if self.variance_type == "learned":
            return torch.log(predicted_variance)  # the channels are σ_t² itself, as diffusers reads them
        # learned_range: log σ² = frac·log β_t + (1 − frac)·log β̃_t, frac = (v + 1)/2, Nichol & Dhariwal eq. (15)
        frac = (predicted_variance + 1) / 2
        return frac * log_beta + (1 - frac) * log_posterior_variance

    # ----- the training chain: posterior and variational bound (t' = t − 1) -----

    def _train_chain(self) -> dict[str, torch.Tensor]:
        """Per-step constants of the T-step training chain, each (T,), float64 on the CPU (cached).

        Computed from `alphas_cumprod`, with β_t = 1 − ᾱ_t/ᾱ_{t−1} as `step` uses before `set_timesteps`.
        """
        if not self._train_chain_cache:
            alpha_prod_t = self.alphas_cumprod.double()
            alpha_prod_t_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_prod_t[:-1]])
            current_beta_t = 1 - alpha_prod_t / alpha_prod_t_prev
            posterior_variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t  # β̃_t, eq. (7)
            # β̃_0 = 0: Ho et al.'s code uses β̃_1 in its place wherever a log variance is needed (the decoder L_0)
            log_posterior_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log()
            log_fixed_large_variance = torch.cat([posterior_variance[1:2], current_beta_t[1:]]).log()  # likewise
            chain = {
                "sqrt_alpha_prod": alpha_prod_t.sqrt(),
                "sqrt_beta_prod": (1 - alpha_prod_t).sqrt(),
                "posterior_mean_coef_x0": alpha_prod_t_prev.sqrt() * current_beta_t / (1 - alpha_prod_t),
                "posterior_mean_coef_xt": (1 - current_beta_t).sqrt() * (1 - alpha_prod_t_prev) / (1 - alpha_prod_t),
                "posterior_variance": posterior_variance,
                "log_posterior_variance": log_posterior_variance,
                "log_beta": current_beta_t.log(),
                "log_fixed_large_variance": log_fixed_large_variance,
            }
            self._train_chain_cache = chain
        return self._train_chain_cache

    def posterior(
        self, x_0: torch.Tensor, x_t: torch.Tensor, t: int | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I), eq. (6)-(7), in the T-step training chain.

        μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t,   β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t.

        Args:
            x_0, x_t: (B, …).
            t: an int, or (B,) integer steps in [0, T); at t = 0, ᾱ_{−1} = 1: the mean is x_0 and the variance 0.

        Returns:
            (mean (B, …), variance (B, 1, …, 1)).
        """
        chain = {k: v.to(device=x_t.device, dtype=x_t.dtype) for k, v in self._train_chain().items()}
        t = torch.as_tensor(t, device=x_t.device).expand(x_t.shape[0])
        mean = (
            per_timestep(chain["posterior_mean_coef_x0"], t, x_t) * x_0
            + per_timestep(chain["posterior_mean_coef_xt"], t, x_t) * x_t
        )
        return mean, per_timestep(chain["posterior_variance"], t, x_t)

    def variational_bound(
        self,
        model_output_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        x_0: torch.Tensor,
        generator: torch.Generator | None = None,
        num_sampled_timesteps: int | None = None,
        clip_denoised: bool | None = None,
        decoder: str = "discretized",
    ) -> VariationalBoundOutput:
        """L = L_T + Σ_{t>1} L_{t−1} + L_0 ≥ −log p_θ(x_0), per image (Ho et al. 2020, eq. 5 and §3.3).

            L_T     = KL(q(x_T | x_0) ‖ N(0, I))                        closed form
            L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))    at one x_t ~ q(x_t | x_0) per step
            L_0     = −log p_θ(x_0 | x_1)                               discretised Gaussian decoder, eq. (13),
                                                                        or a Gaussian density (continuous data)

        p_θ(x_{t−1} | x_t) = N(μ̃_t(x_t, x̂_0), σ_t² I), with x̂_0 from the model output (any `prediction_type`) and σ_t²
        from `variance_type`. As in Ho et al.'s code, where σ_0² would be β̃_0 = 0 (the decoder with "fixed_small", or
        with "fixed_large" whose σ_0² they also take from β̃_1), β̃_1 is used instead.

        Args:
            model_output_fn: `model_output_fn(x_t, t)` → the model output for the batch x_t (B, C, …) at integer
                steps t (a (B,) int64 tensor, 0-based); (B, 2C, …) for the learned variance types.
            x_0: (B, C, …) data in [−1, 1] on the 256-level grid 2k/255 − 1.
            generator: for the noise ε of each x_t (and the sampled steps).
            num_sampled_timesteps: None: all T terms, the exact sum over t. An int K in [1, T−1]: an unbiased
                estimate from K distinct steps drawn uniformly from 1 … T−1, their KL terms scaled by (T−1)/K;
                L_T and L_0 are always included.
            clip_denoised: None: process x̂_0 as `step` does (config clip_sample / thresholding); True: clip to
                ±clip_sample_range; False: leave it.
            decoder: "discretized" (pixels on the 256-level grid in [−1, 1]: L_0 is the probability of x_0's bin,
                eq. 13) or "gaussian" (continuous data of any range, such as a first stage's latents: L_0 is the
                density −log N(x_0; μ_θ(x_1, 1), σ_1²), so the bound is on a density, in nats per dimension, not
                on a probability).

        Returns:
            `VariationalBoundOutput`: nats and bits/dim (divided by D·ln 2, D = values per image), and the terms.
        """
        T = self.config.num_train_timesteps
        if decoder not in ("discretized", "gaussian"):
            raise ValueError(f"decoder must be 'discretized' or 'gaussian', got {decoder!r}")
        if decoder == "discretized" and (x_0.min() < -1 or x_0.max() > 1):
            raise ValueError(f"x_0 must lie in [-1, 1], got values in [{x_0.min().item()}, {x_0.max().item()}].")
        if num_sampled_timesteps is None:
            kl_timesteps = torch.arange(1, T)
        else:
            if not 1 <= num_sampled_timesteps <= T - 1:
                raise ValueError(
                    f"num_sampled_timesteps={num_sampled_timesteps} must be between 1 and T-1={T - 1} "
                    f"(num_train_timesteps={T})."
                )
            device = generator.device if generator is not None else "cpu"
            permutation = torch.randperm(T - 1, generator=generator, device=device).cpu()
            kl_timesteps = permutation[:num_sampled_timesteps].sort().values + 1
        chain = {k: v.tolist() for k, v in self._train_chain().items()}  # Python floats
        dims = x_0[0].numel()

        # L_T = KL(N(√ᾱ_T x_0, (1 − ᾱ_T) I) ‖ N(0, I))
        mean_T = chain["sqrt_alpha_prod"][T - 1] * x_0
        log_variance_T = 2 * math.log(chain["sqrt_beta_prod"][T - 1])
        prior_nats = normal_kl(mean_T, log_variance_T, torch.zeros_like(x_0), 0.0).flatten(1).sum(1)

        decoder_nats = self._bound_term(model_output_fn, x_0, 0, chain, generator, clip_denoised, decoder)
        kl_nats = torch.stack(
            [self._bound_term(model_output_fn, x_0, int(t), chain, generator, clip_denoised, decoder) for t in kl_timesteps],
            dim=1,
        )  # (B, K)

        nats = prior_nats + decoder_nats + kl_nats.sum(1) * ((T - 1) / len(kl_timesteps))
        return VariationalBoundOutput(
            nats=nats,
            bits_per_dim=nats / (dims * LN2),
            prior_nats=prior_nats,
            decoder_nats=decoder_nats,
            kl_nats=kl_nats,
            timesteps=kl_timesteps,
        )

    def _bound_term(self, model_output_fn, x_0, t: int, chain, generator, clip_denoised, decoder="discretized") -> torch.Tensor:
        """L_{t−1} (t ≥ 1) or L_0 (t = 0) in nats per image, (B,), at one x_t ~ q(x_t | x_0)."""
        batch_size, channels = x_0.shape[:2]
        # 1. x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε
        noise = randn_tensor(x_0.shape, generator=generator, device=x_0.device, dtype=x_0.dtype)
        sqrt_alpha_prod_t, sqrt_beta_prod_t = chain["sqrt_alpha_prod"][t], chain["sqrt_beta_prod"][t]
        x_t = sqrt_alpha_prod_t * x_0 + sqrt_beta_prod_t * noise

        # 2. the model output, split into prediction and variance channels
        model_output = model_output_fn(x_t, torch.full((batch_size,), t, dtype=torch.int64, device=x_0.device))
        if self.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"variance_type={self.variance_type!r} needs a model output of {2 * channels} channels, "
                    f"got {model_output.shape[1]}."
                )
            model_output, predicted_variance = model_output.split(channels, dim=1)

        # 3. x̂_0, then μ_θ = μ̃_t(x_t, x̂_0) (eq. 7 with x̂_0 for x_0) and log σ_t²
        pred_original_sample = self._predict_original_sample(model_output, x_t, sqrt_alpha_prod_t, sqrt_beta_prod_t)
        if clip_denoised is None:
            pred_original_sample = self._clip_or_threshold(pred_original_sample)
        elif clip_denoised:
            pred_original_sample = pred_original_sample.clamp(
                -self.config.clip_sample_range, self.config.clip_sample_range
            )
        coef_x0, coef_xt = chain["posterior_mean_coef_x0"][t], chain["posterior_mean_coef_xt"][t]
        model_mean = coef_x0 * pred_original_sample + coef_xt * x_t
        log_posterior_variance = chain["log_posterior_variance"][t]
        if self.variance_type in ("fixed_small", "fixed_small_log"):
            model_log_variance = log_posterior_variance
        elif self.variance_type in ("fixed_large", "fixed_large_log"):
            model_log_variance = chain["log_fixed_large_variance"][t]
        else:
            model_log_variance = self._learned_log_variance(
                predicted_variance, chain["log_beta"][t], log_posterior_variance
            )

        # 4. L_0 = −log p_θ(x_0 | x_1), eq. (13), or L_{t−1} = KL(N(μ̃_t(x_t, x_0), β̃_t) ‖ N(μ_θ, σ_t²))
        if t == 0 and decoder == "gaussian":
            # −log N(x_0; μ_θ, σ²) = ½ (log 2π + log σ² + (x_0 − μ_θ)² / σ²) per value
            log_variance = torch.as_tensor(model_log_variance, dtype=x_0.dtype, device=x_0.device)
            nll = 0.5 * (math.log(2 * math.pi) + log_variance + (x_0 - model_mean) ** 2 * torch.exp(-log_variance))
            return nll.flatten(1).sum(1)
        if t == 0:
            return -discretized_gaussian_log_likelihood(x_0, model_mean, model_log_variance).flatten(1).sum(1)
        true_mean = coef_x0 * x_0 + coef_xt * x_t
        return normal_kl(true_mean, log_posterior_variance, model_mean, model_log_variance).flatten(1).sum(1)
