"""memo processes on one machine count each other through lock files and share the cores."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from merging import tuning
from merging.tuning import _CoreShare, others_running

HOLDER = """
import sys, time
from pathlib import Path
from merging import tuning
from merging.tuning import _CoreShare, others_running
share = _CoreShare(Path(sys.argv[1]))
print("ready", flush=True)
time.sleep(60)
"""


def test_live_processes_are_counted_and_dead_ones_forgotten(tmp_path, monkeypatch):
    monkeypatch.setattr(tuning, "others_running", lambda: 0)  # an idle machine apart from memo
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


def test_other_work_that_runs_takes_threads_away(tmp_path, monkeypatch):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.time() + 10
        while others_running() < 1 and time.time() < deadline:  # counted once it is scheduled
            time.sleep(0.01)
        assert others_running() >= 1
    finally:
        spinner.kill()
        spinner.wait()
    share = _CoreShare(tmp_path)
    monkeypatch.setattr(tuning, "others_running", lambda: share.cores)
    assert share.threads() == 1, "a machine whose cores are all busy gets one thread: no barrier to wait at"
    monkeypatch.setattr(tuning, "others_running", lambda: 0)
    assert share.threads() == share.cores
