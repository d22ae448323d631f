"""Whole runs: a candidate's judge comes from one whole SimCLR run on the run seed; candidates on one seed see the
same batches, codes and augmentations (only their masks differ); the run-level env is a Gymnasium env."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.whole_run import ScoreMap, WholeRun, WholeRunEnv, make_corruptor

TINY = EnvConfig(image_size=16, scale=2, batch_size=4, mask_grid=4, decorruptor="bicubic", heldout_size=32,
                 dataset_kwargs={"train_size": 256, "test_size": 64, "shortcut": "fixed", "shortcut_bits": 4},
                 action_mode="shared_scores", keep_budget=0.75)


def test_the_run_level_env_passes_the_env_checker():
    env = WholeRunEnv(TINY, updates=2, runs_per_episode=2)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(reward) and reward == info["judge"] and not terminated and not truncated
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert truncated and obs[0] == 1.0


def test_candidates_on_one_seed_see_the_same_batches_and_differ_by_their_masks(monkeypatch):
    runs = WholeRun(TINY, updates=3)
    seen: list[tuple[str, str, bytes]] = []
    step = CorruptionEnv.step

    def recording_step(self, action):
        images = hashlib.sha1((self._batch * 255).round().numpy().tobytes()).hexdigest()
        codes = hashlib.sha1(self.generator.get_state().numpy().tobytes()).hexdigest()
        out = step(self, action)
        seen.append((images, codes, self._mask_from_action(action).numpy().tobytes()))
        return out

    monkeypatch.setattr(CorruptionEnv, "step", recording_step)
    corruptor = make_corruptor("score_map", runs.config)
    oracle = -runs.env.train_planted_cells.float().mean(dim=0).flatten().numpy()
    other = np.arange(16, dtype=np.float32)  # drops the top row
    first = runs.judge_candidate(corruptor, oracle, seed=5)
    batches_first, seen[:] = list(seen), []
    second = runs.judge_candidate(corruptor, other, seed=5)
    assert [s[:2] for s in batches_first] == [s[:2] for s in seen]  # the same images, codes and augmentations
    assert all(a[2] != b[2] for a, b in zip(batches_first, seen))  # only the masks differ
    assert first.keep_planted == 0.0 and second.keep_planted == 1.0
    assert first.judge != second.judge
    again = runs.judge_candidate(corruptor, oracle, seed=5)
    assert again.judge == first.judge  # common random numbers: the same candidate, the same judge
    assert runs.judge_candidate(corruptor, oracle, seed=6).judge != first.judge


def test_a_score_map_acts_the_same_for_every_image_in_either_score_mode():
    for mode, shape in (("shared_scores", (16,)), ("scores", (64,))):
        env = CorruptionEnv(TINY.replace(action_mode=mode))
        obs, _ = env.reset(seed=0)
        action = ScoreMap(env.config).act(np.arange(16, dtype=np.float32), obs)
        assert action.shape == shape
        _, _, _, _, info = env.step(action)
        assert info["keep_fraction"] == 0.75


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="action_mode 'scores' or 'shared_scores'"):
        WholeRunEnv(TINY.replace(action_mode="cells"), updates=2)
    with pytest.raises(ValueError, match="periodic statistic"):
        WholeRun(TINY, updates=2, judge="loss")
    with pytest.raises(ValueError, match="updates per run"):
        WholeRun(TINY, updates=0)
    env = WholeRunEnv(TINY, updates=2, runs_per_episode=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3, dtype=np.float32))


def test_a_cell_rule_scores_a_cell_by_its_pixels_wherever_it_is():
    env = CorruptionEnv(TINY.replace(action_mode="scores", dataset_kwargs={"train_size": 256, "test_size": 64,
                                                                            "shortcut": "random"}))
    obs, _ = env.reset(seed=0)
    rule = make_corruptor("auto", env.config)
    assert rule.name == "cell_rule" and rule.dim == 4
    theta = np.array([0.3, -1.0, 0.5, 0.2], dtype=np.float32)
    scores = rule.act(theta, obs).reshape(4, 4, 4)
    flipped = {**obs, "images": obs["images"][:, :, ::-1, :].copy()}  # every image upside down: rows swap places
    np.testing.assert_allclose(rule.act(theta, flipped).reshape(4, 4, 4)[:, ::-1, :], scores, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="'scores', not 'shared_scores'"):
        make_corruptor("cell_rule", TINY)


def test_a_loss_judges_negated_and_other_judges_measured_from_the_same_run():
    theta = np.linspace(-1, 1, 16)
    corruptor = make_corruptor("score_map", TINY)
    by_loss = WholeRun(TINY, updates=4, judge="heldout_loss", also_measure=("heldout_loss", "rankme", "lidar"))
    result = by_loss.judge(lambda obs: corruptor.act(theta, obs), seed=3, also_at=(2,))
    assert set(result.measured) == {2, 4} and set(result.measured[4]) == {"heldout_loss", "rankme", "lidar"}
    assert result.judge == -result.measured[4]["heldout_loss"]  # a loss is better lower: the judge is oriented
    by_rank = WholeRun(TINY, updates=4).judge(lambda obs: corruptor.act(theta, obs), seed=3)
    assert by_rank.judge == pytest.approx(result.measured[4]["rankme"], rel=1e-6)  # the same run, the same encoder
    with pytest.raises(ValueError, match="judge must be a periodic statistic"):
        WholeRun(TINY, updates=2, also_measure=("loss_after",))
