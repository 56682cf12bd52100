"""The Hub round trip: resolve a repo id to a local snapshot, render and write model cards.

diffusers 0.42's `DiffusionPipeline.from_pretrained` looks a repo's `_class_name` up in diffusers only, so a
repo whose components live in hf_genzoo can't be loaded by repo id through diffusers' download path. Our
pipelines resolve the snapshot with `huggingface_hub.snapshot_download` first and load the local folder.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from huggingface_hub import HfApi, ModelCard, ModelCardData, constants, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
)
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
    """A local folder as it is; anything else is a Hub repo id, downloaded (or found in the cache). A name that is
    neither fails in one sentence (`check_hub_repo`); so does a repo id when the Hub is out of reach and the cache
    holds no copy."""
    if os.path.isdir(name_or_path):
        return str(name_or_path)
    name = str(name_or_path)
    reachable = check_hub_repo(name, revision=revision, token=token, local_files_only=local_files_only)
    try:
        return snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only or not reachable,
            allow_patterns=allow_patterns,
        )
    except LocalEntryNotFoundError:
        raise not_found_error(name, cache_only_reason(reachable)) from None
    except GatedRepoError:
        raise
    except RepositoryNotFoundError:
        raise not_found_error(name, NO_SUCH_REPO) from None


# seconds for the one look-up of a repo id on the Hub before anything is downloaded
HUB_LOOKUP_TIMEOUT = 10.0
NO_SUCH_REPO = "a Hub repo (the Hub has none of that id; a private one needs `hf auth login`)"


def not_found_error(name: str, reason: str) -> ValueError:
    """The one sentence for a name that `from_pretrained` can load from nowhere."""
    return ValueError(f"{name!r} is neither a saved folder (none at {os.path.abspath(os.path.expanduser(name))}) nor {reason}")


def cache_only_reason(reachable: bool | None) -> str:
    why = "the Hub cannot be reached" if reachable is False else "offline (HF_HUB_OFFLINE=1 or local_files_only)"
    return f"a Hub repo in the local cache ({why}, and the cache holds no copy of it)"


def check_hub_repo(name: str, revision: str | None = None, token: str | bool | None = None, local_files_only: bool = False) -> bool | None:
    """For a `from_pretrained` name that is not a folder: a `ValueError` in one sentence when it looks like a path,
    is not a valid repo id, or the Hub has no such repo (one look-up with a short time-out, instead of the download
    path's retries and its connection traceback). Returns True when the Hub answered, False when it could not be
    reached (the caller then reads the cache only), None when offline (no look-up)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.path.exists(name):
        reason = "a Hub repo id ('name' or 'user/name')" if not os.path.isfile(name) else "a Hub repo id (it is a file; pass the folder that holds it)"
        raise not_found_error(name, reason)
    if local_files_only or constants.HF_HUB_OFFLINE:
        return None
    try:
        HfApi().model_info(name, revision=revision, token=token, timeout=HUB_LOOKUP_TIMEOUT)
    except HFValidationError:
        raise not_found_error(name, "a valid Hub repo id ('name' or 'user/name')") from None
    except GatedRepoError:
        return True  # it exists: the download says what access it needs
    except RepositoryNotFoundError:
        raise not_found_error(name, NO_SUCH_REPO) from None
    except HfHubHTTPError as error:
        if getattr(error.response, "status_code", None) == 404 and "revision" not in str(error).lower():
            raise not_found_error(name, NO_SUCH_REPO) from None
        return True  # a missing revision or a server error: the download reports it
    except Exception:  # no connection (refused, no DNS, time-out): the cache may still hold it
        return False
    return True


class CorruptWeightsError(OSError, ValueError):
    """A weights file that is incomplete or corrupt (an interrupted download, copy or save)."""


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a `.safetensors` file's layout, or None. The format: an 8-byte little-endian header length
    N, N bytes of JSON naming each tensor's `data_offsets` [begin, end) in the byte buffer that follows; so the file
    must be exactly 8 + N + the largest `end` bytes long. Reads the header only, never the tensors."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        if size < 8 or header_length > size - 8:
            return f"{size} bytes, shorter than its header"
        try:
            header = json.loads(f.read(header_length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header"
    if size != 8 + header_length + end:
        return f"{size} bytes where its header says {8 + header_length + end}"
    return None


def corrupt_weights_error(folder: str | os.PathLike) -> CorruptWeightsError | None:
    """A `CorruptWeightsError` naming the first `.safetensors` file under `folder` whose layout is wrong, or None."""
    for root, _, files in sorted(os.walk(folder)):
        for name in sorted(files):
            if name.endswith(".safetensors"):
                path = os.path.join(root, name)
                problem = safetensors_problem(path)
                if problem:
                    return CorruptWeightsError(f"{path} is incomplete or corrupt ({problem}): save or download it again")
    return None


@contextmanager
def naming_corrupt_weights(folder: str | os.PathLike) -> Iterator[None]:
    """When loading from `folder` fails, and a weights file in it is incomplete or corrupt, raise that instead
    (diffusers' own error is a generic OSError after a UnicodeDecodeError). The files are checked only on failure."""
    try:
        yield
    except Exception as error:
        corrupt = corrupt_weights_error(folder) if os.path.isdir(folder) else None
        if corrupt is None:
            raise
        raise corrupt from error


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
        with naming_corrupt_weights(folder):
            return model_cls.from_pretrained(folder, subfolder=names[0], **kwargs)
    config = os.path.join(folder, "config.json")
    if os.path.isfile(config):
        with open(config) as f:
            class_name = json.load(f).get("_class_name")
        if class_name and class_name != model_cls.__name__:
            raise ValueError(f"{name_or_path} holds {class_name}, not {model_cls.__name__}")
    with naming_corrupt_weights(folder):
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
