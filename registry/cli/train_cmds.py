"""`memo reflect`, `memo train`, `memo register`, `memo eval`: a corpus becomes a task vector."""

from __future__ import annotations

import click

from registry import EvaluationRecord, ExecutiveEvaluationRecord
from registry.cli.app import AppContext, pass_app
from registry.cli.executive_cmds import executive_options, memory_endpoint, protocol_settings
from registry.cli.output import err_console, json_option, print_json, print_table, progress_bar
from registry.cli.training_options import generator_of, generator_options, report, train_options
from training.llm import Endpoint
from training.reflection_prompts import STAGE_PROMPTS


@click.command()
@click.argument("corpus")
@click.option(
    "--qa",
    "qa",
    type=click.Path(dir_okay=False),
    help="Import ready pairs instead: JSON lines with question and answer (other fields kept).",
)
@click.option(
    "--heldout", type=click.Path(dir_okay=False), help="With --qa: paraphrased questions, for evaluation only."
)
@generator_options
@json_option
@pass_app
def reflect(app: AppContext, corpus: str, qa: str | None, heldout: str | None, as_json: bool, **generator) -> None:
    """Make CORPUS's reflections (question-answer pairs) with a GENERATOR, or import ready ones.

    The generator runs five stages over the corpus's documents: fact
    extraction, consolidation, verification against the source, entity
    surfacing and cross-document synthesis. Every reply is cached, so an
    interrupted run resumes where it stopped. The API key, if the endpoint
    needs one, is read from OPENAI_API_KEY.

    \b
    Examples:
      memo reflect harbor --generator-url http://127.0.0.1:11434/v1 --generator-model qwen2.5:14b
      memo reflect harbor --qa examples/harbor/qa.jsonl --heldout examples/harbor/heldout.jsonl
    """
    run = generator_of(qa, heldout, **generator)
    if run is not None:
        record, verb = app.registry().generate_reflections(corpus, *run, progress=not as_json), "generated"
    else:  # _generator returns None only with --qa
        record, verb = app.registry().import_reflections(corpus, str(qa), heldout=heldout), "imported"
    if as_json:
        print_json(record.to_json())
        return
    _report_reflections(record, verb)


def _report_reflections(record, verb: str) -> None:
    click.echo(f"{verb} {record.pair_count} pairs for corpus {record.corpus} (reflection set {record.id})")
    counts = record.settings.get("counts")
    if counts:
        print_table(
            "stages",
            ["stage", "result", "calls", "cached", "tokens in", "tokens out"],
            _stage_rows(counts, record.settings.get("usage", {})),
        )


def _stage_rows(counts: dict, usage: dict) -> list[tuple]:
    rows = []
    for stage, prompts in STAGE_PROMPTS.items():
        u = [usage.get(p, {}) for p in prompts]
        result = ", ".join(f"{k} {v}" for k, v in counts.get(stage, {}).items())
        rows.append(
            (
                stage,
                result,
                *(sum(x.get(k, 0) for x in u) for k in ("calls", "cached", "prompt_tokens", "completion_tokens")),
            )
        )
    return rows


@click.command()
@click.argument("corpus")
@train_options
@json_option
@pass_app
def train(app: AppContext, corpus: str, choices, onto, rehearse, storage_dtype, device, as_json: bool) -> None:
    """Fine-tune CORPUS's base on its reflections and record a new task vector version.

    With --onto CHANNEL, training starts from the channel's model and
    rehearses its member corpora: an arrival costs one training, whatever
    the number of corpora the channel holds.

    \b
    Each fine-tuning setting not given is the base's training default
    (`memo base show BASE`), else memo's own.

    \b
    Examples:
      memo train harbor --steps 60 --storage-dtype bfloat16
      memo train observatory --onto main --steps 72
      memo merge harbor glassworks observatory --channel main
    """
    reg = app.registry()
    record = reg.train(
        corpus,
        reg.training_settings(reg.get_corpus(corpus).base_model, **choices),
        storage_dtype=storage_dtype,
        device=device,
        progress=not as_json,
        onto=onto,
        rehearse=rehearse,
    )
    report(record, as_json)


@click.command()
@click.argument("name")
@click.argument("docs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--qa", type=click.Path(dir_okay=False), help="Ready question-answer pairs (JSON lines).")
@click.option(
    "--heldout", type=click.Path(dir_okay=False), help="With --qa: paraphrased questions, for evaluation only."
)
@click.option("--base", "base_name", required=True, help="The base model to train from.")
@click.option("--description", default="", help="Free text shown in listings.")
@generator_options
@train_options
@json_option
@pass_app
def register(
    app: AppContext,
    name,
    docs,
    qa,
    heldout,
    base_name,
    description,
    choices,
    onto,
    rehearse,
    storage_dtype,
    device,
    as_json: bool,
    **generator,
) -> None:
    """Register a new corpus in one go: documents, reflections, training, task vector.

    The reflections are imported (--qa) or made by a GENERATOR
    (--generator-url, --generator-model). Run again after a failure or a
    kill, the same command picks up where it stopped: the corpus, the
    reflections and a finished training are reused, never duplicated, and
    an interrupted training resumes from its checkpoint. Each fine-tuning
    setting not given is the base's training default (`memo base show
    BASE`: a base probed with memo's general-knowledge bank trains so as
    to keep what it knows), else memo's own.

    \b
    Examples:
      memo register harbor examples/harbor/*.md --qa examples/harbor/qa.jsonl \\
          --heldout examples/harbor/heldout.jsonl --base tiny
      memo register harbor docs/*.md --base qwen \\
          --generator-url http://127.0.0.1:11434/v1 --generator-model qwen2.5:14b
    """
    reg = app.registry()
    record = reg.register(
        name,
        list(docs),
        base=base_name,
        settings=reg.training_settings(base_name, **choices),
        qa=qa,
        heldout=heldout,
        generator=generator_of(qa, heldout, **generator),
        description=description,
        storage_dtype=storage_dtype,
        device=device,
        progress=not as_json,
        on_reflections=None if as_json or qa is not None else lambda r: _report_reflections(r, "generated"),
        onto=onto,
        rehearse=rehearse,
    )
    report(record, as_json)


@click.command("eval")
@click.argument("ref")
@click.option("--corpus", required=True, help="Whose questions to ask.")
@click.option("--heldout", is_flag=True, help="Ask the held-out paraphrases instead.")
@executive_options(required=False)
@click.option("--judge", is_flag=True, help="With an executive: also score answers with it as an LLM judge.")
@click.option("--limit", type=int, default=None, help="With an executive: ask a seeded sample of N questions.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit sample.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, ...")
@json_option
@pass_app
def eval_(
    app: AppContext,
    ref: str,
    corpus: str,
    heldout: bool,
    executive_url: str | None,
    executive_model: str | None,
    memory_url: str | None,
    memory_model: str | None,
    max_questions: int,
    narrow_rounds: int,
    gather_rounds: int,
    json_mode: bool,
    judge: bool,
    limit: int | None,
    seed: int,
    device: str,
    as_json: bool,
) -> None:
    """Recall of REF on a corpus's questions (exact match, token F1).

    REF is a channel, a merge (7, merge-7), a corpus (its latest task vector
    on its base), corpus@vN or a model directory. With --executive-url and
    --executive-model the questions go through the Executive–Memory protocol
    end to end (REF is the memory), and --judge adds an LLM judge's verdict.

    \b
    Examples:
      memo eval harbor@v1 --corpus harbor --heldout --json
      memo eval production --corpus harbor --executive-url http://127.0.0.1:11434/v1 \\
          --executive-model qwen2.5:14b --judge --limit 20
    """
    if bool(executive_url) != bool(executive_model):
        raise click.UsageError("give --executive-url and --executive-model together")
    reg = app.registry()
    if not executive_url or not executive_model:
        if judge or limit or memory_url:
            raise click.UsageError("--judge, --limit and --memory-url need an executive (--executive-url)")
        with err_console.status("answering", spinner="dots"):
            alone = reg.evaluate(ref, corpus, heldout=heldout, device=device)
        columns = ["exact match", "F1", "questions"]
        result: EvaluationRecord | ExecutiveEvaluationRecord = alone
        row = [f"{alone.exact_match:.3f}", f"{alone.f1:.3f}", alone.count]
    else:
        memory = reg.memory(ref, endpoint=memory_endpoint(memory_url, memory_model), device=device)
        with progress_bar("asking", as_json) as update:
            together = reg.evaluate_with_executive(
                memory,
                Endpoint(executive_url, executive_model),
                corpus,
                settings=protocol_settings(max_questions, narrow_rounds, gather_rounds, json_mode),
                heldout=heldout,
                judge=judge,
                limit=limit,
                seed=seed,
                on_question=update,
            )
        columns, row = _executive_row(together)
        result = together
    if as_json:
        print_json(result.to_json())
    else:
        how = "executive + memory" if executive_url else "memory alone"
        print_table(f"{ref} on {corpus} ({result.set}, {how})", columns, [row])


def _executive_row(result: ExecutiveEvaluationRecord) -> tuple[list[str], list]:
    judged = result.judge is not None
    columns = ["exact match", "F1", *(["judge"] if judged else []), "executive calls", "questions"]
    row = [
        f"{result.exact_match:.3f}",
        f"{result.f1:.3f}",
        *([f"{result.judge:.3f}"] if result.judge is not None else []),
        f"{result.executive_calls:.1f}",
        result.count,
    ]
    return columns, row
