"""The options of `memo train` and `memo register`: the fine-tuning settings and the reflection generator,
and the line that reports a task vector."""

from __future__ import annotations

import functools

import click

from registry.cli.output import print_json
from registry.figures import general, seconds
from training.llm import Endpoint
from training.reflections import ReflectSettings
from training.settings import (
    FULL_LR,
    LORA_LR,
    LOSS_MEANS,
    METHODS,
    REHEARSE_SHARE,
    SPARSE_LR,
    STORAGE_DTYPE_NAMES,
    SFTSettings,
    sft_settings,
)

SFT_OPTIONS = ("method", "steps", "batch", "lr", "max_length", "seed", "replay", "boundary", "loss_mean", "neurons")
_PLAIN = SFTSettings()


def _default(value) -> str:
    return f"[default: the base's, else {value}]"


def sft_options(f):
    """The fine-tuning settings as flags, each left None unless given: the command gets those given as
    ``choices`` (a dict), to lay over the base's training defaults (`memo base defaults`)."""
    options = [
        click.option(
            "--method",
            type=click.Choice(METHODS),
            help="Full fine-tuning (best in MeMo), the MLP blocks alone (keeps more of the base), LoRA merged "
            "into full weights, or sparse: the MLP neurons the corpus uses far more than everyday prompts do "
            f"{_default(_PLAIN.method)}.",
        ),
        click.option("--steps", type=int, help=f"Optimizer steps {_default(_PLAIN.steps)}."),
        click.option("--batch", type=int, help=f"Examples per step {_default(_PLAIN.batch)}."),
        click.option(
            "--lr",
            type=float,
            help=f"Learning rate [default: the base's, else {FULL_LR:g} full or MLP, {LORA_LR:g} LoRA, "
            f"{SPARSE_LR:g} sparse].",
        ),
        click.option("--max-length", type=int, help=f"Tokens per example {_default(_PLAIN.max_length)}."),
        click.option("--seed", type=int, help=_default(_PLAIN.seed)),
        click.option(
            "--replay",
            type=float,
            help="Share of the examples that are the base's own answers to everyday prompts (keeps its "
            f"knowledge) {_default(_PLAIN.replay)}.",
        ),
        click.option(
            "--boundary",
            type=float,
            help='Share of the examples that are questions about look-alike names answered "I don\'t know" '
            f"{_default(_PLAIN.boundary)}.",
        ),
        click.option(
            "--loss-mean",
            type=click.Choice(LOSS_MEANS),
            help="Average the loss over answer tokens, or over examples (each weighs the same, so the corpus's "
            f"short answers are not outweighed by long replayed ones) {_default(_PLAIN.loss_mean)}.",
        ),
        click.option(
            "--neurons",
            type=float,
            help=f"With --method sparse: the share of each MLP block's neurons trained {_default(_PLAIN.neurons)}.",
        ),
    ]

    @functools.wraps(f)
    def with_choices(*args, **kwargs):
        given = {k: kwargs.pop(k) for k in SFT_OPTIONS}
        choices = {k: v for k, v in given.items() if v is not None}
        try:  # each flag on its own, before any work (the base's defaults are laid under them later)
            sft_settings(choices)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
        return f(*args, choices=choices, **kwargs)

    for option in reversed(options):
        with_choices = option(with_choices)
    return with_choices


def train_options(f):
    """Fine-tuning options shared by `train` and `register`: :func:`sft_options` (as ``choices``), then
    ``onto``, ``rehearse``, ``storage_dtype`` and ``device``."""
    for option in reversed(_start_and_storage_options()):
        f = option(f)
    return sft_options(f)


def _start_and_storage_options() -> list:
    """Where training starts (``--onto``), how its result is stored, and where it runs."""
    return [
        click.option(
            "--onto",
            metavar="CHANNEL",
            help="Train from the model CHANNEL serves (the base while it has none), rehearsing its member "
            "corpora; `memo merge --channel CHANNEL` then serves the result, healed only if a member falls short.",
        ),
        click.option(
            "--rehearse",
            type=float,
            default=REHEARSE_SHARE,
            show_default=True,
            help="With --onto: share of the examples that are the earlier corpora's pairs.",
        ),
        click.option(
            "--storage-dtype",
            type=click.Choice(list(STORAGE_DTYPE_NAMES)),
            default="float32",
            show_default=True,
            help="Task vector storage (bfloat16: half the size, ~0.2% error).",
        ),
        click.option(
            "--device", default="auto", show_default=True, help="auto (a GPU when there is one), cpu, cuda, cuda:1, ..."
        ),
    ]


def report(record, as_json: bool) -> None:
    if record is None:  # a helper process of a multi-process launch: the main one reports
        return
    if as_json:
        print_json(record.to_json())
        return
    m, cost = record.metrics, record.cost
    recall = f"{m.recall.exact_match:.2f}" if m.recall else "-"
    held = f", held-out {m.heldout.exact_match:.2f}" if m.heldout else ""
    held += f", general knowledge kept {general(m.general)}" if m.general else ""
    verb = "already registered (the same reflections and settings)" if record.reused else "registered"
    onto = f", trained onto {record.trained_onto}" if record.trained_onto else ""
    click.echo(
        f"{verb} task vector {record.ref}{onto}: recall {recall} exact match{held}; {cost.examples} examples, "
        f"{seconds(cost.train_seconds)} training ({seconds(cost.wall_seconds)} in all)"
    )


def generator_options(f):
    """The GENERATOR's endpoint and the reflection settings, shared by `reflect` and `register`."""
    options = [
        click.option(
            "--generator-url",
            envvar="MEMO_GENERATOR_URL",
            metavar="URL",
            help="OpenAI-compatible endpoint of the GENERATOR, e.g. http://127.0.0.1:8000/v1 [env MEMO_GENERATOR_URL].",
        ),
        click.option(
            "--generator-model",
            envvar="MEMO_GENERATOR_MODEL",
            metavar="NAME",
            help="The generator's model name on that endpoint [env MEMO_GENERATOR_MODEL].",
        ),
        click.option(
            "--chunk-words",
            type=int,
            default=ReflectSettings.chunk_words,
            show_default=True,
            help="Words per chunk the generator reads.",
        ),
        click.option("--overlap-words", type=int, default=ReflectSettings.overlap_words, show_default=True),
        click.option(
            "--concurrency",
            type=int,
            default=ReflectSettings.concurrency,
            show_default=True,
            help="Generator calls in flight at once.",
        ),
        click.option("--temperature", type=float, default=ReflectSettings.temperature, show_default=True),
        click.option("--top-p", type=float, default=ReflectSettings.top_p, show_default=True),
        click.option(
            "--json-mode/--no-json-mode",
            default=True,
            show_default=True,
            help="Ask the endpoint for response_format json_object (turn off for servers without it).",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def generator_of(
    qa: str | None, heldout: str | None, generator_url: str | None, generator_model: str | None, **settings
) -> tuple[Endpoint, ReflectSettings] | None:
    """The generator to run, or None to import --qa; usage errors for the combinations that make no sense."""
    if qa is not None:
        if generator_url or generator_model:
            raise click.UsageError("give either --qa or a generator (--generator-url/--generator-model), not both")
        return None
    if not (generator_url and generator_model):
        raise click.UsageError("give --generator-url and --generator-model (or --qa FILE to import pairs)")
    if heldout:
        raise click.UsageError("--heldout goes with --qa")
    try:
        return Endpoint(generator_url, generator_model), ReflectSettings(**settings)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
