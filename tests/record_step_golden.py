"""Golden step rollouts: a seeded rollout of every registered reward and every action mode (cheap config),
recorded in tests/data/step_golden.json, so that a change of ``CorruptionEnv.step`` that changes a number is
seen; and the tolerances they are compared at, measured as the spread of the same rollouts under other
kernel choices (tests/data/step_golden_tolerance.json).

Floats differ between CPUs: the same fp32 rollout runs other kernels (ATen's vectorised loops, oneDNN's
convolutions, MKL's matrix products) on another instruction set and rounds differently. On a 4-update
rollout the difference grows about tenfold per update (Adam's first steps divide small gradients by their
own size), so tolerances are per quantity *and per update*. ``--spread`` runs every rollout under each kernel
choice this CPU offers (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, alone and
together), takes the largest absolute difference per quantity and update between any two of them and the
recording, and writes ``MARGIN`` times it (plus ``RELATIVE_FLOOR`` of the value) as the tolerance.
Image batches, masks and keep fractions do not depend on float kernels and stay exact.

    python tests/record_step_golden.py            # re-record the rollouts (a deliberate change; say why)
    python tests/record_step_golden.py --spread   # re-measure the spread and write the tolerances
    python tests/record_step_golden.py --check    # compare with the recording (under any kernel variables)
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.env import LEARNER_FEATURES
from corruption_env.rewards import available_rewards
from kernels import TORCH_KERNEL_CHOICES as KERNEL_CHOICES, TORCH_KERNEL_VARIABLES as KERNEL_VARIABLES

GOLDEN = Path(__file__).with_name("data") / "step_golden.json"
TOLERANCE = Path(__file__).with_name("data") / "step_golden_tolerance.json"
STEPS = 4
BASE = dict(batch_size=8, episode_length=6, decorruptor="bicubic", heldout_size=64, precision="fp32",
            num_threads=1, dataset_kwargs={"shortcut": "fixed"})
PERIODIC_OPTIONS = {"heldout_gain": {"every": 2}, "probe_accuracy": {"every": 2}, "rankme_gain": {"every": 2}}
EXACT_FEATURES = ("progress", "last_keep_fraction")  # learner entries that are counts, not floats
MARGIN = 10.0  # tolerance = MARGIN x the largest difference measured between kernel choices ...
RELATIVE_FLOOR = 1e-5  # ... + this fraction of the value (about 100 float32 ulps: CPUs this spread never saw)
ABSOLUTE_FLOOR = 1e-6  # ... + this, for values that are 0 on every kernel choice
# counting statistics change by whole counts: a query of the held-out half (32 images) may flip on another CPU
ONE_COUNT = {"probe_accuracy": 1 / (BASE["heldout_size"] // 2)}

def cases() -> dict[str, dict]:
    """Every registered built-in reward under a keep budget (scores mode) and without one (cells mode), and
    every action mode with the default reward."""
    out = {}
    for name in available_rewards():
        for label, mode in (("budget", dict(action_mode="scores", keep_budget=0.75)), ("free", dict(action_mode="cells"))):
            out[f"{name}/{label}"] = dict(BASE, reward=name, reward_kwargs=PERIODIC_OPTIONS.get(name, {}),
                                          track_rewards=[], **mode)
    for mode in ("cells", "shared", "family", "scores", "shared_scores"):
        out[f"mode/{mode}"] = dict(BASE, action_mode=mode, track_rewards="free",
                                   keep_budget=None if mode == "family" else 0.5)
    return out


def rollout(config: dict) -> dict:
    env = CorruptionEnv(**config)
    obs, _ = env.reset(seed=3)
    env.action_space.seed(5)
    record = {"rewards": [], "losses": [], "terms": [], "learner": [obs["learner"].tolist()],
              "images": [hashlib.sha1(obs["images"].tobytes()).hexdigest()], "keep": []}
    for _ in range(STEPS):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        record["rewards"].append(float(reward))
        record["losses"].append(float(info["loss"]))
        record["terms"].append({k: float(v) for k, v in sorted(info["reward_terms"].items())})
        record["learner"].append(obs["learner"].tolist())
        record["images"].append(hashlib.sha1(obs["images"].tobytes()).hexdigest())
        record["keep"].append(float(info["keep_fraction"]))
    return record


def quantities(record: dict, config: dict) -> Iterator[tuple[str, int, float]]:
    """(quantity, update, value) of every float a rollout records. Quantities: ``loss``, each reward's name
    (the paid reward, and every term), and ``learner/<feature>``; update 0 is the observation at reset."""
    paid = config.get("reward", EnvConfig.reward)
    for t, (reward, loss, terms) in enumerate(zip(record["rewards"], record["losses"], record["terms"]), start=1):
        yield "loss", t, loss
        yield paid, t, reward
        yield from ((name, t, value) for name, value in terms.items())
    for t, learner in enumerate(record["learner"]):
        yield from ((f"learner/{name}", t, value) for name, value in zip(LEARNER_FEATURES, learner))


def exact_parts(record: dict) -> dict[str, Any]:
    """What does not depend on float kernels: image batches, keep fractions, counters, term names."""
    return {"images": record["images"], "keep": record["keep"], "terms": [sorted(t) for t in record["terms"]],
            "counters": [[x for name, x in zip(LEARNER_FEATURES, learner) if name in EXACT_FEATURES]
                         for learner in record["learner"]]}


def tolerance_of(tolerances: dict[str, list[float]], quantity: str, update: int, value: float) -> float:
    spread = tolerances.get(quantity, tolerances["loss"])  # a quantity the spread never saw: the loss's
    measured = MARGIN * spread[min(update, len(spread) - 1)] + RELATIVE_FLOOR * abs(value) + ABSOLUTE_FLOOR
    return max(measured, ONE_COUNT.get(quantity, 0.0))


def mismatches(got: dict, want: dict, config: dict, spread: dict[str, list[float]]) -> list[str]:
    """Where rollout ``got`` differs from ``want``: exactly in the exact parts, beyond the tolerance elsewhere."""
    out = [f"{key} differ" for key, value in exact_parts(want).items() if exact_parts(got)[key] != value]
    for (q, t, a), (_, _, b) in zip(quantities(got, config), quantities(want, config)):
        if abs(a - b) > tolerance_of(spread, q, t, b):
            out.append(f"{q} at update {t}: {a!r} vs {b!r} (tolerance {tolerance_of(spread, q, t, b):.2g})")
    return out


def all_rollouts() -> dict[str, dict]:
    return {name: rollout(config) for name, config in cases().items()}


def rollouts_under(variables: dict[str, str]) -> dict[str, dict]:
    """Every rollout in a fresh process with these kernel variables (torch reads them when it loads)."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    out = subprocess.run([sys.executable, __file__, "--dump"], env={**env, **variables}, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_spread(recorded: dict[str, dict]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """The largest absolute difference per quantity and update between any two of the kernel choices and the
    recording, and where each was seen."""
    runs = {"recorded": recorded, **{name: rollouts_under(v) for name, v in KERNEL_CHOICES.items()}}
    configs = cases()
    spread: dict[str, list[float]] = {}
    where: dict[str, Any] = {}
    for (a, ra), (b, rb) in itertools.combinations(runs.items(), 2):
        for case, config in configs.items():
            assert exact_parts(ra[case]) == exact_parts(rb[case]), f"{case}: {a} and {b} differ in an exact part"
            for (q, t, x), (_, _, y) in zip(quantities(ra[case], config), quantities(rb[case], config)):
                row = spread.setdefault(q, [0.0] * (STEPS + 1))
                if abs(x - y) > row[t]:
                    row[t] = abs(x - y)
                    where[f"{q}@{t}"] = [a, b, case]
    for row in spread.values():  # a later update is never held tighter than an earlier one
        row[:] = np.maximum.accumulate(row).tolist()
    return spread, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spread", action="store_true", help="measure the spread between kernel choices and "
                        f"write it to {TOLERANCE.name}")
    parser.add_argument("--dump", action="store_true", help="print every rollout as JSON (one kernel choice)")
    parser.add_argument("--check", action="store_true", help="compare every rollout with the recording at the "
                        "tolerances; exit 1 listing the differences")
    args = parser.parse_args()
    if args.check:
        spread = json.loads(TOLERANCE.read_text())["spread"]
        recorded = json.loads(GOLDEN.read_text())
        problems = [f"{name}: {m}" for name, config in cases().items()
                    for m in mismatches(rollout(config), recorded[name], config, spread)]
        print("\n".join(problems) or f"all {len(recorded)} rollouts match the recording")
        sys.exit(1 if problems else 0)
    if args.dump:
        import torch
        torch.set_num_threads(1)
        print(json.dumps(all_rollouts()))
        return
    if args.spread:
        spread, where = measure_spread(json.loads(GOLDEN.read_text()))
        import torch

        from corruption_env.precision import cpu_name
        TOLERANCE.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__,
                                         "kernel_choices": KERNEL_CHOICES, "spread": spread, "where": where},
                                        indent=1, sort_keys=True) + "\n")
        for q, row in sorted(spread.items()):
            print(f"{q:32s} " + " ".join(f"{x:9.2e}" for x in row))
        print(f"wrote the spread (largest |difference| per update 0..{STEPS}) to {TOLERANCE}")
        return
    GOLDEN.parent.mkdir(exist_ok=True)
    golden = all_rollouts()
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(golden)} rollouts in {GOLDEN}")


if __name__ == "__main__":
    main()
