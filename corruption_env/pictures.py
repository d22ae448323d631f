"""Pictures for people: grids of image batches for TensorBoard, ``env.render()`` and model cards.

Kept apart from the pipeline (views, CAM-Net) so that every module can draw without importing the
ones above it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def comparison_grid(batches: list[torch.Tensor], size: int, max_images: int = 8, padding: int = 2,
                    images_as_rows: bool = False) -> torch.Tensor:
    """One picture of several image batches: batch k is row k (or column k with ``images_as_rows``),
    showing its first ``max_images``, each resized (nearest) to ``size`` with gray expanded to RGB.
    Returns (3, H, W) float in [0, 1]."""
    import torchvision  # imported here: only drawing needs it

    tiles = []
    for batch in batches:
        batch = batch[:max_images].detach().float().cpu().clamp(0, 1)
        if batch.shape[-1] != size:
            batch = F.interpolate(batch, size=(size, size), mode="nearest")
        tiles.append(batch.expand(-1, 3, -1, -1))
    grid = torch.stack(tiles)  # (K, N, 3, size, size)
    if images_as_rows:
        grid = grid.transpose(0, 1)
    return torchvision.utils.make_grid(grid.flatten(0, 1), nrow=grid.shape[1], padding=padding, pad_value=1.0)
