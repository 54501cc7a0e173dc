"""`memo demo`."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, print_table
from registry.demo import run_demo
from training.sft import SFTSettings
from training.tiny import TinyConfig


@click.command()
@click.option("--corpora", type=int, default=None, help="Register only the first N example corpora.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the tiny base model.")
@click.option("--pretrain-steps", type=int, default=TinyConfig.pretrain_steps, show_default=True,
              help="Pre-training steps of the tiny base (fewer: faster, weaker).")
@click.option("--train-steps", type=int, default=SFTSettings.steps, show_default=True,
              help="Fine-tuning steps per corpus.")
@pass_app
def demo(app: AppContext, corpora: int | None, seed: int, pretrain_steps: int, train_steps: int) -> None:
    """Run memo's journeys end to end on tiny local models, offline.

    Uses --home (default ./memo-demo), which must not hold a registry yet.

    \b
    Example:
      memo --home /tmp/memo-demo demo
    """
    home = Path(app.home or "memo-demo").resolve()
    tiny = TinyConfig(seed=seed, pretrain_steps=pretrain_steps)
    result = run_demo(home, corpora=corpora, tiny=tiny, train=SFTSettings(steps=train_steps, seed=seed),
                      say=lambda m: err_console.print(f"[bold]>[/] {m}"))
    print_table("each corpus on its own (exact-match recall)",
                ["corpus", "docs", "task vector", "recall", "held-out", "base alone", "train"],
                [(o.corpus.name, len(o.corpus.documents), o.task_vector.ref,
                  f"{o.task_vector.metrics['recall']['exact_match']:.2f}",
                  f"{o.task_vector.metrics['heldout']['exact_match']:.2f}", f"{o.base_recall:.2f}",
                  f"{o.task_vector.training['train_seconds']:.1f}s") for o in result.corpora])
    click.echo(f"verify: {result.verify.checked} blobs checked, {len(result.verify.problems)} problems")
    click.echo(f"the demo registry is at {result.home}; try `memo --home {result.home} corpus list`")
