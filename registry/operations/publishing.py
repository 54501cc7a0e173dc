"""Publishing a merge to a Hugging Face Hub repo, and exporting it as a model directory.

One ``create_commit`` per publish, with the parent commit given: a push that
raced ours fails instead of interleaving. Before that, memo compares the
repo's ``main`` with the commit of its own last publish there; if someone
else pushed since, it refuses unless forced, and a forced publish commits on
top of theirs (their commit stays in the history). Files are those of the
merge plus ``memo-provenance.json``; files of an earlier publish that the
merge lacks are deleted in the same commit, so ``main`` equals the merge.
A publish interrupted after its commit but before its row (a kill, a lost
connection while tagging) is finished by running it again: when ``main``
already holds exactly the merge's files and provenance, byte for byte, the
commit is tagged and recorded, and nothing is sent again.
Large files already on the Hub are not sent again (the LFS batch API says
so), which is what makes a rollback cheap. The token comes from the usual
Hugging Face places (``HF_TOKEN``, ``hf auth login``) and is never printed,
logged or stored.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from osutil.lazy_import import lazy_module
from osutil.partial import move_into_place, partial_dir
from registry.operations import channels
from registry.operations.merges import find_merge, is_merge_ref
from registry.operations.release_files import merge_files, new_output_dir
from registry.store.database import Database
from registry.store.errors import Conflict, InvalidInput, MemoError
from registry.store.records import ChannelRecord, MergeRecord, PublicationRecord
from registry.store.schema import ChannelRow, MergeRow, PublicationRow
from registry.store.workspace import Workspace

if TYPE_CHECKING:
    import huggingface_hub as hub
    import huggingface_hub.errors as hub_errors
    import huggingface_hub.utils as hub_utils
else:  # the Hub client takes half a second to import: only commands that talk to a Hub pay for it
    hub = lazy_module("huggingface_hub")
    hub_errors = lazy_module("huggingface_hub.errors")
    hub_utils = lazy_module("huggingface_hub.utils")

KEEP_ON_HUB = {".gitattributes"}
T = TypeVar("T")


class HubError(MemoError):
    """The Hub could not be reached, refused us, or disagrees with the registry."""

    code = "hub"


@dataclass(frozen=True)
class HubTarget:
    repo_id: str
    endpoint: str  # the Hub's URL
    private: bool = False

    @staticmethod
    def of(repo_id: str, endpoint: str | None = None, *, private: bool = False) -> HubTarget:
        """A checked target: the Hub's own rules for repo ids, and an http(s) endpoint URL."""
        try:
            hub_utils.validate_repo_id(repo_id)
            if repo_id.count("/") != 1:
                raise hub_errors.HFValidationError("it names no organisation or user")
        except hub_errors.HFValidationError:
            raise InvalidInput(
                f"--repo must be a Hub repo id ORG/NAME (letters, digits, '-', '_' and '.'; at most 96 characters), "
                f"not {repo_id!r}"
            ) from None
        return HubTarget(repo_id, check_endpoint(endpoint or default_endpoint()), private)


def check_endpoint(url: str) -> str:
    """A Hub endpoint as memo stores and calls it: an http(s) URL with a host, nothing else."""
    parts = urlsplit(url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or any(c.isspace() or ord(c) < 32 for c in url)
    ):
        raise InvalidInput(f"the Hub endpoint must be an http(s) URL like https://huggingface.co, not {url!r}")
    return url.strip().rstrip("/")


def default_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or hub.constants.ENDPOINT


def export_merge(ws: Workspace, merge_ref: str | int, directory: Path) -> Path:
    """Write the merge as a standalone model directory (copies, not links), all at once or not at all."""
    directory = new_output_dir(directory)
    _, _, source, added = merge_files(ws, merge_ref)
    with partial_dir(directory) as tmp:  # also removes what killed exports left here
        for path in sorted(source.rglob("*")):
            if path.is_file():
                dest = tmp / path.relative_to(source)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
        for name, content in added.items():
            (tmp / name).write_bytes(content)
        if directory.exists():
            directory.rmdir()
        move_into_place(tmp, directory)
    return directory


def _hub(target: HubTarget, what: str, call: Callable[[], T]) -> T:
    """Run one Hub call; turn its failures into one-line HubErrors (never with the token in them)."""
    try:
        return call()
    except hub_errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HubError(
                f"the Hub at {target.endpoint} refused the token while trying to {what} (missing or "
                "wrong): set HF_TOKEN or run `hf auth login`"
            ) from None
        if status == 403:
            raise HubError(f"the token has no write access to {target.repo_id} on {target.endpoint}") from None
        if status in (409, 412) and what.startswith("commit"):
            raise Conflict(f"main of {target.repo_id} moved while publishing; run the command again") from None
        server = e.response.headers.get("X-Error-Message", "") if e.response is not None else ""
        raise HubError(
            f"the Hub at {target.endpoint} answered {status} when trying to {what}" + (f": {server}" if server else "")
        ) from None
    except Exception as e:
        if any(c.__name__ in ("TransportError", "ConnectionError", "RequestError") for c in type(e).__mro__):
            raise HubError(
                f"cannot reach the Hub at {target.endpoint} ({type(e).__name__}); check --endpoint "
                "or HF_ENDPOINT and the network"
            ) from None
        raise


def last_publication(session: Session, target: HubTarget) -> PublicationRow | None:
    return session.scalar(
        select(PublicationRow)
        .where(PublicationRow.repo_id == target.repo_id, PublicationRow.endpoint == target.endpoint)
        .order_by(PublicationRow.id.desc())
        .limit(1)
    )


def publish_merge(
    ws: Workspace,
    merge_ref: str | int,
    target: HubTarget,
    *,
    channel: str | None = None,
    force: bool = False,
    gguf: str | None = None,
) -> PublicationRecord:
    """Make ``main`` of the repo equal to the merge in one commit; tag it; record the publication.
    With ``gguf`` (a quant), the merge's GGUF file and Modelfile go into the same commit."""
    if gguf is None:
        return _publish_merge(ws, merge_ref, target, channel=channel, force=force, extra={})
    from registry.operations.gguf_exports import export_gguf_merge  # the exporter loads torch

    work = Path(tempfile.mkdtemp(dir=ws.work_root(), prefix="gguf-"))
    try:
        exported = export_gguf_merge(ws, str(merge_ref), work / "gguf", quant=gguf, device="auto")
        extra = {name: work / "gguf" / name for name in (exported.file, "Modelfile")}
        return _publish_merge(ws, merge_ref, target, channel=channel, force=force, extra=extra)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish_merge(
    ws: Workspace, merge_ref: str | int, target: HubTarget, *, channel: str | None, force: bool, extra: dict[str, Path]
) -> PublicationRecord:
    row, merge_record, source, added = merge_files(ws, merge_ref)
    api = hub.HfApi(endpoint=target.endpoint)
    _hub(
        target,
        f"create {target.repo_id}",
        lambda: api.create_repo(target.repo_id, private=target.private, exist_ok=True),
    )
    head = _hub(target, f"read {target.repo_id}", lambda: api.repo_info(target.repo_id, revision="main").sha)
    if head is None:
        raise HubError(f"the Hub at {target.endpoint} gave no commit for main of {target.repo_id}")
    on_hub = _hub(target, "list files", lambda: api.list_repo_files(target.repo_id, revision=head))
    with ws.db.read() as session:
        last = last_publication(session, target)
        if not extra and last is not None and last.commit_sha == head and last.merge_id == row.id:
            # Already done: main is memo's own commit of this merge. Nothing to send or record.
            name = session.scalar(select(ChannelRow.name).where(ChannelRow.id == last.channel_id))
            return to_publication_record(last, name)
    stored: dict[str, bytes | Path] = {
        p.relative_to(source).as_posix(): p for p in sorted(source.rglob("*")) if p.is_file()
    }
    ours = {**stored, **added, **extra}
    if (last is None or last.commit_sha != head) and on_hub and _holds_exactly(api, target, head, ours):
        # An unrecorded commit with exactly this merge: this publish was interrupted after committing.
        _tag(api, target, merge_record.ref, head)
        return _record(ws.db, row.id, target, head, merge_record.ref, channel)
    if last is not None and last.commit_sha != head and not force:
        raise Conflict(
            f"main of {target.repo_id} moved since memo last published there (memo's commit "
            f"{last.commit_sha[:8]}, now {head[:8]}): someone else pushed. Look at it, then use "
            "--force to publish on top (their commit stays in the history)"
        )
    operations: list[hub.CommitOperationAdd | hub.CommitOperationDelete] = [
        hub.CommitOperationAdd(rel, content if isinstance(content, bytes) else str(content))
        for rel, content in ours.items()
    ]
    operations += [hub.CommitOperationDelete(f) for f in on_hub if f not in ours and f not in KEEP_ON_HUB]
    commit_sha = _commit(api, target, head, operations, row, merge_record)
    _tag(api, target, merge_record.ref, commit_sha)
    return _record(ws.db, row.id, target, commit_sha, merge_record.ref, channel)


def _commit(api: hub.HfApi, target: HubTarget, head: str, operations: list, row: MergeRow, merge: MergeRecord) -> str:
    """One commit on top of ``head`` (the Hub refuses it if main moved meanwhile); its sha."""
    commit = _hub(
        target,
        f"commit to {target.repo_id}",
        lambda: api.create_commit(
            target.repo_id,
            operations,
            parent_commit=head,
            commit_message=f"memo: {merge.ref} ({merge.method} of {merge.corpora})",
            commit_description=f"Published by memo from merge {row.id} (content key {row.content_key[:12]}).",
        ),
    )
    return commit.oid


def _holds_exactly(api, target: HubTarget, head: str, files: dict[str, bytes | Path]) -> bool:
    """Whether the repo at ``head`` has exactly ``files`` (the merge's and its provenance), byte for byte.

    Compared by the hashes the Hub lists (sha256 for LFS files, the git blob
    id for others), so nothing is downloaded.
    """
    tree = _hub(
        target,
        "list files",
        lambda: [f for f in api.list_repo_tree(target.repo_id, revision=head, recursive=True) if hasattr(f, "blob_id")],
    )
    if {f.path for f in tree} - KEEP_ON_HUB != set(files):
        return False
    for f in tree:
        if f.path in KEEP_ON_HUB:
            continue
        if f.lfs is not None:
            if f.lfs.sha256 != _digest(files[f.path], "sha256"):
                return False
        elif f.blob_id != _digest(files[f.path], "git"):
            return False
    return True


def _digest(content: bytes | Path, kind: str) -> str:
    """sha256 of the content, or its git blob id (sha1 of a ``blob <size>`` header and the content)."""
    size = len(content) if isinstance(content, bytes) else content.stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size) if kind == "git" else hashlib.sha256()
    if isinstance(content, bytes):
        h.update(content)
    else:
        with content.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def _tag(api, target: HubTarget, tag: str, commit_sha: str) -> None:
    tags = _hub(target, "list tags", lambda: {t.name for t in api.list_repo_refs(target.repo_id).tags})
    if tag not in tags:
        _hub(target, f"tag {tag}", lambda: api.create_tag(target.repo_id, tag=tag, revision=commit_sha))


def _record(
    db: Database, merge_id: int, target: HubTarget, commit_sha: str, tag: str, channel: str | None
) -> PublicationRecord:
    with db.write() as session:
        channel_id = session.scalar(select(ChannelRow.id).where(ChannelRow.name == channel)) if channel else None
        pub = PublicationRow(
            merge_id=merge_id,
            channel_id=channel_id,
            repo_id=target.repo_id,
            endpoint=target.endpoint,
            revision="main",
            commit_sha=commit_sha,
            tag=tag,
        )
        session.add(pub)
        session.flush()
        return to_publication_record(pub, channel)


def to_publication_record(row: PublicationRow, channel: str | None) -> PublicationRecord:
    return PublicationRecord(
        id=row.id,
        merge_id=row.merge_id,
        channel=channel,
        repo_id=row.repo_id,
        endpoint=row.endpoint,
        revision=row.revision,
        commit_sha=row.commit_sha,
        tag=row.tag,
        created_at=row.created_at,
    )


def list_publications(db: Database, merge_ref: str | int | None = None) -> list[PublicationRecord]:
    with db.read() as session:
        query = select(PublicationRow, ChannelRow.name).outerjoin(
            ChannelRow, ChannelRow.id == PublicationRow.channel_id
        )
        if merge_ref is not None:
            query = query.where(PublicationRow.merge_id == find_merge(session, merge_ref).id)
        return [to_publication_record(p, name) for p, name in session.execute(query.order_by(PublicationRow.id))]


def publish(
    ws: Workspace, ref: str | int, target: HubTarget, *, force: bool = False, gguf: str | None = None
) -> PublicationRecord:
    """Publish a merge, or a channel's merge; a channel not linked to a repo yet is linked to this
    one, so its later promotions and rollbacks publish there too."""
    channel = str(ref) if not is_merge_ref(str(ref)) else None
    publication = publish_merge(ws, ref, target, channel=channel, force=force, gguf=gguf)
    if channel is not None and not channels.get_channel(ws.db, channel).hub_repo:
        channels.configure(ws.db, channel, hub_repo=target.repo_id, hub_endpoint=target.endpoint)
    return publication


def channel_publisher(ws: Workspace, *, force: bool) -> channels.Publisher:
    """What a linked channel runs before it moves: publish the merge it moves to."""

    def publish_for(merge_id: int, channel: ChannelRecord) -> None:
        if channel.hub_repo is not None:
            target = HubTarget.of(channel.hub_repo, channel.hub_endpoint)
            publish_merge(ws, merge_id, target, channel=channel.name, force=force)

    return publish_for
