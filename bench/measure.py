"""Measuring one command honestly: wall time, two kinds of peak memory, disk reads, repeated runs.

Memory has two figures because they count different things. ``ru_maxrss`` (the kernel's high-water
mark of resident pages) counts pages of memory-mapped files, which mergekit reads its inputs through
and which are page cache the kernel can take back; it does not count what a process ``preadv``s into
the page cache, as memo does. The *anonymous* peak (``RssAnon`` in ``/proc/PID/status``, sampled
every few milliseconds) is the memory a process really holds: heap, tensors, buffers. Disk reads
(``ru_inblock``) show whether the page cache was warm: near zero means every input came from memory.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# A forked child starts with its parent's resident pages counted in its peak RSS (Linux keeps the
# high-water mark across exec), so every command runs under this small wrapper, which imports
# nothing heavy, samples its child's anonymous memory and reports the child's figures.
WRAPPER = r"""
import os, subprocess, sys, threading, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
peak_anon, done = 0, threading.Event()
def sample():
    global peak_anon
    path = f"/proc/{proc.pid}/status"
    while not done.is_set():
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak_anon = max(peak_anon, int(line.split()[1]))
                        break
        except OSError:
            return
        time.sleep(0.005)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
_, status, usage = os.wait4(proc.pid, 0)
wall = time.perf_counter() - start
done.set()
print(wall, usage.ru_maxrss, peak_anon, usage.ru_inblock, status)
"""

# The I/O floor: read every byte of every input (base and models) through a 64 MB buffer, then write
# one model's worth of output and fsync it, as memo's writer does. No torch, no math: no merge can be
# faster on this machine. It checks that it read exactly the bytes the files hold.
IO_FLOOR = r"""
import glob, os, sys
dirs, out = sys.argv[1:-1], sys.argv[-1]
buf = memoryview(bytearray(64 << 20))
expected = read = 0
for d in dirs:
    for path in sorted(glob.glob(d + "/*.safetensors")):
        expected += os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
        while (n := os.readv(fd, [buf])) > 0:
            read += n
        os.close(fd)
if read != expected:
    sys.exit(f"read {read} bytes of {expected}")
for path in sorted(glob.glob(dirs[0] + "/*.safetensors")):
    left = os.path.getsize(path)
    with open(out + "/" + os.path.basename(path), "wb") as f:
        while left:
            left -= f.write(buf[: min(left, len(buf))])
        f.flush()
        os.fsync(f.fileno())
"""

# What every merge process pays before its first byte: Python, torch and memo's merge engine importing.
STARTUP = "import torch, merging.engine, merging.yaml_config"


@dataclass(frozen=True)
class Run:
    """One run of one command."""

    wall_s: float
    maxrss_gib: float  # the kernel's high-water mark of resident pages, file-backed ones included
    anon_gib: float  # peak anonymous memory, sampled
    disk_read_mb: float  # blocks read from the disk (not the page cache)


def measure(cmd: list[str]) -> Run:
    """Run ``cmd`` once under the wrapper; a failing command stops the benchmark with its stderr."""
    done = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    try:
        wall, maxrss_kib, anon_kib, inblock, status = done.stdout.split()
    except ValueError:
        raise SystemExit(f"{' '.join(cmd)}: the wrapper failed:\n{done.stderr[-3000:]}") from None
    if int(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return Run(float(wall), int(maxrss_kib) / 2**20, int(anon_kib) / 2**20, int(inblock) * 512 / 1e6)


@dataclass(frozen=True)
class Figures:
    """The runs of one command: medians with their spread."""

    runs: tuple[Run, ...]

    def median(self, field: str) -> float:
        return statistics.median(getattr(r, field) for r in self.runs)

    def spread(self, field: str) -> tuple[float, float]:
        values = [getattr(r, field) for r in self.runs]
        return min(values), max(values)

    def cell(self, field: str, digits: int = 1) -> str:
        """``median (min-max)``, or the one value of a single run."""
        low, high = self.spread(field)
        value = f"{self.median(field):.{digits}f}"
        return value if len(self.runs) == 1 else f"{value} ({low:.{digits}f}-{high:.{digits}f})"


def repeat(cmds: dict[str, list[str]], times: dict[str, int], between=None) -> dict[str, Figures]:
    """Each command run ``times[name]`` times, the commands interleaved so that drift hits all alike.

    ``between(name)`` runs after each run (e.g. to remove its output)."""
    runs: dict[str, list[Run]] = {name: [] for name in cmds}
    for i in range(max(times.values())):
        for name, cmd in cmds.items():
            if i < times[name]:
                runs[name].append(measure(cmd))
                if between:
                    between(name)
    return {name: Figures(tuple(r)) for name, r in runs.items()}


def io_floor_cmd(base: Path, models: list[Path], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    return [sys.executable, "-c", IO_FLOOR, str(base), *map(str, models), str(out)]


def startup_cmd() -> list[str]:
    return [sys.executable, "-c", STARTUP]


def input_bytes(dirs: list[Path]) -> int:
    return sum(os.path.getsize(f) for d in dirs for f in d.glob("*.safetensors"))
