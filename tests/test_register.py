"""The "register a new corpus" journey through the registry and CLI, with its bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from registry.operations.fine_tuning import TrainingFailed
from registry.store.errors import InvalidInput, NotFound
from registry.store.schema import ReflectionSetRow, TaskVectorRow
from tests.conftest import memo_subprocess_env
from tests.support.models import EXAMPLES, HARBOR, SMALL
from tests.support.snapshot import count
from training.sft import SFTSettings

FAST = SFTSettings(steps=120, batch=16, lr=3e-3)


def test_register_train_eval_journey(tiny_registry, tmp_path):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    refl = reg.import_reflections("harbor", HARBOR / "qa.jsonl", heldout=HARBOR / "heldout.jsonl")
    assert refl.pair_count == 46 and refl.heldout_sha256
    tv = reg.train("harbor", FAST, progress=False)
    assert tv.ref == "harbor@v1" and tv.base_model == "tiny" and tv.method == "full"
    assert tv.metrics.recall.exact_match >= 0.9, tv.metrics
    assert tv.metrics.heldout is not None
    training = tv.training
    assert training["dataset_sha256"] == refl.sha256 and training["sft"]["seed"] == 0
    assert training["examples"] == 120 * 16 and training["wall_seconds"] > 0
    assert {"torch", "transformers", "memo"} <= set(training["versions"])
    assert tv.norms and all(v >= 0 for v in tv.norms.values())
    again = reg.train("harbor", FAST, storage_dtype="bfloat16", progress=False)
    assert again.version == 2 and again.storage_dtype == "bfloat16"
    result = reg.evaluate("harbor@v1", "harbor")
    assert result.exact_match == pytest.approx(tv.metrics.recall.exact_match, abs=0.05)
    assert reg.evaluate("harbor", "harbor", heldout=True).count == 40
    assert reg.verify().ok


def test_base_alone_knows_almost_nothing(tiny_registry):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    reg.import_reflections("harbor", HARBOR / "qa.jsonl")
    directory = reg.base_dir("tiny")
    assert reg.evaluate(str(directory), "harbor").exact_match <= 0.2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the QA file is empty"),
        ('{"question": "q", "answer": "a"}\n{"question": oops}\n', "qa.jsonl:2: not valid JSON"),
        ('{"question": "q"}\n', "qa.jsonl:1: needs a non-empty string 'answer'"),
        ('{"question": "q", "answer": "a", "document": "nowhere.md"}\n', "references document 'nowhere.md'"),
    ],
)
def test_bad_qa_files_change_nothing(tiny_registry, tmp_path, content, message):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    bad = tmp_path / "qa.jsonl"
    bad.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        reg.import_reflections("harbor", bad)
    assert count(reg, ReflectionSetRow) == 0


def test_train_without_reflections_or_tokenizer(tiny_registry, tmp_path, model_copy):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    with pytest.raises(NotFound, match="no reflections yet; run `memo reflect harbor"):
        reg.train("harbor", FAST, progress=False)
    reg.add_base(model_copy, name="no-tokenizer")  # a bare model directory: weights, no tokenizer
    reg.add_corpus("bare", sorted(HARBOR.glob("*.md")), base="no-tokenizer")
    reg.import_reflections("bare", HARBOR / "qa.jsonl")
    with pytest.raises(InvalidInput, match="has no tokenizer"):
        reg.train("bare", FAST, progress=False)
    assert count(reg, TaskVectorRow) == 0


def test_nan_loss_registers_nothing(tiny_registry):
    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    reg.import_reflections("harbor", HARBOR / "qa.jsonl")
    with pytest.raises(TrainingFailed, match="loss became .* nothing was registered"):
        reg.train("harbor", SFTSettings(steps=30, batch=16, lr=1e12), progress=False)
    assert count(reg, TaskVectorRow) == 0


def test_a_killed_register_resumes_when_run_again_and_never_duplicates(tiny_registry):
    reg = tiny_registry
    env = memo_subprocess_env(reg.settings.home)
    memo = str(Path(env["PATH"].split(os.pathsep)[0]) / "memo")
    cmd = [
        memo,
        "register",
        "harbor",
        *map(str, sorted(HARBOR.glob("*.md"))),
        "--qa",
        str(HARBOR / "qa.jsonl"),
        "--base",
        "tiny",
        "--steps",
        "400",
        "--batch",
        "8",
        "--lr",
        "3e-3",
        "--json",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = reg.settings.home / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not list(checkpoints.glob("*/checkpoint.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-training, with a checkpoint on disk
    proc.wait()
    assert list(checkpoints.glob("*/checkpoint.json")), "no checkpoint was written within 2 minutes"
    assert count(reg, TaskVectorRow) == 0 and count(reg, ReflectionSetRow) == 1
    assert reg.verify().ok
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)  # the same command again
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["version"] == 1 and record["training"]["resumed_from_step"] >= 50 and not record["reused"]
    assert not list(checkpoints.iterdir()), "the checkpoint is removed once the task vector is recorded"
    again = subprocess.run(cmd[:-1], env=env, capture_output=True, text=True)  # and once more: nothing new
    assert again.returncode == 0, again.stderr
    assert "already registered (the same reflections and settings) task vector harbor@v1" in again.stdout
    assert count(reg, TaskVectorRow) == 1 and count(reg, ReflectionSetRow) == 1 and len(reg.list_corpora()) == 1
    # The name with other documents is another corpus: refused in one line, nothing written.
    elsewhere = str(sorted((EXAMPLES / "glassworks").glob("*.md"))[0])
    other = subprocess.run([*cmd[:3], elsewhere, *cmd[-13:]], env=env, capture_output=True, text=True)
    assert other.returncode == 1 and "'harbor' already exists with other documents" in other.stderr
    assert count(reg, ReflectionSetRow) == 1


def test_register_cli_in_one_command(tmp_path):
    from click.testing import CliRunner

    from registry import Registry
    from registry.cli import cli

    home = tmp_path / "home"
    with Registry.init(home) as reg:
        reg.create_tiny_base("tiny", SMALL, progress=False)
    args = [
        "--home",
        str(home),
        "register",
        "harbor",
        *map(str, sorted(HARBOR.glob("*.md"))),
        "--qa",
        str(HARBOR / "qa.jsonl"),
        "--heldout",
        str(HARBOR / "heldout.jsonl"),
        "--base",
        "tiny",
        "--steps",
        "120",
        "--lr",
        "3e-3",
        "--json",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["version"] == 1 and record["metrics"]["recall"]["exact_match"] >= 0.9
    shown = CliRunner().invoke(cli, ["--home", str(home), "eval", "harbor@v1", "--corpus", "harbor", "--json"])
    assert json.loads(shown.stdout)["count"] == 46


def test_disk_full_while_storing_the_task_vector(tiny_registry, monkeypatch):
    """ENOSPC in the middle of writing blobs: no row, no partial blob, and the rerun works."""
    import errno

    from registry.store.blobstore import LocalBlobStore

    reg = tiny_registry
    reg.add_corpus("harbor", sorted(HARBOR.glob("*.md")), base="tiny")
    reg.import_reflections("harbor", HARBOR / "qa.jsonl")
    real = LocalBlobStore.put_file

    def full_disk(self, path):
        if path.name == "model.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, path)

    monkeypatch.setattr(LocalBlobStore, "put_file", full_disk)
    with pytest.raises(OSError, match="No space left"):
        reg.train("harbor", SFTSettings(steps=10, batch=8, lr=3e-3), progress=False)
    monkeypatch.undo()
    assert count(reg, TaskVectorRow) == 0
    report = reg.verify()
    assert report.ok and report.temp_files == 0
    assert reg.train("harbor", SFTSettings(steps=10, batch=8, lr=3e-3), progress=False).version == 1


def test_register_in_one_call_checks_first_and_reuses(tiny_registry, tmp_path):
    """The Python API does what `memo register` does: nothing recorded on bad input, reuse on a rerun."""
    from registry.store.errors import InvalidInput as Invalid

    reg = tiny_registry
    docs = sorted(HARBOR.glob("*.md"))
    bad = tmp_path / "qa.jsonl"
    bad.write_text('{"question": "Who?"}\n')
    with pytest.raises(Invalid, match="needs a non-empty string 'answer'"):
        reg.register("harbor", docs, base="tiny", qa=bad)
    assert reg.list_corpora() == []
    with pytest.raises(Invalid, match="either a QA file"):
        reg.register("harbor", docs, base="tiny")
    seen = []
    settings = SFTSettings(steps=4, batch=8, lr=3e-3)
    first = reg.register(
        "harbor",
        docs,
        base="tiny",
        qa=HARBOR / "qa.jsonl",
        settings=settings,
        progress=False,
        on_reflections=seen.append,
    )
    assert first.ref == "harbor@v1" and not first.reused and seen[0].pair_count == 46
    again = reg.register("harbor", docs, base="tiny", qa=HARBOR / "qa.jsonl", settings=settings, progress=False)
    assert again.reused and again.version == 1 and count(reg, ReflectionSetRow) == 1


def test_lora_takes_its_own_learning_rate_in_the_api():
    assert SFTSettings(method="lora").lr == 3e-3 and SFTSettings().lr == 3e-4
    assert SFTSettings(method="lora", lr=1e-2).lr == 1e-2
    assert SFTSettings(**SFTSettings(method="lora").to_json()) == SFTSettings(method="lora")
