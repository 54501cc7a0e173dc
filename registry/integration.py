"""Integration strategies: how the member corpora become one model.

- ``ties``: the bare TIES merge of the task vectors (no training).
- ``ties+heal``: the TIES merge, then fine-tuned on all member reflections
  until every member keeps the target retention (or the step cap).
- ``warm``: the channel's current model fine-tuned the same way (new corpus
  plus every member's reflections); no merge.
- ``retrain``: the base fine-tuned the same way, from scratch.
- ``auto`` (the default): ``warm`` when the channel's current model already
  holds only corpora being merged (a corpus arriving, or a new version), else
  ``ties+heal``. Measured (README): healing a merge costs less for the first
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

from registry.store.blobstore import LocalBlobStore
from registry.store.database import Database, row_of
from registry.store.errors import Conflict, InvalidInput
from registry.store.home import work_root
from registry.store.manifests import store_directory
from registry.store.schema import BaseModelRow, MergeRow
from training.retain import Member as RetainMember
from training.retain import RetainSettings

STRATEGIES = ("auto", "ties", "ties+heal", "warm", "retrain")
TRAINED = ("ties+heal", "warm", "retrain")
DEFAULT_STRATEGY = "auto"  # measured best (README, "Integration strategies")
DEFAULT_TARGET = 0.9  # retention the trained strategies stop at when the channel has no gate


@dataclass(frozen=True)
class Trained:
    """What a trained strategy produced: the stored model, its cost and how training went."""

    manifest_sha256: str
    cost: dict
    retain: dict


def check_strategy(strategy: str, settings: RetainSettings | None) -> None:
    if strategy not in STRATEGIES:
        raise InvalidInput(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy in (*TRAINED, "auto") and settings is not None:
        if settings.target is not None and not 0 < settings.target <= 1:
            raise InvalidInput(f"--target must be in (0, 1], not {settings.target}")
        if settings.max_steps is not None and settings.max_steps < 0:
            raise InvalidInput(f"--max-steps must be 0 or more, not {settings.max_steps}")
        if settings.check_every < 1 or settings.batch < 1 or not settings.lr > 0:
            raise InvalidInput("--check-every and --batch must be 1 or more and --lr above 0")


def settle(settings: RetainSettings | None, members) -> RetainSettings:
    """Fill in the target (0.9) and the step cap (what retraining every member from the base would take)."""
    settings = settings or RetainSettings()
    if settings.target is None:
        settings = replace(settings, target=DEFAULT_TARGET)
    if settings.max_steps is None:
        settings = replace(settings, max_steps=sum(int(m.row.training.get("steps", 0)) for m in members))
    return settings


def resolve_auto(session, base: BaseModelRow, members, head_id: int | None) -> str:
    """``warm`` when the channel's model holds only corpora being merged (same base), else ``ties+heal``."""
    from sqlalchemy import select

    from registry.store.schema import MergeMemberRow, TaskVectorRow

    if head_id is None:
        return "ties+heal"
    head = row_of(session, MergeRow, head_id)
    held = set(
        session.scalars(
            select(TaskVectorRow.corpus_id)
            .join(MergeMemberRow, MergeMemberRow.task_vector_id == TaskVectorRow.id)
            .where(MergeMemberRow.merge_id == head_id)
        )
    )
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
    db: Database,
    store: LocalBlobStore,
    home: Path,
    strategy: str,
    base: BaseModelRow,
    members,
    params,
    settings: RetainSettings,
    start: MergeRow | None,
    *,
    device: str,
    progress: bool,
) -> Trained:
    """Build the strategy's starting model, train it until retained, store the result."""
    from registry.merged_models import merge_into, merged_model_dir
    from registry.training_ops import base_dir, device_for
    from training.retain import train_until_retained
    from training.sft import load_model

    device = device_for(device)
    with tempfile.TemporaryDirectory(dir=work_root(home), prefix="integrate-") as tmp:
        started = time.perf_counter()
        if strategy == "ties+heal":
            origin = merge_into(Path(tmp) / "merged", store, home, base, members, params, progress=progress)
        else:
            origin = (
                merged_model_dir(store, home, start)
                if strategy == "warm" and start is not None
                else base_dir(store, home, base)
            )
        merge_seconds = time.perf_counter() - started if strategy == "ties+heal" else 0.0
        model, tokenizer = load_model(origin, device)
        result = train_until_retained(
            model,
            tokenizer,
            retain_members(db, store, members),
            settings,
            device=device,
            progress=progress,
            desc=strategy,
        )
        out = Path(tmp) / "model"
        started_from = {
            "ties+heal": "the TIES merge of its members",
            "retrain": f"the base `{base.name}`",
            "warm": f"merge-{start.id}" if start is not None else "",
        }[strategy]
        save_model(
            model,
            origin,
            out,
            base,
            card(strategy, base, members, settings, result.to_json(), started_from=started_from),
        )
        manifest = store_directory(store, out, kind="merge")
    retain = result.to_json()
    cost = {
        "merge_seconds": merge_seconds,
        "train_seconds": retain.pop("train_seconds"),
        "check_seconds": retain.pop("check_seconds"),
        "examples": retain["examples"],
        "steps": retain["steps"],
    }
    return Trained(manifest, cost, retain)


def retain_members(db: Database, store: LocalBlobStore, members) -> list[RetainMember]:
    from registry.retention import reflections_of

    out = []
    for m in members:
        pairs, checks = reflections_of(db, store, m.row)
        out.append(RetainMember(m.corpus, pairs, checks, m.row.metrics.get("recall", {}).get("exact_match")))
    if not any(m.pairs for m in out):
        raise InvalidInput(
            "none of these task vectors has reflections to train on (they were added from weights); use --strategy ties"
        )
    return out


def save_model(model, origin: Path, out: Path, base: BaseModelRow, card_text: str) -> None:
    """The trained model in the base's dtype, with the starting model's tokenizer files and a card."""
    from merging.card import BASE_FILES
    from merging.spec import parse_dtype

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
    from merging.card import engine_version

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
