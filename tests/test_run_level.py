"""PPO over whole runs (``--algo run_ppo``): it trains on the run-level env, counts its budget in SimCLR updates,
saves and reloads, acts with its mean corruptor, and reports the runs to the known answer; told the answer as its
judge, it learns to drop the planted row."""
from __future__ import annotations

import numpy as np

from agents import load_agent, make_agent
from corruption_env import CorruptionEnv
from test_whole_run import TINY

OPTIONS = dict(run_updates=2, run_batch=4, runs_per_episode=4, n_steps=4)


def test_run_level_ppo_trains_saves_reloads_and_acts(tmp_path):
    env = CorruptionEnv(TINY)
    agent = make_agent("run_ppo", env, seed=0, **OPTIONS).learn(2 * 8)
    assert agent.num_timesteps == 16 and len(agent.runs) == 8
    obs, _ = env.reset(seed=0)
    action = agent.predict(obs)[0]
    assert action.shape == (16,)
    agent.save(tmp_path / "agent.zip")
    again = load_agent("run_ppo", str(tmp_path / "agent.zip"), env=env)
    np.testing.assert_array_equal(again.predict(obs)[0], action)
    assert again.num_timesteps == 16 and set(agent.known_answer()) >= {"answer_runs", "final_keep_planted"}


def test_told_the_answer_run_level_ppo_learns_to_drop_the_planted_row():
    """Judged by the answer (the share of planted cells the run's masks dropped), PPO over runs gets there: 120-232
    runs on seeds 0-2 (measured); its mean corruptor then drops the whole planted row."""
    env = CorruptionEnv(TINY)
    agent = make_agent("run_ppo", env, seed=0, judge="planted_dropped", **{**OPTIONS, "runs_per_episode": 8,
                                                                           "n_steps": 8}).learn(2 * 8 * 40)
    obs, _ = env.reset(seed=0)
    _, _, _, _, info = env.step(agent.predict(obs)[0])
    assert info["keep_planted"] == 0.0 and agent.known_answer()["answer_runs"] is not None
