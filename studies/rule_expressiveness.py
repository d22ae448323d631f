"""Can a position-free cell rule with few parameters express the per-image known answers at all?

For each random-placement task (the planted pattern in the top or the bottom row, per image) and each subset of
the ``cell_rule``'s features, CMA-ES searches the rule's weights for the largest fraction of planted cells its
masks drop (12 of 16 cells kept per image; blind: 1/4, the answer: 1), told the answer: the planted reward, on
``--images`` training images, no SimCLR run. A subset that reaches the answer on every task can express it; the
whole-run search then has to find it without being told (``agents/search.py``). Numbers only depend on the data.

    python studies/rule_expressiveness.py [--tasks shortcut_random,distractor_random] [--images 512]
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch
from cmaes import CMA

from benchmarking.sweep import TASKS
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.corruption import top_k_mask
from corruption_env.whole_run import CellRule


def planted_dropped(features: np.ndarray, weights: np.ndarray, planted: np.ndarray, keep: int) -> float:
    """Mean fraction of the planted cells dropped when each image keeps its ``keep`` best-scoring cells."""
    scores = torch.from_numpy((features @ weights).astype(np.float32))
    grid = int(np.sqrt(scores.shape[1]))
    mask = top_k_mask(scores.reshape(-1, grid, grid), keep, torch.Generator().manual_seed(0)).reshape(len(scores), -1)
    return float(1 - mask.numpy()[planted].mean())


def search(features: np.ndarray, planted: np.ndarray, keep: int, generations: int, seed: int) -> tuple[float, np.ndarray]:
    optimizer = CMA(mean=np.zeros(features.shape[-1]), sigma=1.0, seed=seed, population_size=8)
    best, best_w = -1.0, None
    for _ in range(generations):
        asked = [optimizer.ask() for _ in range(optimizer.population_size)]
        values = [planted_dropped(features, w, planted, keep) for w in asked]
        optimizer.tell([(w, -v) for w, v in zip(asked, values)])
        if max(values) > best:
            best, best_w = max(values), asked[int(np.argmax(values))]
    return best, best_w


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="shortcut_random,distractor_random")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--generations", type=int, default=30)
    args = parser.parse_args()
    names = CellRule.FEATURES
    print(f"| features (parameters) | {' | '.join(args.tasks.split(','))} |")
    print("|---|" + "---|" * len(args.tasks.split(",")))
    data = {}
    for task in args.tasks.split(","):
        cfg = EnvConfig.preset("cpu", **{**TASKS[task], "batch_size": args.images, "decorruptor": "bicubic"})
        env = CorruptionEnv(cfg)
        obs, _ = env.reset(seed=0)
        rule = CellRule(cfg)
        data[task] = (rule.features(obs["images"]), env.planted_cells.reshape(args.images, -1), cfg.keep_cells)
    for size in range(1, len(names) + 1):
        for subset in itertools.combinations(range(len(names)), size):
            cells = []
            for task, (features, planted, keep) in data.items():
                value, weights = search(features[..., list(subset)], planted, keep, args.generations, seed=0)
                direction = ", ".join(f"{names[i]} {w / np.abs(weights).max():+.2f}" for i, w in zip(subset, weights))
                cells.append(f"{value:.2f} ({direction})")
            print(f"| {', '.join(names[i] for i in subset)} ({size}) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
