"""Writes a Hugging Face model directory atomically, streaming tensors into shards.

Every output tensor's name, dtype and shape are known before the merge
starts, so each shard's safetensors header (with all offsets) is written
first and tensor data is appended chunk by chunk as it is computed: no shard
is ever held in memory. Everything goes to a temporary sibling directory that
is renamed into place at the end; a crash or Ctrl-C leaves no partial output.

The file writes run in one background thread (they mostly wait on the
kernel's page cache and writeback), overlapping the merge's compute; a bounded
queue keeps at most a few chunks in flight.

Layout as mergekit writes it: tensors in name order, shards filled greedily up
to ``max_shard_size`` bytes; one shard is ``model.safetensors`` (no index),
several are ``model-0000i-of-0000N.safetensors`` plus
``model.safetensors.index.json``.
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import queue
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from merging.errors import MergeError
from osutil.partial import move_into_place, partial_dir

_ST_DTYPE = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(tensors: list[OutputTensor], max_shard_size: int) -> list[list[OutputTensor]]:
    shards: list[list[OutputTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header(tensors: list[OutputTensor], metadata: dict[str, str]) -> bytes:
    entries: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for t in tensors:
        entries[t.name] = {
            "dtype": _ST_DTYPE[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the data section to 8 bytes
    return len(raw).to_bytes(8, "little") + raw


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes as safetensors stores them (row-major, little-endian), without a copy on CPU."""
    array: Any = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy()
    return memoryview(array)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, str]) -> None:
    """One safetensors file whose bytes depend on its content only: tensors in name order and the
    metadata's keys sorted (``safetensors.save_file`` writes metadata in a per-process hash order,
    so the same tensors would give other bytes, and another blob, in every run)."""
    names = sorted(tensors)
    planned = [OutputTensor(n, tensors[n].dtype, tuple(tensors[n].shape)) for n in names]
    with open(path, "wb") as f:
        f.write(_header(planned, dict(sorted(metadata.items()))))
        for n in names:
            f.write(raw_bytes(tensors[n]))
        f.flush()
        os.fsync(f.fileno())


_WRITEBACK_BYTES = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range():
    """Linux's ``sync_file_range`` (not in Python's os module), or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages to disk now, without waiting for it."""
    fn = _sync_file_range()
    if fn is not None:
        fn(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


class ModelDirWriter:
    """``with ModelDirWriter(out, tensors, ...) as w: w.write(name, chunk) ...; w.commit()``."""

    def __init__(
        self,
        out_dir: Path,
        tensors: list[OutputTensor],
        *,
        max_shard_size: int,
        overwrite: bool = False,
        index_metadata: dict | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not overwrite:
            raise MergeError(f"{self.out_dir} already exists; choose another directory or pass --overwrite")
        self.shards = plan_shards(sorted(tensors, key=lambda t: t.name), max_shard_size)
        self.order = [t for shard in self.shards for t in shard]
        self._shard_of = {t.name: i for i, shard in enumerate(self.shards) for t in shard}
        self.index_metadata = index_metadata or {}
        self.overwrite = overwrite
        self.tmp: Path | None = None
        self._position = 0  # index into self.order of the tensor being written
        self._written = 0  # bytes of it written so far
        self._file: BinaryIO | None = None
        self._unsynced = 0  # bytes of the open shard written since its writeback was last started
        self._shard = -1
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> ModelDirWriter:
        self._partial = partial_dir(self.out_dir)  # also removes what killed writers left here
        self.tmp = self._partial.__enter__()
        self._thread = threading.Thread(target=self._drain, name="memo-shard-writer", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop()
        if self._file:
            self._file.close()
            self._file = None
        self._partial.__exit__(exc_type, exc, tb)

    # --- the background thread: runs every file operation, in order -------------------
    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # reported to the caller at its next write or commit
                    self._error = e

    def _submit(self, job) -> None:
        self._raise_pending()
        self._queue.put(job)

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise self._error

    def shard_name(self, i: int) -> str:
        n = len(self.shards)
        return "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"

    @property
    def next_tensor(self) -> OutputTensor | None:
        return self.order[self._position] if self._position < len(self.order) else None

    def _open_shard(self, i: int) -> None:
        if self._file:
            self._finish_file()
        self._file = open(self._dir() / self.shard_name(i), "wb")  # noqa: SIM115 - closed by _finish_file
        self._unsynced = 0
        self._file.write(_header(self.shards[i], {"format": "pt"}))

    def _shard_file(self) -> BinaryIO:
        if self._file is None:
            raise MergeError("internal: no shard is open")
        return self._file

    def _dir(self) -> Path:
        if self.tmp is None:
            raise MergeError("internal: the writer is used outside its `with` block")
        return self.tmp

    def _append(self, data) -> None:
        """Write to the open shard; every 64 MB, start writing it back to disk (so that the fsync at its
        end waits for the last part only, not for the whole shard)."""
        f = self._shard_file()
        f.write(data)
        self._unsynced += data.nbytes
        if self._unsynced >= _WRITEBACK_BYTES:
            f.flush()
            start_writeback(f.fileno())
            self._unsynced = 0

    def _finish_file(self) -> None:
        f = self._shard_file()
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None

    def write(self, name: str, chunk: torch.Tensor) -> None:
        """Append the next chunk of tensor ``name`` (tensors in name order, chunks in order)."""
        t = self.next_tensor
        if t is None or t.name != name:
            raise MergeError(f"internal: expected tensor {t and t.name!r}, got {name!r}")
        if chunk.dtype != t.dtype:
            raise MergeError(f"internal: tensor {name!r} chunk is {chunk.dtype}, planned {t.dtype}")
        if self._shard_of[name] != self._shard:
            self._shard = self._shard_of[name]
            self._submit(lambda i=self._shard: self._open_shard(i))
        data = raw_bytes(chunk)
        self._submit(lambda: self._append(data))
        self._written += data.nbytes
        if self._written > t.nbytes:
            raise MergeError(f"internal: tensor {name!r} got more data than its shape holds")
        if self._written == t.nbytes:
            self._position += 1
            self._written = 0

    def commit(self, extra_files: dict[str, bytes]) -> Path:
        """Write the index and the extra files, then move the directory into place."""
        if self.next_tensor is not None:
            raise MergeError(f"internal: tensor {self.next_tensor.name!r} was never written")
        self._stop()
        self._raise_pending()
        if self._file:
            self._finish_file()
        files = dict(extra_files)
        if len(self.shards) > 1:
            weight_map = {t.name: self.shard_name(i) for i, s in enumerate(self.shards) for t in s}
            index = {
                "metadata": {"total_size": sum(t.nbytes for t in self.order), **self.index_metadata},
                "weight_map": weight_map,
            }
            files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
        for name, data in files.items():
            path = self._dir() / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        return self._move_into_place()

    def _move_into_place(self) -> Path:
        old = None
        if self.out_dir.exists():
            if not self.overwrite:
                raise MergeError(f"{self.out_dir} appeared while merging; nothing was overwritten")
            old = self.out_dir.with_name(f".{self.out_dir.name}.old-{os.getpid()}")
            os.replace(self.out_dir, old)
        move_into_place(self._dir(), self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir
