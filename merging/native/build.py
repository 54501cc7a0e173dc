"""Building the fused kernels' library, and finding a build that is whole.

A build is a directory ``fused-KEY`` under the native cache (``KEY`` hashes the sources, the flags,
the compiler's file, the machine and the CPU's flags) holding ``lib-XXXX.so`` and ``lib.json``,
the library's name and sha256. It is made in a temporary sibling and renamed into place whole, so
a process sees a complete build or none; one whose file does not match its recorded sha256
(truncated, modified) is set aside and built again, never loaded. A compiler that fails or does
not finish in time leaves ``fused-KEY.failed`` with its message, so other processes do not try
again for a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SOURCE = Path(__file__).with_name("fused.c")
HEADERS = (Path(__file__).with_name("fused_merge.h"),)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"]
COMPILE_TIMEOUT_SECONDS = 60
RETRY_FAILED_BUILD_SECONDS = 24 * 3600  # a failed build is not tried again by every process


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "memo" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _key(compiler: str) -> str:
    """What the library depends on: its sources, the flags, the compiler (its file, not a run of it:
    a hanging compiler must not stall a process that only loads), the machine and the CPU's flags."""
    real = Path(os.path.realpath(compiler))
    st = real.stat()
    parts = [*(f.read_text() for f in (SOURCE, *HEADERS)), " ".join(FLAGS), f"{real}:{st.st_size}:{st.st_mtime_ns}"]
    return hashlib.sha256("\0".join([*parts, platform.machine(), _cpu_flags()]).encode()).hexdigest()[:16]


def build_dir(compiler: str) -> Path:
    return _cache_dir() / f"fused-{_key(compiler)}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class BuildFailed(Exception):
    """The C compiler failed or did not finish; the message is the compiler's own (first lines)."""


def built_library(compiler: str) -> Path:
    """The built library for this key: found in the cache with its recorded sha256 matching, else
    (re)built. Each build is a directory ``fused-KEY`` holding ``lib-XXXX.so`` and ``lib.json`` (its
    name and sha256), renamed into place whole; a damaged one is set aside and built again."""
    target = build_dir(compiler)
    key = target.name.removeprefix("fused-")
    found = _verified(target)
    if found is not None:
        return found
    if target.exists():
        set_aside(target)  # truncated, modified or half-made: never loaded
    failed = target.with_name(target.name + ".failed")
    if failed.is_file() and time.time() - failed.stat().st_mtime < RETRY_FAILED_BUILD_SECONDS:
        raise BuildFailed(failed.read_text().strip())
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / f"fused-{key}"
        built.mkdir()
        lib = built / f"lib-{secrets.token_hex(4)}.so"  # a new name each build: dlopen never reuses a stale one
        try:
            _compile(compiler, lib)
        except BuildFailed as e:
            failed.write_text(f"{e}\n")
            raise
        (built / "lib.json").write_text(json.dumps({"file": lib.name, "sha256": _sha256(lib)}))
        try:
            os.rename(built, target)  # atomic; fails if another process put its build there first
        except OSError:
            found = _verified(target)
            if found is None:
                raise
            return found
    return target / lib.name


def _compile(compiler: str, out: Path) -> None:
    """Run the compiler in its own process group, so a time-out stops it and whatever it started."""
    command = [compiler, *FLAGS, "-o", str(out), str(SOURCE)]
    try:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
    except OSError as e:
        raise BuildFailed(f"{compiler} could not run: {e}") from None
    try:
        stdout, stderr = proc.communicate(timeout=COMPILE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BuildFailed(f"{compiler} did not finish in {COMPILE_TIMEOUT_SECONDS} s") from None
    if proc.returncode != 0:
        first = " ".join((stderr or stdout).strip().splitlines()[:2])[:300]
        raise BuildFailed(f"{compiler} failed (exit {proc.returncode}): {first}")


def _verified(target: Path) -> Path | None:
    """The library in ``target`` if its bytes are the ones recorded when it was built."""
    try:
        record = json.loads((target / "lib.json").read_text())
        lib = target / record["file"]
        return lib if "/" not in record["file"] and _sha256(lib) == record["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def set_aside(target: Path) -> None:
    aside = target.with_name(f".{target.name}.bad-{secrets.token_hex(4)}")
    with contextlib.suppress(OSError):
        os.rename(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
