"""Regenerate the README's pictures: one environment step, the known-answer tasks under their oracle,
and CAM-Net's sample grids.

    python bench/figures.py            # writes docs/env_step.png, docs/known_answer_{fixed,random}.png,
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


def known_answer_figure(path: Path, variant: str, seed: int = 0) -> None:
    """One step of a known-answer task with the oracle's mask: planted images / masked input / views."""
    from agents import make_agent

    env = CorruptionEnv(EnvConfig(dataset_kwargs={"shortcut": variant}), render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    env.step(make_agent("oracle", env).predict(obs)[0])
    Image.fromarray(env.render()).save(path)


def main() -> None:
    DOCS.mkdir(exist_ok=True)
    env_step_figure(DOCS / "env_step.png")
    for variant in ("fixed", "random"):
        known_answer_figure(DOCS / f"known_answer_{variant}.png", variant)
    for task in ("sr_colorize", "sr"):
        shutil.copyfile(shipped_checkpoint("shapes", task, 2).with_suffix(".png"), DOCS / f"camnet_{task}.png")
    print(f"wrote {', '.join(p.name for p in sorted(DOCS.glob('*.png')))} in {DOCS}")


if __name__ == "__main__":
    main()
