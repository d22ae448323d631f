"""The contrastive learner the environment trains: encoders, projection head, NT-Xent, SimCLRLearner.

SimCLR (Chen et al. 2020) learns an encoder f by making the projections of two views of one image
agree and differ from those of the other images in the batch (the NT-Xent loss). ``SimCLRLearner``
holds encoder + head + optimizer, does one update per call, and reports the statistics the reward
definitions need (loss, optionally the loss on the same views after the update, the gradient norm,
and the update's gain on other, reference views) without extra forward passes for statistics nobody
asked for. Encoders come from a registry:
``small_cnn`` (the CPU default that passed the learnability floor: conv 32-64-128-256 with
BatchNorm) and ``resnet18`` (torchvision's, with the CIFAR stem). Views are float images in [0, 1].
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from corruption_env.precision import autocast, resolve_precision
from corruption_env.registry import Registry

# views are normalised inside the learner, so every caller can hand over images in [0, 1]
_MEAN, _STD = 0.5, 0.25

EncoderBuilder = Callable[[int], tuple[nn.Module, int]]
ENCODERS: Registry[EncoderBuilder] = Registry("encoder")
register_encoder = ENCODERS.register  # decorator: ``builder(in_channels) -> (module to (N, D) features, D)``
available_encoders = ENCODERS.names


def build_encoder(name: str, in_channels: int = 3) -> tuple[nn.Module, int]:
    return ENCODERS[name](in_channels)


@register_encoder("small_cnn")
def small_cnn(in_channels: int) -> tuple[nn.Module, int]:
    """conv 32-64-128-256 (3x3, no bias) + BatchNorm + ReLU, 2x max-pool after the first three, GAP.

    Where there is a max-pool the ReLU comes after it: the two commute exactly (values and gradients), and
    the ReLU then works on a quarter of the pixels (7 % of an fp32 update at one thread on an AVX2 CPU).
    """
    layers: list[nn.Module] = []
    widths = [in_channels, 32, 64, 128, 256]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b)]
        layers += [nn.MaxPool2d(2), nn.ReLU(inplace=True)] if i < 3 else [nn.ReLU(inplace=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), 256


@register_encoder("resnet18")
def resnet18(in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with the CIFAR stem (3x3 stride-1 first conv, no max-pool)."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


class ProjectionHead(nn.Sequential):
    """SimCLR's head: Linear -> BatchNorm1d -> ReLU -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128) -> None:
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Normalised-temperature cross entropy over 2B projections; the positive of z1[i] is z2[i].

    :param z1, z2: (B, D) projections of the two views.
    :return: mean loss over the 2B anchors.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, targets)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Forward passes inside leave BatchNorm running statistics untouched (momentum 0)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


@dataclass
class UpdateStats:
    """What one SimCLR update measured. Optional fields are None unless asked for.

    :param loss: NT-Xent on the batch before the update (the training loss).
    :param loss_after: NT-Xent on the same views after the update.
    :param grad_norm: L2 norm of the gradient of the update.
    :param reference_loss: NT-Xent on reference views before the update (the same weights, BatchNorm
        statistics untouched).
    :param reference_gain: NT-Xent on reference views before the update minus after it (the update
        itself is trained on the other views only).
    """

    loss: float
    loss_after: float | None = None
    grad_norm: float | None = None
    reference_loss: float | None = None
    reference_gain: float | None = None


class SimCLRLearner:
    """Encoder + projection head + optimizer; one :meth:`update` is one SimCLR step.

    :param encoder: registry name (:func:`available_encoders`).
    :param in_channels: channels of the views.
    :param temperature: NT-Xent temperature.
    :param lr: learning rate.
    :param optimizer: ``adam``, ``adamw`` or ``sgd`` (momentum 0.9).
    :param weight_decay: optimizer weight decay.
    :param projection_dim: output size of the projection head.
    :param device: torch device.
    :param seed: seed of the initial weights (see :meth:`reset`).
    :param precision: ``bf16`` runs the encoder and head under bf16 autocast (weights, optimizer state
        and the NT-Xent reduction stay fp32), ``fp32`` does not, ``auto`` picks (see
        :mod:`corruption_env.precision`).
    """

    OPTIMIZERS = ("adam", "adamw", "sgd")

    def __init__(self, encoder: str = "small_cnn", in_channels: int = 3, temperature: float = 0.5,
                 lr: float = 1e-3, optimizer: str = "adam", weight_decay: float = 0.0, projection_dim: int = 128,
                 device: str | torch.device = "cpu", seed: int = 0, precision: str = "fp32") -> None:
        if optimizer not in self.OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; available: {', '.join(self.OPTIMIZERS)}")
        if temperature <= 0 or lr <= 0:
            raise ValueError(f"temperature and lr must be > 0, got {temperature} and {lr}")
        build_encoder(encoder, in_channels)  # fail early on an unknown name
        self.encoder_name, self.in_channels = encoder, in_channels
        self.temperature, self.lr, self.optimizer_name = temperature, lr, optimizer
        self.weight_decay, self.projection_dim = weight_decay, projection_dim
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Fresh weights and optimizer, drawn from ``seed`` without touching torch's global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.encoder, self.feature_dim = build_encoder(self.encoder_name, self.in_channels)
            self.head = ProjectionHead(self.feature_dim, self.feature_dim, self.projection_dim)
        # channels_last: oneDNN's (and cuDNN's) fast convolution layout, 1.2-1.4x on this CPU (studies/env_speed.py)
        self.encoder.to(self.device, memory_format=torch.channels_last)
        self.head.to(self.device)
        params = list(self.encoder.parameters()) + list(self.head.parameters())
        if self.optimizer_name == "adam":
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        elif self.optimizer_name == "adamw":
            self.optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=0.9, weight_decay=self.weight_decay)
        self.updates = 0

    def _project(self, views: torch.Tensor) -> torch.Tensor:
        with autocast(self.precision, self.device):
            z = self.head(self.encoder((views.to(self.device) - _MEAN) / _STD))
        return z.float()  # NT-Xent's normalisation, similarities and softmax in fp32

    def _loss(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        z = self._project(torch.cat([v1, v2]))  # one forward: BatchNorm sees both views together
        return nt_xent(*z.chunk(2), self.temperature)

    def update(self, v1: torch.Tensor, v2: torch.Tensor, loss_after: bool = False, grad_norm: bool = False,
               reference: tuple[torch.Tensor, torch.Tensor] | None = None, reference_gain: bool = False) -> UpdateStats:
        """One optimizer step on NT-Xent(f(v1), f(v2)).

        :param loss_after: also measure the loss on the same views after the step (one more forward,
            BatchNorm statistics untouched).
        :param grad_norm: also report the gradient's L2 norm.
        :param reference: a pair of reference views to measure ``reference_loss`` on before the step (one
            more forward, BatchNorm statistics untouched; when they *are* (v1, v2), the training forward
            serves); the step does not train on them.
        :param reference_gain: also measure the loss on ``reference`` after the step (one more forward):
            ``reference_gain`` is before minus after.
        """
        same = reference is not None and reference[0] is v1 and reference[1] is v2
        reference_before = None if reference is None or same else self.loss(*reference)
        self.encoder.train()
        self.head.train()
        loss = self._loss(v1, v2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        stats = UpdateStats(loss=loss.item())
        if grad_norm:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            stats.grad_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        self.optimizer.step()
        self.updates += 1
        if loss_after:
            stats.loss_after = self.loss(v1, v2)
        if reference is not None:
            stats.reference_loss = stats.loss if same else reference_before
            if reference_gain:
                after = stats.loss_after if same and loss_after else self.loss(*reference)
                stats.reference_gain = stats.reference_loss - after
        return stats

    @torch.no_grad()
    def loss(self, v1: torch.Tensor, v2: torch.Tensor) -> float:
        """NT-Xent on (v1, v2) with batch statistics, as in training, without updating anything."""
        self.encoder.train()
        self.head.train()
        with frozen_batchnorm_stats(self.encoder), frozen_batchnorm_stats(self.head):
            return self._loss(v1, v2).item()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 512, batch_statistics: bool = False) -> torch.Tensor:
        """Encoder features (N, feature_dim) of images in [0, 1], in eval mode.

        :param batch_statistics: normalise each chunk of ``batch_size`` images with its own BatchNorm
            statistics, as in training (running statistics untouched), instead of the running ones: the
            features of the current weights alone, while the running statistics still lag behind them.
        """
        self.encoder.train(batch_statistics)
        with autocast(self.precision, self.device), frozen_batchnorm_stats(self.encoder):
            feats = [self.encoder((images[i:i + batch_size].to(self.device) - _MEAN) / _STD).float().cpu()
                     for i in range(0, images.shape[0], batch_size)]
        return torch.cat(feats) if feats else torch.zeros(0, self.feature_dim)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters()) + list(self.head.parameters())

    def state_dict(self) -> dict:
        return {"encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "optimizer": self.optimizer.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
