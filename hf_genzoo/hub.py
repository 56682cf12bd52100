"""The Hub round trip: resolve a repo id to a local snapshot, render and write model cards.

diffusers 0.42's `DiffusionPipeline.from_pretrained` looks a repo's `_class_name` up in diffusers only, so a
repo whose components live in hf_genzoo can't be loaded by repo id through diffusers' download path. Our
pipelines resolve the snapshot with `huggingface_hub.snapshot_download` first and load the local folder.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData, snapshot_download
from huggingface_hub.repocard_data import EvalResult

LIBRARY_NAME = "hf_genzoo"


def resolve_pretrained_folder(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    allow_patterns: list[str] | None = None,
) -> str:
    """A local folder as it is; anything else is a Hub repo id, downloaded (or found in the cache)."""
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name):
        raise ValueError(f"{name!r} is neither a saved folder nor a Hub repo id of the form 'user/name'")
    return snapshot_download(
        name,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        allow_patterns=allow_patterns,
    )


def load_model_component(name_or_path: str | os.PathLike, model_cls, **kwargs):
    """A `model_cls` (a ModelMixin subclass) from a folder or Hub id that holds one directly, or as a component of
    a saved pipeline (the first component of that class in its model_index.json). Other keyword arguments go to
    `model_cls.from_pretrained`."""
    folder = resolve_pretrained_folder(name_or_path)
    index = os.path.join(folder, "model_index.json")
    if os.path.isfile(index):
        with open(index) as f:
            components = {name: value for name, value in json.load(f).items() if isinstance(value, list)}
        names = [name for name, (_, class_name) in components.items() if class_name == model_cls.__name__]
        if not names:
            found = {name: class_name for name, (_, class_name) in components.items() if class_name}
            raise ValueError(f"{name_or_path} holds no {model_cls.__name__} (its components: {found})")
        return model_cls.from_pretrained(folder, subfolder=names[0], **kwargs)
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            class_name = json.load(f).get("_class_name")
        if class_name and class_name != model_cls.__name__:
            raise ValueError(f"{name_or_path} holds {class_name}, not {model_cls.__name__}")
    return model_cls.from_pretrained(folder, **kwargs)


def model_card_template(name: str) -> Path:
    """Path of a template shipped in `hf_genzoo.model_cards` (the repository's `model_cards/` folder)."""
    path = resources.files("hf_genzoo.model_cards") / f"{name}.md"
    if not path.is_file():
        available = sorted(p.name[:-3] for p in resources.files("hf_genzoo.model_cards").iterdir() if p.name.endswith(".md"))
        raise ValueError(f"no model card template {name!r}; available: {available}")
    return Path(str(path))


def write_model_card(
    folder: str | os.PathLike,
    template: str,
    *,
    model_name: str,
    pipeline_class: str,
    tags: list[str],
    datasets: list[str] | None = None,
    metrics: dict[str, float] | None = None,
    dataset_name: str = "",
    task_type: str = "unconditional-image-generation",
    base_model: str | None = None,
    **fields: Any,
) -> ModelCard:
    """Render `model_cards/{template}.md` into `folder/README.md`, YAML metadata and `model-index` included;
    `base_model` (a Hub repo id) marks a fine-tuned model in the metadata."""
    metrics = metrics or {}
    eval_results = [
        EvalResult(
            task_type=task_type,
            dataset_type=dataset_name or "custom",
            dataset_name=dataset_name or "custom",
            metric_type=key,
            metric_name=key,
            metric_value=float(value),
        )
        for key, value in metrics.items()
        if isinstance(value, (int, float))
    ]
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        tags=[LIBRARY_NAME, *tags],
        datasets=datasets or None,
        metrics=sorted(metrics) or None,
        model_name=model_name,
        eval_results=eval_results or None,
        base_model=base_model,
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(model_card_template(template)),
        model_name=model_name,
        pipeline_class=pipeline_class,
        metrics=metrics,
        metrics_json=json.dumps(metrics, indent=2, sort_keys=True),
        **fields,
    )
    card.save(os.path.join(folder, "README.md"))
    return card
