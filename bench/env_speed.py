"""How much does the environment add on top of the work it must do?

Measures, interleaved in rounds on the same config so that machine drift hits both alike:

  (a)  core: CAM-Net's batched 2B forward + one SimCLR update, called directly
  (a') core + the view augmentation (kornia), called directly
  (b)  env.step with the default reward (ma_neg_loss_derivative)
  (b') env.step with heldout_gain (its held-out measurement amortised over its interval)

for fp32 and bf16 autocast side by side (each round times both), and prints the ratios (b)/(a),
(b)/(a'), (b')/(a), the env's per-stage times, steps/s, the bf16/fp32 step ratio, the peak RSS of a
process running the default env, and how total steps/s scale with ``gym.make_vec`` async workers
(torch threads split between them).

    python bench/env_speed.py                 # the CPU preset, both precisions, about 5 minutes on 2 cores
    python bench/env_speed.py --preset gpu --device cuda
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import corruption_env
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.files import atomic_write_json
from corruption_env.precision import describe_precision


def _time_core(env: CorruptionEnv, rounds_steps: int, augment: bool) -> float:
    """Seconds per iteration of the core work on the env's own batch, masks and generator."""
    gen = torch.Generator().manual_seed(0)
    batch = env._batch
    mask = torch.bernoulli(torch.full((batch.shape[0], env.config.mask_grid, env.config.mask_grid), 0.75),
                           generator=gen).to(env.device)
    start = time.perf_counter()
    for _ in range(rounds_steps):
        v1, v2, _ = env.views.restore(batch, mask, gen)
        if augment:
            v1, v2 = env.views.augment_pair(v1, v2, gen)
        env.learner.update(v1, v2)
    return (time.perf_counter() - start) / rounds_steps


def _time_env(env: CorruptionEnv, steps: int, stages: dict[str, list[float]]) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        action = (rng.random(env.action_space.n) < 0.75).astype(np.int8)
        _, _, _, truncated, info = env.step(action)
        for k, v in info["seconds"].items():
            stages.setdefault(k, []).append(v)
        if truncated:
            env.reset()
    return (time.perf_counter() - start) / steps


def _peak_rss_mb(cfg: EnvConfig, steps: int) -> float:
    """Peak resident memory of a fresh process that builds the env and takes ``steps`` steps."""
    code = (
        "import resource, numpy as np, corruption_env\n"
        f"env = corruption_env.CorruptionEnv(corruption_env.EnvConfig.from_json({cfg.to_json()!r}))\n"
        "env.reset(seed=0)\n"
        f"for _ in range({steps}): env.step(np.ones(env.action_space.n))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _vector_steps_per_s(cfg: EnvConfig, workers: int, steps: int, threads_total: int) -> float:
    import gymnasium as gym

    threads = max(1, threads_total // workers)
    # spawned, not forked, workers: a forked worker is held to one thread (see corruption_env.env)
    envs = gym.make_vec(f"corruption_env:{corruption_env.ENV_ID}", num_envs=workers, vectorization_mode="async",
                        vector_kwargs={"context": "spawn"}, **(cfg.to_dict() | {"num_threads": threads}))
    envs.reset(seed=list(range(workers)))
    envs.step(envs.action_space.sample())  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return workers * steps / elapsed


PRECISION_SET = ("fp32", "bf16")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS)
    parser.add_argument("--device", default=None, help="torch device (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (a), (a'), (b), (b') per precision")
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement in a round")
    parser.add_argument("--precisions", default="fp32,bf16", help="precisions to time side by side (fp32, bf16)")
    parser.add_argument("--workers", default="1,2", help="make_vec worker counts to time (at the auto precision)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("results/env_speed.json"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    precisions = [p for p in args.precisions.split(",") if p]
    if not precisions or set(precisions) - set(PRECISION_SET):
        parser.error(f"--precisions takes a comma-separated subset of {', '.join(PRECISION_SET)}")
    torch.set_num_threads(args.threads)
    overrides = {"record_timings": True, "episode_length": 10_000}
    if args.device:
        overrides["device"] = args.device
    cfg = EnvConfig.preset(args.preset, **overrides)
    print(describe_precision(cfg.precision, cfg.device), file=sys.stderr)
    envs = {p: CorruptionEnv(cfg.replace(precision=p)) for p in precisions}
    heldout_envs = {p: CorruptionEnv(cfg.replace(reward="heldout_gain", precision=p)) for p in precisions}
    for env in (*envs.values(), *heldout_envs.values()):
        env.reset(seed=0)
    every = next(iter(heldout_envs.values())).reward_fn.measure_every
    heldout_steps = max(args.steps, every)  # cover at least one measurement per round

    kinds = ("core", "core_aug", "env", "env_heldout")
    times = {p: {k: [] for k in kinds} for p in precisions}
    stages: dict[str, dict[str, list[float]]] = {p: {} for p in precisions}
    for p in precisions:  # warm-up
        _time_core(envs[p], 2, True)
        _time_env(envs[p], 2, {})
    for r in range(args.rounds):
        for p in precisions:
            times[p]["core"].append(_time_core(envs[p], args.steps, augment=False))
            times[p]["core_aug"].append(_time_core(envs[p], args.steps, augment=True))
            times[p]["env"].append(_time_env(envs[p], args.steps, stages[p]))
            times[p]["env_heldout"].append(_time_env(heldout_envs[p], heldout_steps, {}))
            print(f"round {r + 1}/{args.rounds} {p}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times[p].items()),
                  file=sys.stderr)
    report: dict = {"config": cfg.to_dict(), "threads": args.threads, "device": str(cfg.device), "precision": {}}
    for p in precisions:
        med = {k: float(np.median(v)) for k, v in times[p].items()}
        report["precision"][p] = {
            "ms_per_step": {k: round(v * 1e3, 1) for k, v in med.items()},
            "ratio_env_over_core": round(med["env"] / med["core"], 3),
            "ratio_env_over_core_aug": round(med["env"] / med["core_aug"], 3),
            "ratio_env_heldout_over_core": round(med["env_heldout"] / med["core"], 3),
            "stage_ms": {k: round(float(np.median(v)) * 1e3, 2) for k, v in stages[p].items()},
            "steps_per_s": round(1 / med["env"], 2),
        }
    if {"fp32", "bf16"} <= set(precisions):
        report["bf16_over_fp32_step_ratio"] = round(report["precision"]["bf16"]["ms_per_step"]["env"]
                                                    / report["precision"]["fp32"]["ms_per_step"]["env"], 3)
    del envs, heldout_envs
    report["peak_rss_mb"] = round(_peak_rss_mb(cfg.replace(record_timings=False), 5), 0)
    report["vector_steps_per_s"] = {}
    for workers in [int(w) for w in args.workers.split(",") if w]:
        report["vector_steps_per_s"][workers] = round(_vector_steps_per_s(cfg, workers, args.steps, args.threads), 2)
    atomic_write_json(args.out, report)

    print(f"config: preset {args.preset}, batch {cfg.batch_size}, {cfg.task} x{cfg.scale}, {cfg.encoder}, "
          f"{args.threads} threads, device {cfg.device}; medians of {args.rounds} interleaved rounds")
    names = {"core": "(a) CAM-Net 2B forward + SimCLR update", "core_aug": "(a') (a) + view augmentation",
             "env": "(b) env.step, default reward", "env_heldout": f"(b') env.step, heldout_gain (every {every})"}
    print("| measurement | " + " | ".join(f"{p} ms/step" for p in precisions) + " |")
    print("|---|" + "---|" * len(precisions))
    for k, label in names.items():
        print(f"| {label} | " + " | ".join(str(report["precision"][p]["ms_per_step"][k]) for p in precisions) + " |")
    for p in precisions:
        rp = report["precision"][p]
        print(f"\n{p}: ratio (b)/(a) = {rp['ratio_env_over_core']}   (b)/(a') = {rp['ratio_env_over_core_aug']}   "
              f"(b')/(a) = {rp['ratio_env_heldout_over_core']}   target (b)/(a') <= 1.10")
        print(f"{p}: env stages (ms): " + ", ".join(f"{k} {v}" for k, v in rp["stage_ms"].items()) +
              f"   steps/s: {rp['steps_per_s']}")
    if "bf16_over_fp32_step_ratio" in report:
        print(f"\nprecision: bf16/fp32 step ratio={report['bf16_over_fp32_step_ratio']} (target <= 0.5 on a CPU with AMX-BF16)")
    print(f"peak RSS of a default env process: {report['peak_rss_mb']:.0f} MB (target < 2048)")
    print("make_vec async (auto precision), total steps/s by workers: " +
          ", ".join(f"{w}: {s}" for w, s in report["vector_steps_per_s"].items()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    raise SystemExit(main())
