"""Is there room above keeping everything on real images? The label-judged ceiling's table, read from benchmark folders.

The ceiling is a search judged by kNN *with labels* (``--algo cmaes_labels``; ``--preset fashion_ceiling`` runs it over
the cell scorer on plain Fashion-MNIST and with the per-image shortcut). Per task of the ceiling's folder, every row
of that task in it and in the ``--beside`` folders (the other corruptors and references at the same seeds and
evaluation length: ``docs/results/fashion_mnist/plain`` and ``.../known_answer``): kNN mean with a bootstrap CI,
and the paired difference (by seed) from the ceiling folder's keep_all and from simclr_aug where there is one. Then
the ceiling's choice per seed (kept fraction, keep level, temperature, planted keep, its judge against keeping every
cell's, the confirmation) and the verdict against the target: the ceiling >= keep_all + ``--target`` and >= simclr_aug +
``--target`` kNN with the CIs of both paired differences above 0.

The report names the lengths each search judged its candidates at (its rungs, from the folder's run_settings.json):
the ceiling is only as good as its judge's length predicts the evaluation's (``studies/fidelity.py``).

    python studies/ceiling.py docs/results/fashion_ceiling_200 --beside docs/results/fashion_mnist/plain \\
        docs/results/fashion_mnist/known_answer --out docs/results/fashion_ceiling_200/ceiling.md
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_check import number, read_runs  # noqa: E402

from agents.search import rung_lengths  # noqa: E402
from benchmarking.confidence import bootstrap_ci, format_ci  # noqa: E402
from corruption_env.cell_scorer import kept_fraction  # noqa: E402
from corruption_env.cli_options import ArgumentParser, UsageError, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_text  # noqa: E402

CEILING = "cmaes_labels"
CHOICE = ("temperature", "mean", "std", "horizontal_gradient", "vertical_gradient")  # the scorer's named parameters


def paired(runs: dict[int, dict[str, str]], base: dict[int, dict[str, str]]) -> np.ndarray:
    """kNN differences from ``base`` on the seeds both have."""
    return np.array([float(runs[s]["knn"]) - float(base[s]["knn"]) for s in sorted(runs) if s in base])


def difference(runs: dict[int, dict[str, str]], base: dict[int, dict[str, str]] | None) -> str:
    """The paired kNN difference from ``base`` with its CI and seed count ("" without a base or shared seeds)."""
    if base is None or runs is base or not len(d := paired(runs, base)):
        return ""
    return f"{format_ci(float(d.mean()), bootstrap_ci(d), '+.4f')} ({len(d)})"


def task_report(task: str, ceiling: Path, rows: list[dict[str, str]], target: float) -> list[str]:
    groups: dict[tuple[str, str], dict[int, dict[str, str]]] = {}
    for r in rows:
        label = r["name"] if Path(r["folder"]) == ceiling else f"{r['name']} ({Path(r['folder']).name})"
        groups.setdefault((label, r["folder"]), {})[int(r["seed"])] = r
    keep_all = groups.get(("keep_all", str(ceiling)))
    simclr = next((g for (label, _), g in groups.items() if label.split(" ")[0] == "simclr_aug"), None)
    lines = [f"## {task}", "", "| row | seeds | kNN mean [95% CI] | − keep_all (this sweep), paired [CI] (seeds) | "
             "− simclr_aug, paired [CI] (seeds) |", "|---|---|---|---|---|"]
    for (label, _), runs in sorted(groups.items(), key=lambda g: -np.mean([float(r["knn"]) for r in g[1].values()])):
        knn = np.array([float(r["knn"]) for r in runs.values()])
        name = "**label-judged ceiling (cell scorer)**" if label == CEILING else label
        lines.append(f"| {name} | {len(knn)} | {format_ci(float(knn.mean()), bootstrap_ci(knn), '.4f')} | "
                     f"{difference(runs, keep_all)} | {difference(runs, simclr)} |")
    ceiling_runs = groups.get((CEILING, str(ceiling)))
    if ceiling_runs is None:
        return lines + ["", f"No {CEILING} row on {task} in {ceiling}."]
    lines += ["", "The ceiling's choice per seed (its best candidate; a search whose answer was to keep every cell "
              "is evaluated as keep_all):", "",
              "| seed | its pick keeps | its planted keep | " + " | ".join(CHOICE) + " | judge: best / keep_all | "
              "confirmation margin | answer |", "|---|---|---|" + "---|" * len(CHOICE) + "---|---|---|"]
    for seed, r in sorted(ceiling_runs.items()):
        margin = number(r.get("confirmation_margin"))
        answer = "keep every cell" if r.get("keeps_everything") == "1.0" else "its pick"
        planted, level = number(r.get("final_keep_planted")), number(r.get("theta/keep_level"))  # the pick's
        keeps = float(r["keep_fraction"]) if level is None else kept_fraction(level)  # the 4-weight rule: the budget
        lines.append(f"| {seed} | {keeps:.2f} | {'-' if planted is None else f'{planted:.2f}'} | "
                     + " | ".join(f"{float(r[f'theta/{n}']):+.2f}" if r.get(f"theta/{n}") else "-" for n in CHOICE)
                     + f" | {float(r['best_candidate_judge']):.3f} / {float(r['keep_all_judge']):.3f} | "
                     + ("-" if margin is None else f"{margin:+.4f}") + f" | {answer} |")
    verdict = []
    for name, base in (("keep_all", keep_all), ("simclr_aug", simclr)):
        d = paired(ceiling_runs, base) if base is not None else np.array([])
        if not len(d):
            verdict.append(f"no {name} row to compare with")
            continue
        low = bootstrap_ci(d)[0]
        met = d.mean() >= target and (len(d) > 1 and low > 0)
        verdict.append(f"{'above' if met else 'not above'} {name} + {target} (paired {d.mean():+.4f}, CI low "
                       f"{low:+.4f})")
    return lines + ["", f"**Target** (the ceiling >= each + {target} kNN, CI above 0): " + "; ".join(verdict) + "."]


def judged_at(ceiling: Path) -> str:
    """The judge and the run lengths (updates, its rungs) the folder's searches judged their candidates at."""
    path = ceiling / "run_settings.json"
    settings = json.loads(path.read_text()) if path.is_file() else {}
    ways = set()
    for s in settings.values():
        if s.get("kind") == "agent" and s.get("name") == CEILING:
            o = {**s.get("agent_defaults", {}), **s.get("agent_options", {})}
            lengths = rung_lengths(o["run_updates"], o.get("reduction_factor", 2), o.get("rungs", 1))
            ways.add(f"{o['judge']} after {' then '.join(map(str, lengths))} updates")
    return "; ".join(sorted(ways)) if ways else "a judge and lengths not recorded (no run_settings.json)"


def report(ceiling: Path, beside: list[Path], target: float) -> str:
    runs = [r for folder in (ceiling, *beside) for r in read_runs([folder])]  # keep_all may be in several
    tasks = list(dict.fromkeys(r["task"] for r in runs if Path(r["folder"]) == ceiling))
    if not tasks:
        raise UsageError(f"{ceiling} has no finished run: run python benchmark.py --preset fashion_ceiling --out "
                         f"{ceiling}")
    lines = ["# The label-judged ceiling", "", f"`python studies/ceiling.py {ceiling} "
             + (f"--beside {' '.join(map(str, beside))}" if beside else "") + "`", "",
             f"Each candidate judged by {judged_at(ceiling)}.", ""]
    for task in tasks:
        lines += task_report(task, ceiling, [r for r in runs if r["task"] == task], target) + [""]
    return "\n".join(lines)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/ceiling.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("ceiling", type=Path, help="the ceiling's benchmark --out folder (cmaes_labels and keep_all)")
    parser.add_argument("--beside", nargs="*", type=Path, default=[],
                        help="benchmark folders whose rows on the same tasks stand beside it (default: none)")
    parser.add_argument("--target", type=float, default=0.01,
                        help="the kNN gain over keep_all and simclr_aug asked of the ceiling (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (default: print only)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    text = report(args.ceiling, args.beside, args.target)
    if args.out is not None:
        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
