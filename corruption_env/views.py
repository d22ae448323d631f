"""From a batch and a mask to the two views SimCLR trains on.

This is the part of an environment step between the agent's mask and the learner, shared by the
environment, the evaluation of corruptors and the benchmarks so that all of them make views the
same way: degrade -> ``apply_mask`` -> a **decorruptor** restores the masked input twice with two
latent codes in one batched forward of 2B -> per-sample **view augmentation**. Decorruptors come from
a registry (``camnet``: a CAM-Net checkpoint, by default the one shipped for the dataset and task;
``bicubic``: upsampling, no latent code, for tests and ablations). Augmentations are kornia pipelines from a registry
(``simclr``: SimCLR's crop/flip/colour jitter/grayscale; ``gray``: for gray images; ``crop_flip``; ``none``). Every random draw
comes from a ``torch.Generator`` the caller owns, so a seeded episode reproduces exactly, and
``reference_views`` can replay a step's draws under another mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import kornia.augmentation as K
import torch
import torch.nn as nn

from corruption_env.camnet import load_camnet, shipped_checkpoint
from corruption_env.corruption import apply_mask, bicubic_restoration, check_task, degrade
from corruption_env.precision import autocast, resolve_precision
from corruption_env.registry import Registry


class Decorruptor(Protocol):
    """Restores masked degraded inputs; a different ``code`` gives a different restoration."""

    code_dim: int

    def __call__(self, x_c: torch.Tensor, pixel_mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor: ...


DecorruptorBuilder = Callable[..., Decorruptor]
DECORRUPTORS: Registry[DecorruptorBuilder] = Registry("decorruptor")
register_decorruptor = DECORRUPTORS.register  # ``builder(task, scale, image_size, dataset, checkpoint, device)``
available_decorruptors = DECORRUPTORS.names


def build_decorruptor(name: str, task: str, scale: int, image_size: int, dataset: str = "shapes",
                      checkpoint: str | Path | None = None, device: str | torch.device = "cpu") -> Decorruptor:
    """Build a registered decorruptor (``checkpoint`` overrides the shipped CAM-Net weights)."""
    return DECORRUPTORS[name](task=task, scale=scale, image_size=image_size, dataset=dataset,
                              checkpoint=checkpoint, device=device)


def camnet_weights(dataset: str, task: str, scale: int, checkpoint: str | Path | None) -> Path:
    """The CAM-Net checkpoint an env restores with: the one given, else the one shipped for (dataset, task, scale)."""
    return Path(checkpoint) if checkpoint else shipped_checkpoint(dataset, task, scale)


def decorruptor_weights(config: Any) -> Path | None:
    """The weights file the env of ``config`` (an EnvConfig) restores with; None for a decorruptor without weights."""
    if config.decorruptor != "camnet":
        return None
    return camnet_weights(config.dataset, config.task, config.scale, config.camnet_checkpoint)


@register_decorruptor("camnet")
def _camnet(task: str, scale: int, image_size: int, dataset: str, checkpoint: str | Path | None,
            device: str | torch.device) -> Decorruptor:
    model = load_camnet(camnet_weights(dataset, task, scale, checkpoint), device, expect_task=task, expect_scale=scale, expect_image_size=image_size)
    return model.to(memory_format=torch.channels_last)  # the fast convolution layout (see SimCLRLearner)


class BicubicDecorruptor(nn.Module):
    """Bicubic upsampling of the masked input (gray repeated to RGB); ignores the code."""

    code_dim = 0

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x_c: torch.Tensor, pixel_mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return bicubic_restoration(x_c, self.scale)


@register_decorruptor("bicubic")
def _bicubic(task: str, scale: int, image_size: int, dataset: str, checkpoint: str | Path | None,
             device: str | torch.device) -> Decorruptor:
    return BicubicDecorruptor(scale)


AugmentationBuilder = Callable[[int], nn.Module]
AUGMENTATIONS: Registry[AugmentationBuilder] = Registry("view augmentation")
register_augmentation = AUGMENTATIONS.register  # decorator: ``builder(image_size) -> per-sample kornia pipeline``
available_augmentations = AUGMENTATIONS.names


def build_augmentation(kind: str, image_size: int) -> nn.Module:
    """The registered per-sample augmentation ``kind`` for views of side ``image_size``."""
    return AUGMENTATIONS[kind](image_size)


def simclr_augmentation(image_size: int, crop_min: float = 0.5, jitter: float = 0.4) -> nn.Module:
    """SimCLR's set (Chen et al. 2020): random resized crop (scale ``crop_min``-1), flip, colour jitter (brightness,
    contrast and saturation ``jitter``, hue 0.1; p = 0.8), grayscale (p = 0.2)."""
    return nn.Sequential(K.RandomResizedCrop((image_size, image_size), scale=(crop_min, 1.0)),
                         K.RandomHorizontalFlip(), K.ColorJitter(jitter, jitter, jitter, 0.1, p=0.8),
                         K.RandomGrayscale(p=0.2))


@register_augmentation("simclr")
def _simclr(image_size: int) -> nn.Module:
    """SimCLR's set at its CIFAR strength: crop scale 0.5-1, flip, colour jitter 0.4 (p = 0.8), grayscale (p = 0.2)."""
    return simclr_augmentation(image_size)


@register_augmentation("gray")
def _gray(image_size: int) -> nn.Module:
    """SimCLR's set for gray images (Fashion-MNIST): a milder crop (scale 0.8-1) and twice the jitter (0.8; on gray
    images only brightness and contrast act). Chosen by learning curves on Fashion-MNIST
    (``docs/results/fashion_mnist/setup.md``): without jitter SimCLR tells gray images apart by their brightness
    (kNN 0.08 lower), and a stronger jitter and a milder crop each raise kNN."""
    return simclr_augmentation(image_size, crop_min=0.8, jitter=0.8)


@register_augmentation("crop_flip")
def _crop_flip(image_size: int) -> nn.Module:
    """Random resized crop (scale 0.5-1) and flip only."""
    return nn.Sequential(K.RandomResizedCrop((image_size, image_size), scale=(0.5, 1.0)), K.RandomHorizontalFlip())


@register_augmentation("none")
def _none(image_size: int) -> nn.Module:
    """No augmentation: the decorruptor's views as they are."""
    return nn.Identity()


def seeded(generator: torch.Generator, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Run ``fn`` (which draws from torch's global RNG, like kornia) with a seed taken from ``generator``,
    leaving the global RNG as it was."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn(x)


@dataclass
class Views:
    """The two views of a batch that SimCLR trains on."""

    v1: torch.Tensor
    v2: torch.Tensor


class ViewMaker:
    """Turns (images, cell mask) into two views: degrade, mask, restore twice, augment.

    :param decorruptor: a :class:`Decorruptor`, or None for the reference without a generator
        (both views are augmentations of the original images; the mask is ignored).
    :param task: degradation task (``sr``, ``colorize``, ``sr_colorize``).
    :param scale: downsampling factor.
    :param augmentation: a registered view augmentation (:func:`available_augmentations`).
    :param image_size: side of the full-resolution images.
    :param precision: ``bf16`` runs the decorruptor under bf16 autocast (its views are returned as
        fp32; an int8 CAM-Net, :mod:`corruption_env.camnet.quantize`, runs as it is), ``fp32`` does not,
        ``auto`` picks for ``device`` (see :mod:`corruption_env.precision`).
    :param device: where the decorruptor runs (only used to resolve ``auto``).
    """

    def __init__(self, decorruptor: Decorruptor | None, task: str, scale: int, augmentation: str,
                 image_size: int, precision: str = "fp32", device: str | torch.device = "cpu") -> None:
        check_task(task, scale)
        self.decorruptor, self.task, self.scale = decorruptor, task, scale
        self.augment = build_augmentation(augmentation, image_size)
        self.precision = resolve_precision(precision, device)

    def degrade(self, images: torch.Tensor) -> torch.Tensor:
        return degrade(images, self.scale, self.task)

    @torch.no_grad()
    def restore(self, x_lr: torch.Tensor, mask: torch.Tensor, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both restorations of the masked input in one forward of 2B: (v1, v2, x_c), before augmentation."""
        x_c, pixel_mask = apply_mask(x_lr, mask)
        b = x_c.shape[0]
        code = torch.randn(2 * b, self.decorruptor.code_dim, generator=generator).to(x_c.device)
        with autocast(self.precision, x_c.device):
            both = self.decorruptor(torch.cat([x_c, x_c]), torch.cat([pixel_mask, pixel_mask]), code).float()
        return both[:b], both[b:], x_c

    @torch.no_grad()
    def augment_pair(self, v1: torch.Tensor, v2: torch.Tensor, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Independent per-sample augmentations of both views (one pass over 2B images)."""
        both = seeded(generator, self.augment, torch.cat([v1, v2]))
        return both.chunk(2)

    def __call__(self, images: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator,
                 x_lr: torch.Tensor | None = None) -> Views:
        """Views of float images (B, 3, H, W) in [0, 1] under a (B, g, g) cell mask (None keeps all);
        pass ``x_lr`` if the degraded batch is already at hand."""
        if self.decorruptor is None:
            v1, v2 = images, images
        else:
            x_lr = self.degrade(images) if x_lr is None else x_lr
            if mask is None:
                mask = torch.ones(images.shape[0], 1, 1, device=images.device)
            v1, v2, _ = self.restore(x_lr, mask, generator)
        return Views(*self.augment_pair(v1, v2, generator))


def reference_views(views: ViewMaker, x_lr: torch.Tensor, reference_mask: torch.Tensor, stream: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A degraded batch ``x_lr`` under the reference corruption ``reference_mask``, restored and augmented from
    the generator state ``stream`` the agent's views were drawn from: the same latent codes, crops, flips and
    jitters, so the two pairs differ only where the masks differ."""
    generator = torch.Generator().set_state(stream)  # a copy: the caller's own stream moves on unchanged
    v1, v2, _ = views.restore(x_lr, reference_mask, generator)
    return views.augment_pair(v1, v2, generator)
