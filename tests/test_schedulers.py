"""hf_genzoo.schedulers against diffusers' DDPM / DDIM / DDIM-inverse schedulers, and against the papers.

1. Equality with diffusers: full sampling loops over a grid of configs, `timesteps`, `betas`, `add_noise`, ...
2. Config round trips (from_config both ways, save_pretrained / from_pretrained) and diffusers pipelines.
3. Beyond diffusers: the DDPM posterior and variational bound (Ho et al. 2020), DDIM inversion (Song et al. 2021).
4. Bad input.

Everything runs on tiny tensors (2, 3, 4, 4) so the file takes seconds.
"""

from __future__ import annotations

import inspect
import math

import diffusers
import numpy as np
import pytest
import torch

from hf_genzoo.schedulers import (
    GenZooDDIMInverseScheduler,
    GenZooDDIMScheduler,
    GenZooDDPMScheduler,
    ddim_invert,
    ddim_sample,
    discretized_gaussian_log_likelihood,
)

SHAPE = (2, 3, 4, 4)  # (B, C, H, W)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: a second intra-op thread only adds contention (a tiny UNet forward goes from ~3 ms to ~0.6 s on
    busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RTOL, ATOL = 1e-5, 1e-5
PAIRS = {  # ours → diffusers'
    GenZooDDPMScheduler: diffusers.DDPMScheduler,
    GenZooDDIMScheduler: diffusers.DDIMScheduler,
    GenZooDDIMInverseScheduler: diffusers.DDIMInverseScheduler,
}
DIFFUSERS_DDIM_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
ALL_BETA_SCHEDULES = DIFFUSERS_DDIM_BETA_SCHEDULES + ("sigmoid", "laplace")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SPACINGS = ("leading", "trailing", "linspace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a network: a smooth function of (x_t, t)."""
    return 0.8 * torch.sin(1.3 * x + 0.002 * float(t)) + 0.3 * x


def fake_model_with_variance(variance: bool):
    """Prediction and variance channels (B, 2C, …): v ∈ [−1, 1] ("learned_range") or σ² > 0 ("learned")."""

    def model(x, t):
        extra = torch.tanh(0.7 * x - 0.001 * float(t))
        return torch.cat([fake_model(x, t), torch.exp(-5.0 + extra) if variance else extra], dim=1)

    return model


def trajectory(scheduler, model, seed, set_timesteps_kwargs, step_kwargs=None, dtype=torch.float64):
    """Run a full sampling loop; return every prev_sample and pred_original_sample, (steps, 2, B, C, H, W).

    float64 by default: both libraries then use the same float32 per-step constants and differ only by the rounding
    of float64 tensor ops, so a mismatch is a real difference, not float32 cancellation in x̂_0 = (x_t − √(1−ᾱ)ε)/√ᾱ.
    """
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=generator, dtype=dtype)
    scheduler.set_timesteps(**set_timesteps_kwargs)
    outputs = []
    for t in scheduler.timesteps:
        kwargs = dict(step_kwargs or {})
        if not isinstance(scheduler, (GenZooDDIMInverseScheduler, diffusers.DDIMInverseScheduler)):
            kwargs["generator"] = generator
        out = scheduler.step(model(sample, t), t, sample, **kwargs)
        outputs.append(torch.stack([out.prev_sample, out.pred_original_sample]))
        sample = out.prev_sample
    return torch.stack(outputs)


def assert_same_run(
    ours_cls, config, seed, set_timesteps_kwargs, step_kwargs=None, model=fake_model, their_model=None,
    dtype=torch.float64,
):
    ours, theirs = ours_cls(**config), PAIRS[ours_cls](**config)
    expected = trajectory(theirs, their_model or model, seed, set_timesteps_kwargs, step_kwargs, dtype)
    actual = trajectory(ours, model, seed, set_timesteps_kwargs, step_kwargs, dtype)
    torch.testing.assert_close(ours.timesteps, theirs.timesteps)
    assert_close_per_step(actual, expected, f"{config} {step_kwargs}")


def assert_close_per_step(actual: torch.Tensor, expected: torch.Tensor, context: str = "") -> None:
    """rtol 1e-5, and atol 1e-5 relative to the largest value of each output at each step (in float32, x̂_0 =
    (x_t − √(1−ᾱ)ε)/√ᾱ at high noise is a difference of terms ~1/√ᾱ; its rounding is relative to their size)."""
    assert actual.shape == expected.shape
    for index in np.ndindex(*expected.shape[:2]):  # (step, prev_sample | pred_original_sample)
        scale = max(1.0, expected[index].abs().max().item())
        torch.testing.assert_close(
            actual[index], expected[index], rtol=RTOL, atol=ATOL * scale, msg=lambda m: f"{context} at {index}\n{m}"
        )


SAMPLE_PROCESSING = {  # x̂_0 clipping / thresholding
    "none": dict(clip_sample=False),
    "clip": dict(clip_sample=True, clip_sample_range=1.5),
    "threshold": dict(thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0),
}


# ======================================================================================================================
# 1. Equality with diffusers
# ======================================================================================================================
@pytest.mark.parametrize("timestep_spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("beta_schedule", ALL_BETA_SCHEDULES)
def test_ddpm_sampling_matches_diffusers(beta_schedule, prediction_type, timestep_spacing):
    base = dict(beta_schedule=beta_schedule, prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    offsets = (0, 1) if timestep_spacing == "leading" else (0,)
    for steps_offset in offsets:
        # every variance type diffusers gets right, x̂_0 clipped
        for variance_type in ("fixed_small", "fixed_small_log", "fixed_large", "learned", "learned_range"):
            model = fake_model_with_variance(variance_type == "learned") if variance_type.startswith("learned") else fake_model
            config = dict(base, variance_type=variance_type, steps_offset=steps_offset, **SAMPLE_PROCESSING["clip"])
            assert_same_run(GenZooDDPMScheduler, config, 0, dict(num_inference_steps=10), model=model)
        # no clipping, and dynamic thresholding
        for processing in ("none", "threshold"):
            config = dict(base, steps_offset=steps_offset, **SAMPLE_PROCESSING[processing])
            assert_same_run(GenZooDDPMScheduler, config, 1, dict(num_inference_steps=10))


def test_ddpm_departures_from_diffusers():
    """Where diffusers 0.42 cannot be right, ours follows the papers; each difference is pinned down exactly."""
    # "learned": the extra channels are σ², read as diffusers reads them: the same numbers.
    assert_same_run(
        GenZooDDPMScheduler, dict(variance_type="learned"), 0, dict(num_inference_steps=10),
        model=fake_model_with_variance(variance=True),
    )
    # "fixed_large_log": σ² = β_t, the same numbers as diffusers' "fixed_large"; diffusers itself returns NaN
    # (it takes the square root of log β_t < 0).
    five_steps = dict(num_inference_steps=5)
    expected = trajectory(diffusers.DDPMScheduler(variance_type="fixed_large"), fake_model, 0, five_steps)
    actual = trajectory(GenZooDDPMScheduler(variance_type="fixed_large_log"), fake_model, 0, five_steps)
    assert_close_per_step(actual, expected)
    theirs = trajectory(diffusers.DDPMScheduler(variance_type="fixed_large_log"), fake_model, 0, five_steps)
    assert torch.isnan(theirs).any() or torch.allclose(theirs, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("ours_cls", list(PAIRS))
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_float32_sampling_matches_diffusers(ours_cls, prediction_type):
    """The grid runs in float64; float32, the everyday case, agrees too (atol relative to each step's largest value)."""
    config = dict(prediction_type=prediction_type, clip_sample=False, timestep_spacing="trailing")
    if ours_cls is GenZooDDIMInverseScheduler and prediction_type == "sample":
        config["set_alpha_to_one"] = False
    step_kwargs = dict(eta=1.0) if ours_cls is GenZooDDIMScheduler else None
    assert_same_run(ours_cls, config, 7, dict(num_inference_steps=10), step_kwargs, dtype=torch.float32)


@pytest.mark.parametrize(
    "num_train_timesteps,timesteps",
    [(1000, [999, 800, 600, 400, 200, 0]), (1000, [950, 700, 321, 100, 5, 1]), (100, [99, 50, 10, 3, 0])],
)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_custom_timesteps_match_diffusers(num_train_timesteps, timesteps, variance_type):
    model = fake_model_with_variance(False) if variance_type == "learned_range" else fake_model
    config = dict(num_train_timesteps=num_train_timesteps, variance_type=variance_type, prediction_type="v_prediction")
    assert_same_run(GenZooDDPMScheduler, config, 3, dict(timesteps=timesteps), model=model)


def test_ddpm_without_set_timesteps_and_variance_noise_match_diffusers():
    """Before set_timesteps DDPM steps through t−1; explicit variance_noise is the noise the generator would draw."""
    config = dict(num_train_timesteps=20, beta_end=0.2)
    ours, theirs = GenZooDDPMScheduler(**config), diffusers.DDPMScheduler(**config)
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in (19, 7, 0):
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t))
        expected = theirs.step(fake_model(sample, t), t, sample, generator=torch.Generator().manual_seed(t))
        actual = ours.step(fake_model(sample, t), t, sample, variance_noise=noise)
        torch.testing.assert_close(actual.prev_sample, expected.prev_sample, rtol=RTOL, atol=ATOL)
        assert ours.previous_timestep(t) == theirs.previous_timestep(t)


GET_VARIANCE_TIMESTEPS = {  # set_timesteps kwargs (None: not called, t' = t − 1) → the steps t to ask about
    "none": (None, (99, 98, 50, 1, 0)),
    "leading": (dict(num_inference_steps=7), None),
    "trailing": (dict(num_inference_steps=9), None),
    "custom": (dict(timesteps=[90, 41, 40, 3, 0]), None),
}


@pytest.mark.parametrize("timesteps", list(GET_VARIANCE_TIMESTEPS))
@pytest.mark.parametrize("config_variance_type", VARIANCE_TYPES)
def test_ddpm_get_variance_matches_diffusers(config_variance_type, timesteps):
    """`_get_variance(t, predicted_variance, variance_type)`, which code written against diffusers calls: bit for bit
    the same, for every variance type from the config or the argument, t given as int or tensor (diffusers returns
    a variance, a standard deviation or a log variance depending on the type; see its docstring)."""
    set_timesteps_kwargs, steps = GET_VARIANCE_TIMESTEPS[timesteps]
    spacing = "trailing" if timesteps == "trailing" else "leading"
    config = dict(
        num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", variance_type=config_variance_type,
        timestep_spacing=spacing, steps_offset=1 if timesteps == "leading" else 0,
    )
    ours, theirs = GenZooDDPMScheduler(**config), diffusers.DDPMScheduler(**config)
    if set_timesteps_kwargs is not None:
        ours.set_timesteps(**set_timesteps_kwargs)
        theirs.set_timesteps(**set_timesteps_kwargs)
        steps = ours.timesteps.tolist()
    generator = torch.Generator().manual_seed(0)
    predicted = {  # the model's variance channels: σ² > 0 ("learned"), v ∈ [−1, 1] ("learned_range")
        "learned": torch.rand(SHAPE, generator=generator) * 0.01,
        "learned_range": torch.rand(SHAPE, generator=generator) * 2 - 1,
    }
    for t in steps:
        for time in (t, torch.tensor(t)):
            for variance_type in (None,) + VARIANCE_TYPES:
                kind = variance_type or config_variance_type
                kwargs = dict(predicted_variance=predicted.get(kind), variance_type=variance_type)
                expected = theirs._get_variance(time, **kwargs)
                actual = ours._get_variance(time, **kwargs)
                assert actual.dtype == expected.dtype and torch.equal(actual, expected), (t, kind, actual, expected)


@pytest.mark.parametrize("timestep_spacing", SPACINGS)
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("beta_schedule", DIFFUSERS_DDIM_BETA_SCHEDULES)
def test_ddim_sampling_matches_diffusers(beta_schedule, prediction_type, timestep_spacing):
    base = dict(beta_schedule=beta_schedule, prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    for eta in (0.0, 1.0):
        for processing in ("none", "clip", "threshold"):
            for use_clipped_model_output in (False, True) if processing != "none" else (False,):
                config = dict(base, **SAMPLE_PROCESSING[processing])
                step_kwargs = dict(eta=eta, use_clipped_model_output=use_clipped_model_output)
                assert_same_run(GenZooDDIMScheduler, config, 2, dict(num_inference_steps=10), step_kwargs)
    for steps_offset, set_alpha_to_one in ((1, False), (0, False), (1, True)):
        config = dict(base, steps_offset=steps_offset, set_alpha_to_one=set_alpha_to_one)
        assert_same_run(GenZooDDIMScheduler, config, 4, dict(num_inference_steps=7), dict(eta=0.5))


def test_ddim_variance_noise_matches_diffusers():
    ours, theirs = GenZooDDIMScheduler(), diffusers.DDIMScheduler()
    ours.set_timesteps(5)
    theirs.set_timesteps(5)
    sample = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    for t in ours.timesteps:
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(int(t)))
        expected = theirs.step(fake_model(sample, t), t, sample, eta=0.7, variance_noise=noise).prev_sample
        actual = ours.step(fake_model(sample, t), t, sample, eta=0.7, variance_noise=noise).prev_sample
        torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)
        sample = expected
    with pytest.raises(ValueError, match="generator or variance_noise"):
        ours.step(sample, ours.timesteps[0], sample, eta=1.0, generator=torch.Generator(), variance_noise=sample)


@pytest.mark.parametrize("set_alpha_to_one", [True, False])
def test_ddim_get_variance_matches_diffusers(set_alpha_to_one):
    """DDIM's `_get_variance(timestep, prev_timestep)` (a different signature from DDPM's): σ_t(η=1)² of eq. (16),
    bit for bit, for any pair of steps, int or tensor, ᾱ_{t'} = final_alpha_cumprod for t' < 0."""
    config = dict(num_train_timesteps=100, beta_schedule="scaled_linear", set_alpha_to_one=set_alpha_to_one)
    ours, theirs = GenZooDDIMScheduler(**config), diffusers.DDIMScheduler(**config)
    pairs = [(99, 89), (50, 40), (50, 49), (10, 0), (5, -5), (0, -1), (0, -10)]
    for num_inference_steps in (None, 10):
        if num_inference_steps is not None:  # the helper does not depend on it; check that it stays so
            ours.set_timesteps(num_inference_steps)
            theirs.set_timesteps(num_inference_steps)
        for t, prev_t in pairs:
            for args in ((t, prev_t), (torch.tensor(t), torch.tensor(prev_t))):
                expected, actual = theirs._get_variance(*args), ours._get_variance(*args)
                assert actual.dtype == expected.dtype and torch.equal(actual, expected), (t, prev_t)
    # and it is eq. (16) with η = 1: (1−ᾱ_{t'})/(1−ᾱ_t) (1 − ᾱ_t/ᾱ_{t'})
    a = ours.alphas_cumprod.double()
    a_prev = 1.0 if set_alpha_to_one else a[0]
    for t, prev_t in pairs:
        alpha_prod_t_prev = a[prev_t] if prev_t >= 0 else a_prev
        sigma_squared = (1 - alpha_prod_t_prev) / (1 - a[t]) * (1 - a[t] / alpha_prod_t_prev)
        torch.testing.assert_close(ours._get_variance(t, prev_t).double(), torch.as_tensor(sigma_squared),
                                   rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("timestep_spacing", ("leading", "trailing"))
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("beta_schedule", DIFFUSERS_DDIM_BETA_SCHEDULES)
def test_ddim_inverse_matches_diffusers(beta_schedule, prediction_type, timestep_spacing):
    base = dict(beta_schedule=beta_schedule, prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    # with "sample" prediction and ᾱ = 1 before the first step, ε = (x − x̂_0)/√(1 − 1) is undefined (NaN in both)
    alpha_to_one = (False,) if prediction_type == "sample" else (True, False)
    for clip_sample in (False, True):
        for steps_offset, set_alpha_to_one in ((0, alpha_to_one[0]), (1, alpha_to_one[-1])):
            config = dict(base, clip_sample=clip_sample, steps_offset=steps_offset, set_alpha_to_one=set_alpha_to_one)
            assert_same_run(GenZooDDIMInverseScheduler, config, 5, dict(num_inference_steps=10))


SAMPLER_ONLY = dict(  # keys of DDIM's / DDPM's configs that the inverse scheduler accepts and ignores
    thresholding=True, dynamic_thresholding_ratio=0.9, sample_max_value=2.0, variance_type="fixed_large"
)


@pytest.mark.parametrize("prediction_type", ("epsilon", "v_prediction"))
@pytest.mark.parametrize("clip_sample", (False, True))
def test_ddim_inverse_accepts_sampler_keys_as_diffusers_does(clip_sample, prediction_type):
    """DDIM-only keys given as keywords: accepted, not stored, and diffusers' numbers, which are those without them;
    clip_sample_range (one of the inverse scheduler's own keys) acts as in diffusers."""
    base = dict(clip_sample=clip_sample, clip_sample_range=1.5, prediction_type=prediction_type)
    config = dict(base, **SAMPLER_ONLY)
    assert_same_run(GenZooDDIMInverseScheduler, config, 8, dict(num_inference_steps=10))
    ours, theirs = GenZooDDIMInverseScheduler(**config), diffusers.DDIMInverseScheduler(**config)
    assert public_config(ours) == public_config(theirs) == public_config(GenZooDDIMInverseScheduler(**base))
    without = trajectory(GenZooDDIMInverseScheduler(**base), fake_model, 8, dict(num_inference_steps=10))
    assert torch.equal(trajectory(ours, fake_model, 8, dict(num_inference_steps=10)), without)


@pytest.mark.parametrize("sampler_cls", [diffusers.DDIMScheduler, diffusers.DDPMScheduler, GenZooDDIMScheduler,
                                         GenZooDDPMScheduler])
def test_ddim_inverse_from_a_sampler_config_matches_diffusers(sampler_cls):
    """A sampler's config, every key set away from its default, through from_config and as keywords (`**config`):
    the same config and numbers as diffusers' DDIMInverseScheduler gets from it."""
    keys = set(inspect.signature(sampler_cls.__init__).parameters) - {"self"}
    assert set(SAMPLER_ONLY) | set(inspect.signature(diffusers.DDIMInverseScheduler.__init__).parameters) >= keys
    sampler_config = dict(
        num_train_timesteps=200, beta_start=2e-4, beta_end=0.03, beta_schedule="scaled_linear", clip_sample=True,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction", clip_sample_range=1.5,
        timestep_spacing="trailing", rescale_betas_zero_snr=False, **SAMPLER_ONLY,
    )
    sampler = sampler_cls(**{k: v for k, v in sampler_config.items() if k in keys})
    for build in ("from_config", "keywords"):
        if build == "from_config":
            ours = GenZooDDIMInverseScheduler.from_config(sampler.config)
            theirs = diffusers.DDIMInverseScheduler.from_config(sampler.config)
        else:
            ours = GenZooDDIMInverseScheduler(**public_config(sampler))
            theirs = diffusers.DDIMInverseScheduler(**public_config(sampler))
        assert public_config(ours) == public_config(theirs), build
        expected = trajectory(theirs, fake_model, 9, dict(num_inference_steps=8))
        assert_close_per_step(trajectory(ours, fake_model, 9, dict(num_inference_steps=8)), expected, build)


@pytest.mark.parametrize("prediction_type,clip_sample", [("v_prediction", False), ("sample", False), ("epsilon", True)])
@pytest.mark.parametrize("ours_cls", list(PAIRS))
def test_zero_terminal_snr_matches_diffusers(ours_cls, prediction_type, clip_sample):
    config = dict(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    config.update(prediction_type=prediction_type, clip_sample=clip_sample)
    if ours_cls is GenZooDDIMInverseScheduler and prediction_type == "sample":
        config["set_alpha_to_one"] = False  # see test_ddim_inverse_matches_diffusers
    assert_same_run(ours_cls, config, 6, dict(num_inference_steps=10))
    if ours_cls is GenZooDDIMScheduler:
        assert_same_run(ours_cls, config, 6, dict(num_inference_steps=10), dict(eta=0.5))
    assert ours_cls(**config).alphas_cumprod[-1] == 0


def test_ddim_zero_terminal_snr_with_eta_1_departs_from_diffusers():
    """At ᾱ_t = 0, σ_t(η=1)² = 1 − ᾱ_{t'} exactly, so the direction √(1 − ᾱ_{t'} − σ_t²) is 0; diffusers computes σ_t²
    as (√·)² in float32, which can exceed 1 − ᾱ_{t'} by an ulp, and returns NaN. Ours floors the root at 0."""
    config = dict(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction")
    ours = trajectory(GenZooDDIMScheduler(**config), fake_model, 6, dict(num_inference_steps=10), dict(eta=1.0))
    theirs = trajectory(diffusers.DDIMScheduler(**config), fake_model, 6, dict(num_inference_steps=10), dict(eta=1.0))
    assert torch.isfinite(ours).all()
    if not torch.isnan(theirs).any():
        assert_close_per_step(ours, theirs)


@pytest.mark.parametrize(
    "ours_cls,timestep_spacing",
    [(cls, spacing) for cls in PAIRS for spacing in SPACINGS if cls is not GenZooDDIMInverseScheduler]
    + [(GenZooDDIMInverseScheduler, "leading"), (GenZooDDIMInverseScheduler, "trailing")],  # no linspace in diffusers
)
def test_timesteps_match_diffusers(ours_cls, timestep_spacing):
    """Every S for T = 100 and a few for T = 1000. diffusers' "trailing" sometimes returns S + 1 steps ending in −1
    (floating-point overshoot of `np.arange`): there ours are diffusers' first S (last S for the inverse)."""
    overshoots = 0
    for T, all_steps in ((100, range(1, 101)), (1000, (1, 3, 7, 10, 29, 50, 999, 1000))):
        for steps_offset in (0, 1) if timestep_spacing == "leading" else (0,):
            config = dict(num_train_timesteps=T, timestep_spacing=timestep_spacing, steps_offset=steps_offset)
            ours, theirs = ours_cls(**config), PAIRS[ours_cls](**config)
            for S in all_steps:
                theirs.set_timesteps(S)
                if steps_offset and S * (T // S) - (T // S) + steps_offset >= T:  # a step past T − 1
                    with pytest.raises(ValueError, match=str(T)):
                        ours.set_timesteps(S)
                    continue
                ours.set_timesteps(S)
                assert len(ours.timesteps) == S
                expected = theirs.timesteps
                if len(expected) == S + 1:
                    assert timestep_spacing == "trailing" and -1 in expected.tolist()
                    overshoots += 1
                    expected = expected[1:] if ours_cls is GenZooDDIMInverseScheduler else expected[:-1]
                assert torch.equal(ours.timesteps, expected), (T, S, steps_offset)
    assert overshoots == 0 or timestep_spacing == "trailing"


@pytest.mark.parametrize(
    "config",
    [dict(beta_schedule=s) for s in ALL_BETA_SCHEDULES]
    + [
        dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=100),
        dict(trained_betas=np.linspace(1e-3, 0.1, 50).tolist(), num_train_timesteps=50),
        dict(beta_schedule="linear", rescale_betas_zero_snr=True),
        dict(beta_schedule="squaredcos_cap_v2", rescale_betas_zero_snr=True, num_train_timesteps=100),
    ],
)
def test_betas_match_diffusers_bitwise(config):
    ours = GenZooDDPMScheduler(**config)
    theirs = diffusers.DDPMScheduler(**config)  # the only diffusers class with every beta schedule
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert torch.equal(getattr(ours, name), getattr(theirs, name)), name
    for ours_cls in (GenZooDDIMScheduler, GenZooDDIMInverseScheduler):
        assert torch.equal(ours_cls(**config).alphas_cumprod, theirs.alphas_cumprod)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ours_cls", [GenZooDDPMScheduler, GenZooDDIMScheduler])
def test_add_noise_and_velocity_match_diffusers(ours_cls, dtype):
    config = dict(beta_schedule="scaled_linear", num_train_timesteps=500)
    ours, theirs = ours_cls(**config), PAIRS[ours_cls](**config)
    generator = torch.Generator().manual_seed(0)
    x_0 = torch.randn(SHAPE, generator=generator, dtype=dtype)
    noise = torch.randn(SHAPE, generator=generator, dtype=dtype)
    for timesteps in (torch.tensor([0, 499]), torch.tensor([250, 3]), torch.tensor(17)):
        assert torch.equal(ours.add_noise(x_0, noise, timesteps), theirs.add_noise(x_0, noise, timesteps))
        assert torch.equal(ours.get_velocity(x_0, noise, timesteps), theirs.get_velocity(x_0, noise, timesteps))


@pytest.mark.parametrize("ours_cls", list(PAIRS))
def test_scheduler_interface(ours_cls):
    ours = ours_cls(num_train_timesteps=123)
    assert len(ours) == 123 and ours.order == 1 and ours.init_noise_sigma == 1.0
    sample = torch.randn(SHAPE)
    assert ours.scale_model_input(sample, 5) is sample
    if ours_cls is not GenZooDDIMInverseScheduler:
        compatible = {c.__name__ for c in ours.compatibles}
        assert {"DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "PNDMScheduler"} <= compatible
    if ours_cls is not GenZooDDPMScheduler:
        ours.set_timesteps(10)
    prev_sample, pred_original_sample = ours.step(fake_model(sample, 7), 7, sample, return_dict=False)
    assert prev_sample.shape == pred_original_sample.shape == sample.shape


# ======================================================================================================================
# 2. Configs and pipelines
# ======================================================================================================================
ROUND_TRIP_CONFIGS = {
    GenZooDDPMScheduler: dict(
        num_train_timesteps=500, beta_schedule="scaled_linear", variance_type="fixed_large", clip_sample=False,
        prediction_type="v_prediction", thresholding=True, timestep_spacing="trailing", rescale_betas_zero_snr=True,
    ),
    GenZooDDIMScheduler: dict(
        num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", set_alpha_to_one=False, steps_offset=1,
        prediction_type="sample", clip_sample_range=2.0, timestep_spacing="leading",
    ),
    GenZooDDIMInverseScheduler: dict(
        num_train_timesteps=500, beta_end=0.03, clip_sample=False, set_alpha_to_one=False,
        prediction_type="epsilon", timestep_spacing="trailing",
    ),
}


def public_config(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


@pytest.mark.parametrize("ours_cls", list(PAIRS))
def test_from_config_round_trips(ours_cls):
    theirs = PAIRS[ours_cls](**ROUND_TRIP_CONFIGS[ours_cls])
    ours = ours_cls.from_config(theirs.config)
    back = PAIRS[ours_cls].from_config(ours.config)
    assert public_config(ours) == public_config(theirs) == public_config(back)
    assert torch.equal(ours.alphas_cumprod, theirs.alphas_cumprod)
    assert torch.equal(back.alphas_cumprod, theirs.alphas_cumprod)
    # the same numbers through a loop: ours built from their config vs theirs built from ours
    expected = trajectory(back, fake_model, 0, dict(num_inference_steps=6))
    assert_close_per_step(trajectory(ours, fake_model, 0, dict(num_inference_steps=6)), expected)


def test_conversions_between_our_schedulers():
    ddpm = GenZooDDPMScheduler(**ROUND_TRIP_CONFIGS[GenZooDDPMScheduler])
    ddim = GenZooDDIMScheduler.from_config(ddpm.config)
    inverse = GenZooDDIMInverseScheduler.from_config(ddim.config)
    assert torch.equal(ddim.alphas_cumprod, ddpm.alphas_cumprod)
    assert torch.equal(inverse.alphas_cumprod, ddpm.alphas_cumprod)
    assert ddim.config.prediction_type == inverse.config.prediction_type == "v_prediction"


@pytest.mark.parametrize("ours_cls", list(PAIRS))
def test_save_and_load_pretrained(ours_cls, tmp_path):
    ours = ours_cls(**ROUND_TRIP_CONFIGS[ours_cls])
    ours.save_pretrained(tmp_path)
    loaded = ours_cls.from_pretrained(tmp_path)
    assert public_config(loaded) == public_config(ours)
    assert torch.equal(loaded.alphas_cumprod, ours.alphas_cumprod)
    theirs = PAIRS[ours_cls].from_pretrained(tmp_path)  # diffusers reads our saved config
    assert public_config(theirs) == public_config(ours)


def tiny_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        block_out_channels=(4, 8), norm_num_groups=4, sample_size=8, in_channels=3, out_channels=3,
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def test_ddpm_pipeline_gives_the_same_images(tmp_path):
    unet = tiny_unet()
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np")
    ours = diffusers.DDPMPipeline(unet=unet, scheduler=GenZooDDPMScheduler.from_config(pipe.scheduler.config))
    ours.set_progress_bar_config(disable=True)
    actual = ours(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np")
    assert isinstance(ours.scheduler, GenZooDDPMScheduler)
    np.testing.assert_allclose(actual.images, expected.images, rtol=1e-5, atol=1e-5)
    # a pipeline saved with our scheduler loads it back
    ours.save_pretrained(tmp_path)
    loaded = diffusers.DDPMPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, GenZooDDPMScheduler)
    again = loaded(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=4, output_type="np")
    np.testing.assert_allclose(again.images, expected.images, rtol=1e-5, atol=1e-5)


def test_ddim_pipeline_gives_the_same_images():
    unet = tiny_unet()
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(num_train_timesteps=100))
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(batch_size=2, num_inference_steps=4, eta=0.5, use_clipped_model_output=True, output_type="np")
    expected = pipe(generator=torch.Generator().manual_seed(0), **kwargs)
    pipe.scheduler = GenZooDDIMScheduler.from_config(pipe.scheduler.config)  # DDIMPipeline.__init__ converts to DDIM
    assert isinstance(pipe.scheduler, GenZooDDIMScheduler)
    actual = pipe(generator=torch.Generator().manual_seed(0), **kwargs)
    np.testing.assert_allclose(actual.images, expected.images, rtol=1e-5, atol=1e-5)


# ======================================================================================================================
# 3. Beyond diffusers: posterior, variational bound, DDIM inversion
# ======================================================================================================================
BOUND_CONFIG = dict(num_train_timesteps=40, beta_start=1e-4, beta_end=0.3, clip_sample=False)


def paper_constants(scheduler):
    """β_t, ᾱ_t, ᾱ_{t−1}, β̃_t (float64, (T,)) from Ho et al.'s definitions, for checking."""
    alphas_cumprod = scheduler.alphas_cumprod.double()
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    betas = 1 - alphas_cumprod / alphas_cumprod_prev
    posterior_variance = (1 - alphas_cumprod_prev) / (1 - alphas_cumprod) * betas
    return betas, alphas_cumprod, alphas_cumprod_prev, posterior_variance


def grid_image(seed=0, batch_size=2):
    """Data on the 256-level grid of [−1, 1], including both end bins."""
    levels = torch.randint(0, 256, SHAPE[1:], generator=torch.Generator().manual_seed(seed))
    levels[0, 0, :2] = torch.tensor([0, 255])
    return (levels.double() * 2 / 255 - 1).expand(batch_size, *SHAPE[1:]).clone()


def perfect_model(scheduler, x_0, log_variance=None):
    """Knows x_0: returns the exact ε / x_0 / v of x_t (and, for learned variances, channels that give β̃_t)."""
    _, alphas_cumprod, _, posterior_variance = paper_constants(scheduler)
    log_posterior_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]]).log()

    def model(x_t, t):
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        epsilon = (x_t - a.sqrt() * x_0) / (1 - a).sqrt()
        output = {"epsilon": epsilon, "sample": x_0, "v_prediction": a.sqrt() * epsilon - (1 - a).sqrt() * x_0}
        output = output[scheduler.config.prediction_type]
        if log_variance == "learned":
            return torch.cat([output, log_posterior_variance[t].exp().view(-1, 1, 1, 1).expand_as(output)], dim=1)
        if log_variance == "learned_range":  # v = −1: all weight on log β̃_t
            return torch.cat([output, -torch.ones_like(output)], dim=1)
        return output

    return model


def analytic_bound(scheduler, x_0, variance_type):
    """L for a model that predicts x_0 exactly: the means agree, only variances differ (Ho et al. eq. 5, 13)."""
    betas, alphas_cumprod, _, posterior_variance = paper_constants(scheduler)
    dims = x_0[0].numel()
    a_T = alphas_cumprod[-1]
    prior = 0.5 * (a_T * x_0**2 + (1 - a_T) - 1 - torch.log(1 - a_T)).flatten(1).sum(1)
    if variance_type == "fixed_large":
        model_variance = betas.clone()
        model_variance[0] = posterior_variance[1]  # Ho et al.'s code: σ_0² = β̃_1
    else:
        model_variance = posterior_variance.clone()
        model_variance[0] = posterior_variance[1]
    ratio = posterior_variance[1:] / model_variance[1:]
    kl = (dims * 0.5 * (ratio - 1 - ratio.log())).sum()
    # the decoder's mean is x_0: each value's bin has mass Φ(h/σ) − Φ(−h/σ), or Φ(h/σ) for the two end bins
    h = 1 / 255 / math.sqrt(model_variance[0])
    cdf = 0.5 * (1 + math.erf(h / math.sqrt(2)))
    end_bin = (x_0.abs() > 0.999).flatten(1).sum(1).double()
    decoder = -(end_bin * math.log(cdf) + (dims - end_bin) * math.log(2 * cdf - 1))
    return prior + kl + decoder


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large", "learned", "learned_range"])
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_bound_of_a_perfect_model_is_analytic(prediction_type, variance_type):
    scheduler = GenZooDDPMScheduler(**BOUND_CONFIG, prediction_type=prediction_type, variance_type=variance_type)
    x_0 = grid_image()
    learned = variance_type if variance_type.startswith("learned") else None
    out = scheduler.variational_bound(perfect_model(scheduler, x_0, learned), x_0, torch.Generator().manual_seed(0))
    expected = analytic_bound(scheduler, x_0, "fixed_large" if variance_type == "fixed_large" else "fixed_small")
    torch.testing.assert_close(out.nats, expected, rtol=1e-7, atol=1e-6)
    torch.testing.assert_close(out.bits_per_dim, expected / (x_0[0].numel() * math.log(2)), rtol=1e-7, atol=1e-9)
    assert out.kl_nats.shape == (2, 39) and out.timesteps.tolist() == list(range(1, 40))
    if variance_type != "fixed_large":
        assert out.kl_nats.abs().max() < 1e-6


def smooth_x0_model(x_t, t):
    """Some fixed, imperfect x_0-predictor."""
    return torch.tanh(0.6 * x_t + 0.02 * t.view(-1, 1, 1, 1).to(x_t.dtype))


def as_prediction(scheduler, x0_model, extra=None):
    """The same x̂_0 predictions written as the scheduler's prediction_type (ε, x_0 or v)."""
    alphas_cumprod = scheduler.alphas_cumprod.double()

    def model(x_t, t):
        x_0 = x0_model(x_t, t)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        epsilon = (x_t - a.sqrt() * x_0) / (1 - a).sqrt()
        output = {"epsilon": epsilon, "sample": x_0, "v_prediction": a.sqrt() * epsilon - (1 - a).sqrt() * x_0}
        output = output[scheduler.config.prediction_type]
        return output if extra is None else torch.cat([output, extra(x_t)], dim=1)

    return model


@pytest.mark.parametrize(
    "variance_type,extra",
    [("fixed_small", None), ("fixed_large", None), ("learned", lambda x: torch.exp(-3 + 0.5 * torch.sin(x))),
     ("learned_range", lambda x: torch.tanh(x))],
)
def test_bound_is_the_same_for_every_parameterisation(variance_type, extra):
    x_0 = grid_image(1)
    bounds = []
    for prediction_type in PREDICTION_TYPES:
        scheduler = GenZooDDPMScheduler(**BOUND_CONFIG, prediction_type=prediction_type, variance_type=variance_type)
        model = as_prediction(scheduler, smooth_x0_model, extra)
        out = scheduler.variational_bound(model, x_0, torch.Generator().manual_seed(3))
        assert (out.kl_nats >= -1e-9).all() and (out.prior_nats >= 0).all() and (out.decoder_nats >= 0).all()
        bounds.append(out.nats)
    torch.testing.assert_close(bounds[1], bounds[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(bounds[2], bounds[0], rtol=1e-9, atol=1e-9)


def test_bound_of_a_random_model_is_worse_than_the_perfect_one():
    scheduler = GenZooDDPMScheduler(**BOUND_CONFIG)
    x_0 = grid_image(2)
    perfect = scheduler.variational_bound(perfect_model(scheduler, x_0), x_0, torch.Generator().manual_seed(0))
    random = scheduler.variational_bound(lambda x, t: torch.sin(3 * x + t.view(-1, 1, 1, 1)), x_0)
    assert (random.bits_per_dim > perfect.bits_per_dim + 1).all()
    assert (random.kl_nats >= 0).all()


def test_bound_from_sampled_timesteps_is_unbiased():
    """With deterministic terms (exact means, σ² = β), the subset estimate averages to the exact sum."""
    scheduler = GenZooDDPMScheduler(**BOUND_CONFIG, variance_type="fixed_large")
    x_0 = grid_image(3, batch_size=1)
    model = perfect_model(scheduler, x_0)
    exact = scheduler.variational_bound(model, x_0).nats
    generator = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(100):
        out = scheduler.variational_bound(model, x_0, generator, num_sampled_timesteps=4)
        assert out.kl_nats.shape == (1, 4) and len(set(out.timesteps.tolist())) == 4
        assert 1 <= out.timesteps.min() and out.timesteps.max() <= 39
        scaled = out.prior_nats + out.decoder_nats + out.kl_nats.sum(1) * 39 / 4
        torch.testing.assert_close(out.nats, scaled)
        estimates.append(out.nats)
    estimates = torch.cat(estimates)
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert (estimates.mean() - exact).abs() < 4 * standard_error + 1e-9
    full = scheduler.variational_bound(model, x_0, generator, num_sampled_timesteps=39)
    torch.testing.assert_close(full.nats, exact)


def test_discretized_decoder_is_a_distribution_over_256_bins():
    values = torch.arange(256, dtype=torch.float64) * 2 / 255 - 1
    for mean, log_variance in ((0.3, math.log(1e-2)), (-0.99, math.log(1e-4)), (0.0, math.log(4.0))):
        log_p = discretized_gaussian_log_likelihood(values, torch.full_like(values, mean), log_variance)
        torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0, dtype=torch.float64))


def test_posterior_matches_equations():
    scheduler = GenZooDDPMScheduler(**BOUND_CONFIG)
    betas, alphas_cumprod, alphas_cumprod_prev, posterior_variance = paper_constants(scheduler)
    generator = torch.Generator().manual_seed(0)
    x_0 = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    x_t = torch.randn(SHAPE, generator=generator, dtype=torch.float64)
    t = torch.tensor([0, 25])
    mean, variance = scheduler.posterior(x_0, x_t, t)
    # μ̃_t = √ᾱ_{t−1} β_t/(1−ᾱ_t) x_0 + √α_t (1−ᾱ_{t−1})/(1−ᾱ_t) x_t,  β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t
    b, a, a_prev = betas[25], alphas_cumprod[25], alphas_cumprod_prev[25]
    expected = a_prev.sqrt() * b / (1 - a) * x_0[1] + (1 - b).sqrt() * (1 - a_prev) / (1 - a) * x_t[1]
    torch.testing.assert_close(mean[1], expected)
    torch.testing.assert_close(mean[0], x_0[0])  # t = 0: ᾱ_{−1} = 1, x_{−1} is x_0
    assert variance.shape == (2, 1, 1, 1)
    torch.testing.assert_close(variance.flatten(), torch.stack([posterior_variance[0], posterior_variance[25]]))
    assert variance[0] == 0
    m, v = scheduler.posterior(x_0, x_t, 25)
    torch.testing.assert_close(m[1], expected)


def test_ddpm_get_variance_is_the_posterior_variance():
    """`_get_variance(t)` in the training chain (t' = t − 1) is Ho et al.'s β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t) β_t, eq. (7),
    or β_t for "fixed_large"; after set_timesteps the same with t' the next sampled step."""
    scheduler = GenZooDDPMScheduler(**BOUND_CONFIG)
    betas, alphas_cumprod, _, posterior_variance = paper_constants(scheduler)
    steps = torch.arange(1, BOUND_CONFIG["num_train_timesteps"])
    fixed_small = torch.stack([scheduler._get_variance(int(t)) for t in steps]).double()
    fixed_large = torch.stack([scheduler._get_variance(int(t), variance_type="fixed_large") for t in steps]).double()
    torch.testing.assert_close(fixed_small, posterior_variance[1:], rtol=1e-4, atol=0)
    torch.testing.assert_close(fixed_large, betas[1:], rtol=1e-4, atol=0)
    assert scheduler._get_variance(0) == torch.tensor(1e-20)  # β̃_0 = 0, floored because its log is taken
    scheduler.set_timesteps(timesteps=[30, 12, 0])
    t, t_prev = 30, 12
    beta = 1 - alphas_cumprod[t] / alphas_cumprod[t_prev]
    expected = (1 - alphas_cumprod[t_prev]) / (1 - alphas_cumprod[t]) * beta
    torch.testing.assert_close(scheduler._get_variance(t).double(), expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("timestep_spacing,steps_offset", [("leading", 0), ("leading", 1), ("trailing", 0)])
def test_ddim_inversion_reconstructs(timestep_spacing, steps_offset):
    config = GenZooDDIMScheduler(clip_sample=False, timestep_spacing=timestep_spacing, steps_offset=steps_offset).config
    x_0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1

    def linear_model(x_t, t):  # ε predicted as a fixed linear function of x_t
        return 0.3 * x_t

    def error(model, steps, iterations=0):
        x_T = ddim_invert(model, x_0, config, steps, num_fixed_point_iterations=iterations)
        assert (x_T - x_0).abs().max() > 0.3  # inversion did go somewhere
        return (ddim_sample(model, x_T, config, steps) - x_0).abs().max().item()

    # with the inverse step solved exactly (fixed-point iterations) the reconstruction is exact
    assert error(linear_model, 50, iterations=8) < 1e-6
    # plain DDIM inversion (ε at the less noisy sample): exact for a model that ignores x_t, first-order otherwise
    assert error(lambda x_t, t: torch.sin(0.01 * t.view(-1, 1, 1, 1).double()).expand_as(x_t), 50) < 1e-9
    assert error(linear_model, 50) < 0.2
    assert error(linear_model, 100) < 0.6 * error(linear_model, 50)
    # plain inversion gives diffusers' DDIMInverseScheduler's x_T
    x_T = ddim_invert(linear_model, x_0, config, 20)
    inverse = diffusers.DDIMInverseScheduler.from_config(config)
    inverse.set_timesteps(20)
    sample = x_0
    for t in inverse.timesteps:
        sample = inverse.step(linear_model(sample, t), t, sample).prev_sample
    torch.testing.assert_close(x_T, sample, rtol=RTOL, atol=ATOL)


# ======================================================================================================================
# 4. Bad input
# ======================================================================================================================
@pytest.mark.parametrize("ours_cls", list(PAIRS))
@pytest.mark.parametrize("num_inference_steps", [0, -3, 1001])
def test_num_inference_steps_out_of_range(ours_cls, num_inference_steps):
    scheduler = ours_cls()
    with pytest.raises(ValueError, match=rf"num_inference_steps={num_inference_steps}.*num_train_timesteps=1000"):
        scheduler.set_timesteps(num_inference_steps)


@pytest.mark.parametrize(
    "ours_cls,key,allowed",
    [(cls, "beta_schedule", ALL_BETA_SCHEDULES) for cls in PAIRS]
    + [(cls, "prediction_type", PREDICTION_TYPES) for cls in PAIRS]
    + [(GenZooDDPMScheduler, "timestep_spacing", SPACINGS), (GenZooDDIMScheduler, "timestep_spacing", SPACINGS)]
    + [(GenZooDDIMInverseScheduler, "timestep_spacing", ("leading", "trailing"))]
    + [(GenZooDDPMScheduler, "variance_type", ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log",
                                                 "learned", "learned_range"))],
)
def test_unknown_choices_are_rejected_at_construction(ours_cls, key, allowed):
    with pytest.raises(ValueError) as error:
        ours_cls(**{key: "nonsense"})
    message = str(error.value)
    assert "'nonsense'" in message and all(repr(value) in message for value in allowed)


def test_other_bad_input():
    ddpm = GenZooDDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="not both"):
        ddpm.set_timesteps(10, timesteps=[5, 1])
    with pytest.raises(ValueError, match="decreasing"):
        ddpm.set_timesteps(timesteps=[5, 7, 1])
    with pytest.raises(ValueError, match="99"):
        ddpm.set_timesteps(timesteps=[100, 1])
    ddpm.set_timesteps(10)
    sample = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="timestep 55"):
        ddpm.step(sample, 55, sample)
    with pytest.raises(ValueError, match="6 channels"):
        GenZooDDPMScheduler(variance_type="learned_range").step(sample, 10, sample)
    with pytest.raises(ValueError, match="trained_betas"):
        GenZooDDPMScheduler(num_train_timesteps=10, trained_betas=[0.1] * 9)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        ddpm.variational_bound(lambda x, t: x, sample + 2)
    with pytest.raises(ValueError, match="num_sampled_timesteps=100"):
        ddpm.variational_bound(lambda x, t: x, sample, num_sampled_timesteps=100)
    with pytest.raises(ValueError, match="set_timesteps"):
        GenZooDDIMScheduler().step(sample, 10, sample)
    with pytest.raises(ValueError, match="set_timesteps"):
        GenZooDDIMInverseScheduler().step(sample, 10, sample)


@pytest.mark.parametrize("ours_cls", list(PAIRS))
@pytest.mark.parametrize("length", [9, 11])
def test_trained_betas_of_the_wrong_length_are_rejected(ours_cls, length):
    """diffusers accepts them: a shorter one fails later with an IndexError, a longer one is silently cut."""
    with pytest.raises(ValueError, match=rf"trained_betas has shape \({length},\); expected \(10,\)"):
        ours_cls(num_train_timesteps=10, trained_betas=[0.1] * length)


def test_get_variance_and_inverse_keywords_reject_what_diffusers_silently_mishandles():
    ddpm = GenZooDDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="variance_type='nonsense'"):  # diffusers returns β̃_t
        ddpm._get_variance(10, variance_type="nonsense")
    for variance_type in ("learned", "learned_range"):  # diffusers returns None / fails inside its arithmetic
        with pytest.raises(ValueError, match="needs predicted_variance"):
            ddpm._get_variance(10, variance_type=variance_type)
    ddpm.set_timesteps(10)
    with pytest.raises(ValueError, match="timestep 55"):
        ddpm._get_variance(55)
    # a misspelt key: diffusers' inverse scheduler ignores any name, so clipping would silently stay on
    with pytest.raises(TypeError, match=r"\['clip_smaple'\].*ignores thresholding"):
        GenZooDDIMInverseScheduler(clip_smaple=False)


def test_variational_bound_gaussian_decoder_is_the_density_of_x0_given_x1():
    """decoder="gaussian" (continuous data such as latents): L_0 = −log N(x_0; μ_θ(x_1), σ_1²), and data outside
    [−1, 1] is accepted; the KL terms are those of the discretised bound."""
    import math

    torch.manual_seed(0)
    scheduler = GenZooDDPMScheduler(num_train_timesteps=20, clip_sample=False)
    x_0 = 3 * torch.randn(2, 3, 4, 4)
    model = lambda x_t, t: 0.1 * x_t  # noqa: E731  (any deterministic ε-prediction)
    bound = scheduler.variational_bound(model, x_0, generator=torch.Generator().manual_seed(0), decoder="gaussian")

    noise = torch.randn(x_0.shape, generator=torch.Generator().manual_seed(0))
    alpha_prod = scheduler.alphas_cumprod[0]
    x_1 = alpha_prod.sqrt() * x_0 + (1 - alpha_prod).sqrt() * noise  # the bound's first draw is L_0's x_t
    x0_hat = (x_1 - (1 - alpha_prod).sqrt() * model(x_1, None)) / alpha_prod.sqrt()
    chain = scheduler._train_chain()
    mean = chain["posterior_mean_coef_x0"][0] * x0_hat + chain["posterior_mean_coef_xt"][0] * x_1
    log_variance = chain["log_posterior_variance"][0]
    expected = 0.5 * (math.log(2 * math.pi) + log_variance + (x_0 - mean) ** 2 / log_variance.exp())
    torch.testing.assert_close(bound.decoder_nats, expected.flatten(1).sum(1), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="decoder must be"):
        scheduler.variational_bound(model, x_0, decoder="logistic")
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        scheduler.variational_bound(model, x_0)
