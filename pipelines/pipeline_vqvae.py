"""VQVAEPipeline: sampling from a VQ-VAE through its learned autoregressive prior (van den Oord et al. 2017, two
stages; ../shared/EQUATIONS.md, "VQ-VAE"), plus encode / decode / reconstruct."""

from __future__ import annotations

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import GPT2LMHeadModel

from hf_genzoo.models.code_prior import check_code_prior, code_nll, codes_to_tokens, nats_to_bits_per_dim, start_tokens
from hf_genzoo.models.vqvae import VQVAEModel

from .pipeline_utils import GenZooImageProcessor, GenZooPipeline, check_output_type


class VQVAEPipeline(GenZooPipeline):
    r"""
    Codes are sampled from the prior (transformers' `generate`, start/class tokens suppressed so every sampled token is
    a code), then decoded by the VQ-VAE.

    Parameters:
        vqvae ([`VQVAEModel`]): the first stage (encoder, codebook, decoder).
        prior ([`~transformers.GPT2LMHeadModel`]): the second stage, built by `hf_genzoo.models.code_prior`; its
            vocabulary and context are checked against the codebook and code grid when the pipeline is built/loaded.
    """

    model_cpu_offload_seq = "prior->vqvae"
    model_card_template = "vqvae"
    model_card_tags = ("vq-vae", "autoregressive-prior")

    def __init__(self, vqvae: VQVAEModel, prior: GPT2LMHeadModel):
        super().__init__()
        h, w = vqvae.latent_shape[1:]
        self.layout = check_code_prior(prior, vqvae.num_codes, (h, w))
        self.register_modules(vqvae=vqvae, prior=prior)
        self.image_processor = GenZooImageProcessor(num_channels=vqvae.config.in_channels)

    @property
    def num_classes(self) -> int | None:
        return self.layout.num_classes or None

    @torch.no_grad()
    def sample_codes(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        class_labels=None,
        epsilon_cutoff: float | None = None,
    ) -> torch.Tensor:
        """Codes (B, h, w) drawn from the prior in raster order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and not 1 <= top_k <= self.layout.num_codes:
            raise ValueError(f"top_k must be in [1, {self.layout.num_codes}] (the codebook size) or None, got {top_k}")
        if epsilon_cutoff is not None and not 0 < epsilon_cutoff < 1:
            raise ValueError(f"epsilon_cutoff must be in (0, 1) or None, got {epsilon_cutoff}")
        start = start_tokens(self.layout, batch_size, class_labels, device=self.prior.device)
        num_codes = self.layout.grid[0] * self.layout.grid[1]
        # transformers samples with the global RNG: seed it from `generator`, inside a forked RNG state
        seed = int(torch.randint(0, 2**62, (1,), generator=generator)) if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            tokens = self.prior.generate(
                input_ids=start,
                attention_mask=torch.ones_like(start),
                max_new_tokens=num_codes,
                min_new_tokens=num_codes,
                do_sample=True,
                temperature=temperature,
                top_k=top_k or 0,
                top_p=1.0,
                epsilon_cutoff=epsilon_cutoff,
                suppress_tokens=list(range(self.layout.num_codes, self.layout.vocab_size)),
                pad_token_id=self.layout.start_token,
            )
        return tokens[:, 1:].reshape(batch_size, *self.layout.grid)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        epsilon_cutoff: float | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Sample images.

        Args:
            batch_size (`int`, defaults to 1): number of images.
            generator (`torch.Generator`, *optional*): makes the sampled codes reproducible.
            temperature (`float`, defaults to 1.0): divides the prior's logits (< 1: safer, less varied).
            top_k (`int`, *optional*): sample among the k most likely codes at each position.
            class_labels (`int`, a list or a tensor, *optional*): for a class-conditional prior (required there;
                refused for an unconditional one).
            output_type (`"pil" | "np" | "pt"`, defaults to `"pil"`).
            return_dict (`bool`, defaults to `True`): an `ImagePipelineOutput` rather than a tuple.
            epsilon_cutoff (`float`, *optional*): ε-sampling (Hewitt et al. 2022, "Truncation Sampling as Language
                Model Desmoothing"): codes whose probability is below ε are never drawn, the rest keep their
                relative odds. Unlike a lower temperature it leaves the high-entropy choices (what scene to draw)
                alone and only cuts the long tail of unlikely codes (a wrong code on a shape's edge).
        """
        check_output_type(output_type)
        codes = self.sample_codes(batch_size, generator, temperature, top_k, class_labels, epsilon_cutoff)
        images = self.postprocess(self.vqvae.decode_indices(codes.to(self.vqvae.device)), output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    # ---- the first stage on its own -------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images → codes (B, h, w). Images as diffusers' pipelines take them (`GenZooImageProcessor`): PIL, numpy
        or tensors in [0, 1], so `pipe(output_type=...)` output reads back as it is; a tensor with negative values is
        taken as [-1, 1], with diffusers' warning."""
        x = self.preprocess(images).to(device=self.vqvae.device, dtype=self.vqvae.dtype)
        return self.vqvae.encode_indices(x)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, output_type: str = "pil"):
        """Codes (B, h, w) → images; codes outside [0, K) are a ValueError naming K."""
        check_output_type(output_type)
        return self.postprocess(self.vqvae.decode_indices(torch.as_tensor(codes).to(self.vqvae.device)), output_type)

    @torch.no_grad()
    def reconstruct(self, images, output_type: str = "pil"):
        """Encode to codes and decode back; images as `encode` takes them."""
        return self.decode(self.encode(images), output_type)

    @torch.no_grad()
    def code_likelihood(self, images, class_labels=None) -> dict[str, torch.Tensor]:
        """The prior's −ln p(codes(x)) per image: `nats_per_code` (B,) and `bits_per_dim` (B,), the code sequence's
        negative log-likelihood in bits per image dimension (C·H·W). Images as `encode` takes them."""
        x = self.preprocess(images).to(device=self.vqvae.device, dtype=self.vqvae.dtype)
        codes = self.vqvae.encode_indices(x)
        nats = code_nll(self.prior, codes_to_tokens(codes.to(self.prior.device), self.layout, class_labels))
        return {"nats_per_code": nats / codes[0].numel(), "bits_per_dim": nats_to_bits_per_dim(nats, x[0].numel())}
