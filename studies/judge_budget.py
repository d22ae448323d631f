"""How long must a whole run be, and how large its batch, for the judge to rank the known answer first?

On each fixed known-answer task (a shared score map can express the answer: drop the planted row), for each
seed, one whole run per corruptor from scratch, all on the run seed (common random numbers): the oracle's map
(drop the planted cells), ``--random-maps`` random maps (each drops its own 4 cells for the whole run, never
exactly the planted ones), and random masks drawn afresh every update (the benchmark's ``random`` row). The
judge (RankMe of the held-out features, ``--judge``) is read after each of ``--updates`` of the same run (a
fixed corruptor's shorter run is the same run's beginning). A setting passes a seed when the oracle's judge
beats every random map's and the per-update random masks'. The smallest setting that passes every seed on
every task is the whole-run search's default (``agents/search.py``).

    python studies/judge_budget.py                         # both fixed tasks, batches 32 and 64, 3 seeds
    python studies/judge_budget.py --batches 32 --updates 50,100 --seeds 2 --out /tmp/judge

Writes ``judge_budget.json`` and ``judge_budget.md`` (the table) to ``--out``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from benchmarking.sweep import TASKS
from corruption_env import EnvConfig
from corruption_env.files import atomic_write_json, atomic_write_text
from corruption_env.precision import cpu_name
from corruption_env.whole_run import WholeRun


def oracle_map(runs: WholeRun) -> np.ndarray:
    """The shared score map of the known answer: cells score minus how often they carry the planted pattern."""
    frequency = runs.env.train_planted_cells.float().mean(dim=0).flatten().cpu().numpy()
    return -frequency


def partial_maps(oracle: np.ndarray, keep_cells: int) -> dict[str, np.ndarray]:
    """Maps that drop only some of the planted cells (and the cells above them for the rest of the budget): the
    landscape between no planted cell and all of them. Cells are named by their index in the row-major grid."""
    planted = np.argsort(oracle)[:oracle.size - keep_cells]
    side = int(np.sqrt(oracle.size))
    others = [c for c in np.argsort(-oracle) if c not in planted][::-1]  # other cells, nearest the planted row first
    subsets = {"1 planted": planted[:1], "2 planted, mirrored": planted[[0, -1]], "2 planted, adjacent": planted[:2],
               "3 planted": planted[:3]}
    maps = {}
    for name, subset in subsets.items():
        dropped = list(subset) + [c for c in others if c not in subset][:len(planted) - len(subset)]
        scores = np.ones(oracle.size, dtype=np.float32)
        scores[dropped] = 0.0
        maps[f"{name} ({', '.join(str(divmod(int(c), side)) for c in dropped)})"] = scores
    return maps


def random_maps(oracle: np.ndarray, keep_cells: int, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` score maps that each drop their own random cells (never exactly the oracle's)."""
    dropped = set(np.argsort(oracle)[:oracle.size - keep_cells].tolist())
    maps = []
    while len(maps) < count:
        scores = rng.permutation(oracle.size).astype(np.float32)
        if set(np.argsort(scores)[:oracle.size - keep_cells].tolist()) != dropped:
            maps.append(scores)
    return maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="shortcut_fixed_shared,distractor_fixed_shared")
    parser.add_argument("--batches", default="32,64", help="batch sizes of the runs")
    parser.add_argument("--updates", default="50,100,200", help="run lengths at which the judge is read")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--random-maps", type=int, default=3)
    parser.add_argument("--judge", default="rankme")
    parser.add_argument("--landscape", action="store_true", help="also maps that drop 1, 2 or 3 of the planted cells")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--env-kwargs", nargs="*", default=[], metavar="KEY:VALUE")
    parser.add_argument("--out", type=Path, default=Path("docs/results/whole_run"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from corruption_env.cli_options import parse_key_values

    overrides = parse_key_values(args.env_kwargs, "--env-kwargs")
    lengths = sorted(int(u) for u in args.updates.split(","))
    rows = []
    for task in args.tasks.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            cfg = EnvConfig.preset("cpu", **{**TASKS[task], "batch_size": batch, **overrides})
            runs = WholeRun(cfg, lengths[-1], args.judge)
            oracle = oracle_map(runs)
            for seed in range(args.seeds):
                rng = np.random.default_rng([seed, batch])
                corruptors = {"oracle": lambda obs, m=oracle: m}
                corruptors.update({f"random map {i}": (lambda obs, m=m: m) for i, m in
                                   enumerate(random_maps(oracle, cfg.keep_cells, args.random_maps, rng))})
                corruptors["random masks"] = lambda obs: rng.standard_normal(oracle.size).astype(np.float32)
                if args.landscape:
                    corruptors.update({name: (lambda obs, m=m: m) for name, m in partial_maps(oracle, cfg.keep_cells).items()})
                for name, act in corruptors.items():
                    result = runs.judge(act, seed, also_at=tuple(lengths[:-1]))
                    judges = {**result.judge_at, lengths[-1]: result.judge}
                    rows.append({"task": task, "batch": batch, "seed": seed, "corruptor": name,
                                 "judge": {str(k): v for k, v in judges.items()}, "keep_planted": result.keep_planted,
                                 "cpu_seconds": result.cpu_seconds})
                    print(f"{task} B={batch} seed {seed} {name:>14}: keep_planted {result.keep_planted:.2f} "
                          + " ".join(f"{k}:{v:.2f}" for k, v in judges.items())
                          + f" ({result.cpu_seconds:.0f} CPU s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "judge_budget.json", {"command": "python studies/judge_budget.py", "args": vars(args)
                                                       | {"out": str(args.out)}, "cpu": cpu_name(), "rows": rows,
                                                       "date": time.strftime("%Y-%m-%d")})
    atomic_write_text(args.out / "judge_budget.md", report(rows, lengths))
    print(report(rows, lengths))


def report(rows: list[dict], lengths: list[int]) -> str:
    """Per (run length, batch): on each task, the seeds where the oracle's judge beat every random corruptor,
    and the oracle's margin over the best of them (mean over seeds); then each corruptor's mean judge."""
    tasks = sorted({r["task"] for r in rows})
    lines = ["| updates | batch | CPU s per run | " + " | ".join(f"{t}: oracle first (margin)" for t in tasks)
             + " | passes |", "|---|---|---|" + "---|" * len(tasks) + "---|"]
    for updates in lengths:
        for batch in sorted({r["batch"] for r in rows}):
            cells, passes = [], True
            for task in tasks:
                wins, margins = 0, []
                seeds = sorted({r["seed"] for r in rows if r["task"] == task and r["batch"] == batch})
                for seed in seeds:
                    judged = {r["corruptor"]: r["judge"][str(updates)] for r in rows
                              if (r["task"], r["batch"], r["seed"]) == (task, batch, seed)}
                    best_other = max(v for k, v in judged.items() if k.startswith("random"))
                    wins += judged["oracle"] > best_other
                    margins.append(judged["oracle"] - best_other)
                passes &= wins == len(seeds)
                cells.append(f"{wins}/{len(seeds)} ({np.mean(margins):+.2f})")
            seconds = np.mean([r["cpu_seconds"] for r in rows if r["batch"] == batch]) * updates / lengths[-1]
            lines.append(f"| {updates} | {batch} | {seconds:.0f} | " + " | ".join(cells) + f" | {'yes' if passes else 'no'} |")
    lines += ["", "Mean judge per corruptor (over seeds; random maps pooled):", "",
              "| task | batch | corruptor | " + " | ".join(f"{u} updates" for u in lengths) + " |",
              "|---|---|---|" + "---|" * len(lengths)]
    for task in tasks:
        for batch in sorted({r["batch"] for r in rows}):
            names = list(dict.fromkeys("random maps" if r["corruptor"].startswith("random map") else r["corruptor"]
                                       for r in rows if (r["task"], r["batch"]) == (task, batch)))
            for name in names:
                picked = [r for r in rows if (r["task"], r["batch"]) == (task, batch) and
                          (r["corruptor"] == name or (name == "random maps" and r["corruptor"].startswith("random map")))]
                means = [np.mean([r["judge"][str(u)] for r in picked]) for u in lengths]
                lines.append(f"| {task} | {batch} | {name} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
