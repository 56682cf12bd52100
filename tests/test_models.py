"""The autoencoder family: shapes, the loss formulas against EQUATIONS.md, variants, bad input, save/load."""

import math

import pytest
import torch

from hf_genzoo import AutoencoderModel, VAEModel
from hf_genzoo.models.vae import DiagonalGaussian

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, sample_size=16)


def images(batch=4, channels=3, size=16, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("latent_type,shape", [("spatial", (4, 8, 8)), ("vector", (4,))])
def test_vae_shapes_and_diffusers_interface(latent_type, shape):
    vae = VAEModel(**TINY, latent_channels=4, latent_type=latent_type)
    posterior = vae.encode(images()).latent_dist
    assert posterior.sample(torch.Generator().manual_seed(0)).shape == (4, *shape)
    assert posterior.mode().shape == (4, *shape)
    assert posterior.kl().shape == (4,)
    assert vae.decode(posterior.mode()).sample.shape == (4, 3, 16, 16)
    assert vae.config.latent_channels == 4 and vae.config.block_out_channels == (8, 16)
    assert vae.config.scaling_factor == 1.0
    assert vae.latent_shape == shape


def test_kl_matches_closed_form_and_monte_carlo():
    mean, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.3
    q = DiagonalGaussian(mean, logvar)
    var = logvar.exp()
    expected = 0.5 * (mean**2 + var - 1 - logvar).sum(1)  # ½ Σ (μ² + σ² − 1 − ln σ²)
    torch.testing.assert_close(q.kl(), expected)
    # KL = E_q[ln q(z) − ln p(z)] estimated with many samples
    z = mean + var.sqrt() * torch.randn(20000, 3, 5, generator=torch.Generator().manual_seed(0))
    log_q = torch.stack([q.log_prob(zi) for zi in z])
    log_p = torch.distributions.Normal(0, 1).log_prob(z).sum(-1)
    torch.testing.assert_close((log_q - log_p).mean(0), expected, atol=0.05, rtol=0.02)


def test_reparameterisation_gradients():
    """∂L/∂μ = ∂L/∂z and ∂L/∂σ = ∂L/∂z ⊙ ε (EQUATIONS.md, VAE)."""
    mean = torch.randn(2, 3, requires_grad=True)
    logvar = torch.randn(2, 3, requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    g = torch.Generator().manual_seed(1)
    z = q.sample(g)
    eps = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    upstream = torch.randn(2, 3)
    (z * upstream).sum().backward()
    torch.testing.assert_close(mean.grad, upstream)
    # ∂L/∂logvar = ∂L/∂σ · ∂σ/∂logvar = (upstream ⊙ ε) ⊙ σ/2
    torch.testing.assert_close(logvar.grad, upstream * eps * (0.5 * logvar.detach()).exp() * 0.5)


def test_vae_loss_terms_gaussian():
    vae = VAEModel(**TINY, latent_type="vector", latent_channels=3, gaussian_variance=0.05, beta=4.0)
    x = images()
    out = vae.loss(x, generator=torch.Generator().manual_seed(0))
    # recompute by hand with the same noise
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(torch.Generator().manual_seed(0))
    x_hat = vae.decoder(z)
    d = x[0].numel()
    rec = 0.5 * ((x - x_hat) ** 2).flatten(1).sum(1) / 0.05 + 0.5 * d * math.log(2 * math.pi * 0.05)
    kl = posterior.kl()
    torch.testing.assert_close(out.reconstruction, rec.mean())
    torch.testing.assert_close(out.kl, kl.mean())
    torch.testing.assert_close(out.elbo, -(rec + kl).mean())
    torch.testing.assert_close(out.loss, (rec + 4.0 * kl).mean() / d)


def test_vae_bernoulli_likelihood_and_output_range():
    vae = VAEModel(**TINY, in_channels=1, out_channels=1, likelihood="bernoulli")
    x = images(channels=1)
    logits = torch.randn(4, 1, 16, 16)
    expected = torch.distributions.Bernoulli(logits=logits, validate_args=False).log_prob((x + 1) / 2).flatten(1).sum(1)
    torch.testing.assert_close(vae.log_likelihood(x, logits), expected)
    decoded = vae.decode(vae.sample_prior(2)).sample
    assert decoded.min() >= -1 and decoded.max() <= 1


@pytest.mark.parametrize("corruption", ["none", "gaussian", "dropout", "patch_mask"])
def test_autoencoder_variants(corruption):
    model = AutoencoderModel(**TINY, corruption=corruption, sparsity_weight=0.01, mask_ratio=0.75, patch_size=4)
    x = images()
    out = model.loss(x, generator=torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert model(x).sample.shape == x.shape
    out.loss.backward()
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_autoencoder_loss_formula_with_sparsity():
    model = AutoencoderModel(**TINY, sparsity_weight=0.5)
    x = images()
    z = model.encode(x).latents
    y = model.decode(z).sample
    d = x[0].numel()
    expected = (((y - x) ** 2).flatten(1).sum(1) + 0.5 * z.abs().flatten(1).sum(1)).mean() / d
    torch.testing.assert_close(model.loss(x).loss, expected)


def test_corruptions_follow_their_definitions():
    x = torch.ones(64, 3, 16, 16)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    dropout = AutoencoderModel(**TINY, corruption="dropout", drop_prob=0.3).corrupt(x, g())
    assert set(dropout.unique().tolist()) == {0.0, 1.0}
    assert abs((dropout == 0).float().mean().item() - 0.3) < 0.01  # a fraction ρ of inputs set to 0
    noisy = AutoencoderModel(**TINY, corruption="gaussian", noise_std=0.2).corrupt(x, g())
    assert abs((noisy - x).std().item() - 0.2) < 0.005
    masked = AutoencoderModel(**TINY, corruption="patch_mask", mask_ratio=0.75, patch_size=4)
    visible = masked.patch_mask(x, g())  # 16 patches of 4×4, 4 of them visible in every image
    assert visible.shape == (64, 1, 16, 16)
    assert torch.all(visible.sum((1, 2, 3)) == 4 * 16)
    assert torch.all(visible.unfold(2, 4, 4).unfold(3, 4, 4).flatten(-2).std(-1) == 0)  # whole patches
    corrupted = masked.corrupt(x, g())
    assert corrupted.shape == (64, 4, 16, 16)  # image + visibility channel
    hidden = corrupted[:, :3] * (1 - corrupted[:, 3:])
    assert torch.all(hidden == 0)  # the mask token starts at zero


def test_glo_gaussian_is_fitted_saved_and_sampled(tmp_path):
    model = AutoencoderModel(**TINY, latent_type="vector", latent_channels=3)
    with pytest.raises(ValueError, match="fit_latent_gaussian"):
        model.sample_prior(2)
    mean = torch.tensor([1.0, -2.0, 0.5])
    cov = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    latents = torch.distributions.MultivariateNormal(mean, cov).sample((20000,))
    model.fit_latent_gaussian(latents)
    model.save_pretrained(tmp_path)
    loaded = AutoencoderModel.from_pretrained(tmp_path)
    samples = loaded.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), cov, atol=0.08, rtol=0)


@pytest.mark.parametrize("cls", [AutoencoderModel, VAEModel])
def test_bad_input_names_the_value(cls):
    model = cls(**TINY)
    with pytest.raises(ValueError, match=r"expected 3 input channel\(s\), got 1"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"17×17 is not divisible .* factor 2"):
        model.encode(torch.zeros(1, 3, 17, 17))
    with pytest.raises(ValueError, match="latent_type must be 'spatial' or 'vector', got 'grid'"):
        cls(**TINY, latent_type="grid")
    vector = cls(**TINY, latent_type="vector")
    with pytest.raises(ValueError, match="takes 16×16 images only, got 32×32"):
        vector.encode(torch.zeros(1, 3, 32, 32))


def test_bad_config_values():
    with pytest.raises(ValueError, match="corruption must be one of"):
        AutoencoderModel(**TINY, corruption="blur")
    with pytest.raises(ValueError, match=r"mask_ratio must be in \[0, 1\), got 1.5"):
        AutoencoderModel(**TINY, mask_ratio=1.5)
    with pytest.raises(ValueError, match="likelihood must be one of .*, got 'poisson'"):
        VAEModel(**TINY, likelihood="poisson")


@pytest.mark.parametrize("cls", [AutoencoderModel, VAEModel])
def test_save_load_round_trip_safetensors(cls, tmp_path):
    model = cls(**TINY, latent_channels=2).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    loaded = cls.from_pretrained(tmp_path).eval()
    x = images()
    torch.testing.assert_close(loaded(x).sample, model(x).sample, rtol=0, atol=0)


def test_missing_or_corrupt_weights_name_the_file(tmp_path):
    VAEModel(**TINY).save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(Exception, match="diffusion_pytorch_model.safetensors"):
        VAEModel.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(Exception, match="diffusion_pytorch_model.safetensors"):
        VAEModel.from_pretrained(tmp_path)
