"""Does a learner learn a reward that is right by construction? An agent trains on ``planted_dropped`` (the
fraction of a planted row's cells its mask drops; 12 of 16 cells kept, so the answer drops exactly them and a
policy blind to them drops 1/4) in each action mode, over several seeds, on the tiny config the tests use.
It passes a seed when its mean reward over 40 steps after training exceeds ``--pass-at`` (the test's bar).

    python studies/planted_learning.py --algo reinforce --modes shared_scores,scores,cells --seeds 5
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python studies/planted_learning.py ...

Kernel variables choose other instruction sets (``tests/record_step_golden.py``): a learner that passes only
under one CPU's rounding is not a reliable learner. Prints one row per (mode, seed) and a pass count per mode.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from agents import make_agent
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.cli_options import parse_key_values

# the tests' tiny config (tests/test_agents.py) with a 4-cell planted row in every image
TINY = dict(image_size=16, scale=2, batch_size=4, mask_grid=4, episode_length=50, decorruptor="bicubic",
            dataset_kwargs={"train_size": 256, "test_size": 64, "shortcut": "fixed", "shortcut_bits": 4},
            heldout_size=16, reward="planted_dropped", keep_budget=0.75)


def mean_reward(agent, env: CorruptionEnv, steps: int = 40, seed: int = 123) -> float:
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(steps):
        obs, reward, *_ = env.step(agent.predict(obs)[0])
        total += reward
    return total / steps


def planted_run(algo: str, mode: str, seed: int, steps: int, options: dict | None = None,
                config: dict | None = None) -> dict:
    """Train ``algo`` on the planted reward in ``mode``; its mean reward before and after."""
    env = CorruptionEnv(EnvConfig(**{**TINY, **(config or {})}, action_mode=mode))
    before = mean_reward(make_agent(algo, env, seed=seed, **(options or {})), env)
    start = time.process_time()
    agent = make_agent(algo, env, seed=seed, **(options or {})).learn(steps)
    return {"mode": mode, "seed": seed, "before": before, "after": mean_reward(agent, env),
            "cpu_seconds": time.process_time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="reinforce")
    parser.add_argument("--modes", default="shared_scores,scores,cells")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1024, help="training steps per run")
    parser.add_argument("--pass-at", type=float, default=0.75, help="mean planted fraction dropped that passes")
    parser.add_argument("--hyperparams", nargs="*", default=[], metavar="KEY:VALUE", help="agent options")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = parse_key_values(args.hyperparams, "--hyperparams")
    kernels = {k: v for k, v in os.environ.items() if k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                            "MKL_ENABLE_INSTRUCTIONS")}
    print(f"{args.algo} {options or ''} on planted_dropped, {args.steps} steps; kernels: "
          f"{kernels or 'the CPU best'} ({torch.backends.cpu.get_cpu_capability()})")
    rows = []
    for mode in args.modes.split(","):
        for seed in range(args.seeds):
            row = planted_run(args.algo, mode, seed, args.steps, options)
            rows.append(row)
            print(f"{mode:>14} seed {seed}: {row['before']:.3f} -> {row['after']:.3f} "
                  f"({'pass' if row['after'] > args.pass_at else 'FAIL'}; {row['cpu_seconds']:.0f} CPU s)", flush=True)
    for mode in args.modes.split(","):
        after = [r["after"] for r in rows if r["mode"] == mode]
        print(f"{mode:>14}: {sum(a > args.pass_at for a in after)}/{len(after)} pass; after "
              f"{np.mean(after):.3f} (min {min(after):.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"algo": args.algo, "options": options, "kernels": kernels, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
