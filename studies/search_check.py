"""Did the search find the answer, and did it ever do worse than keeping everything? Read from a benchmark's runs.csv.

For every task of the benchmark folders given (e.g. ``--preset search`` and ``--preset fashion_search``), per seed:
the searched corruptor's keep rate on the planted cells (where the task has them), its final kNN against keep_all's
on the same seed, and whether it is within one of keep_all's seed-to-seed standard deviations. A task is an
**answer task** when the oracle's margin over keep_all (paired by seed) is beyond seed noise: its mean exceeds its
standard deviation over seeds (as the fidelity study reads it). The tallies at the end: on answer tasks, the share of
(task, seed) pairs with planted keep <= ``--found`` (0.3); on every task, the share with kNN >= keep_all's − one sd,
and with kNN >= keep_all's.

    python studies/search_check.py docs/results/search docs/results/fashion_search
    python studies/search_check.py docs/results/search --algo cmaes --out docs/results/search/check.md
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from corruption_env.cli_options import ArgumentParser, UsageError, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_text  # noqa: E402


def read_runs(folders: list[Path]) -> list[dict[str, str]]:
    runs = []
    for folder in folders:
        path = folder / "runs.csv"
        if not path.is_file():
            raise UsageError(f"{folder} holds no runs.csv: give a benchmark's --out folder")
        runs += [{**r, "folder": str(folder)} for r in csv.DictReader(path.open()) if r["status"] == "ok"]
    seen: dict[tuple[str, str, str], str] = {}
    for r in runs:
        key = (r["task"], r["name"], r["seed"])
        if seen.setdefault(key, r["folder"]) != r["folder"]:
            raise UsageError(f"{r['task']} {r['name']} seed {r['seed']} is in both {seen[key]} and {r['folder']}: "
                             "check one of them at a time")
    return runs


def number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def check_task(runs: list[dict[str, str]], algo: str, found: float) -> dict[str, Any] | None:
    """Per seed: planted keep, kNN and kNN − keep_all's; the task's keep_all sd and oracle margin. None without
    both the search's and keep_all's rows."""
    by = {(r["name"], int(r["seed"])): r for r in runs}
    seeds = sorted(s for n, s in by if n == algo and ("keep_all", s) in by)
    if not seeds:
        return None
    keep_all = [float(r["knn"]) for (name, _), r in by.items() if name == "keep_all"]
    noise = float(np.std(keep_all, ddof=1)) if len(keep_all) > 1 else 0.0
    margins = [float(by[("oracle", s)]["knn"]) - float(by[("keep_all", s)]["knn"])
               for s in sorted(s for n, s in by if n == "oracle") if ("keep_all", s) in by]
    answer = len(margins) > 1 and float(np.mean(margins)) > float(np.std(margins, ddof=1))
    per_seed = []
    for s in seeds:
        run, base = by[(algo, s)], float(by[("keep_all", s)]["knn"])
        planted = number(run.get("keep_planted"))
        per_seed.append({"seed": s, "planted_keep": planted, "found": planted is not None and planted <= found,
                         "knn": float(run["knn"]), "minus_keep_all": float(run["knn"]) - base,
                         "within_sd": float(run["knn"]) >= base - noise, "at_least": float(run["knn"]) >= base})
    return {"noise": noise, "answer": answer, "margin": (float(np.mean(margins)), float(np.std(margins, ddof=1)))
            if len(margins) > 1 else None, "seeds": per_seed}


def report(runs: list[dict[str, str]], algo: str, found: float) -> str:
    tasks = {t: check_task([r for r in runs if r["task"] == t], algo, found) for t in dict.fromkeys(r["task"] for r in runs)}
    tasks = {t: c for t, c in tasks.items() if c is not None}
    if not tasks:
        raise UsageError(f"no task has both {algo}'s rows and keep_all's: nothing to check")
    lines = [f"# {algo} against keep_all and the known answer", "",
             "| task | oracle − keep_all (sd) | answer task | keep_all seed sd | per seed: planted keep, kNN − keep_all |",
             "|---|---|---|---|---|"]
    for task, c in tasks.items():
        margin = "-" if c["margin"] is None else f"{c['margin'][0]:+.3f} ({c['margin'][1]:.3f})"
        seeds = "; ".join(f"s{s['seed']}: {'-' if s['planted_keep'] is None else format(s['planted_keep'], '.2f')}, "
                          f"{s['minus_keep_all']:+.3f}" for s in c["seeds"])
        lines.append(f"| {task} | {margin} | {'yes' if c['answer'] else 'no'} | {c['noise']:.3f} | {seeds} |")
    answer_pairs = [s for c in tasks.values() if c["answer"] for s in c["seeds"] if s["planted_keep"] is not None]
    pairs = [s for c in tasks.values() for s in c["seeds"]]
    share = lambda xs, key: f"{sum(x[key] for x in xs)} of {len(xs)}" if xs else "none"  # noqa: E731
    lines += ["", f"- answer tasks, planted keep <= {found}: {share(answer_pairs, 'found')} (task, seed) pairs",
              f"- every task, kNN >= keep_all's − one seed sd: {share(pairs, 'within_sd')}",
              f"- every task, kNN >= keep_all's: {share(pairs, 'at_least')}"]
    return "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/search_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="benchmark --out folders (each with runs.csv)")
    parser.add_argument("--algo", default="cmaes", help="the searched row's name (default: %(default)s)")
    parser.add_argument("--found", type=float, default=0.3,
                        help="planted keep at or below which the answer counts as found (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (default: print only)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    text = report(read_runs(args.folders), args.algo, args.found)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
