"""A sweep's results folder: ``runs.csv`` (one row per run), ``curves.json`` (training reward per step)
and ``run_settings.json`` (each run's settings, so a rerun can tell a finished run from one made
with other settings). Every write is atomic, after every finished run, so an interrupted sweep
keeps what it finished.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

from benchmarking.sweep import config_id
from corruption_env.files import atomic_path, atomic_write_json

FIXED_COLUMNS = ["run_id", "config_id", "task", "dataset", "kind", "name", "reward", "seed", "status", "error",
                 "knn", "linear", "keep_fraction", "seconds", "train_seconds", "train_divergences", "host", "finished_at"]
TEXT_COLUMNS = {"run_id", "config_id", "task", "dataset", "kind", "name", "reward", "status", "error", "host",
                "finished_at"}
MACHINE_COLUMNS = ("seconds", "train_seconds", "host", "finished_at")  # where and when, not what: differ between reruns
FINISHED = ("ok", "diverged")  # a diverged run is a result (its corruptor broke SimCLR); rerunning repeats it


def read_rows(path: Path) -> list[dict[str, Any]]:
    """runs.csv as typed rows: text columns stay text, empty cells become None, the rest numbers."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v if k in TEXT_COLUMNS else _number(v) for k, v in row.items()} for row in rows]


def _number(text: str) -> Any:
    if text in ("", None):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class ResultStore:
    """The rows of one results folder, kept on disk after every change.

    :param out: the folder (created).
    :param order: run ids in grid order; rows are written in this order, others after them, so both
        engines write the same file whatever order their runs finish in.
    """

    def __init__(self, out: Path, order: Iterable[str] = ()) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.order = {run_id: i for i, run_id in enumerate(order)}
        self.rows = {r["run_id"]: r for r in read_rows(self.runs_csv)}
        self.curves: dict[str, list[float]] = self._read_json("curves.json")
        self.settings: dict[str, dict[str, Any]] = self._read_json("run_settings.json")

    @property
    def runs_csv(self) -> Path:
        return self.out / "runs.csv"

    def _read_json(self, name: str) -> dict[str, Any]:
        path = self.out / name
        return json.loads(path.read_text()) if path.is_file() else {}

    def is_finished(self, settings: dict[str, Any]) -> bool:
        row = self.rows.get(settings["run_id"])
        return bool(row) and row["status"] in FINISHED and row.get("config_id") == config_id(settings)

    def changed(self, settings: dict[str, Any]) -> list[str] | None:
        """None when the folder has no row for this run or one with the same settings; else what differs."""
        from benchmarking.sweep import settings_diff

        row = self.rows.get(settings["run_id"])
        if row is None or row.get("config_id") == config_id(settings):
            return None
        old = self.settings.get(settings["run_id"])
        return settings_diff(old, settings) if old else ["settings not recorded (made by an older benchmark.py)"]

    def record(self, row: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Add or replace a run's row (and its curve and settings) and write the folder's files."""
        row = dict(row)
        curve = row.pop("curve", None)
        if curve:
            self.curves[row["run_id"]] = curve
        if settings is not None:
            self.settings[row["run_id"]] = settings
        self.rows[row["run_id"]] = row
        self.write()

    def write(self) -> None:
        rows = sorted(self.rows.values(), key=lambda r: (self.order.get(r["run_id"], len(self.order)), r["run_id"]))
        extra = sorted({k for r in rows for k in r if k not in FIXED_COLUMNS})
        with atomic_path(self.runs_csv) as tmp, tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIXED_COLUMNS + extra)
            writer.writeheader()
            writer.writerows(rows)
        atomic_write_json(self.out / "curves.json", self.curves)
        atomic_write_json(self.out / "run_settings.json", self.settings)
