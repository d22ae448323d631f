"""Whole runs: a corruptor judged by the encoder that one whole SimCLR run with it trains, without labels.

A candidate corruptor is a point theta of a :class:`ParametricCorruptor`, a few parameters that turn every
observation into the env's action: one score per grid cell shared by every image (:class:`ScoreMap`), or a
position-free rule that scores each cell from its own pixels (:class:`CellRule`). :class:`WholeRun`
trains a fresh encoder for ``updates`` SimCLR updates with a candidate's masks and measures a **judge** at
the end: a periodic statistic of the held-out features, RankMe by default (Garrido et al. 2023; label-free).
Per-step label-free rewards are one-sided (right on a shortcut, wrong on a distractor, or the reverse); the
judge of a whole run with a fixed corruptor ranked the known answer first on both kinds (``docs/results.md``).
Candidates judged on the same ``seed`` see the same batches, latent codes, augmentations and held-out images
(common random numbers): their judges differ by their masks alone, and one candidate on one seed always gets
the same judge. :class:`WholeRunEnv` is the same as a Gymnasium environment, one step per whole run (action:
theta; reward: the judge): the bandit over corruptors beside :class:`~corruption_env.env.CorruptionEnv`, the
MDP over updates. Searches (``agents/search.py``), RL learners over runs and tests all call
:meth:`WholeRun.judge`.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from corruption_env.action_modes import ACTION_MODES, SCORE_BOUND
from corruption_env.config import EnvConfig
from corruption_env.env import CorruptionEnv
from corruption_env.registry import Registry
from corruption_env.statistics import STATISTICS, periodic_statistics

Observation = dict[str, np.ndarray]


class ParametricCorruptor:
    """A corruptor given by a vector theta of ``dim`` parameters (the "parametric corruptor" a search or an RL
    agent over whole runs explores; not to be confused with the ``family`` action mode's menu of mask families).
    Subclass it (``act``, ``dim``; check the config in ``__init__``) and register it with
    ``@register_corruptor("name")``. One instance serves every env of its grid and action mode, whatever their
    batch size: ``act`` reads the batch from the observation.

    :param config: the EnvConfig of the envs it acts in (its grid and action mode).
    :cvar scale: the natural size of a parameter: searches start their spread there.
    :cvar keeps_own_level: it chooses how many cells to keep itself (it runs in an env without a keep budget).
    """

    name: ClassVar[str] = ""
    scale: ClassVar[float] = 1.0
    keeps_own_level: ClassVar[bool] = False

    def __init__(self, config: EnvConfig) -> None:
        self.grid = config.mask_grid
        self.mode = ACTION_MODES[config.action_mode]
        if not self.mode.scores:
            raise ValueError(f"a {self.name} corruptor scores cells: it needs action_mode 'scores' or 'shared_scores' "
                             f"(with a keep_budget, the env keeps each image's top cells), not {self.mode.name!r}")

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def parameter_names(self) -> list[str]:
        """A name for each parameter, in theta's order (records name the chosen parameters by them)."""
        return [str(i) for i in range(self.dim)]

    def act(self, theta: np.ndarray, observation: Observation) -> np.ndarray:
        """The env's action for ``observation`` under parameters ``theta``."""
        raise NotImplementedError

    def with_kept_fraction(self, theta: np.ndarray, fraction: float) -> np.ndarray | None:
        """A copy of ``theta`` whose keep level keeps ``fraction`` of the cells; None for a corruptor without a keep
        level among its parameters (a search can hold a searched keep level there: ``first_stage_keep``)."""
        return None

    def check(self, theta: Any) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float32)
        if theta.shape != (self.dim,) or not np.isfinite(theta).all():
            raise ValueError(f"a {self.name} corruptor has {self.dim} finite parameters, got shape {theta.shape}")
        return theta


CORRUPTORS: Registry[type[ParametricCorruptor]] = Registry("parametric corruptor")


def register_corruptor(name: str) -> Callable[[type[ParametricCorruptor]], type[ParametricCorruptor]]:
    """Class decorator: register a parametric corruptor under ``name`` (its error messages say it)."""
    return CORRUPTORS.register_named(name)


available_corruptors = CORRUPTORS.names


def resolve_corruptor(name: str, config: EnvConfig) -> str:
    """``auto`` follows the action mode: one map for ``shared_scores``, a rule that reads each image's cells for
    ``scores``; any other name is itself."""
    if name == "auto":
        return "score_map" if ACTION_MODES[config.action_mode].shared else "cell_rule"
    return name


def make_corruptor(name: str, config: EnvConfig) -> ParametricCorruptor:
    """Parametric corruptor ``name`` (or ``auto``: :func:`resolve_corruptor`) for envs of ``config``."""
    return CORRUPTORS[resolve_corruptor(name, config)](config)


@register_corruptor("score_map")
class ScoreMap(ParametricCorruptor):
    """One score per grid cell, the same for every image: under the keep budget every image keeps the same top
    cells (a data-blind mask). theta is the g x g map, row-major."""

    scale = 1.0

    @property
    def dim(self) -> int:
        return self.grid * self.grid

    def parameter_names(self) -> list[str]:
        return [f"cell_{row}_{col}" for row in range(self.grid) for col in range(self.grid)]

    def act(self, theta: np.ndarray, observation: Observation) -> np.ndarray:
        scores = np.clip(self.check(theta), -SCORE_BOUND, SCORE_BOUND)
        return scores if self.mode.shared else np.tile(scores, len(observation["images"]))


def cell_pixels(images: np.ndarray, grid: int) -> np.ndarray:
    """(B, C, h, h) uint8 images -> (B, g * g, C * (h / g)^2) pixels in [0, 1] of each cell, row-major cells."""
    b, c, h, _ = images.shape
    side = h // grid
    cells = images.reshape(b, c, grid, side, grid, side).transpose(0, 2, 4, 1, 3, 5)
    return cells.reshape(b, grid * grid, c * side * side).astype(np.float32) / 255.0


@register_corruptor("cell_rule")
class CellRule(ParametricCorruptor):
    """A position-free rule: every cell of every image is scored by the same few weights from its own pixels,
    so it drops different cells in different images (where the pattern it recognises is) with a handful of
    parameters. A cell's features are four generic statistics of its pixels: mean, standard deviation, mean
    absolute difference between horizontal neighbours and between vertical neighbours (brightness, contrast,
    and gradient energy across and along rows), each standardised over the batch's cells; the score is
    theta . features. Under a keep budget only the order of scores matters, so the rule is theta's direction.
    It needs the per-image ``scores`` action mode."""

    FEATURES = ("mean", "std", "horizontal_gradient", "vertical_gradient")

    def __init__(self, config: EnvConfig) -> None:
        super().__init__(config)
        if self.mode.shared:
            raise ValueError("a cell_rule scores each image's own cells: it needs action_mode 'scores', not "
                             "'shared_scores' (one map for the whole batch)")

    @property
    def dim(self) -> int:
        return len(self.FEATURES)

    def parameter_names(self) -> list[str]:
        return list(self.FEATURES)

    def features(self, images: np.ndarray) -> np.ndarray:
        """(B, g * g, 4) standardised features of every cell."""
        b, c, h, _ = images.shape
        side = h // self.grid
        cells = cell_pixels(images, self.grid).reshape(b, self.grid * self.grid, c, side, side)
        across = np.abs(np.diff(cells, axis=4)).mean(axis=(2, 3, 4))
        along = np.abs(np.diff(cells, axis=3)).mean(axis=(2, 3, 4))
        raw = np.stack([cells.mean(axis=(2, 3, 4)), cells.std(axis=(2, 3, 4)), across, along], axis=-1)
        return (raw - raw.mean(axis=(0, 1))) / (raw.std(axis=(0, 1)) + 1e-6)

    def act(self, theta: np.ndarray, observation: Observation) -> np.ndarray:
        scores = self.features(observation["images"]) @ self.check(theta)
        return np.clip(scores, -SCORE_BOUND, SCORE_BOUND).astype(np.float32).reshape(-1)


@dataclass
class RunResult:
    """What one whole run with one corruptor gave.

    :param judge: the judge's value at the run's end, oriented so that higher is better (a judge that is better
        lower, a loss, is negated); NaN if the loss diverged.
    :param keep_fraction: mean keep fraction of its masks.
    :param keep_planted: on a known-answer task, the masks' keep rate on the planted cells (else None).
    :param keep_other: ... and on every other cell.
    :param final_loss: the NT-Xent loss of the last update.
    :param cpu_seconds: CPU time of the run (this process, all its threads).
    :param diverged: the loss became non-finite.
    :param judge_at: the judge after fewer updates of the same run, ``{updates: value}`` (``also_at``).
    :param measured: the other statistics asked for (``WholeRun(also_measure=...)``), as measured (not oriented),
        ``{updates: {name: value}}`` at ``also_at`` and at the run's end.
    :param cpu_seconds_at: the CPU time of the run up to each of ``also_at`` (what a run of that length costs).
    """

    judge: float
    keep_fraction: float
    keep_planted: float | None
    keep_other: float | None
    final_loss: float
    cpu_seconds: float
    diverged: bool = False
    judge_at: dict[int, float] = field(default_factory=dict)
    measured: dict[int, dict[str, float]] = field(default_factory=dict)
    cpu_seconds_at: dict[int, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


ANSWER_JUDGE = "planted_dropped"  # reads the answer: the share of planted cells the run's masks dropped


def check_judge(judge: str) -> None:
    """A judge is a periodic statistic (measured on the encoder at the run's end), or ``planted_dropped``, which
    reads a known-answer task's answer from the run's masks: for tests and checks of what a parametric corruptor
    can express, never a judge for research."""
    if judge not in periodic_statistics() and judge != ANSWER_JUDGE:
        raise ValueError(f"judge must be a periodic statistic ({', '.join(sorted(periodic_statistics()))}) or "
                         f"{ANSWER_JUDGE!r} (known-answer tasks: reads the answer), got {judge!r}")


class WholeRun:
    """Judge corruptors by whole SimCLR runs in one environment (CAM-Net loaded once, reused by every run).

    :param config: the environment of the runs (task, batch size, keep budget, action mode, ...). Runs pay the
        default reward and track nothing: only the judge is read.
    :param updates: SimCLR updates per run.
    :param judge: the periodic statistic measured at the run's end (``rankme``, or any other, e.g.
        ``probe_accuracy`` with labels as an upper reference); one that is better lower is negated.
    :param also_measure: other periodic statistics measured with it (``RunResult.measured``): the judge audit
        reads every judge from one run.
    """

    def __init__(self, config: EnvConfig, updates: int, judge: str = "rankme", also_measure: tuple[str, ...] = ()) -> None:
        if not isinstance(updates, int) or updates < 1:
            raise ValueError(f"updates per run must be an integer >= 1, got {updates!r}")
        check_judge(judge)
        self.config = config.replace(episode_length=updates, reward=EnvConfig.reward, reward_kwargs={},
                                     track_rewards=[], record_timings=False)
        self.updates, self.judge_name = updates, judge
        self.env = CorruptionEnv(self.config)
        if judge == ANSWER_JUDGE and self.env.train_planted_cells is None:
            raise ValueError(f"judge {ANSWER_JUDGE!r} reads the planted cells of a known-answer task: set "
                             "dataset_kwargs {'shortcut': ...} or {'distractor': ...}")
        self.statistic = None if judge == ANSWER_JUDGE else STATISTICS[judge](self.env)
        self.sign = 1.0 if self.statistic is None or self.statistic.higher_is_better else -1.0
        for name in also_measure:
            check_judge(name)
        self.measures = {name: STATISTICS[name](self.env) for name in also_measure if name != ANSWER_JUDGE}

    def judge(self, act: Callable[[Observation], np.ndarray], seed: int, also_at: tuple[int, ...] = (),
              until: Callable[[int, RunResult], bool] | None = None) -> RunResult:
        """Train a fresh encoder (initialised from ``seed``) for ``updates`` updates with masks from
        ``act(observation)`` on the batches, codes and augmentations of ``seed``; judge it. ``also_at``: judge it
        after these numbers of updates too (what a shorter run of a fixed corruptor would have given). ``until``:
        told at each of ``also_at`` what the run would give if it ended there (``until(updates, result)``); False
        ends it there, with that result (successive halving stops a run at a rung)."""
        start = time.process_time()
        obs, _ = self.env.reset(seed=seed)
        keeps, planted, other = [], [], []
        judge_at: dict[int, float] = {}
        measured: dict[int, dict[str, float]] = {}
        cpu_at: dict[int, float] = {}
        info: dict[str, Any] = {"loss": math.nan, "diverged": False}

        def result(judge: float) -> RunResult:
            return RunResult(judge, float(np.mean(keeps)), float(np.mean(planted)) if planted else None,
                             float(np.mean(other)) if other else None, float(info["loss"]),
                             time.process_time() - start, bool(info["diverged"]), dict(judge_at),
                             {k: dict(v) for k, v in measured.items()}, dict(cpu_at))

        for update in range(1, self.updates + 1):
            obs, _, _, _, info = self.env.step(act(obs))
            keeps.append(info["keep_fraction"])
            if "keep_planted" in info:
                planted.append(info["keep_planted"])
                other.append(info["keep_other"])
            if info["diverged"]:
                break
            if update in also_at and update < self.updates:
                cpu_at[update] = time.process_time() - start
                judge_at[update] = self._judge_now(planted)
                measured[update] = {name: float(m.measure()) for name, m in self.measures.items()}
                if until is not None and not until(update, result(judge_at[update])):
                    return result(judge_at[update])
        judge = math.nan if info["diverged"] else self._judge_now(planted)
        if not info["diverged"] and self.measures:
            measured[len(keeps)] = {name: float(m.measure()) for name, m in self.measures.items()}
        return result(judge)

    def _judge_now(self, planted: list[float]) -> float:
        """The judge of the encoder as it is now (the answer judge: of the masks so far), oriented."""
        if self.statistic is None:
            return 1.0 - float(np.mean(planted))
        return self.sign * float(self.statistic.measure())

    def judge_candidate(self, corruptor: ParametricCorruptor, theta: np.ndarray, seed: int) -> RunResult:
        theta = corruptor.check(theta)
        return self.judge(lambda obs: corruptor.act(theta, obs), seed)


class WholeRunEnv(gym.Env):
    """
    ## Description

    One step is one whole contrastive-learning run. The agent proposes a corruptor (the parameters theta of a
    :class:`ParametricCorruptor`); the environment trains a fresh encoder for ``updates`` SimCLR updates with its
    masks, in a :class:`~corruption_env.env.CorruptionEnv` of ``config``, and pays the **judge** of the encoder
    at the run's end (RankMe of the held-out features by default: label-free). It is the bandit over corruptors
    where ``CorruptionEnv`` is the MDP over updates: an RL agent learns over runs here as it learns over updates
    there.

    ## Action Space

    ``Box(-bound, bound, (dim,), float32)``: theta (``bound`` = :data:`~corruption_env.action_modes.SCORE_BOUND`
    for the score-valued corruptors; ``dim`` = g * g for ``score_map``).

    ## Observation Space

    ``Box(-inf, inf, (2,), float32)``: the share of this episode's runs done (0 at reset) and the judge of the
    last run (0 at reset).

    ## Rewards

    The judge of the run (higher is better). A run whose loss diverged pays ``divergence_judge``.

    ## Starting State

    ``reset(seed=s)`` draws the episode's run seed from ``s``; every run of the episode uses it (the same
    batches, latent codes, augmentations and encoder initialisation), so within an episode the rewards of two
    actions differ by their corruptors alone, and the same action earns the same reward.

    ## Episode End

    - Termination: never.
    - Truncation: after ``runs_per_episode`` runs.

    ## Arguments

    ``WholeRunEnv(config, corruptor="auto", updates=50, judge="rankme", runs_per_episode=8,
    divergence_judge=0.0)``. ``info`` of a step: ``judge``, ``keep_fraction``, ``run_seed``, ``diverged`` and on a
    known-answer task ``keep_planted`` / ``keep_other``; ``last_result`` holds the whole :class:`RunResult` (with
    its CPU time).

    ## Example

    >>> from corruption_env import EnvConfig
    >>> cfg = EnvConfig(batch_size=8, decorruptor="bicubic", action_mode="shared_scores", keep_budget=0.75)
    >>> env = WholeRunEnv(cfg, updates=2, runs_per_episode=2)
    >>> obs, info = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> round(float(obs[0]), 2), truncated
    (0.5, False)
    """

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig, corruptor: str | ParametricCorruptor = "auto", updates: int = 50,
                 judge: str = "rankme", runs_per_episode: int = 8, divergence_judge: float = 0.0) -> None:
        if not isinstance(runs_per_episode, int) or runs_per_episode < 1:
            raise ValueError(f"runs_per_episode must be an integer >= 1, got {runs_per_episode!r}")
        self.runs = WholeRun(config, updates, judge)
        self.corruptor = (corruptor if isinstance(corruptor, ParametricCorruptor) else
                          make_corruptor(corruptor, self.runs.config))
        self.runs_per_episode, self.divergence_judge = runs_per_episode, float(divergence_judge)
        self.action_space = spaces.Box(-SCORE_BOUND, SCORE_BOUND, (self.corruptor.dim,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.run_seed: int | None = None
        self.last_result: RunResult | None = None

    @property
    def config(self) -> EnvConfig:
        """The configuration of the runs."""
        return self.runs.config

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.run_seed = int(self.np_random.integers(2**31))
        self.done, self.last_judge = 0, 0.0
        return self._observation(), {"run_seed": self.run_seed}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.run_seed is None or self.done >= self.runs_per_episode:
            raise gym.error.ResetNeeded("call reset() before step() (and after an episode ends)")
        theta = np.asarray(action, dtype=np.float32)
        if theta.shape != self.action_space.shape:
            raise ValueError(f"expected an action of shape {self.action_space.shape}, got {theta.shape}")
        result = self.runs.judge_candidate(self.corruptor, np.clip(theta, -SCORE_BOUND, SCORE_BOUND), self.run_seed)
        reward = self.divergence_judge if result.diverged else result.judge
        self.done += 1
        self.last_judge = reward
        self.last_result = result  # with its CPU time, which info leaves out (a seeded step's info is reproducible)
        info = {"judge": reward, "keep_fraction": result.keep_fraction, "run_seed": self.run_seed,
                "diverged": result.diverged}
        if result.keep_planted is not None:
            info.update(keep_planted=result.keep_planted, keep_other=result.keep_other)
        return self._observation(), float(reward), False, self.done >= self.runs_per_episode, info

    def _observation(self) -> np.ndarray:
        return np.array([self.done / self.runs_per_episode, self.last_judge], dtype=np.float32)
