"""The corruption side of the pipeline: degrade an image, then drop cells of a mask grid.

``degrade`` turns a full-resolution RGB batch into what the agent sees and CAM-Net restores
(downsampled by ``scale``; the L channel of Lab for the colorization tasks). A mask is a
(B, g, g) grid of {0, 1} (1 = keep the cell); ``upsample_mask`` spreads it to pixels (nearest) and
``apply_mask`` zeroes the dropped cells. ``bernoulli_mask`` and ``cowmask`` (French et al. 2020,
"Milking CowMask for semi-supervised image classification") draw masks from a torch generator so
that fixed corruptors are reproducible. A **keep budget** keeps exactly k cells of every image:
``top_k_mask`` turns per-cell scores (or a binary mask, kept cells first) into such a mask, breaking
ties at random, and ``random_budget_mask`` draws a uniformly random k-subset per image.
``reference_mask`` is the reference corruption paired statistics compare the agent's mask with (every
cell kept, or a random mask at the budget). All images here are float tensors in [0, 1].
"""
from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

TASKS = ("sr", "colorize", "sr_colorize")
_COLOR_TASKS = ("colorize", "sr_colorize")


def check_task(task: str, scale: int) -> None:
    """Raise a ValueError naming the valid choices if (task, scale) is not a supported pair."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if scale < 1 or scale & (scale - 1):
        raise ValueError(f"scale must be a power of two >= 1, got {scale}")
    if task == "colorize" and scale != 1:
        raise ValueError("task 'colorize' keeps the resolution: use scale=1 (or task 'sr_colorize')")
    if task == "sr" and scale == 1:
        raise ValueError("task 'sr' needs scale >= 2")


def input_channels(task: str) -> int:
    """Channels of a degraded image: 1 (L) for the colorization tasks, 3 (RGB) for ``sr``."""
    return 1 if task in _COLOR_TASKS else 3


def to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """The L channel of CIE Lab, scaled to [0, 1]; (B, 3, H, W) -> (B, 1, H, W)."""
    return kornia.color.rgb_to_lab(rgb.clamp(0, 1))[:, :1] / 100.0


def downsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Average-pool by ``scale`` (box filter, the usual SR degradation); identity for scale 1."""
    return x if scale == 1 else F.avg_pool2d(x, scale)


def degrade(x: torch.Tensor, scale: int, task: str) -> torch.Tensor:
    """Low-resolution observation of RGB images ``x`` (B, 3, H, W) in [0, 1].

    :param scale: downsampling factor (H must be divisible by it).
    :param task: ``sr`` keeps RGB; ``colorize`` and ``sr_colorize`` keep only Lab's L channel.
    :return: (B, C', H/scale, W/scale) in [0, 1], C' = :func:`input_channels` (task).
    """
    check_task(task, scale)
    if x.shape[-1] % scale or x.shape[-2] % scale:
        raise ValueError(f"image size {tuple(x.shape[-2:])} is not divisible by scale {scale}")
    small = downsample(x, scale)
    return to_luminance(small) if task in _COLOR_TASKS else small


def bicubic_restoration(x_c: torch.Tensor, scale: int) -> torch.Tensor:
    """The non-learned reference restoration: bicubic upsampling by ``scale``, clamped to [0, 1], gray
    expanded to RGB (the ``bicubic`` decorruptor, and the bar CAM-Net's model card compares against)."""
    up = x_c if scale == 1 else F.interpolate(x_c, scale_factor=scale, mode="bicubic", align_corners=False)
    up = up.clamp(0, 1)
    return up.expand(-1, 3, -1, -1) if up.shape[1] == 1 else up


def upsample_mask(mask: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Spread a (B, g, g) cell mask to (B, 1, H, W) pixels by nearest-neighbour upsampling."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be shaped (B, g, g), got {tuple(mask.shape)}")
    return F.interpolate(mask[:, None].float(), size=size, mode="nearest")


def apply_mask(x_lr: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the dropped cells of ``x_lr`` (B, C, h, w); return (masked image, pixel mask (B, 1, h, w))."""
    pixel_mask = upsample_mask(mask, x_lr.shape[-2:])
    return x_lr * pixel_mask, pixel_mask


def budget_cells(keep_budget: float, grid: int) -> int:
    """Cells kept per image under a keep budget: round(keep_budget * grid**2), at least 1."""
    if not 0 < keep_budget <= 1:
        raise ValueError(f"keep_budget must be in (0, 1] (a fraction of the {grid}x{grid} cells), got {keep_budget}")
    return max(1, round(keep_budget * grid * grid))


def top_k_mask(scores: torch.Tensor, k: int, generator: torch.Generator | None = None,
               shared_ties: bool = False) -> torch.Tensor:
    """Keep the ``k`` highest-scoring cells of each image: (B, g, g) scores -> (B, g, g) float {0, 1} mask.

    Equal scores are ranked by a random permutation drawn from ``generator`` (the same one for every
    image if ``shared_ties``, so identical score maps give identical masks), never by position: an
    untrained policy whose scores are all equal must not keep the same cells every time.
    """
    b, g, _ = scores.shape
    n = g * g
    flat = scores.reshape(b, n).double()
    keys = torch.rand(1 if shared_ties else b, n, generator=generator).expand(b, n).to(flat.device)
    tiebreak = keys.argsort(dim=1)  # a random order of the cells
    ordered = flat.gather(1, tiebreak)
    rank = ordered.argsort(dim=1, descending=True, stable=True)  # stable: ties keep the random order
    keep = torch.zeros(b, n, device=flat.device)
    keep.scatter_(1, tiebreak.gather(1, rank[:, :k]), 1.0)
    return keep.reshape(b, g, g)


def random_budget_mask(batch: int, grid: int, k: int, generator: torch.Generator | None = None,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """A uniformly random set of ``k`` kept cells per image (random masks at a keep budget)."""
    return top_k_mask(torch.zeros(batch, grid, grid), k, generator).to(device)


def reference_mask(reference: str, mask: torch.Tensor, keep_cells: int | None,
                   generator: torch.Generator) -> torch.Tensor:
    """The reference corruption of a batch the agent masked with ``mask`` (``EnvConfig.resolved_reference``):
    ``keep_all`` keeps every cell; ``random`` draws a uniformly random mask of ``keep_cells`` cells per image
    (the keep budget) from ``generator``, the reference's own stream, so the agent's masks never shift it."""
    if reference == "keep_all":
        return torch.ones_like(mask)
    return random_budget_mask(mask.shape[0], mask.shape[1], keep_cells, generator, mask.device)


def bernoulli_mask(batch: int, grid: int, keep_prob: float | torch.Tensor,
                   generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """Keep each cell independently with probability ``keep_prob`` (a float or a (B,) tensor)."""
    keep = torch.as_tensor(keep_prob, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    noise = torch.rand(batch, grid, grid, generator=generator, device=device)
    return (noise < keep).float()


def cowmask(batch: int, grid: int, keep_fraction: float | torch.Tensor, sigma: float | torch.Tensor,
            generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """CowMask: Gaussian-smoothed noise thresholded so each mask keeps ``keep_fraction`` of its cells.

    :param keep_fraction: fraction of cells to keep, a float or a (B,) tensor, rounded to whole cells.
    :param sigma: smoothing scale in cells, a float or a (B,) tensor.
    """
    noise = torch.randn(batch, 1, grid, grid, generator=generator, device=device)
    sigma_t = torch.as_tensor(sigma, dtype=torch.float32, device=device).reshape(-1).expand(batch)
    kernel = 2 * math.ceil(3 * float(sigma_t.max())) + 1
    smooth = kornia.filters.gaussian_blur2d(noise, (kernel, kernel),
                                            torch.stack([sigma_t, sigma_t], dim=1).clamp_min(1e-3),
                                            border_type="replicate")
    frac = torch.as_tensor(keep_fraction, dtype=torch.float32, device=device).reshape(-1).expand(batch)
    keep_count = torch.round(frac * grid * grid).long()
    rank = smooth.reshape(batch, -1).argsort(dim=1, descending=True).argsort(dim=1)
    return (rank < keep_count[:, None]).float().reshape(batch, grid, grid)


def block_mask(batch: int, grid: int, keep_fraction: float, generator: torch.Generator | None = None,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """Drop one axis-aligned block of about ``(1 - keep_fraction) * grid**2`` cells at a random place per image
    (the smallest h x w block with h = ceil(sqrt(cells to drop)) that covers them)."""
    drop = round((1.0 - keep_fraction) * grid * grid)
    masks = torch.ones(batch, grid, grid, device=device)
    if drop == 0:
        return masks
    h = min(math.ceil(math.sqrt(drop)), grid)
    w = min(math.ceil(drop / h), grid)
    top = torch.randint(0, grid - h + 1, (batch,), generator=generator, device=device)
    left = torch.randint(0, grid - w + 1, (batch,), generator=generator, device=device)
    rows = torch.arange(grid, device=device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + h)
    in_cols = (rows[None] >= left[:, None]) & (rows[None] < left[:, None] + w)
    return masks.masked_fill(in_rows[:, :, None] & in_cols[:, None, :], 0.0)


# the ``family`` action mode's menu: an action (family index, keep-level index) draws one mask per image
MASK_FAMILIES = ("bernoulli", "cowmask", "block")
KEEP_LEVELS = (0.25, 0.5, 0.75, 1.0)
COWMASK_SIGMA = 1.0  # smoothing scale of the family menu's CowMasks, in cells


def family_masks(family: str, keep: float, batch: int, grid: int, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """(batch, grid, grid) masks of one family of :data:`MASK_FAMILIES` at keep fraction ``keep``."""
    if family == "bernoulli":
        return bernoulli_mask(batch, grid, keep, generator, device)
    if family == "cowmask":
        return cowmask(batch, grid, keep, COWMASK_SIGMA, generator, device)
    if family == "block":
        return block_mask(batch, grid, keep, generator, device)
    raise ValueError(f"unknown mask family {family!r}; available: {', '.join(MASK_FAMILIES)}")


def random_training_masks(batch: int, grid: int, generator: torch.Generator,
                          keep_range: tuple[float, float] = (0.25, 1.0), sigma_range: tuple[float, float] = (0.5, 1.5),
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Half Bernoulli, half CowMask masks with keep fractions ~ U(keep_range): CAM-Net's training corruption."""
    lo, hi = keep_range
    keep = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device)
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * torch.rand(batch, generator=generator, device=device)
    use_cow = torch.rand(batch, generator=generator, device=device) < 0.5
    masks = bernoulli_mask(batch, grid, keep, generator, device)
    cow = cowmask(batch, grid, keep, sigma, generator, device)
    return torch.where(use_cow[:, None, None], cow, masks)
