"""What each engine of the whole-run search costs: candidate runs per CPU-minute, one by one in this process, batched
(K candidates of a generation as one computation), and as Ray Tune trials, side by side in one run.

- **one by one** (``engine local``) and **Ray** (``engine ray``, one CPU per trial, ``--workers`` at once): the same
  search (same seed, same candidates, same judges), timed whole; Ray's overhead per candidate run is its wall time
  x workers minus the runs' own CPU time.
- **batched**: the three parts of a candidate's update that a batched generation would merge, each timed for K
  candidates as one call against K calls of one: CAM-Net restoring K x 2B masked images, the augmentation of K x 2B
  views (one draw of parameters, as common random numbers give), and K encoders updated as one computation
  (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``, which PyTorch runs as grouped convolutions).
  The ratio per part and its share of a one-by-one update say what batching can buy on this machine.

    python studies/search_engines.py                         # K = 8 and 16, the ray/local search at 2 workers
    python studies/search_engines.py --parts-only --k 8,16   # the batched parts only (a minute)
    RAY_ADDRESS=HOST:PORT python studies/search_engines.py --skip-parts   # Ray on a running cluster (two nodes)

Time it on a quiet machine: another job on the cores makes every number wrong.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time

import numpy as np
import torch
import torch.nn as nn

from agents.search import WholeRunSearch
from benchmarking.sweep import TASKS
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.cli_options import ArgumentParser, UsageError, positive, usage_errors
from corruption_env.precision import cpu_name
from corruption_env.simclr import nt_xent


def timed(fn, repeats: int = 3) -> float:
    """Seconds of CPU time (this process, all threads) per call, the best of ``repeats`` after a warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def batched_parts(env: CorruptionEnv, k: int) -> dict[str, tuple[float, float]]:
    """CPU seconds per candidate-update of each part, (one by one, batched K), on the env's current batch."""
    views, learner = env.views, env.learner
    x_lr, b, g = env._batch, env.config.batch_size, env.config.mask_grid
    masks = (torch.rand(k, b, g, g) > 0.25).float()
    gen = torch.Generator().manual_seed(0)
    parts: dict[str, tuple[float, float]] = {}
    parts["CAM-Net"] = (timed(lambda: [views.restore(x_lr, masks[i], gen) for i in range(k)]) / k,
                        timed(lambda: views.restore(x_lr.repeat(k, 1, 1, 1), masks.flatten(0, 1), gen)) / k)
    v1, v2, _ = views.restore(x_lr, masks[0], gen)
    many1, many2 = v1.repeat(k, 1, 1, 1), v2.repeat(k, 1, 1, 1)
    parts["augmentation"] = (timed(lambda: [views.augment_pair(v1, v2, gen) for _ in range(k)]) / k,
                             timed(lambda: views.augment_pair(many1, many2, gen)) / k)
    learners = [copy.deepcopy(learner) for _ in range(k)]
    single = timed(lambda: [m.update(v1, v2) for m in learners]) / k
    parts["encoder update (vmap)"] = (single, timed(vmapped_update(learner, k, v1, v2)) / k)
    parts["encoder update (grouped convolutions)"] = (single, timed(grouped_update(learner, k, v1, v2)) / k)
    return parts


def grouped_update(learner, k: int, v1: torch.Tensor, v2: torch.Tensor):
    """The same K updates written by hand as one K-times-wider network of grouped convolutions (``small_cnn`` and
    the projection head, group i = copy i; BatchNorm over the K x C channels is each copy's own): the fastest
    batched learner this CPU offers, and an upper bound on what vmap could reach."""
    from corruption_env.precision import autocast
    from corruption_env.simclr import _MEAN, _STD

    widths, layers = [3, 32, 64, 128, 256], []
    for i, (a, c) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Conv2d(a * k, c * k, 3, padding=1, bias=False, groups=k), nn.BatchNorm2d(c * k)]
        layers += [nn.MaxPool2d(2), nn.ReLU(inplace=True)] if i < 3 else [nn.ReLU(inplace=True)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(256 * k, 256 * k, 1, groups=k), nn.BatchNorm2d(256 * k),
               nn.ReLU(inplace=True), nn.Conv2d(256 * k, 128 * k, 1, groups=k), nn.Flatten()]
    model = nn.Sequential(*layers).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=learner.lr)
    x = ((torch.cat([v1, v2]) - _MEAN) / _STD).repeat(1, k, 1, 1).contiguous(memory_format=torch.channels_last)

    def step() -> None:
        with autocast(learner.precision, learner.device):
            z = model(x).float().view(x.shape[0], k, -1)
        loss = sum(nt_xent(*z[:, i].chunk(2), learner.temperature) for i in range(k))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def vmapped_update(learner, k: int, v1: torch.Tensor, v2: torch.Tensor):
    """One SimCLR update of K copies of ``learner``'s encoder and head as one vmapped computation (Adam on the
    stacked parameters is each copy's own Adam: it is elementwise)."""
    from torch.func import functional_call, stack_module_state, vmap

    from corruption_env.precision import autocast
    from corruption_env.simclr import _MEAN, _STD

    model = nn.Sequential(learner.encoder, learner.head)
    params, buffers = stack_module_state([copy.deepcopy(model) for _ in range(k)])
    params = {name: p.detach().requires_grad_() for name, p in params.items()}
    optimizer = torch.optim.Adam(list(params.values()), lr=learner.lr)
    skeleton = copy.deepcopy(model).to("meta")
    x = ((torch.cat([v1, v2]) - _MEAN) / _STD).expand(k, -1, -1, -1, -1)

    def step() -> None:
        with autocast(learner.precision, learner.device):
            z = vmap(lambda p, b, v: functional_call(skeleton, (p, b), (v,)), randomness="same")(params, buffers, x)
        loss = sum(nt_xent(*zk.float().chunk(2), learner.temperature) for zk in z)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def parts_table(env: CorruptionEnv, ks: list[int]) -> str:
    """The parts, one by one against batched, and the whole update batched with the faster encoder variant."""
    lines = ["| part | one by one (ms CPU per candidate-update) | " + " | ".join(f"batched K={k}" for k in ks)
             + " | " + " | ".join(f"ratio K={k}" for k in ks) + " |", "|---|---|" + "---|" * (2 * len(ks))]
    results = {k: batched_parts(env, k) for k in ks}
    for part in results[ks[0]]:
        single = np.mean([results[k][part][0] for k in ks])
        lines.append(f"| {part} | {single * 1000:.1f} | " + " | ".join(f"{results[k][part][1] * 1000:.1f}" for k in ks)
                     + " | " + " | ".join(f"{single / results[k][part][1]:.2f}x" for k in ks) + " |")
    whole = {}
    for k in ks:
        encoder = min((v for name, v in results[k].items() if name.startswith("encoder")), key=lambda v: v[1])
        rest = [v for name, v in results[k].items() if not name.startswith("encoder")]
        whole[k] = (sum(v[0] for v in rest) + encoder[0], sum(v[1] for v in rest) + encoder[1])
    lines.append("| **a whole update** (the faster encoder variant) | "
                 f"{np.mean([whole[k][0] for k in ks]) * 1000:.1f} | " + " | ".join(f"{whole[k][1] * 1000:.1f}" for k in ks)
                 + " | " + " | ".join(f"**{whole[k][0] / whole[k][1]:.2f}x**" for k in ks) + " |")
    return "\n".join(lines)


def search_options(engine: str, updates: int, population: int, workers: int) -> dict:
    """The options of the search each engine runs (the same search but for its engine)."""
    return {"run_updates": updates, "population": population, "engine": engine, "workers": workers,
            "keep_all_candidate": False, "verbose": 0}


def engines_table(env: CorruptionEnv, updates: int, population: int, generations: int, workers: int) -> str:
    budget = updates * population * generations
    results = {}
    for engine in ("local", "ray"):
        start = time.perf_counter()
        search = WholeRunSearch(env, seed=0, **search_options(engine, updates, population, workers)).learn(budget)
        wall = time.perf_counter() - start
        cpu = sum(r["cpu_seconds"] for r in search.history)
        results[engine] = (search, wall, cpu)
    lines = ["| engine | runs | wall s | the runs' CPU s | candidate runs per CPU-minute | overhead per run (s) |",
             "|---|---|---|---|---|---|"]
    for engine, (search, wall, cpu) in results.items():
        cores = 1 if engine == "local" else workers
        n = len(search.history)
        lines.append(f"| {engine} ({cores} core{'s' if cores > 1 else ''}) | {n} | {wall:.0f} | {cpu:.0f} | "
                     f"{n / (wall * cores / 60):.2f} | {(wall * cores - cpu) / n:.2f} |")
    same = [r["judge"] for r in results["local"][0].history] == [r["judge"] for r in results["ray"][0].history]
    lines.append(f"\nThe same candidates and judges on both engines: {same}.")
    return "\n".join(lines)


def counts(text: str) -> list[int]:
    """``--k``: comma-separated candidate counts, each > 0."""
    return [positive(int)(k) for k in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="studies/search_engines.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="distractor_random", choices=list(TASKS), metavar="TASK",
                        help=f"the benchmark's task whose env is timed: {', '.join(TASKS)} (default distractor_random)")
    parser.add_argument("--k", type=counts, default=[8, 16],
                        help="comma-separated candidates per batched call (default 8,16)")
    parser.add_argument("--threads", type=positive(int), default=1,
                        help="torch threads of the one-process measurements (default 1)")
    parser.add_argument("--updates", type=positive(int), default=50,
                        help="SimCLR updates per candidate run of the engines' search (default 50)")
    parser.add_argument("--population", type=positive(int), default=8,
                        help="candidates per generation of the engines' search (default 8)")
    parser.add_argument("--generations", type=positive(int), default=2,
                        help="generations of the engines' search (default 2)")
    parser.add_argument("--workers", type=positive(int), default=2,
                        help="Ray Tune trials at once in the engines' search (default 2)")
    parser.add_argument("--parts-only", action="store_true", help="only the batched parts (default: off)")
    parser.add_argument("--skip-parts", action="store_true",
                        help="only the engines (with RAY_ADDRESS set: Ray on that cluster, e.g. two nodes; "
                             "default: off)")
    return parser


def checked_config(args: argparse.Namespace) -> EnvConfig:
    """The timed env's config, once every option is known to work: what the parts and the search need."""
    if args.parts_only and args.skip_parts:
        raise UsageError("--parts-only and --skip-parts together measure nothing: give one of them, or neither")
    config = EnvConfig.preset("cpu", **TASKS[args.task], num_threads=args.threads)
    if not args.parts_only:
        try:  # the search the engines run, checked as building it checks it
            WholeRunSearch.check_options_for(config, search_options("ray", args.updates, args.population,
                                                                    args.workers))
        except ValueError as exc:
            raise UsageError(f"the engines' search on --task {args.task}: {exc}") from None
    return config


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    config = checked_config(args)
    torch.set_num_threads(args.threads)
    env = CorruptionEnv(config)
    env.reset(seed=0)
    print(f"{cpu_name()}, {args.threads} thread(s), torch {torch.__version__}, precision {env.precision}, CAM-Net "
          f"{'int8' if env.config.int8_camnet else env.precision}; task {args.task}, batch {env.config.batch_size}\n")
    if not args.skip_parts:
        print(parts_table(env, args.k))
    if not args.parts_only:
        print()
        print(engines_table(env, args.updates, args.population, args.generations, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
