"""The base every hf_genzoo model shares with diffusers' `ModelMixin`: safetensors only, never pickles."""

from __future__ import annotations

import os

from diffusers.models.modeling_utils import ModelMixin

from ..hub import cache_only_reason, check_hub_repo, naming_corrupt_weights, not_found_error


class GenZooModelMixin(ModelMixin):
    """`ModelMixin` whose `from_pretrained` reads safetensors only: a missing weights file is an error naming
    `diffusion_pytorch_model.safetensors`, not a silent fall-back to unpickling a `.bin` file. A name that is
    neither a folder nor a Hub repo, and an incomplete or corrupt weights file, fail in one sentence naming it."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        kwargs.setdefault("use_safetensors", True)
        name = str(pretrained_model_name_or_path)
        if os.path.isdir(name):
            with naming_corrupt_weights(name):
                return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        reachable = check_hub_repo(name, kwargs.get("revision"), kwargs.get("token"), kwargs.get("local_files_only", False))
        if reachable is True:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        try:  # offline, or the Hub out of reach: the cache only
            return super().from_pretrained(pretrained_model_name_or_path, **{**kwargs, "local_files_only": True})
        except OSError:
            raise not_found_error(name, cache_only_reason(reachable)) from None
