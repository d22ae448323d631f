"""CorruptionEnv: one SimCLR run as an episode, one update per step, masks as actions."""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from corruption_env.action_modes import ACTION_MODES
from corruption_env.camnet import CAMNet, quantize_camnet
from corruption_env.config import EnvConfig
from corruption_env.corruption import input_channels
from corruption_env.data import load_dataset
from corruption_env.images import to_unit
from corruption_env.precision import resolve_precision
from corruption_env.rewards import Reward, RewardSet
from corruption_env.simclr import SimCLRLearner
from corruption_env.pictures import comparison_grid
from corruption_env.statistics import MeasurementPlan, StepStats, StepViews
from corruption_env.threads import set_torch_threads
from corruption_env.views import ViewMaker, build_decorruptor

LEARNER_FEATURES = ("progress", "last_loss", "loss_average", "last_reward", "last_keep_fraction", "last_loss_delta")
STAGES = ("data", "camnet", "augment", "learner", "reward")


class CorruptionEnv(gym.Env):
    """
    ## Description

    An RL agent learns a **corruption operator** for contrastive learning. Each step it sees a batch
    of B degraded images (downsampled by ``scale``; grayscale for the colorization tasks) and chooses
    a keep/drop mask over a g x g grid of cells of every image. The environment zeroes the dropped
    cells, runs a frozen CAM-Net twice with two latent codes (one batched forward of 2B) to restore
    two different plausible full-resolution images per input, augments them (SimCLR's crop, flip,
    colour jitter and grayscale by default), and performs **one SimCLR update** of an encoder on the
    two views. The reward is a learning-progress signal computed from that update (by default the
    moving average of the negative loss derivative). An episode is one contrastive-learning run from
    a freshly initialised encoder.

    ## Action Space

    ``action_mode`` chooses what an action decides; every mode ends in the same (B, g, g) mask of the
    batch, so everything after it is unchanged. The modes (``cells``, the default: ``MultiBinary(B * g * g)``;
    ``shared``; ``family``; ``scores``; ``shared_scores``) and their spaces are one table in
    :mod:`corruption_env.action_modes`.

    In the binary modes 1 keeps a cell and 0 drops it (SB3 accepts only 1-D MultiBinary; ``step`` also
    accepts (B, g, g) or (g, g) arrays). Any other shape, a non-numeric dtype, or values outside the
    space raise a ``ValueError`` naming what was expected. ``cells`` and ``scores`` are the hardest to
    learn (B g^2 numbers judged by one reward) and the only modes that can drop different cells in
    different images; ``family`` is a small menu, like AutoAugment's search space.

    **Keep budget.** With ``keep_budget`` set, exactly k = round(keep_budget * g^2) cells are kept in
    every image whatever the action: the agent decides *which* cells, not how many (ADIOS, Viewmaker
    and CowMask constrain the same direction). Score actions keep their k top cells (a Gaussian policy
    over scores is then a stochastic ranking); binary masks keep their kept cells first. Ties are
    broken by a random order drawn from the env's seeded mask stream, never by position.

    ## Observation Space

    ``Dict`` with

    - ``"images"``: ``Box(0, 255, (B, C', h, w), uint8)``, the degraded batch the next mask applies to
      (C' = 1 for ``sr_colorize``/``colorize``, 3 for ``sr``; h = w = image_size / scale).
    - ``"learner"``: ``Box(-inf, inf, (6,), float32)``, the training state:

    | index | meaning                                                | min | max  |
    |-------|--------------------------------------------------------|-----|------|
    | 0     | progress: updates done / episode_length                | 0   | 1    |
    | 1     | last loss L_{t-1} (ln(2B-1), chance level, at reset)   | 0   | inf  |
    | 2     | exponential moving average of the loss (0.9)           | 0   | inf  |
    | 3     | last reward (0 at reset)                               | -inf| inf  |
    | 4     | keep fraction of the last mask (1 at reset)            | 0   | 1    |
    | 5     | last loss change L_{t-1} - L_{t-2} (0 at reset)        | -inf| inf  |

    ## Rewards

    ``reward`` names a definition from ``corruption_env.rewards`` (``available_rewards()``); the
    default ``ma_neg_loss_derivative`` is r_t = beta r_{t-1} + (1 - beta)(-(L_t - L_{t-1})), 0 on the
    first step. ``info["reward_terms"]`` also reports the definitions in ``track_rewards``, so one run
    can be scored under several definitions. Statistics no reward needs are not computed.
    Each reward names the statistics it reads (``corruption_env.statistics``); statistics measured for the
    reference views, counterfactual updates and auxiliary learners are timed in the ``reward`` stage.
    Rewards that read labels of the held-out subset (``uses_labels``) are upper references, not
    self-supervised rewards. ``docs/rewards.md`` lists them all.

    ## Starting State

    ``reset(seed=s)`` re-initialises the encoder, projection head, optimizer and reward state, and
    draws a first batch; the encoder initialisation, batch order, latent codes and augmentations all
    derive from ``s`` through ``self.np_random``, so a seeded episode reproduces exactly.

    ## Episode End

    - Termination: never (contrastive training has no terminal state).
    - Truncation: after ``episode_length`` updates; or at once when the loss is not finite, with
      ``info["diverged"] = True`` and reward ``divergence_penalty`` (no exception; ``reset`` starts clean).

    ## Arguments

    ``CorruptionEnv(config=None, render_mode=None, preset="cpu", **overrides)``: ``config`` is an
    :class:`~corruption_env.config.EnvConfig` (every knob is documented there); ``overrides`` change
    single fields, e.g. ``batch_size=32``; ``preset`` picks ``"cpu"`` (default) or ``"gpu"`` defaults
    when no config is given. ``render_mode="rgb_array"`` makes ``render()`` return a grid of
    original / corrupted input / view 1 / view 2 for the first 8 images of the last step.

    ``info`` of a step: ``loss``, ``keep_fraction``, ``diverged``, ``reward_terms`` (name -> value)
    and, with ``record_timings=True``, ``seconds`` (stage -> wall-clock seconds; stages ``data``,
    ``camnet``, ``augment``, ``learner``, ``reward``). On a known-answer task (a dataset with a planted
    shortcut or distractor, ``dataset_kwargs={"shortcut": "fixed" | "random"}`` or ``{"distractor": ...}``)
    also ``planted_cells`` (bool (B, g, g): the cells of this step's batch that carried the planted
    pattern) and the mask's keep rate on them (``keep_planted``) and on the other cells (``keep_other``). The attribute ``planted_cells``
    holds the same for the batch the next mask applies to (what the ``oracle`` corruptor drops).

    ## Example

    >>> import gymnasium as gym, corruption_env
    >>> env = gym.make("CorruptionEnv-v0", batch_size=8, episode_length=3, decorruptor="bicubic")
    >>> obs, info = env.reset(seed=0)
    >>> obs["images"].shape, obs["learner"].shape
    ((8, 1, 16, 16), (6,))
    >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    >>> reward  # no previous loss on the first step
    0.0
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}
    LOSS_AVERAGE_DECAY = 0.9  # smoothing of observation entry 2

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, preset: str = "cpu",
                 **overrides: Any) -> None:
        self.config = cfg = (config or EnvConfig.preset(preset)).replace(**overrides)
        cfg.validate()
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        set_torch_threads(cfg.num_threads)
        self.device = torch.device(cfg.device)

        self.rewards = RewardSet(cfg.reward, cfg.reward_kwargs, cfg.track_rewards)
        self.needs = self.rewards.needs

        data = load_dataset(cfg.dataset, root=cfg.data_root, image_size=cfg.image_size, split="train",
                            channels=3, **cfg.dataset_options())
        n_heldout = min(cfg.heldout_size, len(data) // 4)
        self.train_images = torch.from_numpy(np.array(data.images[:len(data) - n_heldout]))
        # cells carrying a planted shortcut or distractor (known-answer tasks), per training image; None without one
        self.train_planted_cells = (None if data.planted_cells is None else
                                     torch.from_numpy(np.array(data.planted_cells[:len(data) - n_heldout])).to(self.device))
        self._batch_cells: torch.Tensor | None = None  # (B, g, g) bool for the batch the next mask applies to
        self.heldout_images = to_unit(data.images[len(data) - n_heldout:]).to(self.device)
        self.heldout_labels = torch.tensor(np.asarray(data.labels[len(data) - n_heldout:]))
        decorruptor = build_decorruptor(cfg.decorruptor, cfg.task, cfg.scale, cfg.image_size, cfg.dataset,
                                        cfg.camnet_checkpoint, self.device)
        if cfg.int8_camnet and isinstance(decorruptor, CAMNet):
            decorruptor = quantize_camnet(decorruptor, self.train_images, cfg.mask_grid)
        self.precision = resolve_precision(cfg.precision, self.device)  # "bf16" or "fp32"
        self.views = ViewMaker(decorruptor, cfg.task, cfg.scale, cfg.view_augmentation, cfg.image_size,
                               self.precision, self.device)
        self.learner = SimCLRLearner(cfg.encoder, temperature=cfg.temperature, lr=cfg.lr, optimizer=cfg.optimizer,
                                     device=self.device, precision=self.precision)
        self.statistics = MeasurementPlan(self, self.needs)  # what the rewards read, measured around each update

        b, g, c, h = cfg.batch_size, cfg.mask_grid, input_channels(cfg.task), cfg.input_size
        self.observation_space = spaces.Dict({
            "images": spaces.Box(0, 255, (b, c, h, h), np.uint8),
            "learner": spaces.Box(-np.inf, np.inf, (len(LEARNER_FEATURES),), np.float32),
        })
        self.action_mode = ACTION_MODES[cfg.action_mode]
        self.action_space = self.action_mode.space(b, g)
        self.chance_loss = math.log(2 * b - 1)  # NT-Xent of uninformative projections
        self._batch: torch.Tensor | None = None  # degraded next batch (float), None before reset
        self._last_render: tuple[torch.Tensor, ...] | None = None  # kept across resets: render shows the last step
        self._needs_reset = True

    # ------------------------------------------------------------------------------------ gym API

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is None and self.config.seed is not None and self._np_random is None:
            seed = self.config.seed
        super().reset(seed=seed)
        learner_seed = int(self.np_random.integers(2**31))
        self.learner.reset(learner_seed)
        self.statistics.reset(learner_seed)
        codes_seed = int(self.np_random.integers(2**62))
        self.generator = torch.Generator().manual_seed(codes_seed)
        # family-mode masks, budget tie-breaks and random reference masks have streams of their own, so the
        # agent's choices never shift latent codes or augmentations
        self.mask_generator = torch.Generator().manual_seed(codes_seed + 1)
        self.reference_generator = torch.Generator().manual_seed(codes_seed + 2)
        self.step_count = 0
        self.last_loss = self.loss_average = self.chance_loss
        self.last_reward, self.last_keep, self.last_delta = 0.0, 1.0, 0.0
        self.rewards.reset(self.statistics.initial(self.chance_loss))
        self._batch_full, self._batch = self._draw_batch()
        self._needs_reset = False
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step() (and after an episode ends)")
        mask = self._mask_from_action(action)
        clock = StageClock(self.config.record_timings)
        stream = self.generator.get_state()  # where this step's codes and augmentations start (reference views)
        v1, v2, x_c = self.views.restore(self._batch, mask, self.generator)
        clock.lap("camnet")
        v1, v2 = self.views.augment_pair(v1, v2, self.generator)
        clock.lap("augment")
        views = StepViews(mask, (v1, v2), stream)
        before, update_options = self.statistics.before_update(views)
        clock.lap("reward")
        update = self.learner.update(v1, v2, **update_options)
        clock.lap("learner")
        self.step_count += 1
        stats = StepStats(step=self.step_count, loss=update.loss, keep_fraction=float(mask.mean()), mask=mask,
                          planted_cells=self._batch_cells)
        stats, diverged = self.statistics.after_update(views, update, before, stats, self.rewards.due(self.step_count))
        reward, terms = self.rewards.pay(stats, diverged, self.config.divergence_penalty)
        clock.lap("reward")
        if self.render_mode == "rgb_array":
            self._last_render = (self._batch_full, x_c, v1, v2)
        info = {"loss": update.loss, "keep_fraction": stats.keep_fraction, "diverged": diverged, "reward_terms": terms,
                **self._planted_info(mask)}
        truncated = self._advance(update.loss, reward, stats.keep_fraction, diverged)
        clock.lap("data")
        if self.config.record_timings:
            info["seconds"] = clock.seconds
        return self._observation(), reward, False, truncated, info

    def _advance(self, loss: float, reward: float, keep: float, diverged: bool) -> bool:
        """The observation's counters after a step, and the next batch unless the episode ends; returns
        whether it was truncated."""
        truncated = diverged or self.step_count >= self.config.episode_length
        if not diverged:
            self.last_delta = loss - self.last_loss if self.step_count > 1 else 0.0
            self.last_loss = loss
            self.loss_average = self.LOSS_AVERAGE_DECAY * self.loss_average + (1 - self.LOSS_AVERAGE_DECAY) * loss
        self.last_reward, self.last_keep = reward, keep
        self._needs_reset = truncated
        if not truncated:
            self._batch_full, self._batch = self._draw_batch()
        return truncated

    def render(self) -> np.ndarray | None:
        """An (H, W, 3) uint8 grid of the last step: original / corrupted input / view 1 / view 2 (first 8
        images), always the same size (video recorders need that). Before any step: the batch and its input
        with two blank rows. After an auto-reset it still shows the last step."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode='rgb_array'; returning None")
            return None
        if self._batch is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        blank = torch.ones_like(self._batch_full)  # before the first step: the batch and its input, same frame size
        rows = self._last_render or (self._batch_full, self._batch, blank, blank)
        grid = comparison_grid(list(rows), size=max(self.config.image_size, 64))
        return (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()

    # ------------------------------------------------------------------------------------ helpers

    @property
    def keep_cells(self) -> int | None:
        """Cells kept per image under the keep budget (None without one): read from the config, its one owner."""
        return self.config.keep_cells

    @property
    def reward_fn(self) -> Reward:
        """The reward this env pays."""
        return self.rewards.paid

    @property
    def tracked(self) -> dict[str, Reward]:
        """The rewards it reports in ``info["reward_terms"]`` beside the paid one."""
        return self.rewards.tracked

    def _draw_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.from_numpy(self.np_random.integers(0, len(self.train_images), self.config.batch_size))
        if self.train_planted_cells is not None:
            self._batch_cells = self.train_planted_cells[index.to(self.device)]
        full = self.train_images[index].to(self.device, non_blocking=True).float().div_(255.0)
        return full, self.views.degrade(full)

    @property
    def planted_cells(self) -> np.ndarray | None:
        """Known-answer tasks: bool (B, g, g), the planted pattern's cells in the batch the next mask applies
        to (what the ``oracle`` corruptor drops); None without a planted shortcut or distractor."""
        return None if self._batch_cells is None else self._batch_cells.cpu().numpy()

    def _planted_info(self, mask: torch.Tensor) -> dict[str, Any]:
        """Where the planted pattern was in this step's batch, and how much of it the mask kept."""
        cells = self._batch_cells
        if cells is None:
            return {}
        kept = mask.bool()
        return {"planted_cells": cells.cpu().numpy(),
                "keep_planted": float((kept & cells).sum() / cells.sum().clamp_min(1)),
                "keep_other": float((kept & ~cells).sum() / (~cells).sum().clamp_min(1))}

    def _mask_from_action(self, action: Any) -> torch.Tensor:
        """The (B, g, g) float mask an action of this env's ``action_mode`` stands for (under the keep budget)."""
        return self.action_mode.to_mask(action, self.config.batch_size, self.config.mask_grid, self.keep_cells,
                                        self.mask_generator).to(self.device)

    def _observation(self) -> dict[str, np.ndarray]:
        images = (self._batch * 255).round_().to(torch.uint8).cpu().numpy()
        learner = np.array([self.step_count / self.config.episode_length, self.last_loss, self.loss_average,
                            self.last_reward, self.last_keep, self.last_delta], dtype=np.float32)
        return {"images": images, "learner": learner}

    # ------------------------------------------------------------------------------------ counterfactuals

    def snapshot(self) -> dict[str, Any]:
        """Everything a step changes (learner and optimizer, latent-code and batch streams, reward states,
        the observation's counters, the next batch), to :meth:`restore` later: step from one state with
        two actions to compare them on the same encoder state and batch (``studies/reward_snr.py``)."""
        keep = ("step_count", "last_loss", "loss_average", "last_reward", "last_keep", "last_delta", "_batch",
                "_batch_full", "_batch_cells", "_needs_reset", "_last_render")
        return {"learner": copy.deepcopy(self.learner.state_dict()), "statistics": self.statistics.state_dict(),
                "generator": self.generator.get_state(),
                "mask_generator": self.mask_generator.get_state(),
                "reference_generator": self.reference_generator.get_state(),
                "np_random": copy.deepcopy(self.np_random.bit_generator.state),
                "rewards": copy.deepcopy(self.rewards), "attributes": {k: getattr(self, k) for k in keep}}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` (which stays valid: restore it as often as needed)."""
        self.learner.load_state_dict(copy.deepcopy(snapshot["learner"]))
        self.statistics.load_state_dict(snapshot["statistics"])
        self.generator.set_state(snapshot["generator"])
        self.mask_generator.set_state(snapshot["mask_generator"])
        self.reference_generator.set_state(snapshot["reference_generator"])
        self.np_random.bit_generator.state = copy.deepcopy(snapshot["np_random"])
        self.rewards = copy.deepcopy(snapshot["rewards"])
        for key, value in snapshot["attributes"].items():
            setattr(self, key, value)


class StageClock:
    """Wall-clock seconds per stage of a step (``info["seconds"]``); laps add up, so a stage may be timed in parts."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.start = time.perf_counter() if enabled else 0.0

    def lap(self, stage: str) -> None:
        if self.enabled:
            now = time.perf_counter()
            self.seconds[stage] += now - self.start
            self.start = now
