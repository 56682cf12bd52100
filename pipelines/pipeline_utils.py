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

    # ---- image conversion shared by the pipelines ---------------------------------------------------

    def _image_processor(self) -> VaeImageProcessor:
        return VaeImageProcessor(vae_scale_factor=1, do_resize=False, do_normalize=True)

    def postprocess(self, images: torch.Tensor, output_type: str):
        """(B, C, H, W) in [-1, 1] → list of PIL images, (B, H, W, C) numpy in [0, 1], or a tensor in [0, 1]."""
        check_output_type(output_type)
        return self._image_processor().postprocess(images.detach().float().cpu(), output_type=output_type)


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


def images_to_tensor(images, num_channels: int, device=None, dtype=None) -> torch.Tensor:
    """PIL image(s), numpy (H, W, C) in [0, 1] or uint8, or tensors (C, H, W)/(B, C, H, W) in [-1, 1]
    → a (B, C, H, W) tensor in [-1, 1] with `num_channels` channels (PIL images are converted)."""
    if isinstance(images, PIL.Image.Image):
        images = [images]
    if isinstance(images, torch.Tensor):
        batch = images
    elif isinstance(images, np.ndarray):
        batch = _numpy_to_tensor(images if images.ndim == 4 else images[None])
    else:
        tensors = []
        for image in images:
            if isinstance(image, PIL.Image.Image):
                image = np.asarray(image.convert("L" if num_channels == 1 else "RGB"))
            if isinstance(image, np.ndarray):
                tensors.append(_numpy_to_tensor(image[None])[0])
            elif isinstance(image, torch.Tensor):
                tensors.append(image if image.ndim == 3 else image[0])
            else:
                raise ValueError(f"images must be PIL images, numpy arrays or tensors, got {type(image).__name__}")
        batch = torch.stack(tensors)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.shape[1] != num_channels:
        raise ValueError(f"expected images with {num_channels} channel(s), got shape {tuple(batch.shape)}")
    return batch.to(device=device, dtype=dtype)


def _numpy_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(B, H, W[, C]) uint8 or float in [0, 1] → (B, C, H, W) float in [-1, 1]."""
    if array.ndim == 3:
        array = array[..., None]  # (B, H, W, 1)
    values = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    return torch.from_numpy(values).permute(0, 3, 1, 2) * 2 - 1  # (B, C, H, W)
