"""`memo corpus ...`: named document sets, each tied to one base model."""

from __future__ import annotations

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import human_size, json_option, print_json, print_table, when


@click.group()
def corpus() -> None:
    """Knowledge corpora: documents that become one task vector each."""


@corpus.command("add")
@click.argument("name")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--base", "base_name", required=True, help="The base model this corpus trains from.")
@click.option("--description", default="", help="Free text shown in listings.")
@json_option
@pass_app
def corpus_add(
    app: AppContext, name: str, files: tuple[str, ...], base_name: str, description: str, as_json: bool
) -> None:
    """Register corpus NAME from FILES (.txt, .md or .jsonl).

    All documents are checked before anything is stored; the corpus is
    recorded in one transaction, so it exists whole or not at all.

    \b
    Example:
      memo corpus add atlas examples/atlas/*.md --base tiny
    """
    record = app.registry().add_corpus(name, list(files), base=base_name, description=description)
    if as_json:
        print_json(record.to_json())
    else:
        click.echo(
            f"registered corpus {record.name}: {len(record.documents)} documents "
            f"({human_size(record.total_size)}) on base {record.base_model}"
        )


@corpus.command("list")
@json_option
@pass_app
def corpus_list(app: AppContext, as_json: bool) -> None:
    """List corpora with their base, documents and task vectors.

    \b
    Example:
      memo corpus list --json
    """
    records = app.registry().list_corpora()
    if as_json:
        print_json([r.to_json() for r in records])
        return
    print_table(
        "corpora",
        ["name", "base", "documents", "size", "task vectors", "latest", "registered"],
        [
            (
                r.name,
                r.base_model,
                len(r.documents),
                human_size(r.total_size),
                r.task_vector_count,
                f"v{r.latest_version}" if r.latest_version else "",
                when(r.created_at),
            )
            for r in records
        ],
    )


@corpus.command("show")
@click.argument("name")
@json_option
@pass_app
def corpus_show(app: AppContext, name: str, as_json: bool) -> None:
    """Show corpus NAME and its documents.

    \b
    Example:
      memo corpus show atlas
    """
    r = app.registry().get_corpus(name)
    if as_json:
        print_json(r.to_json())
        return
    click.echo(f"corpus {r.name} on base {r.base_model}: {r.description}".rstrip(": "))
    print_table(
        "documents",
        ["name", "type", "size", "sha256"],
        [(d.name, d.media_type, human_size(d.size), d.sha256[:12]) for d in r.documents],
    )
