"""The ask/tell seam of the search over whole runs: every registered optimiser asks a generation, is told its
judges, resumes exactly from its state, and runs a search; a new optimiser or a new parametric corruptor is one
class in one file (written here to a module of its own, imported, registered, and searched with); the search never
reads an optimiser's insides."""
from __future__ import annotations

import ast
import importlib
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from agents import make_agent
from agents.optimisers import OPTIMISERS, available_optimisers
from agents.search import WholeRunSearch
from corruption_env import CorruptionEnv
from test_whole_run import TINY

ROOT = Path(__file__).resolve().parents[1]
SEARCH = dict(run_updates=2, run_batch=8, population=6, rungs=1, confirm_updates=2, engine="local", verbose=0,
              judge="planted_dropped")
NEEDS = {"optuna_tpe": "optuna"}


def optimiser_names() -> list:
    return [pytest.param(n, marks=pytest.mark.skipif(importlib.util.find_spec(NEEDS[n]) is None,
                                                      reason=f"the {NEEDS[n]} extra")) if n in NEEDS else n
            for n in available_optimisers()]


def sphere(thetas):
    return [-float(np.sum((np.asarray(t) - 0.5) ** 2)) for t in thetas]


@pytest.mark.parametrize("name", optimiser_names())
def test_an_optimiser_asks_is_told_and_resumes_exactly_from_its_state(name):
    whole = OPTIMISERS[name](4, 1.0, 6, seed=3)
    told = []
    for _ in range(3):
        asked = whole.ask()
        assert len(asked) == whole.population and all(np.shape(t) == (4,) for t in asked)
        whole.tell(sphere(asked))
        told.append(asked)
    half = OPTIMISERS[name](4, 1.0, 6, seed=3)
    half.tell(sphere(half.ask()))
    resumed = type(half).from_state(pickle.loads(pickle.dumps(half.state())))
    resumed.tell(sphere(resumed.ask()))
    np.testing.assert_array_equal(resumed.ask(), told[2])
    assert whole.generation == 3 and all(np.isfinite(v) for v in whole.scalars().values())


@pytest.mark.parametrize("name", optimiser_names())
def test_every_optimiser_searches_and_resumes(tmp_path, name):
    env = CorruptionEnv(TINY)
    options = {**SEARCH, "optimizer": name, "population": 4}
    search = make_agent("cmaes", env, seed=0, **options).learn(2 * 4 * 2)
    assert len(search.history) == 8 and search.best is not None
    search.save(tmp_path / "search.pkl")
    again = WholeRunSearch.load(tmp_path / "search.pkl", env=env).learn(2 * 4)
    more = make_agent("cmaes", env, seed=0, **options).learn(2 * 4 * 3)
    assert [r["theta"] for r in again.history] == [r["theta"] for r in more.history]


def test_an_option_the_optimiser_does_not_take_is_refused():
    pytest.importorskip("optuna")
    with pytest.raises(ValueError, match="optimizer 'optuna_tpe' takes no option lr_adapt"):
        make_agent("cmaes", CorruptionEnv(TINY), **{**SEARCH, "optimizer": "optuna_tpe", "lr_adapt": True})


def test_the_search_reads_no_private_field_of_an_optimiser():
    """``WholeRunSearch`` talks to an optimiser through ask, tell, stop, state, from_state, scalars, population,
    generation and restarts only (it never reads ``optimizer._x`` or the library object inside)."""
    tree = ast.parse((ROOT / "agents" / "search.py").read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "optimizer"}
    assert used <= {"ask", "tell", "stop", "state", "scalars", "population", "generation", "restarts"}, used


RANDOM_SEARCH = '''"""A new optimiser, one class in one file: random search around the best candidate so far."""
import numpy as np

from agents.optimisers import Optimiser, register_optimiser


@register_optimiser("local_random")
class LocalRandom(Optimiser):
    def __init__(self, dim, scale, population, seed, sigma0=1.0):
        super().__init__(dim, scale, population, seed)
        self.rng, self.sigma, self.best, self.best_value = np.random.default_rng(seed), sigma0 * scale, np.zeros(dim), -np.inf

    def ask(self):
        self.asked = [self.best + self.sigma * self.rng.standard_normal(self.dim) for _ in range(self.population)]
        return list(self.asked)

    def tell(self, values):
        i = int(np.argmax(values))
        if values[i] > self.best_value:
            self.best, self.best_value = self.asked[i], values[i]
        self.generation += 1
'''

BOTTOM_ROW = '''"""A new parametric corruptor, one class in one file: one weight per row of the grid."""
import numpy as np

from corruption_env.whole_run import ParametricCorruptor, register_corruptor


@register_corruptor("row_weights")
class RowWeights(ParametricCorruptor):
    @property
    def dim(self):
        return self.grid

    def act(self, theta, observation):
        scores = np.repeat(self.check(theta), self.grid)
        return scores if self.mode.shared else np.tile(scores, len(observation["images"]))
'''


@pytest.fixture
def module_in_a_file(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    added = []

    def write(name: str, text: str):
        (tmp_path / f"{name}.py").write_text(text)
        added.append(name)
        return importlib.import_module(name)

    yield write
    for name in added:
        sys.modules.pop(name, None)


def test_a_new_optimiser_is_one_class_in_one_file(module_in_a_file, monkeypatch):
    monkeypatch.setattr(OPTIMISERS, "entries", dict(OPTIMISERS.entries))
    module_in_a_file("my_random_search", RANDOM_SEARCH)
    search = make_agent("cmaes", CorruptionEnv(TINY), seed=0, **{**SEARCH, "optimizer": "local_random"}).learn(2 * 6 * 8)
    assert search.best["keep_planted"] <= 0.25, search.summary()  # told the answer, it drops the planted row


def test_a_new_parametric_corruptor_is_one_class_in_one_file(module_in_a_file, monkeypatch):
    from corruption_env.whole_run import CORRUPTORS

    monkeypatch.setattr(CORRUPTORS, "entries", dict(CORRUPTORS.entries))
    module_in_a_file("my_row_weights", BOTTOM_ROW)
    search = make_agent("cmaes", CorruptionEnv(TINY), seed=0, corruptor="row_weights",
                        **{**SEARCH, "population": 4}).learn(2 * 4 * 6)
    assert search.best["keep_planted"] == 0.0, search.summary()  # one weight for the bottom row drops all of it
