"""The Markdown summary of a sweep: floor check, a table per task, extra metrics, Spearman correlations.

Rows are grouped by their explicit ``kind`` (agent, baseline, reference) and name, never by parsing a
label. Any numeric column the runs carry beyond the known ones (e.g. a known-answer task's
``keep_planted``) gets a mean-per-group table of its own, so new metrics need no change here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from benchmarking.results import FIXED_COLUMNS
from benchmarking.confidence import bootstrap_ci, format_ci, iqm
from benchmarking.sweep import KINDS
from corruption_env.evaluation import READABLE_MARGIN, floor_holds

Group = tuple[str, str, str]  # (kind, name, reward)


def group_key(row: dict[str, Any]) -> Group:
    return row["kind"], row["name"], row["reward"] or ""


def label(group: Group) -> str:
    kind, name, reward = group
    if kind == "agent":
        return f"{reward} × {name}" if reward else f"{name} (judged by whole runs)"
    return f"{name} ({kind})"


def sorted_groups(rows: list[dict[str, Any]]) -> list[Group]:
    return sorted({group_key(r) for r in rows}, key=lambda g: (KINDS.index(g[0]), g[2], g[1]))


# a search's parameters (``theta/<name>``) beyond this many (a scorer net's weights) stay in runs.csv only: their
# means over seeds say nothing, and a column each would bury the table
SUMMARY_THETA = 16


def extra_metrics(rows: list[dict[str, Any]]) -> list[str]:
    """Numeric columns beyond the fixed ones and the per-reward returns (a search's parameters only where few)."""
    keys = {k for r in rows for k, v in r.items()
            if k not in FIXED_COLUMNS and "return/" not in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
    if len(thetas := {k for k in keys if k.startswith("theta/")}) > SUMMARY_THETA:
        keys -= thetas
    return sorted(keys)


def known_answer_lines(by_seed: Any) -> list[str]:
    """On a known-answer task: the oracle against keep_all and against random masks at the same keep (paired
    kNN differences with CIs). Whether its views are harder or easier than random ones is
    ``studies/reward_snr.py``'s to say, on the same encoder states."""
    oracle = by_seed(("baseline", "oracle", ""))
    if not oracle:
        return []
    out = ["", "**Known answer:**"]
    for other in ("keep_all", "random"):
        rows = by_seed(("baseline", other, ""))
        seeds = sorted(set(oracle) & set(rows))
        if seeds:
            diff = np.array([oracle[s]["knn"] - rows[s]["knn"] for s in seeds])
            ci = bootstrap_ci(diff)
            sign = "+" if ci[0] > 0 else ("-" if ci[1] < 0 else "0")
            out.append(f"oracle − {other} kNN = {format_ci(diff.mean(), ci)} ({sign}, {len(seeds)} seeds);")
    return [" ".join(out)]


def answer_lines(by_seed: Any, groups: list[Group]) -> list[str]:
    """On a known-answer task, per agent and seed: the keep rate on the planted cells of the trained policy
    (evaluation episode) and of training's last window (a search: of its best candidate), and the training step
    from which it stays at or below 0.2 (``KnownAnswerClock``; a search: the candidate runs until its best
    candidate did, every run counted), with its CPU minutes."""
    agents = [g for g in groups if g[0] == "agent" and any(r.get("keep_planted") is not None for r in by_seed(g).values())]
    if not agents:
        return []
    out = ["", "**Time to the known answer** (per seed; keep rate on the planted cells, ≤ 0.2 = found):", "",
           "| run | seeds | planted keep, trained policy | planted keep, last training window (a search: its best "
           "candidate) | step it stays ≤ 0.2, or candidate runs until the best is (CPU minutes) |", "|---|---|---|---|---|"]

    def number(value: Any) -> str:
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.2f}"

    for group in agents:
        runs = by_seed(group)
        seeds = sorted(runs)
        steps = []
        for s in seeds:
            searched = runs[s].get("search_runs") is not None and not np.isnan(float(runs[s]["search_runs"]))
            step = runs[s].get("answer_runs" if searched else "answer_step")
            found = step is not None and not (isinstance(step, float) and np.isnan(step))
            unit = " runs" if searched else ""
            total = f" of {int(runs[s]['search_runs'])}" if searched else ""
            steps.append(f"{int(step)}{total}{unit} ({runs[s].get('answer_cpu_minutes')})" if found
                         else f"not reached{total and ' in' + total[3:] + ' runs'}")
        out.append(f"| {label(group)} | {', '.join(map(str, seeds))} | "
                   f"{' / '.join(number(runs[s].get('keep_planted')) for s in seeds)} | "
                   f"{' / '.join(number(runs[s].get('final_keep_planted')) for s in seeds)} | {' / '.join(steps)} |")
    return out


def summarize(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    """The summary of ``rows`` (the current grid's); ``header`` holds command and budgets for its first lines."""
    lines = ["# Benchmark summary", "",
             f"Command: `{header['command']}`  ",
             f"train steps {header['train_steps']}, eval steps {header['eval_steps']}, seeds {header['seeds']}, "
             f"env preset {header['env_preset']}; 95 % percentile-bootstrap CIs over seeds.", ""]
    ok = [r for r in rows if r["status"] == "ok"]
    for task in sorted({r["task"] for r in rows}):
        datasets = sorted({r["dataset"] for r in rows if r["task"] == task})
        lines.append(f"## {task}" + (f" (dataset {', '.join(datasets)})" if datasets != [task] else ""))
        lines += task_section([r for r in ok if r["task"] == task])
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["## Failed runs", "", "| run | status | error |", "|---|---|---|"]
        lines += [f"| {r['run_id']} | {r['status']} | {str(r['error'])[:200]} |" for r in failed]
    return "\n".join(lines) + "\n"


def task_section(runs: list[dict[str, Any]]) -> list[str]:
    """One task's finished runs: the floor check, the known answer, the table of runs paired against the
    baselines, the time to the known answer, other metrics, and each return's correlation with kNN."""

    def by_seed(group: Group) -> dict[int, dict[str, Any]]:
        return {r["seed"]: r for r in runs if group_key(r) == group}

    groups = sorted_groups(runs)
    lines = [floor_line(by_seed), *known_answer_lines(by_seed), ""]
    lines += run_table(by_seed, groups)
    lines += answer_lines(by_seed, groups)
    lines += metrics_table(by_seed, groups, extra_metrics(runs))
    return lines + spearman_table(runs) + [""]


def floor_line(by_seed: Any) -> str:
    keep, untrained = by_seed(("baseline", "keep_all", "")), by_seed(("reference", "untrained", ""))
    seeds = sorted(set(keep) & set(untrained))
    if not seeds:
        return "**Floor check:** needs the keep_all baseline and the untrained reference; not run."
    diff = np.array([keep[s]["knn"] - untrained[s]["knn"] for s in seeds])
    ci = bootstrap_ci(diff)
    verdict = ("the floor holds: the table can be read." if floor_holds(diff) else
               f"the floor does NOT hold: keep_all does not beat an untrained encoder by {READABLE_MARGIN} on average, "
               "so this table cannot be read yet (raise --eval-steps).")
    return (f"**Floor check:** keep_all − untrained kNN = {format_ci(diff.mean(), ci)} over {len(seeds)} "
            f"seed(s); {verdict}")


def run_table(by_seed: Any, groups: list[Group]) -> list[str]:
    """Every group's kNN and linear-probe accuracy, paired by seed against the best baseline and every other one
    (is a corruptor above random masks at its keep, and not below keeping everything?)."""
    baseline_means = {g: np.mean([r["knn"] for r in by_seed(g).values()]) for g in groups if g[0] == "baseline"}
    best = max(baseline_means, key=baseline_means.get) if baseline_means else None
    against = [best, *(g for g in baseline_means if g != best)] if best else []
    lines = ["| " + " | ".join(["run", "n", "kNN mean [95% CI]", "kNN IQM", "linear mean [95% CI]", "keep",
                                *(f"Δ kNN vs {'best baseline, ' if g == best else ''}{g[1]} [95% CI]"
                                  for g in against)]) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(against)]
    for group in groups:
        runs_of = by_seed(group)
        knn = np.array([r["knn"] for r in runs_of.values()])
        lin = np.array([r["linear"] for r in runs_of.values()])
        keeps = [r["keep_fraction"] for r in runs_of.values() if r.get("keep_fraction") is not None]
        deltas = []
        for other in against:
            ref = by_seed(other)
            paired = np.array([runs_of[s]["knn"] - ref[s]["knn"] for s in sorted(set(runs_of) & set(ref))])
            deltas.append(format_ci(paired.mean(), bootstrap_ci(paired)) if group != other and len(paired) else "")
        keep = f"{np.mean(keeps):.2f}" if keeps else ""
        lines.append("| " + " | ".join([label(group), str(len(knn)), format_ci(knn.mean(), bootstrap_ci(knn)),
                                         f"{iqm(knn):.3f}", format_ci(lin.mean(), bootstrap_ci(lin)), keep,
                                         *deltas]) + " |")
    learned = [g for g in groups if g[0] == "agent"]
    if best and learned:
        wins = [label(g) for g in learned if np.mean([r["knn"] for r in by_seed(g).values()]) > baseline_means[best]]
        lines += ["", ("Learned corruptors with a higher mean kNN than the best fixed baseline "
                       f"({label(best)}): {', '.join(wins)} (check whether the CI of Δ excludes 0)." if wins else
                       f"No learned corruptor beats the best fixed baseline ({label(best)}) on mean kNN accuracy yet.")]
    return lines


def metrics_table(by_seed: Any, groups: list[Group], metrics: list[str]) -> list[str]:
    if not metrics:
        return []
    lines = ["", "Other metrics (mean over seeds):", "", "| run | " + " | ".join(metrics) + " |",
             "|---|" + "---|" * len(metrics)]
    for group in groups:
        cells = []
        for metric in metrics:
            values = [r[metric] for r in by_seed(group).values() if r.get(metric) is not None]
            cells.append(f"{np.mean(values):.3f}" if values else "")
        lines.append(f"| {label(group)} | " + " | ".join(cells) + " |")
    return lines


def spearman_table(runs: list[dict[str, Any]]) -> list[str]:
    from scipy import stats

    lines = ["", "Spearman correlation between each reward definition's return on the evaluation episode and "
                 "the kNN accuracy that episode's encoder reached, across all runs above:", "",
             "| reward definition | Spearman ρ | p | runs |", "|---|---|---|---|"]
    for key in sorted({k for r in runs for k in r if k.startswith("eval_return/")}):
        pairs = [(r[key], r["knn"]) for r in runs if r.get(key) is not None]
        if len(pairs) >= 3 and np.ptp([p[0] for p in pairs]) > 0:
            rho, p = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
            lines.append(f"| {key.split('/', 1)[1]} | {rho:+.2f} | {p:.3f} | {len(pairs)} |")
        else:
            lines.append(f"| {key.split('/', 1)[1]} | n/a | | {len(pairs)} |")
    return lines
