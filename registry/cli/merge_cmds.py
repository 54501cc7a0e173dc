"""`memo merge`, `memo channel`, `memo promote`, `memo rollback`, `memo export`, `memo publish`."""

from __future__ import annotations

import click

from merging.methods import DEFAULT_DENSITY, DEFAULT_EPSILON, DEFAULT_GAMMA, METHODS
from registry import DEFAULT_STRATEGY, STRATEGY_CHOICES, MergeRecord
from registry.cli.app import AppContext, pass_app
from registry.cli.output import json_option, print_json, print_table, when
from registry.figures import fraction, general, merge_cost_rows, seconds, settings_rows
from training.settings import TUNES, RetainSettings


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to a default subcommand.

    So ``memo merge a b`` merges while ``memo merge list`` and ``memo merge show 3`` still work.
    """

    default = "create"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or args[0] not in self.commands:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


class DefaultSubcommand(click.Command):
    """The default subcommand, shown (in its help and its errors) as the group itself: ``memo merge``."""

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        path = ctx.parent.command_path if ctx.parent else ctx.command_path
        formatter.write_usage(path, " ".join(self.collect_usage_pieces(ctx)))


def _weights(values: tuple[str, ...]) -> dict[str, float]:
    weights = {}
    for value in values:
        corpus, sep, number = value.partition("=")
        try:
            if not (corpus and sep):
                raise ValueError(value)
            weights[corpus] = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not CORPUS=WEIGHT", param_hint="--weight") from None
    return weights


def _merge_rows(merges: list[MergeRecord]):
    return [
        (
            m.ref,
            when(m.created_at),
            how(m),
            m.corpora,
            m.parent_merge_id or "",
            m.training_cost.examples or "",
            lowest_retention(m),
            "" if m.general is None else fraction(m.general.kept),
        )
        for m in merges
    ]


def how(record: MergeRecord) -> str:
    """The strategy; for a bare merge its method and settings (``ties d0.3``, ``task_arithmetic l0.5``)."""
    if record.strategy != "ties":
        return record.strategy
    p = record.parameters
    density, lam, seed = p.get("density"), p.get("lambda"), p.get("seed")
    return (
        record.method
        + (f" d{density:g}" if density else "")
        + (f" l{lam:g}" if lam not in (None, 1.0) else "")
        + (f" seed {seed}" if seed is not None else "")
    )


def lowest_retention(record: MergeRecord) -> str:
    lowest = record.lowest_retention
    return "" if lowest is None else f"{lowest:.2f}"


MERGE_COLUMNS = ["merge", "created", "how", "corpora", "parent", "examples", "retention", "general"]


@click.group(cls=DefaultCommandGroup)
def merge() -> None:
    """Merge corpora into one model (`memo merge CORPUS...`), or list and show merges."""


@merge.command("create", cls=DefaultSubcommand, hidden=True)
@click.argument("corpora", nargs=-1, required=True)
@click.option(
    "--strategy",
    type=click.Choice(STRATEGY_CHOICES),
    default=DEFAULT_STRATEGY,
    show_default=True,
    help="auto: sequential when a member was trained onto the merge of the others (--onto) or is the only "
    "one (its own model), else warm "
    "when the channel's model holds only corpora being merged, else ties+heal; "
    "ties: the bare merge; ties+heal: the merge, then fine-tuned on every member's reflections "
    "until retained; warm: the channel's current model fine-tuned so; retrain: the base so; "
    "sequential: the model of the member trained --onto the others' merge, healed so only if one falls short.",
)
@click.option(
    "--target",
    type=float,
    help="Trained strategies stop once every corpus keeps this fraction of "
    "its own recall [default: the channel's gate, else 0.9].",
)
@click.option(
    "--max-steps",
    type=int,
    help="Step cap of the trained strategies [default: the members' "
    "training steps summed, i.e. what retraining costs].",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=RetainSettings.seed,
    show_default=True,
    help="Seed of the trained strategies and of the dare_*/della* masks (recorded).",
)
@click.option(
    "--lr", type=float, default=RetainSettings.lr, show_default=True, help="Learning rate of the trained strategies."
)
@click.option(
    "--check-every",
    type=int,
    default=RetainSettings.check_every,
    show_default=True,
    help="Steps between retention checks of the trained strategies.",
)
@click.option(
    "--tune",
    type=click.Choice(list(TUNES)),
    help="What the trained strategies fine-tune: the whole model, or its MLP blocks alone "
    "[default: mlp when every member was trained so, else full].",
)
@click.option(
    "--method",
    type=click.Choice(list(METHODS)),
    default="ties",
    show_default=True,
    help="How the bare merge combines task vectors (mergekit's methods of the same names).",
)
@click.option(
    "--density",
    type=float,
    default=DEFAULT_DENSITY,
    show_default=True,
    help="Fraction of each task vector kept (ties, dare_*, breadcrumbs*, della*).",
)
@click.option(
    "--gamma", type=float, default=DEFAULT_GAMMA, show_default=True, help="breadcrumbs*: fraction of largest dropped."
)
@click.option(
    "--epsilon",
    type=float,
    default=DEFAULT_EPSILON,
    show_default=True,
    help="della*: keep probabilities run from density-epsilon to density+epsilon by magnitude.",
)
@click.option(
    "--rescale/--no-rescale",
    default=None,
    help="Scale each thinned task vector back to its L1 norm [default: on for dare_* and della*].",
)
@click.option("--lambda", "lam", type=float, default=1.0, show_default=True, help="Scale of the merged delta.")
@click.option("--weight", "weights", multiple=True, metavar="CORPUS=W", help="Weight of one corpus (default 1).")
@click.option("--channel", help="Promote the merge to this channel (created on first use).")
@click.option("--reason", default="", help="Why (kept in the channel history).")
@click.option("--force", is_flag=True, help="With --channel: promote even below the channel's retention gate.")
@click.option(
    "--eval/--no-eval",
    "evaluate",
    default=True,
    show_default=True,
    help="Measure recall and retention on every member corpus and record them with the merge.",
)
@click.option("--device", default="auto", show_default=True, help="Where the evaluation runs.")
@json_option
@pass_app
def create(
    app: AppContext,
    corpora,
    strategy,
    target,
    max_steps,
    seed,
    lr,
    check_every,
    tune,
    method,
    density,
    gamma,
    epsilon,
    rescale,
    lam,
    weights,
    channel,
    reason,
    force,
    evaluate,
    device,
    as_json,
) -> None:
    """Merge the latest task vector of each CORPUS (or CORPUS@vN) into one model.

    The same corpora versions and parameters give the recorded merge back
    instead of computing it again. See also `memo merge list` and
    `memo merge show MERGE`.

    \b
    Example:
      memo merge harbor glassworks observatory --channel production
      memo merge harbor glassworks --strategy ties          # the bare TIES merge
      memo merge harbor@v1 glassworks --strategy ties --method task_arithmetic --weight harbor=2
      memo merge harbor glassworks --strategy ties --method dare_ties --density 0.5 --seed 7
    """
    reg = app.registry()
    retain = RetainSettings(target=target, max_steps=max_steps, seed=seed, lr=lr, check_every=check_every, tune=tune)
    record = reg.merge(
        list(corpora),
        method=method,
        density=density,
        lam=lam,
        weights=_weights(weights),
        method_options={"gamma": gamma, "epsilon": epsilon, "rescale": rescale, "seed": seed},
        channel=channel,
        progress=not as_json,
        evaluate=evaluate,
        device=device,
        reason=reason,
        force=force,
        strategy=strategy,
        retain=retain,
        on_recorded=None if as_json else _show,  # shown before a retention gate may refuse the promotion
    )
    if as_json:
        print_json(record.to_json())
    elif channel:
        click.echo(f"channel {channel} -> {record.ref}")


def _show(record: MergeRecord) -> None:
    verb = "found recorded" if record.reused else "recorded"
    kernel = f" (kernel: {record.training_cost.kernel})" if record.training_cost.kernel and not record.reused else ""
    click.echo(f"{verb} {record.ref}: {how(record)} of {record.corpora} on {record.base_model}{kernel}")
    if record.strategy != "ties":
        click.echo(trained_line(record))
    if record.recall:
        _print_retention(record)
    if record.general:
        click.echo(f"general knowledge kept: {general(record.general)} of the base's probe questions")


def trained_line(record: MergeRecord) -> str:
    cost = record.training_cost
    target = record.parameters.get("retain", {}).get("target")
    outcome = "reached" if cost.retain and cost.retain.reached else "NOT reached (step cap)"
    if record.strategy == "sequential":  # the model of one member, trained onto the merge of the others
        p = record.parameters
        onto = f" (trained onto {p['trained_onto']})" if p.get("trained_onto") else ""
        healed = (
            f"healed {cost.steps} steps, {cost.examples} examples, {seconds(cost.train_seconds)}"
            if cost.steps
            else "no healing"
        )
        return (
            f"sequential: the model of {p.get('start')}{onto}; {healed} + {seconds(cost.check_seconds)} "
            f"retention checks; target retention {target} {outcome}"
        )
    return (
        f"{record.strategy}: {cost.steps} steps, {cost.examples} examples, "
        f"{seconds(cost.train_seconds)} training + {seconds(cost.check_seconds)} retention checks; "
        f"target retention {target} {outcome}"
    )


def _print_retention(record: MergeRecord) -> None:
    """Recall of the merge and of each corpus's own model on the same questions; retention = merged / own."""

    def fmt(value):
        return "" if value is None else f"{value:.2f}"

    print_table(
        f"what {record.ref} still knows (exact match on each corpus's questions)",
        ["corpus", "merged", "own model", "retention", "questions"],
        [(c, fmt(r.exact_match), fmt(r.own), fmt(record.retention.get(c)), r.count) for c, r in record.recall.items()],
    )


@merge.command("list")
@json_option
@pass_app
def list_(app: AppContext, as_json: bool) -> None:
    """List every merge, oldest first.

    \b
    Example:
      memo merge list --json
    """
    merges = app.registry().list_merges()
    if as_json:
        print_json([m.to_json() for m in merges])
    else:
        print_table("merges", MERGE_COLUMNS, _merge_rows(merges))


@merge.command("show")
@click.argument("ref")
@json_option
@pass_app
def show(app: AppContext, ref: str, as_json: bool) -> None:
    """Show one merge (an id such as 7 or merge-7, or a channel): members, parameters, publications.

    \b
    Example:
      memo merge show production
    """
    reg = app.registry()
    record = reg.get_merge(ref)
    pubs = reg.publications(record.id)
    if as_json:
        print_json({**record.to_json(), "publications": [p.to_json() for p in pubs]})
        return
    print_table(
        f"{record.ref} ({record.method} on {record.base_model}, engine {record.engine_version})",
        MERGE_COLUMNS,
        _merge_rows([record]),
    )
    print_table(
        "members",
        ["corpus", "version", "weight", "density"],
        [(m.corpus, f"v{m.version}", m.weight, m.density) for m in record.members],
    )
    if record.recall:
        _print_retention(record)
    print_table("settings and cost", ["", ""], settings_rows(record.parameters) + merge_cost_rows(record))
    if pubs:
        print_table(
            "publications",
            ["time", "repo", "commit", "tag", "channel"],
            [(when(p.created_at), p.repo_id, p.commit_sha[:12], p.tag, p.channel) for p in pubs],
        )
