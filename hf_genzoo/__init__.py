"""hf_genzoo: generative models as diffusers-compatible building blocks."""
__version__ = "0.1.0"
from .pipelines import *  # noqa
