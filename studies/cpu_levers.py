"""What the process-level levers do to an environment step: thread binding, the allocator, OpenMP's wait policy,
the convolution layout, one thread against two, and how close the step's kernels run to the CPU's peak.

Each variant times ``env.step`` (CPU preset, default reward) in a fresh process whose environment variables set the
lever (they are read when the libraries load), in interleaved rounds so that machine drift hits every variant
alike; the medians per variant go in a table with their ratio to the plain 2-thread step. ``--avx2`` also runs every
variant with torch and oneDNN held to AVX2 (the stand-in for a CPU without AVX512 or bf16). It then profiles one
single-thread step (CAM-Net's int8 forward, the view augmentation, the SimCLR update) and counts the multiply-adds
of CAM-Net and of the encoder, so that each stage's throughput (GMAC/s) can be read against the core's peak.

    python studies/cpu_levers.py --rounds 3 --avx2 --out docs/results/speed/cpu_levers.md   # ~15 min on 2 cores
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from corruption_env.cli_options import ArgumentParser, positive, usage_errors
from corruption_env.files import atomic_write_text
from corruption_env.precision import cpu_name

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# name: (torch threads, environment variables)
VARIANTS: dict[str, tuple[int, dict[str, str]]] = {
    "2 threads": (2, {}),
    "2 threads, threads bound to cores": (2, {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}),
    "2 threads, freed memory kept (glibc)": (2, {"MALLOC_MMAP_THRESHOLD_": str(256 << 20),
                                                 "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}),
    "2 threads, OpenMP passive wait": (2, {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, encoder in NCHW": (2, {"CPU_LEVERS_NCHW": "1"}),
    "1 thread": (1, {}),
    "1 thread, encoder in NCHW": (1, {"CPU_LEVERS_NCHW": "1"}),
}
TIMED_STEP = r"""
import json, os, time, warnings
import numpy as np, torch
warnings.simplefilter("ignore")
from corruption_env import CorruptionEnv, EnvConfig
torch.set_num_threads(int(os.environ["CPU_LEVERS_THREADS"]))
env = CorruptionEnv(EnvConfig.preset("cpu", episode_length=10_000))
env.reset(seed=0)
if os.environ.get("CPU_LEVERS_NCHW"):
    env.learner.encoder.to(memory_format=torch.contiguous_format)
rng = np.random.default_rng(0)
act = lambda: (rng.random(env.action_space.n) < 0.75).astype(np.int8)
for _ in range(5):
    env.step(act())
blocks = []
for _ in range(3):
    start = time.perf_counter()
    for _ in range({steps}):
        env.step(act())
    blocks.append((time.perf_counter() - start) / {steps} * 1e3)
print(json.dumps({{"ms": float(np.median(blocks)), "precision": env.precision}}))
"""


def time_variant(threads: int, variables: dict[str, str], steps: int) -> dict:
    env = {**os.environ, **variables, "CPU_LEVERS_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", TIMED_STEP.format(steps=steps)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_throughput() -> dict[str, float]:
    """One thread: ms of CAM-Net's forward over 2B images, of the augmentation and of the SimCLR update, and their
    multiply-adds (CAM-Net's convolutions and the encoder's forward; an update is about 3 forwards)."""
    import torch
    import torch.nn as nn

    from corruption_env import CorruptionEnv, EnvConfig
    from corruption_env.camnet import CAMNet
    from corruption_env.corruption import apply_mask

    torch.set_num_threads(1)
    env = CorruptionEnv(EnvConfig.preset("cpu"))
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    mask = torch.bernoulli(torch.full((env.config.batch_size, 4, 4), 0.75), generator=gen)
    macs: dict[str, int] = {"camnet": 0, "encoder": 0}

    def count(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if isinstance(output, torch.Tensor) and hasattr(module, "kernel_size"):
                k = int(np.prod(module.kernel_size))
                cin = inputs[0].shape[1] // getattr(module, "groups", 1)
                macs[name] += int(output.numel() * cin * k)
        return hook

    fp32 = CAMNet(env.views.decorruptor.cfg)  # the same architecture, float: its convolutions can be hooked
    hooks = [m.register_forward_hook(count("camnet")) for m in fp32.modules() if isinstance(m, nn.Conv2d)]
    x_c, pixel_mask = apply_mask(env._batch, mask)
    with torch.no_grad():
        fp32(torch.cat([x_c, x_c]), torch.cat([pixel_mask, pixel_mask]), fp32.sample_code(2 * x_c.shape[0], gen))
    for h in hooks:
        h.remove()
    hooks = [m.register_forward_hook(count("encoder")) for m in env.learner.encoder.modules() if isinstance(m, nn.Conv2d)]
    v1, v2, _ = env.views.restore(env._batch, mask, gen)
    with torch.no_grad():
        env.learner.encoder(torch.cat([v1, v2]))
    for h in hooks:
        h.remove()
    timings = {"camnet": [], "augment": [], "update": []}
    for _ in range(6):
        start = time.perf_counter()
        v1, v2, _ = env.views.restore(env._batch, mask, gen)
        timings["camnet"].append(time.perf_counter() - start)
        start = time.perf_counter()
        v1, v2 = env.views.augment_pair(v1, v2, gen)
        timings["augment"].append(time.perf_counter() - start)
        start = time.perf_counter()
        env.learner.update(v1, v2)
        timings["update"].append(time.perf_counter() - start)
    ms = {k: float(np.median(v[1:])) * 1e3 for k, v in timings.items()}
    return {"camnet_ms": ms["camnet"], "augment_ms": ms["augment"], "update_ms": ms["update"],
            "camnet_gmac": macs["camnet"] / 1e9, "update_gmac": 3 * macs["encoder"] / 1e9,
            "precision": env.precision, "capability": torch.backends.cpu.get_cpu_capability()}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/cpu_levers.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=positive(int), default=3, help="interleaved rounds (default: %(default)s)")
    parser.add_argument("--steps", type=positive(int), default=15,
                        help="steps per timed block; three blocks per process (default: %(default)s)")
    parser.add_argument("--avx2", action="store_true", help="also every variant held to AVX2 (default: off)")
    parser.add_argument("--out", type=Path, default=Path("results/cpu_levers.md"),
                        help="where the Markdown report goes (default: %(default)s)")
    parser.add_argument("--stages-only", action="store_true",
                        help="print one single-thread step's stage throughput and stop (default: off; the report "
                             "runs it in a process of its own per kernel choice)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.stages_only:
        print(json.dumps(stage_throughput()))
        return 0
    kinds = {"native": {}, **({"AVX2": AVX2} if args.avx2 else {})}
    times: dict[tuple[str, str], list[float]] = {}
    precision: dict[str, str] = {}
    for r in range(args.rounds):
        for kind, base in kinds.items():
            for name, (threads, variables) in VARIANTS.items():
                result = time_variant(threads, {**base, **variables}, args.steps)
                times.setdefault((kind, name), []).append(result["ms"])
                precision[kind] = result["precision"]
                print(f"round {r + 1}/{args.rounds} {kind} {name}: {result['ms']:.1f} ms", file=sys.stderr, flush=True)
    stages = {}
    for kind, base in kinds.items():
        done = subprocess.run([sys.executable, __file__, "--stages-only"], env={**os.environ, **base},
                              capture_output=True, text=True, check=True)
        stages[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = cpu_name()
    lines = ["# Process-level levers of an environment step", "",
             f"`python studies/cpu_levers.py {' '.join(argv if argv is not None else sys.argv[1:])}` on {cpu}, "
             f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}. ms per `env.step` (CPU preset, median of three "
             f"{args.steps}-step blocks per process; each round's value, then their median and its ratio to the plain "
             "2-thread step of the same kind).", ""]
    for kind in kinds:
        plain = float(np.median(times[(kind, "2 threads")]))
        lines += [f"## {kind} kernels ({precision[kind]})", "", "| variant | per round (ms) | median (ms) | / 2 threads |",
                  "|---|---|---|---|"]
        for name in VARIANTS:
            values = times[(kind, name)]
            lines.append(f"| {name} | {' / '.join(f'{v:.0f}' for v in values)} | {np.median(values):.1f} | "
                         f"{np.median(values) / plain:.2f} |")
        s = stages[kind]
        lines += ["", f"One thread, one step's stages: CAM-Net ({s['camnet_gmac']:.1f} GMAC over 2B images) "
                      f"{s['camnet_ms']:.0f} ms = {s['camnet_gmac'] / s['camnet_ms'] * 1e3:.0f} GMAC/s; the SimCLR "
                      f"update (about {s['update_gmac']:.1f} GMAC: forward and backward) {s['update_ms']:.0f} ms = "
                      f"{s['update_gmac'] / s['update_ms'] * 1e3:.0f} GMAC/s; the augmentation {s['augment_ms']:.0f} ms "
                      f"(torch capability {s['capability']}).", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
