"""benchmark.py on tiny sweeps (local engine): every file, CIs around their means, resuming, and the
runner's promises: settings changes refused, failures recorded with a non-zero exit, bad options
rejected before any run, Ctrl-C keeping finished runs, no worker outliving a killed parent."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import agents
import benchmark
from benchmarking import bootstrap_ci, iqm
from benchmarking.report import summarize

ROOT = Path(__file__).resolve().parents[1]
ENV = ["--env-kwargs", "image_size:16", "batch_size:4", "dataset_kwargs:{'train_size': 256, 'test_size': 64}",
       "heldout_size:16", "decorruptor:'bicubic'"]
TINY = ["--seeds", "2", "--train-steps", "8", "--eval-steps", "6", *ENV]
CUDA = torch.cuda.is_available()
REFERENCES_ONLY = ["--rewards", "", "--algos", "", "--baselines", ""]


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def exit_code(argv) -> int:
    """main's return value, or the status of the SystemExit argparse raises."""
    try:
        return benchmark.main(argv)
    except SystemExit as exc:
        return exc.code


def test_tiny_sweep_writes_everything_and_resumes(tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--rewards", "neg_loss,prediction_gain", "--algos", "reinforce", "--baselines", "keep_all",
            "--hyperparams", "reinforce.n_steps:4", "--out", str(out), "--workers", "2", *TINY]  # two spawned workers
    assert benchmark.main(args) == 0
    for name in ("runs.csv", "curves.json", "summary.md", "accuracy.png", "learning_curves.png", "run_settings.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = read_rows(out / "runs.csv")
    assert len(rows) == 2 * 2 + 2 + 2 * 2  # agents, baseline, references (untrained, simclr_aug) per seed
    assert all(r["status"] == "ok" for r in rows)
    assert [r["kind"] for r in rows] == ["agent"] * 4 + ["baseline"] * 2 + ["reference"] * 4  # grid order
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
        lo, hi = bootstrap_ci(values)
        assert lo <= values.mean() <= hi
    assert bootstrap_ci(np.array([0.3, 0.3])) == (0.3, 0.3)
    assert np.isnan(bootstrap_ci(np.array([0.3]))[0])
    assert iqm(np.array([0.0, 1.0, 1.0, 100.0])) == pytest.approx(1.0)


def test_report_is_keyed_on_kind_and_carries_extra_metrics():
    rows = [{"run_id": f"t/{kind}/{name}/-/s{seed}", "task": "t", "dataset": "shapes", "kind": kind, "name": name,
             "reward": reward, "seed": seed, "status": "ok", "error": "", "knn": knn + 0.01 * seed, "linear": 0.5,
             "keep_fraction": 1.0, "keep_planted": shortcut}
            for seed in (0, 1)
            for kind, name, reward, knn, shortcut in [("agent", "a x b", "r", 0.6, 0.25),  # " x " in a name
                                                      ("baseline", "keep_all", "", 0.5, 1.0),
                                                      ("baseline", "oracle", "", 0.55, 0.0),
                                                      ("reference", "untrained", "", 0.2, None)]]
    summary = summarize(rows, {"command": "c", "train_steps": 1, "eval_steps": 1, "seeds": 2, "env_preset": "cpu"})
    assert "| r × a x b | 2 |" in summary and "the floor holds" in summary
    assert "| run | keep_planted |" in summary and "| r × a x b | 0.250 |" in summary
    assert "oracle − keep_all kNN = 0.050 [0.050, 0.050] (+, 2 seeds);" in summary  # paired by seed
    # time to the known answer, seed by seed: a seed that never got there says so
    for row, (step, minutes) in zip([r for r in rows if r["kind"] == "agent"], [(320, 4.5), (None, None)]):
        row.update(answer_step=step, answer_cpu_minutes=minutes, final_keep_planted=0.1 if step else 0.6)
    summary = summarize(rows, {"command": "c", "train_steps": 1, "eval_steps": 1, "seeds": 2, "env_preset": "cpu"})
    assert "| r × a x b | 0, 1 | 0.25 / 0.25 | 0.10 / 0.60 | 320 (4.5) / not reached |" in summary


def test_the_summary_leaves_a_scorer_nets_weights_to_runs_csv():
    """A search's parameters are columns of the summary where they are few (a rule's weights); a scorer net's
    hundreds of weights, whose means over seeds say nothing, stay in runs.csv only."""
    def rows(n_theta: int) -> list[dict]:
        return [{"run_id": f"t/agent/cmaes/-/s{seed}", "task": "t", "dataset": "shapes", "kind": "agent",
                 "name": "cmaes", "reward": "", "seed": seed, "status": "ok", "error": "", "knn": 0.5, "linear": 0.5,
                 "keep_fraction": 1.0, "best_judge": 1.0, **{f"theta/w{i}": float(i) for i in range(n_theta)}}
                for seed in (0, 1)]

    header = {"command": "c", "train_steps": 1, "eval_steps": 1, "seeds": 2, "env_preset": "cpu"}
    assert "theta/w3 |" in summarize(rows(4), header) and "| best_judge | theta/w0 |" in summarize(rows(4), header)
    many = summarize(rows(200), header)
    assert "theta/" not in many and "| run | best_judge |" in many


def test_a_presets_env_options_reach_every_row_and_the_command_line_overrides_them():
    """The ceiling preset runs every row without a keep budget (its scorer chooses how many cells: keep_all keeps
    them all either way); ``--env-kwargs`` still sets it."""
    from benchmarking.cli import build_parser, make_sweep
    from benchmarking.sweep import check_sweep

    argv = ["--preset", "fashion_ceiling"]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    check_sweep(sweep)
    specs = sweep.specs()
    assert {s.name for s in specs} == {"cmaes_labels", "keep_all"}
    assert all(sweep.settings(s)["env"]["keep_budget"] is None for s in specs)
    assert all(sweep.settings(s)["agent_options"]["corruptor"] == "cell_scorer" for s in specs if s.kind == "agent")
    from agents.search import rung_lengths  # judged where labels order the shortcut task's corruptors

    options = [sweep.settings(s)["agent_options"] for s in specs if s.kind == "agent"]
    assert {rung_lengths(o["run_updates"], 2, o["rungs"])[-1] for o in options} == {200}
    argv = ["--preset", "fashion_ceiling", "--env-kwargs", "keep_budget:0.5", "--algos", "cmaes"]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    assert {sweep.settings(s)["env"]["keep_budget"] for s in sweep.specs()} == {0.5}


def test_extra_numeric_metrics_of_an_evaluation_reach_runs_csv(tmp_path, monkeypatch):
    from dataclasses import dataclass

    from agents.corruptor_evaluation import CorruptorEvaluation, RowResult
    from benchmarking.cli import build_parser, make_sweep
    from benchmarking.results import ResultStore
    from benchmarking.sweep import RunSpec, run_one

    @dataclass
    class WithShortcut(RowResult):
        keep_planted: float = 0.25

    monkeypatch.setattr(CorruptorEvaluation, "untrained", lambda self: WithShortcut("untrained", 0.5, 0.6))
    argv = [*REFERENCES_ONLY, *TINY]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    settings = sweep.settings(RunSpec("shapes", "reference", "untrained", "", 0))
    row = run_one(settings)
    assert row["status"] == "ok" and row["keep_planted"] == 0.25
    store = ResultStore(tmp_path)
    store.record(row, settings)
    assert ResultStore(tmp_path).rows[row["run_id"]]["keep_planted"] == 0.25  # a number again, read back


def test_a_failed_run_is_recorded_the_sweep_goes_on_and_the_exit_status_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(agents.AGENTS, "entries", dict(agents.AGENTS.entries))

    def broken(env, **kwargs):
        raise RuntimeError("this agent always fails")

    agents.register_agent("broken", broken, agent_class=type("Broken", (), {}))
    out = tmp_path / "bench"
    assert benchmark.main(["--rewards", "neg_loss", "--algos", "broken", "--baselines", "keep_all",
                           "--out", str(out), "--workers", "1", *TINY]) == 1  # in-process: sees the registration
    rows = read_rows(out / "runs.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and "this agent always fails" in failed[0]["error"]
    assert sum(r["status"] == "ok" for r in rows) == 6
    assert "## Failed runs" in (out / "summary.md").read_text()
    assert "2 run(s) failed" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    (["--rewards", "vibes"], "unknown reward"),
    (["--baselines", "keep_some"], "unknown baseline"),
    (["--hyperparams", "ppo.lrr:0.1"], "'ppo' has no option(s) lrr"),
    (["--algos", "reinforce", "--hyperparams", "reinforce.lrr:0.1"], "'reinforce' has no option(s) lrr"),
    (["--hyperparams", "n_steps:4"], "name the agent, e.g. ppo.n_steps:4"),
    (["--hyperparams", "ppo.n_steps:abc"], "ppo.n_steps:'abc': expected a number"),
    (["--hyperparams", "reinforce.n_steps:4"], "'reinforce', which is in neither --algos"),
    (["--workers", "0"], "--workers: must be > 0"),
    (["--seeds", "0"], "--seeds: must be > 0"),
    (["--tasks", "nope"], "unknown task 'nope'"),
    (["--tasks", "gen01_not_its_name"], "unknown task 'gen01_not_its_name'"),
    (["--env-kwargs", "batch_size:1"], "batch_size must be >= 2"),
    (["--env-kwargs", "dataset_kwargs:{'trian_size': 3}"], "has no option(s) trian_size"),
    (["--gpus-per-trial", "0.5"], "--gpus-per-trial is for --engine ray"),
    (["--baselines", "oracle"], "--baselines oracle: no chosen task has a known answer for it (shapes)"),
    *([(["--env-preset", "gpu"], "CUDA is not available here: use --env-preset cpu")] if not CUDA else []),
    (["--algos", "cmaes", "--env-kwargs", "action_mode:'cells'"], "needs --env-kwargs action_mode:scores"),
    # what the search refuses when it is built, refused before the first run in train_agent.py's words
    (["--algos", "cmaes", "--hyperparams", "cmaes.optimizer:'nope'"],
     "agent 'cmaes' cannot be built with --hyperparams cmaes.optimizer:'nope': ValueError: unknown optimizer 'nope'"),
    (["--algos", "cmaes", "--hyperparams", "cmaes.population:2"], "population must be an integer >= 4"),
    (["--algos", "cmaes", "--hyperparams", "cmaes.optimizer:'optuna_tpe'", "cmaes.sigma0:0.3"],
     "optimizer 'optuna_tpe' takes no option sigma0"),
    (["--algos", "cmaes_labels", "--hyperparams", "cmaes_labels.judge:'rankme'"],
     "takes a judge that reads labels (label_loss, probe_accuracy), not 'rankme'"),
])
def test_bad_options_fail_before_any_run_with_one_line(tmp_path, capsys, bad, message):
    out = tmp_path / "b"
    assert exit_code(["--algos", "ppo", "--out", str(out), *TINY, *bad]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (out / "runs.csv").exists()


@pytest.mark.parametrize("bad, message", [
    (["--algos", "nope"], "unknown agent 'nope'"),  # with no rewards, once asked whether it needs one: a traceback
    (["--algos", "cmaes", "--hyperparams", "cmaes.optimizer:nope"], "unknown optimizer 'nope'"),
    (["--hyperparams", "cmaes.population:2"], "population must be an integer >= 4"),
    (["--hyperparams", "cmaes.optimizer:optuna_tpe", "cmaes.sigma0:0.3"],
     "optimizer 'optuna_tpe' takes no option sigma0"),
    (["--hyperparams", "cmaes_labels.judge:rankme"], "takes a judge that reads labels"),
])
def test_the_fashion_mnist_preset_refuses_bad_agents_and_search_values_before_any_run(tmp_path, capsys, bad, message):
    """The preset without rewards and with searches: the same one line as every other preset, before the sweep
    starts (the notes on what a narrowed preset drops are for a sweep that runs)."""
    out = tmp_path / "b"
    assert exit_code(["--preset", "fashion_mnist", "--out", str(out), *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_real_process_refuses_an_unknown_agent_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "benchmark.py"), "--preset", "fashion_mnist", "--algos", "nope",
                             "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and result.stderr.startswith("error: unknown agent 'nope'"), result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "b").exists()


def test_changed_settings_are_refused_or_rerun_never_reused(tmp_path, capsys):
    out = tmp_path / "bench"
    args = [*REFERENCES_ONLY, "--seeds", "1", "--train-steps", "8", *ENV, "--out", str(out), "--workers", "1"]
    assert benchmark.main([*args, "--eval-steps", "6"]) == 0
    before = read_rows(out / "runs.csv")
    capsys.readouterr()
    assert benchmark.main([*args, "--eval-steps", "8"]) == 2
    err = capsys.readouterr().err
    assert "holds 2 of these runs made with other settings" in err and "eval_steps 6 -> 8" in err
    assert read_rows(out / "runs.csv") == before  # untouched
    assert benchmark.main([*args, "--eval-steps", "8", "--rerun-changed"]) == 0
    assert "2 runs, 0 already finished" in capsys.readouterr().err
    after = read_rows(out / "runs.csv")
    assert [r["config_id"] for r in after] != [r["config_id"] for r in before]
    # a setting that reaches only the env (not a CLI budget) is part of the identity too
    assert benchmark.main([*args, "--eval-steps", "8", "--env-kwargs", *ENV[1:], "lr:0.002"]) == 2
    assert "env.lr 0.001 -> 0.002" in capsys.readouterr().err


def test_a_changed_agent_default_is_a_changed_run(monkeypatch):
    """A row is keyed by the defaults its agent took as well as by the options given, so a row made before a
    default changed (the search's confirmation rung was such a change) is refused, never reused as the new one's."""
    import inspect

    from agents.search import WholeRunSearch
    from benchmarking.sweep import PRESETS, config_id, settings_diff, sweep_from

    sweep = sweep_from(PRESETS["search"], {"tasks": ["shortcut_random"]}, {}, {})[0]
    search, keep_all = (next(s for s in sweep.specs() if s.name == name) for name in ("cmaes", "keep_all"))
    before = sweep.settings(search)
    assert before["agent_defaults"]["confirm_updates"] == 500 and "engine" not in before["agent_defaults"]
    assert "agent_defaults" not in sweep.settings(keep_all)  # a baseline's options are all in agent_options
    with_defaults = [n for n, p in inspect.signature(WholeRunSearch.__init__).parameters.items()
                     if p.default is not p.empty]
    defaults = list(WholeRunSearch.__init__.__defaults__)
    defaults[with_defaults.index("confirm_updates")] = 0
    monkeypatch.setattr(WholeRunSearch.__init__, "__defaults__", tuple(defaults))
    after = sweep.settings(search)
    assert settings_diff(before, after) == ["agent_defaults.confirm_updates 500 -> 0"]
    assert config_id(before) != config_id(after)


def _start(args, out, env=None):
    """benchmark.py in a new session (its own process group, as in a terminal); output in files next to ``out``,
    not pipes, so that a leftover worker cannot keep the test waiting."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    logs = [open(out.parent / f"{out.name}.{stream}", "w") for stream in ("out", "err")]
    process = subprocess.Popen([sys.executable, str(ROOT / "benchmark.py"), *args, "--out", str(out)], cwd=ROOT,
                               env=env, stdout=logs[0], stderr=logs[1], start_new_session=True)
    process.stderr_text = lambda: (out.parent / f"{out.name}.err").read_text()
    return process


def _wait_for_rows(out, n, process, timeout=900):  # a guard against a hang, not a speed check
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "runs.csv").is_file() and len(read_rows(out / "runs.csv")) >= n:
            return
        assert process.poll() is None, process.stderr_text()
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} rows after {timeout} s")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _still_running(pids: list[int], timeout: float) -> list[bytes]:
    """The command lines of ``pids`` still running (not exited, not zombies) after up to ``timeout`` seconds."""
    def running() -> list[bytes]:
        out = []
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(Path(f"/proc/{pid}/cmdline").read_bytes())
            except OSError:
                pass
        return out

    deadline = time.time() + timeout
    while running() and time.time() < deadline:
        time.sleep(0.2)
    return running()


# untrained rows finish at once; simclr_aug rows (10,000 updates) keep both workers busy for minutes
SLOW = [*REFERENCES_ONLY, "--seeds", "2", "--train-steps", "8", "--eval-steps", "10000", *ENV, "--workers", "2"]


def test_ctrl_c_is_fast_keeps_finished_runs_and_names_a_file_that_exists(tmp_path):
    out = tmp_path / "bench"
    process = _start(SLOW, out)
    _wait_for_rows(out, 2, process)
    time.sleep(1.0)  # both simclr_aug runs under way
    children = _children(process.pid)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
    process.wait(timeout=600)  # a guard against a hang; the runs under way would take minutes more
    err = process.stderr_text()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    rows = read_rows(out / "runs.csv")  # it stopped without waiting for the two simclr_aug runs under way
    assert [r["name"] for r in rows] == ["untrained", "untrained"] and all(r["status"] == "ok" for r in rows)
    assert "2 of 4 runs finished" in err and str(out / "runs.csv") in err
    assert not _still_running(children, timeout=10)  # workers stopped, not left running


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_no_worker_outlives_a_killed_parent(tmp_path):
    out = tmp_path / "bench"
    process = _start(SLOW, out)
    _wait_for_rows(out, 2, process)
    children = _children(process.pid)
    assert len(children) >= 2  # the workers (and the resource tracker)
    process.kill()
    process.wait()
    assert not _still_running(children, timeout=15)


REAPED_DRIVER = """
import os, subprocess, sys, time
os.environ["REAPER_TOKEN"] = "test-" + str(os.getpid())
subprocess.Popen([sys.executable, "-m", "benchmarking.reaper", str(os.getpid()), os.environ["REAPER_TOKEN"]],
                 start_new_session=True)
time.sleep(1.5)  # the reaper has looked at least once
orphan = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True)
print(orphan.stdout.strip(), flush=True)
os._exit(0)  # within a second of the orphan's start: the reaper's last look may well have missed it
"""


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_the_reaper_kills_an_orphan_started_after_its_last_look():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.run([sys.executable, "-c", REAPED_DRIVER], capture_output=True, text=True, env=env,
                            timeout=60, cwd=ROOT)
    orphan = int(driver.stdout.split()[-1])
    assert not _still_running([orphan], timeout=10)


def test_generated_tasks_are_benchmark_tasks_by_name_with_their_oracle():
    from benchmarking.cli import build_parser, make_sweep
    from benchmarking.sweep import check_sweep
    from corruption_env.task_generator import generate_task

    argv = ["--preset", "known_answer", "--tasks", f"gen01,{generate_task(2).name}"]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    check_sweep(sweep)
    assert {s.task for s in sweep.specs() if s.name == "oracle"} == {"gen01", generate_task(2).name}
    planted = sweep.env_config("gen01").dataset_kwargs
    assert planted == {**generate_task(1).overrides()["dataset_kwargs"], **planted} and "planted_places" in planted
    # the search's defaults were chosen on the development split: its preset checks them on the held-out one
    argv = ["--preset", "search"]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    check_sweep(sweep)
    generated = [t for t in sweep.tasks if t.startswith("gen")]
    assert generated and all(generate_task(int(t[3:])).split == "heldout" for t in generated)
    assert {s.task for s in sweep.specs() if s.name == "oracle"} == set(sweep.tasks)


def test_presets_share_fixed_rows_and_the_oracle_runs_only_on_known_answer_tasks():
    from benchmarking.cli import build_parser, make_sweep
    from benchmarking.sweep import check_sweep, config_id

    def fixed_rows(preset: str) -> dict[str, set[tuple[str, str]]]:
        argv = ["--preset", preset]
        sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
        check_sweep(sweep)
        specs = sweep.specs()
        assert {s.task for s in specs if s.name == "oracle"} == {t for t in sweep.tasks if t != "shapes"}
        assert {s.task for s in specs if s.kind == "agent"} == (set(sweep.tasks) if preset == "learning" else set())
        rows = {}
        for spec in specs:
            if spec.kind != "agent":
                settings = {k: v for k, v in sweep.settings(spec).items() if k not in ("run_id", "task")}
                rows.setdefault(config_id(settings), set()).add((spec.task, spec.name))
        return rows

    argv = ["--preset", "quick", "--tasks", "shapes,shortcut_fixed", "--rewards", "neg_loss,heldout_gain"]
    sweep, _ = make_sweep(build_parser().parse_args(argv), argv)
    sweep.task_algos = {"shortcut_fixed": ["ppo", "reinforce"], "shortcut_fixed:heldout_gain": ["reinforce"]}
    agents_of = {(s.task, s.reward, s.name) for s in sweep.specs() if s.kind == "agent"}
    assert agents_of == {("shapes", "neg_loss", "ppo"), ("shapes", "heldout_gain", "ppo"),  # task:reward beats task
                         ("shortcut_fixed", "neg_loss", "ppo"), ("shortcut_fixed", "neg_loss", "reinforce"),
                         ("shortcut_fixed", "heldout_gain", "reinforce")}
    # per_image: one seed of the rows beside its question, no baselines on the shared tasks (their per-image
    # task's are the same rows), only the untrained reference; --seeds gives every agent its count
    argv = ["--preset", "per_image"]
    specs = make_sweep(build_parser().parse_args(argv), argv)[0].specs()
    seeds = {}
    for s in specs:
        seeds.setdefault((s.task, s.kind, s.name), set()).add(s.seed)
    assert seeds[("shortcut_random", "agent", "cmaes")] == {0, 1, 2}
    assert seeds[("distractor_random", "agent", "ppo")] == seeds[("shortcut_random_shared", "agent", "cmaes")] == {0}
    assert not {s for s in specs if s.task.endswith("_shared") and s.kind == "baseline"}
    assert {s.name for s in specs if s.kind == "reference"} == {"untrained"}
    argv = ["--preset", "per_image", "--seeds", "2"]
    specs = make_sweep(build_parser().parse_args(argv), argv)[0].specs()
    assert {s.seed for s in specs if s.name == "ppo"} == {0, 1}
    learning, known_answer = fixed_rows("learning"), fixed_rows("known_answer")
    # a shared task's baselines are its per-image task's: the learning preset reuses the known-answer rows
    shared = set().union(*(learning[key] for key in set(learning) & set(known_answer)))
    assert {task for task, _ in shared} == {"shortcut_fixed_shared", "shortcut_random"}


def test_a_search_judged_by_whole_runs_gets_one_row_per_seed_with_its_runs_to_the_answer(tmp_path):
    """An agent that is not paid a per-step reward (``cmaes``) has one row per seed whatever the rewards, with its
    own training budget from the preset, and the summary counts its candidate runs to the known answer."""
    out = tmp_path / "bench"
    env = ["--env-kwargs", "image_size:16", "batch_size:4", "heldout_size:32", "decorruptor:'bicubic'",
           "action_mode:'shared_scores'", "keep_budget:0.75",
           "dataset_kwargs:{'train_size': 256, 'test_size': 64, 'shortcut': 'fixed', 'shortcut_bits': 4}"]
    args = ["--rewards", "neg_loss,prediction_gain", "--algos", "cmaes", "--baselines", "keep_all", "--seeds", "1",
            "--train-steps", "8", "--eval-steps", "4", "--hyperparams", "cmaes.run_updates:2", "cmaes.run_batch:4",
            "cmaes.confirm_updates:2", "cmaes.population:4", "cmaes.engine:'local'", "cmaes.verbose:0", "--out", str(out),
            "--workers", "1", *env]
    assert benchmark.main(args) == 0
    rows = read_rows(out / "runs.csv")
    searches = [r for r in rows if r["kind"] == "agent"]
    assert [(r["name"], r["reward"]) for r in searches] == [("cmaes", "")]  # one row, not one per reward
    runs = 4 + int(float(searches[0]["keeps_everything"]))  # keeping every cell counts as a run where it is the answer
    assert searches[0]["search_runs"] == str(runs) and searches[0]["status"] == "ok"
    summary = (out / "summary.md").read_text()
    assert "| cmaes (judged by whole runs) | 1 |" in summary
    assert f"not reached in {runs} runs" in summary or f" of {runs} runs (" in summary  # every run counted


@pytest.mark.parametrize("narrowing,dropped", [(["--tasks", "shortcut_random"], "ppo"), (["--algos", "cmaes"], "ppo"),
                                               (["--tasks", "shapes", "--algos", "cmaes"], "ppo")])
def test_a_preset_narrowed_by_tasks_or_algos_runs_and_says_what_it_dropped(narrowing, dropped):
    from benchmarking.cli import build_parser, make_sweep
    from benchmarking.sweep import check_sweep

    argv = ["--preset", "per_image", *narrowing]
    sweep, notes = make_sweep(build_parser().parse_args(argv), argv)
    check_sweep(sweep)  # what exited with "--hyperparams sets options of 'ppo' ..." before
    err = "\n".join(notes)
    assert f"the preset's options for {dropped} are dropped" in err and len(notes) <= 3, err
    from agents.search import DEFAULTS_BEFORE_FIDELITY

    assert dropped not in sweep.hyperparams and sweep.hyperparams["cmaes"] == {**DEFAULTS_BEFORE_FIDELITY,
                                                                               "engine": "local", "verbose": 0}
    agents = {(s.task, s.name) for s in sweep.specs() if s.kind == "agent"}
    assert agents and {name for _, name in agents} == {"cmaes"}
    if "shapes" in narrowing:  # the search sets the score actions and budget it needs on plain shapes, and says so
        assert "cmaes on shapes: a parametric corruptor scores cells" in err
        spec = next(s for s in sweep.specs() if s.kind == "agent")
        assert sweep.settings(spec)["env"]["action_mode"] == "scores"
