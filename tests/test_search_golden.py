"""The search gives the candidates and judges recorded from the code before the optimiser seam
(tests/data/search_golden.json, ``python tests/record_search_golden.py``): CMA-ES with IPOP restarts on a fake
landscape, and two searches judged by real whole runs with the answer judge (exact: read from the masks).
A refactor of the search must keep every candidate, judge, generation and restart."""
import json

import pytest

from record_search_golden import GOLDEN, cases, search_history

RECORDED = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(cases()))
def test_the_search_gives_the_recorded_candidates_and_judges(name):
    assert search_history(name, cases()[name]) == RECORDED[name]


def test_a_search_saved_before_the_seam_resumes_exactly(monkeypatch):
    """tests/data/search_saved_before_the_seam.pkl: the landscape search saved by the code before the optimiser
    seam after 7 generations (56 candidates, one IPOP restart); resumed by today's code it continues to the
    recorded history."""
    import agents.search as search_module
    from corruption_env import CorruptionEnv, EnvConfig
    from record_search_golden import TINY, landscape

    monkeypatch.setattr(search_module, "judge_candidates", landscape)
    case = cases()["landscape"]
    env = CorruptionEnv(EnvConfig(**{**TINY, **case["env"]}))
    search = search_module.WholeRunSearch.load(GOLDEN.with_name("search_saved_before_the_seam.pkl"), env=env)
    assert len(search.history) == 56 and search.optimizer.restarts == 1
    search.learn(case["budget"] - search.num_timesteps)
    keys = ("generation", "restart", "theta", "judge", "keep_planted")
    assert [{k: r[k] for k in keys} for r in search.history] == RECORDED["landscape"]
