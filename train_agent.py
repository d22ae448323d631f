"""Train one agent to corrupt images for contrastive learning, evaluate its corruptor, save everything.

    python train_agent.py --algo ppo                      # the embedded default: shapes, shipped CAM-Net
    python train_agent.py --algo reinforce --reward heldout_gain --seed 1
    python train_agent.py --algo sb3_contrib:TRPO --hyperparams n_steps:32
    python train_agent.py --resume runs/ppo_ma_neg_loss_derivative_s0_20261128-120000 --total-timesteps 4096

Every run writes one folder under ``--log-dir``: ``agent.zip``, ``env_config.json``, ``args.json``,
TensorBoard events (``tb/``: env/, reward/, time/, eval/ scalars and image grids of the views) and
``eval.json`` (kNN and linear-probe accuracy of encoders trained with the agent's masks and with the
baselines). Every input is checked before the folder is made: a bad one is one line, ``error: ...``,
and exit status 2. Ctrl-C (in training or in evaluation) saves what is done and prints how to resume;
``--resume`` may change --total-timesteps, --eval-steps, --eval-deterministic, --image-every,
--checkpoint-every, --device and --tensorboard-log, and refuses to change anything else.
Options follow rl-zoo3's spelling.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from agents import agent_spec, available_agents, build_error, load_agent, make_agent, trains_on_reward
from agents.callbacks import (ANSWER_KEEP, Checkpoint, CorruptionLogger, KnownAnswerClock, ProgressBar, save_agent,
                              tensorboard_writer)
from agents.corruptor_evaluation import (DEFAULT_TRAIN_STEPS, RowCache, RowResult, evaluate_agent,
                               format_rows, is_readable, rows_to_json)
from corruption_env import CorruptionEnv, EnvConfig, available_rewards
from corruption_env.config import ENV_PRESETS
from corruption_env.cli_options import ArgumentParser, UsageError, parse_key_values, usage_errors
from corruption_env.data import load_dataset
from corruption_env.files import atomic_write_json, atomic_write_text
from corruption_env.precision import describe_precision, resolve_precision

RUN_FILES = ("args.json", "env_config.json", "agent.zip")
# what a resumed run may change (how long, how it is watched, where it runs) and what it may not (what it is)
RESUMABLE = ("total_timesteps", "eval_steps", "eval_deterministic", "image_every", "checkpoint_every", "device",
             "tensorboard_log", "eval_cache")
FIXED = ("algo", "seed", "preset", "reward", "env_kwargs", "hyperparams", "config", "n_envs", "log_dir")
PARTIAL_EVAL = "eval.partial.json"  # rows finished before a Ctrl-C in evaluation, reused by --resume
SEED_MAX = 2**32 - 1  # the largest seed SB3's set_random_seed takes (numpy's global seeding)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="train_agent.py", description=__doc__.split("\n\n")[0],
                            epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo",
                        help=f"one of {', '.join(available_agents())}, or package.module:Class (default ppo)")
    parser.add_argument("--total-timesteps", type=int, default=DEFAULT_TRAIN_STEPS,
                        help=f"environment steps, >= 1 (default {DEFAULT_TRAIN_STEPS}); rounded up to whole rollouts")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"seed of the agent, the environments and the evaluation, 0 to {SEED_MAX} (default 0)")
    parser.add_argument("--device", default=None, help="torch device of env and agent: cpu, cuda, cuda:N "
                                                       "(default: the preset's)")
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS,
                        help="EnvConfig preset under --env-kwargs (default cpu; gpu needs CUDA)")
    parser.add_argument("--n-envs", type=int, default=1, help="parallel environments (SubprocVecEnv when > 1)")
    parser.add_argument("--reward", default=None, help=f"reward definition: {', '.join(available_rewards())}")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY:VALUE", help="EnvConfig overrides, e.g. batch_size:32")
    parser.add_argument("--hyperparams", nargs="*", metavar="KEY:VALUE", help="agent options, e.g. n_steps:16")
    parser.add_argument("--config", type=Path, default=None, help="EnvConfig JSON file (before --env-kwargs)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="where run folders go (default runs)")
    parser.add_argument("--tensorboard-log", type=Path, default=None, help="TensorBoard folder (default RUN/tb)")
    parser.add_argument("--resume", type=Path, default=None, help="a run folder to continue (or to evaluate again)")
    parser.add_argument("--eval-steps", type=int, default=None,
                        help=f"SimCLR updates per evaluated encoder (default: the preset's, where keep_all clears the "
                             f"learnability floor: {presets_eval_steps()}; 0: skip)")
    parser.add_argument("--eval-deterministic", action="store_true", help="evaluate the policy's most likely masks")
    parser.add_argument("--eval-cache", default=None, metavar="DIR",
                        help="folder of the evaluation rows that do not depend on the agent, reused by later runs with "
                             "the same config, --eval-steps and --seed (default: $CORRUPTION_ENV_CACHE, else "
                             "~/.cache/corruption-env; 'none': compute every row)")
    parser.add_argument("--image-every", type=int, default=200, help="steps between TensorBoard image grids (0: none)")
    parser.add_argument("--checkpoint-every", type=int, default=256,
                        help="steps between agent checkpoints (0: only at the end)")
    return parser


def given_options(argv: list[str]) -> set[str]:
    """The options written on the command line, whatever their value (a default given explicitly counts)."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# ------------------------------------------------------------------------------------------ checking

def presets_eval_steps() -> str:
    return ", ".join(f"{name} {preset.eval_steps}" for name, preset in ENV_PRESETS.items())


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{what} {path} cannot be read ({exc})") from None


def resume_args(cli: argparse.Namespace, given: set[str]) -> argparse.Namespace:
    """The saved run's arguments with the resumable ones the command line gives; refuses the others."""
    folder = cli.resume
    missing = [f for f in RUN_FILES if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise UsageError(f"--resume {folder} is not a run folder: expected {', '.join(RUN_FILES)} in it "
                         f"(missing: {', '.join(missing) if folder.is_dir() else 'the folder itself'})")
    saved = read_json(folder / "args.json", "--resume: run arguments")
    saved_reward = read_json(folder / "env_config.json", "--resume: environment config").get("reward")

    def same(key: str) -> bool:
        new, old = getattr(cli, key), saved.get(key)
        if key in ("env_kwargs", "hyperparams"):
            return parse_key_values(new, flag(key)) == parse_key_values(old, flag(key))
        if key == "reward":
            return new == (old or saved_reward)
        if key in ("config", "log_dir"):
            return (new and Path(new).resolve()) == (old and Path(old).resolve())
        return new == old

    changed = [f"{flag(k)} ({saved.get(k)!r} in the run, {getattr(cli, k)!r} now)" for k in FIXED
               if k in given and not same(k)]
    if changed:
        raise UsageError(f"--resume cannot change {', '.join(changed)}: the run was trained with them. On resume only "
                         f"{', '.join(flag(k) for k in RESUMABLE)} may change; start a new run for the others")
    args = argparse.Namespace(**{**vars(cli), **{k: v for k, v in saved.items() if k in vars(cli)}})
    for key in RESUMABLE:
        if key in given:
            setattr(args, key, getattr(cli, key))
    args.resume = folder  # the environment comes from the folder's env_config.json, never from --config again
    for key in ("log_dir", "tensorboard_log"):
        setattr(args, key, Path(getattr(args, key)) if getattr(args, key) else None)
    return args


def check_folder(path: Path | None, option: str) -> None:
    """``path`` is, or can become, a folder: neither it nor a parent is a file."""
    for part in [path, *path.parents] if path is not None else []:
        if part.exists():
            if not part.is_dir():
                raise UsageError(f"{option} {path}: {part} is a file, not a folder; pass a folder path")
            return


def check_numbers(args: argparse.Namespace) -> None:
    bounds = {"total_timesteps": 1, "n_envs": 1, "eval_steps": 0, "image_every": 0, "checkpoint_every": 0, "seed": 0}
    bad = [f"{flag(k)} {getattr(args, k)} (must be >= {low})" for k, low in bounds.items() if getattr(args, k) < low]
    if args.seed > SEED_MAX:
        bad.append(f"--seed {args.seed} (must be <= {SEED_MAX})")
    if bad:
        raise UsageError(", ".join(bad))


def env_config_from(args: argparse.Namespace) -> EnvConfig:
    """The run's EnvConfig: --config or --preset, then --env-kwargs, --reward, --device; checked."""
    try:
        if args.resume:
            cfg = EnvConfig.from_json(args.resume / "env_config.json")
            return (cfg.replace(device=args.device) if args.device else cfg).validate()
        cfg = EnvConfig.from_json(args.config) if args.config else EnvConfig.preset(args.preset)
        overrides = parse_key_values(args.env_kwargs, "--env-kwargs")
        if args.reward:
            overrides["reward"] = args.reward
        if args.device:
            overrides["device"] = args.device
        return cfg.replace(**overrides, record_timings=True).validate()
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def threads_per_worker(n_envs: int) -> int:
    """Torch threads of each of ``n_envs`` > 1 worker processes: its share of the cores."""
    return max(1, (os.cpu_count() or 1) // n_envs)


def torch_threads(n_envs: int) -> int:
    """CPU threads the run's environments use in all (for the CPU minutes it reports), once they are built."""
    import torch

    return threads_per_worker(n_envs) * n_envs if n_envs > 1 else torch.get_num_threads()


def make_vec_env(cfg: EnvConfig, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if n_envs > 1:  # each worker gets its share of the cores
        cfg = cfg.replace(num_threads=threads_per_worker(n_envs))
    return sb3_make_vec_env(CorruptionEnv, n_envs=n_envs, seed=seed,
                            vec_env_cls=DummyVecEnv if n_envs == 1 else SubprocVecEnv,
                            env_kwargs={"config": cfg, "render_mode": "rgb_array"})


def build_envs_and_agent(args: argparse.Namespace, cfg: EnvConfig, hyperparams: dict[str, Any]):
    """The vector env and the agent (made or loaded), every failure a UsageError; nothing is written."""
    try:  # data, data_root and CAM-Net weights are read here, in this process, before any worker starts
        probe = make_vec_env(cfg, 1, args.seed)
        load_dataset(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size, split="test", channels=3,
                     **cfg.dataset_kwargs)  # what evaluation reads
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.n_envs > 1 and not args.resume:
        try:  # the options, checked on the probe before the workers start
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_agent(args.algo, probe, seed=args.seed, **hyperparams)
        except Exception as exc:  # noqa: BLE001 - anything an agent raises on its options is the user's to fix
            probe.close()
            raise UsageError(build_error(args.algo, hyperparams, exc)) from None
    venv = probe if args.n_envs == 1 else make_vec_env(cfg, args.n_envs, args.seed)
    if venv is not probe:
        probe.close()
    tb_dir = str(args.tensorboard_log) if args.tensorboard_log else None  # filled in once the run folder exists
    try:
        if args.resume:
            agent = load_agent(args.algo, str(args.resume / "agent.zip"), env=venv, tensorboard_log=tb_dir)
            # fresh episodes and actions for the resumed part (loading re-seeds with the run's seed: a replay)
            if hasattr(agent, "set_random_seed"):
                fresh = np.random.SeedSequence([args.seed, agent.num_timesteps]).generate_state(1)[0]
                agent.set_random_seed(int(fresh))
        else:
            agent = make_agent(args.algo, venv, seed=args.seed, tensorboard_log=tb_dir, **hyperparams)
    except Exception as exc:  # noqa: BLE001 - reported as one line, with what to do
        venv.close()
        if args.resume:
            raise UsageError(f"--resume: {args.resume / 'agent.zip'} cannot be loaded ({type(exc).__name__}: {exc}); "
                             "it is damaged or from another version, so this run cannot be resumed: start a new "
                             "one") from None
        raise UsageError(build_error(args.algo, hyperparams, exc)) from None
    return venv, agent


def make_run_dir(log_dir: Path, name: str) -> Path:
    """A new folder ``log_dir/name`` (``name_2``, ``name_3``, ... if taken: concurrent launches never collide)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    for k in itertools.count(1):
        path = log_dir / (name if k == 1 else f"{name}_{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def put_cwd_on_path() -> None:
    """``--algo my_algos:Class`` finds my_algos.py in the current folder, as ``python -m`` would."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


# ------------------------------------------------------------------------------------------- the run

def checked_inputs(argv: list[str]) -> tuple[argparse.Namespace, dict[str, Any], EnvConfig]:
    """Every input checked (a UsageError names the fix) before anything is built or written: the arguments (a
    resumed run's), the agent's options, the run's EnvConfig (resolved, as the agent's spec settles it)."""
    cli = build_parser().parse_args(argv)
    put_cwd_on_path()
    args = resume_args(cli, given_options(argv)) if cli.resume else cli
    if args.eval_steps is None:  # runs saved before presets had their own evaluation length ran the cpu one's
        args.eval_steps = ENV_PRESETS[args.preset].eval_steps
    check_numbers(args)
    check_folder(args.log_dir, "--log-dir")
    check_folder(args.tensorboard_log, "--tensorboard-log")
    check_folder(None if args.eval_cache in (None, "none") else Path(args.eval_cache), "--eval-cache")
    try:
        spec = agent_spec(args.algo)
        hyperparams = parse_key_values(args.hyperparams, "--hyperparams")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.reward and not args.resume and not trains_on_reward(args.algo):
        raise UsageError(f"--reward: {args.algo} does not train on the env's reward (each candidate is judged by a "
                         f"whole run: --hyperparams judge:NAME chooses how); leave --reward out")
    cfg = settled_config(env_config_from(args), spec, args)
    print(describe_precision(cfg.precision, cfg.device))
    return args, hyperparams, cfg.replace(precision=resolve_precision(cfg.precision, cfg.device))


def settled_config(cfg: EnvConfig, spec: Any, args: argparse.Namespace) -> EnvConfig:
    """The config the agent works in: an agent that needs an action mode or a keep budget (``config_for``) sets
    them where the command line left them unset, and says so in one line."""
    config_for = getattr(spec.agent_class, "config_for", None)
    if config_for is None or args.resume:
        return cfg
    given = set(parse_key_values(args.env_kwargs, "--env-kwargs")) | (set(cfg.field_names()) if args.config else set())
    try:
        cfg, note = config_for(cfg, given)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if note:
        print(f"{args.algo}: {note}")
    return cfg


def run_name(args: argparse.Namespace, cfg: EnvConfig) -> str:
    """The run folder's name: the agent, its reward (for agents that train on it), the seed, the time."""
    reward = f"_{cfg.reward}" if trains_on_reward(args.algo) else ""
    return f"{args.algo.replace(':', '.')}{reward}_s{args.seed}_{datetime.now():%Y%m%d-%H%M%S}"


def open_run_folder(args: argparse.Namespace, cfg: EnvConfig) -> Path:
    """The run's folder with args.json and env_config.json (a new one is removed again if they cannot be written)."""
    run_dir = args.resume or make_run_dir(args.log_dir, run_name(args, cfg))
    saved_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"resume": None}
    try:
        atomic_write_json(run_dir / "args.json", saved_args)
        atomic_write_text(run_dir / "env_config.json", cfg.to_json())
    except BaseException:
        if not args.resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def announce(args: argparse.Namespace, cfg: EnvConfig, agent: Any, venv: Any, run_dir: Path,
             tb_dir: Path) -> int:
    """Print what the run will do; return the step count it ends at (an agent that steps in rollouts of ``n_steps``
    per env, learning or fixed, finishes its last rollout)."""
    done = agent.num_timesteps if args.resume else 0
    remaining = max(args.total_timesteps - done, 0)
    rollout = getattr(agent, "n_steps", 1) * venv.num_envs
    planned = done + math.ceil(remaining / rollout) * rollout
    what = (f"with reward {cfg.reward}" if trains_on_reward(args.algo) else
            f"each candidate judged by a whole run ({getattr(agent, 'judge', 'its judge')})")
    print(f"run folder: {run_dir}\n{'resuming at step ' + str(done) if done else 'training'} {args.algo} on "
          f"{cfg.dataset}/{cfg.task} {what}, {planned - done} steps"
          f"{f' ({remaining} asked, in whole rollouts of {rollout})' if planned - done != remaining else ''}; "
          f"TensorBoard: tensorboard --logdir {tb_dir}")
    return planned


def train(agent: Any, args: argparse.Namespace, venv: Any, run_dir: Path,
          planned: int) -> tuple[int | None, float, KnownAnswerClock]:
    """Learn with the CLI's callbacks: (130 on Ctrl-C, with the agent saved, else None; the seconds it took; the
    known-answer clock). A fresh run that fails before its first checkpoint leaves no folder behind."""
    agent_path, done = run_dir / "agent.zip", agent.num_timesteps if args.resume else 0
    checkpoint = Checkpoint(agent_path, args.checkpoint_every)
    clock = KnownAnswerClock(threads=torch_threads(args.n_envs))
    callbacks = [CorruptionLogger(args.image_every), ProgressBar(planned, done), checkpoint, clock]
    start = time.time()
    try:  # also with nothing left: learn(0) sets up the logger the evaluation writes to
        agent.learn(max(args.total_timesteps - done, 0), callback=callbacks, tb_log_name="run",
                    reset_num_timesteps=not args.resume)
    except KeyboardInterrupt:
        agent.num_timesteps = checkpoint.trained_timesteps  # the interrupted rollout was never trained on
        save_agent(agent, agent_path)
        print(f"\ninterrupted at step {agent.num_timesteps}: agent saved to {agent_path}.\n"
              f"resume with: python train_agent.py --resume {run_dir}", file=sys.stderr)
        close_quietly(venv)
        return 130, 0.0, clock
    except Exception:
        if not args.resume and not agent_path.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"the run failed before its first checkpoint: its folder {run_dir} was removed", file=sys.stderr)
        close_quietly(venv)
        raise
    venv.close()
    print(f"trained {agent.num_timesteps} steps in {(time.time() - start) / 60:.1f} min; agent saved to {agent_path}")
    return None, time.time() - start, clock


def close_quietly(venv: Any) -> None:
    try:
        venv.close()
    except (EOFError, BrokenPipeError, ConnectionError):
        pass  # SubprocVecEnv workers got the same Ctrl-C


def known_answer(agent: Any, clock: KnownAnswerClock, done: int) -> dict[str, Any]:
    """On a known-answer task, print when the agent found the answer; return the fields eval.json keeps."""
    answer = clock.answer()
    if hasattr(agent, "known_answer") and agent.known_answer():  # a search over whole runs counts runs, not steps
        answer = agent.known_answer()
        reached = (f"after {answer['answer_runs']} runs ({answer['answer_cpu_minutes']} CPU minutes)"
                   if answer["answer_runs"] is not None else "not reached")
        print(f"known answer (the best candidate keeps <= {ANSWER_KEEP} of the planted cells): {reached}; the best "
              f"candidate's keep on planted cells: {answer['final_keep_planted']:.2f} ({answer['search_runs']} runs, "
              f"{answer['search_cpu_minutes']} CPU minutes)")
    elif answer["final_keep_planted"] is not None:
        reached = (f"from step {done + answer['answer_step']} ({answer['answer_cpu_minutes']} CPU minutes into this "
                   f"session)" if answer["answer_step"] is not None else "not reached")
        print(f"known answer (keep on planted cells <= {clock.threshold} from then on): {reached}; keep on planted "
              f"cells over the last {clock.window} steps: {answer['final_keep_planted']:.2f}")
    return answer


# ------------------------------------------------------------------------------------------- the run

@usage_errors
def main(argv: list[str] | None = None) -> int:
    args, hyperparams, cfg = checked_inputs(sys.argv[1:] if argv is None else list(argv))
    venv, agent = build_envs_and_agent(args, cfg, hyperparams)
    run_dir = open_run_folder(args, cfg)
    tb_dir = args.tensorboard_log or run_dir / "tb"
    agent.tensorboard_log = str(tb_dir)
    done = agent.num_timesteps if args.resume else 0
    planned = announce(args, cfg, agent, venv, run_dir, tb_dir)
    code, train_seconds, clock = train(agent, args, venv, run_dir, planned)
    if code is not None:
        return code
    answer = known_answer(agent, clock, done)
    if args.eval_steps <= 0:
        return 0
    return evaluate(agent, args, cfg, run_dir, train_seconds, answer)


def evaluate(agent: Any, args: argparse.Namespace, cfg: EnvConfig, run_dir: Path, train_seconds: float,
             answer: dict[str, Any]) -> int:
    """Write eval.json; on Ctrl-C keep the finished rows in eval.partial.json for --resume to reuse."""
    partial_path = run_dir / PARTIAL_EVAL
    key = {"eval_steps": args.eval_steps, "eval_deterministic": args.eval_deterministic, "seed": args.seed,
           "timesteps": agent.num_timesteps}
    rows: list[RowResult] = []
    if partial_path.is_file():
        saved = read_json(partial_path, "evaluation rows")
        if {k: saved.get(k) for k in key} == key:  # the same agent under the same evaluation
            rows = [RowResult(**row) for row in saved["rows"]]
            print(f"reusing {len(rows)} evaluation row(s) from {partial_path}")

    def keep(row: RowResult) -> None:
        rows.append(row)
        atomic_write_json(partial_path, key | {"rows": rows_to_json(rows)})

    eval_start = time.time()
    try:
        cache = None if args.eval_cache == "none" else RowCache(args.eval_cache)
        rows = evaluate_agent(agent, args.algo, cfg, args.eval_steps, seed=args.seed,
                              deterministic=args.eval_deterministic, done=list(rows), on_row=keep, cache=cache)
    except KeyboardInterrupt:
        print(f"\ninterrupted during evaluation: the trained agent and {len(rows)} finished evaluation row(s) are "
              f"saved in {run_dir}.\nresume with: python train_agent.py --resume {run_dir}", file=sys.stderr)
        return 130
    print(format_rows(rows, args.eval_steps))
    atomic_write_json(run_dir / "eval.json", {"eval_steps": args.eval_steps, "seed": args.seed,
                                              "readable": is_readable(rows), "rows": rows_to_json(rows),
                                              "train_seconds": round(train_seconds, 1),
                                              "eval_seconds": round(time.time() - eval_start, 1),
                                              "timesteps": agent.num_timesteps, "known_answer": answer})
    partial_path.unlink(missing_ok=True)
    logger = getattr(agent, "logger", None)  # SB3 agents have one once learn() has run
    writer = tensorboard_writer(logger) if logger is not None else None
    if writer is not None:  # at the run's last step, straight to TensorBoard (not through SB3's pending values)
        for row in rows:
            tag = row.name.split("(")[0]
            writer.add_scalar(f"eval/knn_{tag}", row.knn, agent.num_timesteps)
            writer.add_scalar(f"eval/linear_{tag}", row.linear, agent.num_timesteps)
        writer.flush()
    print(f"wrote {run_dir / 'eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
