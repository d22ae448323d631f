"""train_agent.py end to end on a tiny config: every file of a run folder, --resume, Ctrl-C, bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import train_agent
from agents import load_agent
from agents.corruptor_evaluation import CorruptorEvaluation
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

ROOT = Path(__file__).resolve().parents[1]
TINY_ENV = ["--env-kwargs", "image_size:16", "batch_size:4", "episode_length:10", "decorruptor:'bicubic'",
            "dataset_kwargs:{'train_size': 256, 'test_size': 64}", "heldout_size:16"]


def run_folder(log_dir: Path) -> Path:
    (folder,) = [p for p in log_dir.iterdir() if p.is_dir()]
    return folder


def test_end_to_end_writes_every_file_and_resumes(tmp_path, capsys, monkeypatch):
    args = ["--algo", "ppo", "--total-timesteps", "16", "--eval-steps", "6", "--log-dir", str(tmp_path),
            "--hyperparams", "n_steps:8", "--image-every", "4", *TINY_ENV]
    assert train_agent.main(args) == 0
    folder = run_folder(tmp_path)
    for name in ("agent.zip", "env_config.json", "args.json", "eval.json"):
        assert (folder / name).is_file(), name
    events = list((folder / "tb").rglob("events.out.tfevents*"))
    assert len(events) == 1
    report = json.loads((folder / "eval.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[0] == "ppo" and names[1] == "keep_all" and names[2].startswith("random(p=")
    assert names[3:] == ["untrained", "simclr_aug"] and isinstance(report["readable"], bool)
    assert "| keep_all |" in capsys.readouterr().out
    assert json.loads((folder / "env_config.json").read_text())["batch_size"] == 4

    # on resume, flags equal to their parser default are honoured, and what the run is cannot change
    cli = ["--resume", str(folder), "--total-timesteps", "2048", "--eval-steps", "500", "--algo", "ppo"]
    resumed = train_agent.resume_args(train_agent.build_parser().parse_args(cli), train_agent.given_options(cli))
    assert (resumed.total_timesteps, resumed.eval_steps, resumed.image_every) == (2048, 500, 4)
    cfg = train_agent.env_config_from(resumed)
    venv, agent = train_agent.build_envs_and_agent(resumed, cfg, {})
    fresh = train_agent.make_vec_env(cfg, 1, seed=0)  # what the run's first episode saw
    assert not np.array_equal(venv.reset()["images"], fresh.reset()["images"])  # the resumed part does not replay it
    venv.close(), fresh.close()
    for change in (["--algo", "a2c"], ["--seed", "1"], ["--env-kwargs", "batch_size:8"], ["--reward", "neg_loss"],
                   ["--hyperparams", "n_steps:4"]):
        assert train_agent.main(["--resume", str(folder), *change]) == 2
        assert f"--resume cannot change {change[0]} (" in capsys.readouterr().err

    assert train_agent.main(["--resume", str(folder), "--total-timesteps", "32", "--eval-steps", "0"]) == 0
    assert load_agent("ppo", str(folder / "agent.zip")).num_timesteps == 32
    tb_runs = {p.parent for p in (folder / "tb").rglob("events.out.tfevents*")}
    assert tb_runs == {events[0].parent}  # same TB run
    tb = EventAccumulator(str(events[0].parent), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert [e.step for e in tb.Images("images/original_corrupted_view1_view2")] == [4, 8, 12, 16, 20, 24, 28, 32]
    loss_steps = [e.step for e in tb.Scalars("train/loss")]
    assert len(loss_steps) == len(set(loss_steps))  # one value per step
    assert {e.step for e in tb.Scalars("eval/knn_keep_all")} == {16}

    # a finished run evaluates again; Ctrl-C in evaluation keeps the finished rows and --resume completes it
    capsys.readouterr()
    (folder / "eval.json").unlink()
    with monkeypatch.context() as patch:
        patch.setattr(CorruptorEvaluation, "simclr_aug", interrupt)
        assert train_agent.main(["--resume", str(folder), "--eval-steps", "4"]) == 130
    assert "resume with: python train_agent.py --resume" in capsys.readouterr().err
    assert not (folder / "eval.json").exists()
    assert len(json.loads((folder / "eval.partial.json").read_text())["rows"]) == 4
    assert train_agent.main(["--resume", str(folder), "--eval-steps", "4"]) == 0
    assert "reusing 4 evaluation row(s)" in capsys.readouterr().out
    report = json.loads((folder / "eval.json").read_text())
    assert (report["eval_steps"], report["timesteps"], len(report["rows"])) == (4, 32, 5)
    assert not (folder / "eval.partial.json").exists()


def interrupt(self):
    raise KeyboardInterrupt


def test_fixed_baseline_trains_through_the_same_cli(tmp_path):
    assert train_agent.main(["--algo", "random", "--hyperparams", "keep_prob:0.5", "--total-timesteps", "8",
                             "--eval-steps", "0", "--log-dir", str(tmp_path), *TINY_ENV]) == 0
    assert load_agent("random", str(run_folder(tmp_path) / "agent.zip")).num_timesteps >= 8


@pytest.mark.parametrize("args,message", [
    (["--algo", "dqn_of_dreams"], "available: a2c, cmaes, cmaes_labels, cowmask, keep_all, oracle, ppo"),
    (["--reward", "vibes"], "unknown reward 'vibes'; available"),
    (["--env-kwargs", "batchsize:3"], "valid keys: .*batch_size"),
    (["--algo", "not_a_package.sub:Algo"], "cannot import 'not_a_package.sub'"),
    (["--hyperparams", "n_steps"], "key:value"),
])
def test_bad_input_is_explained(tmp_path, capsys, args, message):
    assert train_agent.main([*args, "--log-dir", str(tmp_path), "--total-timesteps", "4", "--eval-steps", "0"]) == 2
    import re
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not list(tmp_path.iterdir())  # no run folder


def test_resume_needs_a_run_folder(tmp_path, capsys):
    assert train_agent.main(["--resume", str(tmp_path)]) == 2
    assert "not a run folder: expected args.json, env_config.json, agent.zip" in capsys.readouterr().err


def test_sigint_leaves_a_loadable_agent(tmp_path):
    cmd = [sys.executable, str(ROOT / "train_agent.py"), "--algo", "reinforce", "--total-timesteps", "100000",
           "--eval-steps", "0", "--log-dir", str(tmp_path), "--hyperparams", "n_steps:4", *TINY_ENV]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/tb/*/events*")):
        time.sleep(0.5)  # TensorBoard's file appears once learning has started
    events = list(tmp_path.glob("*/tb/*/events*"))
    header = events[0].stat().st_size if events else 0
    while time.time() < deadline and events and events[0].stat().st_size <= header:
        time.sleep(0.5)  # ... and grows when the first rollout's scalars are written (a loaded machine is slow)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "resume with: python train_agent.py --resume" in output
    agent = load_agent("reinforce", str(run_folder(tmp_path) / "agent.zip"))
    assert agent.num_timesteps > 0 and agent.num_timesteps % 4 == 0  # an interrupted rollout's steps are not counted
