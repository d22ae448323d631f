"""Benchmark reward definitions (and agents) by what their corruptors do to the learned representation.

For each (reward, algo, seed) an agent is trained with that reward, then its corruptor is judged
the way ``train_agent.py`` judges it: a fresh encoder trained for ``--eval-steps`` SimCLR updates
with the agent's masks, scored by kNN and linear-probe accuracy on the test split. Each fixed
baseline and the references (``untrained``, ``simclr_aug``) are evaluated once per seed, with the
same encoder initialisation and batches as that seed's agents (paired comparisons). Every
evaluation episode also records its return under *every* reward definition, so the summary can ask
which definitions track accuracy.

    python benchmark.py --preset quick                 # about 30-40 minutes on 2 CPU cores
    python benchmark.py --rewards ma_neg_loss_derivative,prediction_gain,heldout_gain \\
        --algos ppo,reinforce --baselines keep_all,random,cowmask --seeds 5 --train-steps 2000 --eval-steps 1000

Writes to ``--out``: ``runs.csv`` (one row per run), ``curves.json`` (reward over training),
``summary.md`` (means with 95 % bootstrap CIs, IQM, difference to the best fixed baseline, Spearman
correlations between returns and accuracy), ``accuracy.png`` and ``learning_curves.png``.
Rerunning the same command skips finished runs; a failed run is recorded and the sweep goes on.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures as futures
import csv
import json
import multiprocessing
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRESETS: dict[str, dict[str, Any]] = {
    # sized for ~35 minutes on 2 CPU cores; 250 updates clear the learnability floor (README's floor table)
    "quick": dict(rewards="ma_neg_loss_derivative,heldout_gain", algos="ppo", baselines="keep_all,random,cowmask",
                  seeds=2, train_steps=256, eval_steps=250, env_preset="cpu", workers=2),
    # for a GPU: every built-in reward, both learners, 5 seeds
    "paper": dict(rewards="ma_neg_loss_derivative,neg_loss_delta,prediction_gain,heldout_gain,probe_accuracy,"
                          "tscl_window,neg_loss,grad_norm",
                  algos="ppo,reinforce", baselines="keep_all,random,cowmask", seeds=5, train_steps=20000,
                  eval_steps=2000, env_preset="gpu", workers=1),
}
REFERENCES = ("untrained", "simclr_aug")
BASELINE_KWARGS = {"keep_all": {}, "random": {"keep_prob": 0.75}, "cowmask": {"keep_range": (0.5, 1.0)}}


@dataclass(frozen=True)
class RunSpec:
    """One unit of work: train-and-evaluate an agent, or evaluate a baseline/reference."""

    dataset: str
    kind: str  # "agent", "baseline" or "reference"
    name: str  # algo for agents, baseline/reference name otherwise
    reward: str  # the training reward for agents, "" otherwise
    seed: int

    @property
    def run_id(self) -> str:
        return f"{self.dataset}/{self.kind}/{self.name}/{self.reward or '-'}/s{self.seed}"


def _literal(raw: str) -> Any:
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_key_values(items: list[str] | None) -> dict[str, Any]:
    pairs = [item.partition(":") for item in items or []]
    bad = [k for k, sep, _ in pairs if not sep or not k]
    if bad:
        raise SystemExit(f"error: expected key:value pairs, got {items}")
    return {k: _literal(v) for k, _, v in pairs}


# ------------------------------------------------------------------------------------------ one run

def run_one(spec: RunSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """Train (agents) and evaluate one run; never raises: failures become a row with their error."""
    import torch

    from agents import make_agent
    from agents.evaluation import CorruptorEvaluation, agent_act
    from corruption_env import CorruptionEnv, EnvConfig
    from stable_baselines3.common.callbacks import BaseCallback

    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    row: dict[str, Any] = {"run_id": spec.run_id, **asdict(spec), "status": "ok", "error": ""}
    start = time.time()
    curve: list[float] = []
    try:
        cfg = EnvConfig.preset(settings["env_preset"], dataset=spec.dataset, **settings["env_kwargs"])
        evaluation = CorruptorEvaluation(cfg, settings["eval_steps"], seed=spec.seed, progress=False,
                                         track_rewards="all")
        if spec.kind == "agent":
            train_cfg = cfg.replace(reward=spec.reward, track_rewards="all")
            env = CorruptionEnv(train_cfg)

            class Recorder(BaseCallback):
                """Per-step reward of the training reward, summed returns under every definition."""

                def __init__(self) -> None:
                    super().__init__()
                    self.returns: dict[str, float] = {}
                    self.divergences = 0

                def _on_step(self) -> bool:
                    for info, reward in zip(self.locals["infos"], np.ravel(self.locals["rewards"])):
                        curve.append(float(reward))
                        self.divergences += int(info.get("diverged", False))
                        for term, value in info.get("reward_terms", {}).items():
                            self.returns[term] = self.returns.get(term, 0.0) + value
                    return True

            recorder = Recorder()
            agent = make_agent(spec.name, env, seed=spec.seed, **settings["hyperparams"].get(spec.name, {}))
            agent.learn(settings["train_steps"], callback=recorder)
            row["train_seconds"] = round(time.time() - start, 1)
            row["train_divergences"] = recorder.divergences
            row.update({f"train_return/{k}": v for k, v in recorder.returns.items()})
            result = evaluation.run_policy(spec.name, agent_act(agent))
        elif spec.kind == "baseline":
            baseline = make_agent(spec.name, evaluation.env, seed=spec.seed, **BASELINE_KWARGS.get(spec.name, {}))
            result = evaluation.run_policy(spec.name, agent_act(baseline))
        elif spec.name == "untrained":
            result = evaluation.untrained()
        else:
            result = evaluation.simclr_aug()
        row.update(knn=result.knn, linear=result.linear, keep_fraction=result.keep_fraction)
        row.update({f"eval_return/{k}": v for k, v in result.returns.items()})
    except Exception as exc:  # noqa: BLE001 - a failed run is data, not the end of the sweep
        row["status"] = "diverged" if isinstance(exc, FloatingPointError) else "failed"
        row["error"] = f"{type(exc).__name__}: {exc}"
        if settings.get("verbose"):
            traceback.print_exc()
    row["seconds"] = round(time.time() - start, 1)
    row["curve"] = curve
    return row


# --------------------------------------------------------------------------------------- statistics

def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy); (nan, nan) for fewer than two values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the middle 50 %."""
    from scipy import stats

    return float(stats.trim_mean(values, 0.25)) if len(values) else float("nan")


def _fmt(mean: float, ci: tuple[float, float]) -> str:
    if np.isnan(ci[0]):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def row_label(row: dict[str, Any]) -> str:
    return f"{row['reward']} × {row['name']}" if row["kind"] == "agent" else f"{row['name']} ({row['kind']})"


def summarize(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The Markdown summary: floor check, a table per dataset, Spearman correlations."""
    from scipy import stats

    ok = [r for r in rows if r["status"] == "ok"]
    lines = ["# Benchmark summary", "",
             f"Command: `{settings['command']}`  ",
             f"train steps {settings['train_steps']}, eval steps {settings['eval_steps']}, seeds {settings['seeds']}, "
             f"env preset {settings['env_preset']}; 95 % percentile-bootstrap CIs over seeds.", ""]
    failed = [r for r in rows if r["status"] != "ok"]
    for dataset in sorted({r["dataset"] for r in rows}):
        runs = [r for r in ok if r["dataset"] == dataset]

        def by_seed(label: str, runs: list[dict[str, Any]] = runs) -> dict[int, dict[str, Any]]:
            return {r["seed"]: r for r in runs if row_label(r) == label}

        lines.append(f"## {dataset}")
        keep, untrained = by_seed("keep_all (baseline)"), by_seed("untrained (reference)")
        seeds = sorted(set(keep) & set(untrained))
        if seeds:
            diff = np.array([keep[s]["knn"] - untrained[s]["knn"] for s in seeds])
            ci = bootstrap_ci(diff)
            readable = len(seeds) >= 2 and ci[0] > 0 or (len(seeds) == 1 and diff[0] > 0.05)
            verdict = ("the floor holds: the table can be read." if readable else
                       "the floor does NOT hold: keep_all does not clearly beat an untrained encoder, so this table "
                       "cannot be read yet (raise --eval-steps).")
            lines.append(f"**Floor check:** keep_all − untrained kNN = {_fmt(diff.mean(), ci)} over {len(seeds)} seed(s); "
                         f"{verdict}")
        else:
            lines.append("**Floor check:** needs the keep_all baseline and the untrained reference; not run.")
        lines.append("")
        labels = sorted({row_label(r) for r in runs}, key=lambda s: (" × " not in s, s))
        baseline_means = {lab: np.mean([r["knn"] for r in by_seed(lab).values()])
                          for lab in labels if lab.endswith("(baseline)")}
        best = max(baseline_means, key=baseline_means.get) if baseline_means else None
        lines.append(f"| run | n | kNN mean [95% CI] | kNN IQM | linear mean [95% CI] | keep | Δ kNN vs best baseline"
                     f"{f' ({best})' if best else ''} [95% CI] |")
        lines.append("|---|---|---|---|---|---|---|")
        for label in labels:
            group = by_seed(label)
            knn = np.array([r["knn"] for r in group.values()])
            lin = np.array([r["linear"] for r in group.values()])
            keeps = [r["keep_fraction"] for r in group.values() if r.get("keep_fraction") not in (None, "")]
            delta = ""
            if best and label != best:
                ref = by_seed(best)
                paired = np.array([group[s]["knn"] - ref[s]["knn"] for s in sorted(set(group) & set(ref))])
                if len(paired):
                    delta = _fmt(paired.mean(), bootstrap_ci(paired))
            keep = f"{np.mean(keeps):.2f}" if keeps else ""
            lines.append(f"| {label} | {len(knn)} | {_fmt(knn.mean(), bootstrap_ci(knn))} | {iqm(knn):.3f} | "
                         f"{_fmt(lin.mean(), bootstrap_ci(lin))} | {keep} | {delta} |")
        learned = [r for r in runs if r["kind"] == "agent"]
        if best and learned:
            wins = [lab for lab in labels if " × " in lab and
                    np.mean([r["knn"] for r in by_seed(lab).values()]) > baseline_means[best]]
            lines += ["", ("Learned corruptors with a higher mean kNN than the best fixed baseline "
                           f"({best}): {', '.join(wins)} (check whether the CI of Δ excludes 0)." if wins else
                           f"No learned corruptor beats the best fixed baseline ({best}) on mean kNN accuracy yet.")]
        lines += ["", "Spearman correlation between each reward definition's return on the evaluation episode and "
                      "the kNN accuracy that episode's encoder reached, across all runs above:", "",
                  "| reward definition | Spearman ρ | p | runs |", "|---|---|---|---|"]
        for key in sorted({k for r in runs for k in r if k.startswith("eval_return/")}):
            pairs = [(r[key], r["knn"]) for r in runs if r.get(key) not in (None, "")]
            if len(pairs) >= 3 and np.ptp([p[0] for p in pairs]) > 0:
                rho, p = stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
                lines.append(f"| {key.split('/', 1)[1]} | {rho:+.2f} | {p:.3f} | {len(pairs)} |")
            else:
                lines.append(f"| {key.split('/', 1)[1]} | n/a | | {len(pairs)} |")
        lines.append("")
    if failed:
        lines += ["## Failed runs", "", "| run | status | error |", "|---|---|---|"]
        lines += [f"| {r['run_id']} | {r['status']} | {str(r['error'])[:200]} |" for r in failed]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- output

def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fixed = ["run_id", "dataset", "kind", "name", "reward", "seed", "status", "error", "knn", "linear",
             "keep_fraction", "seconds", "train_seconds", "train_divergences"]
    extra = sorted({k for r in rows for k in r if k not in fixed and k != "curve"})
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fixed + extra, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key, value in row.items():
            if key in ("seed", "train_divergences") and value != "":
                row[key] = int(value)
            elif key in ("knn", "linear", "keep_fraction", "seconds", "train_seconds") or "return/" in key:
                row[key] = float(value) if value != "" else None
    return rows


def plot(rows: list[dict[str, Any]], curves: dict[str, list[float]], out: Path) -> None:
    """accuracy.png (kNN and linear means with bootstrap CIs) and learning_curves.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    labels = sorted({f"{r['dataset']}: {row_label(r)}" for r in ok}, key=lambda s: (" × " not in s, s))
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.8), sharey=True)
    for ax, metric in zip(axes, ("knn", "linear")):
        for i, label in enumerate(labels):
            vals = np.array([r[metric] for r in ok if f"{r['dataset']}: {row_label(r)}" == label])
            lo, hi = bootstrap_ci(vals)
            err = None if np.isnan(lo) else [[vals.mean() - lo], [hi - vals.mean()]]
            colour = "tab:blue" if " × " in label else ("tab:grey" if "baseline" in label else "tab:orange")
            ax.barh(i, vals.mean(), xerr=err, color=colour, capsize=3)
            ax.scatter(vals, [i] * len(vals), color="black", s=8, zorder=3)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel(f"{'kNN' if metric == 'knn' else 'linear-probe'} accuracy (test split)")
        ax.invert_yaxis()
    fig.suptitle("Encoders trained with each corruptor: mean, 95 % bootstrap CI, seeds as dots")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    groups: dict[str, dict[str, list[list[float]]]] = {}  # reward -> algo -> curves over seeds
    for r in ok:
        if r["kind"] == "agent" and curves.get(r["run_id"]):
            groups.setdefault(r["reward"], {}).setdefault(r["name"], []).append(curves[r["run_id"]])
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(4.5 * max(len(groups), 1), 3.6), squeeze=False)
    for ax, (reward, by_algo) in zip(axes[0], sorted(groups.items())):
        for algo, runs in sorted(by_algo.items()):
            n = min(len(c) for c in runs)
            window = max(1, n // 20)
            smooth = np.array([np.convolve(c[:n], np.ones(window) / window, mode="valid") for c in runs])
            ax.plot(np.arange(smooth.shape[1]) + window, smooth.mean(0), label=f"{algo} ({len(runs)} seeds)")
        ax.set_title(reward, fontsize=10)
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("training reward (moving average)")
    fig.suptitle("Reward over training, mean over seeds (each panel trained on its own reward)")
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--rewards", help="comma-separated reward definitions to train with")
    parser.add_argument("--algos", help="comma-separated agents (ppo, reinforce, a2c, module:Class)")
    parser.add_argument("--baselines", help="comma-separated fixed corruptors (keep_all, random, cowmask)")
    parser.add_argument("--datasets", default="shapes", help="comma-separated datasets (one table each)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--train-steps", type=int)
    parser.add_argument("--eval-steps", type=int)
    parser.add_argument("--env-preset", choices=("cpu", "gpu"))
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY:VALUE", help="EnvConfig overrides for every run")
    parser.add_argument("--hyperparams", nargs="*", metavar="ALGO.KEY:VALUE", help="agent options, e.g. ppo.n_steps:16")
    parser.add_argument("--workers", type=int, help="runs in parallel processes, torch threads split between them "
                                                      "(quick: 2, paper: 1)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default results/benchmark_<preset>)")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from agents import agent_spec
    from corruption_env import EnvConfig
    from corruption_env.env import check_names

    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else preset[name]  # noqa: E731
    rewards = [r for r in pick("rewards").split(",") if r]
    algos = [a for a in pick("algos").split(",") if a]
    baselines = [b for b in pick("baselines").split(",") if b]
    datasets = [d for d in args.datasets.split(",") if d]
    hyper: dict[str, dict[str, Any]] = {}
    for key, value in parse_key_values(args.hyperparams).items():
        algo, _, option = key.partition(".")
        hyper.setdefault(algo, {})[option] = value
    settings = {"env_preset": pick("env_preset"), "env_kwargs": parse_key_values(args.env_kwargs),
                "train_steps": pick("train_steps"), "eval_steps": pick("eval_steps"), "seeds": pick("seeds"),
                "hyperparams": hyper, "verbose": args.verbose,
                "command": "python benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    try:  # fail before any run on a bad name
        unknown = [b for b in baselines if b not in BASELINE_KWARGS]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; available: {', '.join(BASELINE_KWARGS)}")
        for algo in algos:
            agent_spec(algo)
        for dataset in datasets:
            for reward in rewards:
                check_names(EnvConfig.preset(settings["env_preset"], dataset=dataset, reward=reward,
                                             **settings["env_kwargs"]))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    workers = pick("workers")
    out = args.out or Path("results") / f"benchmark_{args.preset}"
    out.mkdir(parents=True, exist_ok=True)
    specs = [RunSpec(d, "agent", a, r, s) for d in datasets for s in range(settings["seeds"]) for r in rewards for a in algos]
    specs += [RunSpec(d, "baseline", b, "", s) for d in datasets for s in range(settings["seeds"]) for b in baselines]
    specs += [RunSpec(d, "reference", ref, "", s) for d in datasets for s in range(settings["seeds"]) for ref in REFERENCES]
    rows = [r for r in read_csv(out / "runs.csv") if r["status"] == "ok"]  # failed runs are retried
    curves = json.loads((out / "curves.json").read_text()) if (out / "curves.json").is_file() else {}
    done = {r["run_id"] for r in rows}
    todo = [s for s in specs if s.run_id not in done]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already finished in {out}; running {len(todo)} "
          f"with {workers} worker(s)", file=sys.stderr)

    def record(row: dict[str, Any]) -> None:
        curve = row.pop("curve", [])
        if curve:
            curves[row["run_id"]] = curve
        rows[:] = [r for r in rows if r["run_id"] != row["run_id"]] + [row]
        write_csv(out / "runs.csv", rows)
        write_atomic(out / "curves.json", json.dumps(curves))

    settings["threads"] = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    bar = tqdm(total=len(todo), desc="benchmark runs", unit="run", dynamic_ncols=True)
    try:
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")
            with futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                pending = {pool.submit(run_one, spec, settings): spec for spec in todo}
                for fut in futures.as_completed(pending):
                    record(fut.result())
                    bar.update(1)
        else:
            for spec in todo:
                bar.set_postfix_str(spec.run_id)
                record(run_one(spec, settings))
                bar.update(1)
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished runs are in {out / 'runs.csv'}. Rerun the same command to continue.",
              file=sys.stderr)
        return 130
    finally:
        bar.close()
    summary = summarize(rows, settings)
    write_atomic(out / "summary.md", summary)
    plot(rows, curves, out)
    print(summary)
    print(f"wrote {out}/runs.csv, curves.json, summary.md, accuracy.png, learning_curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
