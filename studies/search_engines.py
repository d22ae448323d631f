"""What Ray Tune costs the whole-run search: the same search (same seed, same candidates, same judges) with its
candidates in this process one after the other (``engine local``) and as Ray Tune trials (``engine ray``, one CPU
each, ``--workers`` at once), side by side in one run; wall time, the candidates' own CPU time, and the overhead
per candidate run. On 2 cores the two engines can at best tie: Ray pays off past the cores of one run.

    python studies/search_engines.py [--task distractor_fixed_shared] [--updates 50] [--population 8] [--generations 2]
"""
from __future__ import annotations

import argparse
import time

import torch

from agents.search import WholeRunSearch
from benchmarking.sweep import TASKS
from corruption_env import CorruptionEnv, EnvConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="distractor_fixed_shared")
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = CorruptionEnv(EnvConfig.preset("cpu", **TASKS[args.task]))
    budget = args.updates * args.population * args.generations
    results = {}
    for engine in ("local", "ray"):
        start = time.perf_counter()
        search = WholeRunSearch(env, seed=0, run_updates=args.updates, run_batch=args.batch, population=args.population,
                                engine=engine, workers=args.workers, verbose=0).learn(budget)
        wall = time.perf_counter() - start
        cpu = sum(r["cpu_seconds"] for r in search.history)
        results[engine] = (search, wall, cpu)
        print(f"{engine:>5}: {len(search.history)} runs in {wall:.0f} s wall; the runs' own CPU {cpu:.0f} s; "
              f"wall x workers - CPU per run: {(wall * (1 if engine == 'local' else args.workers) - cpu) / len(search.history):.1f} s",
              flush=True)
    same = [r["judge"] for r in results["local"][0].history] == [r["judge"] for r in results["ray"][0].history]
    print(f"the same candidates and judges on both engines: {same}; ray / local wall = "
          f"{results['ray'][1] / results['local'][1]:.2f}")


if __name__ == "__main__":
    main()
