"""Degradation and masks: shapes, value ranges, exact keep fractions and seeded reproducibility."""
from __future__ import annotations

import pytest
import torch

from corruption_env.corruption import (apply_mask, bernoulli_mask, cowmask, degrade, random_training_masks,
                                       to_luminance, upsample_mask)


def test_degrade_shapes_and_luminance():
    x = torch.rand(4, 3, 32, 32)
    assert degrade(x, 2, "sr").shape == (4, 3, 16, 16)
    gray = degrade(x, 2, "sr_colorize")
    assert gray.shape == (4, 1, 16, 16) and 0 <= gray.min() and gray.max() <= 1
    assert degrade(x, 1, "colorize").shape == (4, 1, 32, 32)
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert to_luminance(white).min() > 0.99 and to_luminance(black).max() < 0.01
    # sr degradation is a box average: a constant image stays constant
    assert torch.allclose(degrade(torch.full((1, 3, 8, 8), 0.3), 4, "sr"), torch.full((1, 3, 2, 2), 0.3))


@pytest.mark.parametrize("task,scale,match", [("sr", 1, "needs scale"), ("colorize", 2, "scale=1"),
                                               ("sr_colorize", 3, "power of two"), ("denoise", 2, "valid tasks")])
def test_bad_task_or_scale_is_explained(task, scale, match):
    with pytest.raises(ValueError, match=match):
        degrade(torch.rand(1, 3, 32, 32), scale, task)


def test_mask_upsampling_is_nearest_and_apply_zeroes_dropped_cells():
    mask = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    pixels = upsample_mask(mask, (4, 4))
    assert pixels.shape == (1, 1, 4, 4)
    assert pixels[0, 0, :2, :2].eq(1).all() and pixels[0, 0, :2, 2:].eq(0).all()
    x = torch.rand(1, 1, 4, 4) + 0.1
    x_c, pm = apply_mask(x, mask)
    assert torch.equal(x_c, x * pixels) and x_c[0, 0, 2:, :2].eq(0).all()


def test_bernoulli_mask_rate_and_seed():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, b = bernoulli_mask(2000, 4, 0.25, g1), bernoulli_mask(2000, 4, 0.25, g2)
    assert torch.equal(a, b) and set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(float(a.mean()) - 0.25) < 0.02


def test_cowmask_keeps_exact_fraction_and_is_spatially_smooth():
    gen = torch.Generator().manual_seed(0)
    masks = cowmask(500, 8, keep_fraction=0.5, sigma=1.5, generator=gen)
    assert torch.equal(masks.sum((1, 2)), torch.full((500,), 32.0))
    # smoothing makes neighbouring cells agree more often than independent coin flips (50 %)
    agree = (masks[:, :, 1:] == masks[:, :, :-1]).float().mean()
    assert agree > 0.65
    per_sample = cowmask(3, 4, torch.tensor([0.25, 0.5, 1.0]), torch.tensor([0.5, 1.0, 2.0]), gen)
    assert per_sample.sum((1, 2)).tolist() == [4.0, 8.0, 16.0]


def test_training_masks_cover_the_keep_range():
    masks = random_training_masks(400, 4, torch.Generator().manual_seed(1))
    kept = masks.mean((1, 2))
    assert kept.min() >= 0.0 and kept.max() <= 1.0 and 0.5 < float(kept.mean()) < 0.75
