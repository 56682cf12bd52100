"""hf_genzoo: classic and modern generative models as diffusers-compatible building blocks.

`import hf_genzoo` before loading a saved hf_genzoo pipeline with diffusers: diffusers 0.42 resolves a
component by importing the library named in `model_index.json` ("hf_genzoo") and reading the class and
the base-class names (`ModelMixin`, `SchedulerMixin`, ...) from it, so they are bound here.
"""

__version__ = "0.1.0"

from diffusers import ConfigMixin, DiffusionPipeline, ModelMixin, SchedulerMixin  # noqa: F401  (diffusers' loader)

from .models import (
    AutoencoderModel,
    DCGANDiscriminator,
    DCGANGenerator,
    DiagonalGaussian,
    GumbelQuantizer,
    MinibatchStd,
    VAEModel,
    VectorQuantizer,
    VQVAEModel,
)
from .models import EditPairLatents, encode_edit_pair, widen_conv_in
from .schedulers import GenZooDDIMInverseScheduler, GenZooDDIMScheduler, GenZooDDPMScheduler
from .attention import (
    AttentionControl,
    AttentionControlEdit,
    AttentionLayer,
    AttentionRefine,
    AttentionReplace,
    AttentionReweight,
    AttentionStore,
    EmptyControl,
    LocalBlend,
    PromptToPromptAttnProcessor,
    register_attention_control,
)
from .pipelines import AutoencoderPipeline, GANPipeline, GenZooPipeline, LatentDiffusionPipeline, PixelDiffusionPipeline, VQVAEPipeline
from .pipelines import InstructPix2PixPipeline
from .pipelines import AttentionMapsOutput, Inversion, PromptToPromptPipeline, PromptToPromptPipelineOutput

__all__ = [
    "AutoencoderModel",
    "AutoencoderPipeline",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "GANPipeline",
    "MinibatchStd",
    "DiagonalGaussian",
    "GenZooDDIMInverseScheduler",
    "GenZooDDIMScheduler",
    "GenZooDDPMScheduler",
    "GenZooPipeline",
    "LatentDiffusionPipeline",
    "PixelDiffusionPipeline",
    "PromptToPromptPipeline",
    "PromptToPromptPipelineOutput",
    "AttentionMapsOutput",
    "Inversion",
    "VAEModel",
    "VectorQuantizer",
    "GumbelQuantizer",
    "VQVAEModel",
    "VQVAEPipeline",
    "AttentionControl",
    "AttentionControlEdit",
    "AttentionLayer",
    "AttentionRefine",
    "AttentionReplace",
    "AttentionReweight",
    "AttentionStore",
    "EmptyControl",
    "LocalBlend",
    "PromptToPromptAttnProcessor",
    "register_attention_control",
]
__all__ += ["EditPairLatents", "InstructPix2PixPipeline", "encode_edit_pair", "widen_conv_in"]
