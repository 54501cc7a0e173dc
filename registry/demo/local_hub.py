"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, in memory: for `memo demo` and the tests.

`memo demo` publishes to it so the publish and rollback journeys run offline
(with ``--repo`` it publishes to a real Hub instead); the tests run the real
``huggingface_hub`` client against it. It is not a Hub to keep models on:
everything is lost when the process ends.

It implements what memo's flows use, as the real ``huggingface_hub`` client
calls it: repo create and info, preupload, the LFS batch API with basic
upload and verify, commits (ndjson, with the parent-commit check), refs,
tags, commit listing, tree listing and file download (``resolve``). Xet is
not offered: clients must run with ``HF_HUB_DISABLE_XET=1``.

Writes need a known token; reads of public repos do not. ``stats`` counts
commits and LFS uploads so tests can check what was sent again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from huggingface_hub import constants

from registry.demo.hub_state import (
    BAD_TOKEN,
    LFS_MIN_SIZE,
    LFS_SUFFIXES,
    Commit,
    HubError,
    HubState,
    Repo,
)

# The routes the client calls.
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?P<rest>/.*)?$")
_LFS = re.compile(r"^/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class Handler(BaseHTTPRequestHandler):
    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # --- plumbing -------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(
        self,
        status: int,
        payload=None,
        *,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        head: bool = False,
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            user = self.state.tokens.get(auth[7:])
            if user is None:
                raise HubError(401, BAD_TOKEN)
            return user
        if required:
            raise HubError(401, "You must be authenticated to do this; pass a token")
        return None

    def _repo(self, repo_id: str, *, write: bool = False) -> Repo:
        user = self._user(required=write)
        repo = self.state.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self.state.lock:
            self.state.stats["requests"] += 1
            try:
                self._route(method, path, query)
            except HubError as e:
                headers = {"X-Error-Message": e.message}
                if e.code:
                    headers["X-Error-Code"] = e.code
                self._send(e.status, {"error": e.message, **e.extra}, headers=headers, head=method == "HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    # --- routes ---------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict) -> None:
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml()
        if method == "GET" and path == "/api/whoami-v2":
            return self._send(200, {"name": self._user(required=True), "type": "user"})
        if m := _LFS.match(path):
            return self._lfs_batch(self._repo(m["repo"], write=True))
        if method == "PUT" and path.startswith("/lfs-upload/"):
            return self._lfs_upload(path.removeprefix("/lfs-upload/"))
        if method == "POST" and path.startswith("/lfs-verify/"):
            return self._lfs_verify()
        if m := _RESOLVE.match(path):
            return self._resolve(self._repo(m["repo"]), m["rev"], m["path"], head=method == "HEAD")
        if m := _API.match(path):
            return self._api(method, m["repo"], m["rest"] or "", query)
        raise HubError(404, f"no route for {method} {path}")

    def _api(self, method: str, repo_id: str, rest: str, query: dict) -> None:
        write = method == "POST"
        repo = self._repo(repo_id, write=write)
        parts = rest.strip("/").split("/", 1) if rest else [""]
        action, arg = parts[0], (parts[1] if len(parts) > 1 else "main")
        if method == "GET" and action in ("", "revision"):
            return self._info(repo, arg if action == "revision" else "main")
        if method == "POST" and action == "preupload":
            return self._preupload(repo)
        if method == "POST" and action == "commit":
            return self._commit(repo, arg)
        if method == "POST" and action == "tag":
            return self._tag(repo, arg)
        if method == "GET" and action == "refs":
            return self._send(
                200,
                {
                    "branches": [
                        {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()
                    ],
                    "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": s} for t, s in repo.tags.items()],
                    "converts": [],
                    "pullRequests": [],
                },
            )
        if method == "GET" and action == "commits":
            return self._commits(repo, arg)
        if method == "GET" and action == "tree":
            return self._tree(repo, arg)
        raise HubError(404, f"no route for {method} {rest}")

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _create_repo(self) -> None:
        user = self._user(required=True)
        body = json.loads(self._body())
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        if repo_id in self.state.repos:
            raise HubError(
                409, "You already created this model repo", extra={"url": f"http://{self.headers['Host']}/{repo_id}"}
            )
        repo = Repo(repo_id, private=body.get("visibility", "public") != "public" or bool(body.get("private")))
        attributes = self.state.store(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        commit = self.state.new_commit(repo, None, {".gitattributes": attributes}, "initial commit", "")
        repo.branches["main"] = commit.sha
        self.state.repos[repo_id] = repo
        self._send(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})

    def _validate_yaml(self) -> None:
        content = json.loads(self._body())["content"]
        try:
            meta = card_metadata(content)
        except yaml.YAMLError as e:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {e}"}]})
        if not isinstance(meta, dict):
            return self._send(400, {"errors": [{"message": "the metadata must be a mapping"}]})
        self._send(200, {"warnings": [] if meta else [{"message": "empty metadata"}]})

    def _info(self, repo: Repo, revision: str) -> None:
        commit = self._commit_of(repo, revision)
        card = commit.files.get("README.md")
        meta = card_metadata(self.state.objects[card.sha256].decode()) if card else {}
        self._send(
            200,
            {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.sha,
                "private": repo.private,
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
                "tags": [],
                # As the Hub gives them: the card's metadata, and its model-index on its own.
                **({"cardData": meta} if isinstance(meta, dict) and meta else {}),
                **({"model-index": meta["model-index"]} if isinstance(meta, dict) and "model-index" in meta else {}),
            },
        )

    def _preupload(self, repo: Repo) -> None:
        files = json.loads(self._body())["files"]
        self._send(
            200,
            {
                "files": [
                    {
                        "path": f["path"],
                        "shouldIgnore": False,
                        "uploadMode": "lfs"
                        if f["path"].endswith(LFS_SUFFIXES) or f["size"] >= LFS_MIN_SIZE
                        else "regular",
                    }
                    for f in files
                ]
            },
        )

    def _lfs_batch(self, repo: Repo) -> None:
        body = json.loads(self._body())
        host = f"http://{self.headers['Host']}"
        objects = []
        for obj in body["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if obj["oid"] not in self.state.objects:  # already stored: no actions, nothing is sent again
                entry["actions"] = {
                    "upload": {"href": f"{host}/lfs-upload/{obj['oid']}"},
                    "verify": {"href": f"{host}/lfs-verify/{obj['oid']}"},
                }
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects})

    def _lfs_upload(self, oid: str) -> None:
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, "uploaded content does not match its oid")
        self.state.objects[oid] = content
        self.state.stats["lfs_uploads"] += 1
        self.state.stats["lfs_bytes"] += len(content)
        self._send(200, {})

    def _lfs_verify(self) -> None:
        body = json.loads(self._body())
        if body["oid"] not in self.state.objects:
            raise HubError(404, f"object {body['oid']} was not uploaded")
        self._send(200, {})

    def _commit(self, repo: Repo, branch: str) -> None:
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        commit = self.state.apply_commit(repo, branch, lines[0]["value"], lines[1:])
        host = f"http://{self.headers['Host']}"
        self._send(
            200, {"success": True, "commitOid": commit.sha, "commitUrl": f"{host}/{repo.repo_id}/commit/{commit.sha}"}
        )

    def _tag(self, repo: Repo, revision: str) -> None:
        body = json.loads(self._body())
        if body["tag"] in repo.tags:
            raise HubError(409, f"Tag {body['tag']} already exists")
        repo.tags[body["tag"]] = self._commit_of(repo, revision).sha
        self._send(200, {})

    def _commits(self, repo: Repo, revision: str) -> None:
        out: list[dict] = []
        commit: Commit | None = self._commit_of(repo, revision)
        while commit is not None:
            out.append(
                {
                    "id": commit.sha,
                    "title": commit.title,
                    "message": commit.message,
                    "date": commit.date,
                    "authors": [{"user": "memo-test"}],
                }
            )
            commit = repo.commits.get(commit.parent) if commit.parent else None
        self._send(200, out)

    def _tree(self, repo: Repo, revision: str) -> None:
        commit = self._commit_of(repo, revision.split("/", 1)[0])
        self._send(
            200,
            [
                {
                    "type": "file",
                    "path": p,
                    "size": e.size,
                    "oid": e.git_oid,
                    **({"lfs": {"oid": e.sha256, "size": e.size, "pointerSize": 134}} if e.lfs else {}),
                }
                for p, e in sorted(commit.files.items())
            ],
        )

    def _resolve(self, repo: Repo, revision: str, path: str, *, head: bool) -> None:
        commit = self._commit_of(repo, unquote(revision))
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"{path} not found at {revision}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{entry.git_oid}"'}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        self._send(200, headers=headers, raw=self.state.objects[entry.sha256], head=head)


def card_metadata(content: str):
    """The YAML between a card's leading ``---`` lines ({} without any); raises yaml.YAMLError."""
    match = re.match(r"^---\n(.*?)\n---", content, re.S)
    return yaml.safe_load(match[1]) if match else {}


class HubServer(ThreadingHTTPServer):
    """``with HubServer(tokens={"hf_x": "alice"}) as hub: HfApi(endpoint=hub.url, token="hf_x")``."""

    daemon_threads = True

    def __init__(self, tokens: dict[str, str] | None = None, port: int = 0):
        super().__init__(("127.0.0.1", port), Handler)
        self.state = HubState(tokens or {})
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()

    def main_files(self, repo_id: str) -> dict[str, bytes]:
        """The files on ``main`` (for assertions)."""
        with self.state.lock:
            repo = self.state.repos[repo_id]
            commit = repo.commits[repo.branches["main"]]
            return {p: self.state.objects[e.sha256] for p, e in commit.files.items()}


@contextmanager
def local_hub() -> Iterator[HubServer]:
    """A Hub for this process until the block ends: its token in ``HF_TOKEN``, Xet off (it speaks LFS).

    Both are restored afterwards, so a user's own token and settings are untouched.
    """
    token = "hf_memo_local_" + secrets.token_hex(12)
    saved_token, saved_xet = os.environ.get("HF_TOKEN"), constants.HF_HUB_DISABLE_XET
    with HubServer(tokens={token: "memo"}) as hub:
        os.environ["HF_TOKEN"] = token
        constants.HF_HUB_DISABLE_XET = True
        try:
            yield hub
        finally:
            constants.HF_HUB_DISABLE_XET = saved_xet
            if saved_token is None:
                os.environ.pop("HF_TOKEN", None)
            else:
                os.environ["HF_TOKEN"] = saved_token
