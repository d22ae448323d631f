"""How good is an encoder? kNN and linear-probe accuracy on frozen features, and the training loop
that every evaluation of a corruptor shares.

``knn_accuracy`` is the weighted kNN classifier of the SimCLR/InstDisc/lightly benchmarks (cosine
similarity, the k nearest training features vote with weight exp(sim / T)). ``linear_probe_accuracy``
fits a multinomial logistic regression on standardised frozen features (full-batch L-BFGS).
``prototype_cross_entropy`` is a smooth nearest-class-mean score, small enough to run every step (the
``label_gain`` reward). ``effective_rank`` is RankMe, a label-free score of the features (the ``rankme_*``
rewards); ``lidar``, ``spectrum_decay`` (alpha-ReQ) and ``alignment_uniformity`` are the other label-free judges of
an encoder that the judge audit compares (``studies/judge_audit.py``).
``train_encoder`` runs SimCLR for a number of updates with views from any ``ViewMaker`` and a mask
policy, measuring both accuracies at chosen update counts: it is the learnability floor's loop, the
evaluation of a learned corruptor, and the benchmark's, so all of them measure the same thing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from corruption_env.images import ImageDataset, to_unit
from corruption_env.simclr import SimCLRLearner
from corruption_env.views import ViewMaker

MaskPolicy = Callable[[torch.Tensor, torch.Generator], "torch.Tensor | None"]
READABLE_MARGIN = 0.05  # the floor: keep_all must beat an untrained encoder by this much kNN accuracy


def floor_holds(margins: "list[float] | np.ndarray") -> bool:
    """The learnability floor, the one rule every command applies: keep_all's kNN accuracy minus the untrained
    encoder's, averaged over the seeds given, is at least :data:`READABLE_MARGIN`. Below it no comparison of
    corruptors means anything yet (the evaluation needs more SimCLR updates)."""
    return len(margins) > 0 and float(np.mean(margins)) >= READABLE_MARGIN


@torch.no_grad()
def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1, chunk: int = 1024) -> float:
    """Weighted kNN accuracy (cosine similarity; votes weighted by exp(sim / temperature))."""
    train_n = F.normalize(train_features.float(), dim=1)
    test_n = F.normalize(test_features.float(), dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train_n.shape[0])
    correct = 0
    for start in range(0, test_n.shape[0], chunk):
        sim = test_n[start:start + chunk] @ train_n.T
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes)
        votes.scatter_add_(1, train_labels[top_idx], (top_sim / temperature).exp())
        correct += int((votes.argmax(1) == test_labels[start:start + chunk]).sum())
    return correct / max(test_n.shape[0], 1)


@torch.no_grad()
def prototype_cross_entropy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                            test_labels: torch.Tensor, temperature: float = 0.1) -> float:
    """Nearest-class-mean cross-entropy: a smooth label-based score of frozen features (lower is better).

    Features are L2-normalised; each class's prototype is the normalised mean of its training
    features; test features are classified by softmax(cos(feature, prototype) / temperature). Unlike
    kNN accuracy it changes with every small move of the features, so it can score a single update.
    """
    train_n = F.normalize(train_features.float(), dim=1)
    test_n = F.normalize(test_features.float(), dim=1)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    sums = torch.zeros(classes, train_n.shape[1]).index_add_(0, train_labels, train_n)
    prototypes = F.normalize(sums, dim=1)  # a class missing from the train half has a zero prototype
    return float(F.cross_entropy(test_n @ prototypes.T / temperature, test_labels))


@torch.no_grad()
def effective_rank(features: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al. 2023, "RankMe: assessing the downstream performance of pretrained
    self-supervised representations by their rank"): exp(-sum p_k log p_k), p_k = s_k / sum(s) + eps, over
    the singular values s of the (N, D) feature matrix. Between 1 (collapse onto one direction) and
    min(N, D) (every direction used equally). Label-free."""
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum().clamp_min(1e-12) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def lidar(embeddings: torch.Tensor, delta: float = 1e-4, eps: float = 1e-7) -> float:
    """LiDAR (Thilak et al. 2023, "LiDAR: sensing linear probing performance in joint embedding SSL architectures"):
    the effective rank of the linear discriminant matrix whose classes are the source images and whose samples are
    their views. ``embeddings`` is (N images, q views, D). With the within-image covariance S_w (views around their
    image's mean) and the between-image covariance S_b (image means), it is exp of the entropy of the normalised
    eigenvalues of (S_w + delta I)^(-1/2) S_b (S_w + delta I)^(-1/2). Unlike RankMe, a direction counts only as far as
    it separates images more than it separates views of one image. Label-free."""
    x = embeddings.double()
    means = x.mean(1)
    within = x - means[:, None]
    s_w = torch.einsum("nqd,nqe->de", within, within) / (x.shape[0] * max(x.shape[1] - 1, 1))
    centred = means - means.mean(0)
    s_b = centred.T @ centred / max(x.shape[0] - 1, 1)
    values, vectors = torch.linalg.eigh(s_w + delta * torch.eye(x.shape[2], dtype=x.dtype))
    root = vectors @ torch.diag(values.clamp_min(1e-12).rsqrt()) @ vectors.T
    eigen = torch.linalg.eigvalsh(root @ s_b @ root).clamp_min(0)
    p = eigen / eigen.sum().clamp_min(1e-12) + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def spectrum_decay(features: torch.Tensor, fit_fraction: float = 0.5) -> float:
    """alpha of alpha-ReQ (Agrawal et al. 2022, "alpha-ReQ: assessing representation quality in self-supervised
    learning by measuring eigenspectrum decay"): the slope of log eigenvalue against log rank of the features'
    covariance, fitted over the first ``fit_fraction`` of ranks (eigenvalue ~ rank^-alpha). alpha near 1 predicted
    the best linear probes there; smaller is a flatter (whiter) spectrum, larger a collapsing one. Label-free."""
    x = features.double() - features.double().mean(0)
    eigen = torch.linalg.eigvalsh(x.T @ x / max(x.shape[0] - 1, 1)).flip(0).clamp_min(1e-12)
    k = max(2, int(len(eigen) * fit_fraction))
    ranks = torch.arange(1, k + 1, dtype=x.dtype).log()
    slope = torch.linalg.lstsq(torch.stack([ranks, torch.ones_like(ranks)], 1), eigen[:k].log()[:, None]).solution[0]
    return float(-slope)


@torch.no_grad()
def alignment_uniformity(f1: torch.Tensor, f2: torch.Tensor, t: float = 2.0) -> tuple[float, float]:
    """Alignment and uniformity (Wang & Isola 2020) of L2-normalised features of two views of the same images:
    E ||f1 - f2||^2 (lower: views agree) and log E exp(-t ||f - f'||^2) over pairs of distinct images (lower: spread
    over the sphere). Label-free."""
    a, b = F.normalize(f1.float(), dim=1), F.normalize(f2.float(), dim=1)
    align = float((a - b).pow(2).sum(1).mean())
    both = torch.cat([a, b])
    distances = torch.pdist(both).pow(2)
    return align, float(torch.logsumexp(-t * distances, 0) - math.log(distances.numel()))


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                          test_labels: torch.Tensor, weight_decay: float = 1e-4, max_iter: int = 200) -> float:
    """Test accuracy of a logistic regression fitted on standardised frozen features (L-BFGS)."""
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-6)
    xtr, xte = (train_features - mean) / std, (test_features - mean) / std
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    probe = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(xtr), train_labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((probe(xte).argmax(1) == test_labels).float().mean())


def feature_accuracies(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                       test_labels: torch.Tensor) -> dict[str, float]:
    return {"knn": knn_accuracy(train_features, train_labels, test_features, test_labels),
            "linear": linear_probe_accuracy(train_features, train_labels, test_features, test_labels)}


def encoder_accuracies(learner: SimCLRLearner, train: ImageDataset, test: ImageDataset) -> dict[str, float]:
    """kNN and linear-probe accuracy of the learner's encoder (features of the full-resolution images)."""
    return feature_accuracies(learner.encode(to_unit(train.images)), torch.tensor(np.asarray(train.labels)),
                              learner.encode(to_unit(test.images)), torch.tensor(np.asarray(test.labels)))


def pixel_accuracies(train: ImageDataset, test: ImageDataset) -> dict[str, float]:
    """The same classifiers on raw pixels: what an encoder has to beat to have learned anything."""
    return feature_accuracies(to_unit(train.images).flatten(1), torch.tensor(np.asarray(train.labels)),
                              to_unit(test.images).flatten(1), torch.tensor(np.asarray(test.labels)))


@dataclass
class EncoderRun:
    """Accuracies at each evaluated update count, and the training loss curve."""

    accuracy: dict[int, dict[str, float]] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    keep_fraction: float = 1.0

    @property
    def final(self) -> dict[str, float]:
        return self.accuracy[max(self.accuracy)]


def train_encoder(views: ViewMaker, learner: SimCLRLearner, train: ImageDataset, test: ImageDataset,
                  steps: int, batch_size: int = 64, mask_policy: MaskPolicy | None = None,
                  eval_at: tuple[int, ...] | None = None, seed: int = 0, progress: str | None = None
                  ) -> EncoderRun:
    """Train ``learner`` for ``steps`` SimCLR updates on views of random train batches.

    :param views: how views are made (decorruptor, task, augmentation).
    :param mask_policy: ``policy(x_lr, generator) -> (B, g, g) mask`` chosen from the degraded batch
        (what an agent observes), or None to keep every cell.
    :param eval_at: update counts at which to measure accuracy (default: only at ``steps``).
    :param seed: seed of batch order, latent codes and augmentations (the learner has its own).
    :param progress: a tqdm description, or None for no bar.
    """
    eval_at = tuple(sorted(set(eval_at or ()) | {steps}))
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    run = EncoderRun()
    kept, total = 0.0, 0
    bar = tqdm(total=steps, desc=progress, disable=progress is None, leave=False, dynamic_ncols=True)
    for step in range(steps + 1):
        if step in eval_at:
            run.accuracy[step] = encoder_accuracies(learner, train, test)
        if step == steps:
            break
        images = to_unit(train.images[rng.integers(0, len(train), batch_size)]).to(learner.device)
        x_lr = views.degrade(images)
        mask = None if mask_policy is None else mask_policy(x_lr, gen)
        if mask is not None:
            kept, total = kept + float(mask.float().mean()), total + 1
        pair = views(images, mask, gen, x_lr=x_lr)
        run.losses.append(learner.update(pair.v1, pair.v2).loss)
        bar.update(1)
        bar.set_postfix(loss=f"{run.losses[-1]:.3f}")
    bar.close()
    run.keep_fraction = kept / total if total else 1.0
    return run
