"""Frozen record of a merge exported as a GGUF file, with what its recall was through that file."""

from __future__ import annotations

from dataclasses import dataclass

from registry.store.records import MemberRecall, Record


@dataclass(frozen=True)
class GGUFExportRecord(Record):
    merge_id: int
    directory: str
    file: str  # the GGUF file's name in ``directory`` (a Modelfile for Ollama lies beside it)
    quant: str  # f32, f16, bf16 or q8_0
    size: int  # bytes
    recall: dict[str, MemberRecall]  # member corpus -> recall through the GGUF file
    retention: dict[str, float | None]  # member corpus -> that recall / the corpus's own model's
    gate: float | None  # the least retention the export had to keep (the channel's gate, or --min-retention)
