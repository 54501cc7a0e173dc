"""Reads flat element ranges of tensors straight from safetensors files.

``os.preadv`` copies exactly the bytes asked for into a fresh buffer: no
memory map, so the process's resident memory is the chunks in flight, not
the model (file pages stay in the kernel's page cache). A file that is a
:class:`~merging.sources.ByteSource` fills the buffer itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from merging.checkpoint import DTYPE_BYTES, TORCH_DTYPE_NAMES, TensorInfo
from merging.errors import CheckpointError


def torch_dtype(safetensors_dtype: str) -> torch.dtype:
    return getattr(torch, TORCH_DTYPE_NAMES[safetensors_dtype])


class TensorReader:
    """Keeps one file descriptor per shard; use as a context manager."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, file: Path) -> int:
        key = str(file)
        if key not in self._fds:
            try:
                self._fds[key] = os.open(file, os.O_RDONLY)
            except OSError as e:
                raise CheckpointError(f"{file}: cannot open ({e.strerror})") from e
        return self._fds[key]

    def read(self, info: TensorInfo, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Elements [start, stop) of the flattened tensor, in its stored dtype (a new tensor)."""
        stop = info.numel if stop is None else stop
        item = DTYPE_BYTES[info.dtype]
        nbytes = (stop - start) * item
        buf = torch.empty(nbytes, dtype=torch.uint8)
        if nbytes == 0:
            return buf.view(torch_dtype(info.dtype))
        target: Any = buf.numpy()  # a writable buffer over the tensor's memory
        file = info.file
        if not isinstance(file, Path):
            file.read_into(info.begin + start * item, memoryview(target))
            return buf.view(torch_dtype(info.dtype))
        got = os.preadv(self._fd(file), [target], info.begin + start * item)
        if got != nbytes:
            raise CheckpointError(
                f"{file}: truncated while reading tensor {info.name!r} "
                f"(got {got} of {nbytes} bytes); the file changed or is damaged"
            )
        return buf.view(torch_dtype(info.dtype))
