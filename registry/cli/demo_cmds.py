"""`memo demo`: the README's first command."""

from __future__ import annotations

import math
from pathlib import Path

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.merge_cmds import lowest_retention
from registry.cli.output import err_console, json_option, print_json, print_log, print_table
from registry.demo import DemoResult, run_demo
from registry.study import METHODS, cumulative
from training.sft import SFTSettings
from training.tiny import TinyConfig

# MeMo (arXiv 2605.15156), 14B memory models on 8xH100: GPU-hours merged vs retrained, accuracy gap.
PAPER_COMPUTE = {2: (48, 72), 10: (240, 1320)}
PAPER_GAP = "11-19 points below full retraining"


@click.command()
@click.option("--corpora", type=int, default=None, help="Use only the first N example corpora.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the tiny base and fine-tuning.")
@click.option("--pretrain-steps", type=int, default=TinyConfig.pretrain_steps, show_default=True,
              help="Pre-training steps of the tiny base (fewer: faster, weaker).")
@click.option("--train-steps", type=int, default=SFTSettings.steps, show_default=True,
              help="Fine-tuning steps per corpus.")
@click.option("--repo", default=None, metavar="ORG/NAME",
              help="Publish production to this repo on the real Hub (HF_TOKEN, HF_ENDPOINT) "
                   "instead of a local Hub started for the run.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@json_option
@pass_app
def demo(app: AppContext, corpora: int | None, seed: int, pretrain_steps: int, train_steps: int,
         repo: str | None, device: str, as_json: bool) -> None:
    """Run memo's journeys end to end on tiny local models, offline (about 5 minutes on 2 CPU cores).

    Builds a tiny base, registers the example corpora one at a time, after
    each TIES-merges all corpora so far into the production channel and
    publishes it, rolls production back one step, and compares the merges
    with joint retraining: a table, and a plot in HOME/continual.png.
    Uses --home (default ./memo-demo), which must not hold a registry yet.

    \b
    Example:
      memo --home /tmp/memo-demo demo
    """
    home = Path(app.home or "memo-demo").resolve()
    tiny = TinyConfig(seed=seed, pretrain_steps=pretrain_steps)
    result = run_demo(home, corpora=corpora, tiny=tiny, train=SFTSettings(steps=train_steps, seed=seed),
                      repo=repo, device=device, say=lambda m: err_console.print(f"[bold]>[/] {m}"),
                      progress=not as_json)
    if as_json:
        print_json(_json(result))
        return
    _print(result)


def _print(result: DemoResult) -> None:
    print_table("each corpus on its own (exact-match recall)",
                ["corpus", "docs", "task vector", "recall", "held-out", "base alone", "train"],
                [(o.corpus.name, len(o.corpus.documents), o.task_vector.ref,
                  f"{o.task_vector.metrics['recall']['exact_match']:.2f}",
                  f"{o.task_vector.metrics['heldout']['exact_match']:.2f}", f"{o.base_recall:.2f}",
                  f"{o.task_vector.training['train_seconds']:.1f}s") for o in result.corpora])
    last = result.arrivals[-1]
    print_table(f"recall per corpus after K={last.k} (exact match / held-out paraphrases)",
                ["corpus", "own model", "TIES merge", "task arithmetic", "joint retraining"],
                [(c, *(_pair(last.recall[m][c]) for m in METHODS)) for c in last.recall["own"]])
    totals = cumulative(list(result.arrivals))
    print_table("as corpora arrive: mean recall, and cumulative training seconds",
                ["K", "merge", "own", "TIES", "task arith.", "joint", "alone + merge", "retrain all", "saving"],
                [(a.k, a.merge.ref, *(f"{a.mean(m):.2f}" for m in METHODS), f"{alone:.0f}s", f"{joint:.0f}s",
                  _saving(alone, joint)) for a, (alone, joint) in zip(result.arrivals, totals)])
    gap = (last.mean("joint") - last.mean("ties")) * 100
    click.echo(f"ours at K={last.k}: a bare TIES merge recalls {gap:.0f} points less than joint retraining "
               f"(paper, 14B models: {PAPER_GAP}); the continual-integration strategies win this back.")
    for k, (merged, retrained) in PAPER_COMPUTE.items():
        ours = f"ours {_saving(*totals[k - 1])}" if k <= len(totals) else f"ours: run with {k} corpora"
        click.echo(f"compute at K={k}: paper {_saving(merged, retrained)} ({merged} vs {retrained} GPU-hours); {ours}")
    retention = {a.merge.id: lowest_retention(a.merge) for a in result.arrivals}
    print_log(result.log, f"history of production (published to {result.hub})", retention)
    click.echo(f"{len(result.publications)} publications; the plot is at {result.plot}")
    click.echo(f"verify: {result.verify.checked} blobs checked, {len(result.verify.problems)} problems")
    click.echo(f"the demo registry is at {result.home}; try `memo --home {result.home} merge list`")


def _pair(score) -> str:
    return f"{score.exact:.2f} / {score.heldout:.2f}" if score.heldout is not None else f"{score.exact:.2f}"


def _saving(merged: float, retrained: float) -> str:
    """How much less "alone + merge" costs than retraining, as the paper words it."""
    if merged <= 0 or math.isnan(merged):
        return "-"
    ratio = retrained / merged
    if ratio < 1:
        return f"{(merged / retrained - 1) * 100:.0f}% more"
    return f"{ratio:.1f}x less" if ratio >= 2 else f"{(1 - merged / retrained) * 100:.0f}% less"


def _json(result: DemoResult) -> dict:
    return {"home": str(result.home), "base": result.base.to_json(), "hub": result.hub, "plot": str(result.plot),
            "arrivals": [a.to_json() for a in result.arrivals],
            "cumulative_seconds": [{"alone_plus_merge": a, "retrain": j} for a, j in cumulative(list(result.arrivals))],
            "log": [e.to_json() for e in result.log], "publications": [p.to_json() for p in result.publications],
            "verify": {"checked": result.verify.checked, "problems": len(result.verify.problems)}}
