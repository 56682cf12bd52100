"""A saved model folder is loaded reading each of its files once (the memory target of the foundation issue)."""

import collections
import os
import sys

import safetensors
import safetensors.torch

from hf_genzoo import AutoencoderPipeline, VAEModel

_watched = {"folder": None, "opens": collections.Counter()}


def _audit(event, args):
    folder = _watched["folder"]
    if folder and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        if path.startswith(folder):
            _watched["opens"][os.path.relpath(path, folder)] += 1


sys.addaudithook(_audit)  # audit hooks can't be removed: this one only counts while `folder` is set


def test_pipeline_folder_files_are_read_once(tmp_path, monkeypatch):
    AutoencoderPipeline(model=VAEModel(block_out_channels=(8, 16), norm_num_groups=4, sample_size=16)).save_pretrained(tmp_path)
    weight_loads = collections.Counter()
    for module, name in ((safetensors.torch, "load_file"), (safetensors.torch, "load"), (safetensors, "safe_open")):
        original = getattr(module, name)

        def spy(first, *args, _original=original, **kwargs):
            weight_loads[os.path.basename(os.fsdecode(first)) if isinstance(first, (str, os.PathLike)) else "<bytes>"] += 1
            return _original(first, *args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    _watched.update(folder=str(tmp_path), opens=collections.Counter())
    try:
        AutoencoderPipeline.from_pretrained(tmp_path)
    finally:
        _watched["folder"] = None
    opens = _watched["opens"]
    assert opens["model_index.json"] == 1 and opens[os.path.join("model", "config.json")] == 1
    assert all(count == 1 for count in opens.values()), dict(opens)
    assert weight_loads == {"diffusion_pytorch_model.safetensors": 1}, dict(weight_loads)
