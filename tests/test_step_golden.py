"""The env step gives the same numbers as recorded from an earlier build (tests/data/step_golden.json): for
every registered built-in reward, with and without a keep budget, and every action mode, a seeded rollout's
rewards, losses, reward terms, learner observations and image batches. Refactors of the step must keep them;
a deliberate change of behaviour re-records with ``python tests/record_step_golden.py`` and says why."""
import json

import numpy as np
import pytest

from record_step_golden import GOLDEN, cases, rollout

RECORDED = json.loads(GOLDEN.read_text())
CASES = cases()


def test_every_registered_reward_and_action_mode_is_recorded():
    assert set(CASES) == set(RECORDED), "a reward or mode was added or removed: re-record the golden rollouts"


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_seeded_rollout_matches_the_recording(name):
    got, want = rollout(CASES[name]), RECORDED[name]
    assert got["images"] == want["images"]
    for key in ("rewards", "losses", "keep", "learner"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-7, err_msg=f"{name}: {key}")
    for got_terms, want_terms in zip(got["terms"], want["terms"]):
        assert got_terms.keys() == want_terms.keys()
        np.testing.assert_allclose(list(got_terms.values()), list(want_terms.values()), rtol=1e-6, atol=1e-7)
