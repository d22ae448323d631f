"""The population search (``--algo pbt``): a member restored from its checkpoint continues exactly, bad settings
fail before anything is built, and the search runs end to end on Ray Tune."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from corruption_env import CorruptionEnv, EnvConfig
from agents.population import Member, PopulationSearch

TINY = dict(batch_size=8, episode_length=8, decorruptor="bicubic", action_mode="shared_scores", keep_budget=0.75,
            dataset_kwargs={"shortcut": "fixed"}, heldout_size=64)


def tiny_config(**overrides) -> EnvConfig:
    return EnvConfig.preset("cpu").replace(**{**TINY, **overrides})


def parameters(member: Member) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in member.agent.policy.parameters()])


def test_a_restored_member_gives_the_same_next_steps_as_the_uninterrupted_run():
    cfg = tiny_config()
    member = Member(cfg, 0.3, seed=0, n_steps=4)
    member.train_segment()
    state = member.state_dict()
    uninterrupted = member.train_segment()

    restored = Member(cfg, 0.9, seed=0, n_steps=4)  # another lambda and fresh RNGs: the checkpoint sets both
    restored.load_state_dict(copy.deepcopy(state))
    resumed = restored.train_segment()
    assert restored.lambda_ == 0.3
    assert resumed["judge"] == uninterrupted["judge"]
    assert resumed["keep_planted"] == uninterrupted["keep_planted"]
    assert torch.equal(parameters(restored), parameters(member))


def test_a_clone_draws_fresh_actions_from_the_same_state():
    cfg = tiny_config()
    member = Member(cfg, 1.0, seed=0, n_steps=4)
    member.train_segment()
    state = member.state_dict()
    member.train_segment()
    clone = Member(cfg, 1.0, seed=0, n_steps=4)
    clone.load_state_dict(copy.deepcopy(state), fresh_actions=12345)
    clone.train_segment()
    assert not torch.equal(parameters(clone), parameters(member))


def test_the_direction_knob_flips_the_inner_reward():
    rewards = {}
    for lam in (1.0, 0.0):
        env = CorruptionEnv(tiny_config(reward="reference_learner_rise", reward_kwargs={"adversarial_weight": lam}))
        env.reset(seed=0)
        scores = np.linspace(-1, 1, env.action_space.shape[0], dtype=np.float32)  # drops the same cells in both
        rewards[lam] = [env.step(scores)[1] for _ in range(3)]
    assert any(r != 0 for r in rewards[1.0])
    assert rewards[0.0] == [-r for r in rewards[1.0]]


@pytest.mark.parametrize("options, message", [
    (dict(population=1), "population must be >= 2"),
    (dict(member_n_steps=3), "not a multiple of n_steps 3"),
    (dict(judge="loss_after"), "judge must be a periodic statistic"),
    (dict(episodes_per_segment=0), "episodes_per_segment must be >= 1"),
])
def test_bad_search_settings_fail_before_anything_is_built(options, message):
    env = CorruptionEnv(tiny_config())
    with pytest.raises(ValueError, match=message):
        PopulationSearch(env, **options)


def test_a_bad_direction_knob_is_refused():
    with pytest.raises(ValueError, match="adversarial_weight must be in"):
        tiny_config(reward="reference_learner_rise", reward_kwargs={"adversarial_weight": 1.5}).validate()


@pytest.mark.xdist_group("ray")  # one local Ray at a time (see test_benchmark_ray.py)
def test_the_search_runs_on_ray_tune_and_acts_with_its_best_member(tmp_path):
    pytest.importorskip("ray")
    env = CorruptionEnv(tiny_config())
    search = PopulationSearch(env, population=2, member_n_steps=4, storage=str(tmp_path / "tune"), verbose=0)
    search.learn(2 * 2 * 8)  # two segments of the whole population
    assert search.num_timesteps == 32
    segments = sorted({int(r["segment"]) for r in search.history})
    assert segments == [1, 2] and len(search.history) == 4
    assert search.best["judge"] == max(r["judge"] for r in search.history if int(r["segment"]) == 2)
    assert [line.split(":")[0] for line in search.summary().splitlines()] == ["segment 1", "segment 2", "best"]
    obs, _ = env.reset(seed=0)
    action, _ = search.predict(obs, deterministic=True)
    assert env.action_space.contains(action.astype(env.action_space.dtype))
    search.save(tmp_path / "agent.zip")
    loaded = PopulationSearch.load(tmp_path / "agent.zip", env=env, tensorboard_log=str(tmp_path / "tb"))
    assert loaded.best == search.best and loaded.tensorboard_log == str(tmp_path / "tb")  # --resume logs on
    with pytest.raises(ValueError, match="pbt needs an env"):
        PopulationSearch.load(tmp_path / "agent.zip")
    assert (loaded.predict(obs, deterministic=True)[0] == action).all()
