"""Judge a corruptor the way a researcher would: by the encoder it trains.

For each row a fresh encoder (the same initialisation for every row of a seed) is trained for
``steps`` SimCLR updates in one CorruptionEnv whose masks come from that row's corruptor, then scored
by kNN and linear-probe accuracy on the test split. The rows: the agent, ``keep_all``, ``oracle`` on
a known-answer task (it drops exactly the planted shortcut's cells), ``random`` at the agent's mean
keep fraction, and two references: ``untrained`` (no updates) and ``simclr_aug``
(plain SimCLR augmentations of the original images, no CAM-Net). Every trained row goes through the
same ``env.step`` loop, so paired rows see the same batches from the same (non-held-out) images;
``simclr_aug`` only swaps the env's view maker for one that augments the originals. On a known-answer
task every row also reports its keep rate on the shortcut's cells and on the other cells.
``is_readable`` is the floor check: if ``keep_all`` does not beat ``untrained`` by
``READABLE_MARGIN``, no comparison in the table means anything yet.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from agents import make_agent
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.corruption import apply_mask
from corruption_env.data import load_dataset
from corruption_env.evaluation import READABLE_MARGIN, encoder_accuracies
from corruption_env.views import ViewMaker

Act = Callable[[dict[str, np.ndarray]], np.ndarray]


def add_returns(returns: dict[str, float], info: dict[str, Any]) -> None:
    """Add one step's ``info["reward_terms"]`` to running returns (the one place returns are summed)."""
    for term, value in info.get("reward_terms", {}).items():
        returns[term] = returns.get(term, 0.0) + value


@dataclass
class RowResult:
    """One row of an evaluation table."""

    name: str
    knn: float
    linear: float
    keep_fraction: float | None = None
    seconds: float = 0.0
    returns: dict[str, float] = field(default_factory=dict)  # summed reward terms over the run
    keep_planted: float | None = None  # known-answer tasks: keep rate on the planted shortcut's cells
    keep_other: float | None = None  # ... and on every other cell


class CorruptorEvaluation:
    """Trains fresh encoders with different corruptors on one shared environment (CAM-Net loaded once).

    :param config: the environment configuration the agent was trained in.
    :param steps: SimCLR updates per row.
    :param seed: seed of the encoder initialisation, batches, codes and augmentations.
    :param progress: show a tqdm bar per row.
    :param track_rewards: reward definitions whose returns each row records (see EnvConfig.track_rewards).
    """

    def __init__(self, config: EnvConfig, steps: int, seed: int = 0, progress: bool = True,
                 track_rewards: str | list[str] = "free") -> None:
        self.config = config.replace(episode_length=max(steps, 1), record_timings=False, track_rewards=track_rewards)
        self.steps, self.seed, self.progress = steps, seed, progress
        self.env = CorruptionEnv(self.config)
        kw = dict(root=config.data_root, image_size=config.image_size, channels=3, **config.dataset_options())
        self.train = load_dataset(config.dataset, split="train", **kw)
        self.test = load_dataset(config.dataset, split="test", **kw)

    def run_policy(self, name: str, act: Act) -> RowResult:
        """Train an encoder in the env with masks from ``act(observation)``; score it."""
        start = time.time()
        obs, _ = self.env.reset(seed=self.seed)
        keeps: list[float] = []
        returns: dict[str, float] = {}
        shortcut_keeps: list[tuple[float, float]] = []
        for _ in tqdm(range(self.steps), desc=f"eval {name}", leave=False, disable=not self.progress):
            obs, _, _, truncated, info = self.env.step(act(obs))
            keeps.append(info["keep_fraction"])
            if "keep_planted" in info:
                shortcut_keeps.append((info["keep_planted"], info["keep_other"]))
            add_returns(returns, info)
            if info["diverged"]:
                raise FloatingPointError(f"the SimCLR loss diverged after {len(keeps)} updates with {name}'s masks")
        acc = encoder_accuracies(self.env.learner, self.train, self.test)
        on_shortcut, on_other = np.mean(shortcut_keeps, axis=0) if shortcut_keeps else (None, None)
        return RowResult(name, acc["knn"], acc["linear"], float(np.mean(keeps)) if keeps else None,
                         round(time.time() - start, 1), returns,
                         None if on_shortcut is None else float(on_shortcut), None if on_other is None else float(on_other))

    def untrained(self) -> RowResult:
        self.env.reset(seed=self.seed)
        acc = encoder_accuracies(self.env.learner, self.train, self.test)
        return RowResult("untrained", acc["knn"], acc["linear"])

    def simclr_aug(self) -> RowResult:
        """Plain SimCLR augmentations of the original images: the same loop, batches and encoder
        initialisation as every other row, with the env's views made without CAM-Net."""
        views = self.env.views
        self.env.views = OriginalImageViews(self.env, views)
        try:
            row = self.run_policy("simclr_aug", agent_act(make_agent("keep_all", self.env, seed=self.seed)))
        finally:
            self.env.views = views
        row.keep_fraction = None  # no mask was applied
        return row


class OriginalImageViews:
    """Stands in for a CorruptionEnv's ViewMaker in the ``simclr_aug`` row: both views are the env's
    current full-resolution batch, augmented with SimCLR's standard set; everything else (degrading
    batches for observations, the held-out reference views) is the env's own view maker.

    :param env: the environment whose current batch (``_batch_full``) is restored.
    :param views: the env's own ViewMaker.
    """

    def __init__(self, env: CorruptionEnv, views: ViewMaker) -> None:
        cfg = env.config
        self.env, self.views = env, views
        self.plain = ViewMaker(None, cfg.task, cfg.scale, "simclr", cfg.image_size)

    def degrade(self, images: Any) -> Any:
        return self.views.degrade(images)

    def restore(self, x_lr: Any, mask: Any, generator: Any) -> tuple[Any, Any, Any]:
        full = self.env._batch_full  # the batch x_lr was degraded from
        return full, full, apply_mask(x_lr, mask)[0]

    def augment_pair(self, v1: Any, v2: Any, generator: Any) -> tuple[Any, Any]:
        return self.plain.augment_pair(v1, v2, generator)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.views(*args, **kwargs)


def agent_act(agent: Any, deterministic: bool = False) -> Act:
    """A single-env act function from anything with SB3's ``predict``."""
    return lambda obs: agent.predict(obs, deterministic=deterministic)[0]


def evaluate_agent(agent: Any, name: str, config: EnvConfig, steps: int, seed: int = 0,
                   deterministic: bool = False, progress: bool = True, done: list[RowResult] | None = None,
                   on_row: Callable[[RowResult], None] | None = None) -> list[RowResult]:
    """The full table for one agent: agent, keep_all, (oracle,) random at its keep fraction, untrained, simclr_aug.

    :param done: rows already evaluated (in this order, e.g. before a Ctrl-C); they are not run again.
    :param on_row: called with each new row as soon as it is finished.
    """
    evaluation = CorruptorEvaluation(config, steps, seed, progress)
    env = evaluation.env
    rows = list(done or [])

    def random_row() -> RowResult:
        keep = rows[0].keep_fraction if rows[0].keep_fraction is not None else 1.0
        return evaluation.run_policy(f"random(p={keep:.2f})",
                                     agent_act(make_agent("random", env, keep_prob=keep, seed=seed)))

    plan = [lambda: evaluation.run_policy(name, agent_act(agent, deterministic)),
            lambda: evaluation.run_policy("keep_all", agent_act(make_agent("keep_all", env, seed=seed))),
            random_row, evaluation.untrained, evaluation.simclr_aug]
    if env.train_planted_cells is not None:  # a known-answer task: the known answer too
        plan.insert(2, lambda: evaluation.run_policy("oracle", agent_act(make_agent("oracle", env, seed=seed))))
    for make_row in plan[len(rows):]:
        rows.append(make_row())
        if on_row is not None:
            on_row(rows[-1])
    return rows


def is_readable(rows: list[RowResult]) -> bool:
    """The floor check: keep_all beats the untrained encoder by at least READABLE_MARGIN kNN accuracy."""
    by_name = {r.name: r for r in rows}
    return by_name["keep_all"].knn >= by_name["untrained"].knn + READABLE_MARGIN


def format_rows(rows: list[RowResult], steps: int) -> str:
    """A Markdown table, with the floor check under it."""
    shortcut = any(r.keep_planted is not None for r in rows)  # a known-answer task
    extra = " keep on shortcut cells | keep on other cells |" if shortcut else ""
    lines = [f"| corruptor ({steps} SimCLR updates) | kNN | linear probe | keep fraction |{extra} seconds |",
             "|---|---|---|---|" + ("---|---|" if shortcut else "") + "---|"]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for r in rows:
        rates = f" {cell(r.keep_planted)} | {cell(r.keep_other)} |" if shortcut else ""
        lines.append(f"| {r.name} | {r.knn:.3f} | {r.linear:.3f} | {cell(r.keep_fraction)} |{rates} {r.seconds:.0f} |")
    if is_readable(rows):
        lines.append("\nfloor check: keep_all beats the untrained encoder; the comparison is readable.")
    else:
        lines.append(f"\nfloor check FAILED: keep_all does not beat the untrained encoder by {READABLE_MARGIN}; "
                     "the comparison is not yet readable (raise --eval-steps).")
    return "\n".join(lines)


def rows_to_json(rows: list[RowResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
