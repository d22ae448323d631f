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
