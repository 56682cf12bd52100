"""Pipelines (inference only), one file per DiffusionPipeline subclass; installed as hf_genzoo.pipelines."""

from .pipeline_autoencoder import AutoencoderPipeline
from .pipeline_gan import GANPipeline, save_gif
from .pipeline_instruct_pix2pix import InstructPix2PixPipeline
from .pipeline_latent_diffusion import LatentDiffusionPipeline
from .pipeline_pixel_diffusion import PixelDiffusionPipeline
from .pipeline_prompt_to_prompt import AttentionMapsOutput, Inversion, PromptToPromptPipeline, PromptToPromptPipelineOutput
from .pipeline_utils import GenZooPipeline
from .pipeline_vqvae import VQVAEPipeline

__all__ = ["AutoencoderPipeline", "GANPipeline", "LatentDiffusionPipeline", "GenZooPipeline", "PixelDiffusionPipeline", "VQVAEPipeline", "save_gif"]
__all__ += ["AttentionMapsOutput", "Inversion", "PromptToPromptPipeline", "PromptToPromptPipelineOutput"]
__all__ += ["InstructPix2PixPipeline"]
