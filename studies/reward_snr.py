"""Which reward definitions can teach, and where? Their signal-to-noise between two fixed corruptors,
measured along the trajectories agents actually follow.

A reward can teach a corruptor only if the difference it pays between two corruptors stands out of
its noise, *at the encoder states the agent is in*. On a known-answer task that is not one number: an
encoder trained with random masks relies on a planted shortcut (dropping it makes views harder),
an encoder trained with the oracle's masks never learned it (dropping it makes views easier). So
every comparison A vs B is measured along two trajectories, episodes whose real steps use B's masks
(``random``: where every agent starts) and A's masks (``oracle``: where an agent that found the
answer is). At every state the environment is snapshotted (``CorruptionEnv.snapshot``: learner and
optimizer, latent-code and batch streams, reward states), stepped with the other corruptor's mask
to record what it would have been paid, restored, and stepped for real. So both corruptors see the
same encoder, batch, latent codes and augmentations; only the mask differs.

Comparisons (``--tasks``):

  shapes            plain shapes, free keep: A keep_all vs B random masks keeping each cell with p = 0.5
  shortcut_fixed    barcode shortcut in the bottom row of cells, keep budget 0.75: A oracle (drops the
                    barcode's cells) vs B random masks at the same budget
  shortcut_random   the same with the barcode's row (top or bottom) drawn per image
  distractor_fixed  a planted distractor in the bottom row (see ``corruption_env.known_answer.Distractor``),
                    budget 0.75: A oracle (drops it) vs B random at the budget
  distractor_random the same, row drawn per image

Per reward, per trajectory: the mean of r_A - r_B over steps and seeds; that over the pooled standard
deviation sqrt((var r_A + var r_B) / 2) ("step SNR"); and over the standard deviation of the paired
differences ("paired SNR": what an agent comparing masks on one state could use). Periodic rewards are
read only on the steps where they are measured (column n). "Return SNR": episodes with A and with B
from the same seeds, mean return difference over the pooled standard deviation of returns. Positive
numbers favour A. **Mixed batches** (``--mixed``): at each state of the random trajectory, a fraction
p of the batch's images takes A's mask and the rest B's; the table gives the batch loss's change
against all-B and its paired SNR per p (the collective effect of per-image masks). The **sign line**
of each task is ``neg_loss``'s paired comparison, i.e. whether A makes the views harder (loss up,
positive) or easier than B along each trajectory: the known-answer suite's two kinds differ there.

    python studies/reward_snr.py                                  # every task, 3 seeds x 40 steps, ~1.5 h on 2 cores
    python studies/reward_snr.py --tasks shortcut_fixed --seeds 2 --steps 30 --rewards neg_loss,loss_rise,rankme_advantage
    python studies/reward_snr.py --env-kwargs batch_size:32 precision:fp32

The Markdown tables go to stdout and to ``--out``; the raw per-step rewards to the same name with .json.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.cli_options import ArgumentParser, UsageError, parse_key_values, usage_errors
from corruption_env.files import atomic_write_json, atomic_write_text
from corruption_env.rewards import available_rewards, make_reward

Corruptor = Callable[[CorruptionEnv, np.random.Generator], np.ndarray]


def _random(env: CorruptionEnv, rng: np.random.Generator) -> np.ndarray:
    """Random masks: each cell kept with p = 0.5 without a budget, a uniformly random k-subset with one."""
    b, g = env.config.batch_size, env.config.mask_grid
    if env.keep_cells is None:
        return (rng.random((b, g, g)) < 0.5).astype(np.int8)
    order = rng.random((b, g * g)).argsort(axis=1)
    mask = np.zeros((b, g * g), dtype=np.int8)
    np.put_along_axis(mask, order[:, :env.keep_cells], 1, axis=1)
    return mask.reshape(b, g, g)


CORRUPTORS: dict[str, Corruptor] = {  # (B, g, g) masks for the env's next batch
    "keep_all": lambda env, rng: np.ones((env.config.batch_size, env.config.mask_grid, env.config.mask_grid), np.int8),
    "random": _random,
    "oracle": lambda env, rng: (~env.planted_cells).astype(np.int8),
}
BUDGET = 0.75  # the oracle's keep fraction on every known-answer task (one row of four dropped)
TASKS: dict[str, tuple[str, dict[str, Any], str, str]] = {  # name: (description, EnvConfig overrides, A, B)
    "shapes": ("plain shapes, free keep: keep_all vs random (p = 0.5)", {}, "keep_all", "random"),
    "shortcut_fixed": ("shortcut (barcode), fixed row, budget 0.75: oracle vs random at the budget",
                       {"dataset_kwargs": {"shortcut": "fixed"}, "keep_budget": BUDGET}, "oracle", "random"),
    "shortcut_random": ("shortcut (barcode), row per image, budget 0.75: oracle vs random at the budget",
                        {"dataset_kwargs": {"shortcut": "random"}, "keep_budget": BUDGET}, "oracle", "random"),
    "distractor_fixed": ("distractor, fixed row, budget 0.75: oracle vs random at the budget",
                         {"dataset_kwargs": {"distractor": "fixed"}, "keep_budget": BUDGET}, "oracle", "random"),
    "distractor_random": ("distractor, row per image, budget 0.75: oracle vs random at the budget",
                          {"dataset_kwargs": {"distractor": "random"}, "keep_budget": BUDGET}, "oracle", "random"),
}
TRAJECTORIES = {"random": "b", "oracle": "a"}  # the trajectory named after B's or A's masks (shapes: random / keep_all)


def mixed_mask(a: np.ndarray, b: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """A batch whose first round(p * B) images (in a random order) take A's mask, the rest B's."""
    take = rng.permutation(a.shape[0])[:round(p * a.shape[0])]
    out = b.copy()
    out[take] = a[take]
    return out


def run_trajectory(env: CorruptionEnv, a: str, b: str, real: str, seed: int, mixed: list[float]) -> dict[str, Any]:
    """One episode from ``seed`` whose real steps use corruptor ``real`` ("a" or "b"); at every state the
    other corruptor (and, on B's trajectory, the mixed batches) is stepped counterfactually."""
    rng = np.random.default_rng([seed, 0 if real == "b" else 1])
    steps: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
    mixed_losses: dict[float, list[float]] = {p: [] for p in mixed} if real == "b" else {}
    env.reset(seed=seed)
    truncated = False
    while not truncated:
        masks = {"a": CORRUPTORS[a](env, rng), "b": CORRUPTORS[b](env, rng)}
        state = env.snapshot()
        other = "a" if real == "b" else "b"
        steps[other].append(env.step(masks[other])[4]["reward_terms"])
        for p in mixed_losses:
            env.restore(state)
            mixed_losses[p].append(env.step(mixed_mask(masks["a"], masks["b"], p, rng))[4]["loss"])
        env.restore(state)
        *_, truncated, info = env.step(masks[real])
        steps[real].append(info["reward_terms"])
    return {"steps": steps, "mixed": {str(p): v for p, v in mixed_losses.items()},
            "return": {k: sum(s[k] for s in steps[real]) for k in steps[real][0]}}


def snr(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(mean of x - y, that over the pooled std of x and y, that over the std of the paired differences)."""
    diff = float(np.mean(x - y))
    pooled = float(np.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)) if len(x) > 1 else 0.0
    paired = float(np.std(x - y, ddof=1)) if len(x) > 1 else 0.0
    return diff, diff / pooled if pooled > 0 else float("nan"), diff / paired if paired > 0 else float("nan")


def summarise(runs: dict[str, list[dict]], names: list[str], steps: int) -> list[dict]:
    """One row per reward: per-trajectory step statistics, and the return SNR of the two trajectories."""
    rows = []
    for name in names:
        reward = make_reward(name)
        measured = [t for t in range(steps) if (t + 1) % reward.measure_every == 0]  # steps the reward is read on
        row: dict[str, Any] = {"reward": name, "labels": reward.uses_labels, "n": len(measured) * len(runs["random"])}
        for trajectory, trajectory_runs in runs.items():
            per_step = {side: np.array([run["steps"][side][t][name] for run in trajectory_runs for t in measured])
                        for side in "ab"}
            diff, step_snr, paired_snr = snr(per_step["a"], per_step["b"]) if measured else (float("nan"),) * 3
            row[trajectory] = {"step_diff": diff, "step_snr": step_snr, "paired_snr": paired_snr}
        returns = {side: np.array([run["return"][name] for run in runs[t]]) for t, side in
                   (("random", "b"), ("oracle", "a"))}
        row["return_diff"], row["return_snr"], _ = snr(returns["a"], returns["b"])
        rows.append(row)
    return rows


def format_task(title: str, rows: list[dict], runs: dict[str, list[dict]], seeds: int, steps: int,
                trajectory_names: dict[str, str]) -> str:
    t_b, t_a = trajectory_names["random"], trajectory_names["oracle"]
    lines = [f"### {title} (A - B; {seeds} seeds x {steps} steps)", ""]
    loss = next((r for r in rows if r["reward"] == "neg_loss"), None)
    if loss is not None:  # the sign line: does A make the views harder (loss up) or easier than B?
        signs = [f"along the {name} trajectory: loss {-loss[t]['step_diff']:+.3f} (paired SNR {-loss[t]['paired_snr']:+.2f}, "
                 f"A {'harder' if loss[t]['step_diff'] < 0 else 'easier'})" for t, name in (("random", t_b), ("oracle", t_a))]
        lines += ["sign (loss with A's masks minus B's, same states): " + "; ".join(signs), ""]
    lines += [f"| reward | labels | n | step diff ({t_b}) | step SNR ({t_b}) | paired SNR ({t_b}) | step diff ({t_a}) | "
              f"step SNR ({t_a}) | paired SNR ({t_a}) | return diff | return SNR |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = " | ".join(f"{r[t]['step_diff']:+.3g} | {r[t]['step_snr']:+.2f} | {r[t]['paired_snr']:+.2f}"
                           for t in ("random", "oracle"))
        lines.append(f"| {r['reward']} | {'yes' if r['labels'] else ''} | {r['n']} | {cells} | {r['return_diff']:+.3g} | "
                     f"{r['return_snr']:+.2f} |")
    mixed = runs["random"][0]["mixed"]
    if mixed:
        lines += ["", f"Mixed batches along the {t_b} trajectory: a fraction p of the images takes A's mask, the rest B's.",
                  "", "| p | batch loss - all-B loss | paired SNR |", "|---|---|---|"]
        for p in mixed:
            mixed_loss = np.array([v for run in runs["random"] for v in run["mixed"][p]])
            b_loss = np.array([-s["neg_loss"] for run in runs["random"] for s in run["steps"]["b"]])
            diff, _, paired = snr(mixed_loss, b_loss)
            lines.append(f"| {p} | {diff:+.4f} | {paired:+.2f} |")
    return "\n".join(lines)


@usage_errors
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="episode length (updates per episode)")
    parser.add_argument("--rewards", default=None,
                        help="comma-separated reward definitions to track (default: every registered one; neg_loss "
                             "is always tracked: the sign line and the mixed column read it)")
    parser.add_argument("--mixed", default="0.25,0.5,0.75,1.0",
                        help="fractions p for the mixed-batch column on the random trajectory ('' for none)")
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
    rewards = available_rewards() if args.rewards is None else [r for r in args.rewards.split(",") if r]
    unknown = sorted(set(rewards) - set(available_rewards()))
    if unknown:
        raise UsageError(f"--rewards: unknown reward(s) {', '.join(unknown)}; available: {', '.join(available_rewards())}")
    rewards = sorted(set(rewards) | {"neg_loss"})
    try:
        mixed = [float(p) for p in args.mixed.split(",") if p]
    except ValueError:
        raise UsageError(f"--mixed takes comma-separated fractions, got {args.mixed!r}") from None
    if any(not 0 < p <= 1 for p in mixed):
        raise UsageError(f"--mixed fractions must lie in (0, 1], got {args.mixed!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        overrides = parse_key_values(args.env_kwargs, "--env-kwargs")
        base = EnvConfig.preset(args.preset, **overrides).replace(episode_length=args.steps, track_rewards=rewards)
        base.validate()
        configs = {task: base.replace(**{k: ({**base.dataset_kwargs, **v} if k == "dataset_kwargs" else v)
                                         for k, v in TASKS[task][1].items()}).validate() for task in tasks}
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from exc

    tables, report = [], {"config": base.to_dict(), "seeds": args.seeds, "tasks": {}}
    for task in tasks:
        title, _, a, b = TASKS[task]
        env = CorruptionEnv(configs[task])
        names = {"random": "random" if b == "random" else b, "oracle": a}
        runs: dict[str, list[dict]] = {"random": [], "oracle": []}
        for seed in range(args.seeds):
            for trajectory, real in TRAJECTORIES.items():
                start = time.time()
                runs[trajectory].append(run_trajectory(env, a, b, real, seed, mixed if task != "shapes" else []))
                print(f"{task} seed {seed} {names[trajectory]} trajectory: {time.time() - start:.0f} s", file=sys.stderr,
                      flush=True)
        rows = summarise(runs, sorted(runs["random"][0]["return"]), args.steps)
        tables.append(format_task(f"{task}: {title}: A = {a}, B = {b}", rows, runs, args.seeds, args.steps, names))
        report["tasks"][task] = {"a": a, "b": b, "rows": rows, "runs": runs}
    header = (f"precision {env.precision}, batch {base.batch_size}, {base.decorruptor}, {base.encoder}; "
              f"`python studies/reward_snr.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip())
    text = header + "\n\n" + "\n\n".join(tables) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)
    atomic_write_json(args.out.with_suffix(".json"), report)
    print(text)
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore", category=UserWarning)
    raise SystemExit(main())
