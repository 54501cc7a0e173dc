"""Which inputs feed which output tensor, checked before any tensor is read.

Rules (mergekit's where it defines one):
- every tensor of the base is written; with fine-tuned model inputs every
  input must have it with the base's shape (an error names tensor, file and
  shapes; a vocabulary-size difference gets its own hint);
- a stored task vector may omit tensors: they count as a zero delta;
- tied embeddings: an ``lm_head.weight`` is written if any input has one;
  inputs (or the base) without it supply their input embedding instead, as
  transformers would load a tied model;
- a tensor that an input has and the base lacks is an error;
- non-float tensors (integer buffers) are copied from the base.
"""

from __future__ import annotations

from dataclasses import dataclass

from merging.checkpoint import FLOAT_DTYPES, Checkpoint, TensorInfo
from merging.errors import MergeError
from merging.spec import InputKind

LM_HEAD = "lm_head.weight"
EMBEDDING_NAMES = ("model.embed_tokens.weight", "transformer.wte.weight", "model.decoder.embed_tokens.weight")


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    base: TensorInfo
    inputs: tuple[TensorInfo | None, ...]  # None: a task vector without this tensor (zero delta)

    @property
    def merged(self) -> bool:
        return self.base.dtype in FLOAT_DTYPES and any(i is not None for i in self.inputs)

    @property
    def numel(self) -> int:
        return self.base.numel


def _tied_embedding(ckpt: Checkpoint) -> TensorInfo | None:
    for name in EMBEDDING_NAMES:
        if name in ckpt.tensors:
            return ckpt.tensors[name]
    return None


def _lookup(ckpt: Checkpoint, name: str) -> TensorInfo | None:
    info = ckpt.tensors.get(name)
    if info is None and name == LM_HEAD:
        return _tied_embedding(ckpt)
    return info


def _check_shape(name: str, base: TensorInfo, other: TensorInfo) -> None:
    if other.shape == base.shape:
        return
    hint = ""
    if name in (LM_HEAD, *EMBEDDING_NAMES) and other.shape[1:] == base.shape[1:]:
        hint = (
            " (the vocabularies differ; merge models that share the base's tokenizer — "
            "mergekit's tokenizer_source remapping is not supported)"
        )
    raise MergeError(
        f"tensor {name!r} has shape {list(other.shape)} in {other.file} but "
        f"{list(base.shape)} in the base ({base.file}){hint}"
    )


def plan_tensors(base: Checkpoint, inputs: list[tuple[Checkpoint, InputKind]]) -> list[TensorPlan]:
    names = set(base.tensors)
    if any(LM_HEAD in ckpt.tensors for ckpt, _ in inputs) and LM_HEAD not in names:
        if _tied_embedding(base) is None:
            raise MergeError(f"an input has {LM_HEAD!r} but the base has neither it nor an input embedding")
        names.add(LM_HEAD)
    for ckpt, _ in inputs:
        extra = sorted(set(ckpt.tensors) - names)
        if extra:
            raise MergeError(
                f"tensor {extra[0]!r} in {ckpt.directory} is not in the base model "
                f"({len(extra)} such tensors); merge models of the base's architecture"
            )
    plans = []
    for name in sorted(names):
        base_info = _lookup(base, name)
        if base_info is None:  # only lm_head can be missing, and then the embedding stands in
            raise MergeError(f"tensor {name!r} is not in the base model {base.directory}")
        feeds: list[TensorInfo | None] = []
        for ckpt, kind in inputs:
            info = ckpt.tensors.get(name) if kind == "task_vector" else _lookup(ckpt, name)
            if info is None and kind == "model":
                raise MergeError(f"tensor {name!r} is missing from {ckpt.directory}")
            if info is not None:
                _check_shape(name, base_info, info)
            feeds.append(info)
        plans.append(TensorPlan(name, base_info.shape, base_info, tuple(feeds)))
    return plans
