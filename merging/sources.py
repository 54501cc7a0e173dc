"""Safetensors files that are not local paths: a blob in an object store, read by offset.

The merge engine reads an input either from a directory of files or from
byte sources that the caller opens (a registry streaming its stored task
vectors from a bucket). A source may fetch ahead and check its bytes as they
arrive; :meth:`ByteSource.finish` is called once every tensor is merged and
before the output is committed, so a source whose bytes were not what they
should be (a sha256 mismatch) stops the merge with nothing written.
"""

from __future__ import annotations

from typing import Protocol


class ByteSource(Protocol):
    @property
    def name(self) -> str:
        """What the file is, for messages (e.g. ``atlas@v2: model.safetensors``)."""
        ...

    @property
    def size(self) -> int: ...

    def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the bytes at ``offset`` (all of them, or raise)."""
        ...

    def finish(self) -> None:
        """Raise if the bytes served were not the source's true content."""
        ...


def read_bytes(source: ByteSource, offset: int, length: int) -> bytes:
    buffer = bytearray(length)
    if length:
        source.read_into(offset, memoryview(buffer))
    return bytes(buffer)
