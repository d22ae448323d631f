"""benchmark.py --engine ray on a local Ray (one session for the module, 2 CPUs): the same rows as the
local engine, a sweep killed midway resumes without redoing finished trials, failures are retried
and recorded, a search row runs; and train_agent.py's search with its candidates as Ray Tune trials."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import benchmark
import train_agent
from benchmarking.results import MACHINE_COLUMNS, read_rows

ray = pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")

from test_benchmark import ENV, REFERENCES_ONLY, _children, _start, _still_running, _wait_for_rows  # noqa: E402

BATCH8 = [*ENV[:2], "batch_size:8", *ENV[3:]]

# one local Ray at a time: under pytest-xdist these tests share a worker with the other Ray tests
pytestmark = pytest.mark.xdist_group("ray")


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return children + [d for child in children for d in _descendants(child)]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_nothing_of_a_local_ray_outlives_a_killed_driver(tmp_path):
    """First in the module: it starts a Ray of its own (the shared one does not exist yet)."""
    out = tmp_path / "bench"
    sweep = [*REFERENCES_ONLY, "--seeds", "2", "--train-steps", "8", "--eval-steps", "3000", *BATCH8, "--engine", "ray"]
    process = _start(sweep, out)
    _wait_for_rows(out, 2, process)
    family = _descendants(process.pid)  # raylet, GCS, agents, trial workers, the reaper
    process.kill()
    process.wait()
    assert len(family) >= 4 and not _still_running(family, timeout=20)


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for every test here; benchmark.py in this process reuses it, subprocesses join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # the in-process local run sets one thread


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def test_ray_makes_the_same_rows_as_the_local_engine(tmp_path, ray_address, torch_threads):
    sweep = ["--rewards", "neg_loss", "--algos", "reinforce", "--baselines", "", "--seeds", "1", "--train-steps", "8",
             "--eval-steps", "6", "--hyperparams", "reinforce.n_steps:4", "--cpus-per-trial", "1", *BATCH8]
    assert benchmark.main([*sweep, "--out", str(tmp_path / "local"), "--workers", "1"]) == 0
    assert benchmark.main([*sweep, "--out", str(tmp_path / "ray"), "--engine", "ray"]) == 0
    local, on_ray = read_rows(tmp_path / "local" / "runs.csv"), read_rows(tmp_path / "ray" / "runs.csv")
    assert [r["run_id"] for r in on_ray] == [r["run_id"] for r in local] and len(local) == 3
    for a, b in zip(local, on_ray):
        assert a.keys() == b.keys()
        differ = {k: (a[k], b[k]) for k in a if k not in MACHINE_COLUMNS and not _same(a[k], b[k])}
        assert not differ, (a["run_id"], differ)
    for name in ("curves.json", "summary.md", "accuracy.png", "learning_curves.png"):
        assert (tmp_path / "ray" / name).is_file(), name
    assert list((tmp_path / "ray").glob("tune_*/experiment_state-*.json"))  # --out is Tune's storage path


def test_a_sweep_killed_midway_resumes_without_redoing_finished_trials(tmp_path, ray_address, capsys):
    out = tmp_path / "bench"
    sweep = [*REFERENCES_ONLY, "--seeds", "2", "--train-steps", "8", "--eval-steps", "300", *BATCH8, "--engine", "ray"]
    process = _start(sweep, out, env={"RAY_ADDRESS": ray_address})
    _wait_for_rows(out, 2, process)  # the untrained rows; simclr_aug (300 updates) is under way
    process.kill()
    process.wait()
    finished = read_rows(out / "runs.csv")
    assert len(finished) < 4
    assert benchmark.main([*sweep, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"4 runs, {len(finished)} already finished" in err and "resuming the Ray Tune experiment" in err
    rows = {r["run_id"]: r for r in read_rows(out / "runs.csv")}
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows.values())
    for row in finished:  # not run again: the same row, finished at the same time
        final = rows[row["run_id"]]  # (columns that later rows added are empty in it)
        assert {k: final[k] for k in row} == row and all(final[k] is None for k in set(final) - set(row))


def test_a_failing_trial_is_retried_then_recorded_with_its_error(tmp_path, ray_address, capsys):
    out = tmp_path / "bench"
    # an option the agent accepts, with a value that fails when the run builds it
    assert benchmark.main(["--rewards", "neg_loss", "--algos", "reinforce", "--baselines", "", "--seeds", "1",
                           "--train-steps", "8", "--eval-steps", "6", "--hyperparams", "reinforce.learning_rate:-1.0",
                           *BATCH8, "--engine", "ray", "--max-failures", "1", "--out", str(out)]) == 1
    rows = {r["name"]: r for r in read_rows(out / "runs.csv")}
    assert rows["reinforce"]["status"] == "failed" and "learning rate" in rows["reinforce"]["error"].lower()
    assert rows["untrained"]["status"] == rows["simclr_aug"]["status"] == "ok"
    assert "1 run(s) failed" in capsys.readouterr().err
    trial = next(p for p in out.glob("tune_*/*") if p.is_dir() and (p / "error.txt").is_file())
    assert (trial / "error.txt").read_text().count("RuntimeError") >= 1  # Tune saw it fail (and retried it)


def test_a_search_row_runs_on_the_ray_engine(tmp_path, ray_address, torch_threads):
    """A search over whole runs as a row of a Ray sweep: the row is the trial, its candidates run inside it."""
    env = ["--env-kwargs", "image_size:16", "batch_size:4", "heldout_size:16", "decorruptor:'bicubic'",
           "dataset_kwargs:{'train_size': 256, 'test_size': 64, 'shortcut': 'fixed', 'shortcut_bits': 4}"]
    out = tmp_path / "bench"
    assert benchmark.main(["--algos", "cmaes", "--rewards", "", "--baselines", "", "--seeds", "1", "--train-steps", "6",
                           "--eval-steps", "3", "--hyperparams", "cmaes.population:4", "cmaes.run_updates:2",
                           "cmaes.run_batch:4", "cmaes.confirm_updates:2", "cmaes.verbose:0", *env, "--engine", "ray", "--out", str(out)]) == 0
    rows = {r["name"]: r for r in read_rows(out / "runs.csv")}
    assert rows["cmaes"]["status"] == "ok" and rows["cmaes"]["search_runs"] == 4


def test_the_search_runs_on_ray_from_the_command_line_with_the_in_process_results(tmp_path, ray_address, torch_threads):
    """Its candidates as Ray Tune trials give the in-process engine's results; the CLI's callbacks (progress bar,
    TensorBoard, checkpoints) stay in the driver: Tune pickles only the searcher's token (they once made
    ``tune.Tuner`` fail to pickle a lock)."""
    from agents.search import WholeRunSearch
    from corruption_env import CorruptionEnv
    from test_search import SEARCH, TINY_ARGS
    from test_whole_run import TINY

    runs = tmp_path / "runs"  # one length: ASHA with 2 trials at once decides in the order they report
    assert train_agent.main(["--algo", "cmaes", "--env-kwargs", *TINY_ARGS, "--log-dir", str(runs), "--eval-steps", "0",
                             "--total-timesteps", "12", "--hyperparams", "population:4", "run_updates:3", "rungs:1",
                             "confirm_updates:2", "run_batch:4", "workers:2", "verbose:0"]) == 0
    run = next(runs.iterdir())
    search = WholeRunSearch.load(run / "agent.zip", env=CorruptionEnv(TINY), engine="local")
    local = WholeRunSearch(CorruptionEnv(TINY), seed=0, **SEARCH).learn(12)
    assert [r["judge"] for r in search.history] == [r["judge"] for r in local.history] and len(local.history) == 4
    assert search.best["theta"] == local.best["theta"] and search.best["judge"] == local.best["judge"]
    assert list((run / "tb").rglob("events.out.tfevents.*"))


def test_a_search_on_ray_leaves_no_temporary_experiment_and_prints_no_trial_count(tmp_path, ray_address, torch_threads,
                                                                                 monkeypatch, capfd):
    """Without ``storage`` the search's Ray Tune experiment goes to a temporary folder, removed once the search is
    done (Tune's console, which counted an open-ended search as 9223372036854775807 trials, stays silent); with
    ``storage`` the experiment is kept there."""
    import tempfile

    from agents.search import WholeRunSearch
    from corruption_env import CorruptionEnv
    from test_search import SEARCH
    from test_whole_run import TINY

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    options = {**SEARCH, "engine": "ray", "workers": 2, "keep_all_candidate": False}
    search = WholeRunSearch(CorruptionEnv(TINY), seed=0, **options).learn(12)
    assert len(search.history) == 4
    assert not list(temporary.glob("cmaes_*"))
    out, err = capfd.readouterr()
    assert "Number of trials" not in out + err and "9223372036854775807" not in out + err
    storage = tmp_path / "experiments"
    WholeRunSearch(CorruptionEnv(TINY), seed=0, storage=str(storage), **options).learn(12)
    assert list(storage.glob("search_*/tuner.pkl"))


def test_successive_halving_on_ray_tunes_asha_gives_the_in_process_search(ray_address, torch_threads):
    """Ray Tune's ASHAScheduler stops the trials the in-process rule stops (one trial at a time: the same order),
    and the trials it stops reach the searcher as runs stopped at their rung, never as the pick."""
    from agents.search import WholeRunSearch
    from corruption_env import CorruptionEnv
    from test_whole_run import TINY

    options = dict(seed=0, run_updates=2, run_batch=8, population=6, judge="planted_dropped", rungs=2,
                   reduction_factor=2, confirm_updates=2, verbose=0)
    on_ray = WholeRunSearch(CorruptionEnv(TINY), engine="ray", workers=1, **options).learn(2 * 6 * 3)
    local = WholeRunSearch(CorruptionEnv(TINY), engine="local", **options).learn(2 * 6 * 3)
    keys = ("theta", "judge", "rung", "updates_run", "keep_planted")
    assert [[r[k] for k in keys] for r in on_ray.history] == [[r[k] for k in keys] for r in local.history]
    assert {r["rung"] for r in local.history} == {0, 1} and on_ray.best["rung"] == 1
    assert on_ray.num_timesteps == local.num_timesteps and on_ray.best["theta"] == local.best["theta"]
