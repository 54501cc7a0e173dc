"""Who a process is, in a form another process (on this machine or another) can check later.

A process key is ``HOST/BOOT/PIDNS/PID/START``: the host's name, the kernel's boot id, the pid
namespace (containers on one kernel each have their own pids), the pid and the process's start
time in clock ticks since boot. Seen from the same boot (a random id: unique to one machine's
one boot, where host names are not) and namespace, a key whose pid now runs with another start
time (or not at all) names a dead process: pids are reused, start times are not. From anywhere
else nothing can be told (:func:`is_dead` answers False), so records keyed this way also carry
an expiry.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@cache
def _boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return "-"  # not Linux: a key from here is never judged dead by its pid


@cache
def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").replace("/", "_")
    except OSError:
        return "-"


def _start_time(pid: int) -> str | None:
    """The process's start time (ticks since boot), or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces


def process_key(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}/{_boot_id()}/{_pid_namespace()}/{pid}/{_start_time(pid) or '-'}"


def is_dead(key: str) -> bool:
    """Whether ``key`` names a process of this host and boot that no longer runs (False when that
    cannot be told: another machine, boot or pid namespace, a malformed key)."""
    try:
        _host, boot, namespace, pid, start = key.rsplit("/", 4)
    except ValueError:
        return False
    if boot != _boot_id() or namespace != _pid_namespace() or "-" in (boot, namespace, start) or not pid.isdigit():
        return False
    return _start_time(int(pid)) != start
