"""The cell scorer (``corruptor:cell_scorer``): the 4-weight rule at the default budget and keeping everything are
points of it; its keep level spans a quarter of the cells to all of them; its temperature draws masks that depend on
the batch alone (common random numbers) and spread the kept cells; its net has 100 to 1000 parameters; it refuses a
keep budget in one line; a search over it runs from the command line and records every parameter by name."""
from __future__ import annotations

import json

import numpy as np
import pytest

import train_agent
from corruption_env.whole_run import make_corruptor
from corruption_env import CorruptionEnv
from test_search import TINY_ARGS
from test_whole_run import TINY

CONFIG = TINY.replace(action_mode="scores", keep_budget=None,
                      dataset_kwargs={"train_size": 256, "test_size": 64, "shortcut": "random", "shortcut_bits": 4})


@pytest.fixture(scope="module")
def batch():
    env = CorruptionEnv(CONFIG.replace(batch_size=16))
    return env.reset(seed=0)[0]


def kept(action: np.ndarray, grid: int = 4) -> np.ndarray:
    return action.reshape(-1, grid * grid) > 0


def test_the_cell_rule_at_the_default_budget_is_a_point_of_it(batch):
    scorer = make_corruptor("cell_scorer", CONFIG)
    rule = make_corruptor("cell_rule", CONFIG.replace(keep_budget=0.75))
    weights = np.array([0.5, -1.0, 0.3, 0.2], dtype=np.float32)
    theta = np.zeros(scorer.dim, dtype=np.float32)
    theta[2:6] = weights
    scores = rule.act(weights, batch).reshape(-1, 16)
    top = np.zeros_like(scores, dtype=bool)
    np.put_along_axis(top, np.argsort(-scores, axis=1)[:, :12], True, axis=1)  # what the env keeps at budget 0.75
    assert (kept(scorer.act(theta, batch)) == top).all()


def test_the_keep_level_spans_a_quarter_to_every_cell(batch):
    scorer = make_corruptor("cell_scorer", CONFIG)
    theta = np.random.default_rng(0).normal(size=scorer.dim).astype(np.float32)
    theta[1] = 0.0
    fractions = []
    for level in (-5.0, -2.0, -1.0, 0.0, 0.5, 1.0, 3.0):
        theta[0] = level
        fractions.append(float(kept(scorer.act(theta, batch)).mean()))
    assert fractions == [0.25, 0.25, 0.5, 0.75, 0.875, 1.0, 1.0]


def test_the_temperature_draws_masks_from_the_batch_alone(batch):
    scorer = make_corruptor("cell_scorer", CONFIG)
    theta = np.random.default_rng(1).normal(size=scorer.dim).astype(np.float32)
    theta[0] = -1.0  # half the cells
    theta[1] = 0.0
    cold = kept(scorer.act(theta, batch))
    theta[1] = 50.0
    hot = kept(scorer.act(theta, batch))
    assert (hot == kept(scorer.act(theta, batch))).all()  # the same batch: the same draw
    assert (hot.sum(axis=1) == 8).all() and (hot != cold).any()
    other = {**batch, "images": batch["images"][::-1].copy()}
    assert (kept(scorer.act(theta, other)) != hot[::-1]).any()  # another batch: another draw
    assert abs(hot.mean(axis=0) - 0.5).max() < abs(cold.mean(axis=0) - 0.5).max() + 1e-9  # spread over the cells


def test_its_net_is_small_and_every_parameter_is_named():
    for config in (CONFIG, CONFIG.replace(task="sr")):
        scorer = make_corruptor("cell_scorer", config)
        names = scorer.parameter_names()
        assert len(names) == len(set(names)) == scorer.dim and 100 <= scorer.dim - 6 <= 1000
        assert names[:6] == ["keep_level", "temperature", *scorer.FEATURES]


def test_it_refuses_a_keep_budget_and_a_shared_mode():
    with pytest.raises(ValueError, match=r"run it without a keep budget \(--env-kwargs keep_budget:None\)"):
        make_corruptor("cell_scorer", CONFIG.replace(keep_budget=0.75))
    with pytest.raises(ValueError, match="needs action_mode 'scores'"):
        make_corruptor("cell_scorer", CONFIG.replace(action_mode="shared_scores"))


def test_a_search_over_it_runs_from_the_command_line(tmp_path, capsys):
    env_args = [a for a in TINY_ARGS if not a.startswith(("action_mode", "keep_budget", "dataset_kwargs"))]
    code = train_agent.main(["--algo", "cmaes", "--env-kwargs", *env_args, "action_mode:'scores'", "keep_budget:None",
                             "dataset_kwargs:{'train_size': 256, 'test_size': 64, 'shortcut': 'random', 'shortcut_bits': 4}",
                             "--hyperparams", "corruptor:'cell_scorer'", "optimizer:'sep_cmaes'", "population:6",
                             "run_updates:2", "rungs:1", "confirm_updates:2", "run_batch:8", "engine:'local'", "verbose:0",
                             "--total-timesteps", "24", "--eval-steps", "0", "--log-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    from agents.search import WholeRunSearch

    run = next(tmp_path.iterdir())
    search = WholeRunSearch.load(run / "agent.zip", env=CorruptionEnv(CONFIG), engine="local")
    judges = search.judges()
    assert len(search.history) == 12 and json.dumps(judges)
    assert [k for k in judges if k.startswith("theta/")] == [f"theta/{n}" for n in search.corruptor.parameter_names()]


@pytest.mark.parametrize("first_stage_keep", [0.75, 0.5, None])
def test_a_search_holds_its_keep_level_through_the_first_stage_and_confirms_there(first_stage_keep):
    """Short runs' judges favour keeping less: by default the first stage judges every candidate at one kept fraction
    (the optimiser's own samples left as they were), and the finalists are confirmed at it; None searches it."""
    from agents import make_agent

    search = make_agent("cmaes", CorruptionEnv(CONFIG), seed=0, corruptor="cell_scorer", engine="local", verbose=0,
                        population=4, run_updates=2, rungs=1, run_batch=8, confirm_updates=2, confirm_seeds=1,
                        first_stage_keep=first_stage_keep)
    search.learn(8)
    kept_fractions = {row["keep_fraction"] for row in search.history}
    levels = {row["theta"][0] for row in search.history}
    if first_stage_keep is None:
        assert len(levels) == 4 and len(kept_fractions) > 1  # searched with the rest
    else:
        assert kept_fractions == {first_stage_keep} and len(levels) == 1
        assert len({float(t[0]) for t in search.optimizer.asked}) == 4  # the optimiser's samples untouched
        for theta in (search.confirmation or {"thetas": []})["thetas"]:
            assert search.corruptor.with_kept_fraction(theta, first_stage_keep).tolist() == theta
    assert search._options()["first_stage_keep"] == first_stage_keep


def test_a_held_keep_level_out_of_its_range_is_a_clear_error():
    from agents import make_agent

    for bad in (0.1, 1.5, "half", True):
        with pytest.raises(ValueError, match="first_stage_keep|keeps 0.25 to 1.0"):
            make_agent("cmaes", CorruptionEnv(CONFIG), corruptor="cell_scorer", engine="local", first_stage_keep=bad)
