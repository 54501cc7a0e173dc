"""The fused kernels' library is never trusted blindly: its file is checked against the sha256
recorded at build time before it is loaded (a truncated or modified one is rebuilt, never a
SIGBUS), it must agree with the torch kernel on a self-test, a failing or hanging compiler is
reported with its message and not retried by every process, and a merge says which kernel ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import merging.native as native
from merging.native import build, selftest
from tests.conftest import Memo
from tests.support.merge_models import make_finetunes

STATUS = "from merging.native import status; print(status().available)"


def _cc() -> str | None:
    import shutil

    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


pytestmark = pytest.mark.skipif(
    _cc() is None and not os.environ.get("MEMO_REQUIRE_NATIVE"), reason="no C compiler: the eager kernel runs"
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private native cache, and a status computed afresh (in this process and children)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    native.status.cache_clear()
    native.runtime.uninstall()
    yield tmp_path / "xdg" / "memo" / "native"
    native.status.cache_clear()
    native.runtime.uninstall()


def _status_in_a_process(**env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", STATUS], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def _built(cache: Path) -> Path:
    (build_dir,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("fused-")]
    return build_dir / json.loads((build_dir / "lib.json").read_text())["file"]


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_a_damaged_library_is_rebuilt_never_loaded(cache, damage):
    first = _status_in_a_process()
    assert first.returncode == 0 and first.stdout.startswith("True"), first.stderr
    lib = _built(cache)
    data = lib.read_bytes()
    if damage == "truncated":
        lib.write_bytes(data[: len(data) // 2])  # loading this maps pages past the end: SIGBUS
    else:
        lib.write_bytes(data[:4000] + bytes([data[4000] ^ 0xFF]) + data[4001:])
    again = _status_in_a_process()
    assert again.returncode == 0 and again.stdout.startswith("True"), again.stderr
    rebuilt = _built(cache)
    assert rebuilt != lib and build._sha256(rebuilt) == json.loads((rebuilt.parent / "lib.json").read_text())["sha256"]
    assert not lib.exists()


def test_a_library_that_fails_its_self_test_is_rebuilt_once(cache, monkeypatch):
    answers = iter([False, True])
    monkeypatch.setattr(selftest, "agrees_with_torch", lambda lib: next(answers))
    assert native.status().available
    assert native.library() is not None
    first = _built(cache)
    native.status.cache_clear()
    native.runtime.uninstall()
    monkeypatch.setattr(selftest, "agrees_with_torch", lambda lib: False)  # it never agrees: not used
    found = native.status()
    assert not found.available and "disagree with the torch kernel" in found.reason
    assert native.library() is None and _built(cache) != first


def _fake_compiler(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-cc"
    script.write_text(f"#!/bin/sh\necho run >> {tmp_path / 'runs'}\n{body}\n")
    script.chmod(0o755)
    return script


def test_a_failing_compiler_is_reported_with_its_message_and_not_retried(cache, tmp_path):
    cc = _fake_compiler(tmp_path, 'echo "fused.c:12:3: error: the sky fell" >&2\nexit 1')
    for _ in range(2):
        done = _status_in_a_process(CC=str(cc))
        assert done.returncode == 0 and done.stdout.startswith("False")
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "could not be built" in lines[0] and "the sky fell" in lines[0], done.stderr
        assert "merges run the torch kernel" in lines[0]
    assert (tmp_path / "runs").read_text().count("run") == 1, "the second process did not run the compiler again"


def test_a_hanging_compiler_times_out_and_is_not_waited_for_again(cache, tmp_path, monkeypatch):
    cc = _fake_compiler(tmp_path, "sleep 600 &\nwait")  # a child too: the whole group is stopped
    monkeypatch.setenv("CC", str(cc))
    monkeypatch.setattr(build, "COMPILE_TIMEOUT_SECONDS", 1)
    started = time.monotonic()
    found = native.status()
    assert not found.available and "did not finish in 1 s" in found.reason
    assert time.monotonic() - started < 30
    native.status.cache_clear()
    started = time.monotonic()
    assert not native.status().available and time.monotonic() - started < 1


def test_the_merge_says_which_kernel_ran(tmp_path):
    base, models = make_finetunes(tmp_path / "m", k=2, hidden=32)
    config = tmp_path / "ties.yml"
    config.write_text(
        "merge_method: ties\n"
        f"base_model: {base}\n"
        "models:\n" + "".join(f"  - model: {m}\n    parameters: {{density: 0.5, weight: 1.0}}\n" for m in models)
    )
    for env, expected in (({}, "kernel: fused C"), ({"MEMO_NATIVE": "0"}, "kernel: torch (MEMO_NATIVE=0)")):
        out = tmp_path / f"out-{len(env)}"
        done = subprocess.run(
            [sys.executable, "-m", "merging", str(config), str(out), "--quiet"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert expected in done.stderr


def test_memo_merge_says_which_kernel_ran_and_records_it(trained):
    memo = Memo(trained.home, None)
    out = memo("merge", "--strategy", "ties", "harbor", "glassworks").output
    assert "recorded merge-1: ties d0.3 of glassworks@v1 harbor@v1 on tiny (kernel: fused C)" in out
    assert trained.get_merge(1).training_cost.kernel == "fused C"
