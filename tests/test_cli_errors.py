"""Every bad input a user met at the command-line boundary (issue 13) is one line on stderr, exit status 2,
no traceback, and nothing left behind: train_agent.py and python -m corruption_env.camnet.pretrain.

Each case runs the CLI's ``main`` in-process (what ``raise SystemExit(main())`` exits with, fast); a few
also run as real subprocesses, to see exactly what a shell sees.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import train_agent
from corruption_env.camnet import pretrain
from corruption_env.camnet.checkpoint import shipped_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = ["image_size:16", "batch_size:4", "episode_length:10", "decorruptor:'bicubic'",
            "dataset_kwargs:{'train_size': 64, 'test_size': 32}", "heldout_size:16"]
FILE_ENV = [kv for kv in TINY_ENV if not kv.startswith("dataset_kwargs")]  # file datasets have other options
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def train_agent_cases(tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, a fragment the message must contain) for every train_agent.py case."""
    write(tmp / "bad.json", '{"batch_size": 8,}')
    write(tmp / "list.json", "[1, 2]")
    write(tmp / "junk.pt", "not a checkpoint")
    write(tmp / "a_file", "")
    (tmp / "a_dir").mkdir()
    env = ["--env-kwargs", *TINY_ENV]
    return [
        (["--config", str(tmp / "missing.json")], "config file .*missing.json does not exist"),
        (["--config", str(tmp / "a_dir")], "a_dir is a directory; pass a JSON file"),
        (["--config", str(tmp / "bad.json")], "config file .*bad.json is not valid JSON"),
        (["--config", str(tmp / "list.json")], "list.json must hold a JSON object .* not a list"),
        (["--env-kwargs", *FILE_ENV, "dataset:'imagefolder'", f"data_root:'{tmp / 'nope'}'"], "nope does not exist"),
        (["--env-kwargs", *FILE_ENV, "dataset:'idx'", f"data_root:'{tmp / 'a_dir'}'"], "train-images-idx3-ubyte"),
        (["--env-kwargs", *FILE_ENV, "dataset:'cifar10'", f"data_root:'{tmp / 'nope'}'"], "nope does not exist"),
        (["--device", "foo", *env], "unknown device 'foo'"),
        (["--env-kwargs", *TINY_ENV, "track_rewards:'foo'"], "track_rewards must be 'free', 'all' or a list"),
        (["--env-kwargs", *TINY_ENV, "dataset_kwargs:{'trainsize': 64}"], "no option.* trainsize .*train_size"),
        (["--env-kwargs", *TINY_ENV, "lr:abc"], r"wrong type for lr='abc' \(expected float\)"),
        (["--hyperparams", "n_steps:0", *env], "n_steps must be an integer >= 1, got 0"),
        (["--hyperparams", "learning_rate:abc", *env], "option learning_rate takes a number"),
        (["--hyperparams", "nsteps:8", *env], r"no option 'nsteps' \(did you mean 'n_steps'\?\)"),
        (["--algo", "reinforce", "--hyperparams", "policy_kwargs:5", *env], "cannot be built .*TypeError"),
        (["--n-envs", "0", *env], "--n-envs 0 \\(must be >= 1\\)"),
        (["--log-dir", str(tmp / "a_file"), *env], "a_file is a file, not a folder"),
        (["--total-timesteps", "-5", *env], "--total-timesteps -5 \\(must be >= 1\\)"),
        (["--env-kwargs", *TINY_ENV, "decorruptor:'camnet'", f"camnet_checkpoint:'{tmp / 'junk.pt'}'"],
         "junk.pt could not be read .* --out PATH.pt"),  # never suggests overwriting the user's file
        (["--algo", "no_such_module:Algo", *env], "cannot import 'no_such_module'"),
        (["--preset", "bogus"], "invalid choice: 'bogus'"),
        # a baseline that cannot act in its env: said when it is built, before the run folder exists
        (["--algo", "oracle", *env], "oracle corruptor needs a known-answer task"),
        (["--algo", "oracle", "--env-kwargs", *TINY_ENV, "action_mode:'shared'",
          "dataset_kwargs:{'train_size': 64, 'test_size': 32, 'shortcut': 'random'}"],
         "oracle cannot share one mask .* use --env-kwargs action_mode:cells"),
        # an agent that ignores the reward, or needs other actions than the user asked for
        (["--algo", "cmaes", "--reward", "neg_loss", *env], "--reward: cmaes does not train on the env's reward"),
        (["--algo", "run_ppo", "--reward", "neg_loss", *env], "--reward: run_ppo does not train on the env's reward"),
        (["--algo", "cmaes", "--env-kwargs", *TINY_ENV, "action_mode:'cells'"],
         "needs --env-kwargs action_mode:scores or action_mode:shared_scores, not 'cells'"),
        # a population too small for the optimiser
        (["--algo", "cmaes", "--hyperparams", "population:2", "engine:'local'", *env],
         "population must be an integer >= 4 for optimizer 'cmaes'"),
        (["--algo", "cmaes", "--hyperparams", "optimizer:'nope'", "engine:'local'", *env], "unknown optimizer 'nope'"),
        # the label-judged ceiling judged without labels would pass a label-free search off as the ceiling
        (["--algo", "cmaes_labels", "--hyperparams", "judge:'rankme'", "engine:'local'", *env],
         r"takes a judge that reads labels \(label_loss, probe_accuracy\), not 'rankme'"),
        # seeds outside what numpy's global seeding (SB3's set_random_seed) and gymnasium take
        (["--seed", "-1", *env], r"--seed -1 \(must be >= 0\)"),
        (["--seed", str(2**32), *env], r"--seed 4294967296 \(must be <= 4294967295\)"),
        # the default an option has here, and what cannot be an agent here
        (["--hyperparams", "n_steps:abc", *env], r"option n_steps takes a number \(default 32\)"),
        (["--algo", "stable_baselines3:DQN", *env], "off-policy stable-baselines3 algorithm"),
    ]


def check_one_line(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ") and re.search(pattern, err), err


def test_train_agent_bad_inputs(tmp_path, capsys, monkeypatch):
    log_dir, temporary = tmp_path / "runs", tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))  # the system's temporary folder, for this test
    for args, pattern in train_agent_cases(tmp_path):
        log = [] if "--log-dir" in args else ["--log-dir", str(log_dir)]
        try:
            code = train_agent.main([*args, *log, "--total-timesteps", "4", "--eval-steps", "0"]
                                    if "--total-timesteps" not in args else [*args, *log, "--eval-steps", "0"])
        except SystemExit as exc:  # argparse's own errors exit from parse_args
            code = exc.code
        check_one_line(code, capsys.readouterr().err, pattern)
        assert not log_dir.exists() or not list(log_dir.iterdir()), args  # no half-made run folder
        assert not list(temporary.iterdir()), args  # and no temporary file


@NO_CUDA
@pytest.mark.parametrize("args", [["--preset", "gpu"], ["--device", "cuda"]])
def test_cuda_without_cuda(tmp_path, capsys, args):
    assert train_agent.main([*args, "--log-dir", str(tmp_path / "runs")]) == 2
    check_one_line(2, capsys.readouterr().err, "torch sees no CUDA device")
    assert not (tmp_path / "runs").exists()


def test_algo_module_in_the_current_folder_is_found(tmp_path, monkeypatch, capsys):
    write(tmp_path / "my_algos_cwd.py", "from stable_baselines3 import PPO\n\n\nclass ClippedPPO(PPO):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    # the import succeeds (cwd is searched, as python -m does); the misspelt option is then what is reported
    assert train_agent.main(["--algo", "my_algos_cwd:ClippedPPO", "--hyperparams", "nsteps:8",
                             "--env-kwargs", *TINY_ENV]) == 2
    err = capsys.readouterr().err
    assert "agent 'my_algos_cwd:ClippedPPO' has no option 'nsteps'" in err and "seed" not in err.split(";")[0], err
    sys.modules.pop("my_algos_cwd", None)


def test_concurrent_launches_get_their_own_folders(tmp_path):
    folders = {train_agent.make_run_dir(tmp_path, "ppo_reward_s0_20261128-120000") for _ in range(3)}
    assert len(folders) == 3 and all(f.is_dir() for f in folders)


def test_resume_of_a_damaged_agent(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    args = vars(train_agent.build_parser().parse_args(["--env-kwargs", *TINY_ENV, "--eval-steps", "0"]))
    write(run / "args.json", json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in args.items()}))
    write(run / "env_config.json", train_agent.env_config_from(argparse_namespace(args)).to_json())
    write(run / "agent.zip", "PK truncated")
    assert train_agent.main(["--resume", str(run)]) == 2
    check_one_line(2, capsys.readouterr().err, "agent.zip cannot be loaded .*start a new one")


def argparse_namespace(values: dict):
    import argparse

    return argparse.Namespace(**values)


def pretrain_cases(tmp: Path) -> list[tuple[list[str], str]]:
    write(tmp / "junk.pt", "not a checkpoint")
    out = ["--out", str(tmp / "net.pt")]
    return [
        ([*out, "--task", "foo"], "invalid choice: 'foo'"),
        ([*out, "--batch-size", "0"], "--batch-size 0: must be >= 1"),
        (["--out", str(tmp / "missing.pt"), "--eval-only"], "missing.pt does not exist"),
        (["--out", str(tmp / "junk.pt"), "--eval-only"], "junk.pt could not be read"),
        ([*out, "--dataset", "imagefolder", "--data-root", str(tmp / "nope")], "nope does not exist"),
        ([*out, "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
        ([*out, "--device", "foo"], "--device: unknown device 'foo'"),
        ([*out, "--distill-from", str(tmp / "junk.pt")], "--distill-from: .*junk.pt could not be read"),
        ([*out, "--distill-from", str(shipped_checkpoint("shapes", "sr_colorize", 2)), "--task", "sr"],
         "--distill-from: .*task='sr_colorize' \\(wanted 'sr'\\)"),
        ([*out, "--distill-from", str(shipped_checkpoint("shapes", "sr_colorize", 2)), "--z-dim", "4"],
         "the student's codes must be the teacher's, but --z-dim 4 \\(teacher 32\\)"),
    ]


def test_pretrain_bad_inputs(tmp_path, capsys):
    for args, pattern in pretrain_cases(tmp_path):
        before = set(tmp_path.iterdir())
        try:
            code = pretrain.main(args)
        except SystemExit as exc:
            code = exc.code
        check_one_line(code, capsys.readouterr().err, pattern)
        assert set(tmp_path.iterdir()) == before, args  # nothing written


@pytest.mark.parametrize("command,args,pattern", [
    ([str(ROOT / "train_agent.py")], ["--total-timesteps", "-5"], "must be >= 1"),
    ([str(ROOT / "train_agent.py")], ["--config", "{missing}"], "does not exist"),
    ([str(ROOT / "train_agent.py")], ["--seed", "-1"], "--seed -1"),
    (["-m", "corruption_env.camnet.pretrain"], ["--out", "x.pt", "--task", "foo"], "invalid choice"),
])
def test_real_processes_print_one_line(tmp_path, command, args, pattern):
    args = [a.replace("{missing}", str(tmp_path / "missing.json")) for a in args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, *command, *args, "--log-dir", str(tmp_path / "runs")]
                            if "train_agent" in command[0] else [sys.executable, *command, *args],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    check_one_line(result.returncode, result.stderr, pattern)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("parser", [train_agent.build_parser(), pretrain.build_parser()],
                         ids=["train_agent", "pretrain"])
def test_every_option_has_help(parser):
    missing = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not missing


@pytest.mark.parametrize("algo", ["reinforce", "keep_all"])  # a learner and a fixed corruptor: both run whole rollouts
def test_a_budget_below_one_rollout_is_announced_as_the_whole_rollout_it_runs(tmp_path, capsys, recwarn, algo):
    assert train_agent.main(["--algo", algo, "--hyperparams", "n_steps:4", "--total-timesteps", "3",
                             "--eval-steps", "0", "--log-dir", str(tmp_path), "--env-kwargs", *TINY_ENV]) == 0
    out = capsys.readouterr().out
    assert "4 steps (3 asked, in whole rollouts of 4)" in out and "trained 4 steps" in out
    assert not [w for w in recwarn if "update" in str(w.message)]


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, capsys, monkeypatch):
    from agents.reinforce import Reinforce

    def fail(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(Reinforce, "learn", fail)
    with pytest.raises(RuntimeError, match="broken on purpose"):
        train_agent.main(["--algo", "reinforce", "--total-timesteps", "4", "--eval-steps", "0",
                          "--log-dir", str(tmp_path / "runs"), "--env-kwargs", *TINY_ENV])
    assert not list((tmp_path / "runs").iterdir())
    assert "its folder" in capsys.readouterr().err
