"""`memo export`: a merge as a Hugging Face model directory, or as one GGUF file for llama.cpp and Ollama."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, human_size, json_option, print_json, print_table

if TYPE_CHECKING:  # `memo --help` loads no registry
    from registry import GGUFExportRecord


def _fraction(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


@click.command()
@click.argument("ref", metavar="MERGE_OR_CHANNEL")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf", "gguf"]),
    default="hf",
    show_default=True,
    help="hf: a Hugging Face model directory; gguf: one GGUF file for llama.cpp and Ollama, with a Modelfile.",
)
@click.option(
    "--quant",
    type=click.Choice(["f32", "f16", "bf16", "q8_0"]),
    default="q8_0",
    show_default=True,
    help="The GGUF file's tensor type (norms stay f32).",
)
@click.option(
    "--min-retention",
    type=float,
    metavar="FRACTION",
    help="Refuse a GGUF that keeps less than this of any member corpus [default: the channel's gate].",
)
@click.option("--device", default="auto", show_default=True, help="Where the GGUF file is asked its questions.")
@json_option
@pass_app
def export(
    app: AppContext,
    ref: str,
    directory: str,
    fmt: str,
    quant: str,
    min_retention: float | None,
    device: str,
    as_json: bool,
) -> None:
    """Write a merge as a standard Hugging Face model directory (card, provenance, mergekit config),
    or as one GGUF file for llama.cpp and Ollama (--format gguf).

    A bare merge carries its mergekit_config.yml; a trained strategy's merge has none (it fine-tunes).
    A GGUF file is asked every member corpus's questions through the file itself, and refused, writing
    nothing, if it keeps less than the gate.

    \b
    Examples:
      memo export production ./memory-model
      memo export production ./memory-gguf --format gguf --quant q8_0 && ollama create memory -f ./memory-gguf/Modelfile
    """
    if fmt == "gguf":
        with err_console.status(
            f"exporting {ref} as {quant} GGUF and asking it its corpora's questions", spinner="dots"
        ):
            record = app.registry().export_gguf(ref, directory, quant=quant, min_retention=min_retention, device=device)
        if as_json:
            print_json(record.to_json())
        else:
            _print_gguf(record)
        return
    if min_retention is not None:
        raise click.UsageError("--min-retention applies to --format gguf")
    with err_console.status("exporting", spinner="dots"):
        path = app.registry().export(ref, directory)
    if as_json:
        print_json({"directory": str(path)})
    else:
        click.echo(f"exported {ref} to {path}")


def _print_gguf(record: GGUFExportRecord) -> None:
    print_table(
        f"{record.file} ({human_size(record.size)}): recall through the file",
        ["corpus", "recall", "retention"],
        [
            (
                corpus,
                f"{r.exact_match:.2f}",
                _fraction(record.retention.get(corpus)),
            )
            for corpus, r in record.recall.items()
        ],
    )
    where = Path(record.directory)
    ollama = f"ollama create NAME -f {where / 'Modelfile'}"
    click.echo(f"exported merge-{record.merge_id} to {where / record.file}; Ollama: {ollama}")
