"""memo processes on one machine count each other through lock files and share the cores."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from osutil.runtime_dir import UnsafeDirectory, private_dir, runtime_root
from osutil.tuning import _CoreShare

HOLDER = """
import sys, time
from pathlib import Path
from osutil.tuning import _CoreShare
share = _CoreShare(Path(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""


def test_live_processes_are_counted_and_dead_ones_forgotten(tmp_path):
    share = _CoreShare(tmp_path)
    assert share.live() == 1 and share.threads() == share.cores
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "ready"
        assert share.live() == 2 and share.threads() == max(1, share.cores // 2)
        other.send_signal(signal.SIGKILL)  # no atexit: its file stays, unlocked
        other.wait()
        time.sleep(0.05)
        assert share.live() == 1 and not (tmp_path / str(other.pid)).exists()
    finally:
        other.kill()
        other.wait()


REBALANCE = """
from osutil.tuning import share_cores, rebalance
share_cores()
print("threads", rebalance())
"""


def _rebalance_in(tmp_path, **env_changes) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "MEMO_THREADS", "OMP_NUM_THREADS")}
    env.update(TMPDIR=str(tmp_path), **env_changes)
    return subprocess.run([sys.executable, "-c", REBALANCE], env=env, capture_output=True, text=True, timeout=30)


def test_links_and_fifos_in_the_lock_directory_are_ignored(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock_dir = private_dir("cpu-share", root=tmp_path / "runtime")
    (lock_dir / "12345").symlink_to(victim)  # another process's name, pointing at someone's file
    os.mkfifo(lock_dir / "23456")  # a FIFO that nobody writes to: opening it must not block
    share = _CoreShare(lock_dir)
    assert share.live() == 1
    assert victim.read_text() == "precious"
    assert (lock_dir / "12345").is_symlink() and stat.S_ISFIFO(os.lstat(lock_dir / "23456").st_mode)


def test_a_link_at_the_process_own_name_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    lock_dir = private_dir("cpu-share", root=tmp_path / "runtime")
    (lock_dir / str(os.getpid())).symlink_to(victim)
    share = _CoreShare(lock_dir)
    assert victim.read_text() == "precious" and not share.path.is_symlink() and share.path.is_file()


def test_a_whole_process_with_a_fifo_in_its_lock_directory_finishes(tmp_path):
    lock_dir = private_dir("cpu-share", root=tmp_path / f"memo-{os.getuid()}")
    os.mkfifo(lock_dir / "999999")
    done = _rebalance_in(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["threads", str(len(os.sched_getaffinity(0)))] and done.stderr == ""


@pytest.mark.parametrize("how", ["other owner", "open mode", "symlink"])
def test_a_lock_directory_others_could_write_is_refused(tmp_path, how):
    path = tmp_path / f"memo-{os.getuid()}"
    if how == "symlink":
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
    else:
        path.mkdir(mode=0o700)
        if how == "open mode":
            path.chmod(0o777)
        elif os.getuid() == 0:
            os.chown(path, 65534, 65534)  # nobody's
        else:
            pytest.skip("only root can give a directory to another user")
    with pytest.raises(UnsafeDirectory):
        private_dir("cpu-share", root=path)
    done = _rebalance_in(tmp_path)  # the process goes on with torch's defaults, and says why once
    assert done.returncode == 0 and done.stdout.split() == ["threads", "None"]
    assert done.stderr.count("\n") == 1 and "not sharing the cores" in done.stderr
    if how == "symlink":
        assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing was made through the link


def test_the_runtime_directory_prefers_a_private_xdg_runtime_dir(tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_root() == xdg / "memo"
    xdg.chmod(0o755)  # not private: the temp directory's per-user directory instead
    assert runtime_root() == Path(tempfile.gettempdir()) / f"memo-{os.getuid()}"
