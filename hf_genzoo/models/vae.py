"""Variational autoencoder and β-VAE (Kingma & Welling 2014, arXiv:1312.6114; Higgins et al. 2017).

Notation (../shared/EQUATIONS.md, "VAE"):
    q_φ(z|x) = N(μ(x), diag σ²(x))      the encoder's posterior
    p(z)     = N(0, I)                   the prior
    p_θ(x|z)                             Gaussian N(x̂(z), cI), Bernoulli(sigmoid(logits(z))), or the discretised
                                         Gaussian over the 256 grey levels (learned scale σ)
    ELBO     = E_q log p(x|z) − KL(q(z|x) ‖ p(z)) ≤ log p(x)
    β-VAE    = E_q log p(x|z) − β KL(q(z|x) ‖ p(z))

Sampling draws z from p(z) = N(0, I), or, once `fit_latent_prior` has fitted a Gaussian mixture to the training
set's latent means (config `latent_prior="mixture"`, ex-post density estimation: latent_mixture.py), from that
mixture. The mixture only changes where samples come from; the ELBO and IWAE bounds keep N(0, I), the prior the
model was trained with.

Bits per dimension that compare with a diffusion model's need a probability of the 8-bit image. The Bernoulli
likelihood reads grey levels in [0, 1] as probabilities of binary pixels, and the Gaussian one is a density: their
bounds are bounds under those models, not −log₂ P of the 8-bit image. `log_likelihood_8bit` is that probability
under the discretised Gaussian decoder of Ho et al. 2020, eq. (13) (the DDPM's L₀, EQUATIONS.md "DDPM"): N(x̂(z), σ²)
integrated over the bin of width 2/255 around each grey level 2k/255 − 1, the two edge bins open. With
`likelihood="discretized_gaussian"` it is the model's own likelihood and σ is learned with the weights; a model
trained with another likelihood gets σ from the data it was trained on (`metrics.likelihood.fit_decoder_log_scale`).

The class presents the interface diffusers pipelines call on a `vae`: `encode(x).latent_dist`
(`sample`, `mode`, `kl`), `decode(z).sample`, `config.scaling_factor`, `config.latent_channels`
and `config.block_out_channels`, so it can replace `AutoencoderKL` in a `StableDiffusionPipeline`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401  (diffusers' loader looks it up in this module)
from .modeling_utils import GenZooModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
import torch.nn.functional as F

from ..schedulers.scheduling_ddpm import discretized_gaussian_log_likelihood
from .conv import ConvAutoencoderMixin, ConvDecoder, ConvEncoder, check_latent_config
from .latent_mixture import LOG_2PI, fit_gaussian_mixture, sample_mixture

LATENT_PRIORS = ("normal", "mixture")
LIKELIHOODS = ("gaussian", "bernoulli", "discretized_gaussian")
MAX_MIXTURE_DIMS = 256


class DiagonalGaussian:
    """N(mean, diag exp(logvar)) over every non-batch dimension, for vector or spatial latents.

    Quacks like diffusers' `DiagonalGaussianDistribution` (`sample(generator)`, `mode()`, `kl()`,
    `nll(x)`, `mean`, `std`, `var`, `logvar`), which only handles 4-D tensors.
    """

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # reparameterisation: z = μ + σ ⊙ ε, ε ~ N(0, I)   (EQUATIONS.md, VAE)
        eps = randn_tensor(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − ln σ_j²), one value per batch element."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """ln q(z), summed over the latent dimensions."""
        return -0.5 * (LOG_2PI + self.logvar + (z - self.mean).pow(2) / self.var).flatten(1).sum(1)

    def nll(self, z: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(z)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """ln p(z) for p = N(0, I), summed over the latent dimensions."""
    return -0.5 * (LOG_2PI + z.pow(2)).flatten(1).sum(1)


@dataclass
class VAELossOutput(BaseOutput):
    """Per-batch means of the loss terms, in nats per image except `loss`.

    loss: the training objective, (reconstruction + β·KL) / D, with D the number of pixel values.
    reconstruction: −E_q log p(x|z), estimated with one sample.
    kl: KL(q(z|x) ‖ p(z)), closed form.
    elbo: −(reconstruction + kl), the evidence lower bound (β = 1 whatever the training β).
    """

    loss: torch.Tensor = None
    reconstruction: torch.Tensor = None
    kl: torch.Tensor = None
    elbo: torch.Tensor = None


class VAEModel(GenZooModelMixin, ConfigMixin, ConvAutoencoderMixin):
    r"""
    A convolutional VAE / β-VAE.

    Parameters:
        in_channels (`int`, defaults to 3): image channels.
        out_channels (`int`, defaults to 3): decoded channels (normally equal to `in_channels`).
        block_out_channels (`tuple[int]`, defaults to `(32, 64, 128)`): widths of the encoder blocks; the
            image is downsampled by `2 ** (len(block_out_channels) - 1)`.
        layers_per_block (`int`, defaults to 1): residual blocks per width.
        norm_num_groups (`int`, defaults to 8): GroupNorm groups (reduced to divide the width).
        latent_channels (`int`, defaults to 4): channels of a spatial latent, or the size of a vector latent.
        latent_type (`"spatial"` or `"vector"`, defaults to `"spatial"`): (C, h, w) latents (a latent-diffusion
            first stage) or a flat vector (e.g. 2-D latents for plots; needs fixed `sample_size`).
        sample_size (`int`, defaults to 32): the training resolution (fixed input size for vector latents).
        likelihood (`"gaussian"`, `"bernoulli"` or `"discretized_gaussian"`, defaults to `"gaussian"`): p(x|z).
            Gaussian N(x̂, cI) on pixels in [-1, 1]; Bernoulli on pixel intensities (x + 1) / 2 ∈ [0, 1], decoder
            outputs logits; discretised Gaussian: a probability of 8-bit images (pixels on the grid 2k/255 − 1),
            N(x̂, σ²) over the 256 bins with one learned σ (`decoder_log_scale`), as the DDPM's decoder L₀.
        gaussian_variance (`float`, defaults to 0.01): the fixed variance c of the Gaussian likelihood; the initial
            σ² of the discretised Gaussian.
        beta (`float`, defaults to 1.0): weight of the KL term (β-VAE when > 1).
        scaling_factor (`float`, defaults to 1.0): latents are multiplied by it before a diffusion model sees
            them (diffusers' convention); set it to 1 / std of the training latents after training.
        latent_prior (`"normal"` or `"mixture"`, defaults to `"normal"`): what `sample_prior` draws from: N(0, I),
            or a full-covariance Gaussian mixture fitted to the training latents after training
            (`fit_latent_prior`; its parameters are buffers, saved with the weights).
        latent_prior_components (`int`, defaults to 100): M, the mixture's components.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (32, 64, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        latent_channels: int = 4,
        latent_type: Literal["spatial", "vector"] = "spatial",
        sample_size: int = 32,
        likelihood: Literal["gaussian", "bernoulli", "discretized_gaussian"] = "gaussian",
        gaussian_variance: float = 0.01,
        beta: float = 1.0,
        scaling_factor: float = 1.0,
        latent_prior: Literal["normal", "mixture"] = "normal",
        latent_prior_components: int = 100,
    ):
        super().__init__()
        check_latent_config(latent_type, block_out_channels, sample_size)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if gaussian_variance <= 0:
            raise ValueError(f"gaussian_variance must be > 0, got {gaussian_variance}")
        if beta < 0:
            raise ValueError(f"beta must be ≥ 0, got {beta}")
        block_out_channels = tuple(block_out_channels)
        shape_args = dict(
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            latent_type=latent_type,
            sample_size=sample_size,
        )
        # the encoder predicts (μ, ln σ²) stacked along the channel axis
        self.encoder = ConvEncoder(in_channels, 2 * latent_channels, **shape_args)
        self.decoder = ConvDecoder(latent_channels, out_channels, **shape_args)
        if likelihood == "discretized_gaussian":
            # ln σ of the discretised Gaussian decoder, one for every pixel, trained with the weights
            self.decoder_log_scale = torch.nn.Parameter(torch.tensor(0.5 * math.log(gaussian_variance)))
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"latent_prior must be one of {LATENT_PRIORS}, got {latent_prior!r}")
        if latent_prior == "mixture":
            if latent_prior_components < 1:
                raise ValueError(f"latent_prior_components must be ≥ 1, got {latent_prior_components}")
            d = math.prod(self.latent_shape)
            if d > MAX_MIXTURE_DIMS:
                raise ValueError(
                    f"a latent mixture over {d} latent dimensions needs {latent_prior_components}·{d}² covariance "
                    f"entries; latent_prior='mixture' supports up to {MAX_MIXTURE_DIMS} dimensions"
                )
            m = latent_prior_components
            # p_M(z) = Σ_j π_j N(m_j, L_j L_jᵀ); all zero (L = 0: not fitted) until fit_latent_prior
            self.register_buffer("prior_log_weights", torch.zeros(m))
            self.register_buffer("prior_means", torch.zeros(m, d))
            self.register_buffer("prior_scale_tril", torch.zeros(m, d, d))

    # ---- diffusers' vae interface ------------------------------------------------------------------

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """x (B, C, H, W) in [-1, 1] → `AutoencoderKLOutput(latent_dist=q(z|x))`."""
        self._check_images(x)
        moments = self.encoder(x)  # (B, 2·C_lat, h, w) or (B, 2·C_lat)
        mean, logvar = moments.chunk(2, dim=1)
        posterior = DiagonalGaussian(mean, logvar)
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple:
        """z → `DecoderOutput(sample=x̂)`, x̂ in [-1, 1] units: the mean of p(x|z)."""
        self._check_latents(z)
        logits_or_mean = self.decoder(z)
        image = self._likelihood_mean(logits_or_mean)
        if not return_dict:
            return (image,)
        return DecoderOutput(sample=image)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        return_loss: bool = False,
    ) -> DecoderOutput | VAELossOutput | tuple:
        """Reconstruct: decode(z) with z the posterior mode (or a posterior sample). With `return_loss=True`,
        the training loss instead (`loss`), so that a DDP-wrapped model all-reduces its gradients."""
        if return_loss:
            return self.loss(sample, generator=generator)
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z, return_dict=return_dict)

    # ---- the variational objective -----------------------------------------------------------------

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAELossOutput:
        """The negative β-ELBO on a batch, with its terms (EQUATIONS.md, VAE and β-VAE)."""
        posterior = self.encode(x).latent_dist
        z = posterior.sample(generator)
        reconstruction = -self.log_likelihood(x, self.decoder(z))  # −log p(x|z), (B,)
        kl = posterior.kl()  # (B,)
        num_dims = x[0].numel()
        loss = (reconstruction + self.config.beta * kl).mean() / num_dims
        return VAELossOutput(
            loss=loss, reconstruction=reconstruction.mean(), kl=kl.mean(), elbo=-(reconstruction + kl).mean()
        )

    def log_likelihood(self, x: torch.Tensor, decoder_output: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, in nats, from the raw decoder output (mean, or logits for Bernoulli)."""
        decoder_output = decoder_output.float()
        x = x.float()
        if self.config.likelihood == "bernoulli":
            target = (x + 1) / 2  # intensities in [0, 1]
            return -F.binary_cross_entropy_with_logits(decoder_output, target, reduction="none").flatten(1).sum(1)
        if self.config.likelihood == "discretized_gaussian":
            return self.log_likelihood_8bit(x, decoder_output)
        # Gaussian N(x̂, cI): −log p = ½‖x − x̂‖²/c + (D/2) ln(2πc)
        c = self.config.gaussian_variance
        squared_error = (x - decoder_output).pow(2).flatten(1).sum(1)
        return -0.5 * squared_error / c - 0.5 * x[0].numel() * (LOG_2PI + math.log(c))

    def log_likelihood_8bit(
        self, x: torch.Tensor, decoder_output: torch.Tensor, decoder_log_scale: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """ln P(x|z) per image, in nats, of 8-bit images x (pixels on the grid 2k/255 − 1 in [-1, 1]) under the
        discretised Gaussian decoder: N(x̂(z), σ²) integrated over the bin [x − 1/255, x + 1/255], the first bin
        (x = −1) open to −∞ and the last (x = 1) to +∞ (Ho et al. 2020, eq. 13). x̂ is the decoder's mean (for a
        Bernoulli decoder 2 sigmoid(logits) − 1), ln σ `decoder_log_scale`, by default the learned one of a model
        with `likelihood="discretized_gaussian"`. A probability, so −ln P / (D ln 2) is in bits/dim."""
        if decoder_log_scale is None:
            if self.config.likelihood != "discretized_gaussian":
                raise ValueError(
                    f"a VAE with likelihood={self.config.likelihood!r} has no scale of its own for the 8-bit likelihood: "
                    "pass decoder_log_scale (fit_decoder_log_scale fits it to training images)"
                )
            decoder_log_scale = self.decoder_log_scale
        mean = self._likelihood_mean(decoder_output.float())
        log_variance = 2 * torch.as_tensor(decoder_log_scale, dtype=torch.float32, device=mean.device)
        return discretized_gaussian_log_likelihood(x.float(), mean, log_variance).flatten(1).sum(1)

    def log_joint_terms(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """ln p(x|z) + ln p(z) per image, the numerator of the importance weights."""
        return self.log_likelihood(x, self.decoder(z)) + standard_normal_log_prob(z)

    # ---- helpers ----------------------------------------------------------------------------------

    @torch.no_grad()
    def fit_latent_prior(
        self,
        latents: torch.Tensor,
        generator: torch.Generator | None = None,
        max_iterations: int = 200,
        num_components: int | None = None,
    ) -> float:
        """Fit the latent mixture (config `latent_prior="mixture"`) to training latents (N, ...), normally the
        posterior means μ(x_n), by EM (latent_mixture.py), and store it in the buffers. `num_components` refits a
        trained model with another M (the config's `latent_prior_components` follows, so the saved folder loads
        with it). Returns the fitted mixture's mean log-likelihood of the latents, in nats."""
        if self.config.latent_prior != "mixture":
            raise ValueError(
                f"this VAE samples from latent_prior={self.config.latent_prior!r}; build it with "
                "latent_prior='mixture' to fit a latent mixture"
            )
        m = self.config.latent_prior_components if num_components is None else int(num_components)
        if m < 1:
            raise ValueError(f"num_components must be ≥ 1, got {num_components}")
        d = self.prior_means.shape[1]
        flat = latents.detach().flatten(1)
        if flat.shape[1] != d:
            raise ValueError(f"expected latents with {d} values each (shape {self.latent_shape}), got {flat.shape[1]}")
        fit = fit_gaussian_mixture(flat, m, generator=generator, max_iterations=max_iterations)
        device, dtype = self.prior_means.device, self.prior_means.dtype
        # buffers are replaced, not copied into, so that M can change
        self.prior_log_weights = fit.log_weights.to(device, dtype)
        self.prior_means = fit.means.to(device, dtype)
        self.prior_scale_tril = fit.scale_tril.to(device, dtype)
        if m != self.config.latent_prior_components:
            self.register_to_config(latent_prior_components=m)
        return fit.mean_log_likelihood

    @property
    def latent_prior_fitted(self) -> bool:
        """Whether `sample_prior` can draw from a fitted latent mixture."""
        return self.config.latent_prior == "mixture" and bool(self.prior_scale_tril.abs().sum() > 0)

    def sample_prior(
        self, batch_size: int, generator: torch.Generator | None = None, prior: Literal["normal", "mixture"] | None = None
    ) -> torch.Tensor:
        """z at the training resolution from `prior` (default: the config's `latent_prior`): N(0, I), or the
        latent mixture fitted by `fit_latent_prior`."""
        prior = self.config.latent_prior if prior is None else prior
        if prior not in LATENT_PRIORS:
            raise ValueError(f"prior must be one of {LATENT_PRIORS}, got {prior!r}")
        if prior == "normal":
            return randn_tensor((batch_size, *self.latent_shape), generator=generator, device=self.device, dtype=self.dtype)
        if not self.latent_prior_fitted:
            raise ValueError(
                "this VAE has no fitted latent mixture to sample from: build it with latent_prior='mixture' and call "
                "fit_latent_prior(train_latents) (the training script does it at the end of training), or pass prior='normal'"
            )
        z = sample_mixture(batch_size, self.prior_log_weights, self.prior_means, self.prior_scale_tril, generator)
        return z.view(batch_size, *self.latent_shape).to(self.dtype)

    @torch.no_grad()
    def markov_chain(
        self,
        z: torch.Tensor,
        num_steps: int,
        posterior: Literal["mean", "sample"] = "mean",
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Move latents towards where the encoder puts real images by decoding and re-encoding them `num_steps`
        times (Arulkumaran, Creswell & Bharath 2016, "Improving Sampling from Generative Autoencoders with Markov
        Chains", arXiv:1610.09296):

            x̂_t = E[x | z_t]  (the decoder's mean),   z_{t+1} = μ(x̂_t)  (posterior="mean")
                                                     or z_{t+1} ~ q(z | x̂_t)  (posterior="sample", the paper's chain)

        A draw from the prior that lands between the posteriors of real images decodes to an in-between image;
        re-encoding it moves it onto the latents the decoder was trained on. With "mean" the map is deterministic
        and settles on its fixed points; "sample" keeps the posterior's noise at every step.
        """
        if not isinstance(num_steps, int) or isinstance(num_steps, bool) or num_steps < 0:
            raise ValueError(f"num_steps must be an integer ≥ 0, got {num_steps!r}")
        if posterior not in ("mean", "sample"):
            raise ValueError(f"posterior must be 'mean' or 'sample', got {posterior!r}")
        self._check_latents(z)
        for _ in range(num_steps):
            x_hat = self.decode(z).sample.clamp(-1, 1)
            q = self.encode(x_hat).latent_dist
            z = q.mean if posterior == "mean" else q.sample(generator)
        return z

    def _likelihood_mean(self, decoder_output: torch.Tensor) -> torch.Tensor:
        if self.config.likelihood == "bernoulli":
            return 2 * torch.sigmoid(decoder_output) - 1  # E[x] under Bernoulli, back in [-1, 1] units
        return decoder_output

    def _check_latents(self, z: torch.Tensor) -> None:
        c = self.config.latent_channels
        if self.config.latent_type == "vector":
            if z.ndim != 2 or z.shape[1] != c:
                raise ValueError(f"expected vector latents of shape (batch, {c}), got {tuple(z.shape)}")
        elif z.ndim != 4 or z.shape[1] != c:
            raise ValueError(f"expected spatial latents of shape (batch, {c}, h, w), got {tuple(z.shape)}")
