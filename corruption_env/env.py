"""CorruptionEnv: one SimCLR run as an episode, one update per step, masks as actions."""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from corruption_env.camnet import CAMNet, quantize_camnet
from corruption_env.config import EnvConfig
from corruption_env.corruption import (KEEP_LEVELS, MASK_FAMILIES, family_masks, input_channels, random_budget_mask,
                                       top_k_mask)
from corruption_env.data import load_dataset
from corruption_env.evaluation import effective_rank, knn_accuracy, prototype_cross_entropy, to_unit
from corruption_env.precision import resolve_precision
from corruption_env.rewards import (COUNTERFACTUAL_STATS, OPTIONAL_STATS, PERIODIC_STATS, REFERENCE_STATS, Reward,
                                    StepStats, available_rewards, make_reward)
from corruption_env.simclr import SimCLRLearner
from corruption_env.pictures import comparison_grid
from corruption_env.threads import set_torch_threads
from corruption_env.views import ViewMaker, build_decorruptor

LEARNER_FEATURES = ("progress", "last_loss", "loss_average", "last_reward", "last_keep_fraction", "last_loss_delta")
STAGES = ("data", "camnet", "augment", "learner", "reward")


class SharedMaskSpace(spaces.MultiBinary):
    """``MultiBinary(g * g)`` of the ``shared`` action mode: one mask for every image of the batch. A
    subclass only so that policies can tell it from a ``cells`` space of the same size (B = 4, g = 2)."""


class SharedScoresSpace(spaces.Box):
    """``Box(-10, 10, (g * g,))`` of the ``shared_scores`` action mode: one score map for the batch (a
    subclass for the same reason as :class:`SharedMaskSpace`)."""


SCORE_BOUND = 10.0  # score actions lie in [-10, 10]: finite (SB3 needs it), wide (few ties at the bounds)


def score_space(n: int, shared: bool = False) -> spaces.Box:
    """The action space of the score modes: ``n`` float32 scores in [-SCORE_BOUND, SCORE_BOUND]. Only their
    order matters under a keep budget (and their sign without one); scores outside are clipped."""
    return (SharedScoresSpace if shared else spaces.Box)(-SCORE_BOUND, SCORE_BOUND, (n,), np.float32)


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
    batch, so everything after it is unchanged:

    | action_mode | space                    | an action is                                            |
    |-------------|--------------------------|---------------------------------------------------------|
    | ``cells``   | ``MultiBinary(B * g * g)`` | every cell of every image, row-major over (B, g, g) (default) |
    | ``shared``  | ``MultiBinary(g * g)``     | one g x g mask, applied to every image of the batch      |
    | ``family``  | ``MultiDiscrete([3, 4])``  | (mask family, keep level): family from ``bernoulli``, ``cowmask``, ``block``; keep level from 0.25, 0.5, 0.75, 1.0; the env draws one mask per image from its seeded generator |
    | ``scores``  | ``Box(-10, 10, (B * g * g,))`` | a real score per cell of every image: with a ``keep_budget`` the env keeps each image's k top-scoring cells, without one the cells scoring above 0 |
    | ``shared_scores`` | ``Box(-10, 10, (g * g,))`` | one score map for the whole batch, kept as in ``scores`` |

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
    ``paired_progress`` pays this update's decrease of the loss on reference views of the same batch
    (all cells kept, same latent codes and augmentations; its extra restoration is timed in the
    ``reward`` stage); ``label_gain``, ``label_advantage`` (the label loss after this update minus
    after a counterfactual keep-all update of the same batch, also timed in ``reward``) and
    ``probe_accuracy`` read labels of the held-out subset and are upper references, not
    self-supervised rewards.

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
    LABEL_TEMPERATURE = 0.1  # softmax temperature of label_loss over cosine similarities

    def __init__(self, config: EnvConfig | None = None, render_mode: str | None = None, preset: str = "cpu",
                 **overrides: Any) -> None:
        self.config = cfg = (config or EnvConfig.preset(preset)).replace(**overrides)
        cfg.validate()
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        set_torch_threads(cfg.num_threads)
        self.device = torch.device(cfg.device)

        self.reward_fn = make_reward(cfg.reward, **cfg.reward_kwargs)
        self.tracked = self._tracked_rewards(cfg.track_rewards)
        self.needs = set(self.reward_fn.needs).union(*(r.needs for r in self.tracked.values()))
        if not self.needs <= set(OPTIONAL_STATS):
            raise ValueError(f"a reward needs unknown statistics {sorted(self.needs - set(OPTIONAL_STATS))}; "
                             f"the environment measures {', '.join(OPTIONAL_STATS)}")
        self.paired_stats = self.needs & set(REFERENCE_STATS)  # need the reference views

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
        # an encoder trained alongside on the reference views only, for rewards measured on a data-blind
        # corruptor's encoder (``reference_learner_rise``); built only when one is asked for
        self.reference_learner = (SimCLRLearner(cfg.encoder, temperature=cfg.temperature, lr=cfg.lr,
                                                optimizer=cfg.optimizer, device=self.device, precision=self.precision)
                                  if "reference_learner_rise" in self.needs else None)

        b, g, c, h = cfg.batch_size, cfg.mask_grid, input_channels(cfg.task), cfg.input_size
        self.observation_space = spaces.Dict({
            "images": spaces.Box(0, 255, (b, c, h, h), np.uint8),
            "learner": spaces.Box(-np.inf, np.inf, (len(LEARNER_FEATURES),), np.float32),
        })
        self.action_space = {"cells": spaces.MultiBinary(b * g * g), "shared": SharedMaskSpace(g * g),
                             "family": spaces.MultiDiscrete([len(MASK_FAMILIES), len(KEEP_LEVELS)]),
                             "scores": score_space(b * g * g),
                             "shared_scores": score_space(g * g, shared=True)}[cfg.action_mode]
        self.keep_cells = cfg.keep_cells  # cells kept per image under the keep budget; None without one
        self.chance_loss = math.log(2 * b - 1)  # NT-Xent of uninformative projections
        self._heldout_views: tuple[torch.Tensor, torch.Tensor] | None = None
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
        if self.reference_learner is not None:
            self.reference_learner.reset(learner_seed)  # the same initial weights
        codes_seed = int(self.np_random.integers(2**62))
        self.generator = torch.Generator().manual_seed(codes_seed)
        # family-mode masks, budget tie-breaks and random reference masks have streams of their own, so the
        # agent's choices never shift latent codes or augmentations
        self.mask_generator = torch.Generator().manual_seed(codes_seed + 1)
        self.reference_generator = torch.Generator().manual_seed(codes_seed + 2)
        self.step_count = 0
        self.last_loss = self.loss_average = self.chance_loss
        self.last_reward, self.last_keep, self.last_delta = 0.0, 1.0, 0.0
        initial = self._measure(StepStats(step=0, loss=self.chance_loss), self.needs)
        self.reward_fn.reset(initial)
        for reward in self.tracked.values():
            reward.reset(initial)
        self._batch_full, self._batch = self._draw_batch()
        self._needs_reset = False
        return self._observation(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step() (and after an episode ends)")
        mask = self._mask_from_action(action)
        seconds = dict.fromkeys(STAGES, 0.0)
        clock = time.perf_counter()

        paired = self.paired_stats
        stream = self.generator.get_state() if paired else None
        v1, v2, x_c = self.views.restore(self._batch, mask, self.generator)
        seconds["camnet"], clock = _lap(clock)
        v1, v2 = self.views.augment_pair(v1, v2, self.generator)
        seconds["augment"], clock = _lap(clock)
        reference, same = None, False
        if stream is not None:
            reference_mask = self.reference_mask(mask)
            same = bool(torch.equal(reference_mask, mask))  # the agent's views already are the reference views
            reference = (v1, v2) if same else self._reference_views(reference_mask, stream)
        reference_stats = ({} if same or not paired & set(COUNTERFACTUAL_STATS) else
                           self._counterfactual(reference, paired & set(COUNTERFACTUAL_STATS)))
        if self.reference_learner is not None:
            reference_stats["reference_learner_rise"] = self._reference_learner_rise((v1, v2), reference, same)
        seconds["reward"], clock = _lap(clock)
        update = self.learner.update(v1, v2, loss_after="loss_after" in self.needs, grad_norm="grad_norm" in self.needs,
                                     reference=reference if paired & {"paired_gain", "reference_loss"} else None,
                                     reference_gain="paired_gain" in paired)
        seconds["learner"], clock = _lap(clock)

        self.step_count += 1
        keep = float(mask.mean())
        planted_info = self._planted_info(mask)
        stats = StepStats(step=self.step_count, loss=update.loss, keep_fraction=keep,
                          loss_after=update.loss_after, grad_norm=update.grad_norm, paired_gain=update.reference_gain,
                          reference_loss=update.reference_loss, mask=mask, planted_cells=self._batch_cells,
                          **reference_stats)
        diverged = not all(math.isfinite(v or 0.0) for v in (update.loss, update.loss_after, update.grad_norm,
                                                              update.reference_gain, update.reference_loss))
        if diverged:
            reward = float(self.config.divergence_penalty)
            terms = dict.fromkeys(self.tracked, reward)
        else:
            stats = self._measure(stats, self._due(self.step_count))
            reward = float(self._score(self.reward_fn, stats))
            terms = {name: float(self._score(r, stats)) for name, r in self.tracked.items()}
        terms[self.config.reward] = reward
        reward_seconds, clock = _lap(clock)
        seconds["reward"] += reward_seconds

        if self.render_mode == "rgb_array":
            self._last_render = (self._batch_full, x_c, v1, v2)
        truncated = diverged or self.step_count >= self.config.episode_length
        if not diverged:
            self.last_delta = update.loss - self.last_loss if self.step_count > 1 else 0.0
            self.last_loss = update.loss
            self.loss_average = self.LOSS_AVERAGE_DECAY * self.loss_average + (1 - self.LOSS_AVERAGE_DECAY) * update.loss
        self.last_reward, self.last_keep = reward, keep
        self._needs_reset = truncated
        if not truncated:
            self._batch_full, self._batch = self._draw_batch()
        seconds["data"], _ = _lap(clock)
        info = {"loss": update.loss, "keep_fraction": keep, "diverged": diverged, "reward_terms": terms,
                **planted_info}
        if self.config.record_timings:
            info["seconds"] = seconds
        return self._observation(), reward, False, truncated, info

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

    def _tracked_rewards(self, spec: str | list[str]) -> dict[str, Reward]:
        if spec == "free":
            names = [n for n in available_rewards() if not make_reward(n).needs]
        elif spec == "all":
            names = [n for n in available_rewards() if not make_reward(n).extra_update]
        elif isinstance(spec, (list, tuple)):
            unknown = [n for n in spec if n not in available_rewards()]
            if unknown:
                raise ValueError(f"track_rewards: unknown reward(s) {unknown}; available: {', '.join(available_rewards())}")
            names = list(spec)
        else:
            raise ValueError(f"track_rewards must be 'free', 'all' or a list of reward names, got {spec!r}")
        return {n: make_reward(n) for n in names if n != self.config.reward}

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
        b, g, mode = self.config.batch_size, self.config.mask_grid, self.config.action_mode
        shared = mode in ("shared", "shared_scores")
        if mode == "family":
            expected = (f"a family action: two integers (mask family 0..{len(MASK_FAMILIES) - 1} = "
                        f"{'/'.join(MASK_FAMILIES)}, keep level 0..{len(KEEP_LEVELS) - 1} = "
                        f"{'/'.join(map(str, KEEP_LEVELS))})")
            shapes = ((2,),)
        elif mode in ("scores", "shared_scores"):
            expected = (f"a score action: finite scores shaped ({g * g},) or ({g}, {g}) (one map for the batch)"
                        if shared else f"a score action: finite scores shaped ({b * g * g},) (row-major over "
                                       f"batch {b} x grid {g} x {g}) or ({b}, {g}, {g})")
            shapes = ((g * g,), (g, g)) if shared else ((b * g * g,), (b, g, g))
        elif shared:
            expected = f"a shared MultiBinary action: 0/1 values shaped ({g * g},) or ({g}, {g}), any int/bool/float dtype"
            shapes = ((g * g,), (g, g))
        else:
            expected = (f"a MultiBinary action: 0/1 values shaped ({b * g * g},) (row-major over batch {b} x grid "
                        f"{g} x {g}) or ({b}, {g}, {g}), any int/bool/float dtype")
            shapes = ((b * g * g,), (b, g, g))
        array = np.asarray(action)
        if array.shape not in shapes:
            raise ValueError(f"expected {expected}; got shape {array.shape} (action_mode={mode!r})")
        if array.dtype.kind not in "biuf":
            raise ValueError(f"expected {expected}; got dtype {array.dtype}")
        if mode == "family":
            if not self.action_space.contains(array.astype(np.int64)) or (array != np.round(array)).any():
                raise ValueError(f"expected {expected}; got {array.tolist()}")
            family, level = MASK_FAMILIES[int(array[0])], KEEP_LEVELS[int(array[1])]
            return family_masks(family, level, b, g, self.mask_generator).to(self.device)
        if mode in ("scores", "shared_scores"):
            if not np.isfinite(array).all():
                raise ValueError(f"expected {expected}; got non-finite scores")
            scores = torch.from_numpy(np.clip(array, -SCORE_BOUND, SCORE_BOUND).astype(np.float32))
            scores = scores.reshape(-1, g, g).expand(b, g, g)
            if self.keep_cells is None:
                return (scores > 0).float().contiguous().to(self.device)
        else:
            if not ((array == 0) | (array == 1)).all():
                bad = np.unique(array[(array != 0) & (array != 1)])[:5]
                raise ValueError(f"expected {expected}; got values {bad.tolist()} (threshold or round them first)")
            scores = torch.from_numpy(array.astype(np.float32)).reshape(-1, g, g).expand(b, g, g)
            if self.keep_cells is None or bool((scores.sum(dim=(1, 2)) == self.keep_cells).all()):
                return scores.contiguous().to(self.device)  # shared: the same mask for every image
        return top_k_mask(scores, self.keep_cells, self.mask_generator, shared_ties=shared).to(self.device)

    def reference_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The reference corruption of this step's batch (``EnvConfig.reference_corruption``): every cell
        kept, or a random mask at the keep budget drawn from the reference stream."""
        if self.config.resolved_reference == "keep_all":
            return torch.ones_like(mask)
        return random_budget_mask(mask.shape[0], mask.shape[1], self.config.keep_cells, self.reference_generator,
                                  mask.device)

    def _observation(self) -> dict[str, np.ndarray]:
        images = (self._batch * 255).round_().to(torch.uint8).cpu().numpy()
        learner = np.array([self.step_count / self.config.episode_length, self.last_loss, self.loss_average,
                            self.last_reward, self.last_keep, self.last_delta], dtype=np.float32)
        return {"images": images, "learner": learner}

    def _reference_views(self, reference_mask: torch.Tensor, stream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's batch under the reference corruption, restored and augmented from the generator state
        ``stream`` the agent's views were drawn from: the same latent codes, crops, flips and jitters, so
        the two pairs differ only where the masks differ."""
        generator = torch.Generator().set_state(stream)  # a copy: the env's own stream moves on unchanged
        v1, v2, _ = self.views.restore(self._batch, reference_mask, generator)
        return self.views.augment_pair(v1, v2, generator)

    def _reference_learner_rise(self, views: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor],
                                same: bool) -> float:
        """How much harder the agent's views are than the reference views for the reference learner (an
        encoder trained on reference views alone), measured before its own update on the reference views
        (whose training forward gives the reference views' loss)."""
        update = self.reference_learner.update(*reference, reference=None if same else views)
        return 0.0 if same else update.reference_loss - update.loss

    def _counterfactual(self, reference: tuple[torch.Tensor, torch.Tensor], wanted: set[str]) -> dict[str, float]:
        """Statistics (``reference_label_loss``, ``reference_rankme``) after an update on the reference views
        from the current weights and optimizer state, which are put back afterwards."""
        state = copy.deepcopy(self.learner.state_dict())
        self.learner.update(*reference)
        measured = {}
        if "reference_label_loss" in wanted:
            measured["reference_label_loss"] = self.label_loss()
        if "reference_rankme" in wanted:
            measured["reference_rankme"] = self.rankme()
        self.learner.load_state_dict(state)
        return measured

    def _due(self, step: int) -> set[str]:
        """Periodic statistics some reward wants measured at this step."""
        due = set()
        for reward in (self.reward_fn, *self.tracked.values()):
            if step % reward.measure_every == 0:
                due |= set(reward.needs) & set(PERIODIC_STATS)
        return due

    def _score(self, reward: Reward, stats: StepStats) -> float:
        """Call ``reward`` with only the periodic statistics that are due on its own schedule."""
        if stats.step % reward.measure_every:
            stats = dataclasses.replace(stats, **dict.fromkeys(PERIODIC_STATS))
        return reward(stats)

    def _measure(self, stats: StepStats, wanted: set[str]) -> StepStats:
        if "heldout_loss" in wanted:
            stats.heldout_loss = self.heldout_loss()
        if "probe_accuracy" in wanted:
            stats.probe_accuracy = self.probe_accuracy()
        if "label_loss" in wanted:
            stats.label_loss = self.label_loss()
        if "rankme" in wanted:
            stats.rankme = self.rankme()
        return stats

    def heldout_loss(self) -> float:
        """NT-Xent of the current encoder on the held-out images under the reference corruption (all
        cells kept, fixed latent codes and augmentations), averaged over batches of ``batch_size``."""
        if self._heldout_views is None:
            gen = torch.Generator().manual_seed(0)  # the reference corruption is the same in every episode
            pairs = []
            for chunk in self.heldout_images.split(self.config.batch_size):
                x_lr = self.views.degrade(chunk)
                keep_all = torch.ones(chunk.shape[0], self.config.mask_grid, self.config.mask_grid, device=self.device)
                pairs.append(self.views(chunk, keep_all, gen, x_lr=x_lr))
            self._heldout_views = (torch.cat([p.v1 for p in pairs]), torch.cat([p.v2 for p in pairs]))
        v1, v2 = self._heldout_views
        b = self.config.batch_size
        losses = [self.learner.loss(v1[i:i + b], v2[i:i + b]) for i in range(0, max(v1.shape[0] - b, 0) + 1, b)]
        return float(np.mean(losses))

    def _probe_split(self, batch_statistics: bool = False) -> tuple[torch.Tensor, ...]:
        """Encoder features and labels of the held-out images: (bank features, bank labels, query
        features, query labels), the first half being the labelled bank and the second the queries."""
        feats = self.learner.encode(self.heldout_images, batch_statistics=batch_statistics)
        half = feats.shape[0] // 2
        labels = self.heldout_labels
        return feats[:half], labels[:half], feats[half:], labels[half:]

    def probe_accuracy(self) -> float:
        """kNN accuracy on the held-out images: first half as the labelled bank, second half as queries."""
        bank, bank_labels, queries, query_labels = self._probe_split()
        return knn_accuracy(bank, bank_labels, queries, query_labels, k=min(50, bank.shape[0]))

    def label_loss(self) -> float:
        """Nearest-class-mean cross-entropy on the held-out images (uses labels): class means of the
        first half's normalised features classify the second half (temperature ``LABEL_TEMPERATURE``).
        Features use the held-out set's own BatchNorm statistics: BatchNorm's running statistics lag
        the weights by tens of updates early in an episode, which would blur what one update did."""
        return prototype_cross_entropy(*self._probe_split(batch_statistics=True), temperature=self.LABEL_TEMPERATURE)

    def rankme(self) -> float:
        """RankMe (Garrido et al. 2023): the effective rank of the encoder's features of the held-out images,
        exp of the entropy of their normalised singular values. Label-free; features use the held-out
        set's own BatchNorm statistics (see :meth:`label_loss`)."""
        return effective_rank(self.learner.encode(self.heldout_images, batch_statistics=True))

    # ------------------------------------------------------------------------------------ counterfactuals

    def snapshot(self) -> dict[str, Any]:
        """Everything a step changes (learner and optimizer, latent-code and batch streams, reward states,
        the observation's counters, the next batch), to :meth:`restore` later: step from one state with
        two actions to compare them on the same encoder state and batch (``bench/reward_snr.py``)."""
        keep = ("step_count", "last_loss", "loss_average", "last_reward", "last_keep", "last_delta", "_batch",
                "_batch_full", "_batch_cells", "_needs_reset", "_last_render")
        reference_learner = None if self.reference_learner is None else copy.deepcopy(self.reference_learner.state_dict())
        return {"learner": copy.deepcopy(self.learner.state_dict()), "reference_learner": reference_learner,
                "generator": self.generator.get_state(),
                "mask_generator": self.mask_generator.get_state(),
                "reference_generator": self.reference_generator.get_state(),
                "np_random": copy.deepcopy(self.np_random.bit_generator.state),
                "rewards": copy.deepcopy((self.reward_fn, self.tracked)), "attributes": {k: getattr(self, k) for k in keep}}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` (which stays valid: restore it as often as needed)."""
        self.learner.load_state_dict(copy.deepcopy(snapshot["learner"]))
        if self.reference_learner is not None:
            self.reference_learner.load_state_dict(copy.deepcopy(snapshot["reference_learner"]))
        self.generator.set_state(snapshot["generator"])
        self.mask_generator.set_state(snapshot["mask_generator"])
        self.reference_generator.set_state(snapshot["reference_generator"])
        self.np_random.bit_generator.state = copy.deepcopy(snapshot["np_random"])
        self.reward_fn, self.tracked = copy.deepcopy(snapshot["rewards"])
        for key, value in snapshot["attributes"].items():
            setattr(self, key, value)


def _lap(start: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - start, now
