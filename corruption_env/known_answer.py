"""Known-answer tasks: patterns planted in mask cells of any dataset, so the best corruptor is known.

Two kinds (``load_dataset(..., shortcut="fixed" | "random")`` or ``distractor=...``, i.e.
``EnvConfig.dataset_kwargs``): a **shortcut**, a per-image barcode the two views agree on, which SimCLR
latches onto at the cost of the class features (Chen, Luo & Li 2021; Robinson et al. 2021), so dropping it
makes views harder; and a **distractor**, per-image fine noise the two views render differently, so
dropping it makes views easier. Either way the best corruptor is known: drop exactly the planted cells.
``ImageDataset.planted_cells`` says which cells those are, per image. ``fixed`` placement puts the pattern
in the same row of every image; ``random`` in the top or the bottom row per image, so only a corruptor that
reads the image can follow it. See :class:`Shortcut` and :class:`Distractor` for the geometry and strength.

:class:`PlantedCells` (``planted=...``) generalises both: a pattern of any registered kind (:class:`Pattern`:
``barcode``, ``noise``, ``grating``, ``stamp``; a new kind is one class) on any set of cells (a row, a column, a
block, scattered cells), fixed or drawn per image from a list of places. The task generator
(:mod:`corruption_env.task_generator`) draws such tasks; whether dropping the pattern *is* the answer there is
measured, not assumed.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from corruption_env.images import SPLITS, ImageDataset
from corruption_env.registry import Registry

PLACEMENTS = ("fixed", "random")
PLANTED_POSITIONS = ("bottom", "top", "left", "right")
PLANTED_LAYOUTS = ("band", "overlay")


class LoaderOptions:
    """The loader options of a planted kind: ``<prefix>`` (``fixed`` or ``random``) and ``<prefix>_<field>`` for its
    other dataclass fields (``EnvConfig.dataset_kwargs``)."""

    prefix: ClassVar[str] = ""

    @classmethod
    def options(cls) -> tuple[str, ...]:
        """Loader options of this kind: ``<prefix>`` and ``<prefix>_<field>``."""
        return (cls.prefix, *(f"{cls.prefix}_{f.name}" for f in dataclasses.fields(cls) if f.name != "kind"))

    @classmethod
    def from_options(cls, options: dict, image_size: int) -> "LoaderOptions | None":
        """Pop ``<prefix>`` and ``<prefix>_<field>`` from loader options; None if none is asked for."""
        kind = options.pop(cls.prefix, None)
        fields = {k.removeprefix(cls.prefix + "_"): options.pop(k) for k in cls.options()[1:] if k in options}
        if kind is None:
            if fields:
                raise ValueError(f"{cls.prefix} options {sorted(cls.prefix + '_' + k for k in fields)} given without "
                                 f"{cls.prefix}='fixed' or 'random'")
            return None
        planted = cls(kind, **fields)
        planted.check_size(image_size)
        return planted


@dataclass(frozen=True)
class Planted(LoaderOptions):
    """A per-image pattern planted in one row (or column) of mask cells: the geometry both known-answer
    kinds share. Subclasses draw the pattern (:meth:`strip`) and name their loader options (``prefix``).

    :param kind: ``fixed``: the pattern is in the same place in every image; ``random``: its place is
        drawn per image from ``positions`` (visible in the agent's observation, so only a corruptor that
        looks at the image can drop exactly it).
    :param contrast: 1.0 is black/white, smaller values are weaker (grayer) patterns.
    :param layout: ``overlay`` draws the pattern over the image; ``band`` first squeezes the image into the
        other rows (or columns), so the pattern hides nothing of it.
    :param positions: where the pattern may go: ``bottom``/``top`` (a row of cells) or ``left``/``right``
        (a column). Default: ``("bottom",)`` for ``fixed``, ``("bottom", "top")`` for ``random``.
    :param grid: side g of the mask grid the pattern's cells belong to (the environment's ``mask_grid``).
    :param seed: seed of the patterns and positions (train and test splits use different streams).
    """

    kind: str
    contrast: float = 1.0
    layout: str = "overlay"
    positions: tuple[str, ...] = ()
    grid: int = 4
    seed: int = 0

    prefix: ClassVar[str] = ""
    stream: ClassVar[int] = 0  # a different random stream per subclass

    def __post_init__(self) -> None:
        if self.kind not in PLACEMENTS:
            raise ValueError(f"unknown {self.prefix} {self.kind!r}; available: {', '.join(PLACEMENTS)} "
                             f"(leave it out for no {self.prefix})")
        if not self.positions:
            object.__setattr__(self, "positions", ("bottom",) if self.kind == "fixed" else ("bottom", "top"))
        object.__setattr__(self, "positions", tuple(self.positions))
        bad = [p for p in self.positions if p not in PLANTED_POSITIONS]
        if bad:
            raise ValueError(f"unknown {self.prefix} position(s) {bad}; available: {', '.join(PLANTED_POSITIONS)}")
        if self.kind == "fixed" and len(self.positions) != 1:
            raise ValueError(f"a fixed {self.prefix} has one position, got {list(self.positions)}; use "
                             f"{self.prefix}='random'")
        if self.layout not in PLANTED_LAYOUTS:
            raise ValueError(f"unknown {self.prefix} layout {self.layout!r}; available: {', '.join(PLANTED_LAYOUTS)}")
        if not isinstance(self.grid, int) or self.grid < 1 or not 0 < self.contrast <= 1:
            raise ValueError(f"{self.prefix}: grid ({self.grid}) must be a positive integer and contrast "
                             f"({self.contrast}) in (0, 1]")

    def check_size(self, image_size: int) -> None:
        if image_size % self.grid:
            raise ValueError(f"{self.prefix}: image_size {image_size} must be a multiple of grid ({self.grid})")

    def strip(self, rng: np.random.Generator, n: int, cell: int, size: int) -> np.ndarray:
        """The pattern of ``n`` images as gray levels in [0, 1], shaped (n, cell, size): one row of cells."""
        raise NotImplementedError

    def plant(self, data: ImageDataset, split: str) -> ImageDataset:
        """A copy of ``data`` with the pattern drawn into every image and ``planted_cells`` set."""
        n, _, size, _ = data.images.shape
        rng = np.random.default_rng([self.seed, SPLITS.index(split), self.stream])
        cell = size // self.grid
        levels = 0.5 + self.contrast * (self.strip(rng, n, cell, size) - 0.5)
        strip = (levels * 255.0).round().astype(np.uint8)
        where = rng.integers(0, len(self.positions), n)
        images = np.array(data.images)  # a writable copy
        cells = np.zeros((n, self.grid, self.grid), dtype=bool)
        for k, position in enumerate(self.positions):
            sel = where == k
            far = position in ("bottom", "right")
            band = slice(size - cell, size) if far else slice(0, cell)
            rest = slice(0, size - cell) if far else slice(cell, size)
            index = self.grid - 1 if far else 0
            if position in ("bottom", "top"):  # a row of cells
                if self.layout == "band":
                    images[sel, :, rest, :] = _squeeze(data.images[sel], size - cell, axis=2)
                images[sel, :, band, :] = strip[sel][:, None, :, :]
                cells[sel, index, :] = True
            else:  # a column of cells: the strip turned on its side
                if self.layout == "band":
                    images[sel, :, :, rest] = _squeeze(data.images[sel], size - cell, axis=3)
                images[sel, :, :, band] = strip[sel].transpose(0, 2, 1)[:, None, :, :]
                cells[sel, :, index] = True
        return dataclasses.replace(data, images=images, planted_cells=cells, planted_kind=self.prefix)


@dataclass(frozen=True)
class Shortcut(Planted):
    """A planted **shortcut**: a per-image random **barcode** the views agree on.

    Contrastive learning suppresses class features when an easier, view-consistent feature tells the
    instances apart (Chen, Luo & Li 2021; Robinson et al. 2021). The barcode is such a feature, built
    to survive the view pipeline: ``bits`` random bits per image (independent of the label) drawn as
    bars across the whole image width, mirrored about the centre (so a horizontal flip leaves it
    unchanged), full height of one cell row (CAM-Net keeps luminance in kept cells, and crops keep
    part of a full-width strip). At 32 px with 8 bits the 16 bars are 2 px wide. Measured: an encoder
    trained with random masks relies on it, so dropping it makes the views *harder*; dropping it is
    the known answer (the ``oracle`` corruptor).

    :param bits: random bits per barcode; ``image_size`` must be a multiple of ``2 * bits``.
    :param rows: barcodes stacked in the band, each ``cell / rows`` pixels thick (``rows * bits`` bits in all).
    """

    bits: int = 8
    rows: int = 1

    prefix: ClassVar[str] = "shortcut"
    stream: ClassVar[int] = 0x5C

    def __post_init__(self) -> None:
        super().__post_init__()
        if not all(isinstance(v, int) and v >= 1 for v in (self.bits, self.rows)):
            raise ValueError(f"shortcut: bits ({self.bits}) and rows ({self.rows}) must be positive integers")

    def check_size(self, image_size: int) -> None:
        if image_size % (2 * self.bits) or image_size % self.grid or (image_size // self.grid) % self.rows:
            raise ValueError(f"shortcut: image_size {image_size} must be a multiple of 2 x bits ({2 * self.bits}) "
                             f"and of grid ({self.grid}), and a cell ({image_size // self.grid} px) a multiple "
                             f"of rows ({self.rows})")

    def strip(self, rng: np.random.Generator, n: int, cell: int, size: int) -> np.ndarray:
        bits = rng.integers(0, 2, (n, self.rows, self.bits))
        bars = np.concatenate([bits, bits[:, :, ::-1]], axis=2)  # mirror-symmetric: a flip leaves it unchanged
        # each of the ``rows`` barcodes is cell / rows pixels thick, bars 2 px wide at 32 px
        return np.repeat(np.repeat(bars.astype(float), size // (2 * self.bits), axis=2), cell // self.rows, axis=1)


@dataclass(frozen=True)
class Distractor(Planted):
    """A planted **distractor**: per-image random fine-grained noise the two views do *not* agree on.

    A row of cells filled with random black and white squares of ``grain`` pixels (2 px at 32 px: one
    pixel of the agent's 16 px input). Unlike the barcode, nothing of it survives the view pipeline
    intact: the generator renders such out-of-distribution detail differently for each latent code,
    and random resized crops resample it differently in each view, so the two views disagree there.
    Dropping its cells makes the views *easier* from the start; dropping them is the known answer.

    :param grain: side of the noise squares in pixels (``image_size / grid`` must be a multiple of it).
    """

    grain: int = 2

    prefix: ClassVar[str] = "distractor"
    stream: ClassVar[int] = 0xD1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.grain, int) or self.grain < 1:
            raise ValueError(f"distractor: grain ({self.grain}) must be a positive integer")

    def check_size(self, image_size: int) -> None:
        if image_size % self.grid or (image_size // self.grid) % self.grain or image_size % self.grain:
            raise ValueError(f"distractor: image_size {image_size} must be a multiple of grid ({self.grid}), and a "
                             f"cell ({image_size // self.grid} px) a multiple of grain ({self.grain})")

    def strip(self, rng: np.random.Generator, n: int, cell: int, size: int) -> np.ndarray:
        squares = rng.integers(0, 2, (n, cell // self.grain, size // self.grain)).astype(float)
        return np.repeat(np.repeat(squares, self.grain, axis=1), self.grain, axis=2)


# ------------------------------------------------------------------------------------- patterns on any cells

class Pattern:
    """A kind of planted pattern for :class:`PlantedCells`: ``draw`` paints each image's pattern over a region of
    ``height`` x ``width`` pixels as gray levels in [0, 1]. One class per kind, registered with
    ``@register_pattern("name")``; ``size`` is its scale in pixels (bar width, grain, period).

    :cvar per_image: whether it differs between images (it can then tell them apart: a shortcut if the two views
        agree on it, a distractor if they do not); a pattern the same in every image carries no information.
    """

    name: ClassVar[str] = ""
    per_image: ClassVar[bool] = True

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"planted pattern {self.name!r}: size must be a positive integer (pixels), got {size!r}")
        self.size = size

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        raise NotImplementedError


PATTERNS: Registry[type[Pattern]] = Registry("planted pattern")
register_pattern = PATTERNS.register_named  # class decorator: ``@register_pattern("name")``


def _blocks(values: np.ndarray, size: int, height: int, width: int) -> np.ndarray:
    """(n, h', w') values repeated into size x size blocks and cut to (n, height, width)."""
    return np.repeat(np.repeat(values, size, axis=1), size, axis=2)[:, :height, :width].astype(float)


@register_pattern("barcode")
class BarcodePattern(Pattern):
    """Per-image random vertical bars ``size`` px wide, mirrored about the region's centre (a flip leaves them
    unchanged), in bands ``4 * size`` px tall with bits of their own: the shortcut's barcode on any region (a row
    of cells at size 2 is the named shortcut's geometry: one band of 8 bits at 32 px)."""

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        half, band = -(-width // (2 * self.size)), 4 * self.size
        bits = rng.integers(0, 2, (n, -(-height // band), half))
        bars = np.concatenate([bits, bits[:, :, ::-1]], axis=2)
        wide = np.repeat(np.repeat(bars, self.size, axis=2), band, axis=1)
        return wide[:, :height, (wide.shape[2] - width) // 2:][:, :, :width].astype(float)


@register_pattern("noise")
class NoisePattern(Pattern):
    """Per-image random black and white squares of ``size`` px: the distractor's noise on any region."""

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        squares = rng.integers(0, 2, (n, -(-height // self.size), -(-width // self.size)))
        return _blocks(squares, self.size, height, width)


@register_pattern("grating")
class GratingPattern(Pattern):
    """A per-image sinusoidal grating of period ``size`` px at a random orientation and phase: smooth, so views
    that keep it agree on it (a texture shortcut) when the period is large, and not when it is near the pixel."""

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        angle, phase = rng.uniform(0, np.pi, (n, 1, 1)), rng.uniform(0, 2 * np.pi, (n, 1, 1))
        y, x = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        return 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / self.size + phase)


@register_pattern("stamp")
class StampPattern(Pattern):
    """The same random mark of ``size`` px squares in every image (drawn once per region shape from a fixed
    stream): it carries nothing that tells images apart, so dropping it should neither help nor hurt beyond the
    cells it takes. A task planted with it is a control: its right answer may be to keep everything."""

    per_image = False

    def draw(self, rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
        mark = np.random.default_rng([height, width, self.size]).integers(0, 2, (1, -(-height // self.size),
                                                                              -(-width // self.size)))
        return np.broadcast_to(_blocks(mark, self.size, height, width), (n, height, width))


@dataclass(frozen=True)
class PlantedCells(LoaderOptions):
    """A planted pattern of any registered kind on any set of mask cells: the general known-answer task (the task
    generator draws them; ``dataset_kwargs={"planted": "fixed", "planted_pattern": "grating", ...}``).

    :param kind: ``fixed`` (every image uses the first place) or ``random`` (each image one of ``places``).
    :param pattern: a registered :class:`Pattern` (``barcode``, ``noise``, ``grating``, ``stamp``).
    :param size: the pattern's scale in pixels.
    :param places: where it may go: each a list of (row, column) cells of the ``grid``; the pattern is drawn over
        the place's bounding box and painted into its cells (over the image: ``overlay``).
    :param contrast: 1.0 is black/white, smaller values are grayer.
    :param grid: side g of the mask grid.
    :param seed: seed of the patterns and places (train and test splits use different streams).
    """

    kind: str
    pattern: str = "barcode"
    size: int = 2
    places: tuple = (((3, 0), (3, 1), (3, 2), (3, 3)),)
    contrast: float = 1.0
    grid: int = 4
    seed: int = 0

    prefix: ClassVar[str] = "planted"
    stream: ClassVar[int] = 0x9A

    def __post_init__(self) -> None:
        if self.kind not in PLACEMENTS:
            raise ValueError(f"unknown planted {self.kind!r}; available: {', '.join(PLACEMENTS)}")
        PATTERNS[self.pattern](self.size)  # an unknown kind lists the registered ones; a bad size is explained
        places = tuple(tuple((int(r), int(c)) for r, c in place) for place in self.places)
        object.__setattr__(self, "places", places)
        if not places or any(not place for place in places):
            raise ValueError("planted_places: give at least one place, each a non-empty list of [row, column] cells")
        outside = [cell for place in places for cell in place if not all(0 <= v < self.grid for v in cell)]
        if outside or not 0 < self.contrast <= 1:
            raise ValueError(f"planted: cells {outside} are outside the {self.grid} x {self.grid} grid, or contrast "
                             f"{self.contrast} is not in (0, 1]")
        if self.kind == "fixed" and len(places) != 1:
            raise ValueError(f"a fixed planted pattern has one place, got {len(places)}; use planted='random'")

    def check_size(self, image_size: int) -> None:
        if image_size % self.grid:
            raise ValueError(f"planted: image_size {image_size} must be a multiple of grid ({self.grid})")

    def plant(self, data: ImageDataset, split: str) -> ImageDataset:
        """A copy of ``data`` with the pattern drawn into every image's place and ``planted_cells`` set."""
        n, _, size, _ = data.images.shape
        rng = np.random.default_rng([self.seed, SPLITS.index(split), self.stream])
        cell = size // self.grid
        drawer = PATTERNS[self.pattern](self.size)
        where = rng.integers(0, len(self.places), n)
        images = np.array(data.images)
        cells = np.zeros((n, self.grid, self.grid), dtype=bool)
        for k, place in enumerate(self.places):
            sel = np.flatnonzero(where == k)
            rows, cols = [r for r, _ in place], [c for _, c in place]
            top, left = min(rows) * cell, min(cols) * cell
            height, width = (max(rows) + 1) * cell - top, (max(cols) + 1) * cell - left
            levels = 0.5 + self.contrast * (drawer.draw(rng, len(sel), height, width) - 0.5)
            patch = (levels * 255.0).round().astype(np.uint8)
            for r, c in place:
                y, x = r * cell - top, c * cell - left
                images[sel, :, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = \
                    patch[:, None, y:y + cell, x:x + cell]
                cells[sel, r, c] = True
        return dataclasses.replace(data, images=images, planted_cells=cells, planted_kind=self.prefix)


PLANTED_KINDS: tuple[type, ...] = (Shortcut, Distractor, PlantedCells)
PLANTED_OPTIONS = tuple(option for kind in PLANTED_KINDS for option in kind.options())


def is_known_answer(dataset_kwargs: dict) -> bool:
    """Whether these dataset options plant a pattern (a task whose answer, the oracle, is known)."""
    return bool(set(dataset_kwargs) & {kind.prefix for kind in PLANTED_KINDS})


def planted_from_options(options: dict, image_size: int) -> Planted | PlantedCells | None:
    """Pop every planted-pattern option from loader options; the pattern asked for (at most one kind) or None."""
    found = [p for p in (kind.from_options(options, image_size) for kind in PLANTED_KINDS) if p is not None]
    if len(found) > 1:
        raise ValueError(f"plant one known answer at a time: got {' and '.join(p.prefix for p in found)}")
    return found[0] if found else None


def _squeeze(images: np.ndarray, length: int, axis: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) images along one spatial axis (2 = height, 3 = width) to ``length`` pixels."""
    size = images.shape[2:]
    target = (length, size[1]) if axis == 2 else (size[0], length)
    chunk = torch.tensor(images, dtype=torch.float32)
    chunk = F.interpolate(chunk, size=target, mode="bilinear", antialias=True, align_corners=False)
    return chunk.round().clamp(0, 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------------------------- shapes

