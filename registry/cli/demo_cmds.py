"""`memo demo`."""

from __future__ import annotations

from pathlib import Path

import click

from registry.cli.app import AppContext, pass_app
from registry.cli.output import err_console, human_size, print_table
from registry.demo import run_demo
from training.tiny import TinyConfig


@click.command()
@click.option("--corpora", type=int, default=None, help="Register only the first N example corpora.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the tiny base model.")
@click.option("--pretrain-steps", type=int, default=TinyConfig.pretrain_steps, show_default=True,
              help="Pre-training steps of the tiny base (fewer: faster, weaker).")
@pass_app
def demo(app: AppContext, corpora: int | None, seed: int, pretrain_steps: int) -> None:
    """Run memo's journeys end to end on tiny local models, offline.

    Uses --home (default ./memo-demo), which must not hold a registry yet.

    \b
    Example:
      memo --home /tmp/memo-demo demo
    """
    home = Path(app.home or "memo-demo").resolve()
    tiny = TinyConfig(seed=seed, pretrain_steps=pretrain_steps)
    result = run_demo(home, corpora=corpora, tiny=tiny, say=lambda m: err_console.print(f"[bold]>[/] {m}"))
    print_table("corpora", ["name", "base", "documents", "size"],
                [(c.name, c.base_model, len(c.documents), human_size(c.total_size)) for c in result.corpora])
    click.echo(f"verify: {result.verify.checked} blobs checked, {len(result.verify.problems)} problems")
    click.echo(f"the demo registry is at {result.home}; try `memo --home {result.home} corpus list`")
