"""SB3 callbacks: what a run shows in TensorBoard and on the terminal.

``CorruptionLogger`` turns each step's ``info`` into TensorBoard scalars grouped as the style guide
asks (``env/loss``, ``env/keep_fraction``, ``reward/<definition>``, ``time/<stage>``), averaged over
each logging interval, and every ``image_every`` timesteps (counted across resumes) writes an image grid
(original / corrupted input with its mask / view 1 / view 2) from ``env.render()`` at that timestep.
``ProgressBar`` is a tqdm bar with the recent mean reward, keep fraction and an ETA. ``Checkpoint``
saves the agent atomically every N steps, always between rollouts, so a saved agent has trained on
every step it counts. ``KnownAnswerClock`` times, on a known-answer task, how long the agent took to
stop keeping the planted cells.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import time

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from tqdm import tqdm

from corruption_env.files import atomic_path


ANSWER_KEEP = 0.2  # keep rate on a known-answer task's planted cells at or below which the answer counts as found


def settled_window(values: list[float], window: int, threshold: float = ANSWER_KEEP) -> tuple[int | None, list[float]]:
    """Means of ``values`` over consecutive windows, and the index of the first value of the first window from
    which every later window's mean (the last, possibly shorter one included) is at or below ``threshold`` (None:
    never settled)."""
    means = [float(np.mean(values[i:i + window])) for i in range(0, len(values), window)]
    first = len(means)
    while first > 0 and means[first - 1] <= threshold:
        first -= 1
    return (first * window if first < len(means) else None), means


def tensorboard_writer(logger: Logger) -> Any:
    """The TensorBoard ``SummaryWriter`` behind an SB3 logger (None without one), for entries that
    belong to an exact step (images, evaluation) rather than to the next ``logger.dump``."""
    for output in logger.output_formats:
        if isinstance(output, TensorBoardOutputFormat):
            return output.writer
    return None


def save_agent(agent: Any, path: str | Path) -> None:
    """``agent.save`` atomically (the temporary name keeps the .zip suffix, so SB3 adds none)."""
    with atomic_path(path) as tmp:
        agent.save(tmp)


class CorruptionLogger(BaseCallback):
    """Scalars from ``info`` and image grids of views.

    :param image_every: steps between image grids (0: never); needs envs made with render_mode="rgb_array".
    """

    def __init__(self, image_every: int = 200, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.image_every = image_every
        self.next_image = 0

    def _on_training_start(self) -> None:  # the cadence follows timesteps, so it continues across a resume
        if self.image_every:
            self.next_image = (self.num_timesteps // self.image_every + 1) * self.image_every

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
        if self.image_every and self.num_timesteps >= self.next_image:
            self.next_image = (self.num_timesteps // self.image_every + 1) * self.image_every
            frames = self.training_env.get_images()
            writer = tensorboard_writer(self.logger)
            if writer is not None and frames and frames[0] is not None:  # its own step: no image overwrites another
                writer.add_image("images/original_corrupted_view1_view2", frames[0], self.num_timesteps,
                                 dataformats="HWC")
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
        done = self.model.num_timesteps - self.bar.n  # a step of every env, or a whole run of a search's candidate
        if self.bar.n + done > self.bar.total:  # never past its end
            self.bar.total = self.bar.n + done
        self.bar.update(done)
        if self.n_calls % 5 == 0:
            postfix = {"reward": f"{np.mean(self.rewards):+.2e}"}
            if self.keeps:
                postfix["keep"] = f"{np.mean(self.keeps):.2f}"
            self.bar.set_postfix(postfix)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Checkpoint(BaseCallback):
    """Save the agent atomically to ``path`` every ``every`` steps and at the end of training.

    Saves happen between rollouts, when every counted step has been trained on; ``trained_timesteps``
    is the count at the last such point, what an interrupted run should save.

    :param path: where the agent goes (a .zip path).
    :param every: steps between saves (0: only at the end).
    """

    def __init__(self, path: str | Path, every: int = 500) -> None:
        super().__init__()
        self.path, self.every = Path(path), every
        self.trained_timesteps = self.last_save = 0

    def _on_training_start(self) -> None:
        self.trained_timesteps = self.last_save = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = self.model.num_timesteps
        if self.every and self.trained_timesteps - self.last_save >= self.every:
            save_agent(self.model, self.path)
            self.last_save = self.trained_timesteps

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.trained_timesteps = self.model.num_timesteps
        save_agent(self.model, self.path)


class KnownAnswerClock(BaseCallback):
    """On a known-answer task: the training step at which the agent's keep rate on the planted cells first
    *stays* at or below ``threshold``, and the CPU minutes it took to get there.

    Keep rates are averaged over consecutive windows of ``window`` steps; the answer is reached at the
    start of the first window from which every later window (including the last, possibly shorter one)
    is at or below ``threshold``. CPU minutes are wall minutes since training started times ``threads``.

    :param threshold: keep rate on the planted cells that counts as having dropped them.
    :param window: steps per averaging window.
    :param threads: CPU threads the run uses (for CPU minutes).
    """

    def __init__(self, threshold: float = ANSWER_KEEP, window: int = 64, threads: int = 1) -> None:
        super().__init__()
        self.threshold, self.window, self.threads = threshold, window, threads
        self.keeps: list[float] = []
        self.seconds: list[float] = []
        self.start = 0.0

    def _on_training_start(self) -> None:
        self.start = time.time()

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "keep_planted" in info:
                self.keeps.append(float(info["keep_planted"]))
                self.seconds.append(time.time() - self.start)
        return True

    def answer(self) -> dict[str, float | None]:
        """``answer_step`` (None: not reached, or not a known-answer task), ``answer_cpu_minutes`` and
        ``final_keep_planted`` (the last window's mean keep rate on the planted cells)."""
        if not self.keeps:
            return {"answer_step": None, "answer_cpu_minutes": None, "final_keep_planted": None}
        step, means = settled_window(self.keeps, self.window, self.threshold)
        return {"answer_step": step,
                "answer_cpu_minutes": round(self.seconds[step] * self.threads / 60, 1) if step is not None else None,
                "final_keep_planted": means[-1]}
