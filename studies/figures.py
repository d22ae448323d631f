"""Regenerate the pictures of the README and docs: one environment step, the known-answer tasks (a shortcut under its
oracle; a distractor kept, where the two views disagree on it, and under its oracle), CAM-Net's sample grids, the
Fashion-MNIST step (when its files are installed) and, from a ``train_agent.py`` run folder, the corruptor it found.

    python studies/figures.py            # writes docs/env_step.png, docs/shortcut_random_oracle.png,
                                       # docs/distractor_fixed_keep_all.png, docs/distractor_random_oracle.png,
                                       # docs/camnet_sr_colorize.png, docs/camnet_sr.png, docs/fashion_mnist_step.png
    python studies/figures.py --run runs/cmaes_s0_...  --out docs/found_corruptor.png       # a found corruptor
    python studies/figures.py --rules docs/results/fashion_mnist/plain --out docs/fashion_mnist_found.png
                                       # the corruptors a benchmark's searches chose (seed 0), one above the other
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.camnet import shipped_checkpoint
from corruption_env.corruption import cowmask

DOCS = Path(__file__).resolve().parents[1] / "docs"


def env_step_figure(path: Path, seed: int = 3) -> None:
    """Render one step of the default environment with CowMask-like masks keeping about 60 % of cells."""
    import torch

    env = CorruptionEnv(EnvConfig(), render_mode="rgb_array")
    env.reset(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    masks = cowmask(env.config.batch_size, env.config.mask_grid, 0.625, 1.0, gen)
    env.step(masks.numpy().astype(np.int8))
    Image.fromarray(env.render()).save(path)


def known_answer_figure(path: Path, kind: str, placement: str, corruptor: str, seed: int = 0) -> None:
    """One step of a known-answer task (``kind`` shortcut or distractor, ``placement`` fixed or random) with a
    fixed corruptor's masks: planted images / masked input / the two views."""
    from agents import make_agent

    env = CorruptionEnv(EnvConfig(dataset_kwargs={kind: placement}), render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    env.step(make_agent(corruptor, env).predict(obs)[0])
    Image.fromarray(env.render()).save(path)


def fashion_mnist_figure(path: Path, seed: int = 3) -> bool:
    """One step of the fashion_mnist preset under random masks at the keep budget (False if its files are missing)."""
    from agents import make_agent

    try:
        env = CorruptionEnv(EnvConfig.preset("fashion_mnist", keep_budget=0.75, action_mode="scores"),
                            render_mode="rgb_array")
    except FileNotFoundError:
        return False
    obs, _ = env.reset(seed=seed)
    env.step(make_agent("random", env, seed=seed, keep_prob=0.75).predict(obs)[0])
    Image.fromarray(env.render()).save(path)
    return True


def found_corruptor_figure(run: Path, path: Path, seed: int = 0) -> None:
    """One step of a ``train_agent.py`` run's environment with the masks of the corruptor it found: which cells of
    which images it drops (row 2, black), and the two views made of what it keeps."""
    import json

    from agents import load_agent

    args = json.loads((run / "args.json").read_text())
    config = EnvConfig.from_json(run / "env_config.json")
    env = CorruptionEnv(config, render_mode="rgb_array")
    agent = load_agent(args["algo"], str(run / "agent.zip"), env=env)
    obs, _ = env.reset(seed=seed)
    if getattr(agent, "keeps_everything", False):
        env = CorruptionEnv(config.without_budget(), render_mode="rgb_array")
        obs, _ = env.reset(seed=seed)
    env.step(agent.predict(obs, deterministic=True)[0])
    Image.fromarray(env.render()).save(path)


def found_rules_figure(results: Path, path: Path, seed: int = 0) -> list[str]:
    """The parametric corruptors a benchmark's searches chose on ``seed`` (their ``theta/*`` columns in ``runs.csv``;
    the corruptor each searched, from ``run_settings.json``), each as one step of the run's environment (originals /
    masked input / the two views), one above the other in the order of ``runs.csv``, separated by a white band.
    Returns one line per search: its parameters by name (a scorer net's weights left out)."""
    import csv
    import json

    from corruption_env.whole_run import make_corruptor

    settings = json.loads((results / "run_settings.json").read_text())
    rows = [r for r in csv.DictReader((results / "runs.csv").open()) if r["seed"] == str(seed)
            and any(k.startswith("theta/") and r[k] for k in r)]
    if not rows:
        raise SystemExit(f"{results / 'runs.csv'} has no search with chosen weights on seed {seed}")
    frames, lines = [], []
    for row in rows:
        run = settings[row["run_id"]]
        config = EnvConfig.from_dict(run["env"])
        env = CorruptionEnv(config, render_mode="rgb_array")
        corruptor = make_corruptor(run["agent_options"].get("corruptor", "auto"), config)
        names = corruptor.parameter_names()
        theta = np.array([float(row[f"theta/{name}"]) for name in names])
        obs, _ = env.reset(seed=seed)
        env.step(corruptor.act(theta, obs))
        frames.append(env.render())
        named = [(n, t) for n, t in zip(names, theta) if not n.startswith(("conv", "out_"))]
        lines.append(f"{row['task']} {row['name']}: " + ", ".join(f"{n} {t:+.2f}" for n, t in named)
                     + (" (the search's answer was to keep every cell: this is its best candidate, not its row)"
                        if row.get("keeps_everything") == "1.0" else ""))
    band = np.full((8, frames[0].shape[1], 3), 255, dtype=np.uint8)
    Image.fromarray(np.concatenate([x for f in frames for x in (f, band)][:-1])).save(path)
    return lines


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="draw the corruptor a train_agent.py run folder found, and stop")
    parser.add_argument("--rules", type=Path,
                        help="draw the corruptors a benchmark results folder's searches chose on seed 0, and stop")
    parser.add_argument("--out", type=Path, default=DOCS / "found_corruptor.png")
    args = parser.parse_args()
    if args.rules:
        print("\n".join(found_rules_figure(args.rules, args.out)))
        print(f"wrote {args.out}")
        return
    if args.run:
        found_corruptor_figure(args.run, args.out)
        print(f"wrote {args.out}")
        return
    DOCS.mkdir(exist_ok=True)
    env_step_figure(DOCS / "env_step.png")
    for kind, placement, corruptor in (("shortcut", "random", "oracle"), ("distractor", "fixed", "keep_all"),
                                       ("distractor", "random", "oracle")):
        known_answer_figure(DOCS / f"{kind}_{placement}_{corruptor}.png", kind, placement, corruptor)
    for task in ("sr_colorize", "sr"):
        shutil.copyfile(shipped_checkpoint("shapes", task, 2).with_suffix(".png"), DOCS / f"camnet_{task}.png")
    shutil.copyfile(shipped_checkpoint("fashion_mnist", "sr", 2).with_suffix(".png"), DOCS / "camnet_fashion_mnist_sr.png")
    if not fashion_mnist_figure(DOCS / "fashion_mnist_step.png"):
        print("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): its step picture is left as it is")
    print(f"wrote {', '.join(p.name for p in sorted(DOCS.glob('*.png')))} in {DOCS}")


if __name__ == "__main__":
    main()
