"""Is the search or the judge the limit? The oracle's shared map judged on each whole_run search's own run seed
(the same run config and judge as the search's candidates), beside the best candidate the search found
(docs/results/whole_run/runs.csv). Where the oracle scores higher, the search did not find a map its judge
ranks above what it kept; where it scores lower, the judge itself prefers another map.

    python studies/search_vs_judge.py
"""
from __future__ import annotations

import csv

import numpy as np
import torch

from agents.search import run_seed
from benchmarking.cli import build_parser, make_sweep
from corruption_env import CorruptionEnv
from corruption_env.whole_run import WholeRun, make_corruptor


def main() -> None:
    torch.set_num_threads(1)
    sw = make_sweep(build_parser().parse_args(["--preset", "whole_run"]), [])
    best = {r["run_id"]: r for r in csv.DictReader(open("docs/results/whole_run/runs.csv"))}
    for task in sw.tasks:
        cfg = sw.env_config(task)
        env = CorruptionEnv(cfg)
        env.reset(seed=0)
        planted = np.asarray(env.planted_cells)[0].reshape(-1)
        runs = WholeRun(cfg.replace(batch_size=64, num_threads=1, record_timings=False), 50, "rankme")
        corruptor = make_corruptor("score_map", runs.config)
        theta = np.where(planted, -1.0, 1.0).astype(np.float32)
        for seed in range(3):
            res = runs.judge_candidate(corruptor, theta, run_seed(seed))
            b = best[f"{task}/agent/cmaes/-/s{seed}"]
            print(f"{task} s{seed}: oracle map judge {res.judge:.2f} (keep_planted {res.keep_planted}); search best {float(b['best_judge']):.2f} at planted keep {b['keep_planted']}", flush=True)


if __name__ == "__main__":
    main()
