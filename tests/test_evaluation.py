"""Evaluation: kNN and linear probe against hand-made cases, and a trained encoder beats an untrained one."""
from __future__ import annotations

import torch

from corruption_env.evaluation import encoder_accuracies, knn_accuracy, linear_probe_accuracy, train_encoder
from corruption_env.simclr import SimCLRLearner
from corruption_env.views import ViewMaker


def _clusters(n_per: int, seed: int, spread: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 8) * 4
    feats = torch.cat([c + spread * torch.randn(n_per, 8, generator=gen) for c in centres])
    return feats, torch.arange(3).repeat_interleave(n_per)


def test_knn_and_probe_separate_clusters_and_fail_on_noise():
    xtr, ytr = _clusters(40, 0)
    xte, yte = _clusters(20, 1)
    assert knn_accuracy(xtr, ytr, xte, yte, k=10) == 1.0
    assert linear_probe_accuracy(xtr, ytr, xte, yte) == 1.0
    shuffled = ytr[torch.randperm(len(ytr), generator=torch.Generator().manual_seed(0))]
    assert knn_accuracy(xtr, shuffled, xte, yte, k=10) < 0.6


def test_weighted_knn_matches_a_direct_vote():
    xtr, ytr = _clusters(10, 2, spread=3.0)
    xte, yte = _clusters(5, 3, spread=3.0)
    k, t = 5, 0.1
    tr = torch.nn.functional.normalize(xtr, dim=1)
    correct = 0
    for x, y in zip(torch.nn.functional.normalize(xte, dim=1), yte):
        sims = tr @ x
        top = sims.argsort(descending=True)[:k]
        votes = torch.zeros(3)
        for i in top:
            votes[ytr[i]] += torch.exp(sims[i] / t)
        correct += int(votes.argmax() == y)
    assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=t) == correct / len(yte)


def test_trained_encoder_beats_untrained(tiny_shapes):
    train, test = tiny_shapes
    learner = SimCLRLearner(seed=0)
    untrained = encoder_accuracies(learner, train, test)["knn"]
    views = ViewMaker(None, "sr_colorize", 2, "simclr", 32)
    run = train_encoder(views, learner, train, test, steps=150, batch_size=64, eval_at=(0,), seed=0)
    assert run.accuracy[0]["knn"] == untrained
    assert run.final["knn"] > untrained + 0.05, (untrained, run.accuracy)
