"""The search's confirmation rung: how it is chosen, and what it does to finished searches.

The search picks the candidate with the highest short-run judge among ~50 and keeps every cell only if keeping
everything out-judges that pick on the same run seeds. On a task where nothing beats keeping everything, the
held-out generated task gen03, the pick masked and lost 0.014-0.045 kNN in 3 of 3 seeds (``docs/results/search``).
Two causes fit: the winner's curse (the maximum of many noisy judges against one) and short-run judges that favour
masking where the evaluation run does not. A **confirmation rung** answers both: the pick and keeping every cell are
judged again, paired, on run seeds the search did not use, at a length whose judge predicts the outcome, and the
search keeps every cell unless the pick wins there (``WholeRunSearch(confirm_updates=..., confirm_judge=...,
confirm_seeds=...)``).

Part 1, **the choice** (no runs: the fidelity study's units, ``docs/results/fidelity/units``): on each task, for
each ordering (a, b, c) of its three run seeds, the search's pick is emulated as the corruptor other than keep_all
with the highest default judge (alpha-ReQ after 50 updates) on seed a, kept if it also out-judges keep_all there;
the confirmation judges it against keep_all on seed b by a (judge, length); the outcome is the kNN of what is kept,
on seed c (so no judge reads the run it is scored by). Per (judge, length) and split: the picks worse than keep_all
by more than keep_all's seed sd, and the answers kept (the oracle picked on tasks whose oracle margin exceeds that
sd). The rule, stated before it was read: on the development split, at most 10 % worse (the search's own bar), then
the most answers kept, then the shortest. The search's defaults are its choice.

**How many finalists** the search confirms (the first stage's best k that out-judge keep_all, the best of them at
the confirmation kept if it beats keep_all there) is chosen by the same rule, written on 2026-12-07 before the
development tasks' fourth run seed was read: confirmed on two seeds as the search does it (pick on a, confirm on
b1 and b2, score on c), at most 10 % worse, then the most answers kept, then the fewest finalists
(:func:`choose_finalists`; the one-seed table beside it was read on the held-out split and is not a choice).

Part 2, **the finished searches** (``--searches FOLDER``: a benchmark folder whose searches ran without the
confirmation, e.g. ``docs/results/search``): each search's pick (its ``theta/*`` columns) is confirmed as the search
now does it, by the same method (:meth:`WholeRunSearch.confirm`), and what the search's row would then be: its own
where the pick wins, keep_all's row of the same seed where it loses (the same computation: every cell kept, without
the budget, on the seed). One unit per (task, seed) in ``OUT/units/``, written as it finishes; a rerun skips those,
and so does a second process given the tasks in another order (``--tasks``), unit by unit.

    python studies/confirmation.py --choose                                   # part 1 (seconds)
    python studies/confirmation.py --searches docs/results/search --out docs/results/confirmation
    python studies/confirmation.py --searches docs/results/search --out docs/results/confirmation --report
"""
from __future__ import annotations

import inspect
import itertools
import json
import multiprocessing
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_audit import FREE_LEVEL, split_of  # noqa: E402
from search_check import check_task, read_runs  # noqa: E402

from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_json, atomic_write_text  # noqa: E402

FIDELITY_UNITS = Path(__file__).resolve().parents[1] / "docs" / "results" / "fidelity" / "units"
PICK = ("alpha_req", "50")  # the search's default judge at its last rung
CONFIRM_JUDGES = ("rankme", "lidar", "alpha_req", "heldout_loss")
WORSE_BAR = 0.10  # the share of picks worse than keep_all − one sd the search may have (its must-show: >= 90 %)


# ------------------------------------------------------------------------------------------ part 1: the choice

def read_fidelity(folder: Path, free_level: bool = False) -> dict[str, dict[str, dict[int, dict]]]:
    """``{task: {corruptor: {seed: unit}}}`` on the seeds every corruptor of the task has finished (three or more,
    keep_all among the corruptors). ``free_level``: the tasks of the study's free-level part, with its corruptors
    (which keep their own share of the cells)."""
    tasks = {}
    for task_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        units: dict[str, dict[int, dict]] = {}
        for path in task_dir.glob("*.json"):
            unit = json.loads(path.read_text())
            if free_level or unit["kind"] not in FREE_LEVEL:  # the study's free-level part: only when asked
                units.setdefault(unit["kind"], {})[unit["seed"]] = unit
        if free_level and not set(FREE_LEVEL) & set(units):
            continue
        # the seeds every corruptor has finished (a study continued with another seed is read as it was until then)
        seeds = sorted(set.intersection(*(set(by) for by in units.values()))) if units else []
        complete = {k: {s: by[s] for s in seeds} for k, by in units.items()}
        if "keep_all" in complete and len(seeds) >= 3 and len(complete) > 2:
            tasks[task_dir.name] = complete
    return tasks


def judged(unit: dict, judge: str, length: str) -> float:
    from corruption_env.statistics import STATISTICS

    if unit["diverged"]:
        return -np.inf
    value = unit["judges"][length][judge]
    return value if STATISTICS[judge].higher_is_better else -value


def emulate(units: dict[str, dict[int, dict]], confirm: tuple[str, str] | None, finalists: int = 1,
            confirm_seeds: int = 1) -> list[dict[str, Any]]:
    """Every ordering of distinct seeds (a, b_1..b_k, c), k = ``confirm_seeds``: the ``finalists`` best by the
    search's judge on a that out-judge keep_all there, confirmed by their mean judge over the b's, paired with
    keep_all's (None: no confirmation, the first of them kept), the outcome on c. None where the task has fewer than
    k + 2 seeds."""
    seeds = sorted(units["keep_all"])
    if len(seeds) < confirm_seeds + 2:
        return []
    sd = float(np.std([units["keep_all"][s]["knn"] for s in seeds], ddof=1))
    mean = {k: np.mean([by[s]["knn"] for s in seeds]) for k, by in units.items()}
    answer = "oracle" in mean and mean["oracle"] - mean["keep_all"] > sd
    out = []
    for a, *confirming, c in itertools.permutations(seeds, confirm_seeds + 2):
        ranked = sorted((k for k in units if k != "keep_all"), key=lambda k: -judged(units[k][a], *PICK))
        above = [k for k in ranked[:finalists] if judged(units[k][a], *PICK) > judged(units["keep_all"][a], *PICK)]
        final = above[0] if above else "keep_all"
        if above and confirm is not None:
            at = lambda k: float(np.mean([judged(units[k][b], *confirm) for b in confirming]))  # noqa: E731
            best = max(above, key=at)
            final = best if at(best) > at("keep_all") else "keep_all"
        out.append({"worse": units[final][c]["knn"] < units["keep_all"][c]["knn"] - sd, "answer": answer,
                    "found": answer and final == "oracle"})
    return out


def tally(tasks: dict[str, dict[str, dict[int, dict]]], confirm: tuple[str, str] | None, finalists: int = 1,
          confirm_seeds: int = 1) -> dict[str, Any]:
    """Per split: the emulated picks, those worse than keep_all − sd, the answer cases and the answers kept (tasks
    with too few seeds for ``confirm_seeds`` left out)."""
    row: dict[str, Any] = {"confirm": confirm, "finalists": finalists, "confirm_seeds": confirm_seeds}
    for task, units in tasks.items():
        if not (cases := emulate(units, confirm, finalists, confirm_seeds)):
            continue
        cell = row.setdefault(split_of(task), {"picks": 0, "worse": 0, "answers": 0, "found": 0})
        for case in cases:
            cell["picks"] += 1
            cell["worse"] += case["worse"]
            cell["answers"] += case["answer"]
            cell["found"] += case["found"]
    return row


def choose(folder: Path = FIDELITY_UNITS, free_level: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table of part 1 (one row per confirmation, None first) and the row the rule chooses (``free_level``: on
    the free-level part's tasks and corruptors, read as a measurement of the search as it is)."""
    tasks = read_fidelity(folder, free_level)
    if not tasks:
        part = " of the free-level part" if free_level else ""
        raise UsageError(f"{folder} holds no finished fidelity units{part} (python studies/fidelity.py --out ..."
                         f"{' --free-level' if free_level else ''})")
    lengths = sorted({n for by in tasks.values() for n in by["keep_all"][0]["judges"]}, key=int)
    rows = [tally(tasks, confirm) for confirm in [None, *((j, n) for n in lengths for j in CONFIRM_JUDGES)]]
    development = [r for r in rows if r["confirm"] is not None and "development" in r
                   and r["development"]["worse"] <= WORSE_BAR * r["development"]["picks"]]
    if not development:
        raise UsageError("no confirmation meets the bar on the development split: nothing to choose")
    chosen = min(development, key=lambda r: (-r["development"]["found"], int(r["confirm"][1])))
    return rows, chosen


def table(rows: list[dict[str, Any]], first: str, name: Any, chosen: dict[str, Any] | None = None) -> list[str]:
    splits = [s for s in ("development", "heldout", "named", "real images") if s in rows[0]]
    lines = [f"| {first} | " + " | ".join(f"{s}: worse than keep_all − sd; answers kept" for s in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for r in rows:
        bold = "**" if r is chosen else ""
        lines.append(f"| {bold}{name(r)}{bold} | " + " | ".join(
            f"{r[s]['worse']} of {r[s]['picks']}; {r[s]['found']} of {r[s]['answers']}" for s in splits) + " |")
    return lines


def choice_report(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> str:
    lines = table(rows, "confirmation (judge, updates)", lambda r: "none (the search as it was)" if r["confirm"] is
                  None else f"{r['confirm'][0]}, {r['confirm'][1]}", chosen)
    lines += ["", f"The rule's choice on the development split: {chosen['confirm'][0]} after {chosen['confirm'][1]} "
              f"updates (at most {WORSE_BAR:.0%} worse, then the most answers kept, then the shortest)."]
    return "\n".join(lines) + "\n"


def choose_finalists(folder: Path, confirm: tuple[str, str], most: int = 3, free_level: bool = False
                     ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """How many of the first stage's best the search confirms, by the rule written (2026-12-07) before the
    development tasks' fourth run seed was read: confirmed on two seeds as the search does it, on the development
    split, at most 10 % of picks worse than keep_all − sd, then the most answers kept, then the fewest finalists.
    The rows for 1..``most`` finalists and the chosen one (None where no development task has four seeds yet; the
    single pick where no row meets the bar)."""
    rows = [tally(read_fidelity(folder, free_level), confirm, k, 2) for k in range(1, most + 1)]
    if "development" not in rows[0]:
        return rows, None
    passing = [r for r in rows if r["development"]["worse"] <= WORSE_BAR * r["development"]["picks"]]
    chosen = min(passing, key=lambda r: (-r["development"]["found"], r["finalists"])) if passing else rows[0]
    return rows, chosen


def finalists_report(folder: Path, confirm: tuple[str, str], most: int = 3, free_level: bool = False) -> str:
    """The chosen confirmation given the first stage's best 1..``most`` (those that out-judge keep_all on their
    seed), keeping the best of them at the confirmation if it beats keep_all there: is the answer often the
    first stage's runner-up? On one confirmation seed (measured, not chosen: the held-out split was read for it),
    and on two (as the search confirms) where tasks have a fourth run seed, with the rule's choice there
    (:func:`choose_finalists`)."""
    tables = []
    one = [tally(read_fidelity(folder, free_level), confirm, k) for k in range(1, most + 1)]
    two, chosen = choose_finalists(folder, confirm, most, free_level)
    for n, rows in ((1, one), (2, two)):
        if any(isinstance(v, dict) for v in rows[0].values()):  # some task has the seeds for it
            tables.append("\n".join(table(rows, f"finalists confirmed ({confirm[0]}, {confirm[1]}, {n} seed"
                                                 f"{'s' if n > 1 else ''})", lambda r: str(r["finalists"]),
                                           chosen if n == 2 else None)))
    if chosen is not None:
        tables.append(f"The rule's choice of finalists on the development split, confirmed on two seeds: "
                      f"{chosen['finalists']} (at most {WORSE_BAR:.0%} worse, then the most answers kept, then the "
                      "fewest).")
    return "\n\n".join(tables)


# ------------------------------------------------------------------------------------------ part 2: the searches

def search_rows(folder: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    runs = read_runs([folder])
    settings = json.loads((folder / "run_settings.json").read_text())
    return runs, settings


def confirm_unit(job: tuple[dict[str, str], dict[str, Any], dict[str, Any], str]) -> str:
    """Confirm one finished search's pick as the search now does (its row, its run settings, the confirmation's
    options); written to ``path``."""
    row, settings, options, path = job
    if Path(path).exists():  # another process of the study (given the tasks in another order) did it meanwhile
        return path
    import torch

    from agents.search import WholeRunSearch
    from corruption_env import EnvConfig

    torch.set_num_threads(1)
    config = EnvConfig.from_dict({**settings["env"], "num_threads": 1})
    given = {k: v for k, v in settings["agent_options"].items() if k not in ("engine", "verbose")}
    search = WholeRunSearch(SimpleNamespace(config=config), seed=int(row["seed"]), engine="local", verbose=0,
                            **{**given, **options, "confirm_finalists": 1})  # runs.csv holds the pick alone
    search.best = {"theta": [float(row[f"theta/{n}"]) for n in search.corruptor.parameter_names()],
                   "judge": float(row["best_candidate_judge"])}
    search.keep_all = {"judge": float(row["keep_all_judge"]), "cpu_seconds": 0.0}
    start = time.process_time()
    search.confirm()
    unit = {"task": row["task"], "seed": int(row["seed"]), "options": options, "config_id": row["config_id"],
            "confirmed": search.confirmed, "margin": search.confirmation_margin(),
            "seeds": search.confirmation["seeds"] if search.confirmation else [],
            "cpu_seconds": time.process_time() - start}
    atomic_write_json(Path(path), unit)
    print(f"{row['task']} s{row['seed']}: {search.confirmed_line()}", file=sys.stderr, flush=True)
    return path


def searches_report(runs: list[dict[str, str]], units: dict[tuple[str, int], dict], algo: str, found: float) -> str:
    """Per task and seed: the search as it was and with the confirmation; the tallies of both."""
    lines = ["| task | answer task | keep_all seed sd | per seed: before (planted keep, kNN − keep_all) -> "
             "confirmation margin -> after |", "|---|---|---|---|"]
    tallies = {"before": [], "after": []}
    for task in dict.fromkeys(r["task"] for r in runs):
        check = check_task([r for r in runs if r["task"] == task], algo, found)
        if check is None:
            continue
        cells = []
        for s in check["seeds"]:
            unit = units.get((task, s["seed"]))
            if unit is None:
                cells.append(f"s{s['seed']}: not yet confirmed")
                continue
            after = dict(s) if unit["confirmed"] is not False else {
                **s, "planted_keep": None if s["planted_keep"] is None else 1.0, "minus_keep_all": 0.0,
                "within_sd": True, "at_least": True, "found": False}
            planted = lambda x: "-" if x["planted_keep"] is None else f"{x['planted_keep']:.2f}"  # noqa: E731
            margin = "-" if unit["margin"] is None else f"{unit['margin']:+.2f}"
            cells.append(f"s{s['seed']}: {planted(s)}, {s['minus_keep_all']:+.3f} -> {margin} -> "
                         f"{planted(after)}, {after['minus_keep_all']:+.3f}")
            for when, x in (("before", s), ("after", after)):
                tallies[when].append({**x, "answer": check["answer"] and x["planted_keep"] is not None})
        lines.append(f"| {task} | {'yes' if check['answer'] else 'no'} | {check['noise']:.3f} | {'; '.join(cells)} |")
    share = lambda xs, key: f"{sum(x[key] for x in xs)} of {len(xs)}" if xs else "none"  # noqa: E731
    lines.append("")
    for when, xs in tallies.items():
        answers = [x for x in xs if x["answer"]]
        lines.append(f"- {when} the confirmation: answer tasks planted keep <= {found} in {share(answers, 'found')}; "
                     f"kNN >= keep_all − one sd in {share(xs, 'within_sd')}; kNN >= keep_all in {share(xs, 'at_least')}")
    cpu = [u["cpu_seconds"] / 60 for u in units.values() if u["seeds"]]
    if cpu:
        lines.append(f"- CPU minutes per confirmation (where the pick had one): {min(cpu):.1f}-{max(cpu):.1f}, "
                     f"median {np.median(cpu):.1f}")
    return "\n".join(lines) + "\n"


def read_units(out: Path) -> dict[tuple[str, int], dict]:
    units = {}
    for path in sorted((out / "units").glob("*.json")):
        unit = json.loads(path.read_text())
        units[(unit["task"], unit["seed"])] = unit
    return units


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/confirmation.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--choose", action="store_true", help="part 1: the confirmation's choice, from the fidelity units (default: off)")
    parser.add_argument("--fidelity", type=Path, default=FIDELITY_UNITS, help="the fidelity units (default: the committed)")
    parser.add_argument("--free-level", action="store_true",
                        help="with --choose: also the search as it is on the fidelity study's free-level part (default: off)")
    parser.add_argument("--searches", type=Path, help="part 2: a benchmark folder of searches run without confirmation (default: none)")
    parser.add_argument("--out", type=Path, help="part 2's folder: units/, confirmation.md (default: none)")
    parser.add_argument("--report", action="store_true", help="part 2's report from the units there, without running (default: off)")
    parser.add_argument("--algo", default="cmaes", help="the searches' row name (default: %(default)s)")
    parser.add_argument("--tasks", default="", help="only these tasks, in this order (comma-separated; default: all)")
    parser.add_argument("--workers", type=positive(int), default=2, help="units at once (default: %(default)s)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.choose and args.searches is None:
        raise UsageError("give --choose (part 1), or --searches FOLDER --out FOLDER (part 2)")
    if args.choose:
        rows, chosen = choose(args.fidelity)
        print(choice_report(rows, chosen))
        print(finalists_report(args.fidelity, chosen["confirm"]))
        if args.free_level:  # the search as it is, on corruptors with their own keep level: measured, not chosen
            rows, _ = choose(args.fidelity, free_level=True)
            print("\nThe free-level part (the fidelity study's corruptors with their own keep level added), the "
                  "search's default confirmation marked:\n")
            print("\n".join(table(rows, "confirmation (judge, updates)", lambda r: "none" if r["confirm"] is None
                                   else f"{r['confirm'][0]}, {r['confirm'][1]}",
                                   next(r for r in rows if r["confirm"] == chosen["confirm"]))))
            print("\n" + finalists_report(args.fidelity, chosen["confirm"], free_level=True))
    if args.searches is None:
        return 0
    if args.out is None:
        raise UsageError("--searches needs --out FOLDER for its units")
    from agents.search import WholeRunSearch

    signature = inspect.signature(WholeRunSearch.__init__).parameters  # the search's confirmation as it is now
    options = {k: signature[k].default for k in ("confirm_updates", "confirm_judge", "confirm_seeds")}
    runs, settings = search_rows(args.searches)
    order = [t for t in args.tasks.split(",") if t] or list(dict.fromkeys(r["task"] for r in runs))
    unknown = sorted(set(order) - {r["task"] for r in runs})
    if unknown:
        raise UsageError(f"--tasks {','.join(unknown)}: not in {args.searches}")
    rows = sorted((r for r in runs if r["name"] == args.algo and r["task"] in order),
                  key=lambda r: (order.index(r["task"]), int(r["seed"])))
    units = read_units(args.out)
    made = {(r["task"], int(r["seed"])): r["config_id"] for r in runs if r["name"] == args.algo}
    for (task, seed), unit in units.items():
        if made.get((task, seed)) not in (None, unit["config_id"]):
            raise UsageError(f"{args.out}'s unit {task} s{seed} confirmed another search than {args.searches} now "
                             "holds (its config_id differs): use another --out")
        if unit["options"] != options:
            raise UsageError(f"{args.out}'s unit {task} s{seed} ran with {unit['options']}, the search's confirmation "
                             f"is now {options}: use another --out")
    if not args.report:
        todo = [(r, settings[r["run_id"]], options, str(args.out / "units" / f"{r['task']}_s{r['seed']}.json"))
                for r in rows if (r["task"], int(r["seed"])) not in units]
        print(f"{len(rows)} searches, {len(rows) - len(todo)} already confirmed in {args.out}; confirming "
              f"{len(todo)} on {args.workers} worker(s) ({options})", flush=True)
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            for done, path in enumerate(pool.imap(confirm_unit, todo), start=1):
                print(f"[{done}/{len(todo)}] {path}", flush=True)
        units = read_units(args.out)
    text = (f"# The confirmation rung on the searches of `{args.searches}`\n\n`python studies/confirmation.py "
            f"--searches {args.searches} --out {args.out}`; confirmation {options}.\n\n"
            + searches_report(runs, units, args.algo, 0.3))
    atomic_write_text(args.out / "confirmation.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
