"""Kill what a process leaves behind when it dies: ``python -m benchmarking.reaper PID [TOKEN]``.

Every second it notes the descendants of PID (from Linux's /proc). Once PID is gone it SIGKILLs those
still running (checked by start time, so a reused process id is never hit) and, when TOKEN is given,
every process whose environment carries ``REAPER_TOKEN=TOKEN`` (set by the owner before it starts
anything, so every process it spawns inherits it): that catches a process started after the last look,
or orphaned by a parent that exited first. It repeats until nothing is left, then exits. The Ray
engine runs one beside a local Ray it starts: after a SIGKILL of the driver, Ray's raylet and GCS exit
on their own, but its dashboard, runtime-env agents and a worker started in the driver's last second
lingered for a minute or more.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

TOKEN_VARIABLE = "REAPER_TOKEN"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def descendants(*pids: int) -> dict[int, str]:
    """{pid: start time} of every process below any of ``pids`` (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for other in _pids():
        if stat := _stat(other):
            children.setdefault(stat[0], []).append(other)
            starts[other] = stat[2]
    out, todo = {}, [child for pid in pids for child in children.get(pid, [])]
    while todo:
        child = todo.pop()
        out[child] = starts[child]
        todo += children.get(child, [])
    return out


def carrying(token: str) -> dict[int, str]:
    """{pid: start time} of every process (readable by us) whose environment has ``REAPER_TOKEN=token``."""
    marker = f"{TOKEN_VARIABLE}={token}".encode()
    out = {}
    for pid in _pids():
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment and (stat := _stat(pid)):
            out[pid] = stat[2]
    return out


def _kill(victims: dict[int, str]) -> int:
    """SIGKILL those of ``victims`` still running as the process we noted; how many were hit."""
    hit = 0
    for pid, start in victims.items():
        stat = _stat(pid)
        if pid != os.getpid() and stat and stat[2] == start and stat[1] != "Z":
            try:
                os.kill(pid, signal.SIGKILL)
                hit += 1
            except OSError:
                pass
    return hit


def reap_after(pid: int, token: str | None = None, period: float = 1.0, rounds: int = 20) -> None:
    seen: dict[int, str] = {}
    while (stat := _stat(pid)) and stat[1] != "Z":
        seen.update(descendants(pid))
        time.sleep(period)
    for _ in range(rounds):  # a process being killed may still be starting others
        seen.update(descendants(*seen))
        if token:
            seen.update(carrying(token))
        if not _kill(seen):
            return
        time.sleep(0.1)


if __name__ == "__main__":
    reap_after(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
