"""Which reward definitions can teach at all? Their signal-to-noise between two fixed corruptors.

A reward can teach a corruptor only if the difference it pays between two corruptors stands out of
its noise. For every registered reward definition (the env tracks them all), this script compares
two fixed corruptors A and B:

  shapes    plain shapes: keep 1.0 (keep_all) vs keep 0.5 (random masks, each cell kept with p = 0.5)
  shortcut  known-answer task (``dataset_kwargs={"shortcut": "fixed"}``): oracle (drops the planted
            shortcut's cells) vs keep_all

**Per step, on the same encoder states.** One episode per seed is run with corruptor A; before each
step the environment is snapshotted (``CorruptionEnv.snapshot``: learner and optimizer, latent-code
and batch streams, reward states), stepped once with B's mask to record what B would have been paid,
restored, and stepped with A's mask. So at every step both corruptors see the same encoder, batch,
latent codes and augmentations, and only the mask differs. Reported: the mean of r_A - r_B over all
steps and seeds; that mean over the pooled standard deviation sqrt((var r_A + var r_B) / 2) ("step
SNR"); and over the standard deviation of the paired differences ("paired SNR", what an agent
comparing masks on one state could use). Periodic rewards (``heldout_gain``, ``probe_accuracy``) are
read only on the steps where they are measured (column n).

**Per episode.** Episodes with A (the one above) and with B, from the same seeds (same batch order
and latent codes; the mask draws no randomness from the env): mean return difference over the pooled
standard deviation of returns across seeds ("return SNR"). Positive numbers favour A.

    python bench/reward_snr.py                                  # 3 seeds x 50 steps x 2 tasks, ~4 min on 2 idle cores
    python bench/reward_snr.py --seeds 2 --steps 30 --tasks shapes --out results/reward_snr_small.md
    python bench/reward_snr.py --env-kwargs batch_size:32 precision:fp32

The Markdown tables go to stdout and to ``--out``; the raw per-step rewards to the same name with .json.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.cli_options import ArgumentParser, UsageError, parse_key_values, usage_errors
from corruption_env.files import atomic_write_json
from corruption_env.rewards import available_rewards, make_reward

Corruptor = Callable[[CorruptionEnv, np.random.Generator], np.ndarray]
CORRUPTORS: dict[str, Corruptor] = {  # (B, g, g) masks for the env's next batch
    "keep_all": lambda env, rng: np.ones(env.action_space.n, dtype=np.int8),
    "keep_0.5": lambda env, rng: (rng.random(env.action_space.n) < 0.5).astype(np.int8),
    "oracle": lambda env, rng: (~env.shortcut_cells).astype(np.int8),
}
TASKS = {  # name: (description, dataset_kwargs, corruptor A, corruptor B)
    "shapes": ("plain shapes: keep 1.0 vs keep 0.5", {}, "keep_all", "keep_0.5"),
    "shortcut": ("known-answer task (shortcut fixed): oracle vs keep_all", {"shortcut": "fixed"}, "oracle", "keep_all"),
}


def run_seed(env: CorruptionEnv, a: str, b: str, seed: int) -> dict[str, dict]:
    """Rewards of A and of B (counterfactual, same states) at every step of an A episode, and the
    returns of an A and a B episode from ``seed``."""
    rng = np.random.default_rng(seed)
    steps: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    env.reset(seed=seed)
    truncated = False
    while not truncated:
        state = env.snapshot()
        steps["b"].append(env.step(CORRUPTORS[b](env, rng))[4]["reward_terms"])
        env.restore(state)
        *_, truncated, info = env.step(CORRUPTORS[a](env, rng))
        steps["a"].append(info["reward_terms"])
    returns = {"a": {k: sum(s[k] for s in steps["a"]) for k in steps["a"][0]}}
    env.reset(seed=seed)
    truncated, totals = False, dict.fromkeys(returns["a"], 0.0)
    while not truncated:
        *_, truncated, info = env.step(CORRUPTORS[b](env, rng))
        for k, v in info["reward_terms"].items():
            totals[k] += v
    returns["b"] = totals
    return {"steps": steps, "returns": returns}


def snr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(mean of x - y, that over the pooled std of x and y, that over the std of the paired differences)."""
    diff = float(np.mean(x - y))
    pooled = float(np.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)) if len(x) > 1 else 0.0
    paired = float(np.std(x - y, ddof=1)) if len(x) > 1 else 0.0
    return diff, diff / pooled if pooled > 0 else float("nan"), diff / paired if paired > 0 else float("nan")


def summarise(runs: list[dict], names: list[str], steps: int) -> list[dict]:
    rows = []
    for name in names:
        reward = make_reward(name)
        measured = [t for t in range(steps) if (t + 1) % reward.measure_every == 0]  # steps the reward is read on
        per_step = {side: np.array([run["steps"][side][t][name] for run in runs for t in measured]) for side in "ab"}
        returns = {side: np.array([run["returns"][side][name] for run in runs]) for side in "ab"}
        step_diff, step_snr, paired_snr = snr(per_step["a"], per_step["b"]) if measured else (float("nan"),) * 3
        return_diff, return_snr, _ = snr(returns["a"], returns["b"])
        rows.append({"reward": name, "labels": reward.uses_labels, "n": len(per_step["a"]), "step_diff": step_diff,
                     "step_snr": step_snr, "paired_snr": paired_snr, "return_diff": return_diff,
                     "return_snr": return_snr})
    return rows


def format_table(title: str, rows: list[dict], seeds: int, steps: int) -> str:
    lines = [f"### {title} (A - B; {seeds} seeds x {steps} steps)", "",
             "| reward | labels | n | step diff | step SNR | paired SNR | return diff | return SNR |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['reward']} | {'yes' if r['labels'] else ''} | {r['n']} | {r['step_diff']:+.3g} | "
                     f"{r['step_snr']:+.2f} | {r['paired_snr']:+.2f} | {r['return_diff']:+.3g} | {r['return_snr']:+.2f} |")
    return "\n".join(lines)


@usage_errors
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="episode length (updates per episode)")
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS)
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY:VALUE", help="EnvConfig overrides, e.g. batch_size:32")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=Path("results/reward_snr.md"))
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    if not tasks or set(tasks) - set(TASKS):
        raise UsageError(f"--tasks takes a comma-separated subset of {', '.join(TASKS)}, got {args.tasks!r}")
    if args.seeds < 2 or args.steps < 1:
        raise UsageError("--seeds must be >= 2 (a standard deviation across episodes) and --steps >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        overrides = parse_key_values(args.env_kwargs, "--env-kwargs")
        base = EnvConfig.preset(args.preset, **overrides).replace(episode_length=args.steps,
                                                                  track_rewards=available_rewards())
        base.validate()
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc

    tables, report = [], {"config": base.to_dict(), "seeds": args.seeds, "tasks": {}}
    for task in tasks:
        title, dataset_kwargs, a, b = TASKS[task]
        env = CorruptionEnv(base.replace(dataset_kwargs={**base.dataset_kwargs, **dataset_kwargs}))
        runs = []
        for seed in range(args.seeds):
            start = time.time()
            runs.append(run_seed(env, a, b, seed))
            print(f"{task} seed {seed}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
        names = sorted(runs[0]["returns"]["a"])
        rows = summarise(runs, names, args.steps)
        tables.append(format_table(f"{title}: A = {a}, B = {b}", rows, args.seeds, args.steps))
        report["tasks"][task] = {"a": a, "b": b, "rows": rows, "runs": runs}
    header = (f"precision {env.precision}, batch {base.batch_size}, "
              f"{base.decorruptor}, {base.encoder}")
    text = header + "\n\n" + "\n\n".join(tables) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    atomic_write_json(args.out.with_suffix(".json"), report)
    print(text)
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=UserWarning)
    raise SystemExit(main())
