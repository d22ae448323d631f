"""Generated known-answer tasks: many planted patterns, places and strengths, split by seed into a development set and
a held-out set.

Two kinds in four places (the named tasks of ``benchmarking.sweep.TASKS``) invited rules and judges that fit them.
:func:`generate_tasks` draws tasks from a wider space, each a :class:`~corruption_env.known_answer.PlantedCells`
pattern on the ``shapes`` images (or any dataset): a pattern kind (``barcode``, ``noise``, ``grating``, ``stamp``:
the registered :class:`~corruption_env.known_answer.Pattern` kinds), its scale, a contrast, and its places (a row, a
column, a corner block or four scattered cells, fixed in every image or drawn per image from two). Every place is 4
of the 16 cells, so that the keep budget of 0.75 lets the oracle drop exactly the pattern. Whether dropping it
*is* the answer on a task is measured (its margins oracle − keep_all and oracle − random), never assumed: a task
whose answer is not better than keeping everything is a "keep everything" task, where the right pick is no worse
than keep_all. Task ``i`` of a set is drawn from ``seed`` and ``i`` alone; even ``i`` go to the development set,
odd ``i`` to the held-out set, and nothing is tuned on the held-out set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from corruption_env.known_answer import PATTERNS

SPLITS = ("development", "heldout")
GRID = 4
KEEP_BUDGET = 0.75  # 12 of 16 cells: the oracle drops exactly the 4 planted ones
SIZES = {"barcode": (2, 4), "noise": (1, 2, 4), "grating": (2, 4, 8), "stamp": (2, 4)}  # pixels, at 32 px images
CONTRASTS = (1.0, 0.6, 0.3)
PLACE_FAMILIES = ("row", "column", "corner", "scattered")


def places_of(family: str, rng: np.random.Generator) -> list[list[list[int]]]:
    """Two different places of a family (each 4 cells of the 4 x 4 grid, as [row, column] lists)."""
    if family == "row":
        rows = rng.choice(GRID, 2, replace=False)
        return [[[int(r), c] for c in range(GRID)] for r in rows]
    if family == "column":
        cols = rng.choice(GRID, 2, replace=False)
        return [[[r, int(c)] for r in range(GRID)] for c in cols]
    if family == "corner":
        corners = rng.choice(4, 2, replace=False)
        return [[[r + 2 * (int(k) // 2), c + 2 * (int(k) % 2)] for r in range(2) for c in range(2)] for k in corners]
    if family == "scattered":
        cells = rng.permutation(GRID * GRID)[:8]
        return [sorted([int(i) // GRID, int(i) % GRID] for i in cells[:4]),
                sorted([int(i) // GRID, int(i) % GRID] for i in cells[4:])]
    raise ValueError(f"unknown place family {family!r}; available: {', '.join(PLACE_FAMILIES)}")


@dataclass(frozen=True)
class GeneratedTask:
    """One generated known-answer task.

    :param index: its index in the generated set (its split follows from it).
    :param pattern, size, contrast: the planted pattern (:class:`~corruption_env.known_answer.PlantedCells`).
    :param placement: ``fixed`` (the first place in every image) or ``random`` (one of two places per image).
    :param family: ``row``, ``column``, ``corner`` or ``scattered``.
    :param places: the places, each a list of [row, column] cells.
    :param seed: the seed of the patterns drawn into the images.
    """

    index: int
    pattern: str
    size: int
    contrast: float
    placement: str
    family: str
    places: tuple
    seed: int

    @property
    def split(self) -> str:
        return SPLITS[self.index % 2]

    @property
    def name(self) -> str:
        return (f"gen{self.index:02d}_{self.pattern}{self.size}_c{self.contrast:g}_{self.placement}_{self.family}")

    def overrides(self, dataset: str = "shapes") -> dict[str, Any]:
        """EnvConfig overrides of the task: the planted pattern, the keep budget, per-image score actions."""
        places = [list(map(list, place)) for place in (self.places if self.placement == "random" else self.places[:1])]
        return {"dataset": dataset, "keep_budget": KEEP_BUDGET, "action_mode": "scores",
                "dataset_kwargs": {"planted": self.placement, "planted_pattern": self.pattern,
                                   "planted_size": self.size, "planted_contrast": self.contrast,
                                   "planted_places": places, "planted_seed": self.seed}}


def generate_task(index: int, seed: int = 0) -> GeneratedTask:
    """Task ``index`` of the set drawn from ``seed`` (independent of every other index)."""
    rng = np.random.default_rng([seed, index, 0x7A5C])
    pattern = str(rng.choice(PATTERNS.names()))
    if pattern not in SIZES:
        raise ValueError(f"the generator has no sizes for planted pattern {pattern!r}; add it to SIZES")
    family = str(rng.choice(PLACE_FAMILIES))
    places = places_of(family, rng)
    return GeneratedTask(index=index, pattern=pattern, size=int(rng.choice(SIZES[pattern])),
                         contrast=float(rng.choice(CONTRASTS)), placement=str(rng.choice(("fixed", "random"))),
                         family=family, places=tuple(tuple(map(tuple, p)) for p in places),
                         seed=int(rng.integers(2**31)))


def generate_tasks(count: int, seed: int = 0, split: str | None = None) -> list[GeneratedTask]:
    """The first ``count`` tasks of the set drawn from ``seed`` (those of one ``split`` if given)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    tasks = [generate_task(i, seed) for i in range(count)]
    return [t for t in tasks if split is None or t.split == split]
