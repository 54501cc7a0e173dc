"""Running the integration strategies (the table is :data:`registry.operations.strategies.STRATEGIES`).

- ``ties``: the bare TIES merge of the task vectors (no training).
- ``ties+heal``: the TIES merge, then fine-tuned on all member reflections
  until every member keeps the target retention (or the step cap).
- ``warm``: the channel's current model fine-tuned the same way (new corpus
  plus every member's reflections); no merge.
- ``retrain``: the base fine-tuned the same way, from scratch.
- ``sequential``: the model of the member trained onto the merge of all the
  others (``memo register --onto CHANNEL``: fine-tuned from the channel's model,
  earlier members rehearsed), fine-tuned the same way only if a member falls
  short; an arrival costs that one training.
- ``auto`` (the default): ``sequential`` when a member was trained onto the merge
  of the others or is the only one (its own model), else ``warm`` when the channel's current model already
  holds only corpora being merged (a corpus arriving, or a new version), else
  ``ties+heal``. Measured (docs/continual-integration.md): healing a merge costs less for the first
  few corpora, warm start from about six on and over K = 1..10 in all.

The trained strategies' outputs are not functions of the task vectors alone,
so their content key adds the strategy, its settings (seed included) and the
model it started from; with the same inputs, training is deterministic on a
given device and the recorded merge is found again. Every corpus keeps its
task vector in the registry whatever the strategy, so any later merge can
still be recomposed from them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from merging.card import BASE_FILES, engine_version
from merging.spec import parse_dtype
from registry.operations.bases import base_dir
from registry.operations.devices import device_for
from registry.operations.keeping import mixed_in_pairs
from registry.operations.merge_inputs import Member, MergeParams
from registry.operations.merged_models import member_label, merge_into
from registry.operations.merges import member_task_vectors, merged_model_dir
from registry.operations.questions import reflections_of
from registry.operations.retention import own_recall
from registry.operations.strategies import AUTO, Strategy, strategy_of
from registry.store.database import row_of
from registry.store.errors import Conflict, InvalidInput
from registry.store.manifests import store_directory
from registry.store.schema import BaseModelRow, MergeRow
from registry.store.workspace import Workspace
from training.retain import Member as RetainMember
from training.retain import RetainSettings, train_until_retained
from training.settings import DEFAULT_LOSS_MEAN
from training.sft import load_model

DEFAULT_TARGET = 0.9  # retention the trained strategies stop at when the channel has no gate


@dataclass(frozen=True)
class Trained:
    """What a trained strategy produced: the stored model, its cost and how training went."""

    manifest_sha256: str
    cost: dict
    retain: dict


def check_strategy(strategy: str, settings: RetainSettings | None) -> None:
    """A known strategy, and retention settings a trained one can run with."""
    if (strategy != AUTO and not strategy_of(strategy).trained) or settings is None:
        return
    if settings.target is not None and not 0 < settings.target <= 1:
        raise InvalidInput(f"--target must be in (0, 1], not {settings.target}")
    if settings.max_steps is not None and settings.max_steps < 0:
        raise InvalidInput(f"--max-steps must be 0 or more, not {settings.max_steps}")
    if settings.check_every < 1 or settings.batch < 1 or not settings.lr > 0:
        raise InvalidInput("--check-every and --batch must be 1 or more and --lr above 0")


def settle(settings: RetainSettings | None, members) -> RetainSettings:
    """Fill in the target (0.9), the step cap (what retraining every member from the base would take),
    the replay and boundary shares (the largest any member was trained with), the loss's mean
    (over examples if any member was trained so) and what is tuned (the MLP blocks if every member's
    training tuned them alone, else the whole model)."""
    settings = settings or RetainSettings()
    if settings.target is None:
        settings = replace(settings, target=DEFAULT_TARGET)
    if settings.max_steps is None:
        settings = replace(settings, max_steps=sum(int(m.row.training.get("steps", 0)) for m in members))
    if settings.replay is None:
        settings = replace(settings, replay=_largest_share(members, "replay"))
    if settings.boundary is None:
        settings = replace(settings, boundary=_largest_share(members, "boundary"))
    if settings.loss_mean is None:
        example = any(_sft(m).get("loss_mean") == "example" for m in members)
        settings = replace(settings, loss_mean="example" if example else DEFAULT_LOSS_MEAN)
    if settings.tune is None:
        mlp = bool(members) and all(_sft(m).get("method") in ("mlp", "sparse") for m in members)
        settings = replace(settings, tune="mlp" if mlp else "full")
    return settings


def _largest_share(members, share: str) -> float:
    return max((float(_sft(m).get(share) or 0.0) for m in members), default=0.0)


def _sft(member) -> dict:
    """The fine-tuning settings a member's task vector was trained with, as recorded."""
    return member.row.training.get("sft", {})


def aimed_at(settings: RetainSettings, gate: float | None) -> RetainSettings:
    """The settings with the channel's retention gate as their target, unless they name one."""
    return replace(settings, target=gate) if settings.target is None and gate else settings


def carrier_of(session, members: list[Member]) -> tuple[Member, MergeRow | None] | None:
    """The member whose model holds all the others: the one trained onto a merge of exactly the other
    members (its own corpus's older version aside), with that merge; or a lone member trained from the base."""
    if len(members) == 1 and members[0].row.start_merge_id is None:
        return members[0], None
    for m in sorted(members, key=lambda m: -m.row.id):  # the newest first
        if m.row.start_merge_id is None:
            continue
        held = {tv.id for tv in member_task_vectors(session, m.row.start_merge_id) if tv.corpus_id != m.row.corpus_id}
        if held == {o.row.id for o in members if o is not m}:
            return m, row_of(session, MergeRow, m.row.start_merge_id)
    return None


def sequential_start(session, members: list[Member]) -> tuple[Member, MergeRow | None]:
    found = carrier_of(session, members)
    if found is None:
        raise InvalidInput(
            "--strategy sequential serves the model of the member trained onto the merge of all the others, "
            f"and none of {', '.join(member_label(m) for m in members)} is (train the newest with "
            "`memo train NAME --onto CHANNEL`, or use --strategy ties+heal)"
        )
    return found


def resolve_auto(session, base: BaseModelRow, members, head_id: int | None) -> str:
    """``sequential`` when a member was trained onto the merge of the others, or is the only member (its
    own model is served: merging one task vector would only trim it); else ``warm`` when the channel's
    model holds only corpora being merged (same base); else ``ties+heal``."""
    if carrier_of(session, members) is not None:
        return "sequential"
    if head_id is None:
        return "ties+heal"
    head = row_of(session, MergeRow, head_id)
    held = {tv.corpus_id for tv in member_task_vectors(session, head_id)}
    asked = {m.row.corpus_id for m in members}
    return "warm" if head.base_model_id == base.id and held <= asked else "ties+heal"


def warm_start(session, base: BaseModelRow, parent_id: int | None, channel: str | None) -> MergeRow:
    if parent_id is None:
        where = f"channel {channel!r} has no merge yet" if channel else "it needs --channel"
        raise InvalidInput(
            f"--strategy warm fine-tunes the channel's current model, but {where}; "
            "use --strategy ties+heal (or retrain) for the first merge"
        )
    parent = row_of(session, MergeRow, parent_id)
    if parent.base_model_id != base.id:
        raise Conflict(
            f"channel {channel!r} serves merge-{parent.id}, on another base model; "
            "warm start needs a model of the same base"
        )
    return parent


def train_strategy(
    ws: Workspace,
    strategy: str,
    base: BaseModelRow,
    members,
    params,
    settings: RetainSettings,
    start: MergeRow | None,
    *,
    device: str,
    progress: bool,
    carrier: Member | None = None,
) -> Trained:
    """Build the strategy's starting model, train it until retained, store the result."""
    device = device_for(device)
    chosen = strategy_of(strategy)
    with tempfile.TemporaryDirectory(dir=ws.work_root(), prefix="integrate-") as tmp:
        started = time.perf_counter()
        merged, how = (members, params) if carrier is None else ([carrier], MergeParams(density=1.0))  # base + deltas
        origin, kernel = starting_model(ws, chosen, Path(tmp) / "merged", base, merged, how, start, progress)
        merge_seconds = time.perf_counter() - started if chosen.merges else 0.0
        retained = retain_members(ws, members)
        corpora = [(m.row.corpus_id, r.pairs) for m, r in zip(members, retained)]
        seen = (settings.max_steps or 0) * settings.batch  # the most it may see: as many distinct replayed answers
        keep = mixed_in_pairs(ws, base, corpora, settings.mix(), device=device, seen=seen)  # shares from settle()
        model, tokenizer = load_model(origin, device)
        result = train_until_retained(
            model,
            tokenizer,
            retained,
            settings,
            device=device,
            progress=progress,
            desc=strategy,
            keep=keep,
        )
        out = Path(tmp) / "model"
        started_from = {
            "merge": "the TIES merge of its members",
            "base": f"the base `{base.name}`",
            "channel": f"merge-{start.id}" if start is not None else "",
            "carrier": _carrier_text(carrier, start),
        }[chosen.start]
        save_model(
            model,
            origin,
            out,
            base,
            card(strategy, base, members, settings, result.to_json(), started_from=started_from),
        )
        manifest = store_directory(ws.store, out, kind="merge")
        ws.keep(out, manifest, "models", move=True)
    retain = result.to_json()
    if keep.replay_source is not None:  # the replay set drawn from, as a task vector names it
        retain["replay_set"] = keep.replay_source
    cost = {
        **({"kernel": kernel} if chosen.merges else {}),
        "merge_seconds": merge_seconds,
        "train_seconds": retain.pop("train_seconds"),
        "check_seconds": retain.pop("check_seconds"),
        "examples": retain["examples"],
        "steps": retain["steps"],
    }
    return Trained(manifest, cost, retain)


def starting_model(
    ws: Workspace,
    strategy: Strategy,
    scratch: Path,
    base: BaseModelRow,
    members,
    params,
    start: MergeRow | None,
    progress: bool,
) -> tuple[Path, str | None]:
    """The model a trained strategy fine-tunes: the members' TIES merge (built in ``scratch``; for
    ``carrier``, the one member applied to the base), the channel's current model (``start``), or the base;
    and the merge kernel that ran, if one did."""
    if strategy.start in ("merge", "carrier"):
        return merge_into(scratch, ws, base, members, params, progress=progress)
    if strategy.start == "channel" and start is not None:
        return merged_model_dir(ws, start, full=True), None
    return base_dir(ws, base, full=True), None


def _carrier_text(carrier: Member | None, start: MergeRow | None) -> str:
    if carrier is None:
        return ""
    onto = f", trained onto merge-{start.id}" if start is not None else ""
    return f"the model of {member_label(carrier)}{onto}"


def retain_members(ws: Workspace, members) -> list[RetainMember]:
    out = []
    for m in members:
        pairs, checks = reflections_of(ws, m.row)
        out.append(RetainMember(m.corpus, pairs, checks, own_recall(m.row)))
    if not any(m.pairs for m in out):
        raise InvalidInput(
            "none of these task vectors has reflections to train on (they were added from weights); use --strategy ties"
        )
    return out


def save_model(model, origin: Path, out: Path, base: BaseModelRow, card_text: str) -> None:
    """The trained model in the base's dtype, with the starting model's tokenizer files and a card."""
    model.to("cpu", parse_dtype(base.dtype)).save_pretrained(out, safe_serialization=True)
    for name in BASE_FILES:  # what save_pretrained wrote (the generation config) stays as it wrote it
        if (origin / name).is_file() and not (out / name).exists():
            shutil.copyfile(origin / name, out / name)
    (out / "README.md").write_text(card_text)


def card(
    strategy: str, base: BaseModelRow, members, settings: RetainSettings, retain: dict, *, started_from: str
) -> str:
    """A trained strategy's card: a fine-tune of the base (so the Hub's model tree links it), its
    member corpora, the model its training started from, and the retention it reached."""
    meta = {
        "base_model": [base.name],
        "base_model_relation": "finetune",
        "library_name": "transformers",
        "tags": ["memo", strategy],
    }
    last = retain["checks"][-1]["retention"] if retain["checks"] else {}
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        "# Memory model",
        "",
        f"Made with memo {engine_version()}, strategy **{strategy}**, from base `{base.name}`: "
        f"{retain['steps']} fine-tuning steps ({retain['examples']} examples) on every member corpus's "
        f"reflections, stopping at retention {settings.target} (reached: {retain['reached']}).",
        "",
        f"Training started from {started_from}.",
        "",
        "## Member corpora",
        "",
        "| corpus | version | retention at the last check |",
        "|---|---|---|",
    ]
    for m in members:
        value = last.get(m.corpus)
        lines.append(f"| {m.corpus} | v{m.row.version} | {'' if value is None else f'{value:.2f}'} |")
    lines += ["", "## Settings", "", "```yaml", yaml.safe_dump(settings.to_json(), sort_keys=True).rstrip(), "```", ""]
    return "\n".join(lines)
