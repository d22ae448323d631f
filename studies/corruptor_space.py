"""Are the named answers still found in a richer corruptor space? The default search (CMA-ES with its default judge
and rungs, a budget of ``SEARCH_BUDGET`` SimCLR updates: the ``per_image`` preset's) over a parametric corruptor, on
the random-placement shortcut and distractor, 3 seeds; per (task, seed) the best candidate's keep rate on the planted
cells (<= 0.3: found) and on the other cells, its kept fraction and, for ``cell_scorer``, its keep level and
temperature.

    python studies/corruptor_space.py --out docs/results/corruptor_space              # cell_scorer (resumes)
    python studies/corruptor_space.py --report docs/results/corruptor_space           # its table again

A corruptor that searches its own keep level (``cell_scorer``) runs without a keep budget; any other at the tasks'
budget. Each (task, seed) search is written to ``OUT/units/`` as it finishes, with the search's judge, rungs and
budget; a rerun skips the finished ones, and stops in one line, before any run, where they were searched otherwise
than the default search is now (units from before the defaults changed: give a new ``--out``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_audit import task_overrides  # noqa: E402

from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_json, atomic_write_text  # noqa: E402

TASKS = ("shortcut_random", "distractor_random")
FOUND = 0.3  # planted keep at or below which a search counts as having found the answer (the bar)
OWN_LEVEL = ("cell_scorer",)  # corruptors that choose how much to keep: run without a keep budget


def search_unit(task: str, corruptor: str, seed: int) -> dict[str, Any]:
    """One default search over ``corruptor`` on ``task`` with agent seed ``seed``: its answer."""
    import torch

    from agents import make_agent
    from benchmarking.sweep import SEARCH_BUDGET
    from corruption_env import CorruptionEnv, EnvConfig

    torch.set_num_threads(1)
    config = EnvConfig(**{**task_overrides(task), "action_mode": "scores", "num_threads": 1})
    if corruptor in OWN_LEVEL:
        config = config.replace(keep_budget=None)
    search = make_agent("cmaes", CorruptionEnv(config), seed=seed, corruptor=corruptor, engine="local", verbose=0)
    start = time.process_time()
    search.learn(SEARCH_BUDGET)
    best, names = search.best, search.corruptor.parameter_names()
    chosen = dict(zip(names, best["theta"]))
    return {"task": task, "corruptor": corruptor, "seed": seed, "runs": len(search.history),
            "search": {"judge": search.judge, "rungs": search.rung_updates, "budget": SEARCH_BUDGET,
                       "confirm": [search.confirm_judge, search.confirm_updates, search.confirm_seeds]},
            "confirmed": search.confirmed, "confirmation_margin": search.confirmation_margin(),
            "keep_planted": best["keep_planted"], "keep_other": best["keep_other"],
            "keep_fraction": best["keep_fraction"], "judge": best["judge"],
            "keeps_everything": search.keeps_everything, "keep_all_judge": search.keep_all["judge"],
            "answer_runs": search.known_answer().get("answer_runs"),
            "chosen": {k: chosen[k] for k in names[:6]}, "theta": [float(v) for v in best["theta"]],
            "cpu_minutes": (time.process_time() - start) / 60}


def unit_path(folder: Path, task: str, corruptor: str, seed: int) -> Path:
    return folder / "units" / f"{task}_{corruptor}_s{seed}.json"


def default_search() -> dict[str, Any]:
    """The judge, rungs (updates) and budget :func:`search_unit` searches with: the search's defaults."""
    import inspect

    from agents.search import WholeRunSearch, rung_lengths
    from benchmarking.sweep import SEARCH_BUDGET

    d = {k: p.default for k, p in inspect.signature(WholeRunSearch.__init__).parameters.items()}
    return {"judge": d["judge"], "rungs": rung_lengths(d["run_updates"], d["reduction_factor"], d["rungs"]),
            "budget": SEARCH_BUDGET, "confirm": [d["confirm_judge"], d["confirm_updates"], d["confirm_seeds"]]}


def searched_with(unit: dict[str, Any]) -> dict[str, Any]:
    """A unit's judge, rungs, budget and confirmation; those written before units recorded them ran the defaults of
    then (one length; no confirmation)."""
    from agents.search import DEFAULTS_BEFORE_FIDELITY as before

    return {"confirm": None, **unit.get("search", {"judge": before["judge"], "rungs": [before["run_updates"]],
                                                   "budget": 48 * 50})}


def search_name(search: dict[str, Any]) -> str:
    confirm = search.get("confirm")
    return (f"{search['judge']} after {' then '.join(map(str, search['rungs']))} updates, {search['budget']} in all"
            + (f", confirmed by {confirm[0]} after {confirm[1]} updates on {confirm[2]} seeds" if confirm else ""))


def report(folder: Path) -> str:
    units = [json.loads(p.read_text()) for p in sorted((folder / "units").glob("*.json"))]
    if not units:
        raise UsageError(f"no units in {folder / 'units'}: run the study first")
    lines = ["# The named answers in a richer corruptor space", "",
             f"`python studies/corruptor_space.py`: the default search ("
             f"{'; '.join(sorted({search_name(searched_with(u)) for u in units}))}), found = the best candidate keeps "
             f"<= {FOUND} of the planted cells.", "",
             "| task | corruptor | seed | planted keep | other keep | kept | found | keep level | temperature | "
             "runs to keep <= 0.2 | CPU min |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for u in units:
        level, temp = (u["chosen"].get(k) for k in ("keep_level", "temperature"))
        fmt = lambda v: "" if v is None else f"{v:+.2f}"  # noqa: E731
        lines.append(f"| {u['task']} | {u['corruptor']} | {u['seed']} | {u['keep_planted']:.2f} | "
                     f"{u['keep_other']:.2f} | {u['keep_fraction']:.2f} | "
                     f"{'yes' if u['keep_planted'] <= FOUND else 'no'} | {fmt(level)} | {fmt(temp)} | "
                     f"{u['answer_runs'] or 'not reached'} | {u['cpu_minutes']:.1f} |")
    found = sum(u["keep_planted"] <= FOUND for u in units)
    lines += ["", f"Found in {found} of {len(units)} (task, seed) searches."]
    return "\n".join(lines) + "\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/corruptor_space.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corruptor", default="cell_scorer", help="the parametric corruptor searched (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated named or generated tasks (default: %(default)s)")
    parser.add_argument("--seeds", type=positive(int), default=3, help="agent seeds per task (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/corruptor_space"), help="where the units and the report go (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="only rewrite the report from the units of this folder (default: run the study)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        if not args.report.is_dir():
            raise UsageError(f"--report {args.report}: no such folder")
        print(report(args.report), end="")
        return 0
    from corruption_env.whole_run import available_corruptors

    if args.corruptor not in available_corruptors():
        raise UsageError(f"unknown corruptor {args.corruptor!r}; available: {', '.join(available_corruptors())}")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        raise UsageError("--tasks is empty: name at least one task")
    for task in tasks:
        task_overrides(task)  # every name checked before any run
    now = default_search()
    for task in tasks:
        for seed in range(args.seeds):
            path = unit_path(args.out, task, args.corruptor, seed)
            if path.exists() and searched_with(json.loads(path.read_text())) != now:
                raise UsageError(f"{path} was searched with {search_name(searched_with(json.loads(path.read_text())))}"
                                 f", the default search is now {search_name(now)}: give a new --out")
    for task in tasks:
        for seed in range(args.seeds):
            path = unit_path(args.out, task, args.corruptor, seed)
            if path.exists():
                continue
            unit = search_unit(task, args.corruptor, seed)
            atomic_write_json(path, unit)
            print(f"{task} s{seed}: planted keep {unit['keep_planted']:.2f}, other {unit['keep_other']:.2f} "
                  f"({unit['cpu_minutes']:.1f} CPU min)", flush=True)
    text = report(args.out)
    atomic_write_text(args.out / "report.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
