"""Train one agent to corrupt images for contrastive learning, evaluate its corruptor, save everything.

    python train_agent.py --algo ppo                      # the embedded default: shapes, shipped CAM-Net
    python train_agent.py --algo reinforce --reward heldout_gain --seed 1
    python train_agent.py --algo sb3_contrib:TRPO --hyperparams n_steps:32
    python train_agent.py --resume runs/ppo_ma_neg_loss_derivative_s0_20261128-120000

Every run writes one folder under ``--log-dir``: ``agent.zip``, ``env_config.json``, ``args.json``,
TensorBoard events (``tb/``: env/, reward/, time/, eval/ scalars and image grids of the views) and
``eval.json`` (kNN and linear-probe accuracy of encoders trained with the agent's masks and with the
baselines). Ctrl-C saves the agent and prints how to resume. Options follow rl-zoo3's spelling.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from agents import agent_spec, available_agents, check_budget, load_agent, make_agent
from agents.callbacks import Checkpoint, CorruptionLogger, ProgressBar, atomic_agent_save
from agents.evaluation import evaluate_agent, format_rows, is_readable, rows_to_json
from corruption_env import CorruptionEnv, EnvConfig, available_rewards
from corruption_env.env import check_names
from corruption_env.precision import describe_precision, resolve_precision

RUN_FILES = ("args.json", "env_config.json", "agent.zip")


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["batch_size:32", "reward_kwargs:{'beta': 0.5}"]`` -> dict; values are Python literals or strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition(":")
        if not sep or not key:
            raise SystemExit(f"error: {option} expects key:value pairs, got {item!r}")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo",
                        help=f"one of {', '.join(available_agents())}, or package.module:Class (default ppo)")
    parser.add_argument("--total-timesteps", type=int, default=2048, help="environment steps (default 2048, ~15 min on 2 cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device of env and agent (default: the preset's)")
    parser.add_argument("--preset", default="cpu", choices=EnvConfig.PRESETS)
    parser.add_argument("--n-envs", type=int, default=1, help="parallel environments (SubprocVecEnv when > 1)")
    parser.add_argument("--reward", default=None, help=f"reward definition: {', '.join(available_rewards())}")
    parser.add_argument("--env-kwargs", nargs="*", metavar="KEY:VALUE", help="EnvConfig overrides, e.g. batch_size:32")
    parser.add_argument("--hyperparams", nargs="*", metavar="KEY:VALUE", help="agent options, e.g. n_steps:16")
    parser.add_argument("--config", type=Path, default=None, help="EnvConfig JSON file (before --env-kwargs)")
    parser.add_argument("--log-dir", type=Path, default=Path("runs"), help="where run folders go")
    parser.add_argument("--tensorboard-log", type=Path, default=None, help="TensorBoard folder (default RUN/tb)")
    parser.add_argument("--resume", type=Path, default=None, help="a run folder to continue")
    parser.add_argument("--eval-steps", type=int, default=500,
                        help="SimCLR updates per evaluated encoder (default 500; the floor is cleared by 250; 0: skip)")
    parser.add_argument("--eval-deterministic", action="store_true", help="evaluate the policy's most likely masks")
    parser.add_argument("--image-every", type=int, default=200, help="steps between TensorBoard image grids")
    parser.add_argument("--checkpoint-every", type=int, default=256, help="steps between agent checkpoints")
    return parser


def env_config_from(args: argparse.Namespace) -> EnvConfig:
    cfg = EnvConfig.from_json(args.config) if args.config else EnvConfig.preset(args.preset)
    overrides = parse_key_values(args.env_kwargs, "--env-kwargs")
    if args.reward:
        overrides["reward"] = args.reward
    if args.device:
        overrides["device"] = args.device
    return cfg.replace(**overrides, record_timings=True)


def make_vec_env(cfg: EnvConfig, n_envs: int, seed: int):
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if n_envs > 1:  # each worker gets its share of the cores
        cfg = cfg.replace(num_threads=max(1, (os.cpu_count() or 1) // n_envs))
    return sb3_make_vec_env(CorruptionEnv, n_envs=n_envs, seed=seed,
                            vec_env_cls=DummyVecEnv if n_envs == 1 else SubprocVecEnv,
                            env_kwargs={"config": cfg, "render_mode": "rgb_array"})


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def resume_args(folder: Path, cli: argparse.Namespace) -> argparse.Namespace:
    missing = [f for f in RUN_FILES if not (folder / f).is_file()]
    if not folder.is_dir() or missing:
        raise SystemExit(f"error: --resume {folder} is not a run folder: expected {', '.join(RUN_FILES)} in it "
                         f"(missing: {', '.join(missing) if folder.is_dir() else 'the folder itself'})")
    saved = json.loads((folder / "args.json").read_text())
    args = argparse.Namespace(**{**vars(cli), **{k: v for k, v in saved.items() if k in vars(cli)}})
    for key in ("total_timesteps", "eval_steps"):  # these may be changed when resuming
        if getattr(cli, key) != build_parser().get_default(key):
            setattr(args, key, getattr(cli, key))
    args.resume, args.config = folder, None
    for key in ("log_dir", "tensorboard_log"):
        setattr(args, key, Path(getattr(args, key)) if getattr(args, key) else None)
    return args


def main(argv: list[str] | None = None) -> int:
    cli = build_parser().parse_args(argv)
    args = resume_args(cli.resume, cli) if cli.resume else cli
    try:
        spec = agent_spec(args.algo)
        if args.resume:
            cfg = EnvConfig.from_json(args.resume / "env_config.json")
        else:
            cfg = env_config_from(args)
        check_names(cfg)
        hyperparams = parse_key_values(args.hyperparams, "--hyperparams")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None

    if args.resume:
        run_dir = args.resume
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = args.log_dir / f"{args.algo.replace(':', '.')}_{cfg.reward}_s{args.seed}_{stamp}"
        run_dir.mkdir(parents=True, exist_ok=False)
    tb_dir = args.tensorboard_log or run_dir / "tb"
    saved_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(run_dir / "args.json", saved_args | {"resume": None})
    print(describe_precision(cfg.precision, cfg.device))
    cfg = cfg.replace(precision=resolve_precision(cfg.precision, cfg.device))  # saved resolved: the run reproduces
    cfg.to_json(run_dir / "env_config.json")

    venv = make_vec_env(cfg, args.n_envs, args.seed)
    agent_path = run_dir / "agent.zip"
    try:
        if args.resume:
            agent = load_agent(args.algo, str(agent_path), env=venv, tensorboard_log=str(tb_dir))
        else:
            agent = make_agent(args.algo, venv, seed=args.seed, tensorboard_log=str(tb_dir), **hyperparams)
    except ValueError as exc:
        venv.close()
        raise SystemExit(f"error: {exc}") from None
    done = agent.num_timesteps if args.resume else 0
    remaining = max(args.total_timesteps - done, 0)
    if spec.learns:
        check_budget(agent, remaining)
    print(f"run folder: {run_dir}\n{'resuming at step ' + str(done) if done else 'training'} {args.algo} on "
          f"{cfg.dataset}/{cfg.task} with reward {cfg.reward}, {remaining} steps; TensorBoard: tensorboard --logdir {tb_dir}")

    callbacks = [CorruptionLogger(args.image_every), ProgressBar(args.total_timesteps, done),
                 Checkpoint(agent_path, args.checkpoint_every)]
    start = time.time()
    try:
        if remaining:
            agent.learn(remaining, callback=callbacks, tb_log_name="run", reset_num_timesteps=not args.resume)
    except KeyboardInterrupt:
        atomic_agent_save(agent, agent_path)
        print(f"\ninterrupted at step {agent.num_timesteps}: agent saved to {agent_path}.\n"
              f"resume with: python train_agent.py --resume {run_dir}", file=sys.stderr)
        try:
            venv.close()
        except (EOFError, BrokenPipeError, ConnectionError):
            pass  # SubprocVecEnv workers got the same Ctrl-C
        return 130
    atomic_agent_save(agent, agent_path)
    venv.close()
    train_seconds = time.time() - start
    print(f"trained {agent.num_timesteps} steps in {train_seconds / 60:.1f} min; agent saved to {agent_path}")

    if args.eval_steps <= 0:
        return 0
    eval_start = time.time()
    rows = evaluate_agent(agent, args.algo, cfg, args.eval_steps, seed=args.seed,
                          deterministic=args.eval_deterministic)
    table = format_rows(rows, args.eval_steps)
    print(table)
    write_json(run_dir / "eval.json", {"eval_steps": args.eval_steps, "seed": args.seed, "readable": is_readable(rows),
                                       "rows": rows_to_json(rows), "train_seconds": round(train_seconds, 1),
                                       "eval_seconds": round(time.time() - eval_start, 1),
                                       "timesteps": agent.num_timesteps})
    for row in rows:
        tag = row.name.split("(")[0]
        agent.logger.record(f"eval/knn_{tag}", row.knn)
        agent.logger.record(f"eval/linear_{tag}", row.linear)
    agent.logger.dump(step=agent.num_timesteps)
    print(f"wrote {run_dir / 'eval.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
