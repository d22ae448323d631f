"""SB3 callbacks: what a run shows in TensorBoard and on the terminal.

``CorruptionLogger`` turns each step's ``info`` into TensorBoard scalars grouped as the style guide
asks (``env/loss``, ``env/keep_fraction``, ``reward/<definition>``, ``time/<stage>``), averaged over
each logging interval, and every ``image_every`` steps writes an image grid (original / corrupted
input with its mask / view 1 / view 2) from ``env.render()``. ``ProgressBar`` is a tqdm bar with the
recent mean reward, keep fraction and an ETA. ``Checkpoint`` saves the agent atomically every N steps.
"""
from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image
from tqdm import tqdm


class CorruptionLogger(BaseCallback):
    """Scalars from ``info`` and image grids of views.

    :param image_every: steps between image grids (0: never); needs envs made with render_mode="rgb_array".
    """

    def __init__(self, image_every: int = 200, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.image_every = image_every

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "loss" not in info:
                continue
            self.logger.record_mean("env/loss", info["loss"])
            self.logger.record_mean("env/keep_fraction", info["keep_fraction"])
            self.logger.record_mean("env/diverged", float(info["diverged"]))
            for name, value in info.get("reward_terms", {}).items():
                self.logger.record_mean(f"reward/{name}", value)
            for stage, seconds in info.get("seconds", {}).items():
                self.logger.record_mean(f"time/{stage}_s", seconds)
        if self.image_every and self.n_calls % self.image_every == 0:
            frames = self.training_env.get_images()
            if frames and frames[0] is not None:
                self.logger.record("images/original_corrupted_view1_view2", Image(frames[0], "HWC"),
                                   exclude=("stdout", "log", "json", "csv"))
        return True


class ProgressBar(BaseCallback):
    """tqdm over timesteps with the mean reward and keep fraction of the last 100 steps.

    :param total_timesteps: the run's target (the bar's total).
    :param initial: timesteps already done (when resuming).
    """

    def __init__(self, total_timesteps: int, initial: int = 0, desc: str = "training") -> None:
        super().__init__()
        self.total, self.initial, self.desc = total_timesteps, initial, desc
        self.rewards: deque[float] = deque(maxlen=100)
        self.keeps: deque[float] = deque(maxlen=100)
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, initial=self.initial, desc=self.desc, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.rewards.extend(np.asarray(self.locals.get("rewards", []), dtype=float).ravel())
        self.keeps.extend(info["keep_fraction"] for info in self.locals.get("infos", []) if "keep_fraction" in info)
        self.bar.update(self.training_env.num_envs)
        if self.n_calls % 5 == 0:
            self.bar.set_postfix(reward=f"{np.mean(self.rewards):+.2e}", keep=f"{np.mean(self.keeps):.2f}")
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


def atomic_agent_save(agent: Any, path: str | Path) -> None:
    """``agent.save`` to a temporary name in the same folder, then rename (SB3 appends .zip)."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    agent.save(tmp)
    os.replace(tmp, path)


class Checkpoint(BaseCallback):
    """Save the agent atomically to ``path`` every ``every`` steps (and at the end of training).

    :param path: where the agent goes (a .zip path).
    :param every: steps between saves.
    """

    def __init__(self, path: str | Path, every: int = 500) -> None:
        super().__init__()
        self.path, self.every = Path(path), every

    def _on_step(self) -> bool:
        if self.every and self.n_calls % self.every == 0:
            atomic_agent_save(self.model, self.path)
        return True

    def _on_training_end(self) -> None:
        atomic_agent_save(self.model, self.path)
