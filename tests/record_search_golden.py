"""Golden searches: seeded CMA-ES searches over whole runs recorded in tests/data/search_golden.json, so that a
change of the search's code (the optimiser seam, the whole-run agents' base) that changes a candidate or a judge
is seen.

Three searches: one on a fake landscape shaped like the barcode's (no SimCLR run at all; long enough for IPOP
restarts), and two judged by real whole runs with the ``planted_dropped`` judge (the share of planted cells the
run's masks dropped: read from masks, not from an encoder), a shared score map on the fixed shortcut and the
4-weight cell rule on the random distractor; and a fourth, the landscape search saved after 6 generations by the code
before the optimiser seam (``tests/data/search_saved_before_the_seam.pkl``) and resumed by today's. The candidates
(CMA-ES's samples) and judges are compared exactly, and so are the generations and restarts.

Exact on any x86-64 CPU with AVX2 because the searches run in a process whose numpy kernels are pinned
(``tests/kernels.py``: ``pinned_numpy``): CMA-ES samples through an eigen-decomposition of its covariance, whose
rounding, and the sign of whose eigenvectors, follow the kernels numpy's OpenBLAS and numpy's own SIMD loops pick
for the CPU (OpenBLAS's Haswell kernels on an AVX2 CPU, SkylakeX's on an AVX512 one); one flipped sign changes
every later candidate. The masks and judges compared involve no torch kernel. The recording was made by the code before the
optimiser seam (commit 271fa5d) under the same pin.

    python tests/record_search_golden.py            # re-record (a deliberate change of the search; say why)
    python tests/record_search_golden.py --check    # compare with the recording
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from kernels import has_avx2, pinned_numpy

GOLDEN = Path(__file__).with_name("data") / "search_golden.json"
SAVED_BEFORE_THE_SEAM = GOLDEN.with_name("search_saved_before_the_seam.pkl")
TINY = dict(image_size=16, scale=2, batch_size=4, mask_grid=4, decorruptor="bicubic", heldout_size=32,
            dataset_kwargs={"train_size": 256, "test_size": 64, "shortcut": "fixed", "shortcut_bits": 4},
            action_mode="shared_scores", keep_budget=0.75, precision="fp32", num_threads=1)
OTHER_CELLS = np.random.default_rng(0).normal(0.0, 0.4, 16)  # what dropping each other cell is worth to the judge


def landscape(settings: dict[str, Any], thetas: list[np.ndarray]) -> list[dict[str, Any]]:
    """A judge shaped like the one measured on the barcode at the search's defaults (50 updates of 64 images:
    RankMe 37.2, 37.4, 37.7-38.0, 39.4 and 41.5 with 0-4 of the planted cells dropped; every other cell moves it
    by about a cell's worth): which 4 cells a map drops (its 4 lowest scores), the planted bottom row paying most
    for its last cell, each other cell dropped a fixed amount of its own (also tests/test_search.py's)."""
    out = []
    for theta in thetas:
        dropped = np.argsort(theta)[:4]
        planted = int(np.isin(dropped, [12, 13, 14, 15]).sum())
        judge = [0.0, 0.2, 0.6, 2.2, 4.3][planted] + OTHER_CELLS[dropped[dropped < 12]].sum()
        out.append({"judge": float(judge), "keep_fraction": 0.75, "keep_planted": 1 - planted / 4, "keep_other": 0.0,
                    "final_loss": 0.0, "cpu_seconds": 0.0, "diverged": False, "judge_at": {}})
    return out


def cases() -> dict[str, dict[str, Any]]:
    """name -> the search's env overrides, its options and its budget (SimCLR updates over every candidate)."""
    common = dict(engine="local", verbose=0, rungs=1, confirm_updates=0)  # one length, as before successive halving
    return {
        "landscape": {"env": {}, "options": dict(run_updates=3, run_batch=4, population=8, judge="rankme", **common),
                      "budget": 3 * 8 * 14, "seed": 3, "fake": True},
        "score_map_planted": {"env": {}, "options": dict(run_updates=2, run_batch=8, population=6,
                                                         judge="planted_dropped", **common),
                              "budget": 2 * 6 * 4, "seed": 0},
        "cell_rule_planted": {"env": {"action_mode": "scores",
                                      "dataset_kwargs": {"train_size": 256, "test_size": 64, "distractor": "random"}},
                              "options": dict(run_updates=2, run_batch=8, population=5, judge="planted_dropped",
                                              **common),
                              "budget": 2 * 5 * 4, "seed": 1},
    }


def search_history(name: str, case: dict[str, Any]) -> list[dict[str, Any]]:
    import agents.search as search_module
    from agents import make_agent
    from corruption_env import CorruptionEnv, EnvConfig

    original = search_module.judge_candidates
    if case.get("fake"):
        search_module.judge_candidates = landscape
    try:
        env = CorruptionEnv(EnvConfig(**{**TINY, **case["env"]}))
        search = make_agent("cmaes", env, seed=case["seed"], **case["options"]).learn(case["budget"])
    finally:
        search_module.judge_candidates = original
    return [{**{k: r[k] for k in HISTORY_KEYS}, "theta": [float(t) for t in r["theta"]]} for r in search.history]


HISTORY_KEYS = ("generation", "restart", "theta", "judge", "keep_planted")


def resumed_history() -> list[dict[str, Any]]:
    """The landscape search saved before the optimiser seam, resumed by today's code to the landscape's budget."""
    import agents.search as search_module
    from corruption_env import CorruptionEnv, EnvConfig

    case = cases()["landscape"]
    original, search_module.judge_candidates = search_module.judge_candidates, landscape
    try:
        env = CorruptionEnv(EnvConfig(**{**TINY, **case["env"]}))
        search = search_module.WholeRunSearch.load(SAVED_BEFORE_THE_SEAM, env=env)
        search.learn(case["budget"] - search.num_timesteps)
    finally:
        search_module.judge_candidates = original
    return [{k: r[k] for k in HISTORY_KEYS} for r in search.history]


def pinned_environment() -> dict[str, str]:
    return {**os.environ, **pinned_numpy()}


def record() -> dict[str, Any]:
    """Every golden search, in a process of its own with the kernels pinned (whatever this process loaded)."""
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--emit"], env=pinned_environment(),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the pinned golden searches failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recording instead of writing it")
    parser.add_argument("--emit", action="store_true", help=argparse.SUPPRESS)  # the pinned process: print JSON
    args = parser.parse_args()
    if args.emit:
        if any(os.environ.get(k) != v for k, v in pinned_numpy().items()):
            raise SystemExit("--emit runs in the pinned process that record() starts")
        histories = {name: search_history(name, case) for name, case in cases().items()}
        histories["landscape_resumed"] = resumed_history()
        print(json.dumps(histories))
        return 0
    if not has_avx2():
        raise SystemExit("the golden searches pin numpy's kernels to AVX2, which this CPU does not have")
    now = record()
    if args.check:
        recorded = json.loads(GOLDEN.read_text())
        bad = [name for name in recorded if recorded[name] != now.get(name)]
        print("differ: " + ", ".join(bad) if bad else "identical")
        return 1 if bad else 0
    GOLDEN.write_text(json.dumps(now, indent=1) + "\n")
    print(f"wrote {GOLDEN}: " + ", ".join(f"{k} {len(v)} candidates, {max(r['restart'] for r in v)} restarts"
                                          for k, v in now.items()))
    return 0


if __name__ == "__main__":
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
    raise SystemExit(main())
