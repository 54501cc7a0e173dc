"""The local Hub's state: repositories, commits and files, kept in memory."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
LFS_MIN_SIZE = 10 * 1024 * 1024
BAD_TOKEN = "Invalid credentials in Authorization header"


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass(frozen=True)
class Entry:
    size: int
    git_oid: str
    sha256: str
    lfs: bool


@dataclass
class Commit:
    sha: str
    parent: str | None
    files: dict[str, Entry]
    title: str
    message: str
    date: str


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision) or revision
        return self.commits.get(sha)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubState:
    """Repos, objects and counters, behind one lock."""

    def __init__(self, tokens: dict[str, str]):
        self.tokens = tokens  # token -> user name
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}  # sha256 -> content
        self.stats = {"commits": 0, "lfs_uploads": 0, "lfs_bytes": 0, "requests": 0}
        self.lock = threading.RLock()
        self._counter = 0

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, Entry], title: str, message: str) -> Commit:
        self._counter += 1
        listing = json.dumps({p: e.git_oid for p, e in sorted(files.items())})
        sha = hashlib.sha1(f"{repo.repo_id}\n{parent}\n{listing}\n{title}\n{self._counter}".encode()).hexdigest()
        commit = Commit(sha, parent, files, title, message, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.commits[sha] = commit
        return commit

    def store(self, content: bytes) -> Entry:
        sha = hashlib.sha256(content).hexdigest()
        self.objects[sha] = content
        return Entry(len(content), git_blob_oid(content), sha, lfs=False)

    def apply_commit(self, repo: Repo, branch: str, header: dict, operations: list[dict]) -> Commit:
        """One commit of the ndjson commit API onto ``branch``, refused if its parent is not the head."""
        head = repo.branches.get(branch)
        if head is None:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        parent = header.get("parentCommit")
        if parent is not None and parent != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(repo.commits[head].files)
        for item in operations:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = self.store(base64.b64decode(value["content"]))
            elif key == "lfsFile":
                content = self.objects.get(value["oid"])
                if content is None:
                    raise HubError(400, f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = Entry(len(content), git_blob_oid(content), value["oid"], lfs=True)
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    raise HubError(404, f"cannot delete {value['path']}: no such file", "EntryNotFound")
            else:
                raise HubError(400, f"unsupported commit operation {key!r}")
        commit = self.new_commit(repo, head, files, header["summary"], header.get("description", ""))
        repo.branches[branch] = commit.sha
        self.stats["commits"] += 1
        return commit
