"""The fidelity study: how long must a run be before its judge predicts the outcome?

The search judges each candidate corruptor by a short run (50 updates) and is scored by the kNN accuracy its pick
reaches after the evaluation run (500 updates on shapes, 2000 on Fashion-MNIST). Here every corruptor of a task is
trained for the evaluation length on each of 3 seeds, and every judge is read along the run at several lengths
(``WholeRun(also_measure=...)``, ``also_at``): what a run of that length would have given, since nothing in a run
depends on its total length. The outcome is the kNN accuracy at the end. Per task, judge and length: the Spearman
correlation over the corruptors between the judge after that many updates on one seed and the mean outcome of the
other seeds (each seed in turn the judge's), beside the **ceiling**, the outcome's own seed-to-seed Spearman (one
seed's outcome against the others'): no judge of one run can predict the others' outcome better than a run of the
full length does. Also the regret of each judge's pick (the best outcome minus the pick's) and the CPU seconds of a
run of each length, and successive halving simulated on the units as the search runs it (``rungs:2``: every
corruptor judged at one length, the top 1/F at a length F times longer on two seeds) beside each length alone: the
table the search's rungs are chosen from, on the development split, by a rule stated before its units
(:func:`choose`: the lowest regret, then the cheapest). The judges: RankMe, LiDAR, alpha-ReQ, the held-out loss, alignment,
uniformity, and kNN with labels on the training split's held-out images (``probe_accuracy``: the label-judged
ceiling's judge), alone and in mean-rank combinations.

The tasks: the named random-placement tasks on shapes, generated known-answer tasks of both splits
(``corruption_env.task_generator``: their oracle - keep_all margin is measured here, and the tasks whose margin is
beyond seed noise are where corruptors really differ), Fashion-MNIST with the per-image shortcut, and plain
Fashion-MNIST. The corruptors, about ten per task, span the space: keep_all, the oracle where there is one, random
masks and CowMask at the keep budget, a partial answer and its opposite (the pattern kept while other cells go), and
candidates of the search's cell rule drawn as its first generation draws them (one fixed set per task, the same on
every seed).

    python studies/fidelity.py --out docs/results/fidelity                 # the study (resumes where it stopped)
    python studies/fidelity.py --report docs/results/fidelity              # its tables again, from its units

The study is long (hours on 2 cores): each (task, corruptor, seed) run is written to ``OUT/units/`` as it finishes,
a rerun skips the finished ones, and the report reads whatever units there are, so it can be completed over several
sittings and committed unit by unit. Tasks run in the order given, cheapest first.
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
from judge_audit import CORRUPTORS, FREE_LEVEL, JUDGES, make_act, split_of, task_overrides  # noqa: E402

from agents.search import DEFAULTS_BEFORE_FIDELITY  # noqa: E402
from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_json, atomic_write_text  # noqa: E402

GENERATED = tuple(f"gen{i:02d}" for i in range(8))
# The named tasks, then the generated development split (the rungs and judge are chosen on it), the held-out split,
# and real images.
DEFAULT_TASKS = ("shortcut_random", "distractor_random", *sorted(GENERATED, key=lambda t: split_of(t) != "development"),
                 "fashion_shortcut_random", "fashion_mnist")
ANSWER_CORRUPTORS = (*CORRUPTORS, "rule_c", "rule_d")  # the planted pattern's oracle, partial, anti and 4 rules
PLAIN_CORRUPTORS = ("keep_all", "random", "cowmask", "rule_a", "rule_b", "rule_c", "rule_d", "rule_e", "rule_f",
                    "rule_g")
CORRUPTOR_SEED = 0  # the rule candidates are one fixed set per task: a corruptor is the same on every run seed
COMBINATIONS = (("rankme", "heldout_loss"), ("lidar", "heldout_loss"), ("rankme", "alignment"),
                ("rankme", "lidar", "heldout_loss"), ("rankme", "probe_accuracy"))


def task_setup(task: str) -> tuple[Any, int, tuple[int, ...]]:
    """A task's EnvConfig (one thread), its evaluation length and the lengths its judges are read at."""
    from benchmarking.sweep import FASHION_MNIST, KNOWN_ANSWER_EVAL_STEPS
    from corruption_env import EnvConfig

    config = EnvConfig(**task_overrides(task), num_threads=1)
    eval_steps = FASHION_MNIST.eval_steps if config.dataset == "fashion_mnist" else KNOWN_ANSWER_EVAL_STEPS
    lengths = tuple(n for n in (25, 50, 100, 200, 500, 1000, 2000) if n <= eval_steps)
    return config, eval_steps, lengths


def corruptors_of(config: Any, free_level: bool = False) -> tuple[str, ...]:
    """A task's corruptors; with ``free_level``, on a known-answer task, also those with their own keep level."""
    from corruption_env.known_answer import is_known_answer

    if not is_known_answer(config.dataset_kwargs):
        return PLAIN_CORRUPTORS
    return (*ANSWER_CORRUPTORS, *FREE_LEVEL) if free_level else ANSWER_CORRUPTORS


def task_units(task_dir: Path, free_level: bool = False) -> list[dict]:
    """A task's finished units: of its corruptors at the keep budget (and keep_all), or with ``free_level`` those
    with their own keep level too (the free-level part of the study, whose units share the folder)."""
    units = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.json"))]
    return [u for u in units if free_level or u["kind"] not in FREE_LEVEL]


def fidelity_unit(task: str, kind: str, seed: int) -> dict[str, Any]:
    """One run of corruptor ``kind`` on ``task`` for the evaluation length on ``seed``: every judge at every length,
    the kNN and linear-probe accuracy at the end, the CPU seconds to each length."""
    import torch

    from corruption_env.data import load_dataset
    from corruption_env.evaluation import encoder_accuracies
    from corruption_env.whole_run import WholeRun

    torch.set_num_threads(1)
    config, eval_steps, lengths = task_setup(task)
    budgeted = kind != "keep_all" and kind not in FREE_LEVEL  # these keep their own share of the cells
    runs = WholeRun(config if budgeted else config.without_budget(), eval_steps, "rankme", also_measure=JUDGES)
    result = runs.judge(make_act(kind, runs.env, CORRUPTOR_SEED), seed, also_at=lengths)
    options = dict(root=config.data_root, image_size=config.image_size, channels=3, **config.dataset_options())
    accuracy = encoder_accuracies(runs.env.learner, load_dataset(config.dataset, split="train", **options),
                                  load_dataset(config.dataset, split="test", **options))
    return {"task": task, "kind": kind, "seed": seed, "eval_steps": eval_steps, "generator": generator_of(config),
            "diverged": result.diverged,
            "judges": {str(n): values for n, values in result.measured.items()}, "knn": accuracy["knn"],
            "linear": accuracy["linear"], "keep_planted": result.keep_planted,
            "cpu_seconds_at": {**{str(n): s for n, s in result.cpu_seconds_at.items()},
                               str(eval_steps): result.cpu_seconds}}


def generator_of(config: Any) -> str | None:
    """The content hash of the CAM-Net weights a task's views come from (None: a decorruptor without weights). A
    unit is keyed by it as well as by (task, corruptor, seed): a study continued after the shipped generator
    changed would otherwise mix two generators in one table."""
    from agents.corruptor_evaluation import file_digest
    from corruption_env.views import decorruptor_weights

    digest = file_digest(decorruptor_weights(config))
    return digest[:16] if digest else None


def check_units(folder: Path, tasks: list[str]) -> None:
    """Refuse to continue a study whose finished units of a task came from other CAM-Net weights, or ran for
    another evaluation length, than the task has now."""
    for task in tasks:
        config, eval_steps, _ = task_setup(task)
        now = generator_of(config)
        for path in sorted((folder / "units" / task).glob("*.json")):
            unit = json.loads(path.read_text())
            if unit.get("generator") != now:
                raise UsageError(f"{path} was run with CAM-Net weights {unit.get('generator')}, {task} now has "
                                 f"{now}: continue in another --out, or delete that task's units to run it again")
            if unit.get("eval_steps") != eval_steps:
                raise UsageError(f"{path} ran {unit.get('eval_steps')} updates, {task} now runs {eval_steps}: "
                                 "continue in another --out, or delete that task's units to run it again")


def unit_path(folder: Path, task: str, kind: str, seed: int) -> Path:
    return folder / "units" / task / f"{kind}_s{seed}.json"


def _unit_job(job: tuple[str, str, int, str]) -> str:
    task, kind, seed, folder = job
    path = unit_path(Path(folder), task, kind, seed)
    if not path.exists():
        unit = fidelity_unit(task, kind, seed)
        atomic_write_json(path, unit)
        print(f"{task} {kind} s{seed}: kNN {unit['knn']:.4f} ({unit['cpu_seconds_at'][str(unit['eval_steps'])]:.0f} "
              "CPU s)", file=sys.stderr, flush=True)
    return str(path)


# ------------------------------------------------------------------------------------------ the report

def oriented(judge: str, value: float) -> float:
    from corruption_env.statistics import STATISTICS

    return value if STATISTICS[judge].higher_is_better else -value


def judge_table(units: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """``{length: {judge: {kind: oriented value}}}`` of one seed's units, the combinations (mean rank) included."""
    from scipy.stats import rankdata

    kinds = [u["kind"] for u in units]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for length in units[0]["judges"]:
        single = {j: {u["kind"]: oriented(j, u["judges"][length][j]) for u in units} for j in JUDGES}
        for combo in COMBINATIONS:
            ranks = np.mean([rankdata([single[j][k] for k in kinds]) for j in combo], axis=0)
            single[" + ".join(combo)] = dict(zip(kinds, map(float, ranks)))
        out[length] = single
    return out


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; NaN where either side is constant (a judge that cannot tell corruptors apart)."""
    from scipy.stats import spearmanr

    return float("nan") if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)


def task_scores(units: list[dict]) -> dict[str, Any] | None:
    """One task's numbers, from the seeds on which every corruptor has finished (None: fewer than two such seeds): a
    seed under way, or corruptors added on some seeds only, leave the tables as they were."""
    by_seed: dict[int, dict[str, dict]] = {}
    for u in units:
        by_seed.setdefault(u["seed"], {})[u["kind"]] = u
    kinds = sorted(set.union(*(set(v) for v in by_seed.values())))
    seeds = sorted(s for s, v in by_seed.items() if set(kinds) <= set(v) and not any(v[k]["diverged"] for k in kinds))
    if len(seeds) < 2 or len(kinds) < 3:
        return None
    outcome = {s: np.array([by_seed[s][k]["knn"] for k in kinds]) for s in seeds}
    others = {s: np.mean([outcome[t] for t in seeds if t != s], axis=0) for s in seeds}
    ceiling = float(np.mean([rank_correlation(outcome[s], others[s]) for s in seeds]))
    mean_outcome = np.mean([outcome[s] for s in seeds], axis=0)
    tables = {s: judge_table([by_seed[s][k] for k in kinds]) for s in seeds}
    spearman: dict[str, dict[str, float]] = {}
    regret: dict[str, dict[str, float]] = {}
    for length, judges in tables[seeds[0]].items():
        for judge in judges:
            rhos, regrets = [], []
            for s in seeds:
                values = np.array([tables[s][length][judge][k] for k in kinds])
                rhos.append(rank_correlation(values, others[s]))
                regrets.append(float(others[s].max() - others[s][int(np.argmax(values))]))
            finite = [r for r in rhos if np.isfinite(r)]
            spearman.setdefault(judge, {})[length] = float(np.mean(finite)) if finite else float("nan")
            regret.setdefault(judge, {})[length] = float(np.mean(regrets))
    pairs = [(a, b) for a in tables[seeds[0]] for b in tables[seeds[0]] if int(a) < int(b) and int(b) % int(a) == 0]
    halving = {judge: {f"{a}>{b}": halving_regret(tables, outcome, seeds, judge, a, b) for a, b in pairs}
               for judge in tables[seeds[0]][next(iter(tables[seeds[0]]))]} if len(seeds) >= 3 else {}
    cpu = {length: float(np.median([by_seed[s][k]["cpu_seconds_at"][length] for s in seeds for k in kinds]))
           for length in by_seed[seeds[0]][kinds[0]]["cpu_seconds_at"]}
    knn = dict(zip(kinds, map(float, mean_outcome)))
    noise = float(np.std([by_seed[s]["keep_all"]["knn"] for s in seeds], ddof=1))
    margin = None
    if "oracle" in kinds:
        diffs = [by_seed[s]["oracle"]["knn"] - by_seed[s]["keep_all"]["knn"] for s in seeds]
        margin = {"mean": float(np.mean(diffs)), "sd": float(np.std(diffs, ddof=1)),
                  "labels_at": {length: float(np.mean([by_seed[s]["oracle"]["judges"][length]["probe_accuracy"] -
                                                       by_seed[s]["keep_all"]["judges"][length]["probe_accuracy"]
                                                       for s in seeds]))
                                for length in by_seed[seeds[0]]["oracle"]["judges"]}}
    spread = float(mean_outcome.max() - mean_outcome.min())
    return {"seeds": seeds, "kinds": kinds, "ceiling": ceiling, "spearman": spearman, "regret": regret,
            "halving": halving, "cpu": cpu,
            "knn": knn, "keep_all_noise": noise, "oracle_minus_keep_all": margin, "spread": spread,
            "differ": bool(spread > 2 * noise), "split": split_of(task_name(units)),
            "complete": len(seeds) >= 3 and set(kinds) in (set(ANSWER_CORRUPTORS), set(PLAIN_CORRUPTORS),
                                                           {*ANSWER_CORRUPTORS, *FREE_LEVEL})}


def halving_regret(tables: dict[int, Any], outcome: dict[int, np.ndarray], seeds: list[int], judge: str, first: str,
                   last: str) -> dict[str, float]:
    """Successive halving over one task's corruptors, as the search runs it with ``rungs:2 run_updates:first
    reduction_factor:F`` (F = last / first): every corruptor judged after ``first`` updates on one seed, the top
    1/F judged after ``last`` on that seed and a second, the pick the best mean there. Its regret (the best outcome
    minus the pick's) is read on the seeds used for neither judge, beside the regret of judging every corruptor on
    one seed at ``first`` alone and at ``last`` alone read on the same seed, so the three are compared on one
    outcome. Mean over the ordered pairs of judge seeds. ``halving_two_seeds``: the same with the first rung judged on
    both seeds too (the mean of the two, as the last rung is), beside ``first_two_seeds``, that first length alone on
    both: whether one run seed's bias at the first rung, which every candidate shares, misleads the halving."""
    kinds = len(outcome[seeds[0]])
    went_on = max(1, -(-kinds * int(first) // int(last)))
    out: dict[str, list[float]] = {"halving": [], "first": [], "last": [], "halving_two_seeds": [],
                                   "first_two_seeds": []}
    for s in seeds:
        for t in seeds:
            rest = [u for u in seeds if u not in (s, t)]
            if t == s or not rest:
                continue
            truth = np.mean([outcome[u] for u in rest], axis=0)
            regret = lambda i: float(truth.max() - truth[i])  # noqa: E731
            at = {length: np.array(list(tables[s][length][judge].values())) for length in (first, last)}
            both = {length: (at[length] + np.array(list(tables[t][length][judge].values()))) / 2
                    for length in (first, last)}
            for name, first_rung in (("halving", at[first]), ("halving_two_seeds", both[first])):
                top = np.argsort(-first_rung, kind="stable")[:went_on]
                out[name].append(regret(top[int(np.argmax(both[last][top]))]))
            for name, values in (("first", at[first]), ("last", at[last]), ("first_two_seeds", both[first])):
                out[name].append(regret(int(np.argmax(values))))
    return {name: float(np.mean(values)) for name, values in out.items()}


def task_name(units: list[dict]) -> str:
    return units[0]["task"]


def fidelity_report(folder: Path, free_level: bool = False) -> dict[str, Any]:
    """Every task's numbers, and per group of tasks (development, held out, named, real images) and judge, the mean
    Spearman at each length with a bootstrap CI over tasks, beside the mean ceiling. ``free_level``: with the
    corruptors that keep their own share of the cells (on the tasks that have them)."""
    from benchmarking.confidence import bootstrap_ci

    tasks: dict[str, Any] = {}
    for task_dir in sorted(p for p in (folder / "units").glob("*") if p.is_dir()):
        units = task_units(task_dir, free_level)
        if free_level and not any(u["kind"] in FREE_LEVEL for u in units):
            continue
        scores = task_scores(units) if units else None
        if scores is not None:
            tasks[task_dir.name] = scores
    groups: dict[str, Any] = {}
    for group in ("development", "heldout", "named", "real images"):
        mine = {t: s for t, s in tasks.items() if s["split"] == group and s["differ"]}
        if not mine:
            continue
        first = next(iter(mine.values()))
        lengths = sorted({length for s in mine.values() for length in s["cpu"]}, key=int)
        table: dict[str, dict[str, Any]] = {}
        for judge in first["spearman"]:
            table[judge] = {}
            for length in lengths:
                rhos = np.array([s["spearman"][judge][length] for s in mine.values() if length in s["spearman"][judge]])
                rhos = rhos[np.isfinite(rhos)]
                regrets = [s["regret"][judge][length] for s in mine.values() if length in s["regret"][judge]]
                table[judge][length] = {"spearman": [float(rhos.mean()), *bootstrap_ci(rhos)] if rhos.size else None,
                                        "regret": float(np.mean(regrets)) if regrets else None, "tasks": int(rhos.size)}
        complete = [s for s in mine.values() if s["halving"]]  # the tasks with three seeds of every corruptor
        halving = {judge: {pair: {name: float(np.mean([s["halving"][judge][pair][name] for s in complete]))
                                  for name in complete[0]["halving"][judge][pair]}
                           for pair in complete[0]["halving"][judge]}
                   for judge in complete[0]["halving"]} if complete else {}
        ceilings = np.array([s["ceiling"] for s in mine.values()])
        groups[group] = {"tasks": sorted(mine), "ceiling": [float(ceilings.mean()), *bootstrap_ci(ceilings)],
                         "noise": float(np.mean([s["keep_all_noise"] for s in mine.values()])),
                         "cpu": {length: float(np.median([s["cpu"][length] for s in mine.values() if length in s["cpu"]]))
                                 for length in lengths}, "table": table, "halving": halving,
                         "halving_tasks": sorted(t for t, s in mine.items() if s["halving"])}
    for g in groups.values():
        g["ways"] = ways_to_judge(g)
    development = groups.get("development")
    chosen = choose(development["ways"], development["noise"]) if development and development["ways"] else None
    if chosen is not None:  # final once every development task of the study's list is complete
        expected = [t for t in DEFAULT_TASKS if split_of(t) == "development"]
        chosen.update(tasks=sorted(development["tasks"]),
                      final=all(t in tasks and tasks[t]["complete"] for t in expected))
    return {"tasks": tasks, "groups": groups, "chosen": chosen}


SEARCH_BEFORE = (DEFAULTS_BEFORE_FIDELITY["judge"], (DEFAULTS_BEFORE_FIDELITY["run_updates"],))  # before this study


def ways_to_judge(group: dict[str, Any]) -> list[dict[str, Any]]:
    """Every label-free way the search can judge its candidates, with its mean regret over the group's tasks and
    its CPU seconds per candidate: one length (``rungs:1``) and two rungs (``rungs:2 run_updates:a
    reduction_factor:b/a``; a candidate costs the first rung, and with chance 1/F the rest of its run and a run on
    the second seed). Regrets are all read on the outcome of the seeds used by no judge (``halving_regret``)."""
    ways: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
    for judge, pairs in group["halving"].items():
        if "probe_accuracy" in judge:  # labels: the ceiling's judge, not the search's
            continue
        for pair, r in pairs.items():
            a, b = map(int, pair.split(">"))
            factor = b // a
            cost = group["cpu"][str(a)] + (2 * group["cpu"][str(b)] - group["cpu"][str(a)]) / factor
            ways[judge, (a, b)] = {"judge": judge, "rungs": [a, b], "regret": r["halving"], "cpu": cost}
            for length, name in ((a, "first"), (b, "last")):
                ways[judge, (length,)] = {"judge": judge, "rungs": [length], "regret": r[name],
                                          "cpu": group["cpu"][str(length)]}
    return sorted(ways.values(), key=lambda w: (w["regret"], w["cpu"]))


def choose(ways: list[dict[str, Any]], noise: float) -> dict[str, Any]:
    """The rule the search's defaults are chosen by, on the development split: the lowest mean regret, and among
    the ways within half of keep_all's seed-to-seed sd of it (a difference one seed cannot see) the cheapest."""
    best = min(w["regret"] for w in ways)
    return {**min((w for w in ways if w["regret"] <= best + noise / 2), key=lambda w: (w["cpu"], w["regret"])),
            "tolerance": noise / 2}


def format_report(report: dict[str, Any], header: str) -> str:
    def ci(value: list[float] | None) -> str:
        if value is None:
            return "–"
        if not np.isfinite(value[1]):  # one task: no interval over tasks
            return f"{value[0]:+.2f}"
        return f"{value[0]:+.2f} [{value[1]:+.2f}, {value[2]:+.2f}]"

    lines = ["# Fidelity: how long must a run be before its judge predicts the outcome?", "", header, "", "## Tasks", "",
             "| task | split | seeds | corruptors | outcome spread (kNN) | keep_all seed sd | corruptors differ | "
             "oracle − keep_all (sd) | ceiling (seed-to-seed Spearman) |", "|---|---|---|---|---|---|---|---|---|"]
    for task, s in report["tasks"].items():
        margin = s["oracle_minus_keep_all"]
        margin_text = "" if margin is None else f"{margin['mean']:+.3f} ({margin['sd']:.3f})"
        lines.append(f"| {task} | {s['split']} | {len(s['seeds'])} | {len(s['kinds'])} | {s['spread']:.3f} | "
                     f"{s['keep_all_noise']:.3f} | {'yes' if s['differ'] else 'no'} | {margin_text} | "
                     f"{s['ceiling']:+.2f} |")
    for group, g in report["groups"].items():
        lengths = list(g["cpu"])
        lines += ["", f"## {group}: {len(g['tasks'])} task(s) whose corruptors differ beyond twice keep_all's seed sd",
                  "", f"Ceiling (the outcome's own seed-to-seed Spearman): {ci(g['ceiling'])}. Tasks: "
                  f"{', '.join(g['tasks'])}.", "",
                  "Spearman of the judge after N updates (one seed) with the outcome (the other seeds), mean over "
                  "tasks [95% CI; none with one task]; in brackets below it, the mean regret of the judge's pick in "
                  "kNN.", "",
                  "| judge | " + " | ".join(f"{n} updates" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        order = sorted(g["table"], key=lambda j: -max((c["spearman"] or [-9])[0] for c in g["table"][j].values()))
        for judge in order:
            cells = []
            for n in lengths:
                cell = g["table"][judge].get(n)
                cells.append("–" if not cell or cell["spearman"] is None else
                             f"{ci(cell['spearman'])}<br>({cell['regret']:.3f})")
            labels = " (labels)" if "probe_accuracy" in judge else ""
            lines.append(f"| {judge}{labels} | " + " | ".join(cells) + " |")
        lines.append("| CPU seconds of a run (median) | " + " | ".join(f"{g['cpu'][n]:.0f}" for n in lengths) + " |")
        if g.get("halving"):
            lines += ["", "Successive halving as the search runs it (every corruptor judged after the first length on "
                      "one seed, the top 1/F after the second, F times longer, on two seeds): mean regret of the pick "
                      "in kNN, beside one length alone (outcome on the seeds used by neither), over the tasks with "
                      f"three seeds ({', '.join(g['halving_tasks'])}); the three judges with the highest Spearman at "
                      "any length.", "",
                      "| judge | rungs (updates) | halving | first length alone | second length alone |",
                      "|---|---|---|---|---|"]
            for judge in order[:3]:
                for pair, r in g["halving"].get(judge, {}).items():
                    lines.append(f"| {judge} | {pair.replace('>', ' then ')} | {r['halving']:.3f} | {r['first']:.3f} | "
                                 f"{r['last']:.3f} |")
        if g.get("ways"):
            special = {way_name({"judge": SEARCH_BEFORE[0], "rungs": SEARCH_BEFORE[1]})}
            if report["chosen"]:
                special.add(way_name(report["chosen"]))
            marked = {way_name(w): w for w in g["ways"][:6]}
            marked.update({way_name(w): w for w in g["ways"] if way_name(w) in special})
            lines += ["", "Label-free ways the search can judge its candidates (one length, or two rungs): mean regret "
                      "over the tasks, CPU seconds per candidate; the six lowest, the search before this study "
                      f"({way_name({'judge': SEARCH_BEFORE[0], 'rungs': SEARCH_BEFORE[1]})}) and the development "
                      "split's choice.", "", "| judge | rungs (updates) | regret (kNN) | CPU s per candidate |",
                      "|---|---|---|---|"]
            lines += [f"| {w['judge']} | {' then '.join(map(str, w['rungs']))} | {w['regret']:.3f} | {w['cpu']:.0f} |"
                      for w in marked.values()]
    answered = {task: s["oracle_minus_keep_all"]["labels_at"] for task, s in report["tasks"].items()
                if s["oracle_minus_keep_all"]}
    if answered:
        lengths = sorted({n for v in answered.values() for n in v}, key=int)
        lines += ["", "## When the answer's advantage forms", "",
                  "Oracle − keep_all in kNN with labels on the training split's held-out images after N updates "
                  "(mean over seeds; the last column is the outcome, kNN on the test split): a truth read before the "
                  "order forms cannot tell a short run's pick from a long one's.", "",
                  "| task | " + " | ".join(f"{n}" for n in lengths) + " | outcome |", "|---|" + "---|" * (len(lengths) + 1)]
        lines += [f"| {task} | " + " | ".join(f"{v[n]:+.3f}" if n in v else "–" for n in lengths) +
                  f" | {report['tasks'][task]['oracle_minus_keep_all']['mean']:+.3f} |" for task, v in answered.items()]
    lines += ["", "## Where the first rung alone picks wrong and two rungs do not", "",
              "Per task with three seeds, the label-free judges and rung pairs whose first length alone regrets more "
              "than half of keep_all's seed sd and whose halving does not (regret of the first length alone → of "
              "halving).", ""]
    rescued = {task: first_rung_wrong(s) for task, s in report["tasks"].items() if s["halving"]}
    lines += [f"- {task}: " + ("; ".join(f"{r['judge']} {r['rungs']} ({r['first']:.3f} → {r['halving']:.3f})"
                                         for r in found) if found else "none") for task, found in rescued.items()]
    lines += two_seed_first_rung(report)
    chosen = report["chosen"]
    lines += ["", "## The search's judge and rungs, chosen on the development split", ""]
    if chosen is None:
        lines.append("Not yet: no development task has three seeds of its corruptors.")
    else:
        rule = (f"The lowest mean regret on the development split ({', '.join(chosen['tasks'])}), and among the ways "
                f"within {chosen['tolerance']:.3f} kNN of it (half of keep_all's seed sd) the cheapest: "
                f"**{way_name(chosen)}** (regret {chosen['regret']:.3f}, {chosen['cpu']:.0f} CPU s per candidate).")
        lines.append(rule if chosen["final"] else "Not yet chosen: the rule needs every development task of the "
                     "study complete (three seeds of every corruptor). Provisional, on what there is: " + rule)
    return "\n".join(lines) + "\n"


def two_seed_first_rung(report: dict[str, Any]) -> list[str]:
    """The chosen judge and rungs with the first rung judged on two run seeds instead of one (every candidate of a
    search shares its first-rung seed, so one seed's bias there is every candidate's): regret and CPU per group and
    per task. Measured beside the choice, not among the ways its rule chooses from (it was added after the choice)."""
    chosen = report["chosen"]
    if chosen is None or len(chosen["rungs"]) != 2:
        return []
    pair = ">".join(map(str, chosen["rungs"]))
    lines = ["", f"## The first rung on two run seeds ({way_name(chosen)})", "",
             "Every candidate of a search is judged at the first rung on one run seed, the same for all: one seed's "
             "bias there is every candidate's. The same halving with the first rung judged on both seeds (their mean), "
             "and the first length alone on one or two: mean regret in kNN and CPU s per candidate. Measured after "
             "the choice, so not among the ways its rule chooses from.", "",
             "| tasks | halving | halving, first rung on 2 seeds | first length alone | first length alone on 2 seeds "
             "| CPU s per candidate (1 seed / 2 seeds at the first rung) |", "|---|---|---|---|---|---|"]
    a, b = chosen["rungs"]
    for group, g in report["groups"].items():
        r = g["halving"].get(chosen["judge"], {}).get(pair)
        if not r or "halving_two_seeds" not in r:
            continue
        cpu_a, cpu_b = g["cpu"][str(a)], g["cpu"][str(b)]
        cost = [seeds * cpu_a + (2 * cpu_b - seeds * cpu_a) * a / b for seeds in (1, 2)]
        lines.append(f"| {group} ({len(g['halving_tasks'])}) | {r['halving']:.3f} | {r['halving_two_seeds']:.3f} | "
                     f"{r['first']:.3f} | {r['first_two_seeds']:.3f} | {cost[0]:.0f} / {cost[1]:.0f} |")
    for task, t in report["tasks"].items():
        r = t["halving"].get(chosen["judge"], {}).get(pair)
        if r and "halving_two_seeds" in r:
            lines.append(f"| {task} | {r['halving']:.3f} | {r['halving_two_seeds']:.3f} | {r['first']:.3f} | "
                         f"{r['first_two_seeds']:.3f} | |")
    return lines


def first_rung_wrong(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The label-free (judge, rung pair)s of one task where judging at the first length alone picks a corruptor
    worse than the best by more than half of keep_all's seed sd, and successive halving on to the second does not."""
    tolerance = task["keep_all_noise"] / 2
    return [{"judge": judge, "rungs": pair.replace(">", " then "), **r}
            for judge, pairs in task["halving"].items() if "probe_accuracy" not in judge
            for pair, r in pairs.items() if r["first"] > tolerance >= r["halving"]]


def way_name(way: dict[str, Any]) -> str:
    return f"{way['judge']} after {' then '.join(map(str, way['rungs']))} updates"


FREE_LEVEL_RULE = (
    "The free-level part: the study's corruptors of every known-answer task plus three that keep their own share of "
    "the cells without the keep budget, as the cell scorer's free keep level can (" + ", ".join(
        f"{kind}: {scores} scores, {keep:.0%} kept" for kind, (scores, keep) in FREE_LEVEL.items()) + "). Its rule, "
    "written on 2026-12-07 before its units were run: the same as the study's (the lowest mean regret on the "
    "development split, the cheapest within half of keep_all's seed sd); its choice is the search's judge and rungs "
    "for a space with a free keep level.")


def report(folder: Path, header: str, free_level: bool = False) -> str:
    """Write the report (``fidelity.md`` and ``.json``; with ``free_level``, ``fidelity_free_level.*``) and return
    its text."""
    if not (folder / "units").is_dir():
        raise UsageError(f"{folder} holds no fidelity units (no units/ folder): give the --out of a study")
    result = fidelity_report(folder, free_level)
    name = "fidelity_free_level" if free_level else "fidelity"
    atomic_write_json(folder / f"{name}.json", result)
    text = format_report(result, f"{header}\n\n{FREE_LEVEL_RULE}" if free_level else header)
    atomic_write_text(folder / f"{name}.md", text)
    return text


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/fidelity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                        help="comma-separated tasks, run in this order: named (e.g. shortcut_random, fashion_mnist) "
                             "or generated (genNN) (default: %(default)s)")
    parser.add_argument("--seeds", type=positive(int), default=3, help="run seeds per corruptor (default: %(default)s)")
    parser.add_argument("--workers", type=positive(int), default=2,
                        help="runs at once, one thread each (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("results/fidelity"),
                        help="where the units and the report go (default: %(default)s)")
    parser.add_argument("--report", type=Path,
                        help="only rewrite the report from the units of this folder (default: run the study)")
    parser.add_argument("--free-level", action="store_true",
                        help="the free-level part: also the corruptors with their own keep level, on known-answer "
                             "tasks; its report is fidelity_free_level.md (default: off)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        print(report(args.report, f"Report of `{args.report}`.", args.free_level))
        return 0
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks:
        raise UsageError("--tasks is empty: name at least one task")
    jobs = []
    for task in tasks:  # checks every name before any run
        config, _, _ = task_setup(task)
        jobs += [(task, kind, seed, str(args.out)) for seed in range(args.seeds)
                 for kind in corruptors_of(config, args.free_level)]
    check_units(args.out, tasks)
    todo = [j for j in jobs if not unit_path(args.out, j[0], j[1], j[2]).exists()]
    print(f"{len(jobs)} runs, {len(jobs) - len(todo)} already done in {args.out}; running {len(todo)} on "
          f"{args.workers} worker(s)", flush=True)
    start = time.time()
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for done, path in enumerate(pool.imap(_unit_job, todo), start=1):
            print(f"[{done}/{len(todo)}] {path} ({(time.time() - start) / 60:.0f} min)", flush=True)
    header = (f"`python studies/fidelity.py {' '.join(argv if argv is not None else sys.argv[1:])}`; the units in "
              f"`{args.out}/units`.")
    print(report(args.out, header, args.free_level))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
