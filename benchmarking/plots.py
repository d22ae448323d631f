"""The sweep's pictures: ``accuracy.png`` (kNN and linear-probe means with bootstrap CIs, seeds as dots)
and ``learning_curves.png`` (training reward over steps, mean over seeds, a panel per reward)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarking.report import group_key, label, sorted_groups
from benchmarking.confidence import bootstrap_ci

COLOURS = {"agent": "tab:blue", "baseline": "tab:grey", "reference": "tab:orange"}


def plot(rows: list[dict[str, Any]], curves: dict[str, list[float]], out: Path) -> None:
    """Write both pictures of ``rows`` into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from corruption_env.files import atomic_path

    ok = [r for r in rows if r["status"] == "ok"]
    bars = [(task, group) for task in sorted({r["task"] for r in ok})
            for group in sorted_groups([r for r in ok if r["task"] == task])]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * len(bars) + 1.8), sharey=True)
    for ax, metric in zip(axes, ("knn", "linear")):
        for i, (task, group) in enumerate(bars):
            vals = np.array([r[metric] for r in ok if r["task"] == task and group_key(r) == group])
            lo, hi = bootstrap_ci(vals)
            err = None if np.isnan(lo) else [[vals.mean() - lo], [hi - vals.mean()]]
            ax.barh(i, vals.mean(), xerr=err, color=COLOURS[group[0]], capsize=3)
            ax.scatter(vals, [i] * len(vals), color="black", s=8, zorder=3)
        ax.set_yticks(range(len(bars)), [f"{task}: {label(group)}" for task, group in bars])
        ax.set_xlabel(f"{'kNN' if metric == 'knn' else 'linear-probe'} accuracy (test split)")
        ax.invert_yaxis()
    fig.suptitle("Encoders trained with each corruptor: mean, 95 % bootstrap CI, seeds as dots")
    fig.tight_layout()
    with atomic_path(out / "accuracy.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)

    groups: dict[str, dict[str, list[list[float]]]] = {}  # reward -> algo -> curves over seeds and tasks
    for r in ok:
        if r["kind"] == "agent" and curves.get(r["run_id"]):
            groups.setdefault(r["reward"], {}).setdefault(f"{r['task']}: {r['name']}", []).append(curves[r["run_id"]])
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
    with atomic_path(out / "learning_curves.png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
