"""How much does the environment add on top of the work it must do?

Measures, interleaved in rounds on the same config so that machine drift hits both alike:

  (a)  core: CAM-Net's batched 2B forward + one SimCLR update, called directly
  (a') core + the view augmentation (kornia), called directly
  (b)  env.step with the default reward (ma_neg_loss_derivative)
  (b') env.step with heldout_gain (its held-out measurement amortised over its interval)

and prints the ratios (b)/(a), (b)/(a'), (b')/(a), the env's per-stage times, steps/s, the peak RSS
of a process running the default env, and how total steps/s scale with ``gym.make_vec`` async
workers (torch threads split between them).

    python bench/env_speed.py                 # the CPU preset, about 5 minutes on 2 cores
    python bench/env_speed.py --preset gpu --device cuda
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import corruption_env
from corruption_env import CorruptionEnv, EnvConfig


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS)
    parser.add_argument("--device", default=None)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (a), (a'), (b), (b')")
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement in a round")
    parser.add_argument("--workers", default="1,2", help="make_vec worker counts to time")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("results/env_speed.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {"record_timings": True, "episode_length": 10_000}
    if args.device:
        overrides["device"] = args.device
    cfg = EnvConfig.preset(args.preset, **overrides)
    env = CorruptionEnv(cfg)
    heldout_env = CorruptionEnv(cfg.replace(reward="heldout_gain"))
    env.reset(seed=0)
    heldout_env.reset(seed=0)
    every = heldout_env.reward_fn.measure_every
    heldout_steps = max(args.steps, every)  # cover at least one measurement per round

    times: dict[str, list[float]] = {"core": [], "core_aug": [], "env": [], "env_heldout": []}
    stages: dict[str, list[float]] = {}
    _time_core(env, 2, True)  # warm-up
    _time_env(env, 2, {})
    for r in range(args.rounds):
        times["core"].append(_time_core(env, args.steps, augment=False))
        times["core_aug"].append(_time_core(env, args.steps, augment=True))
        times["env"].append(_time_env(env, args.steps, stages))
        times["env_heldout"].append(_time_env(heldout_env, heldout_steps, {}))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v[-1] * 1e3:.0f} ms" for k, v in times.items()),
              file=sys.stderr)
    med = {k: float(np.median(v)) for k, v in times.items()}
    report = {
        "config": cfg.to_dict(), "threads": args.threads, "device": str(env.device),
        "ms_per_step": {k: round(v * 1e3, 1) for k, v in med.items()},
        "ratio_env_over_core": round(med["env"] / med["core"], 3),
        "ratio_env_over_core_aug": round(med["env"] / med["core_aug"], 3),
        "ratio_env_heldout_over_core": round(med["env_heldout"] / med["core"], 3),
        "stage_ms": {k: round(float(np.median(v)) * 1e3, 2) for k, v in stages.items()},
        "steps_per_s": round(1 / med["env"], 2),
    }
    report["peak_rss_mb"] = round(_peak_rss_mb(cfg.replace(record_timings=False), 5), 0)
    report["vector_steps_per_s"] = {}
    for workers in [int(w) for w in args.workers.split(",") if w]:
        report["vector_steps_per_s"][workers] = round(_vector_steps_per_s(cfg, workers, args.steps, args.threads), 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"config: preset {args.preset}, batch {cfg.batch_size}, {cfg.task} x{cfg.scale}, {cfg.encoder}, "
          f"{args.threads} threads, device {env.device}; medians of {args.rounds} interleaved rounds")
    print("| measurement | ms/step |\n|---|---|")
    names = {"core": "(a) CAM-Net 2B forward + SimCLR update", "core_aug": "(a') (a) + view augmentation",
             "env": "(b) env.step, default reward", "env_heldout": f"(b') env.step, heldout_gain (every {every})"}
    for k, label in names.items():
        print(f"| {label} | {report['ms_per_step'][k]} |")
    print(f"\nratio (b)/(a) = {report['ratio_env_over_core']}   (b)/(a') = {report['ratio_env_over_core_aug']}   "
          f"(b')/(a) = {report['ratio_env_heldout_over_core']}   target (b)/(a) <= 1.10")
    print("env stages (ms): " + ", ".join(f"{k} {v}" for k, v in report["stage_ms"].items()))
    print(f"steps/s: {report['steps_per_s']}   peak RSS of a default env process: {report['peak_rss_mb']:.0f} MB "
          f"(target < 2048)")
    print("make_vec async, total steps/s by workers: " +
          ", ".join(f"{w}: {s}" for w, s in report["vector_steps_per_s"].items()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    raise SystemExit(main())
