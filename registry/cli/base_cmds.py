"""`memo base ...`: register and list pretrained base models."""

from __future__ import annotations

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, human_count, json_option, print_json, print_table, when
from training.settings import TinyConfig


@click.group()
def base() -> None:
    """Pretrained base models that task vectors are measured against."""


@base.command("add")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--name", help="Name in the registry (default: the directory's name).")
@json_option
@pass_app
def base_add(app: AppContext, path: str, name: str | None, as_json: bool) -> None:
    """Register the Hugging Face model directory PATH (safetensors weights only).

    Records architecture, dtype, parameter count and a fingerprint of the
    weights, and copies the directory into the blob store.

    \b
    Example:
      memo base add ./Qwen2.5-0.5B-Instruct --name qwen-0.5b
    """
    with err_console.status("hashing and storing the weights", spinner="dots"):
        record = app.registry().add_base(path, name=name)
    if as_json:
        print_json(record.to_json())
    else:
        click.echo(
            f"registered base model {record.name}: {record.architecture}, {record.dtype}, "
            f"{human_count(record.parameter_count)} parameters, fingerprint {record.fingerprint[:12]}"
        )


@base.command("create-tiny")
@click.argument("name")
@click.option(
    "--pretrain-steps",
    type=int,
    default=TinyConfig.pretrain_steps,
    show_default=True,
    help="Pre-training steps (~95 s on 2 CPU cores at the default).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
@pass_app
def base_create_tiny(app: AppContext, name: str, pretrain_steps: int, seed: int, as_json: bool) -> None:
    """Build a tiny Llama base offline and register it as NAME.

    A BPE tokenizer is trained on the spot and the model is briefly
    pre-trained on a separate invented world in question/answer form, so
    that fine-tunes start from a model that knows the format.

    \b
    Example:
      memo base create-tiny tiny
    """
    record = app.registry().create_tiny_base(
        name, TinyConfig(pretrain_steps=pretrain_steps, seed=seed), progress=not as_json
    )
    if as_json:
        print_json(record.to_json())
    else:
        click.echo(f"registered tiny base model {record.name}: {human_count(record.parameter_count)} parameters")


@base.command("list")
@json_option
@pass_app
def base_list(app: AppContext, as_json: bool) -> None:
    """List registered base models.

    \b
    Example:
      memo base list --json
    """
    records = app.registry().list_bases()
    if as_json:
        print_json([r.to_json() for r in records])
        return
    print_table(
        "base models",
        ["name", "architecture", "dtype", "parameters", "fingerprint", "registered"],
        [
            (r.name, r.architecture, r.dtype, human_count(r.parameter_count), r.fingerprint[:12], when(r.created_at))
            for r in records
        ],
    )


@base.command("show")
@click.argument("name")
@json_option
@pass_app
def base_show(app: AppContext, name: str, as_json: bool) -> None:
    """Show one base model.

    \b
    Example:
      memo base show tiny
    """
    r = app.registry().get_base(name)
    if as_json:
        print_json(r.to_json())
        return
    print_table(f"base model {r.name}", ["field", "value"], [(k, v) for k, v in r.to_json().items()])
