"""SimCLR learner: NT-Xent against a direct computation, the loss falls on shapes views, statistics
are measured without side effects, reset(seed) reproduces the initial weights, and small_cnn's ReLU after
max-pool trains exactly as ReLU before it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from corruption_env.evaluation import to_unit
from corruption_env.simclr import SimCLRLearner, available_encoders, build_encoder, nt_xent
from corruption_env.views import ViewMaker


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Chen et al. (2020), eq. 1, written out loop by loop."""
    z = torch.cat([z1, z2])
    z = z / z.norm(dim=1, keepdim=True)
    n, b = z.shape[0], z1.shape[0]
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        sims = [math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i]
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / sum(sims))
    return total / n


def test_nt_xent_matches_reference():
    gen = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    for t in (0.1, 0.5, 1.0):
        assert float(nt_xent(z1, z2, t)) == pytest.approx(reference_nt_xent(z1, z2, t), rel=1e-5)
    # identical views with orthogonal directions: the positive dominates, the loss is near zero
    eye = torch.eye(4) * 10
    assert float(nt_xent(eye, eye, 0.05)) < 1e-6


def test_encoders_produce_declared_feature_sizes():
    assert {"small_cnn", "resnet18"} <= set(available_encoders())
    for name in ("small_cnn", "resnet18"):
        net, dim = build_encoder(name)
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="available: resnet18, small_cnn"):
        SimCLRLearner("vit_huge")


def test_loss_falls_over_100_updates_on_shapes_views(tiny_shapes):
    train, _ = tiny_shapes
    learner = SimCLRLearner(seed=0)
    views = ViewMaker(None, "sr_colorize", 2, "simclr", 32)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    losses = []
    for _ in range(100):
        pair = views(to_unit(train.images[rng.integers(0, len(train), 32)]), None, gen)
        losses.append(learner.update(pair.v1, pair.v2).loss)
    assert np.mean(losses[-15:]) < np.mean(losses[:15]) - 0.3


def test_statistics_and_loss_have_no_side_effects():
    learner = SimCLRLearner(seed=1)
    v1, v2 = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
    bn = learner.encoder[1]
    running = bn.running_mean.clone()
    before = learner.loss(v1, v2)
    assert torch.equal(bn.running_mean, running) and learner.loss(v1, v2) == before
    stats = learner.update(v1, v2, loss_after=True, grad_norm=True)
    assert stats.loss == pytest.approx(before, rel=1e-5)
    assert stats.loss_after < stats.loss and stats.grad_norm > 0
    plain = learner.update(v1, v2)
    assert plain.loss_after is None and plain.grad_norm is None


def test_reset_reproduces_weights_and_leaves_global_rng_alone():
    a, b = SimCLRLearner(seed=3), SimCLRLearner(seed=4)
    a.update(torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32))
    state = torch.random.get_rng_state()
    a.reset(4)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert a.updates == 0


def test_state_dict_round_trip():
    a, b = SimCLRLearner(seed=0), SimCLRLearner(seed=1)
    v = torch.rand(4, 3, 32, 32)
    a.update(v, v)
    b.load_state_dict(a.state_dict())
    assert a.loss(v, v) == pytest.approx(b.loss(v, v)) and b.updates == 1


def test_small_cnn_relu_after_max_pool_trains_exactly_as_relu_before_it():
    """The ReLU comes after each max-pool (cheaper); the two orders commute, values and gradients alike."""
    learners = [SimCLRLearner(seed=0), SimCLRLearner(seed=0)]
    layers = list(learners[1].encoder)
    for i in [i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.MaxPool2d)]:
        layers[i], layers[i + 1] = layers[i + 1], layers[i]
    learners[1].encoder = torch.nn.Sequential(*layers)  # the same modules, ReLU first; the optimizer still fits
    assert isinstance(learners[0].encoder[2], torch.nn.MaxPool2d) and isinstance(learners[1].encoder[2], torch.nn.ReLU)
    gen = torch.Generator().manual_seed(0)
    v1, v2 = torch.rand(16, 3, 32, 32, generator=gen), torch.rand(16, 3, 32, 32, generator=gen)
    losses = [[learner.update(v1, v2).loss for _ in range(3)] for learner in learners]
    assert losses[0] == losses[1]
    assert all(torch.equal(p, q) for p, q in zip(learners[0].parameters(), learners[1].parameters()))
