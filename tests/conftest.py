"""Shared pytest configuration for the hf_genzoo test suite.

Sections:
  1. Offline Hugging Face Hub  (`hub`, `hub_cache`)
  2. Training scripts run in-process  (`fresh_accelerator_state`; tests/scripts.py loads a script as a module)
  -- add new sections below --
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

# ======================================================================================================================
# 1. Offline Hugging Face Hub
#
# huggingface_hub reads its configuration (HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, ...) into
# `huggingface_hub.constants` when it is first imported, so the environment is set up here, when pytest imports this
# conftest, before any test module (or hf_genzoo / diffusers / transformers) imports huggingface_hub. The loopback
# server itself (tests/hub_server.py) only starts when a test asks for the `hub` fixture.
#
#   hub        (session) a running tests.hub_server.HubServer: `.endpoint`, `.root` (storage dir),
#              `.list_files(repo_id)`, `.read_file(repo_id, path)`, `.repo_sha(repo_id)`, `.add_files(repo_id, {...})`,
#              `.requests` (log of "METHOD /path"), `.reset()`. It is shared by the whole session: use distinct repo ids
#              per test (or call `hub.reset()`). Repos live under `<root>/models/<ns>/<name>/` (datasets/, spaces/).
#   hub_cache  (function) a fresh, empty HF_HUB_CACHE for one test. It patches `huggingface_hub.constants.HF_HUB_CACHE`,
#              which huggingface_hub, diffusers and transformers all read at call time, so `from_pretrained(repo_id)`,
#              `snapshot_download(repo_id)`, `hf_hub_download(...)` use it without any `cache_dir=` argument.
#              Passing `cache_dir=hub_cache` explicitly is equivalent.
# ======================================================================================================================
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HUB_PORT = _free_loopback_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"
_HF_HOME = Path(tempfile.mkdtemp(prefix="hf_genzoo_tests_hf_home_"))
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

os.environ.update(
    HF_ENDPOINT=HUB_ENDPOINT,
    HF_HOME=str(_HF_HOME),  # token file, xet cache, assets... all derive from it
    HF_HUB_CACHE=str(_HF_HOME / "hub"),
    HF_XET_CACHE=str(_HF_HOME / "xet"),
    HF_TOKEN="hf_dummy_token_for_tests",
    HF_HUB_DISABLE_TELEMETRY="1",
    DISABLE_TELEMETRY="1",  # diffusers / transformers legacy name
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_SYMLINKS_WARNING="1",
    HF_GENZOO_CACHE=str(_HF_HOME / "hf_genzoo"),  # the training scripts' preprocessed images and latents
)
for _var in (
    "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",  # either one puts huggingface_hub offline
    "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH",
    "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
    "HF_HUB_DISABLE_XET",  # keep the client's default code path (hf_xet installed); the server turns Xet off
    "HF_HUB_ENABLE_HF_TRANSFER",
):
    os.environ.pop(_var, None)
# never send loopback traffic to a proxy
os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
    filter(None, [os.environ.get("NO_PROXY") or os.environ.get("no_proxy"), "127.0.0.1", "localhost"])
)

try:  # works whether or not tests/ is a package
    from .hub_server import HubServer
except ImportError:
    from hub_server import HubServer


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """The loopback Hub server that HF_ENDPOINT points at (started once per session)."""
    import huggingface_hub.constants

    if huggingface_hub.constants.ENDPOINT != HUB_ENDPOINT:
        raise RuntimeError(
            f"huggingface_hub was imported before tests/conftest.py set HF_ENDPOINT (it points at "
            f"{huggingface_hub.constants.ENDPOINT!r}, expected {HUB_ENDPOINT!r}); a pytest plugin or an earlier "
            "conftest must not import huggingface_hub."
        )
    try:
        server = HubServer(root=tmp_path_factory.mktemp("hub_storage"), port=HUB_PORT)
    except OSError as e:
        raise RuntimeError(f"could not bind the test Hub on 127.0.0.1:{HUB_PORT}: {e}") from e
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty Hub cache folder for this test (returned as a Path)."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_hub_cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # for subprocesses
    return cache


# ======================================================================================================================
# 2. Training scripts run in-process
#
#   fresh_accelerator_state  (function) accelerate keeps one AcceleratorState per process; each in-process run of a
#                            training script builds its own Accelerator (another mixed precision, another seed), so the
#                            state is reset before and after the test. Modules that run scripts use it as
#                            `pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")`.
# ======================================================================================================================
@pytest.fixture
def fresh_accelerator_state():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
