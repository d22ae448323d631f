"""Every knob of the environment in one dataclass, with presets and a JSON round trip.

``EnvConfig`` is what ``CorruptionEnv`` is built from and what every run saves next to its results,
so a run can be reproduced from its folder. ``EnvConfig.preset("cpu")`` is the default (sized for
two CPU cores); ``"gpu"`` is sized for real experiments. ``config.replace(**overrides)`` and
``EnvConfig.from_dict`` reject unknown keys with the list of valid ones.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from corruption_env.action_modes import ACTION_MODES
from corruption_env.corruption import budget_cells, check_task
from corruption_env.known_answer import PLANTED_KINDS
from corruption_env.precision import PRECISIONS


CHECKS: list[Callable[["EnvConfig"], None]] = []  # what validate() runs: registered by corruption_env.config_checks


@dataclass
class EnvConfig:
    """Configuration of :class:`corruption_env.env.CorruptionEnv`.

    :param dataset: image source, a name from ``corruption_env.data.available_datasets()``.
    :param data_root: directory holding a file-based dataset (unused by ``shapes``).
    :param dataset_kwargs: extra loader options (e.g. ``{"classes": 3}`` for shapes).
    :param image_size: side of the full-resolution images (views have this size).
    :param scale: downsampling factor of the degradation; observations are image_size / scale.
    :param task: ``sr_colorize`` (default: grayscale low-res in, colour high-res out), ``sr`` or ``colorize``.
    :param batch_size: images per step, B (the agent masks all of them).
    :param mask_grid: side g of the g x g mask grid over each low-resolution image.
    :param action_mode: what an action chooses (every mode ends in the same (B, g, g) mask): ``cells``
        (default: every cell of every image, ``MultiBinary(B * g * g)``), ``shared`` (one g x g mask for
        the whole batch, ``MultiBinary(g * g)``), ``family`` (a menu entry: mask family x keep level,
        ``MultiDiscrete([3, 4])``; the env draws the masks), ``scores`` (one real score per cell of every
        image, ``Box(B * g * g)``: the env keeps the ``keep_budget`` top-scoring cells of each image, or
        the cells scoring above 0 without a budget) or ``shared_scores`` (one g x g score map for the batch).
    :param keep_budget: None (default: the agent decides how many cells to keep) or a fraction: exactly
        round(keep_budget * g^2) cells are kept in every image and the agent decides *which*. Score
        actions keep their top cells; binary masks keep their kept cells first (ties broken at random
        from the env's seeded mask stream), so every corruptor respects it. Not with ``family``.
    :param reference_corruption: the corruption of the *reference views* that paired statistics compare the
        agent's views with (``reference_gain``, ``reference_loss``, the counterfactual updates): ``keep_all``,
        ``random`` (a uniformly random mask at the keep budget, from its own seeded stream) or ``auto``
        (default: ``random`` under a keep budget, where keeping every cell is not a choice the agent has;
        ``keep_all`` otherwise).
    :param episode_length: SimCLR updates per episode (the episode is truncated after it).
    :param decorruptor: ``camnet`` (the frozen generator) or ``bicubic`` (cheap, for tests/ablations).
    :param camnet_checkpoint: a CAM-Net checkpoint; None uses the one shipped for (dataset, task, scale).
    :param encoder: SimCLR encoder, ``small_cnn`` or ``resnet18``.
    :param temperature: NT-Xent temperature.
    :param lr: SimCLR learning rate.
    :param optimizer: ``adam``, ``adamw`` or ``sgd``.
    :param view_augmentation: augmentation applied on top of the decorruptor's views, a name from
        ``corruption_env.views.available_augmentations()``: ``simclr`` (crop, flip, colour jitter, grayscale),
        ``gray`` (the same with a milder crop and twice the jitter, for gray images), ``crop_flip`` or ``none``.
    :param reward: reward definition, a name from ``corruption_env.rewards.available_rewards()``.
    :param reward_kwargs: options of the reward (e.g. ``{"beta": 0.9}``; ``rescale`` and ``keep_penalty``
        wrap any reward, see ``corruption_env.rewards.make_reward``).
    :param track_rewards: reward definitions also evaluated every step and reported in
        ``info["reward_terms"]`` (not paid): ``"free"`` (default) those needing no statistic beyond
        the loss, ``"all"`` every registered one (adds their measurement costs) except those paying for
        a second SimCLR update (``Reward.extra_update``: ``docs/rewards.md`` marks them), or a list of names.
    :param heldout_size: training-split images set aside (never drawn for batches) for the held-out
        rewards; capped at a quarter of the split.
    :param record_timings: add ``info["seconds"]`` (wall-clock seconds per stage). Off by default
        because timings differ between runs, and Gymnasium's ``check_env`` requires identical infos
        for identical seeds; ``train_agent.py`` and the benchmarks turn it on.
    :param divergence_penalty: reward given on the step whose loss is not finite.
    :param device: torch device of CAM-Net and the learner (``cpu``, ``cuda``, ``cuda:1``).
    :param precision: ``auto`` (default: bf16 autocast where the hardware has native bf16, i.e. a CPU
        with AMX-BF16 or AVX512-BF16 or a CUDA device that supports it; fp32 elsewhere), ``bf16`` or
        ``fp32``. Covers CAM-Net's forward, the SimCLR forward/backward and feature extraction;
        weights, optimizer state and loss reductions stay fp32 (see ``corruption_env.precision``).
    :param camnet_quantize: run the frozen CAM-Net in int8 (PyTorch's x86 backend, calibrated on 256
        training images; see ``corruption_env.camnet.quantize``): None (default) where it runs, on the
        CPU, and not on a GPU; True (CPU only) or False to choose. It replaces ``precision`` for CAM-Net's
        forward (the SimCLR learner keeps ``precision``); no effect with other decorruptors. On by default
        because the learnability floor and the known-answer margins hold with it (docs/speed.md).
    :param num_threads: torch CPU threads in this process; None leaves torch's default.
    :param seed: seed of the first ``reset()`` called without one (None: fresh entropy).
    """

    dataset: str = "shapes"
    data_root: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 32
    scale: int = 2
    task: str = "sr_colorize"
    batch_size: int = 64
    mask_grid: int = 4
    action_mode: str = "cells"
    keep_budget: float | None = None
    reference_corruption: str = "auto"
    episode_length: int = 200
    decorruptor: str = "camnet"
    camnet_checkpoint: str | None = None
    encoder: str = "small_cnn"
    temperature: float = 0.5
    lr: float = 1e-3
    optimizer: str = "adam"
    view_augmentation: str = "simclr"
    reward: str = "ma_neg_loss_derivative"
    reward_kwargs: dict[str, Any] = field(default_factory=dict)
    track_rewards: str | list[str] = "free"
    heldout_size: int = 512
    record_timings: bool = False
    divergence_penalty: float = -1.0
    device: str = "cpu"
    precision: str = "auto"
    camnet_quantize: bool | None = None
    num_threads: int | None = None
    seed: int | None = None

    PRESETS: ClassVar[tuple[str, ...]] = ()  # the names of ENV_PRESETS (set below it)
    REFERENCE_CORRUPTIONS = ("auto", "keep_all", "random")

    def __post_init__(self) -> None:
        wrong = [f"{f.name}={getattr(self, f.name)!r} (expected {_type_name(hint)})"
                 for f, hint in zip(dataclasses.fields(self), _field_types(type(self)))
                 if not _has_type(getattr(self, f.name), hint)]
        if wrong:
            raise ValueError(f"EnvConfig: wrong type for {', '.join(wrong)}")
        positive = ("image_size", "scale", "batch_size", "mask_grid", "episode_length")
        bad = [f"{k}={getattr(self, k)!r}" for k in positive if not isinstance(getattr(self, k), int) or getattr(self, k) < 1]
        if bad:
            raise ValueError(f"EnvConfig: {', '.join(bad)} must be positive integers")
        if self.batch_size < 2:
            raise ValueError("EnvConfig: batch_size must be >= 2 (NT-Xent needs negatives)")
        low = self.image_size // self.scale
        if self.image_size % self.scale or low % self.mask_grid:
            raise ValueError(f"EnvConfig: image_size ({self.image_size}) / scale ({self.scale}) = {low} must be a "
                             f"whole multiple of mask_grid ({self.mask_grid}); change one of them")
        check_task(self.task, self.scale)
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"EnvConfig: unknown action_mode {self.action_mode!r}; available: {', '.join(ACTION_MODES)}")
        if self.keep_budget is not None:
            if not 0 < self.keep_budget <= 1:
                raise ValueError(f"EnvConfig: keep_budget must be None or a fraction in (0, 1], got {self.keep_budget}")
            if ACTION_MODES[self.action_mode].menu:
                raise ValueError(f"EnvConfig: action_mode {self.action_mode!r} chooses its own keep level; it takes no "
                                 f"keep_budget (use {', '.join(repr(m) for m, mode in ACTION_MODES.items() if not mode.menu)})")
        if self.reference_corruption not in self.REFERENCE_CORRUPTIONS:
            raise ValueError(f"EnvConfig: unknown reference_corruption {self.reference_corruption!r}; available: "
                             f"{', '.join(self.REFERENCE_CORRUPTIONS)}")
        if self.reference_corruption == "random" and self.keep_budget is None:
            raise ValueError("EnvConfig: reference_corruption 'random' draws masks at the keep budget; set keep_budget "
                             "(or use 'keep_all')")
        if self.precision not in PRECISIONS:
            raise ValueError(f"EnvConfig: unknown precision {self.precision!r}; available: {', '.join(PRECISIONS)}")
        if self.camnet_quantize is True and self.device.split(":")[0] != "cpu":
            raise ValueError(f"EnvConfig: camnet_quantize runs CAM-Net in int8 on the CPU only, but device is "
                             f"{self.device!r}; set camnet_quantize=False (on a GPU, precision 'bf16' is the fast "
                             "path)")
        if self.temperature <= 0 or self.lr <= 0:
            raise ValueError(f"EnvConfig: temperature ({self.temperature}) and lr ({self.lr}) must be > 0")

    def validate(self) -> "EnvConfig":
        """Check what construction does not (it stays cheap, loading nothing): names against their
        registries, reward and dataset options, tracked rewards, and that ``device`` exists on this
        machine. Raises a ValueError that names the fix; returns ``self``. The checks live above the
        registries they read (``corruption_env.config_checks``, registered when the package is imported), so
        this module sits below every one of them."""
        for check in CHECKS:
            check(self)
        return self

    @property
    def int8_camnet(self) -> bool:
        """Whether CAM-Net runs in int8: ``camnet_quantize``, resolved for the device (None: on the CPU)."""
        return self.device.split(":")[0] == "cpu" if self.camnet_quantize is None else self.camnet_quantize

    @property
    def keep_cells(self) -> int | None:
        """Cells kept per image under the keep budget (None: no budget)."""
        return None if self.keep_budget is None else budget_cells(self.keep_budget, self.mask_grid)

    def without_budget(self) -> "EnvConfig":
        """This config without its keep budget (what keeping every cell runs in: the keep_all rows, a search's
        keep-all candidate); reference views keep every cell too, as ``reference_corruption='auto'`` means there."""
        return self.replace(keep_budget=None, reference_corruption="keep_all")

    @property
    def resolved_reference(self) -> str:
        """``keep_all`` or ``random``: what ``reference_corruption='auto'`` means for this config."""
        if self.reference_corruption != "auto":
            return self.reference_corruption
        return "keep_all" if self.keep_budget is None else "random"

    @property
    def input_size(self) -> int:
        """Side of the low-resolution observation."""
        return self.image_size // self.scale

    def dataset_options(self) -> dict[str, Any]:
        """``dataset_kwargs`` for ``load_dataset``, with a planted pattern's grid set to ``mask_grid``."""
        options = dict(self.dataset_kwargs)
        for kind in (planted.prefix for planted in PLANTED_KINDS):
            if kind in options:
                grid = options.setdefault(f"{kind}_grid", self.mask_grid)
                if grid != self.mask_grid:
                    raise ValueError(f"dataset_kwargs {kind}_grid={grid} differs from mask_grid={self.mask_grid}: the "
                                     f"{kind}'s cells must be mask cells; leave {kind}_grid out")
        return options

    @classmethod
    def preset(cls, name: str = "cpu", **overrides: Any) -> "EnvConfig":
        """A row of :data:`ENV_PRESETS` (``cpu``: the defaults; ``gpu``; ``fashion_mnist``), then ``overrides``."""
        if name not in ENV_PRESETS:
            raise ValueError(f"unknown preset {name!r}; available: {', '.join(ENV_PRESETS)}")
        return cls(**ENV_PRESETS[name].overrides).replace(**overrides)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def replace(self, **overrides: Any) -> "EnvConfig":
        """A copy with some fields changed; unknown names raise a ValueError listing the valid ones."""
        unknown = sorted(set(overrides) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown EnvConfig key(s) {', '.join(unknown)}; valid keys: {', '.join(self.field_names())}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EnvConfig":
        return cls().replace(**values)

    def to_json(self, path: str | Path | None = None) -> str:
        """The config as JSON; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, source: str | Path) -> "EnvConfig":
        """Read a config from a JSON file path or a JSON string."""
        text, where = str(source), "config JSON"
        if not text.lstrip().startswith(("{", "[")):
            path, where = Path(source), f"config file {source}"
            if path.is_dir():
                raise FileNotFoundError(f"config file {path} is a directory; pass a JSON file of EnvConfig fields")
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            text = path.read_text()
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} is not valid JSON ({exc})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{where} must hold a JSON object of EnvConfig fields like {{\"batch_size\": 32}}, "
                             f"not a {type(values).__name__}")
        return cls.from_dict(values)


@dataclass(frozen=True)
class EnvPreset:
    """A named starting point for :class:`EnvConfig`.

    :param description: one line for ``--help``.
    :param overrides: the fields it sets (the rest keep their defaults).
    :param eval_steps: SimCLR updates an evaluated encoder needs on it for keep_all to clear the learnability floor
        (read from its learning curves): the CLIs' default ``--eval-steps``.
    """

    description: str
    overrides: dict[str, Any]
    eval_steps: int


ENV_PRESETS: dict[str, EnvPreset] = {
    "cpu": EnvPreset("the defaults: generated shapes, batch 64, small CNN, 2 CPU cores", {}, 250),
    "gpu": EnvPreset("batch 256, ResNet-18, 1000-update episodes, on CUDA",
                     {"batch_size": 256, "encoder": "resnet18", "episode_length": 1000, "device": "cuda"}, 2000),
    # chosen by learning curves on Fashion-MNIST (docs/results/fashion_mnist/setup.md): sr is the CAM-Net task of gray
    # images (there is no colour to restore), and the gray augmentation's stronger jitter is what makes SimCLR learn
    "fashion_mnist": EnvPreset("real images: Fashion-MNIST (offline, Debian's dataset-fashion-mnist), CAM-Net sr, "
                               "SimCLR's augmentations for gray images, 2 CPU cores",
                               {"dataset": "fashion_mnist", "task": "sr", "view_augmentation": "gray"}, 2000),
}
EnvConfig.PRESETS = tuple(ENV_PRESETS)


def _field_types(cls: type) -> list[Any]:
    hints = typing.get_type_hints(cls)
    return [hints[f.name] for f in dataclasses.fields(cls)]


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a field annotation (int for float is fine; bool is not a number here)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if origin is not None:  # dict[...], list[...]: the container type is enough here
        return isinstance(value, (list, tuple) if origin is list else origin)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return " or ".join(_type_name(a) for a in typing.get_args(hint)) if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else ("None" if hint is type(None) else getattr(hint, "__name__", str(hint)))


def check_device(name: str, hint: str = "") -> None:
    """Raise a ValueError naming the fix unless ``name`` is a torch device this machine has (``cpu``,
    ``cuda``, ``cuda:N``); ``hint`` is appended to the no-CUDA message. The one device check of every CLI."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} but torch sees no CUDA device on this machine; use device 'cpu' {hint}".strip())
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
