"""The judge audit: how well does each label-free judge of a short run agree with the kNN accuracy of a long one?

On generated known-answer tasks (``corruption_env.task_generator``: development and held-out split) and the named
ones, each (task, seed) trains a set of fixed corruptors twice: a **judge run** exactly as the search judges a
candidate (``--run-updates`` SimCLR updates at batch 64 on the search's run seed, and once more on a second run
seed), after which every label-free judge is measured on the held-out images (and after half the updates); and an
**evaluation run** (``--eval-steps`` updates on the evaluation's seed) scored by kNN accuracy with labels. The
corruptors: keep_all, the oracle (drops the planted cells), random masks and CowMask at the budget, a partial answer
(drops 2 of the 4 planted cells), the pattern kept while 4 other cells go (``anti``), and two random candidates of the
search's cell rule. Judges: RankMe, LiDAR, alpha-ReQ, the held-out NT-Xent loss, alignment, uniformity, and
``probe_accuracy`` (kNN with labels on the held-out split: the label-judged ceiling's judge, for reference).

    python studies/judge_audit.py --tasks 12 --seeds 3 --workers 2 --out docs/results/judge_audit   # the audit
    python studies/judge_audit.py --report docs/results/judge_audit                             # its tables again

Each (task, seed) is written to ``OUT/units/`` when done (a rerun skips those; each unit records the length of its
judge runs, which the report reads back), and the report (``OUT/audit.md``, ``OUT/audit.json``) gives, per judge and
split: the Spearman correlation of judge and kNN over the corruptors of a (task, seed), its mean with a bootstrap CI
over (task, seed) pairs, and how often the judge's pick is no worse than the better of keep_all and the oracle by
more than the seed noise (the standard deviation of keep_all's kNN over seeds). Every task's margins (oracle −
keep_all, oracle − random) say whether it is an "answer" task (a task of one seed has no interval to say it).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors
from corruption_env.files import atomic_write_json, atomic_write_text

JUDGES = ("rankme", "lidar", "alpha_req", "heldout_loss", "alignment", "uniformity", "probe_accuracy")
LABEL_FREE = JUDGES[:-1]
CORRUPTORS = ("keep_all", "oracle", "random", "cowmask", "partial", "anti", "rule_a", "rule_b")
PLAIN_CORRUPTORS = ("keep_all", "random", "cowmask", "rule_a", "rule_b", "rule_c", "rule_d")  # no planted pattern
# corruptors with their own keep level, run without the keep budget (what the cell scorer's free keep level can
# express): (the planted-pattern scores they rank cells by, the fraction kept). anti_k30 is the anti-answer a search
# over the free keep level picked (the pattern kept, most of the rest dropped); oracle_k50 the answer with less kept.
FREE_LEVEL = {"anti_k30": ("anti", 0.30), "oracle_k50": ("oracle", 0.50), "random_k30": ("random", 0.30)}
# every corruptor's random stream is its first place here (new names go at the end: the others' streams stay)
STREAMS = (*CORRUPTORS, *PLAIN_CORRUPTORS, "rule_e", "rule_f", "rule_g", *FREE_LEVEL)
NAMED = ("shortcut_fixed", "shortcut_random", "distractor_fixed", "distractor_random")


def task_overrides(name: str) -> dict[str, Any]:
    """The EnvConfig overrides of a named task (the benchmark's) or of a generated one (``genNN``, or its full name);
    a UsageError for any other name says which there are."""
    from benchmarking.sweep import TASKS, resolve_task

    overrides = resolve_task(name)
    if name not in TASKS and overrides == {"dataset": name}:
        raise UsageError(f"task {name!r} is a dataset without a known answer: use a named task ({', '.join(TASKS)}) "
                         f"or a generated one (genNN)")
    return overrides


def planted_scores(env: Any, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Scores (B, g * g) for the env's next batch that make the keep budget drop: the pattern (``oracle``), half
    of it (``partial``), other cells while keeping the pattern (``anti``), or cells at random (``random``); ties
    broken at random."""
    cells = env.planted_cells.reshape(env.planted_cells.shape[0], -1)  # (B, g*g) bool
    scores = rng.uniform(0, 1, cells.shape)
    if kind == "oracle":
        scores = scores - 10 * cells
    elif kind == "partial":
        for row, mask in zip(scores, cells):
            planted = np.flatnonzero(mask)
            drop = rng.permutation(planted)[: len(planted) // 2]
            row[planted] += 10
            row[drop] -= 20
    elif kind == "anti":
        scores = scores + 10 * cells
    return scores.astype(np.float32)


def make_act(kind: str, env: Any, seed: int) -> Callable[[dict], np.ndarray]:
    """The act function of corruptor ``kind`` in ``env`` (deterministic given ``seed``)."""
    from agents import make_agent
    from agents.corruptor_evaluation import agent_act
    from corruption_env.cell_scorer import top_cells
    from corruption_env.whole_run import make_corruptor

    if kind in ("keep_all", "oracle", "random", "cowmask"):
        options = {"random": {"keep_prob": 0.75}, "cowmask": {"keep_range": (0.5, 1.0)}}.get(kind, {})
        return agent_act(make_agent(kind, env, seed=seed, **options))
    rng = np.random.default_rng([seed, STREAMS.index(kind)])
    if kind in ("partial", "anti"):
        return lambda obs: planted_scores(env, rng, kind).reshape(-1)
    if kind in FREE_LEVEL:  # its own keep level: the env must have no keep budget
        scores, keep = FREE_LEVEL[kind]
        return lambda obs: top_cells(planted_scores(env, rng, scores), keep).reshape(-1)
    rule = make_corruptor("cell_rule", env.config)
    theta = rng.normal(0, 1, rule.dim)
    return lambda obs: rule.act(theta, obs)


def audit_unit(task: str, seed: int, run_updates: int, eval_steps: int) -> dict[str, Any]:
    """One (task, seed): every corruptor's judges (two run seeds, two run lengths) and its kNN."""
    import torch

    from agents.corruptor_evaluation import CorruptorEvaluation
    from agents.search import run_seed
    from corruption_env import EnvConfig
    from corruption_env.known_answer import is_known_answer
    from corruption_env.whole_run import WholeRun

    torch.set_num_threads(1)
    config = EnvConfig(**task_overrides(task), num_threads=1)
    runs = {budget: WholeRun((config if budget else config.without_budget()).replace(batch_size=64), run_updates,
                             "rankme", also_measure=JUDGES) for budget in (True, False)}
    evaluation = CorruptorEvaluation(config, eval_steps, seed=seed, progress=False, track_rewards=[])
    out: dict[str, Any] = {"task": task, "seed": seed, "run_updates": run_updates, "eval_steps": eval_steps,
                           "corruptors": {}}
    for kind in CORRUPTORS if is_known_answer(config.dataset_kwargs) else PLAIN_CORRUPTORS:
        start = time.process_time()
        whole = runs[kind != "keep_all"]
        judged = {}
        for label, rs in (("run_a", run_seed(seed)), ("run_b", run_seed(seed + 1000))):
            result = whole.judge(make_act(kind, whole.env, seed), rs, also_at=(run_updates // 2,))
            judged[label] = {str(k): v for k, v in result.measured.items()}
            judged[label]["keep_planted"] = result.keep_planted
        row = evaluation.run_policy(kind, make_act(kind, evaluation.env_for(kind != "keep_all"), seed),
                                    budget=kind != "keep_all")
        out["corruptors"][kind] = {"judges": judged, "knn": row.knn, "linear": row.linear,
                                   "keep_planted": row.keep_planted, "cpu_seconds": time.process_time() - start}
        print(f"{task} s{seed} {kind}: kNN {row.knn:.3f}, rankme {judged['run_a'][str(run_updates)]['rankme']:.1f}",
              file=sys.stderr, flush=True)
    return out


def _unit_job(job: tuple[str, int, int, int, str]) -> str:
    task, seed, run_updates, eval_steps, folder = job
    path = Path(folder) / "units" / f"{task}_s{seed}.json"
    if not path.exists():
        atomic_write_json(path, audit_unit(task, seed, run_updates, eval_steps))
    return str(path)


# ------------------------------------------------------------------------------------------ the report

def oriented(judge: str, value: float) -> float:
    """Higher is better for every judge."""
    from corruption_env.statistics import STATISTICS

    return value if STATISTICS[judge].higher_is_better else -value


def unit_run_updates(unit: dict) -> int:
    """The length of a unit's judge runs, as it records it (units written before they did: the last update their
    judges were measured at, the full run's)."""
    return unit.get("run_updates") or max(int(k) for k in unit["corruptors"]["keep_all"]["judges"]["run_a"]
                                          if k.isdigit())


def judge_values(unit: dict, variant: str, judge: str) -> dict[str, float]:
    """Each corruptor's oriented judge in one variant: ``end`` (run seed a, full run), ``half`` (half the updates),
    ``two_seeds`` (mean over run seeds a and b, full runs)."""
    run_updates = unit_run_updates(unit)
    out = {}
    for kind, c in unit["corruptors"].items():
        a, b = c["judges"]["run_a"], c["judges"]["run_b"]
        if variant == "half":
            value = a[str(run_updates // 2)][judge]
        elif variant == "two_seeds":
            value = (a[str(run_updates)][judge] + b[str(run_updates)][judge]) / 2
        else:
            value = a[str(run_updates)][judge]
        out[kind] = oriented(judge, value)
    return out


def combined(unit: dict, judges: tuple[str, ...]) -> dict[str, float]:
    """A combination: the mean of the corruptors' ranks under each judge (end of run)."""
    from scipy.stats import rankdata

    kinds = list(unit["corruptors"])
    ranks = [rankdata([judge_values(unit, "end", j)[k] for k in kinds]) for j in judges]
    return dict(zip(kinds, np.mean(ranks, axis=0)))


def unit_scores(unit: dict, values: dict[str, float], noise: float) -> tuple[float, bool]:
    """Spearman of judge and kNN over the corruptors; whether the judge's pick is no worse than the better of
    keep_all and the oracle by more than ``noise``."""
    from scipy.stats import spearmanr

    kinds = list(values)
    knn = [unit["corruptors"][k]["knn"] for k in kinds]
    rho = spearmanr([values[k] for k in kinds], knn).statistic
    pick = kinds[int(np.argmax([values[k] for k in kinds]))]
    best = max(unit["corruptors"][k]["knn"] for k in ("keep_all", "oracle") if k in unit["corruptors"])
    return float(rho), unit["corruptors"][pick]["knn"] >= best - noise


def task_margins(units: list[dict]) -> dict[str, dict[str, Any]]:
    """Per task: oracle − keep_all and oracle − random (mean, CI over seeds), keep_all's seed noise, and the kind
    (answer: oracle − keep_all CI above 0; a task of one seed has no interval, so no kind)."""
    from benchmarking.confidence import bootstrap_ci

    out = {}
    for task in sorted({u["task"] for u in units}):
        mine = [u for u in units if u["task"] == task]
        if "oracle" not in mine[0]["corruptors"]:  # a task without a planted pattern: only keep_all's noise
            noise = float(np.std([u["corruptors"]["keep_all"]["knn"] for u in mine], ddof=1)) if len(mine) > 1 else 0.0
            out[task] = {"noise": noise, "seeds": len(mine), "kind": "plain"}
            continue
        diffs = {other: np.array([u["corruptors"]["oracle"]["knn"] - u["corruptors"][other]["knn"] for u in mine])
                 for other in ("keep_all", "random")}
        cis = {k: bootstrap_ci(v) for k, v in diffs.items()}
        noise = float(np.std([u["corruptors"]["keep_all"]["knn"] for u in mine], ddof=1)) if len(mine) > 1 else 0.0
        out[task] = {"oracle_minus_keep_all": [float(diffs["keep_all"].mean()), *map(float, cis["keep_all"])],
                     "oracle_minus_random": [float(diffs["random"].mean()), *map(float, cis["random"])],
                     "noise": noise, "seeds": len(mine),
                     "kind": ("one seed: no interval" if len(mine) < 2 else
                              "answer" if cis["keep_all"][0] > 0 else "keep everything")}
    return out


def audit_table(units: list[dict]) -> dict[str, Any]:
    """Per split and judge (variant): mean Spearman with its CI, and the rate of good picks."""
    from benchmarking.confidence import bootstrap_ci
    from corruption_env.task_generator import SPLITS

    margins = task_margins(units)
    candidates: dict[str, Callable[[dict], dict[str, float]]] = {}
    for judge in JUDGES:
        for variant in ("end", "half", "two_seeds"):
            candidates[f"{judge}" + ("" if variant == "end" else f" ({variant.replace('_', ' ')})")] = (
                lambda u, j=judge, v=variant: judge_values(u, v, j))
    for pair in (("rankme", "heldout_loss"), ("lidar", "heldout_loss"), ("rankme", "alignment"),
                 ("rankme", "lidar", "heldout_loss")):
        candidates[" + ".join(pair) + " (mean rank)"] = lambda u, p=pair: combined(u, p)
    table: dict[str, Any] = {}
    for split in (*SPLITS, "named", "real images"):
        mine = [u for u in units if split_of(u["task"]) == split]
        if not mine:
            continue
        table[split] = {}
        for name, values_of in candidates.items():
            scores = [unit_scores(u, values_of(u), margins[u["task"]]["noise"]) for u in mine]
            rhos = np.array([s[0] for s in scores])
            rhos = rhos[np.isfinite(rhos)]
            table[split][name] = {"spearman": [float(rhos.mean()), *map(float, bootstrap_ci(rhos))] if rhos.size else None,
                                  "good_picks": float(np.mean([s[1] for s in scores])), "pairs": len(scores)}
    return {"margins": margins, "table": table}


def split_of(task: str) -> str:
    from corruption_env.task_generator import generate_task

    if not task.startswith("gen"):
        return "real images" if task.startswith("fashion") else "named"
    return generate_task(int(task.split("_")[0].removeprefix("gen"))).split


def format_report(report: dict[str, Any], header: str) -> str:
    from benchmarking.confidence import format_ci

    lines = ["# Judge audit", "", header, "", "## Tasks", "",
             "| task | split | kind | oracle − keep_all kNN [95% CI] | oracle − random | keep_all seed sd |",
             "|---|---|---|---|---|---|"]
    for task, m in report["margins"].items():
        if m["kind"] == "plain":
            lines.append(f"| {task} | {split_of(task)} | no planted pattern | | | {m['noise']:.3f} |")
            continue
        keep_all, random = (format_ci(m[key][0], m[key][1:], "+.3f")
                            for key in ("oracle_minus_keep_all", "oracle_minus_random"))
        lines.append(f"| {task} | {split_of(task)} | {m['kind']} | {keep_all} | {random} | {m['noise']:.3f} |")
    for split, rows in report["table"].items():
        lines += ["", f"## {split}", "", "| judge | Spearman with kNN [95% CI] | picks no worse than the best of "
                  "keep_all and oracle | (task, seed) pairs |", "|---|---|---|---|"]
        for name, row in sorted(rows.items(), key=lambda kv: -(kv[1]["spearman"] or [-9])[0]):
            rho = row["spearman"]
            text = "–" if rho is None else format_ci(rho[0], rho[1:], "+.2f")
            lines.append(f"| {name} | {text} | {row['good_picks']:.0%} | {row['pairs']} |")
    return "\n".join(lines) + "\n"


def report(folder: Path, header: str) -> str:
    paths = sorted((folder / "units").glob("*.json"))
    if not paths:
        raise UsageError(f"--report {folder}: no audit there (no units/*.json); run it first: --out {folder}")
    units = [json.loads(p.read_text()) for p in paths]
    result = audit_table(units)
    atomic_write_json(folder / "audit.json", result)
    text = format_report(result, header)
    atomic_write_text(folder / "audit.md", text)
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="studies/judge_audit.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=12,
                        help="generated tasks 0..N-1 (even: development, odd: held out; default 12)")
    parser.add_argument("--named", action="store_true", help="also the four named known-answer tasks (default: off)")
    parser.add_argument("--only", default=None,
                        help="comma-separated task names instead of --tasks and --named: generated (genNN) or named "
                             "(default: none)")
    parser.add_argument("--seeds", type=positive(int), default=3, help="seeds 0..N-1 of every task (default 3)")
    parser.add_argument("--run-updates", type=int, default=50,
                        help="updates of a judge run, the search's; judges are also read at half of it (default 50)")
    parser.add_argument("--eval-steps", type=positive(int), default=500,
                        help="updates of an evaluation run (default 500)")
    parser.add_argument("--workers", type=positive(int), default=2,
                        help="(task, seed) units at once, one thread each (default 2)")
    parser.add_argument("--out", type=Path, default=Path("results/judge_audit"),
                        help="the audit's folder: its units/ and report (default results/judge_audit)")
    parser.add_argument("--report", type=Path,
                        help="only rewrite the report of a finished (or partial) audit in this folder, from its units "
                             "alone (default: run the audit)")
    return parser


def audit_tasks(args: argparse.Namespace) -> list[str]:
    """The tasks the command line asks for, every number and name checked (a UsageError says what to give)."""
    from corruption_env.task_generator import generate_task

    if args.tasks < 0:
        raise UsageError(f"--tasks {args.tasks}: must be >= 0")
    if args.run_updates < 2:
        raise UsageError(f"--run-updates {args.run_updates}: must be >= 2 (judges are also read at half the run)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder")
    tasks = ([t for t in args.only.split(",") if t] if args.only is not None else
             [generate_task(i).name for i in range(args.tasks)] + (list(NAMED) if args.named else []))
    if not tasks:
        raise UsageError("no task to audit: give --tasks 1 or more, --named, or --only NAMES")
    for task in tasks:
        task_overrides(task)
    return tasks


@usage_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.report:
        print(report(args.report, f"Report of {args.report}."))
        return 0
    tasks = audit_tasks(args)
    jobs = [(t, s, args.run_updates, args.eval_steps, str(args.out)) for s in range(args.seeds) for t in tasks]
    for task, seed, *_ in jobs:  # a finished unit is reused only if it was run at the same lengths
        path = args.out / "units" / f"{task}_s{seed}.json"
        if path.exists():
            unit = json.loads(path.read_text())
            ran = {"--run-updates": unit_run_updates(unit), "--eval-steps": unit.get("eval_steps")}  # as recorded
            asked = {"--run-updates": args.run_updates, "--eval-steps": args.eval_steps}
            differ = [k for k, v in ran.items() if v is not None and v != asked[k]]
            if differ:
                raise UsageError(f"{path} was run with {' '.join(f'{k} {ran[k]}' for k in differ)}, not "
                                 f"{' '.join(f'{k} {asked[k]}' for k in differ)}: give the same, or another --out")
    start = time.time()
    with multiprocessing.get_context("fork").Pool(args.workers, maxtasksperchild=1) as pool:
        for done, path in enumerate(pool.imap_unordered(_unit_job, jobs), start=1):
            print(f"[{done}/{len(jobs)}] {path} ({(time.time() - start) / 60:.0f} min)", flush=True)
    header = (f"`{' '.join(['python studies/judge_audit.py', *argv])}`: "
              f"{len(jobs)} (task, seed) units, judge runs of {args.run_updates} updates, evaluation runs of "
              f"{args.eval_steps}; {(time.time() - start) / 3600:.1f} h wall on {args.workers} worker(s).")
    print(report(args.out, header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
