"""Bits/dim of 8-bit images for the VAE: the discretised Gaussian decoder over the 256 grey levels (Ho et al. 2020,
eq. 13, the DDPM's L₀), as the model's own likelihood with a learned scale or beside a Bernoulli or Gaussian one with
a scale fitted to training images; its ELBO and IWAE bound in evaluate_autoencoder."""

import math

import pytest
import torch

from hf_genzoo import VAEModel
from hf_genzoo.metrics import evaluate_autoencoder, fit_decoder_log_scale, iwae_bound, nats_to_bits_per_dim, vae_elbo

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4, sample_size=16)
GREY_LEVELS = torch.arange(256) * 2 / 255 - 1  # the 8-bit grid in [-1, 1]


def eight_bit_images(n=6, seed=0):
    """Mostly black digits-like images with some grey and white pixels, on the 8-bit grid."""
    generator = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, 1, 16, 16), generator=generator)
    levels[torch.rand(n, 1, 16, 16, generator=generator) < 0.6] = 0
    return levels / 127.5 - 1


def vae(likelihood, **kwargs):
    torch.manual_seed(0)
    return VAEModel(**TINY, in_channels=1, out_channels=1, likelihood=likelihood, **kwargs).eval()


def normal_cdf(u: float) -> float:
    return 0.5 * (1 + math.erf(u / math.sqrt(2)))


def hand_log_probability(x: float, mean: float, sigma: float) -> float:
    """ln P(x) of one grey level x = 2k/255 − 1: Φ over its bin of width 2/255, the edge bins open (eq. 13)."""
    upper = 1.0 if x > 0.999 else normal_cdf((x + 1 / 255 - mean) / sigma)
    lower = 0.0 if x < -0.999 else normal_cdf((x - 1 / 255 - mean) / sigma)
    return math.log(upper - lower)


@pytest.mark.parametrize(
    "likelihood, decoder_output, log_scale",
    [
        ("discretized_gaussian", 0.3, None),  # the learned scale, at its initial ln √0.01
        ("discretized_gaussian", -1.4, None),  # a mean beyond the edge
        ("bernoulli", 4.0, -3.0),  # logits: the mean is 2 sigmoid(4) − 1
        ("gaussian", 0.0, 1.0),
    ],
)
def test_one_pixel_probabilities_over_the_256_grey_levels_sum_to_one(likelihood, decoder_output, log_scale):
    model = vae(likelihood)
    x = GREY_LEVELS.view(256, 1, 1, 1)
    log_p = model.log_likelihood_8bit(x, torch.full_like(x, decoder_output), log_scale)  # (256,): one pixel each
    assert log_p.shape == (256,) and (log_p <= 0).all()
    torch.testing.assert_close(log_p.double().exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)


def test_discretized_gaussian_is_the_models_likelihood_with_a_learned_scale(tmp_path):
    model = vae("discretized_gaussian", gaussian_variance=0.04)
    assert model.decoder_log_scale.item() == pytest.approx(math.log(0.2))
    x = eight_bit_images()
    output = model.decoder(model.encode(x).latent_dist.mode())
    torch.testing.assert_close(model.log_likelihood(x, output), model.log_likelihood_8bit(x, output))
    model.train()
    model.loss(x, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert model.decoder_log_scale.grad is not None and model.decoder_log_scale.grad != 0
    with torch.no_grad():
        model.decoder_log_scale.fill_(-2.5)
    model.save_pretrained(tmp_path)
    assert VAEModel.from_pretrained(tmp_path).decoder_log_scale.item() == -2.5
    # a Bernoulli VAE has no scale of its own for the 8-bit likelihood
    with pytest.raises(ValueError, match="likelihood='bernoulli' has no scale of its own .* pass decoder_log_scale"):
        vae("bernoulli").log_likelihood_8bit(x, output)


def test_8bit_elbo_in_bits_per_dim_against_a_hand_computation():
    """A Bernoulli VAE's 8-bit ELBO: ln P(x | z) by hand from the decoder's mean at the same z, minus the KL."""
    model = vae("bernoulli")
    x = eight_bit_images(n=2)
    x[0, 0, 0, :3] = torch.tensor([-1.0, 1.0, 2 * 100 / 255 - 1])  # both edge bins and an inner one
    log_scale = -0.5  # wide enough that math.erf keeps every bin's mass
    elbo = vae_elbo(model, x, torch.Generator().manual_seed(3), decoder_log_scale=log_scale)

    posterior = model.encode(x).latent_dist
    z = posterior.sample(torch.Generator().manual_seed(3))
    mean = (2 * torch.sigmoid(model.decoder(z)) - 1).double()
    sigma = math.exp(log_scale)
    for i in range(2):
        log_p = sum(hand_log_probability(v, m, sigma) for v, m in zip(x[i].flatten().tolist(), mean[i].flatten().tolist()))
        expected = log_p - posterior.kl()[i].item()
        assert elbo[i].item() == pytest.approx(expected, rel=1e-4)
        bits = nats_to_bits_per_dim(-elbo[i].item(), x[0].numel())
        assert bits == pytest.approx(-expected / (256 * math.log(2)), rel=1e-4)


def test_fitted_scale_maximises_the_training_elbo():
    model = vae("bernoulli")
    x = eight_bit_images(n=8)
    fitted = fit_decoder_log_scale(model, x, generator=torch.Generator().manual_seed(1), batch_size=3)
    assert -9 < fitted < 2

    def mean_elbo(log_scale):  # the same z draws as the fit's
        z = model.encode(x).latent_dist.sample(torch.Generator().manual_seed(1))
        return model.log_likelihood_8bit(x, model.decoder(z), log_scale).mean().item()

    best = mean_elbo(fitted)
    assert all(best >= mean_elbo(fitted + delta) for delta in (-0.5, -0.02, 0.02, 0.5))


def test_evaluation_reports_both_bounds_and_iwae_is_tighter():
    model = vae("bernoulli")
    x = eight_bit_images(n=8)
    metrics = evaluate_autoencoder(model, x, iwae_samples=32, decoder_log_scale=-1.5)
    assert metrics["likelihood"] == "bernoulli" and metrics["decoder_log_scale_8bit"] == -1.5
    for bound in ("elbo", "iwae"):
        bits = nats_to_bits_per_dim(-metrics[f"{bound}_nats_8bit"], x[0].numel())
        assert metrics[f"{bound}_bpd_8bit"] == pytest.approx(bits) and metrics[f"{bound}_nats_8bit"] < 0
    assert metrics["iwae_bpd_8bit"] <= metrics["elbo_bpd_8bit"]
    assert metrics["iwae_nats_8bit"] <= 0  # a probability's logarithm: the bound is ≤ 0
    # under the discretised likelihood the model's own bounds are the 8-bit ones
    own = evaluate_autoencoder(vae("discretized_gaussian"), x, iwae_samples=4)
    assert own["elbo_bpd_8bit"] == own["elbo_bpd"] and own["iwae_bpd_8bit"] == own["iwae_bpd"]
    assert own["decoder_log_scale_8bit"] == pytest.approx(0.5 * math.log(0.01))
    # without a scale, a Bernoulli VAE reports its own bounds only
    assert not any(key.endswith("_8bit") for key in evaluate_autoencoder(model, x, iwae_samples=0))


def test_8bit_evaluation_errors():
    x = eight_bit_images(n=2)
    with pytest.raises(ValueError, match="needs images on the grid 2k/255 − 1"):
        evaluate_autoencoder(vae("bernoulli"), x + 0.001, iwae_samples=0, decoder_log_scale=-2.0)
    with pytest.raises(ValueError, match="its own learned scale; do not pass decoder_log_scale"):
        evaluate_autoencoder(vae("discretized_gaussian"), x, iwae_samples=0, decoder_log_scale=-2.0)
    with pytest.raises(ValueError, match="likelihood must be one of .*got 'poisson'"):
        vae("poisson")


def test_iwae_with_one_sample_is_one_importance_weight_under_the_8bit_likelihood():
    """With k = 1 the IWAE bound is ln P(x|z) + ln p(z) − ln q(z|x) at one draw z ~ q(z|x), P the 8-bit likelihood."""
    model = vae("bernoulli")
    x = eight_bit_images(n=2)
    posterior = model.encode(x).latent_dist
    iwae = iwae_bound(model, x, 1, torch.Generator().manual_seed(5), posterior=posterior, decoder_log_scale=-2.0)
    z = posterior.sample(torch.Generator().manual_seed(5))
    log_p_z = -0.5 * (math.log(2 * math.pi) + z.pow(2)).flatten(1).sum(1)
    expected = model.log_likelihood_8bit(x, model.decoder(z), -2.0) + log_p_z - posterior.log_prob(z)
    torch.testing.assert_close(iwae, expected)
