"""Reward definitions: what the corruptor is paid for, as pluggable, benchmarkable objects.

A reward sees one :class:`StepStats` per environment step and returns a float. It declares which
statistics it reads (``needs``: names from :mod:`corruption_env.statistics`, where each says what it
costs) so the environment measures only those. Rewards that read labels (``uses_labels``) are upper
references for the label-free ones, not self-supervised rewards. Write your own by subclassing
:class:`Reward` (override ``__call__``, and ``reset`` if it keeps state) and decorating it with
``@register_reward("name")``; ``gym.make("CorruptionEnv-v0", reward="name")`` then uses it. The paid
reward and the tracked ones of an env live in one :class:`RewardSet`. Measured numbers about each
reward are in ``docs/results.md``, not here: docstrings say what a reward is.

Built-ins follow the curriculum-learning literature's progress signals (Graves et al. 2017,
"Automated Curriculum Learning for Neural Networks"; Matiisen et al. 2017, "Teacher-Student
Curriculum Learning"), and ``make_reward`` can wrap any of them in Graves's quantile rescaling or an
ADIOS-style keep-fraction penalty (Shi et al. 2022).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, ClassVar

import numpy as np

from corruption_env.registry import Registry, doc_summary
from corruption_env.statistics import StepStats, periodic_statistics

class Reward:
    """Base class of reward definitions.

    :cvar needs: statistics this reward reads (names from ``corruption_env.statistics.available_statistics()``).
    :cvar uses_labels: True for rewards that read class labels (upper references, not self-supervised).
    :cvar extra_update: True for rewards that pay for a second, counterfactual SimCLR update every step;
        ``track_rewards="all"`` leaves them out (they would double a benchmark's cost): name them.
    :cvar reads_answer: True for rewards that read a known-answer task's planted cells (checks of learners,
        on known-answer tasks only); ``track_rewards="free"``/``"all"`` leave them out: name them.
    :ivar measure_every: for periodic statistics, the interval K in steps at which the env measures them.
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    uses_labels: ClassVar[bool] = False
    extra_update: ClassVar[bool] = False
    reads_answer: ClassVar[bool] = False
    measure_every: int = 1

    @property
    def credit_horizon(self) -> int:
        """How many of the latest steps' actions one paid value reflects: 1 for a reward paid for this
        step's update, K for one measured every K steps. Agents set their discount from it by default
        (``agents.credit_gamma``: gamma = 1 - 1 / horizon, i.e. immediate credit for per-step rewards)."""
        return self.measure_every

    def reset(self, initial: StepStats | None = None) -> None:
        """Start of an episode. ``initial`` holds the periodic statistics measured before the first
        update (for rewards that compare against the episode's start); stateless rewards ignore it."""

    def __call__(self, stats: StepStats) -> float:
        raise NotImplementedError


RewardFactory = Callable[..., Reward]
REWARDS: Registry[RewardFactory] = Registry("reward")
register_reward = REWARDS.register  # decorator for a Reward subclass (or any factory returning a Reward)
available_rewards = REWARDS.names


def make_reward(name: str, rescale: bool = False, keep_penalty: float = 0.0, **kwargs: Any) -> Reward:
    """Build a registered reward.

    :param name: registry name (:func:`available_rewards`).
    :param rescale: wrap it in :class:`QuantileRescaled` (Graves's 20th/80th-percentile scaling to [-1, 1]).
    :param keep_penalty: if > 0, subtract :class:`KeepFractionPenalty` with this weight.
    :param kwargs: the reward's own options (e.g. ``beta`` for ``ma_neg_loss_derivative``).
    """
    factory = REWARDS[name]
    try:
        reward = factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"reward {name!r} does not accept options {sorted(kwargs)}: {exc}") from exc
    if rescale:
        reward = QuantileRescaled(reward)
    if keep_penalty > 0:
        reward = KeepFractionPenalty(reward, weight=keep_penalty)
    return reward


@register_reward("neg_loss_delta")
class NegLossDelta(Reward):
    """The raw negative loss derivative d_t = -(L_t - L_{t-1}); 0 on the first step (Graves et al.'s
    loss-driven progress without smoothing)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, initial: StepStats | None = None) -> None:
        self.previous_loss: float | None = None

    def __call__(self, stats: StepStats) -> float:
        delta = 0.0 if self.previous_loss is None else -(stats.loss - self.previous_loss)
        self.previous_loss = stats.loss
        return delta


@register_reward("ma_neg_loss_derivative")
class MovingAverageNegLossDerivative(NegLossDelta):
    """Learning progress as a moving average of the negative loss derivative (the default).

    d_t = -(L_t - L_{t-1}) (d_1 = 0: no previous loss), r_t = beta * r_{t-1} + (1 - beta) * d_t, r_0 = 0.

    Caveat: summed over an episode, the return telescopes to about (L_1 - L_T), so it ranks policies by
    how low the *training* loss ends, i.e. by how easy their views are, and its per-step noise is far
    larger than the differences between keep levels (measurements in ``docs/results.md``). Maximising it
    pushes toward easy, nearly identical views (the InfoMin failure). Compare it with ``heldout_gain``
    and ``probe_accuracy`` in the benchmark.

    :param beta: smoothing factor in [0, 1).
    """

    def __init__(self, beta: float = 0.9) -> None:
        if not 0 <= beta < 1:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.reset()

    def reset(self, initial: StepStats | None = None) -> None:
        super().reset(initial)
        self.average = 0.0

    def __call__(self, stats: StepStats) -> float:
        self.average = self.beta * self.average + (1 - self.beta) * super().__call__(stats)
        return self.average


@register_reward("planted_dropped")
class PlantedDropped(Reward):
    """The fraction of a known-answer task's planted cells that the mask dropped (**reads the answer**): a
    check that a learner learns a reward that is right by construction, on known-answer tasks only; not a
    reward for research."""

    reads_answer = True

    def __call__(self, stats: StepStats) -> float:
        if stats.planted_cells is None:
            raise ValueError("planted_dropped reads the planted cells of a known-answer task: set dataset_kwargs "
                             "{'shortcut': ...} or {'distractor': ...}")
        return float(1 - stats.mask[stats.planted_cells].mean())


@register_reward("prediction_gain")
class PredictionGain(Reward):
    """Prediction gain (Graves et al. 2017): loss on this step's views before the update minus after it,
    L(theta_t; v) - L(theta_{t+1}; v). Costs one extra forward pass per step."""

    needs = frozenset({"loss_after"})

    def __call__(self, stats: StepStats) -> float:
        return stats.loss - stats.loss_after


class _Periodic(Reward):
    """Pays the change of a periodically measured quantity over the interval, 0 in between."""

    stat: ClassVar[str]
    sign: ClassVar[float]

    def __init__(self, every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.measure_every = every
        self.last: float | None = None

    def reset(self, initial: StepStats | None = None) -> None:
        self.last = None if initial is None else getattr(initial, self.stat)

    def __call__(self, stats: StepStats) -> float:
        value = getattr(stats, self.stat)
        if value is None:
            return 0.0
        gain = 0.0 if self.last is None else self.sign * (value - self.last)
        self.last = value
        return gain


@register_reward("heldout_gain")
class HeldoutGain(_Periodic):
    """Target prediction gain (Graves et al. 2017), measured sparsely to beat its noise.

    Every ``every`` steps the env measures the loss of the current encoder on a fixed held-out set
    (images never drawn for training) under a fixed reference corruption (all cells kept, fixed
    latent codes and augmentations); the reward is its decrease since the previous measurement (the
    first is compared with the measurement at the episode's start), and 0 between measurements.
    The agent cannot game it by making its own batch easy. Measured every step on one batch it is mostly
    noise (``docs/results.md``), hence the larger set and the interval.

    :param every: measurement interval K in steps.
    """

    needs = frozenset({"heldout_loss"})
    stat, sign = "heldout_loss", -1.0

    def __init__(self, every: int = 25) -> None:
        super().__init__(every)


@register_reward("probe_accuracy")
class ProbeAccuracy(_Periodic):
    """Change of kNN accuracy on a small labelled held-out subset, every ``every`` steps (AutoDropout's
    choice of validation accuracy as reward, Pham & Le 2021). It uses labels, so it is an *upper
    reference* for the label-free rewards, not a self-supervised reward.

    :param every: measurement interval K in steps.
    """

    needs = frozenset({"probe_accuracy"})
    uses_labels = True
    stat, sign = "probe_accuracy", 1.0

    def __init__(self, every: int = 50) -> None:
        super().__init__(every)


@register_reward("paired_progress")
class PairedProgress(Reward):
    """Paired progress: what this step's update did for the encoder on a fixed yardstick, the same batch
    under a reference corruption.

    r_t = L(theta_t; v_ref) - L(theta_{t+1}; v_ref), where v_ref are *reference views* of this step's
    batch: every cell kept (or, under a keep budget, a random mask at the budget:
    ``EnvConfig.reference_corruption``), restored with the same latent codes and augmented with the same crops,
    flips and jitters as the agent's views (so they differ from the agent's views only where the
    agent dropped cells), and theta_t -> theta_{t+1} is the update trained on the agent's views.
    Both losses are measured on the same views with the same weights on either side of one update,
    so the batch's difficulty cancels out of the difference; a mask changes r_t only through the
    direction of the update it causes. Unlike ``ma_neg_loss_derivative`` (whose return telescopes to
    L_1 - L_T on the agent's own views, so that easy views raise r_t and lower r_{t+1} by about as
    much), the next step's reward is measured on other images' reference views, so nothing cancels:
    each step is paid for its own update's effect. The yardstick is label-free; it is a property of
    the reference corruption, so on a known-answer task it pays for fitting whatever the reference
    views contain, the planted shortcut included.

    Cost: one more CAM-Net restoration and augmentation of the batch (skipped when the agent's mask is the
    reference mask: its views are then the reference views) and two forward passes of the learner.
    """

    needs = frozenset({"reference_gain"})

    def __call__(self, stats: StepStats) -> float:
        return stats.reference_gain


@register_reward("label_gain")
class LabelGain(_Periodic):
    """Dense label-based reference (**uses labels**: an upper bound for the label-free rewards, like
    ``probe_accuracy``): the decrease, across the update(s) since the last measurement, of a smooth
    label-based loss of the encoder's features on the env's labelled held-out subset.

    The loss is the ``label_loss`` statistic, a nearest-class-mean (prototype) cross-entropy of the
    held-out features (see :class:`corruption_env.statistics.LabelLoss`).
    It falls only when the features carry class information, so on a known-answer task an update
    that fits a class-independent shortcut earns less than one that learns the shapes. Measured every
    step by default (one encoder forward of the held-out subset, no backward); since the encoder
    changes only through updates, each step is paid exactly for its own update.

    :param every: measurement interval K in steps.
    """

    needs = frozenset({"label_loss"})
    uses_labels = True
    stat, sign = "label_loss", -1.0

    def __init__(self, every: int = 1) -> None:
        super().__init__(every)


@register_reward("label_advantage")
class LabelAdvantage(Reward):
    """Paired label reference (**uses labels**): how much lower this step's update left the held-out
    label loss (``label_gain``'s nearest-class-mean cross-entropy) than an update on the reference views
    (every cell kept; a random mask at the keep budget under one) would have.

    r_t = label_loss(theta'_{t+1}) - label_loss(theta_{t+1}), where theta_{t+1} is the update on the
    agent's views and theta'_{t+1} a counterfactual update from the same weights and optimizer state
    on the *reference views* of the same batch (the same latent codes and augmentations; see
    :class:`PairedProgress`), undone after it is measured. The encoder state, the batch and its
    difficulty are common to both updates and cancel, so r_t carries only what the mask changed; the
    reference mask (keep-all without a budget) earns exactly 0. On a known-answer task an update that did not
    fit the planted shortcut leaves the class information better placed, and earns r_t > 0.

    Cost: the reference restoration, one more SimCLR update and two held-out feature passes per step
    (none of it when the agent's mask is the reference mask).
    """

    needs = frozenset({"label_loss", "reference_label_loss"})
    uses_labels = extra_update = True

    def __call__(self, stats: StepStats) -> float:
        if stats.reference_label_loss is None:  # the agent's update is the reference's
            return 0.0
        return stats.reference_label_loss - stats.label_loss


@register_reward("rankme_gain")
class RankMeGain(_Periodic):
    """Representation quality without labels, measured sparsely: the change of RankMe (Garrido et al.
    2023), the effective rank of the encoder's features of the env's held-out images, every ``every``
    steps (0 in between; the first measurement is compared with the episode's start).

    An encoder that relies on a shortcut collapses onto few directions, so its rank falls where its
    kNN accuracy does; unlike the contrastive loss, the rank does not reward easy views (on the
    known-answer tasks it ranks the oracle first, as the label probe does: ``docs/results.md``). Its value reflects
    the ``every`` updates since the last measurement, so its credit spans as many steps.

    :param every: measurement interval K in steps (one encoder forward of the held-out images and an SVD).
    """

    needs = frozenset({"rankme"})
    stat, sign = "rankme", 1.0

    def __init__(self, every: int = 25) -> None:
        super().__init__(every)


@register_reward("rankme_advantage")
class RankMeAdvantage(Reward):
    """Paired RankMe (label-free): how much higher this step's update left the held-out features' effective
    rank than an update on the *reference views* of the same batch would have.

    r_t = RankMe(theta_{t+1}) - RankMe(theta'_{t+1}), theta'_{t+1} being a counterfactual update from the same
    weights and optimizer state on the same batch, latent codes and augmentations under the reference
    corruption (a random mask at the keep budget, or every cell kept without one), undone after it is
    measured. The encoder's state and the batch cancel, so r_t carries only what the mask changed; the
    reference mask earns exactly 0. :class:`LabelAdvantage` without labels.

    Cost: the reference restoration, one more SimCLR update and two held-out feature passes per step.
    """

    needs = frozenset({"rankme", "reference_rankme"})
    extra_update = True

    def __call__(self, stats: StepStats) -> float:
        if stats.reference_rankme is None:  # the agent's mask is the reference mask
            return 0.0
        return stats.rankme - stats.reference_rankme


@register_reward("adversarial_loss")
class AdversarialLoss(Reward):
    """+L_t: the corruptor is paid for the hardest views, the adversarial principle of ADIOS (Shi et al.
    2022), Viewmaker (Tamkin et al. 2021) and Minderer et al. (2020)'s shortcut removal. Meant under a
    keep budget (``EnvConfig.keep_budget``): without one, dropping every cell is the trivial maximum.

    On the known-answer tasks, while the encoder relies on the planted shortcut, dropping it makes views
    harder and this reward points to the answer; once an encoder has learned without it, dropping it
    makes views easier and the reward points away (the two players' game).
    """

    def __call__(self, stats: StepStats) -> float:
        return stats.loss


@register_reward("loss_rise")
class LossRise(Reward):
    """The adversarial reward paired: L_t - L_ref, how much harder the agent's views are than the *reference
    views* of the same batch (a random mask at the keep budget, same latent codes and augmentations) for
    the same encoder, before the update. The batch's difficulty and the loss's trend cancel, so it
    ranks masks like :class:`AdversarialLoss` with less noise; the reference mask earns exactly 0.

    Cost: one more restoration of the batch and one more encoder forward (no backward).
    """

    needs = frozenset({"reference_loss"})

    def __call__(self, stats: StepStats) -> float:
        return stats.loss - stats.reference_loss


@register_reward("reference_learner_rise")
class ReferenceLearnerRise(Reward):
    """The adversarial reward against a data-blind learner: how much harder the agent's views are than the
    reference views (random masks at the keep budget, same batch, codes and augmentations) for the
    *reference learner*, an encoder trained alongside from the same initial weights on reference views
    only, L_ref_learner(agent views) - L_ref_learner(reference views).

    :class:`LossRise` is measured on the encoder the agent itself trains, so it is a game: once the agent
    drops a shortcut, that encoder stops using it, and dropping it no longer makes views harder (its sign
    flips between the random-mask and the oracle trajectory: ``docs/results.md``).
    The reference learner is always on the random-mask trajectory, so this reward does not flip: it
    pays for dropping what an encoder trained with data-blind masks finds easiest to match. It is
    adversarial by construction all the same: on a distractor, whose removal makes views easier, it
    points away from the answer.

    Cost: the reference restoration, one forward of each pair and one more SimCLR update per step.

    :param adversarial_weight: lambda in [0, 1], the reward's direction: pays lambda * rise + (1 - lambda) * (-rise)
        = (2 lambda - 1) * rise, so 1 (the default) is the adversarial reward, 0 its cooperative mirror (easier views
        than the reference's).
    """

    needs = frozenset({"reference_learner_rise"})
    extra_update = True

    def __init__(self, adversarial_weight: float = 1.0) -> None:
        if not 0.0 <= adversarial_weight <= 1.0:
            raise ValueError(f"adversarial_weight must be in [0, 1], got {adversarial_weight!r}")
        self.adversarial_weight = float(adversarial_weight)

    def __call__(self, stats: StepStats) -> float:
        return (2.0 * self.adversarial_weight - 1.0) * stats.reference_learner_rise


@register_reward("tscl_window")
class TSCLWindow(Reward):
    """Teacher-Student Curriculum Learning's window signal (Matiisen et al. 2017): the slope of a
    least-squares line through the last ``window`` values of -L_t (0 until two values exist).

    :param window: number of recent steps in the fit.
    """

    def __init__(self, window: int = 10) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self.reset()

    def reset(self, initial: StepStats | None = None) -> None:
        self.history: deque[float] = deque(maxlen=self.window)

    def __call__(self, stats: StepStats) -> float:
        self.history.append(-stats.loss)
        if len(self.history) < 2:
            return 0.0
        y = np.asarray(self.history)
        x = np.arange(len(y), dtype=float)
        x -= x.mean()
        return float((x * (y - y.mean())).sum() / (x * x).sum())


@register_reward("neg_loss")
class NegLoss(Reward):
    """-L_t: pays for easy views (the degenerate reference every progress signal should beat)."""

    def __call__(self, stats: StepStats) -> float:
        return -stats.loss


@register_reward("grad_norm")
class GradNorm(Reward):
    """Gradient prediction gain (Graves et al. 2017): the squared L2 norm of the update's gradient."""

    needs = frozenset({"grad_norm"})

    def __call__(self, stats: StepStats) -> float:
        return stats.grad_norm ** 2


class RewardWrapper(Reward):
    """A reward built on another; forwards ``needs``, ``measure_every`` and ``reset``."""

    def __init__(self, inner: Reward) -> None:
        self.inner = inner
        self.needs = inner.needs  # type: ignore[misc]  # per-instance: depends on the wrapped reward
        self.uses_labels = inner.uses_labels  # type: ignore[misc]
        self.measure_every = inner.measure_every

    def reset(self, initial: StepStats | None = None) -> None:
        self.inner.reset(initial)


class QuantileRescaled(RewardWrapper):
    """Graves et al.'s rescaling: map the 20th..80th percentiles of a reservoir of past raw rewards to
    [-1, 1] and clip. The reservoir survives episode resets (it describes the reward's scale, not the
    episode). Returns 0 until the reservoir has two distinct values.

    :param low, high: the quantiles mapped to -1 and 1.
    :param capacity: reservoir size (reservoir sampling keeps a uniform sample of all rewards seen).
    :param seed: seed of the reservoir's sampling.
    """

    def __init__(self, inner: Reward, low: float = 0.2, high: float = 0.8, capacity: int = 1000, seed: int = 0) -> None:
        super().__init__(inner)
        self.low, self.high, self.capacity = low, high, capacity
        self.reservoir: list[float] = []
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def __call__(self, stats: StepStats) -> float:
        raw = self.inner(stats)
        self.seen += 1
        if len(self.reservoir) < self.capacity:
            self.reservoir.append(raw)
        else:
            slot = int(self.rng.integers(0, self.seen))
            if slot < self.capacity:
                self.reservoir[slot] = raw
        lo, hi = np.quantile(self.reservoir, [self.low, self.high])
        if hi <= lo:
            return 0.0
        return float(np.clip(2 * (raw - lo) / (hi - lo) - 1, -1, 1))


class KeepFractionPenalty(RewardWrapper):
    """ADIOS-style sparsity penalty (Shi et al. 2022): r - weight * (1 / sin(pi * k) - 1), where k is the
    keep fraction clipped to [0.01, 0.99]. Zero at k = 0.5, about 30.8 x weight at all-kept or
    all-dropped, which keeps masks away from both trivial corruptions.

    :param weight: penalty weight.
    """

    def __init__(self, inner: Reward, weight: float = 1e-3) -> None:
        super().__init__(inner)
        self.weight = weight

    def __call__(self, stats: StepStats) -> float:
        k = min(max(stats.keep_fraction, 0.01), 0.99)
        return self.inner(stats) - self.weight * (1 / math.sin(math.pi * k) - 1)


class RewardSet:
    """The reward an env pays and the ones it tracks (reported in ``info["reward_terms"]``, not paid).

    :param reward: the paid reward's registry name.
    :param reward_kwargs: its options (see :func:`make_reward`).
    :param track: ``"free"`` (the rewards needing no statistic), ``"all"`` (every registered one except those
        paying for a second SimCLR update, ``extra_update``), or a list of names; neither names a reward that
        reads a known answer (``reads_answer``).
    """

    def __init__(self, reward: str, reward_kwargs: dict[str, Any] | None = None, track: str | list[str] = "free") -> None:
        self.name = reward
        self.paid = make_reward(reward, **(reward_kwargs or {}))
        if track == "free":
            names = [n for n in available_rewards() if not (make_reward(n).needs or REWARDS[n].reads_answer)]
        elif track == "all":
            names = [n for n in available_rewards() if not (make_reward(n).extra_update or REWARDS[n].reads_answer)]
        elif isinstance(track, (list, tuple)):
            unknown = [n for n in track if n not in available_rewards()]
            if unknown:
                raise ValueError(f"track_rewards: unknown reward(s) {unknown}; available: {', '.join(available_rewards())}")
            names = list(track)
        else:
            raise ValueError(f"track_rewards must be 'free', 'all' or a list of reward names, got {track!r}")
        self.tracked = {n: make_reward(n) for n in names if n != reward}
        self.needs: set[str] = set(self.paid.needs).union(*(r.needs for r in self.tracked.values()))

    def _all(self) -> tuple[Reward, ...]:
        return (self.paid, *self.tracked.values())

    def reset(self, initial: StepStats) -> None:
        for reward in self._all():
            reward.reset(initial)

    def due(self, step: int) -> set[str]:
        """The periodic statistics some reward wants measured at this step."""
        periodic = periodic_statistics()
        return {n for r in self._all() if step % r.measure_every == 0 for n in r.needs if n in periodic}

    @staticmethod
    def _score(reward: Reward, stats: StepStats) -> float:
        """``reward(stats)`` with only the periodic statistics that are due on its own schedule."""
        if stats.step % reward.measure_every:
            stats = stats.with_values(dict.fromkeys(periodic_statistics()))
        return float(reward(stats))

    def pay(self, stats: StepStats, diverged: bool, penalty: float) -> tuple[float, dict[str, float]]:
        """The paid reward of a step and every term by name (``penalty`` for all of them on a diverged step)."""
        if diverged:
            terms = dict.fromkeys(self.tracked, float(penalty))
            reward = float(penalty)
        else:
            reward = self._score(self.paid, stats)
            terms = {name: self._score(r, stats) for name, r in self.tracked.items()}
        terms[self.name] = reward
        return reward, terms


def reward_table() -> str:
    """The markdown table of every registered reward, from its class: docstring summary, the statistics it
    reads, whether it uses labels or pays a second update, and its credit horizon. ``docs/rewards.md`` holds
    it (``python docs/gen_tables.py`` rewrites it; a test checks that it is current)."""
    rows = ["| reward | what it pays | reads | uses labels | second update | credit horizon |",
            "|---|---|---|---|---|---|"]
    for name in available_rewards():
        reward = make_reward(name)
        reads = ", ".join(f"`{n}`" for n in sorted(reward.needs)) or "the loss"
        rows.append(f"| `{name}` | {doc_summary(type(reward))} | {reads} | {'yes' if reward.uses_labels else ''} | "
                    f"{'yes' if reward.extra_update else ''} | {reward.credit_horizon} |")
    return "\n".join(rows) + "\n"
