"""The action modes in one table: what an action decides, its space, and how it becomes the (B, g, g) mask.

Every mode ends in the same mask of the batch (1 keeps a cell, 0 drops it), so everything after the mask
is unchanged. Each :class:`ActionMode` says once whether it is ``shared`` (one decision for the whole
batch), whether its actions are real ``scores`` (the env keeps the top cells) or a ``menu`` entry
(``family``), which per-image mode it is the batch-wide form of, its space, and how an action is checked
and turned into a mask. The env, the config, the policies, the fixed corruptors and the benchmark ask this
table (as SB3's ``make_proba_distribution`` is asked for a distribution) instead of comparing mode names.

| mode            | space                          | an action is                                                 |
|-----------------|--------------------------------|--------------------------------------------------------------|
| ``cells``       | ``MultiBinary(B * g * g)``     | every cell of every image, row-major over (B, g, g) (default) |
| ``shared``      | ``MultiBinary(g * g)``         | one g x g mask applied to every image of the batch           |
| ``family``      | ``MultiDiscrete([3, 4])``      | (mask family, keep level); the env draws one mask per image  |
| ``scores``      | ``Box(-10, 10, (B * g * g,))`` | a score per cell of every image: the k top cells are kept under a keep budget, those above 0 without one |
| ``shared_scores`` | ``Box(-10, 10, (g * g,))``   | one score map for the whole batch, kept as in ``scores``      |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from corruption_env.corruption import KEEP_LEVELS, MASK_FAMILIES, family_masks, top_k_mask

SCORE_BOUND = 10.0  # score actions lie in [-10, 10]: finite (SB3 needs it), wide (few ties at the bounds)


class SharedMaskSpace(spaces.MultiBinary):
    """``MultiBinary(g * g)`` of the ``shared`` action mode: one mask for every image of the batch. A
    subclass only so that policies can tell it from a ``cells`` space of the same size (B = 4, g = 2)."""


class SharedScoresSpace(spaces.Box):
    """``Box(-10, 10, (g * g,))`` of the ``shared_scores`` action mode: one score map for the batch (a
    subclass for the same reason as :class:`SharedMaskSpace`)."""


@dataclass(frozen=True)
class ActionMode:
    """One row of the table.

    :param name: the ``EnvConfig.action_mode`` value.
    :param shared: one decision for the whole batch (cannot drop different cells in different images).
    :param scores: actions are real scores per cell (the env keeps the top ones), not 0/1 keeps.
    :param menu: actions pick an entry of the mask family x keep level menu (no cells, no keep budget).
    :param per_image: the mode that decides the same thing per image (itself where it already does).
    :param space_type: the class of its action space (policies recognise the mode by it).
    """

    name: str
    shared: bool
    scores: bool
    menu: bool
    per_image: str
    space_type: type

    def space(self, batch: int, grid: int) -> gym.Space:
        n = grid * grid * (1 if self.shared else batch)
        if self.menu:
            return spaces.MultiDiscrete([len(MASK_FAMILIES), len(KEEP_LEVELS)])
        if self.scores:
            return self.space_type(-SCORE_BOUND, SCORE_BOUND, (n,), np.float32)
        return self.space_type(n)

    def action_shapes(self, batch: int, grid: int) -> tuple[tuple[int, ...], ...]:
        if self.menu:
            return ((2,),)
        return ((grid * grid,), (grid, grid)) if self.shared else ((batch * grid * grid,), (batch, grid, grid))

    def expected(self, batch: int, grid: int) -> str:
        """What a valid action looks like, for error messages."""
        b, g = batch, grid
        if self.menu:
            return (f"a family action: two integers (mask family 0..{len(MASK_FAMILIES) - 1} = "
                    f"{'/'.join(MASK_FAMILIES)}, keep level 0..{len(KEEP_LEVELS) - 1} = {'/'.join(map(str, KEEP_LEVELS))})")
        if self.scores:
            return (f"a score action: finite scores shaped ({g * g},) or ({g}, {g}) (one map for the batch)" if self.shared
                    else f"a score action: finite scores shaped ({b * g * g},) (row-major over batch {b} x grid "
                         f"{g} x {g}) or ({b}, {g}, {g})")
        if self.shared:
            return f"a shared MultiBinary action: 0/1 values shaped ({g * g},) or ({g}, {g}), any int/bool/float dtype"
        return (f"a MultiBinary action: 0/1 values shaped ({b * g * g},) (row-major over batch {b} x grid {g} x {g}) "
                f"or ({b}, {g}, {g}), any int/bool/float dtype")

    def to_mask(self, action: Any, batch: int, grid: int, keep_cells: int | None,
                generator: torch.Generator) -> torch.Tensor:
        """The (B, g, g) float mask an action stands for, under the keep budget (``keep_cells`` per image, or
        None). Menu masks, and ties of scores or of over-full binary masks, are drawn from ``generator``.
        Raises a ValueError naming what was expected for any other shape, dtype or value."""
        b, g = batch, grid
        expected = self.expected(b, g)
        array = np.asarray(action)
        if array.shape not in self.action_shapes(b, g):
            raise ValueError(f"expected {expected}; got shape {array.shape} (action_mode={self.name!r})")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"expected {expected}; got dtype {array.dtype}")
        if self.menu:
            if not self.space(b, g).contains(array.astype(np.int64)) or (array != np.round(array)).any():
                raise ValueError(f"expected {expected}; got {array.tolist()}")
            return family_masks(MASK_FAMILIES[int(array[0])], KEEP_LEVELS[int(array[1])], b, g, generator)
        if self.scores:
            if not np.isfinite(array).all():
                raise ValueError(f"expected {expected}; got non-finite scores")
            scores = torch.from_numpy(np.clip(array, -SCORE_BOUND, SCORE_BOUND).astype(np.float32))
            scores = scores.reshape(-1, g, g).expand(b, g, g)
            if keep_cells is None:
                return (scores > 0).float().contiguous()
        else:
            if not ((array == 0) | (array == 1)).all():
                bad = np.unique(array[(array != 0) & (array != 1)])[:5]
                raise ValueError(f"expected {expected}; got values {bad.tolist()} (threshold or round them first)")
            scores = torch.from_numpy(array.astype(np.float32)).reshape(-1, g, g).expand(b, g, g)
            if keep_cells is None or bool((scores.sum(dim=(1, 2)) == keep_cells).all()):
                return scores.contiguous()  # shared: the same mask for every image
        return top_k_mask(scores, keep_cells, generator, shared_ties=self.shared)


ACTION_MODES: dict[str, ActionMode] = {m.name: m for m in (
    ActionMode("cells", shared=False, scores=False, menu=False, per_image="cells", space_type=spaces.MultiBinary),
    ActionMode("shared", shared=True, scores=False, menu=False, per_image="cells", space_type=SharedMaskSpace),
    ActionMode("family", shared=False, scores=False, menu=True, per_image="family", space_type=spaces.MultiDiscrete),
    ActionMode("scores", shared=False, scores=True, menu=False, per_image="scores", space_type=spaces.Box),
    ActionMode("shared_scores", shared=True, scores=True, menu=False, per_image="scores", space_type=SharedScoresSpace),
)}


def action_mode_of(action_space: gym.Space) -> ActionMode:
    """The mode whose space ``action_space`` is (the most specific class wins: a SharedMaskSpace is ``shared``,
    not ``cells``); a ValueError for a space no mode has."""
    matches = [m for m in ACTION_MODES.values() if isinstance(action_space, m.space_type)]
    if not matches:
        raise ValueError(f"no action mode has the space {action_space}; modes: {', '.join(ACTION_MODES)}")
    return max(matches, key=lambda m: len(m.space_type.__mro__))
