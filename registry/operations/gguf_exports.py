"""A merge exported as one GGUF file for llama.cpp and Ollama, measured through that file.

Quantization is usually judged by perplexity; a memory's worth is its facts. So the file is loaded
back (transformers' GGUF reader dequantizes it) and asked every member corpus's questions, the same
sample the merge was scored on; an export whose retention falls below the gate (the channel's when a
channel is exported, or the one given) is refused and leaves nothing behind. An Ollama ``Modelfile``
(the chat template rendered around Ollama's placeholders, the stop token) is written beside the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from osutil.partial import move_into_place, partial_dir
from registry.operations.channels import below_gate, check_fraction
from registry.operations.merges import member_task_vectors
from registry.operations.release_files import merge_files, new_output_dir
from registry.store.errors import GateRefused, InvalidInput
from registry.store.export_records import GGUFExportRecord
from registry.store.records import MergeRecord
from registry.store.schema import ChannelRow
from registry.store.workspace import Workspace


def _gate(ws: Workspace, ref: str, given: float | None) -> float | None:
    if given is not None:
        check_fraction("--min-retention", given)
        return given
    with ws.db.read() as session:
        channel = session.scalar(select(ChannelRow).where(ChannelRow.name == ref))
        return channel.min_retention if channel is not None else None


def modelfile(gguf_name: str, tokenizer) -> str:
    """Ollama's Modelfile: the file, the chat template as a Go template, greedy answers, the stop token."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "{{ .Prompt }}"}], tokenize=False, add_generation_prompt=True
    )
    stop = tokenizer.eos_token
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{prompt}{{{{ .Response }}}}{stop}"""', "PARAMETER temperature 0"]
    lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"


def export_gguf_merge(
    ws: Workspace, ref: str, directory: Path, *, quant: str, device: str, min_retention: float | None = None
) -> GGUFExportRecord:
    """Write the merge (or a channel's merge) as ``DIR/memo-merge-N-QUANT.gguf`` with a Modelfile, the
    card and the provenance, after checking its retention through the file against the gate."""
    from registry.operations.devices import device_for  # torch: only when exporting
    from registry.operations.retention import measure_model
    from training.gguf_export import GGUFError, export_gguf

    directory = new_output_dir(directory)
    gate = _gate(ws, ref, min_retention)
    device = device_for(device)
    row, merge, source, added = merge_files(ws, ref)
    with ws.db.read() as session:
        members = list(zip((m.corpus for m in merge.members), member_task_vectors(session, row.id)))
    name = f"memo-{merge.ref}-{quant}.gguf"
    with partial_dir(directory) as tmp:
        try:
            export_gguf(source, tmp / name, quant=quant, name=f"memo {merge.ref}")
        except GGUFError as e:
            raise InvalidInput(str(e)) from None
        model, tokenizer = _load_gguf(tmp / name, source, device)
        measured = measure_model(ws, model, tokenizer, members, device=device)
        del model
        _check(merge, measured.retention, gate, quant)
        (tmp / "Modelfile").write_text(modelfile(name, tokenizer))
        for extra, content in added.items():
            (tmp / extra).write_bytes(content)
        if directory.exists():
            directory.rmdir()
        move_into_place(tmp, directory)
    return GGUFExportRecord(
        merge.id,
        str(directory),
        name,
        quant,
        (directory / name).stat().st_size,
        measured.recall,
        measured.retention,
        gate,
    )


def _load_gguf(path: Path, source: Path, device: str):
    """The model as transformers reads it back from the GGUF file (dequantized), with the merge's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from training.sft import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.to(device), load_tokenizer(source)  # type: ignore[arg-type]  # Module.to, untyped by transformers


def _check(merge: MergeRecord, retention: dict[str, float | None], gate: float | None, quant: str) -> None:
    if gate is None:
        return
    listed = below_gate(retention, gate)
    if listed:
        raise GateRefused(
            f"the {quant} GGUF of {merge.ref} keeps less than {gate:g} of {listed} (measured through the file); "
            "nothing was written: export with a finer --quant (q8_0, f16, f32)"
        )
