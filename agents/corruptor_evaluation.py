"""Judge a corruptor the way a researcher would: by the encoder it trains.

For each row a fresh encoder (the same initialisation for every row of a seed) is trained for
``steps`` SimCLR updates in one CorruptionEnv whose masks come from that row's corruptor, then scored
by kNN and linear-probe accuracy on the test split. The rows: the agent, ``keep_all``, ``oracle`` on
a known-answer task (it drops exactly the planted cells), ``random`` at the agent's mean keep
fraction (under a keep budget: random masks at the budget), and two references: ``untrained`` (no
updates) and ``simclr_aug`` (plain SimCLR augmentations of the original images, no CAM-Net). Every
trained row goes through the same ``env.step`` loop, so paired rows see the same batches from the
same (non-held-out) images; ``simclr_aug`` only swaps the env's view maker for one that augments
the originals. ``keep_all`` and ``simclr_aug`` run with the keep budget lifted (keeping everything
is what they are). On a known-answer task every row also reports its keep rate on the planted
cells and on the other cells. ``is_readable`` is the floor check: if ``keep_all`` does not beat
``untrained`` by ``READABLE_MARGIN``, no comparison in the table means anything yet. The budget is lifted by
building their env from the config without it (the config is the budget's one owner; nothing patches an env):
their paired statistics, if any reward tracked needs them, compare with ``keep_all`` reference views.

Rows that do not depend on the agent (every row but the agent's) are the same for every run with
the same config, budget and seed: :class:`RowCache` keeps them, content-addressed by those, in a
folder the user can move (``CORRUPTION_ENV_CACHE``) or clear, so a second run pays only for its own row.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from agents import make_agent
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.corruption import apply_mask
from corruption_env.data import load_dataset
from corruption_env.evaluation import READABLE_MARGIN, encoder_accuracies, floor_holds
from corruption_env.files import atomic_write_json
from corruption_env.known_answer import is_known_answer
from corruption_env.precision import resolve_precision
from corruption_env.views import ViewMaker, decorruptor_weights

Act = Callable[[dict[str, np.ndarray]], np.ndarray]
# the main command's training budget (train_agent.py's default), sized so that it runs in under 10 minutes on a
# 2-core CPU without bf16 units (6.4 min measured, docs/training.md, "Default run"): PPO moves its keep fraction
# within 512 steps (0.50 -> 0.60). The evaluation's budget is the env preset's (EnvPreset.eval_steps: 250 updates
# clear the learnability floor by about 0.35 kNN on shapes); the known-answer and learning presets evaluate with 500
# updates, where the planted margins show (at 250 they do not)
DEFAULT_TRAIN_STEPS = 512
REFERENCES = ("untrained", "simclr_aug")  # rows that are not corruptors
UNBUDGETED = ("keep_all", "simclr_aug")  # rows that keep every cell whatever the keep budget


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
    keep_planted: float | None = None  # known-answer tasks: keep rate on the planted cells
    keep_other: float | None = None  # ... and on every other cell
    cached: bool = False  # read from the row cache rather than computed in this run


@dataclass(frozen=True)
class Row:
    """A row that does not depend on the agent: a registered fixed corruptor with its options, or a
    reference (``untrained``, ``simclr_aug``). ``name`` is what the table calls it."""

    name: str
    corruptor: str
    options: dict[str, Any] = field(default_factory=dict)


@functools.cache  # the code this process runs: read once, when the first row is cached
def code_version() -> str:
    """A hash of the source of every module a row's number can come from (the environment package and the agents
    package: env, views, CAM-Net, SimCLR, evaluation, the fixed corruptors), and of the numerical libraries'
    versions and the kernels torch chose for this CPU. Any edit to that code gives new rows, with no version to
    remember to bump."""
    import corruption_env

    digest = hashlib.sha256()
    for package in (Path(corruption_env.__file__).parent, Path(__file__).parent):
        for source in sorted(package.rglob("*.py")):
            digest.update(source.relative_to(package.parent).as_posix().encode())
            digest.update(source.read_bytes())
    digest.update(repr((torch.__version__, np.__version__, torch.backends.cpu.get_cpu_capability())).encode())
    return digest.hexdigest()[:20]


def file_digest(path: Path | None) -> str | None:
    """The SHA-256 of a file's content (None: no file)."""
    return None if path is None else hashlib.sha256(Path(path).read_bytes()).hexdigest()


class RowCache:
    """Finished rows that do not depend on the agent, one JSON file each, named by a hash of everything
    that changes the row: the evaluation's resolved config without its thread count, the update budget, the seed,
    the row and its options, the content of the decorruptor's weights (a checkpoint retrained at the same path is
    a new one) and the code that computes it (:func:`code_version`).

    :param folder: where the files go (default: ``$CORRUPTION_ENV_CACHE``, else
        ``~/.cache/corruption-env``, under ``eval-rows/``); delete it to start over.
    """

    def __init__(self, folder: str | Path | None = None) -> None:
        base = Path(folder) if folder is not None else Path(os.environ.get(
            "CORRUPTION_ENV_CACHE", Path.home() / ".cache" / "corruption-env"))
        self.folder = base.expanduser() / "eval-rows"

    def identity(self, config: EnvConfig, steps: int, seed: int, row: Row) -> dict[str, Any]:
        """Everything that changes the row's result, as JSON values."""
        settings = config.to_dict()
        settings.pop("num_threads")  # float noise only
        settings["precision"] = resolve_precision(config.precision, config.device)
        return json.loads(json.dumps({"code": code_version(), "config": settings, "steps": steps, "seed": seed,
                                      "row": asdict(row), "weights": file_digest(decorruptor_weights(config))},
                                     sort_keys=True, default=str))

    def path(self, identity: dict[str, Any]) -> Path:
        return self.folder / f"{hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]}.json"

    def get(self, identity: dict[str, Any]) -> RowResult | None:
        try:
            saved = json.loads(self.path(identity).read_text())
        except (OSError, ValueError):  # absent or damaged: computed again
            return None
        if saved.get("identity") != identity:  # a hash collision, however unlikely
            return None
        return RowResult(**{**saved["row"], "cached": True})

    def put(self, identity: dict[str, Any], result: RowResult) -> None:
        atomic_write_json(self.path(identity), {"identity": identity, "row": asdict(result)})


class CorruptorEvaluation:
    """Trains fresh encoders with different corruptors on one shared environment (CAM-Net loaded once).

    :param config: the environment configuration the agent was trained in. Evaluation episodes pay the
        default reward, not the training reward (whose statistics, e.g. ``reference_learner_rise``'s second
        learner, would double a row's cost for a return nobody is judged by); ``track_rewards`` are recorded.
    :param steps: SimCLR updates per row.
    :param seed: seed of the encoder initialisation, batches, codes and augmentations.
    :param progress: show a tqdm bar per row.
    :param track_rewards: reward definitions whose returns each row records (see EnvConfig.track_rewards).
    :param cache: where rows that do not depend on the agent are kept between runs (None: not kept).
    """

    def __init__(self, config: EnvConfig, steps: int, seed: int = 0, progress: bool = True,
                 track_rewards: str | list[str] = "free", cache: RowCache | None = None) -> None:
        self.config = config.replace(episode_length=max(steps, 1), record_timings=False, track_rewards=track_rewards,
                                     reward=EnvConfig.reward, reward_kwargs={})
        self.steps, self.seed, self.progress, self.cache = steps, seed, progress, cache
        self.env = CorruptionEnv(self.config)
        self._unbudgeted: CorruptionEnv | None = None
        kw = dict(root=config.data_root, image_size=config.image_size, channels=3, **config.dataset_options())
        self.train = load_dataset(config.dataset, split="train", **kw)
        self.test = load_dataset(config.dataset, split="test", **kw)

    def env_for(self, budget: bool) -> CorruptionEnv:
        """The env of a row: the evaluation's, or (``budget=False``) one built from its config without the keep
        budget (the same data, encoder initialisation and batches; made once, when first needed)."""
        if budget or self.config.keep_budget is None:
            return self.env
        if self._unbudgeted is None:
            self._unbudgeted = CorruptionEnv(self.config.without_budget())
        return self._unbudgeted

    def evaluate(self, row: Row) -> RowResult:
        """A fixed corruptor's or a reference's row, from the cache when it holds it."""
        env = self.env_for(budget=row.corruptor not in UNBUDGETED)
        identity = None if self.cache is None else self.cache.identity(env.config, self.steps, self.seed, row)
        cached = None if identity is None else self.cache.get(identity)
        if cached is not None:
            return cached
        if row.corruptor == "untrained":
            result = self.untrained()
        elif row.corruptor == "simclr_aug":
            result = self.simclr_aug()
        else:
            corruptor = make_agent(row.corruptor, env, seed=self.seed, **row.options)
            result = self.run_policy(row.name, agent_act(corruptor), budget=row.corruptor not in UNBUDGETED)
        if identity is not None:
            self.cache.put(identity, result)
        return result

    def run_policy(self, name: str, act: Act, budget: bool = True) -> RowResult:
        """Train an encoder in the env with masks from ``act(observation)``; score it.

        :param budget: in the env with the keep budget (False: in the one without it, e.g. ``keep_all``).
        """
        start, env = time.time(), self.env_for(budget)
        obs, _ = env.reset(seed=self.seed)
        keeps: list[float] = []
        returns: dict[str, float] = {}
        planted_keeps: list[tuple[float, float]] = []
        for _ in tqdm(range(self.steps), desc=f"eval {name}", leave=False, disable=not self.progress):
            obs, _, _, truncated, info = env.step(act(obs))
            keeps.append(info["keep_fraction"])
            if "keep_planted" in info:
                planted_keeps.append((info["keep_planted"], info["keep_other"]))
            add_returns(returns, info)
            if info["diverged"]:
                raise FloatingPointError(f"the SimCLR loss diverged after {len(keeps)} updates with {name}'s masks")
        acc = encoder_accuracies(env.learner, self.train, self.test)
        on_planted, on_other = np.mean(planted_keeps, axis=0) if planted_keeps else (None, None)
        return RowResult(name, acc["knn"], acc["linear"], float(np.mean(keeps)) if keeps else None,
                         round(time.time() - start, 1), returns,
                         None if on_planted is None else float(on_planted), None if on_other is None else float(on_other))

    def untrained(self) -> RowResult:
        self.env.reset(seed=self.seed)
        acc = encoder_accuracies(self.env.learner, self.train, self.test)
        return RowResult("untrained", acc["knn"], acc["linear"])

    def simclr_aug(self) -> RowResult:
        """Plain SimCLR augmentations of the original images: the same loop, batches and encoder
        initialisation as every other row, with the env's views made without CAM-Net."""
        env = self.env_for(budget=False)
        views = env.views
        env.views = OriginalImageViews(env, views)
        try:
            row = self.run_policy("simclr_aug", agent_act(make_agent("keep_all", env, seed=self.seed)), budget=False)
        finally:
            env.views = views
        row.keep_fraction = None  # no mask was applied
        return row


class OriginalImageViews:
    """Stands in for a CorruptionEnv's ViewMaker in the ``simclr_aug`` row: both views are the env's
    current full-resolution batch, augmented with the env's own augmentation (``view_augmentation``: SimCLR's set by
    default, the same the CAM-Net views get); everything else (degrading batches for observations, the held-out
    reference views) is the env's own view maker.

    :param env: the environment whose current batch (``_batch_full``) is restored.
    :param views: the env's own ViewMaker.
    """

    def __init__(self, env: CorruptionEnv, views: ViewMaker) -> None:
        cfg = env.config
        self.env, self.views = env, views
        self.plain = ViewMaker(None, cfg.task, cfg.scale, cfg.view_augmentation, cfg.image_size)

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


def reference_rows(config: EnvConfig, agent_keep: float | None = None) -> list[Row]:
    """The rows every agent is compared with: keep_all, the oracle on a known-answer task, random masks
    (at the keep budget, or else at ``agent_keep``), untrained and simclr_aug."""
    budget = config.keep_budget
    keep = budget if budget is not None else (1.0 if agent_keep is None else round(agent_keep, 2))
    rows = [Row("keep_all", "keep_all")]
    if is_known_answer(config.dataset_kwargs):  # a known-answer task: the known answer too
        rows.append(Row("oracle", "oracle"))
    rows += [Row(f"random(p={keep:.2f})", "random", {"keep_prob": keep}), Row("untrained", "untrained"),
             Row("simclr_aug", "simclr_aug")]
    return rows


def evaluate_agent(agent: Any, name: str, config: EnvConfig, steps: int, seed: int = 0,
                   deterministic: bool = False, progress: bool = True, done: list[RowResult] | None = None,
                   on_row: Callable[[RowResult], None] | None = None, cache: RowCache | None = None) -> list[RowResult]:
    """The full table for one agent: agent, keep_all, (oracle,) random at its keep fraction, untrained, simclr_aug.
    An agent whose answer is to keep every cell (``agent.keeps_everything``: a search that found nothing better)
    is evaluated without the keep budget, as the keep_all row is.

    :param done: rows already evaluated (in this order, e.g. before a Ctrl-C); they are not run again.
    :param on_row: called with each new row as soon as it is finished.
    :param cache: rows that do not depend on the agent are read from it when there, and kept in it.
    """
    evaluation = CorruptorEvaluation(config, steps, seed, progress, cache=cache)
    rows = list(done or [])
    if not rows:
        budget = not getattr(agent, "keeps_everything", False)
        rows.append(evaluation.run_policy(name, agent_act(agent, deterministic), budget=budget))
        if on_row is not None:
            on_row(rows[-1])
    for row in reference_rows(config, rows[0].keep_fraction)[len(rows) - 1:]:
        rows.append(evaluation.evaluate(row))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def is_readable(rows: list[RowResult]) -> bool:
    """The floor check: keep_all beats the untrained encoder by at least READABLE_MARGIN kNN accuracy."""
    by_name = {r.name: r for r in rows}
    return floor_holds([by_name["keep_all"].knn - by_name["untrained"].knn])


def format_rows(rows: list[RowResult], steps: int) -> str:
    """A Markdown table, with the floor check under it."""
    planted = any(r.keep_planted is not None for r in rows)  # a known-answer task
    extra = " keep on planted cells | keep on other cells |" if planted else ""
    lines = [f"| corruptor ({steps} SimCLR updates) | kNN | linear probe | keep fraction |{extra} seconds |",
             "|---|---|---|---|" + ("---|---|" if planted else "") + "---|"]

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for r in rows:
        rates = f" {cell(r.keep_planted)} | {cell(r.keep_other)} |" if planted else ""
        seconds = "cached" if r.cached else f"{r.seconds:.0f}"
        lines.append(f"| {r.name} | {r.knn:.3f} | {r.linear:.3f} | {cell(r.keep_fraction)} |{rates} {seconds} |")
    if is_readable(rows):
        lines.append("\nfloor check: keep_all beats the untrained encoder; the comparison is readable.")
    else:
        lines.append(f"\nfloor check FAILED: keep_all does not beat the untrained encoder by {READABLE_MARGIN}; "
                     "the comparison is not yet readable (raise --eval-steps).")
    return "\n".join(lines)


def rows_to_json(rows: list[RowResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
