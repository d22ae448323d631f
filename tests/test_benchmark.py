"""benchmark.py on a tiny sweep: every file, CIs around their means, resuming, failures recorded."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import agents
import benchmark

TINY = ["--seeds", "2", "--train-steps", "8", "--eval-steps", "6", "--hyperparams", "reinforce.n_steps:4",
        "--env-kwargs", "image_size:16", "batch_size:4", "dataset_kwargs:{'train_size': 256, 'test_size': 64}",
        "heldout_size:16", "decorruptor:'bicubic'"]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tiny_sweep_writes_everything_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--rewards", "neg_loss,prediction_gain", "--algos", "reinforce", "--baselines", "keep_all",
            "--out", str(out), "--workers", "2", *TINY]  # two spawned worker processes
    assert benchmark.main(args) == 0
    for name in ("runs.csv", "curves.json", "summary.md", "accuracy.png", "learning_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_rows(out / "runs.csv")
    assert len(rows) == 2 * 2 + 2 + 2 * 2  # agents, baseline, references (untrained, simclr_aug) per seed
    assert all(r["status"] == "ok" for r in rows)
    agent_rows = [r for r in rows if r["kind"] == "agent"]
    # every run records its return under every reward definition
    assert {"eval_return/heldout_gain", "eval_return/probe_accuracy", "train_return/grad_norm"} <= set(rows[0])
    assert all(r["train_return/prediction_gain"] != "" for r in agent_rows)
    curves = json.loads((out / "curves.json").read_text())
    assert all(len(curves[r["run_id"]]) == 8 for r in agent_rows)
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# Benchmark summary") and "**Floor check:**" in summary
    assert "Spearman" in summary and "| neg_loss × reinforce | 2 |" in summary

    first_mtime = (out / "runs.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert benchmark.main(args) == 0
    assert "10 runs, 10 already finished" in capsys.readouterr().err
    assert (out / "runs.csv").stat().st_mtime_ns == first_mtime  # nothing was rerun


def test_bootstrap_intervals_contain_their_means():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 20):
        values = rng.normal(0.5, 0.1, n)
        lo, hi = benchmark.bootstrap_ci(values)
        assert lo <= values.mean() <= hi
    assert benchmark.bootstrap_ci(np.array([0.3, 0.3])) == (0.3, 0.3)
    assert np.isnan(benchmark.bootstrap_ci(np.array([0.3]))[0])
    assert benchmark.iqm(np.array([0.0, 1.0, 1.0, 100.0])) == pytest.approx(1.0)


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(agents.AGENTS, "entries", dict(agents.AGENTS.entries))

    def broken(env, **kwargs):
        raise RuntimeError("this agent always fails")

    agents.register_agent("broken", broken, agent_class=type("Broken", (), {}))
    out = tmp_path / "bench"
    assert benchmark.main(["--rewards", "neg_loss", "--algos", "broken", "--baselines", "keep_all",
                           "--out", str(out), "--workers", "1", *TINY]) == 0  # in-process: sees the registration
    rows = read_rows(out / "runs.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and "this agent always fails" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 6
    assert "## Failed runs" in (out / "summary.md").read_text()


def test_unknown_names_fail_before_any_run(tmp_path):
    with pytest.raises(SystemExit, match="unknown reward"):
        benchmark.main(["--rewards", "vibes", "--out", str(tmp_path / "b"), *TINY])
    with pytest.raises(SystemExit, match="unknown baseline"):
        benchmark.main(["--baselines", "keep_some", "--algos", "ppo", "--out", str(tmp_path / "b"), *TINY])
    assert not (tmp_path / "b" / "runs.csv").exists()
