"""Kill what a process leaves behind when it dies: ``python -m benchmarking.reaper PID``.

Every second it notes the descendants of PID (from Linux's /proc); once PID is gone it SIGKILLs those
still running (checked by start time, so a reused process id is never hit) and exits. The Ray engine
runs one beside a local Ray it starts: after a SIGKILL of the driver, Ray's trial workers, raylet and
GCS exit on their own, but its dashboard and runtime-env agents lingered for a minute or more.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of ``pid``, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], fields[19]


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of every process below ``pid``."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))):
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    out, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out[child] = starts[child]
        todo += children.get(child, [])
    return out


def reap_after(pid: int, period: float = 1.0) -> None:
    me = os.getpid()
    seen: dict[int, str] = {}
    while (stat := _stat(pid)) and stat[1] != "Z":
        seen.update(descendants(pid))
        time.sleep(period)
    for child, start in seen.items():
        stat = _stat(child)
        if child != me and stat and stat[2] == start and stat[1] != "Z":
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    reap_after(int(sys.argv[1]))
