"""Statistics: what the environment measures around one SimCLR update, for the rewards that read it.

A reward names the statistics it reads (``Reward.needs``); each name is a :class:`Statistic` registered
here, which says *when* it is measured and *how*: from the update itself (flags of
:meth:`SimCLRLearner.update <corruption_env.simclr.SimCLRLearner.update>`: ``loss_after``, ``grad_norm``,
``reference_loss``, ``reference_gain``), on the held-out images after the update every ``measure_every``
steps (``periodic``: ``heldout_loss``, ``probe_accuracy``, ``label_loss``, ``rankme``), after a
counterfactual update on the reference views that is undone (:class:`Counterfactual`:
``reference_label_loss``, ``reference_rankme``), or by an auxiliary learner of its own
(``reference_learner_rise``). The env builds one :class:`MeasurementPlan` from the active rewards' needs;
the plan supplies the update's flags, builds the reference views only when a statistic needs them, runs
the hooks before and after the update and carries the statistics' state through ``snapshot``/``restore``.
So ``CorruptionEnv.step`` stays one straight route, and a new statistic is one subclass registered with
``@register_statistic("name")`` plus a reward that names it in ``needs``: no edit to the env.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Protocol

import numpy as np
import torch

from corruption_env.config import EnvConfig
from corruption_env.corruption import reference_mask
from corruption_env.evaluation import (alignment_uniformity, effective_rank, knn_accuracy, lidar,
                                       prototype_cross_entropy, spectrum_decay)
from corruption_env.registry import Registry, doc_summary
from corruption_env.simclr import SimCLRLearner, UpdateStats
from corruption_env.views import ViewMaker, reference_views

Views = tuple[torch.Tensor, torch.Tensor]


class MeasuredEnv(Protocol):
    """What statistics read from the environment they measure (a :class:`~corruption_env.env.CorruptionEnv`),
    named here rather than imported: the env builds its statistics, so they sit below it and never call it."""

    config: EnvConfig
    device: torch.device
    precision: str
    learner: SimCLRLearner
    views: ViewMaker
    heldout_images: torch.Tensor
    heldout_labels: torch.Tensor
    reference_generator: torch.Generator  # the reference masks' own stream
    _batch: torch.Tensor | None  # the degraded batch this step's mask applies to


@dataclass
class StepStats:
    """What one step measured. Optional entries are None unless some reward needs them (and, for the
    periodic ones, on steps where they were not measured). Statistics registered outside this module are
    read the same way (``stats.my_statistic``) from ``extra``.

    :param step: 1-based index of the SimCLR update within the episode (0 for the episode start).
    :param loss: L_t, the NT-Xent loss of this step's update on its own views (before the update).
    :param keep_fraction: fraction of mask cells the agent kept.
    :param mask: the (B, g, g) mask the agent chose (1 = kept), for rewards about where cells are kept.
    :param planted_cells: on a known-answer task, the (B, g, g) bool cells of this batch that carry the planted
        pattern (what the oracle drops); None otherwise. Label-like knowledge: for tests and diagnostics.
    :param extra: values of statistics without a field of their own.

    Every other field is the statistic of the same name; see its class below for what it measures.
    """

    step: int
    loss: float
    keep_fraction: float = 1.0
    loss_after: float | None = None
    grad_norm: float | None = None
    reference_gain: float | None = None
    reference_loss: float | None = None
    heldout_loss: float | None = None
    probe_accuracy: float | None = None
    label_loss: float | None = None
    rankme: float | None = None
    reference_label_loss: float | None = None
    reference_rankme: float | None = None
    reference_learner_rise: float | None = None
    mask: torch.Tensor | None = None
    planted_cells: torch.Tensor | None = None
    extra: dict[str, float | None] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # only called for names that are not fields
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        if name in STATISTICS:
            return None
        raise AttributeError(f"StepStats has no statistic {name!r}; registered: {', '.join(STATISTICS.names())}")

    def with_values(self, values: dict[str, float | None]) -> "StepStats":
        """A copy with these statistics set (fields, or ``extra`` for the others)."""
        fields = {f.name for f in dataclasses.fields(self)}
        own = {k: v for k, v in values.items() if k in fields}
        return dataclasses.replace(self, **own, extra={**self.extra, **{k: v for k, v in values.items() if k not in fields}})


@dataclass
class StepViews:
    """One step's views as the statistics see them.

    :param mask: the (B, g, g) mask of the agent's views.
    :param views: the agent's two augmented views.
    :param stream: the latent-code/augmentation generator's state the agent's views were drawn from.
    :param reference: the same batch under the reference corruption with the same codes and augmentations
        (None unless a statistic needs it); ``same`` when the agent's mask is the reference mask, so that
        ``reference`` *is* ``views``.
    """

    mask: torch.Tensor
    views: Views
    stream: torch.Tensor
    reference: Views | None = None
    same: bool = False


class Statistic:
    """One measured quantity. Subclass it, set the class attributes that apply, override the hook that
    measures it, and register it with ``@register_statistic("name")``.

    :cvar reference_views: it needs this step's batch under the reference corruption (one more restoration).
    :cvar update_options: flags of ``SimCLRLearner.update`` it needs (``loss_after``, ``grad_norm``,
        ``reference``, ``reference_gain``); :meth:`after_update` then reads them from the update.
    :cvar periodic: measured on the held-out images by :meth:`measure` after the update, on the steps a
        reward that needs it is due (its ``measure_every``) and at the episode's start.
    :cvar cost: one line on what it costs per measurement (for the docs).
    :cvar higher_is_better: which way a periodic statistic points when it judges an encoder (a whole run's judge,
        ``corruption_env.whole_run``): a loss is better lower.
    :cvar uses_labels: it reads the held-out images' class labels: an upper reference, never a self-supervised
        signal (the label-judged search takes only such a judge, the label-free one none).
    """

    name: ClassVar[str] = ""
    reference_views: ClassVar[bool] = False
    update_options: ClassVar[frozenset[str]] = frozenset()
    periodic: ClassVar[bool] = False
    cost: ClassVar[str] = "nothing"
    higher_is_better: ClassVar[bool] = True
    uses_labels: ClassVar[bool] = False

    def __init__(self, env: MeasuredEnv) -> None:
        self.env = env

    def reset(self, learner_seed: int) -> None:
        """Start of an episode (the agent's learner was just reset from ``learner_seed``)."""

    def before_update(self, step: StepViews) -> float | None:
        """Measured before the agent's update (e.g. by an auxiliary learner); None if not measured here."""
        return None

    def after_update(self, step: StepViews, update: UpdateStats) -> float | None:
        """Read from the agent's update; None if not measured here."""
        return None

    def measure(self) -> float:
        """A periodic statistic's value for the agent's learner as it is now."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """State a step changes, for ``CorruptionEnv.snapshot``."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


STATISTICS: Registry[type[Statistic]] = Registry("statistic")


def register_statistic(name: str) -> Callable[[type[Statistic]], type[Statistic]]:
    """Class decorator adding a :class:`Statistic` under ``name`` (rewards name it in ``needs``)."""
    return STATISTICS.register_named(name)


def available_statistics() -> list[str]:
    return STATISTICS.names()


def periodic_statistics() -> frozenset[str]:
    return frozenset(n for n in STATISTICS.names() if STATISTICS[n].periodic)


# ---------------------------------------------------------------------------------------- from the update

class _FromUpdate(Statistic):
    field: ClassVar[str]  # the UpdateStats field it reads

    def after_update(self, step: StepViews, update: UpdateStats) -> float | None:
        return getattr(update, self.field)


@register_statistic("loss_after")
class LossAfter(_FromUpdate):
    """Loss on the same views after the update."""

    update_options, field, cost = frozenset({"loss_after"}), "loss_after", "one forward"


@register_statistic("grad_norm")
class GradientNorm(_FromUpdate):
    """L2 norm of the update's gradient."""

    update_options, field, cost = frozenset({"grad_norm"}), "grad_norm", "nothing"


@register_statistic("reference_loss")
class ReferenceLoss(_FromUpdate):
    """L_ref(before): the loss of the reference views with the weights the update starts from."""

    reference_views, update_options, field = True, frozenset({"reference"}), "reference_loss"
    cost = "the reference restoration and one forward"


@register_statistic("reference_gain")
class ReferenceGain(_FromUpdate):
    """L_ref(before) - L_ref(after): the decrease, across this update, of the loss on the reference views of
    this step's batch (``EnvConfig.reference_corruption``; the same latent codes and augmentations)."""

    reference_views, update_options, field = True, frozenset({"reference", "reference_gain"}), "reference_gain"
    cost = "the reference restoration and two forwards"


# ---------------------------------------------------------------------------------------- periodic, held out

def heldout_views(env: MeasuredEnv, pairs: int = 1) -> list[Views]:
    """``pairs`` pairs of views of the held-out images under a fixed reference corruption (all cells kept), with
    latent codes and augmentations from a fixed stream: the same in every episode and for every corruptor."""
    b = env.config.batch_size
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(pairs):
        made = []
        for chunk in env.heldout_images.split(b):
            keep_all = torch.ones(chunk.shape[0], env.config.mask_grid, env.config.mask_grid, device=env.device)
            made.append(env.views(chunk, keep_all, gen, x_lr=env.views.degrade(chunk)))
        out.append((torch.cat([p.v1 for p in made]), torch.cat([p.v2 for p in made])))
    return out


@register_statistic("heldout_loss")
class HeldoutLoss(Statistic):
    """NT-Xent of the current encoder on the held-out images under a fixed reference corruption (all cells
    kept, fixed latent codes and augmentations), averaged over batches of ``batch_size``. Label-free; lower is
    better."""

    periodic, cost, higher_is_better = True, "one forward of the held-out views", False

    def __init__(self, env: MeasuredEnv) -> None:
        super().__init__(env)
        self.views: Views | None = None  # the same in every episode: built once

    def measure(self) -> float:
        env, b = self.env, self.env.config.batch_size
        if self.views is None:
            self.views = heldout_views(env)[0]
        v1, v2 = self.views
        losses = [env.learner.loss(v1[i:i + b], v2[i:i + b]) for i in range(0, max(v1.shape[0] - b, 0) + 1, b)]
        return float(np.mean(losses))


class _ViewFeatures(Statistic):
    """A statistic of the encoder's features (the held-out set's own BatchNorm statistics, as :class:`RankMe`) of
    ``pairs`` fixed pairs of held-out views (:func:`heldout_views`)."""

    periodic = True
    pairs: ClassVar[int] = 1

    def __init__(self, env: MeasuredEnv) -> None:
        super().__init__(env)
        self.views: list[torch.Tensor] | None = None

    def features(self) -> torch.Tensor:
        """(N, 2 * pairs, D) features of every held-out image's views."""
        if self.views is None:
            self.views = [v for pair in heldout_views(self.env, self.pairs) for v in pair]
        return torch.stack([self.env.learner.encode(v, batch_statistics=True) for v in self.views], 1)


@register_statistic("lidar")
class LiDAR(_ViewFeatures):
    """LiDAR (Thilak et al. 2023): the effective rank of the linear discriminant matrix of the held-out images'
    features, each image a class whose samples are 4 fixed views of it (all cells kept): RankMe that counts a
    direction only as far as it separates images more than views. Label-free."""

    pairs, cost = 2, "four encoder passes of the held-out images and two eigendecompositions"

    def measure(self) -> float:
        return lidar(self.features())


@register_statistic("alignment")
class Alignment(_ViewFeatures):
    """Alignment (Wang & Isola 2020): the mean squared distance between the normalised features of two fixed views
    of each held-out image (all cells kept). Label-free; lower is better."""

    cost, higher_is_better = "two encoder passes of the held-out images", False

    def measure(self) -> float:
        features = self.features()
        return alignment_uniformity(features[:, 0], features[:, 1])[0]


@register_statistic("uniformity")
class Uniformity(_ViewFeatures):
    """Uniformity (Wang & Isola 2020): log of the mean Gaussian potential exp(-2 d^2) between the normalised
    features of distinct held-out views (all cells kept). Label-free; lower is better (spread over the sphere)."""

    cost, higher_is_better = "two encoder passes of the held-out images", False

    def measure(self) -> float:
        features = self.features()
        return alignment_uniformity(features[:, 0], features[:, 1])[1]


def _probe_split(env: MeasuredEnv, batch_statistics: bool = False) -> tuple[torch.Tensor, ...]:
    """Encoder features and labels of the held-out images: (bank features, bank labels, query features,
    query labels), the first half being the labelled bank and the second the queries."""
    feats = env.learner.encode(env.heldout_images, batch_statistics=batch_statistics)
    half = feats.shape[0] // 2
    labels = env.heldout_labels
    return feats[:half], labels[:half], feats[half:], labels[half:]


@register_statistic("probe_accuracy")
class KnnProbeAccuracy(Statistic):
    """kNN accuracy on the held-out images (uses labels): first half as the labelled bank, second half as queries."""

    periodic, cost, uses_labels = True, "one encoder pass of the held-out images", True

    def measure(self) -> float:
        bank, bank_labels, queries, query_labels = _probe_split(self.env)
        return knn_accuracy(bank, bank_labels, queries, query_labels, k=min(50, bank.shape[0]))


@register_statistic("label_loss")
class LabelLoss(Statistic):
    """Nearest-class-mean cross-entropy on the held-out images (uses labels): class means of the first half's
    normalised features classify the second half (temperature ``LABEL_TEMPERATURE``). Features use the
    held-out set's own BatchNorm statistics: the running ones lag the weights by tens of updates early in
    an episode, which would blur what one update did."""

    periodic, cost, uses_labels = True, "one encoder pass of the held-out images", True
    LABEL_TEMPERATURE = 0.1  # softmax temperature over cosine similarities

    def measure(self) -> float:
        return prototype_cross_entropy(*_probe_split(self.env, batch_statistics=True), temperature=self.LABEL_TEMPERATURE)


@register_statistic("rankme")
class RankMe(Statistic):
    """RankMe (Garrido et al. 2023): the effective rank of the encoder's features of the held-out images, exp of
    the entropy of their normalised singular values. Label-free; features use the held-out set's own
    BatchNorm statistics (see :class:`LabelLoss`)."""

    periodic, cost = True, "one encoder pass of the held-out images and an SVD"

    def measure(self) -> float:
        return effective_rank(self.env.learner.encode(self.env.heldout_images, batch_statistics=True))


@register_statistic("alpha_req")
class AlphaReQ(Statistic):
    """alpha-ReQ (Agrawal et al. 2022) as a judge: minus the distance of the eigenspectrum decay alpha of the
    held-out features (eigenvalue ~ rank^-alpha) from 1, where they found linear probes best. Label-free; features
    as :class:`RankMe`'s."""

    periodic, cost = True, "one encoder pass of the held-out images and an eigendecomposition"

    def measure(self) -> float:
        return -abs(spectrum_decay(self.env.learner.encode(self.env.heldout_images, batch_statistics=True)) - 1.0)


# ---------------------------------------------------------------------------------------- counterfactual

class Counterfactual(Statistic):
    """A periodic statistic (``of``) measured after a counterfactual update from the current weights and
    optimizer state on the reference views of this step's batch, which is undone afterwards. All the
    counterfactual statistics of a step share one such update; None when the agent's mask is the
    reference mask (its update *is* the reference's)."""

    reference_views = True
    of: ClassVar[str]
    cost = "the reference restoration, one more SimCLR update (undone) and the measurement"


@register_statistic("reference_label_loss")
class ReferenceLabelLoss(Counterfactual):
    """``label_loss`` after the counterfactual update on the reference views (uses labels)."""

    of, uses_labels = "label_loss", True


@register_statistic("reference_rankme")
class ReferenceRankMe(Counterfactual):
    """``rankme`` after the counterfactual update on the reference views."""

    of = "rankme"


# ---------------------------------------------------------------------------------------- auxiliary learners

@register_statistic("reference_learner_rise")
class ReferenceLearner(Statistic):
    """How much harder the agent's views are than the reference views for the *reference learner*, an encoder
    trained alongside from the same initial weights on reference views only: its loss on the agent's views
    minus its loss on the reference views, measured before its own update on the reference views (whose
    training forward gives the reference views' loss). 0 when the agent's mask is the reference mask."""

    reference_views = True
    cost = "the reference restoration, one forward and one more SimCLR update"

    def __init__(self, env: MeasuredEnv) -> None:
        super().__init__(env)
        cfg = env.config
        self.learner = SimCLRLearner(cfg.encoder, temperature=cfg.temperature, lr=cfg.lr, optimizer=cfg.optimizer,
                                     device=env.device, precision=env.precision)

    def reset(self, learner_seed: int) -> None:
        self.learner.reset(learner_seed)  # the same initial weights as the agent's learner

    def before_update(self, step: StepViews) -> float | None:
        update = self.learner.update(*step.reference, reference=None if step.same else step.views)
        return 0.0 if step.same else update.reference_loss - update.loss

    def state_dict(self) -> dict:
        return {"learner": copy.deepcopy(self.learner.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(copy.deepcopy(state["learner"]))


# ---------------------------------------------------------------------------------------- the plan

class MeasurementPlan:
    """The statistics one env measures, built from its rewards' ``needs``.

    :param env: the environment (its learner, held-out images, views and reference corruption).
    :param needs: names of the statistics to measure.
    """

    def __init__(self, env: MeasuredEnv, needs: set[str]) -> None:
        unknown = sorted(set(needs) - set(STATISTICS.names()))
        if unknown:
            raise ValueError(f"a reward needs unknown statistics {unknown}; the environment measures "
                             f"{', '.join(STATISTICS.names())} (add one with corruption_env.statistics.register_statistic)")
        self.env = env
        self.active = {name: STATISTICS[name](env) for name in STATISTICS.names() if name in needs}
        self.counterfactual = [s for s in self.active.values() if isinstance(s, Counterfactual)]
        self.others = [s for s in self.active.values() if not isinstance(s, Counterfactual)]
        self.needs_reference = any(s.reference_views for s in self.active.values())
        self.update_options = frozenset().union(*(s.update_options for s in self.active.values()))
        self._measures: dict[str, Statistic] = {}  # periodic statistics measured for counterfactuals

    def _measurer(self, name: str) -> Statistic:
        if name in self.active:
            return self.active[name]
        return self._measures.setdefault(name, STATISTICS[name](self.env))

    def reset(self, learner_seed: int) -> None:
        for statistic in self.active.values():
            statistic.reset(learner_seed)

    def initial(self, loss: float) -> StepStats:
        """The episode's start: its periodic statistics measured before the first update."""
        return StepStats(step=0, loss=loss).with_values(
            {n: s.measure() for n, s in self.active.items() if s.periodic})

    def before_update(self, step: StepViews) -> tuple[dict[str, float | None], dict[str, Any]]:
        """Build the reference views if needed, measure what comes before the agent's update, and return
        those values with the keyword arguments of the agent's ``SimCLRLearner.update``."""
        if self.needs_reference:
            env, cfg = self.env, self.env.config
            reference = reference_mask(cfg.resolved_reference, step.mask, cfg.keep_cells, env.reference_generator)
            step.same = bool(torch.equal(reference, step.mask))  # the agent's views already are the reference views
            step.reference = step.views if step.same else reference_views(env.views, env._batch, reference, step.stream)
        values: dict[str, float | None] = {}
        if self.counterfactual and not step.same:
            learner = self.env.learner
            state = copy.deepcopy(learner.state_dict())
            learner.update(*step.reference)
            values = {s.name: self._measurer(s.of).measure() for s in self.counterfactual}
            learner.load_state_dict(state)
        for statistic in self.others:
            value = statistic.before_update(step)
            if value is not None:
                values[statistic.name] = value
        options = self.update_options
        update_kwargs = {"loss_after": "loss_after" in options, "grad_norm": "grad_norm" in options,
                         "reference": step.reference if "reference" in options else None,
                         "reference_gain": "reference_gain" in options}
        return values, update_kwargs

    def after_update(self, step: StepViews, update: UpdateStats, before: dict[str, float | None], stats: StepStats,
                     due: set[str]) -> tuple[StepStats, bool]:
        """``stats`` completed with what the update measured and the periodic statistics that are ``due``;
        and whether the update diverged (a non-finite value: then nothing periodic is measured)."""
        values = dict(before)
        for statistic in self.others:
            value = statistic.after_update(step, update)
            if value is not None:
                values[statistic.name] = value
        diverged = not all(np.isfinite(v if v is not None else 0.0) for v in dataclasses.astuple(update))
        if not diverged:
            values.update({n: self.active[n].measure() for n in self.active if n in due})
        return stats.with_values(values), diverged

    def state_dict(self) -> dict[str, dict]:
        return {name: s.state_dict() for name, s in self.active.items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        for name, s in self.active.items():
            s.load_state_dict(state[name])


def statistic_table() -> str:
    """The markdown table of every registered statistic: when it is measured, what it is, what it costs
    (``docs/rewards.md`` holds it beside the reward table)."""
    rows = ["| statistic | measured | what it is | cost |", "|---|---|---|---|"]
    for name in STATISTICS.names():
        cls = STATISTICS[name]
        when = ("after an undone update on the reference views" if issubclass(cls, Counterfactual) else
                "on the held-out images, every `measure_every` steps" if cls.periodic else
                "by the update" if cls.update_options else "before the update")
        rows.append(f"| `{name}` | {when} | {doc_summary(cls)} | {cls.cost} |")
    return "\n".join(rows) + "\n"
