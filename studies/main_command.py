"""The main command (``python train_agent.py --algo ppo``) timed as a whole process, and its evaluation table, for
settings side by side: does a speed lever make it faster, and does the science stay within seed noise?

Each unit is one fresh process of the main command (fresh row cache, ``--eval-cache none``, as on a new machine) for
one (kernels, setting, seed): its wall seconds, user + system CPU seconds and peak RSS from the operating system's
own accounting of the finished child (``os.wait4``), and the kNN / linear-probe accuracy of every row of its
``eval.json``. Units run interleaved (for each kernel set, for each seed, every setting in turn) so that machine
drift hits every setting alike, and each is saved atomically as it finishes: a stopped study continues where it
stopped. The report gives per setting the median wall / CPU / peak RSS, the ratio to the first setting paired seed
by seed, and the evaluation table (mean and sd over seeds) with each row's difference to the first setting beside
the seed-to-seed sd. ``avx2`` kernels hold torch and oneDNN to AVX2 (the stand-in for a CPU without AVX512 or
bf16, ``studies/cpu_levers.py``).

    python studies/main_command.py --setting default= \\
        --setting nf16=camnet_checkpoint:'corruption_env/camnet/weights/shapes_sr_colorize_x2_nf16.pt' \\
        --seeds 0,1,2 --kernels native --out docs/results/speed/main_command     # ~25 min on 2 cores
    python studies/main_command.py --report docs/results/speed/main_command     # the report only
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_levers import AVX2  # noqa: E402

from corruption_env.cli_options import ArgumentParser, UsageError, parse_key_values, usage_errors  # noqa: E402
from corruption_env.files import atomic_write_json, atomic_write_text  # noqa: E402
from corruption_env.precision import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KERNELS = {"native": {}, "avx2": AVX2}


@dataclass(frozen=True)
class Setting:
    """What one column of the comparison runs: the main command of ``checkout`` (a clone of the project: the code
    before a change, say) with ``env_kwargs``."""

    name: str
    env_kwargs: list[str]
    checkout: Path = ROOT

    @property
    def commit(self) -> str:
        """The checkout's commit, with ``+changes`` when its tracked files differ from it."""
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=self.checkout, capture_output=True,
                              text=True).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=self.checkout,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+changes" if dirty else "")


def parse_setting(text: str) -> Setting:
    """``name[@checkout]=key:value key:value`` -> a :class:`Setting`; an empty right side is the default."""
    head, sep, kwargs = text.partition("=")
    name, at, checkout = head.partition("@")
    if not sep or not name or not name.replace("_", "").replace("-", "").isalnum() or (at and not checkout):
        raise UsageError(f"--setting expects NAME[@CHECKOUT]=KEY:VALUE ... (e.g. default=, before@/tmp/main_before= "
                         f"or nf16=camnet_checkpoint:'PATH'), got {text!r}")
    root = Path(checkout).resolve() if at else ROOT
    if not (root / "train_agent.py").is_file():
        raise UsageError(f"--setting {name}: {root} is not a checkout of this project (no train_agent.py)")
    items = shlex.split(kwargs)
    try:
        overrides = parse_key_values(items, "--setting")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    checkpoint = overrides.get("camnet_checkpoint")
    if checkpoint is not None and not (root / str(checkpoint)).is_file() and not Path(str(checkpoint)).is_file():
        raise UsageError(f"--setting {name}: no CAM-Net checkpoint at {checkpoint}")
    return Setting(name, items, root)


def run_unit(setting: Setting, kernels: str, seed: int, algo: str, train_args: list[str]) -> dict[str, Any]:
    """One fresh process of the main command; its time, CPU, peak memory and evaluation rows."""
    items, root = setting.env_kwargs, setting.checkout
    with tempfile.TemporaryDirectory(prefix="main_command_") as log_dir:
        command = [sys.executable, str(root / "train_agent.py"), "--algo", algo, "--seed", str(seed),
                   "--eval-cache", "none", "--log-dir", log_dir, *train_args] + (["--env-kwargs", *items] if items else [])
        env = {**os.environ, **KERNELS[kernels], "PYTHONPATH": str(root)}
        start = time.perf_counter()
        with open(Path(log_dir) / "stdout.txt", "w") as out:
            child = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        printed = (Path(log_dir) / "stdout.txt").read_text()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the main command failed ({' '.join(command)}):\n{printed[-2000:]}")
        evaluation = json.loads(next(Path(log_dir).glob("*/eval.json")).read_text())
    precision = next((line for line in printed.splitlines() if line.startswith("precision")), "")
    return {"wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "train_s": evaluation["train_seconds"],
            "eval_s": evaluation["eval_seconds"], "precision_line": precision,
            "rows": {row["name"].split("(")[0]: {"knn": row["knn"], "linear": row["linear"], "seconds": row["seconds"],
                                                 "keep_fraction": row["keep_fraction"]} for row in evaluation["rows"]}}


def unit_path(out: Path, kernels: str, setting: str, seed: int) -> Path:
    return out / "units" / f"{kernels}_{setting}_s{seed}.json"


def run(args: Any, settings: dict[str, Setting]) -> None:
    plan = [(k, name, seed) for k in args.kernels for seed in args.seeds for name in settings]
    todo = [p for p in plan if not unit_path(args.out, *p).exists()]
    cpu = f"{cpu_name()}, {os.cpu_count()} cores"
    print(f"{len(plan)} runs of the main command, {len(plan) - len(todo)} already done in {args.out}; CPU: {cpu}",
          flush=True)
    for i, (kernels, name, seed) in enumerate(todo, 1):
        unit = {"kernels": kernels, "setting": name, "env_kwargs": settings[name].env_kwargs,
                "commit": settings[name].commit, "order": list(settings).index(name), "seed": seed, "algo": args.algo, "train_args": args.train_args,
                "cpu": cpu,
                **run_unit(settings[name], kernels, seed, args.algo, args.train_args)}
        atomic_write_json(unit_path(args.out, kernels, name, seed), unit)
        print(f"[{i}/{len(todo)}] {kernels} {name} seed {seed}: {unit['wall_s']:.0f} s wall, {unit['cpu_s']:.0f} s "
              f"CPU, {unit['peak_rss_mb']} MB", flush=True)


def report(out: Path) -> str:
    units = [json.loads(p.read_text()) for p in sorted((out / "units").glob("*.json"))]
    if not units:
        raise UsageError(f"no units in {out / 'units'}: run the study first")
    # the first setting given (``order``) is the one the others are compared with
    settings = list(dict.fromkeys(u["setting"] for u in sorted(units, key=lambda u: u.get("order", 0))))
    lines = [f"# The main command, timed whole ({len(units)} runs)", "",
             "`python studies/main_command.py --report " + str(out) + "`; each run a fresh process of "
             "`" + " ".join(["python train_agent.py --algo", units[0]["algo"], "--eval-cache none",
                             *units[0]["train_args"]]) + "`.", ""]
    for kernels in sorted({u["kernels"] for u in units}, key=list(KERNELS).index):
        of = {(u["setting"], u["seed"]): u for u in units if u["kernels"] == kernels}
        base = settings[0]
        lines += [f"## Kernels: {kernels}", "", "| setting | code | env kwargs | runs | wall (median, min-max) | CPU s | "
                  f"peak RSS MB | wall / {base}'s (paired) | CPU / {base}'s |", "|---|---|---|---|---|---|---|---|---|"]
        for name in settings:
            mine = [of[k] for k in of if k[0] == name]
            if not mine:
                continue
            walls = [u["wall_s"] for u in mine]
            paired = [(of[(name, u["seed"])], of[(base, u["seed"])]) for u in mine if (base, u["seed"]) in of]
            ratio = lambda key: (f"{np.median([a[key] / b[key] for a, b in paired]):.2f}" if paired else "-")  # noqa: E731
            lines.append(f"| {name} | {mine[0].get('commit', '?')} | `{' '.join(mine[0]['env_kwargs']) or '(none)'}` | "
                         f"{len(mine)} | "
                         f"{np.median(walls):.0f} s ({min(walls):.0f}-{max(walls):.0f}) | "
                         f"{np.median([u['cpu_s'] for u in mine]):.0f} | {max(u['peak_rss_mb'] for u in mine)} | "
                         f"{ratio('wall_s')} | {ratio('cpu_s')} |")
        lines += ["", f"Evaluation (kNN / linear probe, mean ± sd over seeds; difference to {base}'s, paired by seed):",
                  "", "| row | " + " | ".join(settings) + " | " + " | ".join(f"{s} − {base} kNN" for s in settings[1:])
                  + " |", "|---|" + "---|" * (2 * len(settings) - 1)]
        rows = list(dict.fromkeys(r for u in units if u["kernels"] == kernels for r in u["rows"]))
        for row in rows:
            cells, diffs = [], []
            for name in settings:
                got = [of[k]["rows"][row] for k in sorted(of) if k[0] == name and row in of[k]["rows"]]
                cells.append(" / ".join(f"{np.mean([g[m] for g in got]):.3f} ± {np.std([g[m] for g in got], ddof=1) if len(got) > 1 else 0:.3f}"
                                        for m in ("knn", "linear")) + f" ({len(got)})" if got else "-")
            for name in settings[1:]:
                d = [of[(name, s)]["rows"][row]["knn"] - of[(base, s)]["rows"][row]["knn"]
                     for (n, s) in of if n == name and (base, s) in of
                     and row in of[(name, s)]["rows"] and row in of[(base, s)]["rows"]]
                diffs.append(f"{np.mean(d):+.3f} ± {np.std(d, ddof=1) if len(d) > 1 else 0:.3f}" if d else "-")
            lines.append(f"| {row} | " + " | ".join(cells + diffs) + " |")
        lines.append("")
    lines.append(f"CPU: {'; '.join(sorted({u['cpu'] for u in units}))}. Precision lines: "
                 f"{'; '.join(sorted({u['precision_line'] for u in units}))}.")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "main_command.md", text)
    return text


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="studies/main_command.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", action="append", metavar="NAME=KEY:VALUE ...",
                        help="a setting: its name, optionally @ a checkout of the project to run (default: this one), and "
                             "its --env-kwargs (NAME= for the defaults); the first is the one the others are compared "
                             "with (default: default=)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--kernels", default="native", help="comma-separated: native, avx2 (default: %(default)s)")
    parser.add_argument("--algo", default="ppo", help="the agent (default: %(default)s)")
    parser.add_argument("--train-args", default="", metavar="'ARGS'",
                        help="more arguments of train_agent.py for every run, e.g. '--total-timesteps 64' (default: "
                             "none, the main command as it is)")
    parser.add_argument("--out", type=Path, default=Path("results/main_command"),
                        help="where the units and the report go (default: %(default)s)")
    parser.add_argument("--report", type=Path, default=None,
                        help="only rewrite the report from the units of this folder (default: run the study)")
    return parser


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report is not None:
        print(report(args.report))
        return 0
    settings = {s.name: s for s in map(parse_setting, args.setting or ["default="])}
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UsageError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    args.kernels, args.train_args = args.kernels.split(","), shlex.split(args.train_args)
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown:
        raise UsageError(f"--kernels: unknown {', '.join(unknown)}; choose from {', '.join(KERNELS)}")
    for path in sorted((args.out / "units").glob("*.json")):
        unit = json.loads(path.read_text())
        if unit["train_args"] != args.train_args or unit["algo"] != args.algo:
            raise UsageError(f"{path} ran --algo {unit['algo']} --train-args {unit['train_args']}, not --algo "
                             f"{args.algo} --train-args {args.train_args}: use another --out")
        mine = settings.get(unit["setting"])
        if mine is not None and (unit["env_kwargs"], unit.get("commit")) != (mine.env_kwargs, mine.commit):
            raise UsageError(f"{path} ran setting {unit['setting']!r} with {unit['env_kwargs']} at {unit.get('commit')}, "
                             f"not {mine.env_kwargs} at {mine.commit}: name the setting differently or use another --out")
    run(args, settings)
    print(report(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
