"""Diffusion schedulers: drop-in replacements for diffusers' DDPM, DDIM and DDIM-inverse schedulers, plus the DDPM
posterior and variational bound, and DDIM inversion helpers."""

from .schedules import betas_for_alpha_bar, dynamic_threshold, make_betas, rescale_zero_terminal_snr, spaced_timesteps
from .scheduling_ddim import (
    GenZooDDIMInverseScheduler,
    GenZooDDIMScheduler,
    GenZooDDIMSchedulerOutput,
    ddim_invert,
    ddim_sample,
)
from .scheduling_ddpm import (
    GenZooDDPMScheduler,
    GenZooDDPMSchedulerOutput,
    VariationalBoundOutput,
    discretized_gaussian_log_likelihood,
    normal_kl,
)

__all__ = [
    "GenZooDDIMInverseScheduler",
    "GenZooDDIMScheduler",
    "GenZooDDIMSchedulerOutput",
    "GenZooDDPMScheduler",
    "GenZooDDPMSchedulerOutput",
    "VariationalBoundOutput",
    "betas_for_alpha_bar",
    "ddim_invert",
    "ddim_sample",
    "discretized_gaussian_log_likelihood",
    "dynamic_threshold",
    "make_betas",
    "normal_kl",
    "rescale_zero_terminal_snr",
    "spaced_timesteps",
]
