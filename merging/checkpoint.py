"""A Hugging Face model directory's safetensors weights, read without loading them.

Headers are parsed and checked here (sizes, offsets, a truncated or corrupt
shard, the index naming a missing shard) so that problems surface with the
file and tensor named, before any merge or registration starts. Pickle
checkpoints are refused: memo never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from merging.errors import CheckpointError
from merging.sources import ByteSource, read_bytes

INDEX_FILE = "model.safetensors.index.json"
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.bin")
MAX_HEADER_BYTES = 100 << 20
_READ_CHUNK = 8 << 20

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
TORCH_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors spelling: "BF16", "F32", ...
    shape: tuple[int, ...]
    file: Path | ByteSource
    begin: int  # absolute byte offsets of the tensor's data inside ``file``
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Checkpoint:
    directory: Path  # with byte sources: the input's name
    files: tuple[Path | ByteSource, ...]
    tensors: dict[str, TensorInfo]

    @property
    def parameter_count(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    def dominant_dtype(self) -> str:
        """The floating dtype holding the most elements, as torch names it."""
        counts: Counter[str] = Counter()
        for t in self.tensors.values():
            if t.dtype in FLOAT_DTYPES:
                counts[t.dtype] += t.numel
        if not counts:
            return "unknown"
        return TORCH_DTYPE_NAMES[counts.most_common(1)[0][0]]

    def fingerprint(self) -> str:
        """sha256 over every tensor's name, dtype, shape and bytes, in name order.

        Independent of how the weights are split into shards.
        """
        digest = hashlib.sha256()
        for name in sorted(self.tensors):
            t = self.tensors[name]
            digest.update(json.dumps([name, t.dtype, list(t.shape)]).encode())
            for chunk in read_tensor_bytes(t):
                digest.update(chunk)
        return digest.hexdigest()


def read_tensor_bytes(t: TensorInfo) -> Iterator[bytes]:
    if not isinstance(t.file, Path):
        raise CheckpointError(f"internal: {t.file.name} is not a local file")
    with open(t.file, "rb") as f:
        f.seek(t.begin)
        remaining = t.end - t.begin
        while remaining > 0:
            chunk = f.read(min(_READ_CHUNK, remaining))
            if not chunk:
                raise CheckpointError(f"{t.file}: truncated inside tensor {t.name!r}")
            remaining -= len(chunk)
            yield chunk


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check one safetensors file's header against the file's size."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            return _parse_header(path, size, lambda offset, n: os.pread(f.fileno(), n, offset))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from e


def read_source_header(source: ByteSource) -> dict[str, TensorInfo]:
    """:func:`read_header` for a file read through a :class:`~merging.sources.ByteSource`."""
    return _parse_header(source, source.size, lambda offset, n: read_bytes(source, offset, n))


def _shown(file: Path | ByteSource) -> Path | str:
    """A file as messages name it."""
    return file if isinstance(file, Path) else file.name


def _parse_header(file: Path | ByteSource, size: int, read: Callable[[int, int], bytes]) -> dict[str, TensorInfo]:
    name = _shown(file)
    raw_len = read(0, 8) if size >= 8 else b""
    if len(raw_len) < 8:
        raise CheckpointError(f"{name}: truncated safetensors file ({size} bytes)")
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
        raise CheckpointError(
            f"{name}: corrupt or truncated safetensors header (declares {header_len} header bytes, file has {size})"
        )
    try:
        header = json.loads(read(8, header_len))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{name}: corrupt safetensors header ({e})") from e
    except RecursionError as e:
        raise CheckpointError(f"{name}: corrupt safetensors header (nested too deeply)") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{name}: corrupt safetensors header (not a JSON object)")
    return _tensor_infos(file, header, data_start=8 + header_len, size=size)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _tensor_infos(file: Path | ByteSource, header: dict, *, data_start: int, size: int) -> dict[str, TensorInfo]:
    path = _shown(file)
    infos: dict[str, TensorInfo] = {}
    data_end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, offsets = meta["dtype"], tuple(meta["shape"]), tuple(meta["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: corrupt header entry for tensor {name!r}") from e
        if not all(_whole(d) for d in shape) or len(offsets) != 2 or not all(_whole(o) for o in offsets):
            raise CheckpointError(
                f"{path}: tensor {name!r} has a shape or offsets that are not "
                f"non-negative whole numbers ({list(shape)}, {list(offsets)})"
            )
        begin, end = offsets
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{path}: tensor {name!r} has unknown dtype {dtype!r}")
        if end - begin != math.prod(shape) * DTYPE_BYTES[dtype] or begin < 0:
            raise CheckpointError(
                f"{path}: tensor {name!r} offsets {begin}..{end} disagree with "
                f"its shape {list(shape)} and dtype {dtype}"
            )
        data_end = max(data_end, end)
        infos[name] = TensorInfo(name, dtype, shape, file, data_start + begin, data_start + end)
    if data_start + data_end != size:
        raise CheckpointError(
            f"{path}: truncated or padded safetensors file: header needs "
            f"{data_start + data_end} bytes, file has {size}; re-copy or re-save the shard"
        )
    return infos


def _find_weight_files(directory: Path) -> list[Path]:
    index = directory / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: unreadable index ({e})") from e
        files = sorted({directory / f for f in weight_map.values()})
        for f in files:
            if not f.is_file():
                raise CheckpointError(f"{index} names {f.name}, which is missing from {directory}")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted({p.name for pat in PICKLE_PATTERNS for p in directory.glob(pat)})
    if pickles:
        raise CheckpointError(
            f"{directory} has only pickle weights ({', '.join(pickles)}); memo never loads "
            "pickle: convert them on a trusted machine with "
            "`AutoModelForCausalLM.from_pretrained(d).save_pretrained(d, safe_serialization=True)`"
        )
    raise CheckpointError(f"{directory} has no *.safetensors weights")


def open_checkpoint(directory: Path) -> Checkpoint:
    """List and check every tensor of a model directory (headers only)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is not a directory")
    files = _find_weight_files(directory)
    tensors = _all_tensors([(f.name, read_header(f)) for f in files])
    index = directory / INDEX_FILE
    if index.is_file():
        for name, fname in json.loads(index.read_text())["weight_map"].items():
            if name not in tensors or tensors[name].file.name != fname:
                raise CheckpointError(f"{index} maps tensor {name!r} to {fname}, which lacks it")
    return Checkpoint(directory=directory, files=tuple(files), tensors=_some(tensors, directory))


def open_sources(label: Path, sources: Sequence[ByteSource]) -> Checkpoint:
    """:func:`open_checkpoint` for weight files read through byte sources; ``label`` names the input."""
    tensors = _all_tensors([(s.name, read_source_header(s)) for s in sources])
    return Checkpoint(directory=label, files=tuple(sources), tensors=_some(tensors, label))


def _all_tensors(headers: list[tuple[str, dict[str, TensorInfo]]]) -> dict[str, TensorInfo]:
    """Every file's tensors in one mapping; a name in two files is an error."""
    tensors: dict[str, TensorInfo] = {}
    for file_name, infos in headers:
        for name, info in infos.items():
            if name in tensors:
                raise CheckpointError(f"tensor {name!r} appears in both {tensors[name].file.name} and {file_name}")
            tensors[name] = info
    return tensors


def _some(tensors: dict[str, TensorInfo], where: Path) -> dict[str, TensorInfo]:
    if not tensors:
        raise CheckpointError(f"{where}: the safetensors files hold no tensors")
    return tensors
