"""The search by successive halving (``--hyperparams rungs:2``): its rungs and its promotion rule are Ray Tune's
ASHA's, decision for decision; only candidates that reach the last rung can be its pick, however well another
read at the first; every SimCLR update its runs took is counted; interrupted and resumed it continues exactly; on
real runs the last rung is judged on every final seed, keeping every cell too. The same search on Ray Tune's
ASHAScheduler: tests/test_benchmark_ray.py."""
from __future__ import annotations

import numpy as np
import pytest

import agents.search as search_module
from agents.search import WholeRunSearch
from corruption_env import CorruptionEnv
from test_search import SEARCH, InterruptAfter
from test_whole_run import TINY

HALVING = {**SEARCH, "population": 6, "rungs": 2, "reduction_factor": 3}


def short_reads_it_backwards(settings, theta, promote):
    """A landscape on which the first rung reads the candidates backwards: a short run's judge is 10 - theta[0], a
    long run's +theta[0] (on another scale, as RankMe after 50 and after 200 updates are). A search that took the
    first rung's word, or compared judges across rungs, would pick the wrong end."""
    rungs, short = settings["rungs"], float(10 - theta[0])
    base = {"keep_fraction": 0.75, "keep_planted": None, "keep_other": None, "final_loss": 0.0, "cpu_seconds": 0.0,
            "diverged": False, "judge_at": {rungs[0]: short}}
    if not promote(0, {**base, "judge": short}):
        return {**base, "judge": short, "rung": 0, "updates_run": rungs[0]}
    return {**base, "judge": float(theta[0]), "rung": 1, "updates_run": rungs[1] * len(settings["final_seeds"])}


@pytest.fixture
def backwards(monkeypatch):
    monkeypatch.setattr(search_module, "judge_through_rungs", short_reads_it_backwards)
    monkeypatch.setattr(search_module, "judge_keep_all", lambda settings: {"judge": -np.inf, "cpu_seconds": 0.0})


@pytest.mark.parametrize("run_updates,factor,rungs", [(50, 4, 2), (25, 3, 3), (2, 2, 3), (10, 5, 2), (7, 3, 4)])
def test_the_rungs_and_the_promotion_rule_are_ashas(run_updates, factor, rungs):
    """The lengths are the milestones of Ray Tune's ASHA bracket with the same grace period, maximum and factor;
    fed the same judges in the same order, the search's rule and Ray Tune's bracket stop the same runs."""
    pytest.importorskip("ray", reason="the ray extra: pip install -e '.[ray]'")
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    search = WholeRunSearch(CorruptionEnv(TINY), seed=0, **{**SEARCH, "run_updates": run_updates,
                                                           "reduction_factor": factor, "rungs": rungs})
    asha = ASHAScheduler(time_attr="updates", metric="judge", mode="max", grace_period=search.rung_updates[0],
                         max_t=search.rung_updates[-1], reduction_factor=factor)
    bracket = asha._brackets[0]
    assert sorted(milestone for milestone, _ in bracket._rungs) == search.rung_updates
    judges = np.random.default_rng(run_updates).normal(size=40)
    judges[[5, 17]] = np.nan  # a run that diverged is recorded as NaN by both
    ours, theirs = [], []
    for i, judge in enumerate(judges):
        ours.append(search.promote(0, {"judge": float(judge)}))
        search.pending[i] = {"judge_at": {search.rung_updates[0]: float(judge)}}
        trial = Trial("__fake", stub=True, trial_id=f"t{i}")
        theirs.append(bracket.on_result(trial, search.rung_updates[0], float(judge)) == TrialScheduler.CONTINUE)
    assert ours == theirs and 0 < sum(ours) < len(ours)


def test_the_pick_comes_from_the_last_rung_and_every_update_is_counted(backwards):
    search = WholeRunSearch(CorruptionEnv(TINY), seed=0, **HALVING)
    told, tell = [], search.optimizer.tell
    search.optimizer.tell = lambda values: (told.append(list(values)), tell(values))
    search.learn(3 * 6 * 6)
    rungs = search.rung_updates
    assert rungs == [3, 9] and search.final_seeds == 2
    stopped = [r for r in search.history if r["rung"] == 0]
    reached = [r for r in search.history if r["rung"] == 1]
    assert stopped and reached and len(stopped) + len(reached) == len(search.history)
    assert search.num_timesteps == 3 * len(stopped) + 9 * 2 * len(reached)
    assert search.best["rung"] == 1 and search.best["judge"] == max(r["judge"] for r in reached)
    first_rung_pick = max(search.history, key=lambda r: r["judge_at"][3])  # what a one-length search would take
    assert first_rung_pick["theta"] != search.best["theta"]
    assert search.best["theta"][0] > first_rung_pick["theta"][0]  # the long run's judge decided
    assert search.known_answer() == {}  # no planted cells here
    for generation, values in enumerate(told):  # the optimiser ranks reaching the last rung above any first-rung judge
        rows = [r for r in search.history if r["generation"] == generation]
        went_on = [v for v, r in zip(values, rows) if r["rung"] == 1]
        assert not went_on or min(went_on) > max([v for v, r in zip(values, rows) if r["rung"] == 0], default=-np.inf)
    later = [r for r in search.history if r["generation"] > 0]  # past the first generation, ASHA stops most
    assert sum(r["rung"] == 1 for r in later) < len(later) / 2


def test_an_interrupted_halving_search_resumed_continues_exactly(backwards, tmp_path):
    budget = 3 * 6 * 8
    whole = WholeRunSearch(CorruptionEnv(TINY), seed=2, **HALVING).learn(budget)
    interrupted = WholeRunSearch(CorruptionEnv(TINY), seed=2, **HALVING)
    with pytest.raises(KeyboardInterrupt):
        interrupted.learn(budget, callback=[InterruptAfter(9)])  # in the second generation
    interrupted.save(tmp_path / "search.pkl")
    resumed = WholeRunSearch.load(tmp_path / "search.pkl", env=CorruptionEnv(TINY))
    assert resumed.rungs == 2 and resumed.reduction_factor == 3 and resumed.final_seeds == 2
    resumed.learn(budget - resumed.num_timesteps)
    keys = ("theta", "judge", "rung", "updates_run")
    assert [[r[k] for k in keys] for r in resumed.history] == [[r[k] for k in keys] for r in whole.history]
    assert resumed.num_timesteps == whole.num_timesteps and resumed.best["theta"] == whole.best["theta"]


def test_on_real_runs_the_last_rung_is_judged_on_every_final_seed():
    """The answer judge (exact: read from the masks) on a known-answer task: a run stopped at the first rung took
    its length; one that went on is judged on two seeds, its judge their mean; keeping every cell is judged at the
    last rung's length on the same seeds."""
    env = CorruptionEnv(TINY)
    search = WholeRunSearch(env, seed=0, run_updates=2, run_batch=8, population=6, judge="planted_dropped",
                            rungs=2, reduction_factor=2, confirm_updates=3, confirm_judge="planted_dropped",
                            engine="local", verbose=0).learn(2 * 6 * 3)
    for row in search.history:
        assert row["judge_at"][2] == pytest.approx(1 - row["keep_planted"] if row["rung"] == 0 else row["judge_at"][2])
        if row["rung"] == 1:
            assert len(row["seed_judges"]) == 2 and row["judge"] == pytest.approx(np.mean(row["seed_judges"]))
            assert row["updates_run"] == 2 * 4
        else:
            assert row["updates_run"] == 2 and "seed_judges" not in row
    assert len(search.keep_all["seed_judges"]) == 2 and search.keep_all["keep_fraction"] == 1.0
    assert search.settings["final_seeds"][0] == search.settings["seed"] != search.settings["final_seeds"][1]
    # the pick and its runner-up drop planted cells, keeping everything none: they go to the confirmation, real
    # paired runs on two seeds the search did not use, and win there as the masks say
    runs = search.confirmation["seeds"]
    assert len(runs) == 2 and not {r["seed"] for r in runs} & {*search.settings["final_seeds"]}
    for r in runs:
        assert r["keep_all"]["keep_fraction"] == 1.0 and r["keep_all"]["judge"] == 0.0
        assert len(r["finalists"]) == 2  # the default: the pick and its runner-up, both above keeping everything
        for finalist in r["finalists"]:
            assert finalist["judge"] == pytest.approx(1 - finalist["keep_planted"]) and finalist["judge"] > 0
    assert search.confirmed and not search.keeps_everything


def fake_confirmation(margin, calls, interrupt_at=None):
    """The confirmation rung's paired runs, faked: the pick's judge is keeping everything's + ``margin``."""
    def judge_confirmation(settings, thetas, seed):
        calls.append((settings["updates"], settings["judge"], seed))
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return {"seed": seed, "finalists": [{"judge": 1.0 + margin, "cpu_seconds": 60.0} for _ in thetas],
                "keep_all": {"judge": 1.0, "cpu_seconds": 60.0}}
    return judge_confirmation


@pytest.mark.parametrize("margin", [-0.5, 0.5])
def test_the_pick_is_kept_only_if_it_wins_its_confirmation(monkeypatch, margin):
    """The pick out-judged keeping every cell in the search; at the confirmation rung (runs of ``confirm_updates``
    by ``confirm_judge`` on seeds the search did not use) it must win again, or the answer is to keep every cell."""
    calls = []
    monkeypatch.setattr(search_module, "judge_confirmation", fake_confirmation(margin, calls))
    monkeypatch.setattr(search_module, "judge_keep_all", lambda settings: {"judge": -1.0, "cpu_seconds": 0.0})
    search = WholeRunSearch(CorruptionEnv(TINY), seed=4, **{**SEARCH, "judge": "planted_dropped", "confirm_updates": 40,
                                                           "confirm_judge": "lidar", "confirm_seeds": 3})
    search.learn(SEARCH["population"] * SEARCH["run_updates"])
    assert [c[:2] for c in calls] == [(40, "lidar")] * 3 and len({c[2] for c in calls}) == 3
    assert not {c[2] for c in calls} & {search.settings["seed"]}
    assert search.confirmed is (margin > 0) and search.keeps_everything is (margin < 0)
    assert search.judges()["confirmation_margin"] == pytest.approx(margin)
    assert search.known_answer()["final_keep_planted"] == (1.0 if margin < 0 else search.best["keep_planted"])
    assert search.known_answer()["search_cpu_minutes"] >= 6.0  # its runs' CPU counts in the search's
    assert ("does not beat" if margin < 0 else "beats") in search.confirmed_line()


def test_no_confirmation_where_keeping_everything_already_won(monkeypatch):
    calls = []
    monkeypatch.setattr(search_module, "judge_confirmation", fake_confirmation(0.5, calls))
    monkeypatch.setattr(search_module, "judge_keep_all", lambda settings: {"judge": 2.0, "cpu_seconds": 0.0})
    search = WholeRunSearch(CorruptionEnv(TINY), seed=0, **{**SEARCH, "judge": "planted_dropped"})
    search.learn(SEARCH["population"] * SEARCH["run_updates"])
    assert calls == [] and search.confirmed is None and search.keeps_everything


def test_an_interrupted_confirmation_resumed_runs_only_the_seeds_left(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(search_module, "judge_confirmation", fake_confirmation(0.5, calls, interrupt_at=2))
    monkeypatch.setattr(search_module, "judge_keep_all", lambda settings: {"judge": -1.0, "cpu_seconds": 0.0})
    env = CorruptionEnv(TINY)
    search = WholeRunSearch(env, seed=0, **{**SEARCH, "judge": "planted_dropped", "confirm_seeds": 3})
    with pytest.raises(KeyboardInterrupt):
        search.learn(SEARCH["population"] * SEARCH["run_updates"])
    search.save(tmp_path / "search.pkl")
    resumed = WholeRunSearch.load(tmp_path / "search.pkl", env=env)
    assert len(resumed.confirmation["seeds"]) == 1 and resumed.confirmed is None
    resumed.confirm()
    assert len(calls) == 4 and calls[2] == calls[1]  # the interrupted seed once more, then the last
    assert [r["seed"] for r in resumed.confirmation["seeds"]] == [calls[0][2], calls[2][2], calls[3][2]]
    assert resumed.confirmed


def test_with_two_finalists_the_runner_up_that_wins_the_confirmation_is_the_answer(monkeypatch, tmp_path):
    """The first stage's pick and its runner-up both out-judge keeping every cell; at the confirmation the runner-up
    wins and the pick loses: the search answers with the runner-up (its theta, its planted keep, its parameters in
    the records), where one finalist would have kept every cell. A search saved before finalists loads as one."""
    def confirmation(settings, thetas, seed):  # the judge at the confirmation: the second parameter, not the first
        return {"seed": seed, "finalists": [{"judge": float(t[1]), "cpu_seconds": 60.0} for t in thetas],
                "keep_all": {"judge": 0.0, "cpu_seconds": 60.0}}
    monkeypatch.setattr(search_module, "judge_confirmation", confirmation)
    monkeypatch.setattr(search_module, "judge_keep_all", lambda settings: {"judge": -1.0, "cpu_seconds": 0.0})
    env = CorruptionEnv(TINY)
    searches = {}
    for finalists in (1, 2):
        search = WholeRunSearch(env, seed=0, **{**SEARCH, "judge": "planted_dropped", "confirm_finalists": finalists})
        search.learn(SEARCH["population"] * SEARCH["run_updates"])
        theta = lambda row: np.asarray(row["theta"])  # noqa: E731
        first, second = sorted(search.history, key=lambda r: -r["judge"])[:2]
        search.best, search.confirmation = first, None  # the pick: the first stage's best
        first["theta"][1], second["theta"][1] = -1.0, 1.0  # the pick loses the confirmation, its runner-up wins
        search.confirm()
        searches[finalists] = search
    one, two = searches[1], searches[2]
    assert one.confirmed is False and one.keeps_everything
    assert two.confirmed and not two.keeps_everything and two.confirmation_margins() == [-1.0, 1.0]
    assert np.array_equal(two.theta(), theta(second)) and two.judges()["confirmed_finalist"] == 2.0
    assert two.known_answer()["final_keep_planted"] == second["keep_planted"]
    assert two.judges()["theta/" + two.corruptor.parameter_names()[1]] == 1.0
    assert "the best of 2 finalists (the first stage's #2) beats keeping every cell by +1" in two.confirmed_line()
    # a search saved before finalists (its confirmation held one theta and a "finalist" per seed) loads as one
    one.save(tmp_path / "search.pkl")
    import pickle
    state = pickle.loads((tmp_path / "search.pkl").read_bytes())
    state["confirmation"] = {"theta": state["confirmation"]["thetas"][0], "seeds": [
        {"seed": r["seed"], "finalist": r["finalists"][0], "keep_all": r["keep_all"]}
        for r in state["confirmation"]["seeds"]]}
    del state["options"]["confirm_finalists"]
    (tmp_path / "old.pkl").write_bytes(pickle.dumps(state))
    old = WholeRunSearch.load(tmp_path / "old.pkl", env=env)
    assert old.confirm_finalists == 1 and old.confirmation == one.confirmation and old.keeps_everything


@pytest.mark.parametrize("options,message", [({"rungs": 0}, "rungs must be an integer >= 1"),
                                             ({"reduction_factor": 1}, "reduction_factor must be an integer >= 2"),
                                             ({"final_seeds": 0}, "final_seeds must be an integer >= 1"),
                                             ({"rungs": 2.5}, "rungs must be an integer >= 1"),
                                             ({"confirm_updates": -1}, "confirm_updates must be an integer >= 0"),
                                             ({"confirm_seeds": 0}, "confirm_seeds must be an integer >= 1"),
                                             ({"confirm_finalists": 0}, "confirm_finalists must be an integer >= 1"),
                                             ({"confirm_judge": "nope"}, "nope")])
def test_bad_halving_options_are_clear(options, message):
    with pytest.raises(ValueError, match=message):
        WholeRunSearch(CorruptionEnv(TINY), seed=0, **{**SEARCH, **options})
