"""Precision: ``auto`` resolves by hardware, bf16 autocast keeps weights and optimizer state fp32, its
CAM-Net views stay close to fp32's, seeded episodes reproduce exactly within one precision, and asking
for bf16 where it would be emulated warns once."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env import precision as precision_module
from corruption_env.precision import describe_precision, resolve_precision

TINY = dict(batch_size=8, episode_length=4, dataset_kwargs={"train_size": 256, "test_size": 64}, heldout_size=32)


@pytest.mark.filterwarnings("ignore:precision 'bf16' on a CPU without native bf16")
def test_auto_follows_the_cpu_flags_and_unknown_names_are_explained(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("amx_bf16",))
    assert resolve_precision("auto", "cpu") == "bf16"
    assert "amx_bf16" in describe_precision("auto", "cpu")
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    assert resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 is slower than fp32
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="available: auto, bf16, fp32"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="precision"):
        EnvConfig(precision="half")


def test_bf16_keeps_weights_and_optimizer_state_fp32_and_views_close_to_fp32():
    # float CAM-Net: the int8 one (the CPU's default) computes the same views in both precisions
    envs = {p: CorruptionEnv(EnvConfig(**TINY, precision=p, camnet_quantize=False)) for p in ("fp32", "bf16")}
    views = {}
    for p, env in envs.items():
        env.reset(seed=0)
        assert env.precision == p
        mask = torch.ones(8, 4, 4)
        v1, v2, _ = env.views.restore(env._batch, mask, torch.Generator().manual_seed(1))
        assert v1.dtype == torch.float32
        views[p] = v1
        env.step(np.ones(env.action_space.n))
        assert all(q.dtype == torch.float32 for q in env.learner.parameters())
        state = env.learner.optimizer.state_dict()["state"]
        assert state and all(t.dtype == torch.float32 for s in state.values() for t in s.values() if t.ndim)
    difference = (views["bf16"] - views["fp32"]).abs()
    assert 0 < float(difference.max()) < 0.05 and float(difference.mean()) < 0.005


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_seeded_episodes_reproduce_exactly_within_a_precision(precision):
    losses = []
    for _ in range(2):
        env = CorruptionEnv(EnvConfig(**TINY, precision=precision))
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        losses.append([env.step(rng.integers(0, 2, env.action_space.n))[4]["loss"] for _ in range(3)])
    assert losses[0] == losses[1]


def test_bf16_on_a_cpu_without_it_warns_once_with_the_measured_slowdown(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ())
    precision_module._warn_emulated_bf16.cache_clear()  # another test may have warned already
    with pytest.warns(RuntimeWarning, match=r"bf16 is emulated.*9x slower.*AVX2 only"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("bf16", "cpu")  # once per process
        assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision_module, "cpu_bf16_flags", lambda: ("avx512_bf16",))
    precision_module._warn_emulated_bf16.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("bf16", "cpu")  # native: nothing to say


def test_a_torch_held_below_avx512_counts_as_without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # ATEN_CPU_CAPABILITY=avx2
    assert precision_module.cpu_bf16_flags.__wrapped__() == ()
