"""Fixed corruptors behind the agents' surface: ``keep_all``, ``random`` (Bernoulli), ``cowmask``, and
``oracle`` (on a known-answer task, drops exactly the cells that carry the planted shortcut or distractor).

They never learn, but ``learn`` still steps the environment with callbacks (so a fixed baseline has
TensorBoard curves and returns like any agent), and ``predict``, ``save`` and ``load`` work as for
PPO. Their masks come from a torch generator seeded by the agent's ``seed``, so runs reproduce.
``predict(deterministic=True)`` does not change them: a random corruptor's randomness *is* its policy.
They work in every ``action_mode``: in ``shared`` one mask per batch (the oracle only where the
shortcut is in the same cells of every image, the ``fixed`` task); in the score modes the mask as
scores (+1 keep, -1 drop); in ``family`` the menu entry closest to the corruptor (keep level 1.0;
bernoulli or cowmask at the nearest keep level; no oracle). Under the env's keep budget ``random``
draws a uniformly random set of k cells per image and ``cowmask`` keeps exactly k cells; ``keep_all``
and ``oracle`` are what they are (the env keeps k of them; the oracle's mask already keeps k where the
budget matches its keep fraction).
"""
from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.policies import BasePolicy

from agents.policies import mask_geometry
from agents.rollout import RolloutAgent
from corruption_env.corruption import KEEP_LEVELS, MASK_FAMILIES, bernoulli_mask, cowmask, random_budget_mask


class FixedMaskPolicy(BasePolicy):
    """Masks that ignore the observation.

    :param kind: ``keep_all``, ``random``, ``cowmask`` or ``oracle`` (drops the cells the environment
        reports in its ``planted_cells`` attribute: the known answer of a planted shortcut or distractor).
    :param keep_prob: keep probability of ``random``.
    :param keep_range: range of CowMask's keep fraction (drawn per image).
    :param sigma_range: range of CowMask's smoothing scale in cells (drawn per image).
    """

    KINDS = ("keep_all", "random", "cowmask", "oracle")

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.MultiBinary,
                 lr_schedule: Any = None, kind: str = "keep_all", keep_prob: float = 0.75,
                 keep_range: tuple[float, float] = (0.5, 1.0), sigma_range: tuple[float, float] = (0.5, 1.5)) -> None:
        super().__init__(observation_space, action_space)
        if kind not in self.KINDS:
            raise ValueError(f"unknown fixed corruptor {kind!r}; available: {', '.join(self.KINDS)}")
        if not 0 <= keep_prob <= 1 or not 0 <= keep_range[0] <= keep_range[1] <= 1:
            raise ValueError(f"keep_prob ({keep_prob}) and keep_range {keep_range} must lie in [0, 1]")
        self.kind, self.keep_prob = kind, keep_prob
        self.keep_range, self.sigma_range = tuple(keep_range), tuple(sigma_range)
        self.batch, _, _, self.grid, self.mode = mask_geometry(observation_space, action_space)
        if self.mode.menu and kind == "oracle":
            raise ValueError("the oracle corruptor drops chosen cells, which action_mode='family' cannot express; "
                             "use action_mode='cells' (or 'shared' on a fixed shortcut)")
        self.generator = torch.Generator()
        # the oracle's view of the environment: planted cells of the batch(es) being masked, (N, g, g)
        self.planted_cells: Callable[[], np.ndarray] | None = None
        self.keep_cells: int | None = None  # the environment's keep budget in cells, set by FixedCorruptor

    def seed_masks(self, seed: int | None) -> None:
        self.generator.manual_seed(0 if seed is None else seed)

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        n_envs = observation["images"].shape[0]
        if self.mode.menu:
            return self._menu_entry().expand(n_envs, 2)
        n = n_envs * (1 if self.mode.shared else self.batch)
        k = self.keep_cells
        if self.kind == "keep_all":
            masks = torch.ones(n, self.grid, self.grid)
        elif self.kind == "random":
            masks = (bernoulli_mask(n, self.grid, self.keep_prob, self.generator) if k is None else
                     random_budget_mask(n, self.grid, k, self.generator))
        elif self.kind == "oracle":
            masks = self._oracle_masks(n_envs)
        else:
            lo, hi = self.keep_range
            keep = lo + (hi - lo) * torch.rand(n, generator=self.generator)
            s_lo, s_hi = self.sigma_range
            sigma = s_lo + (s_hi - s_lo) * torch.rand(n, generator=self.generator)
            masks = cowmask(n, self.grid, keep if k is None else k / self.grid ** 2, sigma, self.generator)
        if self.mode.scores:
            return (2 * masks - 1).reshape(n_envs, -1)  # keep +1, drop -1: the env keeps the top cells
        return masks.reshape(n_envs, -1)

    def _oracle_masks(self, n_envs: int) -> torch.Tensor:
        if self.planted_cells is None:
            raise ValueError("the oracle corruptor needs its environment: build it with make_agent('oracle', env) "
                             "or load it with env=...")
        cells = self.planted_cells().reshape(n_envs, self.batch, self.grid, self.grid)
        if self.mode.shared:
            if (cells != cells[:, :1]).any():
                raise ValueError("the oracle cannot share one mask across the batch: the planted cells differ "
                                 "between images (random placement); use action_mode='cells' or 'scores'")
            cells = cells[:, 0]
        return torch.from_numpy(~cells).float()

    def _menu_entry(self) -> torch.Tensor:
        """The ``family`` action closest to this corruptor: (family index, keep-level index)."""
        keep = {"keep_all": 1.0, "random": self.keep_prob, "cowmask": sum(self.keep_range) / 2}[self.kind]
        family = MASK_FAMILIES.index("cowmask" if self.kind == "cowmask" else "bernoulli")
        level = min(range(len(KEEP_LEVELS)), key=lambda i: abs(KEEP_LEVELS[i] - keep))
        return torch.tensor([[family, level]])

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(kind=self.kind, keep_prob=self.keep_prob, keep_range=self.keep_range, sigma_range=self.sigma_range)
        return data


class FixedCorruptor(RolloutAgent):
    """An agent that applies a :class:`FixedMaskPolicy` and never updates.

    :param env: a CorruptionEnv (or a VecEnv of them).
    :param kind, keep_prob, keep_range, sigma_range: see :class:`FixedMaskPolicy`.
    :param n_steps: steps per rollout (per env): between log dumps, and what a training budget is rounded up to.
    """

    def __init__(self, env: Any, kind: str = "keep_all", keep_prob: float = 0.75,
                 keep_range: tuple[float, float] = (0.5, 1.0), sigma_range: tuple[float, float] = (0.5, 1.5),
                 n_steps: int = 16, policy: Any = FixedMaskPolicy, policy_kwargs: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        policy_kwargs = {"kind": kind, "keep_prob": keep_prob, "keep_range": keep_range, "sigma_range": sigma_range,
                         **(policy_kwargs or {})}
        super().__init__(policy, env, n_steps=n_steps, policy_kwargs=policy_kwargs, **kwargs)

    def _setup_model(self) -> None:
        super()._setup_model()
        self.policy.seed_masks(self.seed)
        self.policy.planted_cells = self._env_planted_cells
        if self.env is not None:
            self.policy.keep_cells = self.env.get_attr("config")[0].keep_cells  # the budget's one owner
            if self.policy.kind == "oracle":
                self._check_oracle()

    def _check_oracle(self) -> None:
        """The oracle can act in its env: a known-answer task, and in a shared mode one whose planted cells are the
        same in every image (checked when it is built, before any step)."""
        planted = self.env.get_attr("train_planted_cells")[0]
        if planted is None:
            raise ValueError("the oracle corruptor needs a known-answer task: the environment's dataset has no planted "
                             "pattern (--env-kwargs \"dataset_kwargs:{'shortcut': 'fixed'}\", or 'random', or "
                             "{'distractor': ...})")
        if self.policy.mode.shared and bool((planted != planted[:1]).any()):
            raise ValueError(f"the oracle cannot share one mask across the batch in action_mode "
                             f"{self.policy.mode.name!r}: the planted cells differ between images (random placement); "
                             f"use --env-kwargs action_mode:cells (or scores)")

    def _env_planted_cells(self) -> np.ndarray:
        """The planted cells of every environment's current batch, (n_envs * B, g, g)."""
        if self.env is None:
            raise ValueError("the oracle corruptor needs its environment: load it with env=...")
        cells = self.env.get_attr("planted_cells")
        if any(c is None for c in cells):
            raise ValueError("the oracle corruptor needs a known-answer task: the environment's dataset has no planted "
                             "pattern (set dataset_kwargs={'shortcut': 'fixed'} or 'random', or {'distractor': ...})")
        return np.concatenate(cells)
