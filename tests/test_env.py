"""CorruptionEnv: the ecosystem's checkers, seeding, rewards through the env, bad input, divergence,
rendering and vectorisation. Tiny configs: 8-image batches of a 256-image shapes set."""
from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import corruption_env
from corruption_env.statistics import LabelLoss
from corruption_env import CorruptionEnv, EnvConfig, rewards, statistics
from corruption_env.rewards import Reward
from corruption_env.simclr import UpdateStats

TINY = dict(batch_size=8, episode_length=4, dataset_kwargs={"train_size": 256, "test_size": 64}, heldout_size=32)


def make(**overrides) -> CorruptionEnv:
    return CorruptionEnv(EnvConfig(**{**TINY, **overrides}))


def rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        trace.append(env.step(action))
    return trace


def assert_same(a, b):
    assert gym.utils.env_checker.data_equivalence(a, b)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gymnasium_and_sb3_checkers_pass():
    env = make()
    gym_check_env(env)
    sb3_check_env(env)
    env = CorruptionEnv(EnvConfig(**TINY), render_mode="rgb_array")
    gym_check_env(env)


def test_gym_make_passes_overrides_and_registers():
    env = gym.make(corruption_env.ENV_ID, **TINY, decorruptor="bicubic")
    obs, _ = env.reset(seed=0)
    assert obs["images"].shape == (8, 1, 16, 16) and obs["images"].dtype == np.uint8
    assert env.action_space.n == 8 * 4 * 4
    with pytest.raises(ValueError, match="valid keys: .*batch_size"):
        gym.make(corruption_env.ENV_ID, batchsize=8)


def test_same_seed_same_episode_other_seed_differs():
    env_a, env_b = make(), make()
    actions = [np.random.default_rng(i).integers(0, 2, env_a.action_space.n) for i in range(4)]
    trace_a, trace_b = rollout(env_a, 3, actions), rollout(env_b, 3, actions)
    assert_same(trace_a, trace_b)
    trace_c = rollout(env_a, 4, actions)
    assert not np.array_equal(trace_a[0]["images"], trace_c[0]["images"])
    assert trace_a[2][1] != trace_c[2][1]  # rewards differ too


def test_reward_in_env_matches_losses_and_first_step_is_zero():
    env = make(reward_kwargs={"beta": 0.5})
    env.reset(seed=0)
    losses, paid = [], []
    keep = np.ones(env.action_space.n)
    for _ in range(4):
        _, reward, terminated, truncated, info = env.step(keep)
        losses.append(info["loss"])
        paid.append(reward)
        assert not terminated
        assert info["reward_terms"]["ma_neg_loss_derivative"] == reward
        assert info["reward_terms"]["neg_loss"] == -info["loss"]
    assert truncated and paid[0] == 0.0
    expected, avg = [], 0.0
    for t in range(4):
        avg = 0.5 * avg + 0.5 * (0.0 if t == 0 else losses[t - 1] - losses[t])
        expected.append(avg)
    assert paid == pytest.approx(expected)


def test_heldout_gain_is_sparse_and_measured():
    env = make(reward="heldout_gain", reward_kwargs={"every": 2}, record_timings=True)
    env.reset(seed=0)
    paid = [env.step(np.ones(env.action_space.n))[1] for _ in range(4)]
    assert paid[0] == 0.0 and paid[2] == 0.0 and paid[1] != 0.0 and paid[3] != 0.0
    assert "prediction_gain" not in make().needs and make().needs == set()  # default computes no extras


def test_custom_registered_reward_is_used(monkeypatch):
    monkeypatch.setattr(rewards.REWARDS, "entries", dict(rewards.REWARDS.entries))

    @rewards.register_reward("left_half_kept")
    class LeftHalf(Reward):
        def __call__(self, stats):
            return 42.0 * stats.keep_fraction

    env = gym.make(corruption_env.ENV_ID, **TINY, reward="left_half_kept", decorruptor="bicubic")
    env.reset(seed=0)
    _, reward, *_ = env.step(np.ones(env.unwrapped.action_space.n))
    assert reward == 42.0


def test_dropping_every_cell_changes_views_and_loss():
    env = make(view_augmentation="none")
    env.reset(seed=1)
    batch = env._batch
    keep_v1, _, _ = env.views.restore(batch, torch.ones(8, 4, 4), torch.Generator().manual_seed(0))
    drop_v1, _, _ = env.views.restore(batch, torch.zeros(8, 4, 4), torch.Generator().manual_seed(0))
    assert (keep_v1 - drop_v1).abs().mean() > 0.05
    # all dropped, the views no longer depend on the images: another batch gives the same views
    other = batch.flip(0)
    assert torch.equal(env.views.restore(other, torch.zeros(8, 4, 4), torch.Generator().manual_seed(0))[0], drop_v1)
    assert not torch.equal(env.views.restore(other, torch.ones(8, 4, 4), torch.Generator().manual_seed(0))[0], keep_v1)
    losses = {}
    for name, action in (("keep", np.ones(128)), ("drop", np.zeros(128))):
        env.reset(seed=1)
        losses[name] = [env.step(action)[4]["loss"] for _ in range(3)]
    assert abs(np.mean(losses["keep"]) - np.mean(losses["drop"])) > 0.05


@pytest.mark.parametrize("action,match", [
    (np.ones(127), r"shaped \(128,\).*got shape \(127,\)"),
    (np.ones((8, 16)), r"or \(8, 4, 4\)"),
    (np.full(128, 2), r"got values \[2\]"),
    (np.array(["1"] * 128), "got dtype"),
])
def test_bad_actions_are_explained(action, match):
    env = make(decorruptor="bicubic")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)
    # nothing was lost: the episode goes on with a valid action
    assert env.step(np.ones((8, 4, 4), dtype=bool))[4]["keep_fraction"] == 1.0


def test_step_before_reset_and_unknown_names():
    env = make(decorruptor="bicubic")
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(np.ones(128))
    for key, value, listed in (("dataset", "imagenet", "shapes"), ("reward", "vibes", "heldout_gain"),
                               ("encoder", "vit", "small_cnn"), ("decorruptor", "dall-e", "bicubic"),
                               ("view_augmentation", "mixup", "crop_flip"), ("task", "deblur", "sr_colorize")):
        with pytest.raises(ValueError, match=f"{listed}"):
            make(**{key: value})


def test_divergence_truncates_with_finite_penalty_then_reset_is_clean(monkeypatch):
    env = make(decorruptor="bicubic", divergence_penalty=-5.0)
    env.reset(seed=0)
    real_update = env.learner.update
    monkeypatch.setattr(env.learner, "update", lambda *a, **k: UpdateStats(loss=float("nan")))
    obs, reward, terminated, truncated, info = env.step(np.ones(128))
    assert (reward, terminated, truncated, info["diverged"]) == (-5.0, False, True, True)
    assert np.isfinite(obs["learner"]).all()
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.ones(128))
    monkeypatch.setattr(env.learner, "update", real_update)
    env.reset(seed=0)
    _, reward, _, truncated, info = env.step(np.ones(128))
    assert np.isfinite(reward) and not info["diverged"] and not truncated


def test_render_grid_and_timings():
    env = CorruptionEnv(EnvConfig(**TINY, record_timings=True), render_mode="rgb_array")
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.ones(128))
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape[2] == 3
    assert frame.shape[0] > 3.5 * 64 and frame.shape[1] > 7.5 * 64  # 4 rows x 8 images of 64 px
    env.reset()  # vector envs reset right after the last step: the picture must still show that step
    assert env.render().shape == frame.shape
    assert set(info["seconds"]) == {"data", "camnet", "augment", "learner", "reward"}
    assert all(v >= 0 for v in info["seconds"].values())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_vector_envs(mode):
    envs = gym.make_vec(corruption_env.ENV_ID, num_envs=2, vectorization_mode=mode,
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
                        if hasattr(gym.vector, "AutoresetMode") else {},
                        **TINY, decorruptor="bicubic", num_threads=1)
    obs, _ = envs.reset(seed=[0, 1])
    assert obs["images"].shape == (2, 8, 1, 16, 16)
    for _ in range(5):  # crosses an episode boundary
        obs, reward, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert reward.shape == (2,) and np.isfinite(reward).all()
    envs.close()


def test_forked_async_worker_asking_for_threads_does_not_deadlock(tmp_path):
    """OpenMP deadlocks in a child forked after threaded work; the env must hold such a worker to 1 thread."""
    script = tmp_path / "fork_workers.py"
    script.write_text(f"""
import warnings, gymnasium as gym, numpy as np, torch, corruption_env
torch.set_num_threads(2)
torch.nn.functional.conv2d(torch.randn(64, 16, 32, 32), torch.randn(16, 16, 3, 3))  # threaded work in the parent
envs = gym.make_vec(corruption_env.ENV_ID, num_envs=2, vectorization_mode="async", vector_kwargs={{"context": "fork"}},
                    **{dict(**TINY, decorruptor="bicubic")!r}, num_threads=2)
envs.reset(seed=[0, 1])
_, reward, *_ = envs.step(envs.action_space.sample())
envs.close()
print("finite" if np.isfinite(reward).all() else "nan")
""")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("finite")
    assert "limited to 1 thread" in out.stderr


def test_sb3_vec_envs():
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    for cls in (DummyVecEnv, SubprocVecEnv):
        # "module:id" makes gymnasium import the package inside spawned workers, where nothing registered it
        venv = make_vec_env(f"corruption_env:{corruption_env.ENV_ID}", n_envs=2, vec_env_cls=cls, seed=0,
                            env_kwargs=dict(**TINY, decorruptor="bicubic", num_threads=1))
        venv.reset()
        dones = []
        for _ in range(5):
            obs, reward, done, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
            dones.append(done)
        assert [d.all() for d in dones] == [False, False, False, True, False]  # 4-step episodes, auto-reset
        assert obs["images"].shape == (2, 8, 1, 16, 16) and "loss" in infos[0]
        venv.close()


def test_render_has_one_size_before_and_after_steps():
    env = CorruptionEnv(EnvConfig(**TINY), render_mode="rgb_array")  # video recorders need a fixed frame size
    env.reset(seed=0)
    before = env.render()
    env.step(np.ones(128))
    assert env.render().shape == before.shape


def test_known_answer_task_reports_planted_cells_and_keep_rates():
    env = make(dataset_kwargs={**TINY["dataset_kwargs"], "shortcut": "random"})
    obs, _ = env.reset(seed=0)
    cells = env.planted_cells.copy()
    assert cells.shape == (8, 4, 4) and (cells.sum((1, 2)) == 4).all()
    _, _, _, _, info = env.step((~cells).astype(np.int8))  # drop exactly the shortcut
    np.testing.assert_array_equal(info["planted_cells"], cells)
    assert info["keep_planted"] == 0.0 and info["keep_other"] == 1.0
    _, _, _, _, info = env.step(np.ones(env.action_space.n))
    assert info["keep_planted"] == 1.0 and info["keep_other"] == 1.0
    assert "keep_planted" not in make().reset(seed=0)[1] and make().planted_cells is None
    with pytest.raises(ValueError, match="shortcut_grid=2 differs from mask_grid=4"):
        make(dataset_kwargs={"shortcut": "fixed", "shortcut_grid": 2})


def test_paired_progress_is_computed_only_when_needed_and_paired_with_keep_all():
    env = make(reward="paired_progress", track_rewards=[])
    assert env.needs == {"reference_gain"} and "reference_gain" not in make().needs
    env.reset(seed=0)
    keep_all = [env.step(np.ones(128))[4] for _ in range(3)]
    # keep-all views are the reference views, so the paired gain is the prediction gain
    env = make(reward="paired_progress", track_rewards=["prediction_gain"])
    env.reset(seed=0)
    for _ in range(3):
        _, reward, _, _, info = env.step(np.ones(128))
        assert reward == pytest.approx(info["reward_terms"]["prediction_gain"], abs=1e-5)
    assert np.mean([info["reward_terms"]["paired_progress"] for info in keep_all]) > 0  # early training helps
    # a partial mask: reference views still share codes and augmentations, the env's streams move on unchanged
    a, b = make(reward="paired_progress"), make()
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, 128) for _ in range(3)]
    same_training = lambda trace: [(t[0]["images"], np.delete(t[0]["learner"], 3), t[4]["loss"]) for t in trace[1:]]
    assert_same(same_training(rollout(a, 1, actions)), same_training(rollout(b, 1, actions)))  # all but the reward


def test_label_gain_measured_every_step_only_when_needed(monkeypatch):
    env = make(reward="label_gain", track_rewards=[])
    calls = []
    probe = env.statistics.active["label_loss"]
    real = probe.measure
    monkeypatch.setattr(probe, "measure", lambda: calls.append(1) or real())
    env.reset(seed=0)
    paid = [env.step(np.ones(128))[1] for _ in range(3)]
    assert len(calls) == 4 and all(p != 0.0 for p in paid)  # at reset and after every update
    plain = make()
    assert "label_loss" not in plain.statistics.active  # measured only where a reward needs it
    monkeypatch.setattr(LabelLoss, "measure", lambda self: pytest.fail("label_loss measured without a reward needing it"))
    plain.reset(seed=0)
    plain.step(np.ones(128))


@pytest.mark.parametrize("reward", ["label_advantage", "rankme_advantage"])
def test_advantage_rewards_undo_their_counterfactual_update_and_pay_the_reference_zero(reward):
    a, b = make(reward=reward, track_rewards=[]), make()
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, 128) for _ in range(3)] + [np.ones(128)]
    trace = rollout(a, 1, actions)
    same_training = lambda trace: [(t[0]["images"], np.delete(t[0]["learner"], 3), t[4]["loss"]) for t in trace[1:]]
    assert_same(same_training(trace), same_training(rollout(b, 1, actions)))  # the counterfactual leaves no trace
    paid = [t[1] for t in trace[1:]]
    assert all(p != 0.0 for p in paid[:3]) and paid[3] == 0.0  # keep-all is the reference: exactly 0
    assert reward not in make(track_rewards="all").tracked  # "all" does not double every step's cost
    assert reward in make(track_rewards=[reward]).tracked


def test_the_family_chosen_does_not_shift_codes_or_augmentations():
    env = make(action_mode="family")
    env.reset(seed=0)
    state = env.snapshot()
    streams = []
    for action in ([0, 0], [2, 3], [1, 1]):
        env.restore(state)
        env.step(np.array(action))
        streams.append(env.generator.get_state())
    assert all(torch.equal(streams[0], other) for other in streams[1:])


def test_snapshot_restore_replays_a_step_exactly():
    env = make(track_rewards="all")
    env.reset(seed=0)
    env.step(np.ones(128))
    state = env.snapshot()
    first = env.step(np.zeros(128))
    env.restore(state)
    env.step(np.ones(128))  # another action from the same state ...
    env.restore(state)
    assert_same(env.step(np.zeros(128)), first)  # ... leaves no trace


@pytest.mark.parametrize("mode", ["cells", "shared", "scores", "shared_scores"])
def test_a_keep_budget_keeps_exactly_k_cells_of_every_image_in_every_mode(mode):
    env = make(action_mode=mode, keep_budget=0.75)
    env.reset(seed=0)
    masks = []
    for _ in range(3):
        action = env.action_space.sample()
        mask = env._mask_from_action(action)
        assert (mask.sum(dim=(1, 2)) == 12).all()
        if mode.startswith("shared"):
            assert (mask == mask[:1]).all()  # one mask for the batch
        masks.append(mask)
    tied = np.zeros(env.action_space.shape) if mode.endswith("scores") else np.ones(env.action_space.n)
    ties = [env._mask_from_action(tied) for _ in range(4)]  # equal scores: the kept cells are drawn, not positional
    assert any(not torch.equal(ties[0], other) for other in ties[1:])
    _, _, _, _, info = env.step(tied)
    assert info["keep_fraction"] == 0.75


def test_score_actions_keep_the_top_cells_or_the_positive_ones():
    scores = np.tile(np.arange(16, dtype=np.float32) / 2, 8)  # cell 15 scores highest in every image
    env = make(action_mode="scores", keep_budget=0.25)
    env.reset(seed=0)
    mask = env._mask_from_action(scores).reshape(8, 16)
    assert (mask[:, 12:] == 1).all() and mask[:, :12].sum() == 0
    free = make(action_mode="scores")
    free.reset(seed=0)
    np.testing.assert_array_equal(free._mask_from_action(scores - 3.75).reshape(8, 16).numpy(), scores.reshape(8, 16) > 3.75)
    for bad, match in ((np.full(128, np.nan, np.float32), "non-finite"), (np.zeros(16, np.float32), "shape")):
        with pytest.raises(ValueError, match=match):
            env.step(bad)
    with pytest.raises(ValueError, match="family"):
        EnvConfig(action_mode="family", keep_budget=0.5)
    with pytest.raises(ValueError, match="keep_budget"):
        EnvConfig(keep_budget=1.5)
    with pytest.raises(ValueError, match="random"):
        EnvConfig(reference_corruption="random")


def test_under_a_budget_the_reference_is_random_at_the_budget_and_loss_rise_is_paired(monkeypatch):
    env = make(keep_budget=0.75, reward="loss_rise", track_rewards=["adversarial_loss"])
    env.reset(seed=0)
    references = []
    real = statistics.reference_mask
    monkeypatch.setattr(statistics, "reference_mask", lambda *args: references.append(real(*args)) or references[-1])
    _, reward, _, _, info = env.step(np.ones(128))
    assert (references[0].sum(dim=(1, 2)) == 12).all()
    assert reward != 0.0 and info["reward_terms"]["adversarial_loss"] == pytest.approx(info["loss"])
    free = make(reward="loss_rise")  # without a budget the reference keeps every cell: keep-all pays exactly 0
    free.reset(seed=0)
    assert free.step(np.ones(128))[1] == 0.0


def test_the_reference_learner_trains_on_reference_views_only_and_leaves_the_agents_encoder_alone():
    budget = dict(keep_budget=0.75, dataset_kwargs={**TINY["dataset_kwargs"], "shortcut": "fixed", "shortcut_bits": 4})
    a, b = make(reward="reference_learner_rise", **budget), make(**budget)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, 2, 128) for _ in range(3)]
    same_training = lambda trace: [(t[0]["images"], np.delete(t[0]["learner"], 3), t[4]["loss"]) for t in trace[1:]]
    trace = rollout(a, 1, actions)
    assert_same(same_training(trace), same_training(rollout(b, 1, actions)))  # the agent's encoder trains as without it
    reference_learner = a.statistics.active["reference_learner_rise"].learner
    first = {k: v.clone() for k, v in reference_learner.encoder.state_dict().items()}
    rollout(a, 1, [np.ones(128)] * 3)  # other masks: the reference learner's training does not change
    assert all(torch.equal(first[k], v) for k, v in reference_learner.encoder.state_dict().items())
    assert all(t[1] != 0.0 for t in trace[1:]) and "reference_learner_rise" not in make().statistics.active


def test_the_keep_budget_has_one_owner_the_config():
    env = CorruptionEnv(EnvConfig(batch_size=4, image_size=16, decorruptor="bicubic", keep_budget=0.75,
                                  action_mode="scores", dataset_kwargs={"train_size": 64, "test_size": 32},
                                  heldout_size=16))
    assert env.keep_cells == env.config.keep_cells == 12
    with pytest.raises(AttributeError):
        env.keep_cells = None  # read-only: a budget is lifted by building an env from config.replace(keep_budget=None)
