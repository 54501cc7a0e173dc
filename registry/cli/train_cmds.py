"""`memo reflect`, `memo train`, `memo register`, `memo eval`: a corpus becomes a task vector."""

from __future__ import annotations

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, json_option, print_json, print_table
from training.sft import SFTSettings

LORA_LR = 3e-3  # LoRA wants ~10x the full fine-tuning rate


def train_options(f):
    """Fine-tuning options shared by `train` and `register`."""
    options = [
        click.option("--method", type=click.Choice(["full", "lora"]), default="full", show_default=True,
                     help="Full fine-tuning (best in MeMo) or LoRA merged into full weights."),
        click.option("--steps", type=int, default=SFTSettings.steps, show_default=True, help="Optimizer steps."),
        click.option("--batch", type=int, default=SFTSettings.batch, show_default=True, help="Examples per step."),
        click.option("--lr", type=float, default=None,
                     help=f"Learning rate [default: {SFTSettings.lr:g} full, {LORA_LR:g} LoRA]."),
        click.option("--max-length", type=int, default=SFTSettings.max_length, show_default=True,
                     help="Tokens per example."),
        click.option("--seed", type=int, default=SFTSettings.seed, show_default=True),
        click.option("--storage-dtype", type=click.Choice(["float32", "bfloat16"]), default="float32",
                     show_default=True, help="Task vector storage (bfloat16: half the size, ~0.2% error)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto (a GPU when there is one), cpu, cuda, cuda:1, ..."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _settings(method, steps, batch, lr, max_length, seed):
    lr = lr if lr is not None else (LORA_LR if method == "lora" else SFTSettings.lr)
    return SFTSettings(method=method, steps=steps, batch=batch, lr=lr, max_length=max_length, seed=seed)


def _report(record, as_json: bool) -> None:
    if record is None:  # a helper process of a multi-process launch: the main one reports
        return
    if as_json:
        print_json(record.to_json())
        return
    m = record.metrics
    held = f", held-out {m['heldout']['exact_match']:.2f}" if "heldout" in m else ""
    click.echo(f"registered task vector {record.ref}: recall {m['recall']['exact_match']:.2f} exact match"
               f"{held}; {record.training['examples']} examples in {record.training['wall_seconds']:.1f}s")


@click.command()
@click.argument("corpus")
@click.option("--qa", "qa", required=True, type=click.Path(dir_okay=False),
              help="JSON lines with question and answer (other fields kept).")
@click.option("--heldout", type=click.Path(dir_okay=False), help="Paraphrased questions, for evaluation only.")
@json_option
@pass_app
def reflect(app: AppContext, corpus: str, qa: str, heldout: str | None, as_json: bool) -> None:
    """Import ready question-answer pairs as CORPUS's reflections.

    \b
    Example:
      memo reflect harbor --qa examples/harbor/qa.jsonl --heldout examples/harbor/heldout.jsonl
    """
    record = app.registry().import_reflections(corpus, qa, heldout=heldout)
    if as_json:
        print_json(record.to_json())
    else:
        click.echo(f"imported {record.pair_count} pairs for corpus {record.corpus} (reflection set {record.id})")


@click.command()
@click.argument("corpus")
@train_options
@json_option
@pass_app
def train(app: AppContext, corpus: str, method, steps, batch, lr, max_length, seed, storage_dtype, device,
          as_json: bool) -> None:
    """Fine-tune CORPUS's base on its reflections and record a new task vector version.

    \b
    Example:
      memo train harbor --steps 60 --storage-dtype bfloat16
    """
    settings = _settings(method, steps, batch, lr, max_length, seed)
    record = app.registry().train(corpus, settings, storage_dtype=storage_dtype, device=device,
                                  progress=not as_json)
    _report(record, as_json)


@click.command()
@click.argument("name")
@click.argument("docs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--qa", required=True, type=click.Path(dir_okay=False), help="Question-answer pairs (JSON lines).")
@click.option("--heldout", type=click.Path(dir_okay=False), help="Paraphrased questions, for evaluation only.")
@click.option("--base", "base_name", required=True, help="The base model to train from.")
@click.option("--description", default="", help="Free text shown in listings.")
@train_options
@json_option
@pass_app
def register(app: AppContext, name, docs, qa, heldout, base_name, description, method, steps, batch, lr,
             max_length, seed, storage_dtype, device, as_json: bool) -> None:
    """Register a new corpus in one go: documents, reflections, training, task vector.

    \b
    Example:
      memo register harbor examples/harbor/*.md --qa examples/harbor/qa.jsonl \\
          --heldout examples/harbor/heldout.jsonl --base tiny
    """
    from training.distributed import is_main_process, wait_for_everyone

    reg = app.registry()
    if is_main_process():  # under `accelerate launch`, one process registers and all train
        reg.add_corpus(name, list(docs), base=base_name, description=description)
        reg.import_reflections(name, qa, heldout=heldout)
    wait_for_everyone()
    record = reg.train(name, _settings(method, steps, batch, lr, max_length, seed),
                       storage_dtype=storage_dtype, device=device, progress=not as_json)
    _report(record, as_json)


@click.command("eval")
@click.argument("ref")
@click.option("--corpus", required=True, help="Whose questions to ask.")
@click.option("--heldout", is_flag=True, help="Ask the held-out paraphrases instead.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@json_option
@pass_app
def eval_(app: AppContext, ref: str, corpus: str, heldout: bool, device: str, as_json: bool) -> None:
    """Recall (exact match, token F1) of REF on a corpus's questions.

    REF is a corpus (its latest task vector on its base), corpus@vN or a model directory.

    \b
    Example:
      memo eval harbor@v1 --corpus harbor --heldout --json
    """
    with err_console.status("answering", spinner="dots"):
        result = app.registry().evaluate(ref, corpus, heldout=heldout, device=device)
    if as_json:
        print_json(result)
    else:
        print_table(f"{ref} on {corpus} ({result['set']})", ["exact match", "F1", "questions"],
                    [(f"{result['exact_match']:.3f}", f"{result['f1']:.3f}", result["count"])])
