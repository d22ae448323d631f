"""Golden searches: seeded CMA-ES searches over whole runs recorded in tests/data/search_golden.json, so that a
change of the search's code (the optimiser seam, the whole-run agents' base) that changes a candidate or a judge
is seen.

Three searches, each exact by construction (no float kernel touches what is compared): one on a fake landscape
shaped like the barcode's (no SimCLR run at all; long enough for IPOP restarts), and two judged by real whole runs
with the ``planted_dropped`` judge (the share of planted cells the run's masks dropped: read from masks, not from an
encoder), a shared score map on the fixed shortcut and the 4-weight cell rule on the random distractor. The
candidates (CMA-ES's samples) and judges are compared exactly, and so are the generations and restarts.

    python tests/record_search_golden.py            # re-record (a deliberate change of the search; say why)
    python tests/record_search_golden.py --check    # compare with the recording
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).with_name("data") / "search_golden.json"
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
    common = dict(engine="local", verbose=0)
    return {
        "landscape": {"env": {}, "options": dict(run_updates=3, run_batch=4, population=8, **common),
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
    return [{"generation": r["generation"], "restart": r["restart"], "theta": [float(t) for t in r["theta"]],
             "judge": r["judge"], "keep_planted": r["keep_planted"]} for r in search.history]


def record() -> dict[str, Any]:
    return {name: search_history(name, case) for name, case in cases().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recording instead of writing it")
    args = parser.parse_args()
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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
