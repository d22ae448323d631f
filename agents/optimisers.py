"""Ask/tell optimisers for the search over corruptors judged by whole runs: one class per optimiser, found by name.

An optimiser proposes a generation of candidate parameter vectors (``ask``), is told their judges (``tell``,
higher is better; a non-finite judge counts as worse than the generation's worst), says when it has nothing more
to propose (``stop``), hands out its whole state for an exact resume (``state`` / ``from_state``) and the scalars
it logs (``scalars``). :class:`~agents.search.WholeRunSearch` drives any of them the same way and never reads
their insides, so a new optimiser is one class registered with ``@register_optimiser("name")`` in any module
imported before the search is built (``--hyperparams optimizer:name``).

Built in: ``cmaes`` (CMA-ES, Hansen & Ostermeier 2001, from the ``cmaes`` library, with IPOP restarts, Auger &
Hansen 2005: a flat generation, ``patience`` generations without a better judge, or CMA-ES's own stop restart it
from a random mean with ``restart_factor`` times the population), ``sep_cmaes`` (the same with a diagonal
covariance, Ros & Hansen 2008: linear cost in the dimension, for parametric corruptors with many parameters) and
``optuna_tpe`` (Optuna's TPE sampler through its ask/tell interface; the optional ``optuna`` extra).
"""
from __future__ import annotations

import copy
import math
import pickle
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from corruption_env.registry import Registry


class Optimiser:
    """Ask/tell over R^dim, maximising. Subclass it (``ask``, ``tell``; ``stop``, ``scalars`` if it has them) and
    register it with ``@register_optimiser("name")``.

    :param dim: the number of parameters of a candidate.
    :param scale: the natural size of a parameter (the parametric corruptor's): where a search starts its spread.
    :param population: candidates per generation (an optimiser with restarts may grow it).
    :param seed: seed of every random draw the optimiser makes.
    :ivar generation: generations told so far (over restarts).
    :ivar restarts: restarts so far (0 for an optimiser without them).
    """

    name: ClassVar[str] = ""
    min_population: ClassVar[int] = 2  # the fewest candidates a generation may have

    def __init__(self, dim: int, scale: float, population: int, seed: int) -> None:
        low = self.min_population
        if not isinstance(population, int) or isinstance(population, bool) or population < low:
            raise ValueError(f"population must be an integer >= {low} for optimizer {self.name!r}, got {population!r}")
        self.dim, self.scale, self.population, self.seed = dim, scale, population, seed
        self.generation = self.restarts = 0

    def ask(self) -> list[np.ndarray]:
        """The next generation's ``population`` candidates (asked once per generation)."""
        raise NotImplementedError

    def tell(self, values: Sequence[float]) -> None:
        """The judges of the candidates of the last ``ask``, in its order (higher is better)."""
        raise NotImplementedError

    @property
    def stop(self) -> bool:
        """True once the optimiser has nothing more to propose (the search then ends early)."""
        return False

    def scalars(self) -> dict[str, float]:
        """What it logs after each ``tell`` (TensorBoard ``search/<name>``)."""
        return {"population": float(self.population), "restarts": float(self.restarts)}

    def state(self) -> dict[str, Any]:
        """Everything it needs to continue exactly as if never stopped (picklable)."""
        return {"class": type(self), "attributes": copy.deepcopy(vars(self))}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Optimiser":
        optimiser = state["class"].__new__(state["class"])
        optimiser.__dict__.update(copy.deepcopy(state["attributes"]))
        return optimiser


def finite_values(values: Sequence[float]) -> np.ndarray:
    """Judges as floats, a non-finite one (a diverged run) replaced by one less than the worst finite judge."""
    judges = np.array([v if v is not None and np.isfinite(v) else -np.inf for v in values], dtype=float)
    finite = judges[np.isfinite(judges)]
    worst = float(finite.min()) if finite.size else 0.0
    return np.where(np.isfinite(judges), judges, worst - 1.0)


OPTIMISERS: Registry[type[Optimiser]] = Registry("optimizer")


def register_optimiser(name: str) -> Callable[[type[Optimiser]], type[Optimiser]]:
    """Class decorator: register an optimiser under ``name`` (``--hyperparams optimizer:name``)."""
    return OPTIMISERS.register_named(name)


available_optimisers = OPTIMISERS.names


@register_optimiser("cmaes")
class CMAES(Optimiser):
    """CMA-ES from the ``cmaes`` library with IPOP restarts.

    :param sigma0: the initial step size, in units of ``scale``.
    :param restart_factor: population growth at each restart (IPOP; 1 keeps it).
    :param patience: generations without a better judge (since the last restart) before a restart.
    :param lr_adapt: CMA-ES's learning-rate adaptation (Nomura et al. 2023), for noisy judges.
    """

    min_population = 4  # below 4 the ``cmaes`` library's recombination weights divide by zero (measured)

    def __init__(self, dim: int, scale: float, population: int, seed: int, sigma0: float = 1.0,
                 restart_factor: float = 2.0, patience: int = 3, lr_adapt: bool = False) -> None:
        super().__init__(dim, scale, population, seed)
        if not sigma0 > 0 or not restart_factor >= 1:
            raise ValueError(f"sigma0 must be > 0 and restart_factor >= 1, got {sigma0!r} and {restart_factor!r}")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an integer >= 1, got {patience!r}")
        self.sigma0, self.restart_factor, self.patience, self.lr_adapt = sigma0, restart_factor, patience, lr_adapt
        self.rng = np.random.default_rng(seed)
        self.stale, self.restart_best = 0, -math.inf  # generations without a better judge since this (re)start
        self.asked: list[np.ndarray] = []
        self.sigma = sigma0 * scale
        self.cma = self._new(np.zeros(dim), population)

    def _new(self, mean: np.ndarray, population: int) -> Any:
        from cmaes import CMA

        return CMA(mean=mean.astype(float), sigma=self.sigma0 * self.scale, population_size=population,
                   seed=int(self.rng.integers(2**31)), lr_adapt=self.lr_adapt)

    def ask(self) -> list[np.ndarray]:
        self.asked = [self.cma.ask() for _ in range(self.cma.population_size)]
        return list(self.asked)

    def tell(self, values: Sequence[float]) -> None:
        judges = finite_values(values)
        self.cma.tell([(theta, -float(j)) for theta, j in zip(self.asked, judges)])  # CMA-ES minimises
        self.generation += 1
        self.sigma = float(self.cma._sigma)  # what this generation ended with (logged before any restart)
        finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
        improved = finite.size and finite.max() > self.restart_best + 1e-9
        self.restart_best = max(self.restart_best, float(finite.max()) if finite.size else -math.inf)
        self.stale = 0 if improved else self.stale + 1
        flat = finite.size > 1 and np.ptp(finite) < 1e-9  # every candidate made the same masks
        if flat or self.stale >= self.patience or self.cma.should_stop():
            self._restart()

    def _restart(self) -> None:
        """IPOP: a fresh CMA-ES from a random mean, with ``restart_factor`` times the population."""
        self.restarts += 1
        self.population = int(round(self.cma.population_size * self.restart_factor))
        mean = self.rng.uniform(-self.scale, self.scale, self.dim)
        self.cma = self._new(mean, self.population)
        self.stale, self.restart_best = 0, -math.inf

    def scalars(self) -> dict[str, float]:
        return {**super().scalars(), "sigma": self.sigma}

    def state(self) -> dict[str, Any]:
        """Exact: the ``cmaes`` object's own pickle is lossy (it stores the covariance as one triangle, so a matrix
        symmetric only to 1e-16 comes back exactly symmetric and its eigenvectors can flip: a resumed search asked
        other candidates, measured) and leaves out its random stream, so its attributes are copied as they are."""
        own = {k: v for k, v in vars(self).items() if k != "cma"}
        cma = {k: v for k, v in vars(self.cma).items() if k != "_rng"}
        return {"class": type(self), "attributes": copy.deepcopy(own), "cma_class": type(self.cma),
                "cma": copy.deepcopy(cma), "cma_rng": self.cma._rng.get_state()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "CMAES":
        optimiser = super().from_state(state)
        cma = state["cma_class"].__new__(state["cma_class"])
        cma.__dict__.update(copy.deepcopy(state["cma"]))
        cma._rng = np.random.RandomState()
        cma._rng.set_state(state["cma_rng"])
        optimiser.cma = cma
        return optimiser

    @classmethod
    def from_search_before_the_seam(cls, saved: dict[str, Any], dim: int, scale: float) -> "CMAES":
        """A search saved before optimisers were a seam of their own (its CMA-ES state and IPOP counters were the
        search's): the same optimiser, so that such a run resumes exactly."""
        options = saved["options"]
        optimiser = cls.__new__(cls)
        cma = saved["optimizer"]["class"].__new__(saved["optimizer"]["class"])
        cma.__dict__.update(copy.deepcopy(saved["optimizer"]["attributes"]))
        cma._rng = np.random.RandomState()
        cma._rng.set_state(saved["optimizer"]["rng"])
        optimiser.__dict__.update(
            dim=dim, scale=scale, population=cma.population_size, seed=options["seed"],
            generation=saved["generations_before"] + cma.generation, restarts=saved["restarts"],
            sigma0=options["sigma0"], restart_factor=options["restart_factor"], patience=options["patience"],
            lr_adapt=options["lr_adapt"], rng=saved["rng"], stale=saved["stale"], restart_best=saved["restart_best"],
            asked=[], sigma=float(cma._sigma), cma=cma)
        return optimiser


@register_optimiser("sep_cmaes")
class SepCMAES(CMAES):
    """sep-CMA-ES (diagonal covariance) from the ``cmaes`` library, with the same IPOP restarts."""

    min_population = 2

    def __init__(self, dim: int, scale: float, population: int, seed: int, sigma0: float = 1.0,
                 restart_factor: float = 2.0, patience: int = 3) -> None:
        super().__init__(dim, scale, population, seed, sigma0, restart_factor, patience)

    def _new(self, mean: np.ndarray, population: int) -> Any:
        from cmaes import SepCMA

        return SepCMA(mean=mean.astype(float), sigma=self.sigma0 * self.scale, population_size=population,
                      seed=int(self.rng.integers(2**31)))


@register_optimiser("optuna_tpe")
class OptunaTPE(Optimiser):
    """Optuna's TPE sampler (Bergstra et al. 2011) through Optuna's ask/tell, each parameter in
    [-bound, bound] (``bound`` = 3 x ``scale``); ``pip install -e ".[optuna]"``. Its state is the study, pickled
    (the sampler's random stream with it)."""

    def __init__(self, dim: int, scale: float, population: int, seed: int, bound: float = 3.0) -> None:
        super().__init__(dim, scale, population, seed)
        try:
            import optuna
        except ImportError:
            raise ValueError('optimizer "optuna_tpe" needs Optuna: pip install -e ".[optuna]"') from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.bound = bound * scale
        self.study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
        self.trials: list[Any] = []

    def ask(self) -> list[np.ndarray]:
        self.trials = [self.study.ask() for _ in range(self.population)]
        return [np.array([t.suggest_float(f"x{i}", -self.bound, self.bound) for i in range(self.dim)])
                for t in self.trials]

    def tell(self, values: Sequence[float]) -> None:
        for trial, value in zip(self.trials, finite_values(values)):
            self.study.tell(trial, float(value))
        self.trials = []
        self.generation += 1

    def state(self) -> dict[str, Any]:
        return {"class": type(self), "pickle": pickle.dumps({**vars(self), "trials": []})}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "OptunaTPE":
        optimiser = cls.__new__(cls)
        optimiser.__dict__.update(pickle.loads(state["pickle"]))
        return optimiser
