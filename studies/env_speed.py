"""How fast is an environment step, what made it faster, and how much does the environment add?

Times, interleaved in rounds on the same config so that machine drift hits every variant alike,

  (a)  core: CAM-Net's batched 2B forward + one SimCLR update, called directly
  (a') core + the view augmentation (kornia), called directly
  (b)  env.step with the default reward (ma_neg_loss_derivative)
  (b') env.step with heldout_gain (its held-out measurement amortised over its interval)

for each *path*, each adding one lever to the path before it, the last being the new path:

  old                    fp32 CAM-Net, and the SimCLR encoder as it was (ReLU before each max-pool)
  +int8 CAM-Net          ``EnvConfig.camnet_quantize``
  +ReLU after max-pool   today's ``small_cnn`` (the same numbers, exactly)

in fp32, and in bf16 too where the CPU has native bf16 (elsewhere bf16 is emulated and about 9x slower, so
it is timed only when ``--precisions`` asks). It prints the ratios (b)/(a), (b)/(a'), (b')/(a), the env's
per-stage times and steps/s of each variant, each lever's share of the step and new/old, the peak RSS of
a process running the new path, and the total steps/s of ``gym.make_vec`` async workers that split the
CPU's cores between them: one env on all cores against one env per core.

    python studies/env_speed.py                  # the CPU preset, about 8 minutes (fp32 only) on 2 cores
    python studies/env_speed.py --threads 1 --precisions fp32 --vector-cores 2
    python studies/env_speed.py --preset gpu --device cuda --precisions bf16
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
import torch.nn as nn

import corruption_env
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.files import atomic_write_json
from corruption_env.precision import cpu_bf16_flags, resolve_precision

PATHS = {  # name: (EnvConfig overrides, SimCLR encoder with ReLU before each max-pool as it used to be)
    "old": ({"camnet_quantize": False}, True),
    "+int8 CAM-Net": ({"camnet_quantize": True}, True),
    "+ReLU after max-pool": ({"camnet_quantize": True}, False),
}
NEW = list(PATHS)[-1]
PRECISION_SET = ("fp32", "bf16")


def _relu_before_pool(env: CorruptionEnv) -> None:
    """Give ``env``'s learner the encoder layer order it used to have (ReLU, then max-pool), at every reset."""
    learner, reset = env.learner, env.learner.reset

    def old_order(seed: int) -> None:
        reset(seed)
        layers = list(learner.encoder)
        for i in [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]:
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
        learner.encoder = nn.Sequential(*layers)  # the same modules and parameters: the optimizer still fits

    learner.reset = old_order


def _make_env(cfg: EnvConfig, path: str) -> CorruptionEnv:
    overrides, relu_first = PATHS[path]
    env = CorruptionEnv(cfg.replace(**overrides))
    if relu_first:
        _relu_before_pool(env)
    env.reset(seed=0)
    return env


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


def _vector_steps_per_s(cfg: EnvConfig, workers: int, steps: int, threads: int) -> float:
    import gymnasium as gym

    # spawned, not forked, workers: a forked worker is held to one thread (see corruption_env.threads)
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


def _auto_precisions(device: str) -> tuple[list[str], str | None]:
    """fp32, and bf16 where it is native; with the line that says why bf16 is left out (None when it is not)."""
    if resolve_precision("auto", device) == "bf16":
        return ["fp32", "bf16"], None
    if torch.device(device).type != "cpu":
        return ["fp32"], f"bf16 not timed: {device} does not support it"
    capability = torch.backends.cpu.get_cpu_capability()
    return ["fp32"], ("bf16 not timed: this CPU has no native bf16 (no amx_bf16 or avx512_bf16 in /proc/cpuinfo, or "
                      f"torch held below AVX512: capability {capability}), so bf16 would be emulated, about 9x slower "
                      "than fp32; --precisions fp32,bf16 times it anyway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS)
    parser.add_argument("--device", default=None, help="torch device (default: the preset's)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of (a), (a'), (b), (b') per variant")
    parser.add_argument("--steps", type=int, default=10, help="steps per measurement in a round")
    parser.add_argument("--precisions", default="auto",
                        help="auto (fp32, and bf16 where it is native) or a comma-separated subset of fp32,bf16")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"paths to time, in order (of: {', '.join(PATHS)})")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--vector-cores", type=int, default=min(2, os.cpu_count() or 1),
                        help="cores the make_vec layouts split between their workers: one worker with all of them "
                             "against one worker per core (default: 2, what the CPU preset is sized for; 0 skips it)")
    parser.add_argument("--out", type=Path, default=Path("results/env_speed.json"), help="where the JSON report goes")
    args = parser.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - set(PATHS):
        parser.error(f"--paths takes a comma-separated subset of: {', '.join(PATHS)}")
    precisions = [p for p in args.precisions.split(",") if p]
    if args.precisions != "auto" and (not precisions or set(precisions) - set(PRECISION_SET)):
        parser.error(f"--precisions takes auto or a comma-separated subset of {', '.join(PRECISION_SET)}")
    torch.set_num_threads(args.threads)
    overrides = {"record_timings": True, "episode_length": 10_000}
    if args.device:
        overrides["device"] = args.device
    cfg = EnvConfig.preset(args.preset, **overrides)
    if torch.device(cfg.device).type != "cpu":
        paths = [p for p in paths if not PATHS[p][0].get("camnet_quantize")] or ["old"]  # int8 CAM-Net is CPU only
    if args.precisions == "auto":
        precisions, why_not_bf16 = _auto_precisions(cfg.device)
        if why_not_bf16:
            print(why_not_bf16)
    variants = [(path, p) for p in precisions for path in paths]
    envs = {v: _make_env(cfg.replace(precision=v[1]), v[0]) for v in variants}
    heldout_envs = {v: _make_env(cfg.replace(reward="heldout_gain", precision=v[1]), v[0]) for v in variants}
    every = next(iter(heldout_envs.values())).reward_fn.measure_every
    heldout_steps = max(args.steps, every)  # cover at least one measurement per round

    kinds = ("core", "core_aug", "env", "env_heldout")
    times = {v: {k: [] for k in kinds} for v in variants}
    stages: dict[tuple[str, str], dict[str, list[float]]] = {v: {} for v in variants}
    for v in variants:  # warm-up
        _time_core(envs[v], 2, True)
        _time_env(envs[v], 2, {})
    for r in range(args.rounds):
        for v in variants:
            times[v]["core"].append(_time_core(envs[v], args.steps, augment=False))
            times[v]["core_aug"].append(_time_core(envs[v], args.steps, augment=True))
            times[v]["env"].append(_time_env(envs[v], args.steps, stages[v]))
            times[v]["env_heldout"].append(_time_env(heldout_envs[v], heldout_steps, {}))
            print(f"round {r + 1}/{args.rounds} {v[1]} {v[0]}: " +
                  ", ".join(f"{k} {t[-1] * 1e3:.0f} ms" for k, t in times[v].items()), file=sys.stderr)
    report: dict = {"config": cfg.to_dict(), "threads": args.threads, "device": str(cfg.device),
                    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "cpu_bf16_flags": list(cpu_bf16_flags()), "paths": {path: {} for path in paths}}
    for path, p in variants:
        med = {k: float(np.median(t)) for k, t in times[(path, p)].items()}
        report["paths"][path][p] = {
            "ms_per_step": {k: round(t * 1e3, 1) for k, t in med.items()},
            "ratio_env_over_core": round(med["env"] / med["core"], 3),
            "ratio_env_over_core_aug": round(med["env"] / med["core_aug"], 3),
            "ratio_env_heldout_over_core": round(med["env_heldout"] / med["core"], 3),
            "stage_ms": {k: round(float(np.median(t)) * 1e3, 2) for k, t in stages[(path, p)].items()},
            "steps_per_s": round(1 / med["env"], 2),
        }
    del envs, heldout_envs
    new_cfg = cfg.replace(**PATHS[paths[-1]][0])
    report["peak_rss_mb"] = round(_peak_rss_mb(new_cfg.replace(record_timings=False), 5), 0)
    report["vector_steps_per_s"] = {}
    if args.vector_cores and torch.device(cfg.device).type == "cpu":
        for workers in sorted({1, args.vector_cores}):
            layout = f"{workers} worker(s) x {args.vector_cores // workers} thread(s)"
            report["vector_steps_per_s"][layout] = round(
                _vector_steps_per_s(new_cfg, workers, args.steps, args.vector_cores // workers), 2)
    atomic_write_json(args.out, report)

    print(f"config: preset {args.preset}, batch {cfg.batch_size}, {cfg.task} x{cfg.scale}, {cfg.encoder}, "
          f"{args.threads} thread(s), device {cfg.device}, CPU capability {report['cpu_capability']}; "
          f"medians of {args.rounds} interleaved rounds")
    names = {"core": "(a) CAM-Net 2B forward + SimCLR update", "core_aug": "(a') (a) + view augmentation",
             "env": "(b) env.step, default reward", "env_heldout": f"(b') env.step, heldout_gain (every {every})"}
    print("| measurement | " + " | ".join(f"{p} {path} ms/step" for path, p in variants) + " |")
    print("|---|" + "---|" * len(variants))
    for k, label in names.items():
        row = [str(report["paths"][path][p]["ms_per_step"][k]) for path, p in variants]
        print(f"| {label} | " + " | ".join(row) + " |")
    for path, p in variants:
        rp = report["paths"][path][p]
        print(f"\n{p} {path}: ratio (b)/(a) = {rp['ratio_env_over_core']}   "
              f"(b)/(a') = {rp['ratio_env_over_core_aug']}   (b')/(a) = {rp['ratio_env_heldout_over_core']}   "
              "target (b)/(a') <= 1.10")
        print(f"{p} {path}: env stages (ms): " + ", ".join(f"{k} {t}" for k, t in rp["stage_ms"].items()) +
              f"   steps/s: {rp['steps_per_s']}")
    report["new_over_old"] = {}
    for p in precisions:
        step = {path: report["paths"][path][p]["ms_per_step"]["env"] for path in paths}
        old, shares, before = step[paths[0]], [], step[paths[0]]
        for path in paths[1:]:
            shares.append(f"{path} {step[path]} ms ({step[path] - before:+.0f} ms, {(step[path] - before) / old:+.0%})")
            before = step[path]
        report["new_over_old"][p] = round(step[paths[-1]] / old, 3)
        print(f"\n{p} env.step (b), each lever in turn: {paths[0]} {old} ms" + "".join(f" | {s}" for s in shares) +
              f"\n{p}: new/old step ratio = {report['new_over_old'][p]} (target: <= 0.5 in fp32 on an "
              f"AVX2-only CPU; this one: capability {report['cpu_capability']}, {args.threads} thread(s))")
    if {"fp32", "bf16"} <= set(precisions):
        step = {p: report["paths"][paths[0]][p]["ms_per_step"]["env"] for p in ("fp32", "bf16")}
        report["bf16_over_fp32_step_ratio"] = round(step["bf16"] / step["fp32"], 3)
        print(f"precision ({paths[0]}): bf16/fp32 step ratio={report['bf16_over_fp32_step_ratio']} "
              "(target <= 0.5 on a CPU with AMX-BF16)")
    print(f"peak RSS of a process running the {paths[-1]!r} path: {report['peak_rss_mb']:.0f} MB (target < 2048)")
    if report["vector_steps_per_s"]:
        print(f"make_vec async ({paths[-1]!r} path, auto precision), total steps/s: " +
              ", ".join(f"{layout}: {s}" for layout, s in report["vector_steps_per_s"].items()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")
    raise SystemExit(main())
