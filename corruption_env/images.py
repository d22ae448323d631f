"""Labelled images in memory: the type the dataset loaders return and the known-answer tasks plant into.

An :class:`ImageDataset` holds uint8 images shaped (N, C, H, W), int64 labels, the class names and, on a
known-answer task, the mask cells that carry the planted pattern. :mod:`corruption_env.data` loads such
sets and :mod:`corruption_env.known_answer` plants patterns into them; both need the type and the
``SPLITS`` a set is drawn from, so these live here, below both, and the loaders can plant without the
patterns importing the loaders back. ``to_unit`` turns the uint8 images into the float tensors in [0, 1]
the rest of the pipeline works on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image set held in memory.

    :param images: uint8 array (N, C, H, W), C = 1 (grayscale) or 3 (RGB).
    :param labels: int64 array (N,), values in ``range(len(class_names))``.
    :param class_names: one name per class.
    :param planted_cells: bool (N, g, g), the mask cells of each image that carry a planted pattern (a
        shortcut or a distractor: the cells the known answer drops); None when nothing was planted.
    :param planted_kind: ``shortcut`` or ``distractor`` (None when nothing was planted).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    planted_cells: np.ndarray | None = None
    planted_kind: str | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be shaped ({self.images.shape[0]},), got {self.labels.shape}")
        if self.planted_cells is not None and self.planted_cells.shape[0] != self.images.shape[0]:
            raise ValueError(f"planted_cells must have one (g, g) grid per image, got {self.planted_cells.shape}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def with_channels(self, channels: int) -> "ImageDataset":
        """Return the set with ``channels`` channels (grayscale repeated to RGB; RGB kept as is)."""
        have = self.images.shape[1]
        if have == channels:
            return self
        if have == 1 and channels == 3:
            return dataclasses.replace(self, images=np.repeat(self.images, 3, axis=1))
        raise ValueError(f"cannot turn {have}-channel images into {channels} channels")


def to_unit(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1] (a copy, safe for read-only arrays)."""
    return torch.tensor(np.asarray(images), dtype=torch.float32) / 255.0
