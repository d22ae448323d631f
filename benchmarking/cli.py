"""Benchmark reward definitions (and agents) by what their corruptors do to the learned representation.

For each (task, reward, algo, seed) an agent is trained with that reward, then its corruptor is judged
the way ``train_agent.py`` judges it: a fresh encoder trained for ``--eval-steps`` SimCLR updates with
the agent's masks, scored by kNN and linear-probe accuracy on the test split. Each fixed baseline and
the references (``untrained``, ``simclr_aug``) are evaluated once per (task, seed), with the same
encoder initialisation and batches as that seed's agents (paired comparisons). Every evaluation
episode also records its return under *every* reward definition, so the summary can ask which
definitions track accuracy.

    python benchmark.py --preset quick                          # ~30 min on 2 CPU cores
    python benchmark.py --rewards ma_neg_loss_derivative,prediction_gain,heldout_gain \\
        --algos ppo,reinforce --baselines keep_all,random,cowmask --seeds 5 --train-steps 2000 --eval-steps 1000
    python benchmark.py --engine ray --preset quick             # the same sweep as Ray Tune trials (local Ray)
    python benchmark.py --engine ray --address auto --preset paper   # on a running Ray cluster

Options left unset are filled by --preset (default quick):
{presets}

Writes to --out: runs.csv (one row per run), curves.json (reward over training), summary.md (means
with 95 % bootstrap CIs, IQM, difference to the best fixed baseline, Spearman correlations between
returns and accuracy), accuracy.png and learning_curves.png. Rerunning the same command continues an
interrupted sweep without redoing finished runs; a run whose settings changed is refused (or redone
with --rerun-changed). Exit status: 0 all runs finished, 1 some failed (recorded with their error),
2 a bad option (nothing ran), 130 interrupted (finished runs kept).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from benchmarking.sweep import PRESETS, Sweep, SweepError, check_sweep, sweep_from
from corruption_env.cli_options import ArgumentParser, positive, usage_errors
from corruption_env.config import EnvConfig


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from agents import agent_spec, available_agents
    presets = "\n".join(f"  {name:7s} {p.description}; tasks {','.join(p.tasks)}, env preset {p.env_preset}, "
                        f"{p.workers} local worker(s)" for name, p in PRESETS.items())
    doc = __doc__.format(presets=presets)
    parser = ArgumentParser(prog="benchmark.py", description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    fill = "(default: the preset's)"
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="fills every option below marked 'the preset's' that is not given (default quick)")
    parser.add_argument("--tasks", help=f"comma-separated tasks (data variants, one table each) {fill}")
    parser.add_argument("--rewards", help=f"comma-separated reward definitions to train with {fill}")
    learners = [n for n in available_agents() if agent_spec(n).learns]
    fixed = [n for n in available_agents() if not agent_spec(n).learns]
    parser.add_argument("--algos", help=f"comma-separated agents ({', '.join(learners)}, or module:Class) {fill}")
    parser.add_argument("--baselines", help=f"comma-separated fixed corruptors ({', '.join(fixed)}; oracle on "
                                            f"known-answer tasks) {fill}")
    parser.add_argument("--seeds", type=positive(int), help=f"seeds per cell; seeds 0..N-1 are used {fill}")
    parser.add_argument("--train-steps", type=positive(int), help=f"environment steps each agent trains for {fill}")
    parser.add_argument("--eval-steps", type=positive(int),
                        help=f"SimCLR updates of the fresh encoder that judges each corruptor {fill}")
    parser.add_argument("--env-preset", choices=EnvConfig.PRESETS, help=f"EnvConfig preset of every run {fill}")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY:VALUE",
                        help="EnvConfig overrides for every run, e.g. batch_size:32 decorruptor:bicubic")
    parser.add_argument("--hyperparams", nargs="*", metavar="AGENT.KEY:VALUE",
                        help="agent options, e.g. ppo.n_steps:16 reinforce.learning_rate:0.01 random.keep_prob:0.5")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: a process pool on this machine (default); ray: Ray Tune trials "
                             "(pip install -e '.[ray]')")
    parser.add_argument("--workers", type=positive(int),
                        help=f"local engine: runs in parallel processes; ray: at most this many trials at once {fill}")
    parser.add_argument("--cpus-per-trial", type=positive(float),
                        help="CPUs each run reserves (ray) and torch threads it uses, at least 1 "
                             "(default: local, CPUs / workers; ray, 1)")
    parser.add_argument("--gpus-per-trial", type=_non_negative_float, default=0.0,
                        help="ray: GPUs each trial reserves, fractions allowed (e.g. 0.25; default 0)")
    parser.add_argument("--max-failures", type=int, default=2,
                        help="ray: retries of a failed trial before it is recorded as failed (default 2)")
    parser.add_argument("--address", help="ray: the cluster to join (e.g. auto, or ray://host:10001; default "
                                          "RAY_ADDRESS, else a local Ray is started)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder, Tune's storage path for --engine ray (default results/benchmark_<preset>)")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="redo runs that --out holds with other settings (default: refuse)")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failed runs, and Ray's logs")
    return parser


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def make_sweep(args: argparse.Namespace, argv: list[str]) -> tuple[Sweep, list[str]]:
    """The sweep the command line asks for, with the preset filling what it leaves unset, and one line for each
    option of the preset that a narrowed sweep drops (for the caller to print once the sweep is checked, so that a
    refused sweep says one thing: what to fix)."""
    from corruption_env.cli_options import parse_key_values

    listed = ("tasks", "rewards", "algos", "baselines")
    given = {name: (_names(getattr(args, name)) if name in listed else getattr(args, name))
             for name in (*listed, "seeds", "train_steps", "eval_steps", "env_preset") if getattr(args, name) is not None}
    try:
        return sweep_from(PRESETS[args.preset], given, parse_key_values(args.env_kwargs, "--env-kwargs"),
                          parse_key_values(args.hyperparams, "--hyperparams"),
                          command="python benchmark.py " + " ".join(argv))
    except ValueError as exc:
        raise SweepError(str(exc)) from None


@usage_errors
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return _run(build_parser().parse_args(argv), argv)


def check_engine(args: argparse.Namespace, sweep: Sweep) -> None:
    """The engine's own options make sense for it, and a GPU sweep on Ray says how much GPU a trial gets."""
    if args.engine == "local":
        for flag, value in (("--address", args.address), ("--gpus-per-trial", args.gpus_per_trial or None)):
            if value is not None:
                raise SweepError(f"{flag} is for --engine ray")
    else:
        try:
            import ray.tune  # noqa: F401
        except ImportError:
            raise SweepError("--engine ray needs Ray Tune: pip install -e '.[ray]' (or pip install 'ray[tune]')") from None
        devices = {sweep.env_config(task).device for task in sweep.tasks}
        if any(d.startswith("cuda") for d in devices) and not args.gpus_per_trial:
            raise SweepError(f"the runs use device {'/'.join(sorted(devices))} (env preset {sweep.env_preset}): "
                             "give --gpus-per-trial (e.g. 0.25 for four trials per GPU), or --env-preset cpu")
    if args.max_failures < 0:
        raise SweepError(f"--max-failures must be >= 0, got {args.max_failures}")


def plan(args: argparse.Namespace, sweep: Sweep, out: Path) -> tuple[list[dict[str, Any]], Any, list[dict[str, Any]]]:
    """Every run's settings, the results folder, and the runs it does not hold finished yet."""
    from benchmarking.results import ResultStore

    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} is a file; give a folder")
    specs = sweep.specs()
    trials = [sweep.settings(spec) for spec in specs]
    store = ResultStore(out, order=[spec.run_id for spec in specs])
    changed = [(t["run_id"], diff) for t in trials if (diff := store.changed(t))]
    if changed and not args.rerun_changed:
        first_id, diff = changed[0]
        raise SweepError(f"{out} holds {len(changed)} of these runs made with other settings ({first_id}: "
                         f"{'; '.join(diff[:3])}{'; ...' if len(diff) > 3 else ''}); use another --out, or "
                         f"--rerun-changed to redo them")
    return trials, store, [t for t in trials if not store.is_finished(t)]


def execute(args: argparse.Namespace, todo: list[dict[str, Any]], store: Any, out: Path, workers: int,
            cpus: float) -> None:
    """Run ``todo`` on the chosen engine, each row recorded as it arrives (KeyboardInterrupt after recording)."""
    from tqdm import tqdm

    from benchmarking.engines import run_local

    bar = tqdm(total=len(todo), desc="benchmark runs", unit="run", dynamic_ncols=True, file=sys.stderr)
    counted: set[str] = set()

    def record(row: dict[str, Any], settings: dict[str, Any]) -> None:
        store.record(row, settings)
        bar.set_postfix_str(f"{row['run_id']}: {row['status']}")
        if row["run_id"] not in counted:  # a retried Ray trial reports more than once
            counted.add(row["run_id"])
            bar.update(1)

    try:
        if todo and args.engine == "local":
            # one in-process worker keeps this process's threads unless told; pool workers split the CPUs
            threads = max(1, int(cpus)) if args.cpus_per_trial or workers > 1 else None
            run_local(todo, record, workers, threads, args.verbose)
        elif todo:
            from benchmarking.ray_engine import run_ray  # Ray is an extra: imported only when used

            run_ray(todo, record, out, cpus, args.gpus_per_trial, args.max_failures, args.address, args.workers,
                    args.verbose)
    finally:
        bar.close()


def report(sweep: Sweep, trials: list[dict[str, Any]], store: Any, out: Path) -> int:
    """summary.md and the plots of the rows the grid has; the exit status (1 if a run failed or never reported)."""
    from benchmarking.plots import plot
    from benchmarking.report import summarize
    from corruption_env.files import atomic_write_text

    rows = [store.rows[t["run_id"]] for t in trials if t["run_id"] in store.rows]
    summary = summarize(rows, {"command": sweep.command, "train_steps": sweep.train_steps,
                               "eval_steps": sweep.eval_steps, "seeds": sweep.seeds, "env_preset": sweep.env_preset})
    atomic_write_text(out / "summary.md", summary)
    plot(rows, store.curves, out)
    print(summary)
    print(f"wrote {out}/runs.csv, curves.json, summary.md, accuracy.png, learning_curves.png")
    missing = [t["run_id"] for t in trials if t["run_id"] not in store.rows]
    failed = [r["run_id"] for r in rows if r["status"] == "failed"]
    if missing:
        print(f"{len(missing)} run(s) never reported ({_first(missing)}); rerun the same command to run them.",
              file=sys.stderr)
    elif failed:
        print(f"{len(failed)} run(s) failed ({_first(failed)}); their errors are in {store.runs_csv} and summary.md. "
              "Rerun the same command to retry them.", file=sys.stderr)
    return 1 if missing or failed else 0


def _first(ids: list[str]) -> str:
    return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")


def _run(args: argparse.Namespace, argv: list[str]) -> int:
    sweep, notes = make_sweep(args, argv)
    check_sweep(sweep)
    check_engine(args, sweep)
    workers = args.workers or PRESETS[args.preset].workers
    out = args.out or Path("results") / f"benchmark_{args.preset}"
    trials, store, todo = plan(args, sweep, out)
    for note in notes:
        print(note, file=sys.stderr)
    cpus = args.cpus_per_trial or (1.0 if args.engine == "ray" else max(1, (os.cpu_count() or 1) // workers))
    engine = (f"{workers} local worker(s)" if args.engine == "local" else
              f"Ray Tune ({cpus:g} CPU{f', {args.gpus_per_trial:g} GPU' if args.gpus_per_trial else ''} per trial)")
    print(f"{len(trials)} runs, {len(trials) - len(todo)} already finished in {out}; running {len(todo)} "
          f"with {engine}", file=sys.stderr)
    try:
        execute(args, todo, store, out, workers, cpus)
    except KeyboardInterrupt:
        done = sum(store.is_finished(t) for t in trials)
        where = f"the {done} finished are in {store.runs_csv}" if store.runs_csv.is_file() else "nothing was written"
        print(f"\ninterrupted: {done} of {len(trials)} runs finished; {where}. Rerun the same command to continue.",
              file=sys.stderr)
        return 130
    return report(sweep, trials, store, out)
