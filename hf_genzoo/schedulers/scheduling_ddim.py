"""DDIM sampling and deterministic DDIM inversion (Song et al. 2021, arXiv:2010.02502).

`GenZooDDIMScheduler` and `GenZooDDIMInverseScheduler` are drop-in replacements for diffusers' `DDIMScheduler` and
`DDIMInverseScheduler`: same config keys and defaults, same numbers (tests/test_schedulers.py), with the per-timestep
constants computed once in `set_timesteps` instead of in every `step`. `ddim_invert` maps x_0 to x_T with the inverse
scheduler and `ddim_sample` maps x_T back to x_0 (η = 0): up to plain DDIM inversion's first-order error, or exactly
(to a fixed point's residual) with `num_fixed_point_iterations`.

Notation (../shared/EQUATIONS.md, "DDIM"; ᾱ is the paper's α):
    x_t                    `sample`
    ᾱ_t                    `alphas_cumprod[t]`; alpha_prod_t
    t'                     the previous step t − T // S, S = num_inference_steps (diffusers' rule, whatever the
                           spacing); ᾱ_{t'} = `final_alpha_cumprod` (1, or ᾱ_0) when t' < 0
    ᾱ_{t'}                 alpha_prod_t_prev
    1 − ᾱ_t                beta_prod_t
    ε_θ(x_t)               pred_epsilon, the model's noise estimate
    f_θ(x_t) = x̂_0         pred_original_sample, "predicted x_0" of eq. (12)
    σ_t(η)                 std_dev_t = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}), eq. (16)
    √(1−ᾱ_{t'}−σ_t²) ε_θ   the "direction pointing to x_t" of eq. (12)

The DDIM update, eq. (12):
    x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε_θ(x_t) + σ_t z,   x̂_0 = (x_t − √(1−ᾱ_t) ε_θ(x_t)) / √ᾱ_t.
With η = 0 it is deterministic, an Euler step of an ODE, and can be run from x_0 towards x_T (inversion, §4.3).
"""

from __future__ import annotations

import warnings
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
    spaced_timesteps,
)

INVERSE_TIMESTEP_SPACINGS = ("leading", "trailing")
# Keys of the DDIM and DDPM schedulers' configs that the inverse scheduler accepts and ignores, as diffusers'
# DDIMInverseScheduler does (through its **kwargs); why each has no effect on inversion: GenZooDDIMInverseScheduler.
SAMPLER_ONLY_KEYS = ("thresholding", "dynamic_thresholding_ratio", "sample_max_value", "variance_type")


@dataclass
class GenZooDDIMSchedulerOutput(BaseOutput):
    """One DDIM step.

    prev_sample: x_{t'} (x_t of the next, noisier step for the inverse scheduler). Same shape as `sample`.
    pred_original_sample: x̂_0 = f_θ(x_t), after clipping / thresholding.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _StepConstants(NamedTuple):
    """What `step` needs at one timestep t, as Python floats holding float32 values (see the notation table)."""

    sqrt_alpha_prod_t: float  # √ᾱ_t
    sqrt_beta_prod_t: float  # √(1 − ᾱ_t)
    sqrt_alpha_prod_t_prev: float  # √ᾱ_{t'}
    beta_prod_t_prev: float  # 1 − ᾱ_{t'}
    sqrt_beta_prod_t_prev: float  # √(1 − ᾱ_{t'}), the direction coefficient when σ_t = 0
    sqrt_variance: float  # σ_t(η=1) = √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}), eq. (16)


def _tabulate(alpha_prod_t: torch.Tensor, alpha_prod_t_prev: torch.Tensor) -> list[_StepConstants]:
    """`_StepConstants` for every t, given ᾱ_t and ᾱ_{t'} as float32 (T,) tensors.

    The arithmetic is float32, as diffusers does it in every `step`: ᾱ is a float32 table, so float64 would not be
    more accurate (1 − ᾱ_t/ᾱ_{t'} loses the same digits either way) and would only move the numbers away from
    diffusers' by up to ~1e-4 relative at small strides.
    """
    beta_prod_t, beta_prod_t_prev = 1 - alpha_prod_t, 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    columns = (
        alpha_prod_t**0.5,
        beta_prod_t**0.5,
        alpha_prod_t_prev**0.5,
        beta_prod_t_prev,
        beta_prod_t_prev**0.5,
        variance**0.5,
    )
    return [_StepConstants(*row) for row in zip(*(column.tolist() for column in columns))]


def _direction_coefficient(beta_prod_t_prev: float, sqrt_variance: float, eta: float) -> tuple[float, float]:
    """(σ_t(η), √(1 − ᾱ_{t'} − σ_t²)) in float32, eq. (12) and (16); the root is floored at 0 against rounding."""
    std_dev_t = np.float32(eta) * np.float32(sqrt_variance)
    return float(std_dev_t), float(np.sqrt(max(np.float32(beta_prod_t_prev) - std_dev_t**2, np.float32(0))))


def _predict_original_sample_and_epsilon(prediction_type, model_output, sample, sqrt_alpha_prod_t, sqrt_beta_prod_t):
    """(x̂_0, ε_θ) from the model output, using x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε (eq. 12's "predicted x_0")."""
    if prediction_type == "epsilon":
        pred_original_sample = torch.sub(sample, model_output, alpha=sqrt_beta_prod_t).div_(sqrt_alpha_prod_t)
        return pred_original_sample, model_output
    if prediction_type == "sample":
        pred_epsilon = torch.sub(sample, model_output, alpha=sqrt_alpha_prod_t).div_(sqrt_beta_prod_t)
        return model_output, pred_epsilon
    # v_prediction, v = √ᾱ_t ε − √(1−ᾱ_t) x_0: x̂_0 = √ᾱ_t x_t − √(1−ᾱ_t) v, ε = √ᾱ_t v + √(1−ᾱ_t) x_t
    pred_original_sample = torch.sub(sample * sqrt_alpha_prod_t, model_output, alpha=sqrt_beta_prod_t)
    pred_epsilon = torch.add(model_output * sqrt_alpha_prod_t, sample, alpha=sqrt_beta_prod_t)
    return pred_original_sample, pred_epsilon


class GenZooDDIMScheduler(ForwardProcessMixin, SchedulerMixin, ConfigMixin):
    """DDIM sampling, eq. (12) with σ_t(η) of eq. (16): η = 0 deterministic DDIM, η = 1 DDPM-like.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T, the number of steps of the forward process.
        beta_start (`float`, defaults to 0.0001): β of the first step (linear, scaled_linear, sigmoid).
        beta_end (`float`, defaults to 0.02): β of the last step (linear, scaled_linear, sigmoid).
        beta_schedule (`"linear"`, `"scaled_linear"`, `"squaredcos_cap_v2"`, `"sigmoid"` or `"laplace"`, defaults to
            `"linear"`): see `schedules.make_betas` (diffusers' DDIM has only the first three).
        trained_betas (`np.ndarray` or `list[float]`, *optional*): β_0 … β_{T−1} given directly. Must have length
            num_train_timesteps: any other raises a ValueError (diffusers accepts it; a shorter one fails later with
            an IndexError, a longer one is silently cut to its first num_train_timesteps steps).
        clip_sample (`bool`, defaults to `True`): clip x̂_0 to [−clip_sample_range, clip_sample_range].
        set_alpha_to_one (`bool`, defaults to `True`): ᾱ after the last step is 1 (else ᾱ_0).
        steps_offset (`int`, defaults to 0): added to every timestep with "leading" spacing.
        prediction_type (`"epsilon"`, `"sample"` or `"v_prediction"`, defaults to `"epsilon"`): what the model
            predicts: ε, x_0, or v = √ᾱ_t ε − √(1−ᾱ_t) x_0.
        thresholding (`bool`, defaults to `False`): dynamic thresholding of x̂_0 (Imagen); replaces clip_sample.
        dynamic_thresholding_ratio (`float`, defaults to 0.995): the quantile of |x̂_0| used by thresholding.
        clip_sample_range (`float`, defaults to 1.0): the bound used by clip_sample.
        sample_max_value (`float`, defaults to 1.0): the largest threshold thresholding may use.
        timestep_spacing (`"leading"`, `"trailing"` or `"linspace"`, defaults to `"leading"`): which training steps
            `set_timesteps` picks (Lin et al. 2024, Table 2).
        rescale_betas_zero_snr (`bool`, defaults to `False`): rescale β so that ᾱ_{T−1} = 0 (Lin et al. 2024).
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers] + ["GenZooDDPMScheduler", "GenZooDDIMInverseScheduler"]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading",
        rescale_betas_zero_snr: bool = False,
    ):
        if trained_betas is None:
            check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)

        self.betas, self.alphas, self.alphas_cumprod = make_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        # ᾱ_{t'} for the last step, where t' < 0
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0  # x_T ~ N(0, I)
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._step_constants: list[_StepConstants] = []
        self._step_constants_num_inference_steps = None
        self._sqrt_alphas_cumprod_cache: dict = {}

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose S = num_inference_steps steps spaced by `timestep_spacing`, and tabulate the step constants."""
        T = self.config.num_train_timesteps
        steps = spaced_timesteps(T, num_inference_steps, self.config.timestep_spacing, self.config.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(steps).to(device)
        self._build_step_constants()

    def _build_step_constants(self) -> None:
        """`_StepConstants` for every t in [0, T), with t' = t − T // S."""
        T = self.config.num_train_timesteps
        prev_timesteps = torch.arange(T) - T // self.num_inference_steps
        prev_alphas_cumprod = torch.where(
            prev_timesteps >= 0, self.alphas_cumprod[prev_timesteps.clamp(min=0)], self.final_alpha_cumprod
        )
        self._step_constants = _tabulate(self.alphas_cumprod, prev_alphas_cumprod)
        self._step_constants_num_inference_steps = self.num_inference_steps

    def _get_variance(self, timestep: int | torch.Tensor, prev_timestep: int | torch.Tensor) -> torch.Tensor:
        """σ_t(η=1)² = (1−ᾱ_{t'})/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_{t'}), Song et al. 2021 eq. (16); σ_t(η)² = η² times this.

        diffusers' `DDIMScheduler._get_variance`, same signature and the same float32 numbers (used by some
        pipelines); `step` reads the tabulated σ_t instead. t' = `prev_timestep` is given by the caller, whatever
        `set_timesteps` chose; ᾱ_{t'} = `final_alpha_cumprod` when it is negative. Returns a 0-d float32 tensor.
        """
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_t_prev = self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        return (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        return dynamic_threshold(sample, self.config.dynamic_thresholding_ratio, self.config.sample_max_value)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: torch.Generator | None = None,
        variance_noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> GenZooDDIMSchedulerOutput | tuple:
        """One DDIM step x_t → x_{t'}, eq. (12).

        Args:
            model_output: the model's output at (x_t, t): ε, x_0 or v, as `prediction_type` says. (B, C, …)
            timestep: t, an integer step in [0, T).
            sample: x_t. (B, C, …)
            eta: η of eq. (16); 0 is deterministic DDIM.
            use_clipped_model_output: recompute ε_θ from the clipped x̂_0 (as GLIDE does).
            generator: for the noise z when η > 0.
            variance_noise: z given directly instead of drawn from `generator` (e.g. CycleDiffusion).
            return_dict: return a `GenZooDDIMSchedulerOutput` rather than a tuple (prev_sample, pred_original_sample).
        """
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps before step.")
        if self._step_constants_num_inference_steps != self.num_inference_steps:
            self._build_step_constants()
        t = int(timestep)
        if not 0 <= t < len(self._step_constants):
            raise ValueError(f"timestep {t} is outside [0, {len(self._step_constants) - 1}].")
        # 1. ᾱ_t and ᾱ_{t'}, t' = t − T // S
        constants = self._step_constants[t]
        config = self.config

        # 2. "predicted x_0" of eq. (12), and ε_θ(x_t)
        pred_original_sample, pred_epsilon = _predict_original_sample_and_epsilon(
            config.prediction_type, model_output, sample, constants.sqrt_alpha_prod_t, constants.sqrt_beta_prod_t
        )

        # 3. clip or threshold x̂_0
        if config.thresholding:
            pred_original_sample = self._threshold_sample(pred_original_sample)
        elif config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(-config.clip_sample_range, config.clip_sample_range)

        # 4. σ_t(η) = η √((1−ᾱ_{t'})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t'}), eq. (16), and the direction coefficient of eq. (12)
        if eta == 0:
            std_dev_t, direction_coeff = 0.0, constants.sqrt_beta_prod_t_prev
        else:
            std_dev_t, direction_coeff = _direction_coefficient(
                constants.beta_prod_t_prev, constants.sqrt_variance, eta
            )

        # 5. ε_θ consistent with the clipped x̂_0: ε = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t)
        if use_clipped_model_output:
            pred_epsilon = torch.sub(sample, pred_original_sample, alpha=constants.sqrt_alpha_prod_t).div_(
                constants.sqrt_beta_prod_t
            )

        # 6. x_{t'} = √ᾱ_{t'} x̂_0 + √(1 − ᾱ_{t'} − σ_t²) ε_θ ("direction pointing to x_t"), eq. (12)
        prev_sample = torch.add(
            pred_original_sample * constants.sqrt_alpha_prod_t_prev, pred_epsilon, alpha=direction_coeff
        )

        # 7. + σ_t z, the "random noise" of eq. (12)
        if eta > 0:
            if variance_noise is not None and generator is not None:
                raise ValueError("Pass either generator or variance_noise, not both.")
            if variance_noise is None:
                variance_noise = randn_tensor(
                    model_output.shape, generator=generator, device=model_output.device, dtype=model_output.dtype
                )
            prev_sample.add_(variance_noise, alpha=std_dev_t)

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return GenZooDDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

class GenZooDDIMInverseScheduler(ForwardProcessMixin, SchedulerMixin, ConfigMixin):
    """Deterministic DDIM run backwards, x_0 → x_T: eq. (12) with η = 0 solved for the noisier sample (§4.3).

    Each step goes from t_s = t − T // S to t and evaluates the model at (x_{t_s}, t), the usual approximation
    ε_θ(x_{t_s}, t) ≈ ε_θ(x_t, t):
        x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε_θ,   x̂_0 = (x_{t_s} − √(1−ᾱ_{t_s}) ε_θ) / √ᾱ_{t_s}.

    Args:
        num_train_timesteps (`int`, defaults to 1000): T.
        beta_start (`float`, defaults to 0.0001), beta_end (`float`, defaults to 0.02), beta_schedule (defaults to
            `"linear"`), trained_betas (*optional*): the noise schedule, as for `GenZooDDIMScheduler`.
        clip_sample (`bool`, defaults to `True`): clip x̂_0 to ±clip_sample_range (breaks exact invertibility
            wherever it acts; pass False for inversion of unbounded data).
        set_alpha_to_one (`bool`, defaults to `True`): ᾱ before the first step is 1 (else ᾱ_0).
        steps_offset (`int`, defaults to 0): added to every timestep with "leading" spacing.
        prediction_type (`"epsilon"`, `"sample"` or `"v_prediction"`, defaults to `"epsilon"`).
        clip_sample_range (`float`, defaults to 1.0).
        timestep_spacing (`"leading"` or `"trailing"`, defaults to `"leading"`).
        rescale_betas_zero_snr (`bool`, defaults to `False`).
        set_alpha_to_zero: deprecated alias of set_alpha_to_one, as in diffusers.
        thresholding, dynamic_thresholding_ratio, sample_max_value (DDIM / DDPM), variance_type (DDPM): accepted and
            ignored, as diffusers' `DDIMInverseScheduler` accepts them through `**kwargs`, so that a sampler's config
            can be passed as keywords. (`from_config` never passes them to `__init__`: like diffusers' it logs that
            it ignores them and keeps them in the config only for converting back to a sampler.) They change no
            number, and the inversion gives diffusers' numbers: its inverse step never thresholds x̂_0. Thresholding
            could not be inverted anyway: it clips x̂_0 to ±s and divides by s, many x̂_0 to one, so a sampler that
            thresholds retraces an inversion only at steps where s = 1 and |x̂_0| ≤ 1, i.e. where it does nothing.
            variance_type is the σ_t² of DDPM's random step; inversion is deterministic (η = 0) and adds no noise.
            clip_sample, by contrast, is applied here as in diffusers, though it too breaks invertibility wherever it
            acts.

    Other unknown keywords raise a TypeError (diffusers ignores any name, so a misspelt `clip_smaple=False` would
    silently leave clipping on), and a `trained_betas` whose length is not num_train_timesteps a ValueError (diffusers
    accepts it; a shorter one fails later with an IndexError, a longer one is silently cut to its first T steps).
    """

    _compatibles = ["DDIMScheduler", "DDPMScheduler", "GenZooDDIMScheduler", "GenZooDDPMScheduler"]
    order = 1
    ignore_for_config = ["kwargs"]
    _deprecated_kwargs = ["set_alpha_to_zero"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: Literal["leading", "trailing"] = "leading",
        rescale_betas_zero_snr: bool = False,
        **kwargs,
    ):
        unexpected = set(kwargs) - {"set_alpha_to_zero", *SAMPLER_ONLY_KEYS}
        if unexpected:
            raise TypeError(
                f"GenZooDDIMInverseScheduler got unexpected arguments {sorted(unexpected)}; besides its own it accepts "
                f"set_alpha_to_zero and ignores {', '.join(SAMPLER_ONLY_KEYS)}."
            )
        if kwargs.get("set_alpha_to_zero") is not None:
            warnings.warn("set_alpha_to_zero is deprecated; use set_alpha_to_one.", FutureWarning, stacklevel=2)
            set_alpha_to_one = kwargs["set_alpha_to_zero"]
        if trained_betas is None:
            check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        check_choice("timestep_spacing", timestep_spacing, INVERSE_TIMESTEP_SPACINGS)

        self.betas, self.alphas, self.alphas_cumprod = make_alphas_cumprod(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        # ᾱ of the step before the first, where t − T // S < 0
        self.initial_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        self.timesteps = torch.arange(num_train_timesteps, dtype=torch.int64)
        self._step_constants: list[_StepConstants] = []
        self._step_constants_num_inference_steps = None
        self._sqrt_alphas_cumprod_cache: dict = {}

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """The steps of `GenZooDDIMScheduler.set_timesteps`, in increasing order."""
        T = self.config.num_train_timesteps
        steps = spaced_timesteps(T, num_inference_steps, self.config.timestep_spacing, self.config.steps_offset)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.from_numpy(steps[::-1].copy()).to(device)
        self._build_step_constants()

    def _build_step_constants(self) -> None:
        """For every target t in [0, T): ᾱ_t, and ᾱ of the source t_s = min(t − T // S, T − 1) (stored as "prev")."""
        T = self.config.num_train_timesteps
        source_timesteps = (torch.arange(T) - T // self.num_inference_steps).clamp(max=T - 1)
        source_alphas_cumprod = torch.where(
            source_timesteps >= 0, self.alphas_cumprod[source_timesteps.clamp(min=0)], self.initial_alpha_cumprod
        )
        # the DDIM table with the roles swapped: "t" is the source t_s, "t'" the target t
        self._step_constants = _tabulate(source_alphas_cumprod, self.alphas_cumprod)
        self._step_constants_num_inference_steps = self.num_inference_steps

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
    ) -> GenZooDDIMSchedulerOutput | tuple:
        """One inversion step x_{t_s} → x_t, t_s = t − T // S.

        Args:
            model_output: the model's output at (x_{t_s}, t): ε, x_0 or v. (B, C, …)
            timestep: t, the step to go to (an entry of `timesteps`).
            sample: x_{t_s}. (B, C, …)
            return_dict: return a `GenZooDDIMSchedulerOutput` rather than a tuple (prev_sample, pred_original_sample).
        """
        if self.num_inference_steps is None:
            raise ValueError("num_inference_steps is None: call set_timesteps before step.")
        if self._step_constants_num_inference_steps != self.num_inference_steps:
            self._build_step_constants()
        t = int(timestep)
        if not 0 <= t < len(self._step_constants):
            raise ValueError(f"timestep {t} is outside [0, {len(self._step_constants) - 1}].")
        # 1. ᾱ_{t_s} (source) and ᾱ_t (target)
        constants = self._step_constants[t]

        # 2. x̂_0 and ε_θ at the source, eq. (12)'s "predicted x_0"
        pred_original_sample, pred_epsilon = _predict_original_sample_and_epsilon(
            self.config.prediction_type, model_output, sample, constants.sqrt_alpha_prod_t, constants.sqrt_beta_prod_t
        )
        if self.config.clip_sample:
            pred_original_sample = pred_original_sample.clamp(
                -self.config.clip_sample_range, self.config.clip_sample_range
            )

        # 3. x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε_θ, eq. (12) with σ = 0 towards the noisier step
        prev_sample = torch.add(
            pred_original_sample * constants.sqrt_alpha_prod_t_prev, pred_epsilon, alpha=constants.sqrt_beta_prod_t_prev
        )
        if not return_dict:
            return (prev_sample, pred_original_sample)
        return GenZooDDIMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

def _as_scheduler(scheduler_config_or_scheduler, cls):
    if isinstance(scheduler_config_or_scheduler, cls):
        return scheduler_config_or_scheduler
    if isinstance(scheduler_config_or_scheduler, ConfigMixin):
        return cls.from_config(scheduler_config_or_scheduler.config)
    return cls.from_config(dict(scheduler_config_or_scheduler))


def ddim_invert(
    model_output_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_0: torch.Tensor,
    scheduler_config_or_scheduler,
    num_inference_steps: int,
    num_fixed_point_iterations: int = 0,
) -> torch.Tensor:
    """x_T from x_0 by deterministic DDIM inversion (Song et al. 2021, §4.3) with `GenZooDDIMInverseScheduler`.

    Plain inversion (the default, diffusers' numbers) evaluates the model at the less noisy sample, ε_θ(x_{t_s}, t)
    for ε_θ(x_t, t), so `ddim_sample` reconstructs x_0 only up to a first-order error (∝ 1/S, and to how fast ε_θ
    changes with x_t). With `num_fixed_point_iterations` = k > 0 each step solves x_t = inverse_step(ε_θ(x_t, t))
    by k fixed-point iterations (as in Pan et al. 2023, AIDI), k more model calls per step: then a DDIM step from
    x_t returns x_{t_s} up to the fixed point's residual, and the reconstruction is exact up to it.

    Args:
        model_output_fn: `model_output_fn(x_t, t)` → the model output for the batch x_t (B, C, …) at the integer
            steps t, a (B,) int64 tensor.
        x_0: (B, C, …) the clean samples (or latents).
        scheduler_config_or_scheduler: a `GenZooDDIMInverseScheduler`, any scheduler whose config to use (e.g. the
            `GenZooDDIMScheduler` that will sample back), or a config dict. Use clip_sample=False to be invertible.
        num_inference_steps: S; `ddim_sample` with the same config and S maps x_T back to ≈ x_0.
        num_fixed_point_iterations: k, see above; 0 is plain DDIM inversion.

    Returns:
        x_T (B, C, …), at the noisiest step of `GenZooDDIMScheduler.set_timesteps(S)`.
    """
    scheduler = _as_scheduler(scheduler_config_or_scheduler, GenZooDDIMInverseScheduler)
    scheduler.set_timesteps(num_inference_steps, device=x_0.device)
    sample = x_0
    for t in scheduler.timesteps:
        timesteps = t.expand(sample.shape[0])
        noisier = scheduler.step(model_output_fn(sample, timesteps), t, sample).prev_sample
        for _ in range(num_fixed_point_iterations):
            noisier = scheduler.step(model_output_fn(noisier, timesteps), t, sample).prev_sample
        sample = noisier
    return sample


def ddim_sample(
    model_output_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_T: torch.Tensor,
    scheduler_config_or_scheduler,
    num_inference_steps: int,
) -> torch.Tensor:
    """x_0 from x_T by deterministic DDIM (η = 0) with `GenZooDDIMScheduler`: the inverse of `ddim_invert`.

    Arguments as for `ddim_invert`; `scheduler_config_or_scheduler` may be a `GenZooDDIMScheduler`, any scheduler
    whose config to use, or a config dict.
    """
    scheduler = _as_scheduler(scheduler_config_or_scheduler, GenZooDDIMScheduler)
    scheduler.set_timesteps(num_inference_steps, device=x_T.device)
    sample = x_T
    for t in scheduler.timesteps:
        model_output = model_output_fn(sample, t.expand(sample.shape[0]))
        sample = scheduler.step(model_output, t, sample, eta=0.0).prev_sample
    return sample
