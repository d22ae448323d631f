"""The search gives the candidates and judges recorded from the code before the optimiser seam
(tests/data/search_golden.json, ``python tests/record_search_golden.py``): CMA-ES with IPOP restarts on a fake
landscape, two searches judged by real whole runs with the answer judge (exact: read from the masks), and a search
saved by that code and resumed by today's. A refactor of the search must keep every candidate, judge, generation
and restart. The searches run in one process whose numpy kernels are pinned (OpenBLAS Haswell, no AVX512 loops),
so that the recording holds on any x86-64 CPU with AVX2, whatever kernels this process chose."""
import json

import pytest

from kernels import has_avx2
from record_search_golden import GOLDEN, SAVED_BEFORE_THE_SEAM, cases, record

RECORDED = json.loads(GOLDEN.read_text())
pytestmark = pytest.mark.skipif(not has_avx2(), reason="the golden searches pin numpy's kernels to AVX2")


@pytest.fixture(scope="module")
def searched():
    return record()


@pytest.mark.parametrize("name", sorted(cases()))
def test_the_search_gives_the_recorded_candidates_and_judges(searched, name):
    assert searched[name] == RECORDED[name]


def test_a_search_saved_before_the_seam_resumes_exactly(searched):
    """The landscape search saved by the code before the optimiser seam after 6 generations (64 candidates, one
    IPOP restart), resumed by today's code, continues to the history of the uninterrupted search."""
    import pickle

    saved = pickle.loads(SAVED_BEFORE_THE_SEAM.read_bytes())
    assert len(saved["history"]) == 64 and saved["restarts"] == 1 and "generations_before" in saved
    assert RECORDED["landscape_resumed"] == RECORDED["landscape"]  # the old code resumed its own save exactly
    assert searched["landscape_resumed"] == RECORDED["landscape"]
