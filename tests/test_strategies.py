"""Integration strategies: ties+heal stops at the target, warm and retrain start where they say, all reproducible."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import Registry
from registry.store.errors import GateRefused, InvalidInput
from registry.store.schema import ChannelEventRow, MergeRow
from tests.conftest import Memo, memo_subprocess_env
from tests.support.models import EXAMPLES, SMALL
from tests.support.snapshot import count, registry_state
from training.retain import RetainSettings
from training.sft import SFTSettings

PAIRS, STEPS, LR = 12, 30, 3e-3  # 12 facts per corpus, learned well by the small base in 30 steps
CORPORA = ["glassworks", "harbor"]


def heal(**kwargs) -> RetainSettings:
    return RetainSettings(**{"target": 1.0, "max_steps": STEPS, "check_every": 2, "batch": 8, "lr": LR, **kwargs})


@pytest.fixture(scope="module")
def learned_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small base and two corpora of 12 facts each, every one learned by its own model."""
    root = tmp_path_factory.mktemp("learned")
    with Registry.init(root / "home") as reg:
        reg.create_tiny_base("tiny", SMALL, progress=False)
        for name in CORPORA:
            qa = root / f"{name}.jsonl"
            qa.write_text("\n".join((EXAMPLES / name / "qa.jsonl").read_text().splitlines()[:PAIRS]) + "\n")
            reg.add_corpus(name, sorted((EXAMPLES / name).glob("*.md")), base="tiny")
            reg.import_reflections(name, qa)
            reg.train(name, SFTSettings(steps=STEPS, batch=8, lr=LR), device="cpu", progress=False)
    return root / "home"


@pytest.fixture
def learned(learned_template: Path, tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(shutil.copytree(learned_template, tmp_path / "home"))
    yield reg
    reg.close()


def _lowest(check: dict) -> float:
    return min(v for v in check["retention"].values() if v is not None)


def test_the_corpora_are_learned_and_a_bare_merge_forgets(learned):
    for name in CORPORA:
        assert learned.list_task_vectors(name)[0].metrics.recall.exact_match >= 0.75
    bare = learned.merge(CORPORA, strategy="ties", progress=False, device="cpu")
    assert min(bare.retention.values()) < 0.8  # so healing has something to win back


def test_a_single_corpus_merge_at_full_density_keeps_everything(learned):
    """Density 1 applies the task vector whole: the merge is the corpus's own model, retention 1."""
    name = CORPORA[0]
    own = learned.list_task_vectors(name)[0].metrics.recall
    assert own is not None and own.exact_match > 0, "the corpus's own model must recall something to compare"
    record = learned.merge([name], strategy="ties", density=1.0, progress=False, device="cpu")
    got = record.recall[name]
    assert got.own == own.exact_match and got.count == own.count
    assert got.exact_match == pytest.approx(own.exact_match)
    assert record.retention[name] == pytest.approx(1.0) and record.lowest_retention == pytest.approx(1.0)
    assert record.training_cost.merge_seconds > 0 and record.training_cost.evaluation_seconds > 0


def test_heal_stops_at_the_first_check_that_reaches_the_target(learned):
    full = learned.merge(
        CORPORA, strategy="ties+heal", retain=heal(target=1.0, max_steps=STEPS), progress=False, device="cpu"
    )
    checks = full.training_cost.retain.checks
    assert [c["step"] for c in checks] == list(range(0, STEPS + 1, 2))
    target = 0.8
    first = next(c["step"] for c in checks if _lowest(c) >= target)
    assert first > 0, "the bare merge must start below the target"

    healed = learned.merge(CORPORA, strategy="ties+heal", retain=heal(target=target), progress=False, device="cpu")
    cost, retain = healed.training_cost, healed.training_cost.retain
    assert retain is not None and retain.reached and cost.steps == first and cost.examples == first * 8
    assert list(retain.checks) == [c for c in checks if c["step"] <= first]  # the same run, stopped earlier
    assert all(_lowest(c) < target for c in retain.checks[:-1])
    # Decoding recalls at least what the teacher-forced checks counted.
    assert min(healed.retention.values()) >= target
    assert healed.strategy == "ties+heal" and healed.method == "ties"
    assert healed.parameters["retain"]["target"] == target and healed.parameters["density"] == 0.3
    assert cost.train_seconds > 0 and cost.check_seconds > 0 and cost.merge_seconds > 0 and cost.kernel


def test_a_trained_strategy_is_reproducible_with_its_seed(learned, learned_template, tmp_path):
    first = learned.merge(CORPORA, strategy="ties+heal", retain=heal(target=0.8), progress=False, device="cpu")
    assert learned.merge(CORPORA, strategy="ties+heal", retain=heal(target=0.8), progress=False).reused
    with Registry.open(shutil.copytree(learned_template, tmp_path / "elsewhere")) as other:
        again = other.merge(CORPORA, strategy="ties+heal", retain=heal(target=0.8), progress=False, device="cpu")
        assert not again.reused
        assert again.manifest_sha256 == first.manifest_sha256  # the same bytes, recomputed from the lineage
        seeded = other.merge(
            CORPORA, strategy="ties+heal", retain=heal(target=0.8, seed=1), progress=False, device="cpu"
        )
        assert seeded.content_key != first.content_key and seeded.manifest_sha256 != first.manifest_sha256
    # The task vectors stay: the bare merge can still be recomposed from them.
    assert [tv.version for n in CORPORA for tv in learned.list_task_vectors(n)] == [1, 1]
    assert learned.merge(CORPORA, strategy="ties", progress=False, device="cpu").strategy == "ties"


def test_a_model_that_keeps_everything_costs_nothing(learned):
    record = learned.merge(
        ["harbor"], strategy="ties+heal", density=1.0, retain=heal(target=0.9), progress=False, device="cpu"
    )
    assert record.training_cost.steps == record.training_cost.examples == 0
    assert record.training_cost.retain.reached and len(record.training_cost.retain.checks) == 1


def test_warm_fine_tunes_the_channels_model_and_retrain_the_base(learned):
    before = len(learned.list_merges())
    with pytest.raises(InvalidInput, match="channel's current model"):
        learned.merge(CORPORA, strategy="warm", retain=heal(), progress=False)
    with pytest.raises(InvalidInput, match="has no merge yet"):
        learned.merge(CORPORA, strategy="warm", retain=heal(), channel="production", progress=False)
    assert len(learned.list_merges()) == before
    start = learned.merge(["glassworks"], strategy="ties", density=1.0, channel="production", progress=False)
    warm = learned.merge(
        CORPORA,
        strategy="warm",
        retain=heal(target=0.8),
        channel="production",
        promote=False,
        progress=False,
        device="cpu",
    )
    assert warm.parameters["start"] == start.ref and warm.parent_merge_id == start.id
    assert warm.method == "fine-tune" and warm.training_cost.retain.reached
    assert warm.training_cost.examples > 0 and min(warm.retention.values()) >= 0.8
    retrain = learned.merge(CORPORA, strategy="retrain", retain=heal(target=0.8), progress=False, device="cpu")
    assert retrain.parameters["start"] == "base" and retrain.training_cost.retain.checks[0]["step"] == 0
    assert retrain.training_cost.examples > 0 and retrain.content_key != warm.content_key


def test_a_heal_cut_short_by_its_cap_is_recorded_but_not_promoted(learned):
    learned.set_min_retention("production", 0.9)
    with pytest.raises(GateRefused, match="retention"):
        learned.merge(
            CORPORA,
            strategy="ties+heal",
            retain=heal(target=None, max_steps=2),
            channel="production",
            progress=False,
            device="cpu",
        )
    record = learned.list_merges()[-1]
    assert record.parameters["retain"]["target"] == 0.9  # the channel's gate is the target
    assert not record.training_cost.retain.reached and record.training_cost.steps == 2
    assert learned.get_channel("production").current_merge_id is None


def test_cli_strategies(learned, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    memo = Memo(learned.settings.home, None)
    out = memo(
        "merge",
        *CORPORA,
        "--target",
        "0.8",
        "--lr",
        str(LR),
        "--check-every",
        "2",
        "--max-steps",
        str(STEPS),
        "--channel",
        "production",
        "--device",
        "cpu",
    ).stdout
    assert "ties+heal: " in out and "target retention 0.8 reached" in out and "channel production -> merge-1" in out
    listed = memo("merge", "list").stdout
    assert "ties+heal" in listed and "examples" in listed
    bare = memo("merge", *CORPORA, "--strategy", "ties", "--device", "cpu").stdout
    assert "ties d0.3 of" in bare
    bad = memo("merge", *CORPORA, "--strategy", "bogus", ok=False)
    assert bad.exit_code == 1 and "bogus" in bad.output
    bad = memo("merge", *CORPORA, "--target", "1.5", ok=False)
    assert bad.exit_code == 1 and "--target must be in (0, 1]" in bad.stderr
    assert len(learned.list_merges()) == 2


def test_teacher_forced_checks_never_count_more_than_decoding(learned):
    from training.evaluate import recall, teacher_forced_exact
    from training.sft import load_model

    for name in CORPORA:  # each corpus's own model (a one-corpus merge at density 1)
        record = learned.merge([name], strategy="ties", density=1.0, progress=False, device="cpu", evaluate=False)
        model, tokenizer = load_model(learned.model_dir(record.ref))
        pairs = learned.questions(name)
        forced = teacher_forced_exact(model, tokenizer, pairs)
        assert 0 < forced <= recall(model, tokenizer, pairs).exact_match


def test_auto_warm_starts_only_when_extending_the_channels_model(learned):
    start = learned.merge(["glassworks"], strategy="ties", density=1.0, channel="production", progress=False)
    extended = learned.merge(
        CORPORA, retain=heal(target=0.8), channel="production", promote=False, progress=False, device="cpu"
    )  # the default strategy: auto
    assert extended.strategy == "warm" and extended.parameters["start"] == start.ref
    other = learned.merge(
        CORPORA, retain=heal(target=0.8), channel="staging", promote=False, progress=False, device="cpu"
    )  # a channel with no model yet: nothing to extend
    assert other.strategy == "ties+heal" and other.parameters["start"] == "ties"


def test_auto_serves_a_lone_corpus_its_own_model(learned):
    """One member: its own model, not a TIES trim of it healed back; nothing trained, retention 1."""
    learned.merge(["glassworks"], strategy="ties", density=1.0, channel="production", progress=False)
    own = learned.list_task_vectors("harbor")[0]
    lone = learned.merge(["harbor"], retain=heal(target=1.0), channel="production", promote=False, progress=False)
    assert lone.strategy == "sequential" and lone.parameters["start"] == own.ref  # whatever production holds
    retained = lone.training_cost.retain
    assert lone.training_cost.examples == 0 and retained is not None and retained.steps == 0 and retained.reached
    assert own.metrics.recall is not None and lone.recall["harbor"].exact_match == own.metrics.recall.exact_match
    assert lone.retention["harbor"] == pytest.approx(1.0)


def test_a_failure_in_the_middle_of_a_heal_leaves_nothing(learned, monkeypatch):
    from training import retain

    real, calls = retain._retention, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # after the bare merge's check and 2 training steps
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(retain, "_retention", failing)
    before = registry_state(learned)
    with pytest.raises(OSError, match="No space left"):
        learned.merge(
            CORPORA, strategy="ties+heal", retain=heal(target=1.0), channel="production", progress=False, device="cpu"
        )
    assert registry_state(learned) == before
    assert not list((learned.settings.home / "tmp").iterdir())
    monkeypatch.setattr(retain, "_retention", real)
    healed = learned.merge(
        CORPORA, strategy="ties+heal", retain=heal(target=0.8), channel="production", progress=False, device="cpu"
    )
    assert healed.id == 1 and healed.training_cost.retain.reached and learned.verify().ok


def test_a_heal_killed_while_training_leaves_no_row_and_gc_takes_its_work(learned):
    home = learned.settings.home
    cmd = [
        "memo",
        "merge",
        *CORPORA,
        "--strategy",
        "ties+heal",
        "--target",
        "1.0",
        "--max-steps",
        "100000",
        "--check-every",
        "50",
        "--lr",
        "1e-6",
        "--channel",
        "production",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(cmd, env=memo_subprocess_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not list((home / "tmp").glob("integrate-*/merged")):
        time.sleep(0.05)
    time.sleep(2.0)  # the merged model is written: the heal is training now (the target cannot be reached)
    assert proc.poll() is None, "the heal ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert count(learned, MergeRow) == count(learned, ChannelEventRow) == 0
    assert learned.verify().ok  # no row reaches a partial blob
    left = list((home / "tmp").glob("integrate-*"))
    assert len(left) == 1 and (left[0] / "merged" / "config.json").is_file()
    report = learned.gc(dry_run=False, grace_seconds=0)
    assert report.work_dirs_removed == 1 and not left[0].exists() and learned.verify().ok
