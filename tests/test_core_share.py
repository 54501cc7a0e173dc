"""memo processes on one machine count each other through lock files and share the cores."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from merging.tuning import _CoreShare

HOLDER = """
import sys, time
from pathlib import Path
from merging.tuning import _CoreShare
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
