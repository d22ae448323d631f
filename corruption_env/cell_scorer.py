"""A parametric corruptor with room in it: a position-free cell scorer with a small convolutional net, its own keep
level and a temperature for drawing masks (``corruptor:cell_scorer``).

Three axes beyond the 4-weight cell rule (:class:`~corruption_env.whole_run.CellRule`), so that a search can
express more than "drop the cells of one kind at a fixed budget": **what** a cell is scored by (the rule's four
standardised pixel statistics plus ``CHANNELS`` features a two-layer 3x3 convolutional net computes on the
low-resolution image, pooled per cell and standardised the same way: the same weights for every cell, so the
scorer is position-free), **how much** is kept (the keep level, from a quarter of the cells up to every cell) and
**how surely** (a temperature: Gumbel noise of that size on the standardised scores before the top cells are
kept, so that one point is a distribution over masks per image, as random masks are, rather than one fixed
mask). Keeping everything (keep level 1) and the 4-weight rule at the default budget (level 0, temperature 0,
net's weights 0) are points of the space. The corruptor keeps the top cells itself (scores +1 kept, -1 dropped),
so it runs in an env without a keep budget (``--env-kwargs keep_budget:None``). The noise is drawn from a
generator seeded by the batch's pixels: candidates judged on the same run seed see the same noise on the same
batch (common random numbers), and one candidate on one seed always gets the same judge.
"""
from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from corruption_env.config import EnvConfig
from corruption_env.corruption import input_channels
from corruption_env.whole_run import CellRule, Observation, register_corruptor

KEEP_LEVELS = (0.25, 1.0)  # the keep fractions the keep level spans
DEFAULT_KEEP = 0.75  # the keep fraction at keep level 0 (the whole-run agents' default budget)
CHANNELS = 4  # the conv net's features per cell


def kept_fraction(keep_level: float) -> float:
    """The fraction of cells a keep level keeps: ``clip(0.75 + 0.25 * keep_level, 0.25, 1)``."""
    return float(np.clip(DEFAULT_KEEP + (1 - DEFAULT_KEEP) * keep_level, *KEEP_LEVELS))


def top_cells(scores: np.ndarray, keep: float) -> np.ndarray:
    """The action that keeps each image's top ``round(keep * cells)`` cells in an env without a keep budget: +1
    kept, -1 dropped, from ``scores`` of shape (images, cells) (ties to the first cell)."""
    kept = int(round(keep * scores.shape[1]))
    order = np.argsort(-scores, axis=1, kind="stable")
    action = -np.ones_like(scores, dtype=np.float32)
    np.put_along_axis(action, order[:, :kept], 1.0, axis=1)
    return action


@register_corruptor("cell_scorer")
class CellScorer(CellRule):
    """theta = [keep_level, temperature, the rule's 4 weights, the conv net's weights and biases, its ``CHANNELS``
    output weights]. The kept fraction is ``clip(0.75 + 0.25 * keep_level, 0.25, 1)`` of the cells (every cell
    from keep level 1 on); the temperature is ``max(temperature, 0)`` (0: the top cells, deterministically). It
    needs the per-image ``scores`` action mode and no keep budget."""

    keeps_own_level = True

    def __init__(self, config: EnvConfig) -> None:
        super().__init__(config)
        if config.keep_budget is not None:
            raise ValueError(f"a cell_scorer searches its own keep level: run it without a keep budget "
                             f"(--env-kwargs keep_budget:None), not keep_budget {config.keep_budget}")
        self.in_channels = input_channels(config.task)  # what the observation's images have
        c, k = self.in_channels, CHANNELS
        self.shapes = {"conv1_weight": (k, c, 3, 3), "conv1_bias": (k,), "conv2_weight": (k, k, 3, 3),
                       "conv2_bias": (k,), "out_weight": (k,)}

    @property
    def dim(self) -> int:
        return 2 + len(self.FEATURES) + sum(int(np.prod(s)) for s in self.shapes.values())

    def parameter_names(self) -> list[str]:
        names = ["keep_level", "temperature", *self.FEATURES]
        for name, shape in self.shapes.items():
            names += [f"{name}_{'_'.join(map(str, index))}" for index in np.ndindex(*shape)]
        return names

    def unpack(self, theta: np.ndarray) -> tuple[float, float, np.ndarray, dict[str, torch.Tensor]]:
        """theta -> keep fraction, temperature, rule weights, the net's tensors."""
        keep = kept_fraction(theta[0])
        net, at = {}, 2 + len(self.FEATURES)
        for name, shape in self.shapes.items():
            size = int(np.prod(shape))
            net[name] = torch.from_numpy(theta[at:at + size].reshape(shape).copy())
            at += size
        return keep, max(float(theta[1]), 0.0), theta[2:2 + len(self.FEATURES)], net

    def with_kept_fraction(self, theta: np.ndarray, fraction: float) -> np.ndarray:
        low, high = KEEP_LEVELS
        if not low <= fraction <= high:
            raise ValueError(f"a cell_scorer keeps {low} to {high} of the cells, not {fraction!r}")
        held = np.array(theta, copy=True)
        held[0] = (fraction - DEFAULT_KEEP) / (1 - DEFAULT_KEEP)  # the inverse of kept_fraction
        return held

    def net_features(self, images: np.ndarray, net: dict[str, torch.Tensor]) -> np.ndarray:
        """(B, g * g, CHANNELS) features of the conv net, pooled per cell, standardised over the batch's cells."""
        x = torch.from_numpy(images).float() / 255.0
        with torch.no_grad():
            h = F.relu(F.conv2d(x, net["conv1_weight"], net["conv1_bias"], padding=1))
            h = F.relu(F.conv2d(h, net["conv2_weight"], net["conv2_bias"], padding=1))
            cells = F.adaptive_avg_pool2d(h, self.grid).flatten(2).transpose(1, 2).numpy()  # (B, g*g, k)
        return (cells - cells.mean(axis=(0, 1))) / (cells.std(axis=(0, 1)) + 1e-6)

    def act(self, theta: np.ndarray, observation: Observation) -> np.ndarray:
        keep, temperature, rule, net = self.unpack(self.check(theta))
        images = observation["images"]
        scores = self.features(images) @ rule + self.net_features(images, net) @ net["out_weight"].numpy()
        scores = (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-6)
        if temperature > 0:
            rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(images).tobytes()))
            scores = scores + temperature * rng.gumbel(size=scores.shape)
        return top_cells(scores, keep).reshape(-1)
