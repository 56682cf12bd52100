"""A tiny offline stand-in for the Hugging Face Hub HTTP API (stdlib only).

It implements the subset of the Hub API that ``huggingface_hub`` (checked against 2.4.0) uses for the repo-id
round trip, so that tests exercise the *real* client code: ``create_repo`` / ``upload_folder`` / ``create_commit`` /
``push_to_hub`` on the way up, ``repo_info`` / ``snapshot_download`` / ``hf_hub_download`` / ``from_pretrained`` on
the way down. Nothing is mocked: the client speaks HTTP to a ``ThreadingHTTPServer`` bound to 127.0.0.1.

Routes (``{type}`` is ``models``, ``datasets`` or ``spaces``; ``{prefix}`` is ``""``, ``datasets/`` or ``spaces/``):

    POST   /api/repos/create                       create_repo (409 + {"url": ...} when it exists -> exist_ok)
    DELETE /api/repos/delete                       delete_repo
    GET    /api/whoami-v2                          whoami (a fixed user called "user")
    POST   /api/validate-yaml                      README.md metadata check done by create_commit (always valid)
    GET    /api/agent-harnesses                    registry the client fetches for its User-Agent (empty)
    GET    /api/{type}/{ns}/{name}                 model_info / dataset_info / space_info (with `siblings`)
    GET    /api/{type}/{ns}/{name}/revision/{rev}  same, at a revision
    GET    /api/{type}/{ns}/{name}/tree/{rev}[/{path}]   list_repo_tree (single page, ?recursive=)
    POST   /api/{type}/{ns}/{name}/paths-info/{rev}      get_paths_info
    GET    /api/{type}/{ns}/{name}/refs            list_repo_refs
    GET    /api/{type}/{ns}/{name}/commits/{rev}   list_repo_commits
    POST   /api/{type}/{ns}/{name}/preupload/{rev} answers uploadMode "regular" for *every* file
    POST   /api/{type}/{ns}/{name}/commit/{rev}    NDJSON commit: "file" (base64), "deletedFile", "deletedFolder"
    HEAD   /{prefix}{ns}/{name}/resolve/{rev}/{path}   file metadata: ETag, X-Repo-Commit, Content-Length
    GET    /{prefix}{ns}/{name}/resolve/{rev}/{path}   file content (honours a simple `Range: bytes=a-b`)

Why no LFS / Xet: the client asks ``preupload`` how to send each file and only takes the LFS (or, when ``hf_xet`` is
installed, the Xet) path for files the server answers ``"lfs"`` for. Answering ``"regular"`` everywhere makes every
file travel base64-encoded inside the commit NDJSON. On the way down the client only uses Xet when a HEAD response
carries ``X-Xet-Hash`` (or a tree entry has ``xetHash``); this server never sends either, so downloads are plain GETs
served directly (no redirect, hence no ``X-Linked-Etag`` / ``X-Linked-Size`` / ``Location``).

Storage: repo ``ns/name`` of type ``model`` is a plain folder ``<root>/models/ns/name/`` holding the files of ``main``.
Revision semantics are deliberately minimal: one ``main`` branch per repo, whose commit sha changes at every commit.
A revision is accepted if it is ``main``, ``refs/heads/main`` or the current head sha; anything else (including
an older sha) answers 404 ``RevisionNotFound``. Repo metadata (sha, history) lives in memory for the server's lifetime.

Errors follow the Hub's conventions (``X-Error-Code`` header + JSON ``{"error": ...}``), so the client raises
``RepositoryNotFoundError``, ``RevisionNotFoundError`` and ``RemoteEntryNotFoundError`` (an ``EntryNotFoundError``).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import re
import shutil
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlsplit

USER = "user"  # the identity every token maps to (whoami, default namespace of create_repo)
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"

_API_REPO = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/(.*))?$")
_RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as `oid` / ETag for non-LFS files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class HubError(Exception):
    """Raised inside a handler; turned into an HTTP error response in the Hub's style."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class _Repo:
    def __init__(self, repo_type: str, repo_id: str, private: bool):
        self.repo_type, self.repo_id, self.private = repo_type, repo_id, private
        self.created_at = _now()
        self.sha = ""
        self.commits: list[dict] = []  # newest first, like the Hub


class HubServer:
    """The loopback Hub: ``start()``, use ``endpoint``, ``stop()`` (also usable as a context manager).

    Besides the HTTP API it offers a few helpers for tests: ``list_files``, ``read_file``, ``repo_sha``,
    ``repo_dir``, ``add_files`` (seed a repo without going through the client), ``reset`` and ``requests``
    (a log of ``"METHOD /path"`` strings, handy to assert which endpoints a piece of code used).
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, request_timeout: float = 30.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: collections.deque[str] = collections.deque(maxlen=10_000)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._counter = 0
        handler = type("_BoundHandler", (_Handler,), {"hub": self, "timeout": request_timeout})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None
        self.host, self.port = self._httpd.server_address[:2]
        self.endpoint = f"http://{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> "HubServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers for tests -----------------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str, repo_type: str = "model") -> Path:
        return self.root / f"{repo_type}s" / repo_id

    def list_files(self, repo_id: str, repo_type: str = "model") -> list[str]:
        """Sorted repo-relative paths of the files on ``main`` (raises KeyError for an unknown repo)."""
        with self._lock:
            self._get_repo(repo_type, repo_id, http=False)
            base = self.repo_dir(repo_id, repo_type)
            return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())

    def read_file(self, repo_id: str, path: str, repo_type: str = "model") -> bytes:
        with self._lock:
            self._get_repo(repo_type, repo_id, http=False)
            return (self.repo_dir(repo_id, repo_type) / path).read_bytes()

    def repo_sha(self, repo_id: str, repo_type: str = "model") -> str:
        with self._lock:
            return self._get_repo(repo_type, repo_id, http=False).sha

    def add_files(self, repo_id: str, files: dict[str, bytes | str], repo_type: str = "model",
                  message: str = "Add files") -> str:
        """Create the repo if needed and commit ``files`` ({path: content}) directly; returns the new sha."""
        with self._lock:
            if (repo_type, repo_id) not in self._repos:
                self.create_repo(repo_id, repo_type)
            ops = [("file", path, data.encode() if isinstance(data, str) else data) for path, data in files.items()]
            return self.commit(repo_type, repo_id, ops, message)

    def reset(self) -> None:
        """Forget every repo (wipes the storage folder)."""
        with self._lock:
            self._repos.clear()
            for child in self.root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    # -- storage (all under self._lock) ----------------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str, http: bool = True) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            if not http:
                raise KeyError(f"no {repo_type} repo {repo_id!r} on the test hub")
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> _Repo:
        """Create a repo with an initial commit holding ``.gitattributes`` (like the Hub); no-op if it exists."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                return self._repos[(repo_type, repo_id)]
            repo = self._repos[(repo_type, repo_id)] = _Repo(repo_type, repo_id, private)
            self.repo_dir(repo_id, repo_type).mkdir(parents=True, exist_ok=True)
            self.commit(repo_type, repo_id, [("file", ".gitattributes", GITATTRIBUTES)], "initial commit")
            return repo

    def commit(self, repo_type: str, repo_id: str, ops: list[tuple], message: str, description: str = "") -> str:
        """Apply ``ops`` = [("file", path, bytes) | ("deletedFile", path, None) | ("deletedFolder", path, None)]."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            base = self.repo_dir(repo_id, repo_type)
            resolved = [(kind, _safe_path(base, path), path, data) for kind, path, data in ops]
            for kind, target, path, _ in resolved:  # validate everything before touching the disk
                if kind == "deletedFile" and not target.is_file():
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                if kind == "deletedFolder" and not target.is_dir():
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for kind, target, _, data in resolved:
                if kind == "file":
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                elif kind == "deletedFile":
                    target.unlink()
                else:
                    shutil.rmtree(target)
            _prune_empty_dirs(base)
            self._counter += 1
            seed = f"{repo_type}/{repo_id}\n{repo.sha}\n{self._counter}\n{time.time_ns()}\n{message}"
            repo.sha = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits.insert(0, {"id": repo.sha, "title": message, "message": description, "date": _now(),
                                    "authors": [{"user": USER}]})
            return repo.sha

    def _check_revision(self, repo: _Repo, revision: str) -> None:
        if unquote(revision) not in ("main", "refs/heads/main", repo.sha):
            raise HubError(404, f"Invalid rev id: {unquote(revision)}", "RevisionNotFound")

    def _entries(self, repo: _Repo, folder: str = "", recursive: bool = True) -> list[dict]:
        """Tree entries (files and directories) below ``folder``, in the Hub's JSON shape."""
        base = self.repo_dir(repo.repo_id, repo.repo_type)
        start = _safe_path(base, folder) if folder else base
        if not start.is_dir():
            raise HubError(404, f"{folder} does not exist on \"main\"", "EntryNotFound")
        paths = sorted(start.rglob("*") if recursive else start.iterdir())
        return [_entry(base, p) for p in paths]

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.endpoint}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}"


def _safe_path(base: Path, path: str) -> Path:
    """Map a repo path to a file under ``base``, refusing anything that could escape it."""
    parts = PurePosixPath(path.strip("/")).parts
    if not parts or any(p in ("", ".", "..", ".git") for p in parts) or "\\" in path or "\0" in path:
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return base.joinpath(*parts)


def _prune_empty_dirs(base: Path) -> None:
    for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


def _entry(base: Path, p: Path) -> dict:
    rel = p.relative_to(base).as_posix()
    if p.is_dir():
        listing = "\n".join(sorted(c.name for c in p.iterdir()))
        return {"type": "directory", "oid": hashlib.sha1(listing.encode()).hexdigest(), "size": 0, "path": rel}
    content = p.read_bytes()
    return {"type": "file", "oid": git_blob_oid(content), "size": len(content), "path": rel}


class _Handler(BaseHTTPRequestHandler):
    """Routes a request to an endpoint method; endpoints return ``(status, body, headers)``.

    Endpoints run under the hub's lock (so commits are atomic w.r.t. reads); the response is written after it is
    released. A ``dict``/``list`` body is sent as JSON, ``bytes`` as a file.
    """

    hub: HubServer  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length

    def log_message(self, format, *args):  # noqa: A002 - silence the default stderr logging
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.hub.requests.append(f"{method} {url.path}")
        try:
            body = self._read_body()
            with self.hub._lock:
                status, payload, headers = self._route(method, url.path, body)
        except HubError as e:
            code = {"X-Error-Code": e.code} if e.code else {}
            status, payload, headers = e.status, {"error": e.message}, {**code, "X-Error-Message": e.message, **e.headers}
        except Exception as e:  # a bug in this file: make it visible in the client's error message
            message = f"hub_server: {type(e).__name__}: {e}"
            status, payload, headers = 500, {"error": message}, {"X-Error-Message": message.replace("\n", " ")}
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():  # header values must be latin-1 and single-line
            self.send_header(key, " ".join(str(value).encode("latin-1", "replace").decode("latin-1").split()))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self, body: bytes) -> dict:
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def _flag(self, name: str) -> bool:
        return self.query.get(name, ["false"])[0].lower() in ("1", "true")

    # -- routing ---------------------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes):
        hub = self.hub
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(self._json_body(body))
        if path == "/api/repos/delete" and method == "DELETE":
            data = self._json_body(body)
            repo_type, repo_id = data.get("type") or "model", f"{data.get('organization') or USER}/{data['name']}"
            hub._get_repo(repo_type, repo_id)
            del hub._repos[(repo_type, repo_id)]
            shutil.rmtree(hub.repo_dir(repo_id, repo_type), ignore_errors=True)
            return 200, {}, {}
        if path == "/api/whoami-v2" and method == "GET":
            token = {"displayName": "test", "role": "write"}
            return 200, {"type": "user", "id": "0" * 24, "name": USER, "fullname": "Test User", "orgs": [],
                         "auth": {"type": "access_token", "accessToken": token}}, {}
        if path == "/api/validate-yaml" and method == "POST":
            return 200, {"errors": [], "warnings": []}, {}
        if path == "/api/agent-harnesses" and method == "GET":  # best-effort lookup done when building User-Agent
            return 200, {"standardEnvVars": [], "harnesses": {}}, {}
        if m := _API_REPO.match(path):
            repo = hub._get_repo(REPO_TYPES[m[1]], f"{m[2]}/{m[3]}")
            return self._repo_api(method, repo, m[4] or "", body)
        if (m := _RESOLVE.match(path)) and method in ("GET", "HEAD"):
            repo = hub._get_repo(REPO_TYPES[m[1] or "models"], f"{m[2]}/{m[3]}")
            return self._resolve(repo, m[4], unquote(m[5]))
        raise HubError(404, f"hub_server: no route for {method} {path} (not implemented by tests/hub_server.py)")

    def _repo_api(self, method: str, repo: _Repo, rest: str, body: bytes):
        hub = self.hub
        action, _, arg = rest.partition("/")
        if method == "GET" and action in ("", "revision"):
            if action == "revision":
                hub._check_revision(repo, arg)
            return 200, self._info(repo), {}
        if method == "GET" and action == "tree":
            revision, _, folder = arg.partition("/")
            hub._check_revision(repo, revision)
            return 200, hub._entries(repo, unquote(folder), recursive=self._flag("recursive")), {}
        if method == "POST" and action == "paths-info":
            hub._check_revision(repo, arg)
            is_json = "json" in self.headers.get("Content-Type", "")
            paths = self._json_body(body).get("paths", []) if is_json else parse_qs(body.decode()).get("paths", [])
            base = hub.repo_dir(repo.repo_id, repo.repo_type)
            targets = [_safe_path(base, p) for p in ([paths] if isinstance(paths, str) else paths)]
            return 200, [_entry(base, t) for t in targets if t.exists()], {}
        if method == "GET" and action == "refs":
            branch = {"name": "main", "ref": "refs/heads/main", "targetCommit": repo.sha}
            return 200, {"branches": [branch], "converts": [], "tags": [], "pullRequests": []}, {}
        if method == "GET" and action == "commits":
            hub._check_revision(repo, arg)
            return 200, repo.commits, {}
        if method == "POST" and action == "preupload":
            hub._check_revision(repo, arg)
            return self._preupload(repo, self._json_body(body))
        if method == "POST" and action == "commit":
            hub._check_revision(repo, arg)
            return self._commit(repo, body)
        raise HubError(404, f"hub_server: no route for {method} .../{repo.repo_id}/{rest}")

    # -- endpoints -------------------------------------------------------------------------------------------------
    def _create_repo(self, data: dict):
        hub = self.hub
        repo_type = data.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"hub_server: unsupported repo type {repo_type!r}")
        repo_id = f"{data.get('organization') or USER}/{data['name']}"
        existing = hub._repos.get((repo_type, repo_id))
        if existing is not None:  # the client turns a 409 into success when exist_ok=True (and reads "url")
            message = "You already created this repo"
            return 409, {"error": message, "url": hub._repo_url(existing)}, {"X-Error-Message": message}
        private = data.get("visibility") == "private" or bool(data.get("private"))
        repo = hub.create_repo(repo_id, repo_type, private=private)
        return 200, {"url": hub._repo_url(repo), "name": repo_id, "id": "0" * 24}, {}

    def _info(self, repo: _Repo) -> dict:
        files = [e for e in self.hub._entries(repo) if e["type"] == "file"]
        blobs = self._flag("blobs")  # files_metadata=True
        siblings = [{"rfilename": e["path"], **({"size": e["size"], "blobId": e["oid"]} if blobs else {})}
                    for e in files]
        return {
            "_id": "0" * 24, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": repo.sha, "lastModified": repo.commits[0]["date"], "createdAt": repo.created_at,
            "private": repo.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": siblings, "usedStorage": sum(e["size"] for e in files),
        }

    def _preupload(self, repo: _Repo, data: dict):
        if self._flag("create_pr"):
            raise HubError(400, "hub_server: pull requests are not supported")
        base = self.hub.repo_dir(repo.repo_id, repo.repo_type)
        answers = []
        for f in data.get("files", []):
            target = _safe_path(base, f["path"])
            oid = git_blob_oid(target.read_bytes()) if target.is_file() else None  # lets the client skip no-ops
            answers.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        return 200, {"files": answers, "commitOid": repo.sha}, {}

    def _commit(self, repo: _Repo, body: bytes):
        if self._flag("create_pr"):
            raise HubError(400, "hub_server: pull requests are not supported")
        header, ops = {}, []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                content = value["content"]
                data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                ops.append(("file", value["path"], data))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, value["path"], None))
            else:  # "lfsFile": cannot happen since preupload only ever answers "regular"
                raise HubError(422, f"hub_server: commit operation {key!r} is not supported (no LFS/Xet storage)")
        parent = header.get("parentCommit")
        if parent and not repo.sha.startswith(parent):
            raise HubError(412, f"Parent commit {parent} is not the head of main ({repo.sha})")
        sha = self.hub.commit(repo.repo_type, repo.repo_id, ops, header.get("summary", ""), header.get("description", ""))
        url = f"{self.hub._repo_url(repo)}/commit/{sha}"
        return 200, {"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "", "pullRequestUrl": None}, {}

    def _resolve(self, repo: _Repo, revision: str, path: str):
        self.hub._check_revision(repo, revision)
        target = _safe_path(self.hub.repo_dir(repo.repo_id, repo.repo_type), path)
        if not target.is_file():  # X-Repo-Commit lets the client cache the file's absence
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": repo.sha})
        content = target.read_bytes()
        headers = {"ETag": f'"{git_blob_oid(content)}"', "X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        total = len(content)
        if m := re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip()):
            start, end = int(m[1]), min(int(m[2]) if m[2] else total - 1, total - 1)
            if start >= total:
                raise HubError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{total}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
            return 206, content[start : end + 1], headers
        return 200, content, headers
