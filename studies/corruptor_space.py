"""Are the named answers still found in a richer corruptor space, and by which optimiser? The default search (CMA-ES
with its default judge and rungs, a budget of ``SEARCH_BUDGET`` SimCLR updates: the ``per_image`` preset's) over a
parametric corruptor, on the random-placement shortcut and distractor, 3 seeds; per (task, seed) the best candidate's
keep rate on the planted cells (<= 0.3: found) and on the other cells, its kept fraction and, for ``cell_scorer``, its
keep level and temperature, and how many of the candidates at the first stage's last rung were answers (and the best
one's rank there: a miss the first stage saw, or one it never saw). With ``--optimizers`` the same search by each
optimiser (``agents.optimisers``) on the same seeds, and a line per optimiser: searches that found the answer and the
runs they took (the measured comparison a high-dimensional space's optimiser is chosen by).

    python studies/corruptor_space.py --out docs/results/corruptor_space              # cell_scorer (resumes)
    python studies/corruptor_space.py --report docs/results/corruptor_space           # its table again (rewritten)
    python studies/corruptor_space.py --tasks shortcut_random --optimizers cmaes,sep_cmaes --no-confirmation \
        --workers 2 --out docs/results/optimisers                                     # the optimisers compared

``--no-confirmation`` leaves out the search's confirmation rung (it judges the pick against keeping everything
after the budget: it changes no candidate, so an optimiser comparison does not need its CPU).

A corruptor that searches its own keep level (``cell_scorer``) runs without a keep budget, its level held at the
search's ``first_stage_keep`` through the first stage (the default: the confirmation chooses between it and keeping
every cell); any other at the tasks' budget. Each (task, seed) search is written to ``OUT/units/`` as it finishes,
with the search's judge, rungs and budget; a rerun skips the finished ones, and stops in one line, before any run,
where they were searched otherwise than the default search is now (units from before the defaults changed: give a
new ``--out``).
"""
from __future__ import annotations

import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_audit import task_overrides  # noqa: E402

from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_json, atomic_write_text  # noqa: E402

TASKS = ("shortcut_random", "distractor_random")
FOUND = 0.3  # planted keep at or below which a search counts as having found the answer (the bar)


def search_unit(task: str, corruptor: str, seed: int, optimizer: str = "cmaes", confirm: bool = True
                ) -> dict[str, Any]:
    """One default search by ``optimizer`` over ``corruptor`` on ``task`` with agent seed ``seed`` (without its
    confirmation rung unless ``confirm``): its answer."""
    import torch

    from agents import make_agent
    from benchmarking.sweep import SEARCH_BUDGET
    from corruption_env import CorruptionEnv, EnvConfig
    from corruption_env.whole_run import CORRUPTORS

    torch.set_num_threads(1)
    config = EnvConfig(**{**task_overrides(task), "action_mode": "scores", "num_threads": 1})
    if CORRUPTORS[corruptor].keeps_own_level:  # it chooses how much to keep: no keep budget
        config = config.replace(keep_budget=None)
    search = make_agent("cmaes", CorruptionEnv(config), seed=seed, corruptor=corruptor, engine="local", verbose=0,
                        optimizer=optimizer, **({} if confirm else {"confirm_updates": 0}))
    start = time.process_time()
    search.learn(SEARCH_BUDGET)
    best, names = search.pick, search.corruptor.parameter_names()  # the answer: the confirmation's winner
    chosen = dict(zip(names, best["theta"]))
    return {"task": task, "corruptor": corruptor, "seed": seed, "runs": len(search.history),
            "search": {"judge": search.judge, "rungs": search.rung_updates, "budget": SEARCH_BUDGET,
                       "confirm": [search.confirm_judge, search.confirm_updates, search.confirm_seeds,
                                   search.confirm_finalists] if search.confirm_updates else None,
                       "optimizer": optimizer,
                       "first_stage_keep": search.first_stage_keep if search.holds_level else None},
            "confirmed": search.confirmed, "confirmation_margin": search.confirmation_margin(),
            "keep_planted": best["keep_planted"], "keep_other": best["keep_other"],
            "keep_fraction": best["keep_fraction"], "judge": best["judge"],
            "keeps_everything": search.keeps_everything, "keep_all_judge": search.keep_all["judge"],
            "answer_runs": search.known_answer().get("answer_runs"),
            "first_stage": {k: search.best[k] for k in ("keep_planted", "keep_other", "keep_fraction", "judge")},
            "confirmation_margins": search.confirmation_margins(), "last_rung": last_rung(search),
            "chosen": {k: chosen[k] for k in names[:6]}, "theta": [float(v) for v in best["theta"]],
            "cpu_minutes": (time.process_time() - start) / 60}


def last_rung(search: Any) -> list[list[float]]:
    """The candidates of a search that reached its last rung, best judged first: ``[judge, planted keep, other
    keep]`` each (where a miss came from: answers the first stage saw but ranked low, or none it saw at all)."""
    return [[float(r["judge"]), float(r["keep_planted"]), float(r["keep_other"])] for r in search.ranked()
            if r.get("keep_planted") is not None]


def answers_seen(unit: dict[str, Any]) -> str:
    """How many of the candidates at the last rung kept <= ``FOUND`` of the planted cells, and the best one's rank
    by the first stage's judge ("" for units written before units recorded it)."""
    if "last_rung" not in unit:
        return ""
    ranks = [i + 1 for i, (_, planted, _) in enumerate(unit["last_rung"]) if planted <= FOUND]
    return f"{len(ranks)} of {len(unit['last_rung'])}" + (f" (best #{ranks[0]})" if ranks else "")


def unit_path(folder: Path, task: str, corruptor: str, seed: int, optimizer: str = "cmaes") -> Path:
    return folder / "units" / f"{task}_{corruptor}{'' if optimizer == 'cmaes' else '_' + optimizer}_s{seed}.json"


def default_search(optimizer: str = "cmaes", confirm: bool = True, corruptor: str = "cell_scorer") -> dict[str, Any]:
    """The judge, rungs (updates), budget, confirmation, optimiser and first-stage keep level :func:`search_unit`
    searches ``corruptor`` with: the search's defaults."""
    import inspect

    from agents.search import WholeRunSearch, rung_lengths
    from benchmarking.sweep import SEARCH_BUDGET
    from corruption_env.whole_run import CORRUPTORS

    d = {k: p.default for k, p in inspect.signature(WholeRunSearch.__init__).parameters.items()}
    return {"judge": d["judge"], "rungs": rung_lengths(d["run_updates"], d["reduction_factor"], d["rungs"]),
            "budget": SEARCH_BUDGET, "optimizer": optimizer,
            "first_stage_keep": d["first_stage_keep"] if CORRUPTORS[corruptor].keeps_own_level else None,
            "confirm": [d["confirm_judge"], d["confirm_updates"], d["confirm_seeds"], d["confirm_finalists"]]
            if confirm else None}


def searched_with(unit: dict[str, Any]) -> dict[str, Any]:
    """A unit's judge, rungs, budget, confirmation, optimiser and first-stage keep level; those written before units
    recorded them ran the defaults of then (one length; no confirmation; CMA-ES; the keep level searched)."""
    from agents.search import DEFAULTS_BEFORE_FIDELITY as before

    return {"confirm": None, "optimizer": "cmaes", "first_stage_keep": None,
            **unit.get("search", {"judge": before["judge"], "rungs": [before["run_updates"]], "budget": 48 * 50})}


def search_name(search: dict[str, Any]) -> str:
    confirm = search.get("confirm")
    return (f"{search['judge']} after {' then '.join(map(str, search['rungs']))} updates, {search['budget']} in all"
            + (f", confirmed by {confirm[0]} after {confirm[1]} updates on {confirm[2]} seeds"
               + (f", {confirm[3]} finalists" if len(confirm) > 3 else "") if confirm else "")
            + ("" if search.get("optimizer", "cmaes") == "cmaes" else f", {search['optimizer']}")
            + ("" if search.get("first_stage_keep") is None
               else f", the keep level held at {search['first_stage_keep']} of the cells in the first stage"))


def confirmation(unit: dict[str, Any]) -> str:
    """What the confirmation made of a unit's pick: won (the answer is its winner), lost (the answer is to keep every
    cell), or none."""
    margin = unit.get("confirmation_margin")
    if margin is None:
        return "keeps every cell" if unit.get("keeps_everything") else "none"
    return f"won by {margin:+.3g}" if unit.get("confirmed") else f"lost ({margin:+.3g}): keeps every cell"


def report(folder: Path) -> str:
    units = [json.loads(p.read_text()) for p in sorted((folder / "units").glob("*.json"))]
    if not units:
        raise UsageError(f"no units in {folder / 'units'}: run the study first")
    optimizer = lambda u: searched_with(u)["optimizer"]  # noqa: E731
    found = lambda u: u["keep_planted"] <= FOUND and not u.get("keeps_everything")  # noqa: E731  (a rejected pick: none)
    lines = ["# The named answers in a richer corruptor space", "",
             f"`python studies/corruptor_space.py`: the default search ("
             f"{'; '.join(sorted({search_name({**searched_with(u), 'optimizer': 'cmaes'}) for u in units}))}), "
             f"found = the best candidate keeps <= {FOUND} of the planted cells.", "",
             "| task | corruptor | optimiser | seed | planted keep | other keep | kept | found | keep level | "
             "temperature | confirmation | answers at the last rung | runs to keep <= 0.2 | CPU min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for u in sorted(units, key=lambda u: (u["task"], u["corruptor"], optimizer(u), u["seed"])):
        level, temp = (u["chosen"].get(k) for k in ("keep_level", "temperature"))
        fmt = lambda v: "" if v is None else f"{v:+.2f}"  # noqa: E731
        lines.append(f"| {u['task']} | {u['corruptor']} | {optimizer(u)} | {u['seed']} | {u['keep_planted']:.2f} | "
                     f"{u['keep_other']:.2f} | {u['keep_fraction']:.2f} | "
                     f"{'yes' if found(u) else 'no'} | {fmt(level)} | {fmt(temp)} | "
                     f"{confirmation(u)} | {answers_seen(u)} | {u['answer_runs'] or 'not reached'} | "
                     f"{u['cpu_minutes']:.1f} |")
    lines.append("")
    for name in sorted({optimizer(u) for u in units}):
        mine = [u for u in units if optimizer(u) == name]
        reached = sorted(u["answer_runs"] for u in mine if u["answer_runs"])
        lines.append(f"- {name}: found in {sum(map(found, mine))} of {len(mine)} (task, seed) "
                     f"searches; planted keep <= 0.2 reached in {len(reached)}"
                     + (f", after {', '.join(map(str, reached))} runs" if reached else "")
                     + f"; mean planted keep {np.mean([u['keep_planted'] for u in mine]):.2f}; "
                     f"{np.median([u['cpu_minutes'] for u in mine]):.1f} CPU min a search (median)")
    return "\n".join(lines) + "\n"


def run_unit(job: tuple[str, str, int, str, bool, str]) -> str:
    """One search, written to ``path`` (a worker of the pool)."""
    task, corruptor, seed, optimizer, confirm, path = job
    unit = search_unit(task, corruptor, seed, optimizer, confirm)
    atomic_write_json(Path(path), unit)
    return (f"{task} {optimizer} s{seed}: planted keep {unit['keep_planted']:.2f}, other {unit['keep_other']:.2f} "
            f"({unit['cpu_minutes']:.1f} CPU min)")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/corruptor_space.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corruptor", default="cell_scorer", help="the parametric corruptor searched (default: %(default)s)")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated named or generated tasks (default: %(default)s)")
    parser.add_argument("--seeds", type=positive(int), default=3, help="agent seeds per task (default: %(default)s)")
    parser.add_argument("--optimizers", default="cmaes", help="comma-separated optimisers, each searching every task and seed (default: %(default)s)")
    parser.add_argument("--no-confirmation", action="store_true", help="leave out the search's confirmation rung (default: off)")
    parser.add_argument("--workers", type=positive(int), default=1, help="searches at once (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/corruptor_space"), help="where the units and the report go (default: %(default)s)")
    parser.add_argument("--report", type=Path, help="only rewrite the report from the units of this folder (default: run the study)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        if not args.report.is_dir():
            raise UsageError(f"--report {args.report}: no such folder")
        text = report(args.report)
        atomic_write_text(args.report / "report.md", text)
        print(text, end="")
        return 0
    from corruption_env.whole_run import available_corruptors

    if args.corruptor not in available_corruptors():
        raise UsageError(f"unknown corruptor {args.corruptor!r}; available: {', '.join(available_corruptors())}")
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        raise UsageError("--tasks is empty: name at least one task")
    for task in tasks:
        task_overrides(task)  # every name checked before any run
    from agents.optimisers import OPTIMISERS

    optimizers = [o for o in args.optimizers.split(",") if o]
    if not optimizers or set(optimizers) - set(OPTIMISERS.names()):
        raise UsageError(f"--optimizers {args.optimizers!r}: choose from {', '.join(OPTIMISERS.names())}")
    todo = []
    for optimizer in optimizers:
        now = default_search(optimizer, not args.no_confirmation, args.corruptor)
        for task in tasks:
            for seed in range(args.seeds):
                path = unit_path(args.out, task, args.corruptor, seed, optimizer)
                if not path.exists():
                    todo.append((task, args.corruptor, seed, optimizer, not args.no_confirmation, str(path)))
                elif searched_with(json.loads(path.read_text())) != now:
                    raise UsageError(f"{path} was searched with "
                                     f"{search_name(searched_with(json.loads(path.read_text())))}, the search asked "
                                     f"for is {search_name(now)}: give a new --out")
    print(f"{len(todo)} searches to run on {args.workers} worker(s)", flush=True)
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for line in pool.imap_unordered(run_unit, todo):
            print(line, flush=True)
    text = report(args.out)
    atomic_write_text(args.out / "report.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
