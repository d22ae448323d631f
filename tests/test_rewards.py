"""Reward definitions: first-step values, signs, hand-computed sequences, wrappers, the registry."""
from __future__ import annotations

import math

import numpy as np
import pytest

from corruption_env import rewards
from corruption_env.statistics import periodic_statistics
from corruption_env.rewards import (KeepFractionPenalty, QuantileRescaled, Reward, StepStats, available_rewards,
                                    make_reward, register_reward)

LOSSES = [4.0, 3.5, 3.6, 3.0]  # a falling loss with one bump


def run(reward: Reward, losses=LOSSES, **extra) -> list[float]:
    reward.reset()
    out = []
    for t, loss in enumerate(losses, start=1):
        fields = {k: v[t - 1] for k, v in extra.items()}
        out.append(reward(StepStats(step=t, loss=loss, **fields)))
    return out


def test_ma_neg_loss_derivative_sequence_and_first_step():
    values = run(make_reward("ma_neg_loss_derivative", beta=0.5))
    # d = [0, 0.5, -0.1, 0.6]; r_t = 0.5 r_{t-1} + 0.5 d_t
    assert values == pytest.approx([0.0, 0.25, 0.075, 0.3375])
    assert run(make_reward("ma_neg_loss_derivative"), [2.0, 1.0])[1] == pytest.approx(0.1)  # beta 0.9, positive
    with pytest.raises(ValueError, match="beta"):
        make_reward("ma_neg_loss_derivative", beta=1.0)


def test_reset_forgets_the_previous_episode():
    reward = make_reward("ma_neg_loss_derivative")
    run(reward)
    assert run(reward, [10.0])[0] == 0.0


def test_neg_loss_delta_and_neg_loss():
    assert run(make_reward("neg_loss_delta")) == pytest.approx([0.0, 0.5, -0.1, 0.6])
    assert run(make_reward("neg_loss")) == pytest.approx([-4.0, -3.5, -3.6, -3.0])


def test_prediction_gain_is_before_minus_after():
    values = run(make_reward("prediction_gain"), loss_after=[3.9, 3.5, 3.0, 3.1])
    assert values == pytest.approx([0.1, 0.0, 0.6, -0.1])
    assert make_reward("prediction_gain").needs == {"loss_after"}


def test_grad_norm_is_squared():
    assert run(make_reward("grad_norm"), loss_after=[None] * 4, grad_norm=[1.0, 2.0, 0.5, 0.0]) == [1.0, 4.0, 0.25, 0.0]


def test_tscl_window_slope_of_negative_loss():
    values = run(make_reward("tscl_window", window=3))
    assert values[0] == 0.0
    assert values[1] == pytest.approx(0.5)  # two points: -4 -> -3.5
    assert values[2] == pytest.approx(np.polyfit([0, 1, 2], [-4.0, -3.5, -3.6], 1)[0])
    assert values[3] == pytest.approx(np.polyfit([0, 1, 2], [-3.5, -3.6, -3.0], 1)[0])


def test_heldout_gain_is_sparse_and_compares_with_the_start():
    reward = make_reward("heldout_gain", every=2)
    assert reward.measure_every == 2 and reward.needs == {"heldout_loss"}
    reward.reset(StepStats(step=0, loss=4.0, heldout_loss=5.0))
    seq = [reward(StepStats(step=t, loss=1.0, heldout_loss=h)) for t, h in [(1, None), (2, 4.5), (3, None), (4, 4.6)]]
    assert seq == pytest.approx([0.0, 0.5, 0.0, -0.1])


def test_probe_accuracy_pays_accuracy_gains():
    reward = make_reward("probe_accuracy", every=1)
    reward.reset(StepStats(step=0, loss=0.0, probe_accuracy=0.2))
    assert [reward(StepStats(step=t, loss=0.0, probe_accuracy=a)) for t, a in [(1, 0.5), (2, 0.4)]] == \
        pytest.approx([0.3, -0.1])


def test_quantile_rescaling_maps_to_unit_interval():
    reward = QuantileRescaled(make_reward("neg_loss"))
    values = run(reward, list(np.linspace(5, 1, 50)))
    assert values[0] == 0.0  # one value: no scale yet
    assert all(-1 <= v <= 1 for v in values) and values[-1] == 1.0
    run(reward, [3.0])  # the reservoir survives reset: -3 sits mid-range of what was seen
    assert abs(reward(StepStats(step=2, loss=3.0))) < 0.5


def test_keep_fraction_penalty_prefers_partial_masks():
    reward = KeepFractionPenalty(make_reward("neg_loss"), weight=0.1)
    half = reward(StepStats(step=1, loss=1.0, keep_fraction=0.5))
    full = reward(StepStats(step=1, loss=1.0, keep_fraction=1.0))
    assert half == pytest.approx(-1.0) and full < half - 2.5
    wrapped = make_reward("prediction_gain", rescale=True, keep_penalty=0.01)
    assert wrapped.needs == {"loss_after"}


def test_registry_rejects_unknown_and_accepts_custom(monkeypatch):
    monkeypatch.setattr(rewards.REWARDS, "entries", dict(rewards.REWARDS.entries))  # forget the test reward afterwards
    assert {"ma_neg_loss_derivative", "neg_loss_delta", "prediction_gain", "heldout_gain", "probe_accuracy",
            "tscl_window", "neg_loss", "grad_norm"} <= set(available_rewards())
    with pytest.raises(ValueError, match="available: .*heldout_gain"):
        make_reward("accuracy_of_my_dreams")
    with pytest.raises(ValueError, match="does not accept"):
        make_reward("neg_loss", beta=3)

    @register_reward("test_keep_more")
    class KeepMore(Reward):
        def __call__(self, stats):
            return stats.keep_fraction

    assert make_reward("test_keep_more")(StepStats(step=1, loss=1.0, keep_fraction=0.75)) == 0.75
    assert math.isfinite(make_reward("neg_loss")(StepStats(step=1, loss=2.0)))


def test_paired_progress_pays_the_reference_gain_and_label_gain_the_label_loss_decrease():
    paired = make_reward("paired_progress")
    assert paired.needs == {"reference_gain"} and not paired.uses_labels
    assert run(paired, reference_gain=[0.3, -0.1, 0.0, 0.2]) == pytest.approx([0.3, -0.1, 0.0, 0.2])
    label = make_reward("label_gain")
    assert label.needs == {"label_loss"} and label.uses_labels and label.measure_every == 1
    label.reset(StepStats(step=0, loss=0.0, label_loss=1.6))
    assert [label(StepStats(step=t, loss=0.0, label_loss=v)) for t, v in [(1, 1.5), (2, 1.55)]] == \
        pytest.approx([0.1, -0.05])


def test_label_using_rewards_are_marked_and_listed():
    assert {"paired_progress", "label_gain"} <= set(available_rewards())
    assert {n for n in available_rewards() if make_reward(n).uses_labels} == {"probe_accuracy", "label_gain",
                                                                             "label_advantage"}
    assert make_reward("label_gain", rescale=True).uses_labels  # wrappers keep the mark
    assert {"heldout_loss", "probe_accuracy", "label_loss", "rankme", "lidar", "alpha_req", "alignment",
            "uniformity"} == set(periodic_statistics())


def test_prototype_cross_entropy_is_low_for_separated_classes():
    from corruption_env.evaluation import prototype_cross_entropy
    import torch

    labels = torch.arange(60) % 3
    separated = torch.nn.functional.one_hot(labels, 3).float() + 0.01 * torch.randn(60, 3)
    mixed = torch.randn(60, 3)
    assert prototype_cross_entropy(separated, labels, separated, labels) < 0.01
    assert prototype_cross_entropy(mixed, labels, mixed, labels, temperature=1.0) > 0.5


@pytest.mark.parametrize("name", available_rewards())
def test_every_registered_reward_pays_a_finite_float_for_a_step_and_names_known_statistics(name):
    from corruption_env import CorruptionEnv
    from corruption_env.registry import doc_summary
    from corruption_env.statistics import available_statistics

    reward = make_reward(name)
    assert set(reward.needs) <= set(available_statistics()) and doc_summary(type(reward))
    planted = {"shortcut": "fixed"} if rewards.REWARDS[name].reads_answer else {}  # such a reward needs a known answer to read
    env = CorruptionEnv(batch_size=4, image_size=16, decorruptor="bicubic", heldout_size=16, track_rewards=[],
                        reward=name, keep_budget=0.75, dataset_kwargs={"train_size": 64, "test_size": 16, **planted})
    env.reset(seed=0)
    _, paid, _, _, info = env.step(env.action_space.sample())
    assert isinstance(paid, float) and math.isfinite(paid) and info["reward_terms"] == {name: paid}
