"""What every hf_genzoo pipeline shares: loading by Hub repo id, a model card on save, push to the Hub."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from huggingface_hub import create_repo, upload_folder

from hf_genzoo.hub import naming_corrupt_weights, resolve_pretrained_folder, write_model_card

OUTPUT_TYPES = ("pil", "np", "pt")


class GenZooPipeline(DiffusionPipeline):
    """A `DiffusionPipeline` whose `from_pretrained` also takes a Hub repo id of a repo holding hf_genzoo
    components, and whose `save_pretrained` writes an hf_genzoo model card."""

    model_card_template = "autoencoder"
    model_card_tags: tuple[str, ...] = ()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a saved folder or a Hub repo id (downloaded with `snapshot_download`). A name that is neither,
        and an incomplete or corrupt weights file, fail in one sentence naming it."""
        folder = resolve_pretrained_folder(
            pretrained_model_name_or_path,
            revision=kwargs.pop("revision", None),
            cache_dir=kwargs.pop("cache_dir", None),
            token=kwargs.pop("token", None),
            local_files_only=kwargs.pop("local_files_only", False),
        )
        with naming_corrupt_weights(folder):
            return super().from_pretrained(folder, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs):
        """Save components (safetensors), `model_index.json` and, unless one exists, a model card."""
        kwargs["safe_serialization"] = True
        repo_id = kwargs.pop("repo_id", None)
        hub_kwargs = {k: kwargs.pop(k) for k in ("commit_message", "private", "token", "create_pr") if k in kwargs}
        super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        if not os.path.exists(os.path.join(save_directory, "README.md")):
            write_model_card(
                save_directory,
                self.model_card_template,
                model_name=os.path.basename(os.path.abspath(save_directory)),
                pipeline_class=type(self).__name__,
                tags=list(self.model_card_tags),
                **self.model_card_fields(),
            )
        if push_to_hub:
            repo_id = repo_id or os.path.basename(os.path.abspath(save_directory))
            _upload(save_directory, repo_id, **hub_kwargs)

    def model_card_fields(self) -> dict:
        """Template fields that describe this pipeline's components (for a card written without training numbers)."""
        return {}

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        **kwargs,
    ):
        """Save to a temporary folder and upload it whole (model card included) with `huggingface_hub`."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, **kwargs)
            return _upload(folder, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr)

    # ---- images in and out: diffusers' convention, one processor per pipeline ----------------------------

    def preprocess(self, images) -> torch.Tensor:
        """Images as diffusers' pipelines take them (see `GenZooImageProcessor`) → (B, C, H, W) in [-1, 1] on the
        execution device."""
        return self.image_processor.preprocess(images).to(self._execution_device)

    def postprocess(self, images: torch.Tensor, output_type: str):
        """(B, C, H, W) in [-1, 1] → list of PIL images, (B, H, W, C) numpy in [0, 1], or a tensor in [0, 1]."""
        check_output_type(output_type)
        return self.image_processor.postprocess(images.detach().float().cpu(), output_type=output_type)


def _upload(folder, repo_id: str, commit_message=None, private=None, token=None, create_pr=False):
    create_repo(repo_id, private=private, token=token, exist_ok=True)
    return upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message or "Upload hf_genzoo pipeline",
        token=token,
        create_pr=create_pr,
    )


def check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")


class GenZooImageProcessor(VaeImageProcessor):
    r"""
    diffusers' `VaeImageProcessor` for the images of one pipeline, with `num_channels` channels: the same rules in
    and out as diffusers' pipelines, and a short `ValueError` for what it cannot read.

    In (`preprocess`, → (N, C, H, W) float32 in [-1, 1]):
        - PIL images (converted to RGB for 3 channels, to L for 1), or a list of them;
        - numpy arrays (H, W, C) or (N, H, W, C) in [0, 1] (a 1-channel model also takes (H, W) and (N, H, W));
        - tensors (N, C, H, W) or (C, H, W) in [0, 1] (a 1-channel model also takes (H, W) and (N, H, W));
        - a list of arrays or of tensors, concatenated along the batch;
        - uint8 arrays and tensors are read as 0–255, as PIL images are;
        - as in diffusers, an array or tensor with negative values is taken as already in [-1, 1], with diffusers'
          deprecation warning (a [-1, 1] batch without a negative value would be misread: give [0, 1]).
    Values outside [0, 1] (or [-1, 1] for input with negative values), another number of channels, or another type
    are refused. No resizing: the size is the pipeline's to check.

    Out (`postprocess`): diffusers' own, "pil" | "np" | "pt" in [0, 1].

    Args:
        num_channels (`int`, defaults to 3): the channels of the pipeline's images (1 for MNIST-like data).
        vae_scale_factor (`int`, defaults to 1): the first stage's downsampling factor (used by diffusers' helpers).
    """

    def __init__(self, num_channels: int = 3, vae_scale_factor: int = 1):
        super().__init__(
            vae_scale_factor=vae_scale_factor,
            vae_latent_channels=0,  # every tensor given here is an image, never latents passed through
            do_resize=False,
            do_normalize=True,
            do_convert_rgb=num_channels == 3,
            do_convert_grayscale=num_channels == 1,
        )
        self.register_to_config(num_channels=num_channels)

    def preprocess(self, image, height=None, width=None, resize_mode: str = "default", crops_coords=None) -> torch.Tensor:
        # 1. one batch of one kind, arrays and tensors as (N, H, W, C) / (N, C, H, W), uint8 read as 0–255
        image = self._batch(image)
        # 2. channels and range, before diffusers reads it
        num_channels = self.config.num_channels
        if not isinstance(image, list):
            channels = image.shape[-1] if isinstance(image, np.ndarray) else image.shape[1]
            if channels != num_channels:
                raise ValueError(
                    f"expected images with {num_channels} channel(s), got {channels} (shape {tuple(image.shape)} read as "
                    f"{'(N, H, W, C)' if isinstance(image, np.ndarray) else '(N, C, H, W)'})"
                )
            low, high = float(image.min()), float(image.max())
            if high > 1 or low < -1:
                raise ValueError(
                    f"images must lie in [0, 1] (diffusers' convention) or, with negative values, in [-1, 1], got "
                    f"values in [{low:.4g}, {high:.4g}]"
                )
        # 3. diffusers' rules: PIL conversion, the [-1, 1] warning, [0, 1] → [-1, 1]
        x = super().preprocess(image, height, width, resize_mode, crops_coords)
        if x.shape[1] != num_channels:  # a PIL image in a mode that has no conversion to `num_channels`
            raise ValueError(f"expected images with {num_channels} channel(s), got {x.shape[1]} from the PIL images")
        return x.float()

    def _batch(self, image):
        """PIL image(s) as a list; arrays and tensors, or lists of them, as one (N, H, W, C) array or (N, C, H, W)
        tensor, floats."""
        if isinstance(image, tuple):
            image = list(image)
        items = image if isinstance(image, list) else [image]
        kinds = {type(item) for item in items}
        if not items or len(kinds) != 1 or not issubclass(next(iter(kinds)), (PIL.Image.Image, np.ndarray, torch.Tensor)):
            given = (
                "an empty list" if not items
                else f"a list mixing {', '.join(sorted(kind.__name__ for kind in kinds))}" if len(kinds) > 1
                else next(iter(kinds)).__name__
            )
            raise ValueError(
                f"images must be PIL images, numpy arrays or torch tensors (or a list of one of them), got {given}"
            )
        if isinstance(items[0], PIL.Image.Image):
            return items
        batch = [self._as_4d(item) for item in items]
        shapes = {tuple(item.shape[1:]) for item in batch}
        if len(shapes) > 1:
            raise ValueError(f"images in one list must have one shape, got {sorted(shapes)}")
        return np.concatenate(batch) if isinstance(batch[0], np.ndarray) else torch.cat(batch)

    def _as_4d(self, image):
        """One array (H, W), (H, W, C), (N, H, W) or (N, H, W, C) → (N, H, W, C); one tensor (H, W), (C, H, W),
        (N, H, W) or (N, C, H, W) → (N, C, H, W) (3-D is (N, H, W) for a 1-channel processor, as diffusers' grayscale
        rule reads it); floats, uint8 divided by 255."""
        grayscale = self.config.num_channels == 1
        if image.ndim not in (2, 3, 4):
            raise ValueError(f"an image array or tensor must have 2 to 4 dimensions, got shape {tuple(image.shape)}")
        if isinstance(image, np.ndarray):
            if image.dtype == np.uint8:
                image = image.astype(np.float32) / 255
            elif not np.issubdtype(image.dtype, np.floating):
                raise ValueError(f"numpy images must be float in [0, 1] or uint8, got dtype {image.dtype}")
            if image.ndim == 2:
                image = image[None, :, :, None]  # (H, W) → (1, H, W, 1)
            elif image.ndim == 3 and grayscale and image.shape[-1] not in (1, 3, 4):
                image = image[..., None]  # (N, H, W) → (N, H, W, 1)
            elif image.ndim == 3:
                image = image[None]  # (H, W, C) → (1, H, W, C)
            return image.astype(np.float32, copy=False)
        if image.dtype == torch.uint8:
            image = image.float() / 255
        elif not image.is_floating_point():
            raise ValueError(f"tensor images must be float in [0, 1] or uint8, got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[None, None]  # (H, W) → (1, 1, H, W)
        elif image.ndim == 3:
            image = image[:, None] if grayscale else image[None]  # (N, H, W) → (N, 1, H, W); (C, H, W) → (1, C, H, W)
        return image.float()
