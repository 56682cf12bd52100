"""The offline Hub fixture (tests/hub_server.py + `hub` / `hub_cache` in conftest.py) driven by the real clients.

Nothing is mocked: huggingface_hub, diffusers and safetensors talk HTTP to the loopback server that HF_ENDPOINT
points at. The `hub` server is shared by the session, so every test uses its own repo ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import huggingface_hub
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    create_repo,
    hf_hub_download,
    snapshot_download,
    upload_folder,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save_file


def _make_folder(folder: Path) -> dict[str, bytes]:
    """A small text file, a JSON file and a ~1 MB safetensors file (normally an LFS file on the Hub)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("hello hub\n")
    (folder / "config.json").write_text(json.dumps({"hidden": 4, "name": "tiny"}))
    rng = np.random.default_rng(0)
    save_file({"weight": rng.standard_normal((256, 1024)).astype(np.float32)}, str(folder / "model.safetensors"))
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _no_lfs_or_xet(hub) -> None:
    used = [r for r in hub.requests if "lfs" in r.lower() or "xet" in r.lower()]
    assert used == [], f"the client took an LFS/Xet path: {used}"


def test_environment_points_at_loopback_hub(hub, hub_cache):
    assert huggingface_hub.constants.ENDPOINT == hub.endpoint
    assert hub.endpoint.startswith("http://127.0.0.1:")
    assert huggingface_hub.constants.HF_HUB_CACHE == str(hub_cache)
    assert not huggingface_hub.constants.HF_HUB_OFFLINE
    assert HfApi().whoami()["name"] == "user"


def test_upload_folder_then_snapshot_download_roundtrip(hub, hub_cache, tmp_path):
    files = _make_folder(tmp_path / "src")
    assert len(files["model.safetensors"]) > 1_000_000

    url = create_repo("user/roundtrip")
    assert url.repo_id == "user/roundtrip"
    create_repo("user/roundtrip", exist_ok=True)  # 409 on the wire, success for the client
    commit = upload_folder(repo_id="user/roundtrip", folder_path=tmp_path / "src", commit_message="add files")

    assert commit.oid == hub.repo_sha("user/roundtrip")
    assert hub.list_files("user/roundtrip") == sorted([".gitattributes", *files])
    assert hub.read_file("user/roundtrip", "model.safetensors") == files["model.safetensors"]
    assert "POST /api/models/user/roundtrip/commit/main" in hub.requests
    _no_lfs_or_xet(hub)

    info = HfApi().model_info("user/roundtrip", files_metadata=True)
    assert info.sha == commit.oid
    assert {s.rfilename: s.size for s in info.siblings}["model.safetensors"] == len(files["model.safetensors"])

    snapshot = Path(snapshot_download("user/roundtrip"))
    assert snapshot.is_relative_to(hub_cache)
    assert snapshot.name == commit.oid
    for name, content in files.items():
        assert (snapshot / name).read_bytes() == content
    _no_lfs_or_xet(hub)


def test_hf_hub_download_one_file(hub, hub_cache, tmp_path):
    hub.add_files("user/single", {"config.json": '{"a": 1}', "weights/w.bin": b"\x00\x01\x02"})

    path = hf_hub_download("user/single", "weights/w.bin")
    assert Path(path).read_bytes() == b"\x00\x01\x02"
    assert Path(path).is_relative_to(hub_cache)
    assert json.loads(Path(hf_hub_download("user/single", "config.json")).read_text()) == {"a": 1}

    # an explicit cache_dir works too
    other = hf_hub_download("user/single", "config.json", cache_dir=tmp_path / "explicit")
    assert Path(other).is_relative_to(tmp_path / "explicit")

    with pytest.raises(EntryNotFoundError):
        hf_hub_download("user/single", "missing.txt")


def test_second_commit_changes_sha_and_snapshot(hub, hub_cache, tmp_path):
    files = _make_folder(tmp_path / "src")
    create_repo("user/two-commits")
    first = upload_folder(repo_id="user/two-commits", folder_path=tmp_path / "src").oid
    first_snapshot = Path(snapshot_download("user/two-commits"))
    assert first_snapshot.name == first

    # Re-uploading identical content is a no-op: preupload reports each file's oid, the client skips them all.
    assert upload_folder(repo_id="user/two-commits", folder_path=tmp_path / "src").oid == first

    # create_commit (the non-pipelined path) with an update and a deletion.
    second = HfApi().create_commit(
        "user/two-commits",
        operations=[
            CommitOperationAdd("notes.txt", b"changed\n"),
            CommitOperationAdd("nested/extra.txt", b"new file"),
            CommitOperationDelete("config.json"),
        ],
        commit_message="second",
    ).oid
    assert second != first and second == hub.repo_sha("user/two-commits")
    assert [c.commit_id for c in HfApi().list_repo_commits("user/two-commits")][:2] == [second, first]

    snapshot = Path(snapshot_download("user/two-commits"))
    assert snapshot.name == second
    assert (snapshot / "notes.txt").read_bytes() == b"changed\n"
    assert (snapshot / "nested" / "extra.txt").read_bytes() == b"new file"
    assert (snapshot / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (snapshot / "config.json").exists()
    assert (first_snapshot / "config.json").exists()  # the old snapshot is untouched
    assert sorted(HfApi().list_repo_files("user/two-commits")) == hub.list_files("user/two-commits")

    # upload_folder with delete_patterns (lists the remote tree, then deletes in the same commit)
    upload_folder(repo_id="user/two-commits", folder_path=tmp_path / "src", delete_patterns=["nested/*"])
    assert "nested/extra.txt" not in hub.list_files("user/two-commits")


def test_missing_repo_and_existing_repo_errors(hub, hub_cache):
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("user/does-not-exist")
    assert not HfApi().repo_exists("user/does-not-exist")

    create_repo("user/exists")
    with pytest.raises(HfHubHTTPError) as excinfo:
        create_repo("user/exists")  # exist_ok=False
    assert excinfo.value.response.status_code == 409
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/exists", ".gitattributes", revision="no-such-branch")


def test_dataset_repo_and_upload_file(hub, hub_cache):
    api = HfApi()
    api.create_repo("user/tiny-data", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data/train.csv", repo_id="user/tiny-data",
                    repo_type="dataset")
    assert hub.list_files("user/tiny-data", repo_type="dataset") == [".gitattributes", "data/train.csv"]
    path = hf_hub_download("user/tiny-data", "data/train.csv", repo_type="dataset")
    assert Path(path).read_bytes() == b"a,b\n1,2\n"
    with pytest.raises(RepositoryNotFoundError):  # same name, wrong repo type
        hf_hub_download("user/tiny-data", "data/train.csv")


def _tiny_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(4, 8),
        norm_num_groups=4,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )


def _assert_same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert (sa[key] == sb[key]).all(), key


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated")  # diffusers passes it
def test_diffusers_model_push_to_hub_and_from_pretrained(hub, hub_cache):
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = _tiny_unet()
    unet.push_to_hub("user/tiny-unet")
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= set(hub.list_files("user/tiny-unet"))
    _no_lfs_or_xet(hub)

    loaded = UNet2DModel.from_pretrained("user/tiny-unet")
    _assert_same_weights(unet, loaded)
    assert tuple(loaded.config.block_out_channels) == (4, 8)
    assert any(p.is_relative_to(hub_cache) for p in hub_cache.rglob("diffusion_pytorch_model.safetensors"))


def test_diffusers_pipeline_push_to_hub_and_from_pretrained(hub, hub_cache):
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(0)
    pipe = DDPMPipeline(unet=_tiny_unet(), scheduler=DDPMScheduler(num_train_timesteps=10))
    pipe.push_to_hub("user/tiny-ddpm")
    files = set(hub.list_files("user/tiny-ddpm"))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json"} <= files

    loaded = DDPMPipeline.from_pretrained("user/tiny-ddpm")
    _assert_same_weights(pipe.unet, loaded.unet)
    assert loaded.scheduler.config.num_train_timesteps == 10
    images = loaded(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                    output_type="np").images
    assert images.shape == (1, 8, 8, 1)
    _no_lfs_or_xet(hub)
