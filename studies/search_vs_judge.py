"""Is the search or the judge the limit? The oracle's shared map judged on each whole_run search's own run seed
(the same run config and judge as the search's candidates), beside the best candidate the search found
(docs/results/whole_run/runs.csv). Where the oracle scores higher, the search did not find a map its judge
ranks above what it kept; where it scores lower, the judge itself prefers another map.

    python studies/search_vs_judge.py
    python studies/search_vs_judge.py --runs results/benchmark_whole_run/runs.csv --seeds 2
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from agents.search import run_seed
from benchmarking.sweep import PRESETS, sweep_from
from corruption_env import CorruptionEnv
from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors
from corruption_env.whole_run import WholeRun, make_corruptor

RUNS = Path("docs/results/whole_run/runs.csv")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="studies/search_vs_judge.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help=f"runs.csv of a whole_run benchmark, whose searches' best candidates the oracle's map is "
                             f"set beside (default {RUNS})")
    parser.add_argument("--seeds", type=positive(int), default=3,
                        help="the searches' seeds 0..N-1 on each task (default 3)")
    return parser


def best_candidates(path: Path, tasks: list[str], seeds: int) -> dict[str, dict[str, str]]:
    """The rows of the searches (``task/agent/cmaes/-/sN``) in ``path``; a UsageError if it lacks one."""
    try:
        with open(path, newline="") as handle:
            rows = {row["run_id"]: row for row in csv.DictReader(handle)}
    except (OSError, csv.Error, KeyError) as exc:
        raise UsageError(f"--runs {path} cannot be read as a benchmark's runs.csv ({exc})") from None
    missing = [run for task in tasks for seed in range(seeds) if (run := f"{task}/agent/cmaes/-/s{seed}") not in rows]
    if missing:
        raise UsageError(f"--runs {path} has no row {missing[0]}: give the runs.csv of a whole_run benchmark with "
                         f"{seeds} seed(s), or fewer --seeds")
    return rows


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    sweep, _ = sweep_from(PRESETS["whole_run"], {}, {}, {})
    best = best_candidates(args.runs, list(sweep.tasks), args.seeds)
    torch.set_num_threads(1)
    for task in sweep.tasks:
        cfg = sweep.env_config(task)
        env = CorruptionEnv(cfg)
        env.reset(seed=0)
        planted = np.asarray(env.planted_cells)[0].reshape(-1)
        runs = WholeRun(cfg.replace(batch_size=64, num_threads=1, record_timings=False), 50, "rankme")
        corruptor = make_corruptor("score_map", runs.config)
        theta = np.where(planted, -1.0, 1.0).astype(np.float32)
        for seed in range(args.seeds):
            res = runs.judge_candidate(corruptor, theta, run_seed(seed))
            b = best[f"{task}/agent/cmaes/-/s{seed}"]
            print(f"{task} s{seed}: oracle map judge {res.judge:.2f} (keep_planted {res.keep_planted}); search best "
                  f"{float(b['best_judge']):.2f} at planted keep {b['keep_planted']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
