"""Writing files so that a crash or Ctrl-C never leaves a half-written one: the project's one home for it.

Every result the project keeps (run folders, agent checkpoints, CAM-Net weights, benchmark tables)
is written to a temporary file in the destination's folder and renamed over it, which is atomic on
POSIX file systems: a reader sees the old file or the new one, never a mix.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (same suffix, so writers that add one do not); on a
    clean exit rename it to ``path``, on an exception remove it. Folders are created as needed.

    >>> with atomic_path("out/table.csv") as tmp:  # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; results are shared, readable files
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (non-JSON values as strings) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")
