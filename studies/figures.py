"""Regenerate the pictures of the README and docs: one environment step, the known-answer tasks (a shortcut under its
oracle; a distractor kept, where the two views disagree on it, and under its oracle), and CAM-Net's
sample grids.

    python studies/figures.py            # writes docs/env_step.png, docs/shortcut_random_oracle.png,
                                       # docs/distractor_fixed_keep_all.png, docs/distractor_random_oracle.png,
                                       # docs/camnet_sr_colorize.png, docs/camnet_sr.png
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


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    env_step_figure(DOCS / "env_step.png")
    for kind, placement, corruptor in (("shortcut", "random", "oracle"), ("distractor", "fixed", "keep_all"),
                                       ("distractor", "random", "oracle")):
        known_answer_figure(DOCS / f"{kind}_{placement}_{corruptor}.png", kind, placement, corruptor)
    for task in ("sr_colorize", "sr"):
        shutil.copyfile(shipped_checkpoint("shapes", task, 2).with_suffix(".png"), DOCS / f"camnet_{task}.png")
    print(f"wrote {', '.join(p.name for p in sorted(DOCS.glob('*.png')))} in {DOCS}")


if __name__ == "__main__":
    main()
