"""The base every hf_genzoo model shares with diffusers' `ModelMixin`: safetensors only, never pickles."""

from __future__ import annotations

from diffusers.models.modeling_utils import ModelMixin


class GenZooModelMixin(ModelMixin):
    """`ModelMixin` whose `from_pretrained` reads safetensors only: a missing weights file is an error naming
    `diffusion_pytorch_model.safetensors`, not a silent fall-back to unpickling a `.bin` file."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        kwargs.setdefault("use_safetensors", True)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
