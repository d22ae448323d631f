"""The per-image mask network shared by every learning agent (SB3's PPO/A2C/TRPO and REINFORCE).

The same small CNN looks at each low-resolution image of the batch on its own (plus an embedding of
the ``learner`` state vector and a learned per-cell bias) and outputs g x g keep-logits for that image, so the policy is the
same for every image slot and its size does not depend on the batch size. The env's ``action_mode``
picks the head: ``cells`` keeps those per-image logits; ``shared`` averages them over the batch (one
g x g mask); ``scores``/``shared_scores`` use the same outputs as the means of a Gaussian over cell scores
(with one learned standard deviation: a stochastic ranking when the env keeps each image's top cells);
``family`` reads the batch-pooled features and the learner vector into one categorical
per menu dimension (mask family, keep level). A value head pools the
per-image features over the batch and reads the learner vector. Observations reach it flattened by
:class:`MaskObservationExtractor` (images scaled to [0, 1], then the learner vector), which is what
lets it sit inside SB3's ``ActorCriticPolicy`` as the "mlp_extractor": ``latent_pi`` are the
Bernoulli logits themselves (the action net is the identity), ``latent_vf`` feeds SB3's value net.
"""
from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
import torch.nn as nn
import torch.nn.functional as F
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.credit import env_attribute
from corruption_env.action_modes import SCORE_BOUND, ActionMode, action_mode_of

# initial log standard deviation of the score modes' Gaussian: a ranking changes with score differences
# relative to it, so a small one lets a few hundred Adam steps move the ranking (measured on a planted
# reward: 0.53 of the planted cells dropped after 512 PPO steps at log-std 0, 0.80 at -2)
SCORE_LOG_STD_INIT = -2.0


def mask_geometry(observation_space: gym.spaces.Dict, action_space: gym.spaces.Space
                  ) -> tuple[int, int, int, int, ActionMode]:
    """(batch B, channels C, side h, grid g, action mode) of a CorruptionEnv's spaces, with a clear error
    otherwise. The mode follows the action space (``corruption_env.action_modes``); ``family`` has no grid: g = 1."""
    if not isinstance(observation_space, gym.spaces.Dict) or set(observation_space.spaces) != {"images", "learner"}:
        raise ValueError(f"the mask policy needs CorruptionEnv's Dict observation (images, learner), got {observation_space}")
    b, c, h, w = observation_space["images"].shape
    shape = getattr(action_space, "shape", None)
    try:
        mode = action_mode_of(action_space)
    except ValueError:
        mode = None
    if mode is not None and mode.menu and action_space.nvec.ndim == 1:
        return b, c, h, 1, mode
    if mode is not None and shape is not None and len(shape) == 1 and shape[0] > 0:
        per = 1 if mode.shared else b
        g = math.isqrt(shape[0] // per)
        if g * g * per == shape[0] and h % g == 0:
            return b, c, h, g, mode
    raise ValueError(f"the mask policy needs a MultiBinary(B * g * g), MultiBinary(g * g), Box(B * g * g), "
                     f"Box(g * g) or MultiDiscrete action space matching the images {(b, c, h, w)}, got {action_space}")


def mask_net_defaults(env: Any) -> dict[str, Any]:
    """The :class:`MaskNetwork` options an environment implies (every agent's builder merges the user's over
    them): under a keep budget, binary masks pin their level at the budget (``keep_budget``), and per-image
    binary masks read each cell from its own patch (``scorer="cell"``). With the image scorer a cell's features
    see the whole 16 x 16 image, so the planted bottom row and the row above it moved together, their keep
    probabilities saturated at 0 (where a Bernoulli's gradient vanishes) and every seed of PPO and REINFORCE
    stuck at half the planted row dropped (0.50, 5 of 5 seeds; ``docs/results.md``, "Learning a planted reward")."""
    budget = getattr(env_attribute(env, "config"), "keep_budget", None)
    space = getattr(env, "action_space", None)
    if budget is None or not isinstance(space, gym.spaces.MultiBinary):
        return {}
    binary_mode = action_mode_of(space)
    return {"keep_budget": budget, **({} if binary_mode.shared else {"scorer": "cell"})}


def with_mask_net_defaults(env: Any, policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` with :func:`mask_net_defaults` under the user's own ``mask_net_kwargs``."""
    policy_kwargs = dict(policy_kwargs or {})
    policy_kwargs["mask_net_kwargs"] = {**mask_net_defaults(env), **policy_kwargs.get("mask_net_kwargs", {})}
    return policy_kwargs


def bounded_scores(scores: torch.Tensor) -> torch.Tensor:
    """Score means whose scale cannot run away. Each map's spread around its level (its mean over cells) is
    softly normalised, c / sqrt(mean(c^2) + 1): about c while small, at most sqrt(cells) in size, and never
    saturating (a large map tends to its z-scores, order and ratios intact); the level is squashed into
    +-SCORE_BOUND / 2 by tanh. Under a keep budget only the order matters, so nothing else held the raw
    scores: REINFORCE's means ran past the action bound, where clipping made the cells tie and the learned
    order was lost (a planted reward learned to 0.53 of the planted cells dropped, then fell to 0.245,
    chance; bounding the spread with tanh instead saturated into ties at 0.50). Without a budget the level
    still sets how many cells score above 0."""
    level = scores.mean(dim=-1, keepdim=True)
    spread = scores - level
    half = SCORE_BOUND / 2
    return spread / (spread.square().mean(dim=-1, keepdim=True) + 1).sqrt() + half * torch.tanh(level / half)


class MaskObservationExtractor(BaseFeaturesExtractor):
    """Flattens CorruptionEnv observations: images / 255 (B*C*h*w values), then the learner vector."""

    def __init__(self, observation_space: gym.spaces.Dict) -> None:
        dims = int(math.prod(observation_space["images"].shape)) + int(observation_space["learner"].shape[0])
        super().__init__(observation_space, features_dim=dims)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        images = observations["images"].float().flatten(1) / 255.0
        return torch.cat([images, observations["learner"].float()], dim=1)


def action_factors(action_space: gym.spaces.Space) -> int:
    """Independent factors of an action: cells (MultiBinary), scores (Box) or menu dimensions (MultiDiscrete)."""
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        return len(action_space.nvec)
    if isinstance(action_space, gym.spaces.Box):
        return int(math.prod(action_space.shape))
    return int(action_space.n)


class MaskNetwork(nn.Module):
    """Per-image CNN -> g x g keep-logits; pooled features + learner vector -> value latent.

    :param observation_space: CorruptionEnv's Dict space.
    :param action_space: its action space (one per ``action_mode``, see :func:`mask_geometry`).
    :param channels: widths of the per-image convolutions.
    :param value_dim: size of the value latent.
    :param initial_keep_prob: keep probability of the untrained policy (sets the logit bias).
    :param value_trains_cnn: let the value loss train the shared CNN too. Off by default: the value
        loss is a thousand times the per-cell policy loss when log-probabilities are averaged over
        cells (``log_prob_reduction="mean"``), and through the shared features it moved the keep
        logits in directions no advantage asked for; the value head then reads detached features.
    :param correlated_noise: in the ``scores`` mode, also output each cell's (detached, unit-norm) features,
        which :class:`CorrelatedScoresDistribution` uses to correlate the exploration of cells alike
        across the batch (see there). On by default; off gives independent noise per cell.
    :param scorer: how each cell's features are made. ``image`` (default): the CNN runs over the whole image
        and its feature map is pooled to the grid, plus a learned bias per grid position, so the policy can
        prefer places. ``cell``: a **position-free cell scorer**: the same CNN runs on each cell's own pixels
        and a ``cell_context``-pixel neighbourhood (mirrored at the image border, so a border cell sees no
        mark of where it is), with no position bias: a rule learned at one place ("drop cells that look like
        this") holds at every place, and every cell of the batch trains the same weights. It is a two-layer
        MLP (the last two ``channels``) on each flattened patch: one matrix product for all patches, where a
        CNN on 8 x 8 patches cost 25-85x the image scorer (``studies/policy_speed.py``).
    :param cell_context: pixels of neighbourhood around each cell the ``cell`` scorer sees.
    :param cell_position: give the ``cell`` scorer the per-position bias after all (an input it may use or
        ignore); off by default.
    :param keep_budget: the env's keep budget, for the binary modes: each image's mean keep logit is pinned at
        the budget's (logit(keep_budget)), so the policy decides *which* cells, as the budget leaves it, not how
        many. Free, the level drifted: one planted reward's gradient on the shared level is a small difference of
        large per-cell terms, Adam takes full steps along it, and the masks collapsed to keep nothing (refilled at
        random by the budget) within ~100 steps. Score modes need no pin (:func:`bounded_scores`).
    :param cell_symmetry: ``dihedral`` (default) averages the ``cell`` scorer's features over the patch's 8
        flips and quarter turns, so a pattern scores the same in a top row, a bottom row or a column, where
        its neighbourhood lies on another side (without it a rule learned in the bottom row held only
        partly in the top row: ``docs/results.md``); ``none`` keeps orientation.
    """

    SCORERS = ("image", "cell")
    SYMMETRIES = ("dihedral", "none")

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Space,
                 channels: tuple[int, ...] = (16, 32, 32), value_dim: int = 64, initial_keep_prob: float = 0.5,
                 value_trains_cnn: bool = False, correlated_noise: bool = True, scorer: str = "image",
                 cell_context: int = 2, cell_position: bool = False, cell_symmetry: str = "dihedral",
                 keep_budget: float | None = None) -> None:
        super().__init__()
        if keep_budget is not None and not 0 < keep_budget < 1:
            raise ValueError(f"keep_budget must be in (0, 1) or None, got {keep_budget!r}")
        self.budget_logit = None if keep_budget is None else math.log(keep_budget / (1 - keep_budget))
        if scorer not in self.SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; available: {', '.join(self.SCORERS)}")
        if not isinstance(cell_context, int) or cell_context < 0:
            raise ValueError(f"cell_context must be a whole number of pixels >= 0, got {cell_context!r}")
        if cell_symmetry not in self.SYMMETRIES:
            raise ValueError(f"unknown cell_symmetry {cell_symmetry!r}; available: {', '.join(self.SYMMETRIES)}")
        self.value_trains_cnn = value_trains_cnn
        self.scorer, self.cell_context, self.cell_symmetry = scorer, cell_context, cell_symmetry
        self.batch, self.in_channels, self.side, self.grid, self.mode = mask_geometry(observation_space, action_space)
        self.correlated = correlated_noise and self.mode.scores and not self.mode.shared
        self.learner_dim = int(observation_space["learner"].shape[0])
        layers: list[nn.Module] = []
        width = self.in_channels
        if scorer == "image":
            for i, out in enumerate(channels):
                layers += [nn.Conv2d(width, out, 3, stride=1 if i == 0 else 2, padding=1), nn.ReLU()]
                width = out
        else:  # an MLP on each flattened patch: one matrix product for every patch of the batch, 8 orientations
            width = self.in_channels * (self.side // self.grid + 2 * cell_context) ** 2
            for out in channels[-2:]:
                layers += [nn.Linear(width, out), nn.ReLU()]
                width = out
        # channels_last: oneDNN's convolutions; in NCHW the backward falls back to slower kernels (PPO's update through
        # the image scorer 0.63x the time at one thread, the same gradients to float tolerance: studies/policy_speed.py)
        self.cnn = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.learner_embed = nn.Linear(self.learner_dim, width)
        self.logit_head = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.logit_head.weight)  # start from the same keep probability everywhere
        nn.init.constant_(self.logit_head.bias, math.log(initial_keep_prob / (1 - initial_keep_prob)))
        # convolutions are translation-equivariant; a per-cell bias lets the policy prefer places
        positional = scorer == "image" or cell_position
        self.cell_bias = nn.Parameter(torch.zeros(self.grid, self.grid), requires_grad=positional)
        self.value_mlp = nn.Sequential(nn.Linear(width + self.learner_dim, value_dim), nn.Tanh())
        if self.mode.menu:  # one categorical per menu dimension, uniform at the start
            self.menu_head = nn.Linear(width + self.learner_dim, int(sum(action_space.nvec)))
            nn.init.zeros_(self.menu_head.weight)
            nn.init.zeros_(self.menu_head.bias)
        self.latent_dim_pi = (int(sum(action_space.nvec)) if self.mode.menu else
                              self.grid * self.grid * (1 if self.mode.shared else self.batch))
        self.noise_dim = width if self.correlated else 0  # features per cell behind the correlated exploration
        self.latent_dim_pi *= 1 + self.noise_dim
        self.latent_dim_vf = value_dim

    def _split(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = features.shape[0]
        images = features[:, :-self.learner_dim].reshape(n * self.batch, self.in_channels, self.side, self.side)
        return images, features[:, -self.learner_dim:]

    def _cells(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-cell features (N, B, width, g, g) and the learner vector (N, k)."""
        images, learner = self._split(features)
        if self.scorer == "image":
            cells = F.adaptive_avg_pool2d(self.cnn(images.contiguous(memory_format=torch.channels_last)), self.grid)
        else:
            cells = self._score_cells(images)
        return cells.unflatten(0, (features.shape[0], self.batch)), learner

    def _score_cells(self, images: torch.Tensor) -> torch.Tensor:
        """The ``cell`` scorer: (M, C, h, h) images -> (M, width, g, g), each cell's features from its own
        patch (the cell and ``cell_context`` pixels around it) through the shared MLP."""
        m, c, side = images.shape[0], images.shape[1], images.shape[2]
        cell, pad = side // self.grid, self.cell_context
        padded = F.pad(images, (pad,) * 4, mode="reflect") if pad else images
        patch = cell + 2 * pad
        patches = F.unfold(padded, kernel_size=patch, stride=cell)  # (M, C * patch^2, g^2)
        patches = patches.transpose(1, 2).reshape(m * self.grid * self.grid, c, patch, patch)
        if self.cell_symmetry == "dihedral":  # the 8 flips and quarter turns, one batch
            turns = [patches, patches.transpose(2, 3)]
            patches = torch.cat([t for x in turns for t in (x, x.flip(2), x.flip(3), x.flip(2, 3))])
        pooled = self.cnn(patches.flatten(1) * 2 - 1)  # (M g^2 [x 8], width), pixels centred on 0
        if self.cell_symmetry == "dihedral":
            pooled = pooled.unflatten(0, (8, -1)).mean(dim=0)
        return pooled.reshape(m, self.grid, self.grid, -1).permute(0, 3, 1, 2)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cells, learner = self._cells(features)
        return self._logits(cells, learner), self._value(cells, learner)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self._logits(*self._cells(features))

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self._value(*self._cells(features))

    def _logits(self, cells: torch.Tensor, learner: torch.Tensor) -> torch.Tensor:
        if self.mode.menu:
            return self.menu_head(torch.cat([cells.mean(dim=(1, 3, 4)), learner], dim=1))
        conditioned = F.relu(cells + self.learner_embed(learner)[:, None, :, None, None])
        logits = self.logit_head(conditioned.flatten(0, 1)) + self.cell_bias  # (N*B, 1, g, g)
        logits = logits.reshape(cells.shape[0], self.batch, self.grid * self.grid)
        if self.mode.shared:
            logits = logits.mean(dim=1, keepdim=True)  # one mask for the batch: every image has its say
        if self.mode.scores:
            logits = bounded_scores(logits)
        elif self.budget_logit is not None and not self.mode.menu:  # the budget sets how many: pin the level
            logits = logits - logits.mean(dim=-1, keepdim=True) + self.budget_logit
        if self.mode.shared:
            return logits[:, 0]
        if self.correlated:  # (N, D) means, then (N, D, width) unit-norm cell features, flattened
            noise = F.normalize(conditioned.detach(), dim=2).permute(0, 1, 3, 4, 2).flatten(1)
            return torch.cat([logits.flatten(1), noise], dim=1)
        return logits.flatten(1)  # row-major over (B, g, g)

    def split_scores(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A correlated ``scores`` latent -> (score means (N, D), cell features (N, D, noise_dim))."""
        d = latent.shape[1] // (1 + self.noise_dim)
        return latent[:, :d], latent[:, d:].reshape(latent.shape[0], d, self.noise_dim)

    def _value(self, cells: torch.Tensor, learner: torch.Tensor) -> torch.Tensor:
        pooled = cells.mean(dim=(1, 3, 4))
        if not self.value_trains_cnn:
            pooled = pooled.detach()
        return self.value_mlp(torch.cat([pooled, learner], dim=1))


class CorrelatedScoresDistribution(DiagGaussianDistribution):
    """A Gaussian over the cell scores of a batch whose exploration is correlated across images.

    The reward is paid for the *batch* (the effect of masks on contrastive learning is collective:
    measured, an image's own loss term does not move with its own mask), so independent noise per cell
    of each of B images averages out of it: the reward sees a perturbation of the batch's mean mask
    that shrinks as 1/sqrt(B), and per-image credit drowns. Here the scores are
    ``mean + sigma * eps + s_cell * u[cell] + s_feat * phi(image, cell) . w`` with eps per cell of each
    image, u one draw per grid cell shared by the batch, and w one draw of a vector shared by the batch
    applied to each cell's own features phi (unit-norm, detached from the policy's CNN). Cells alike,
    whether by place (u) or by look (w: the barcode's cells wherever they are), move together, so one
    step's batch reward measures what a direction of the policy is worth, as generalised
    state-dependent exploration (Raffin et al. 2022) does for one state. The scores stay exactly
    Gaussian, N(mean, sigma^2 I + F F^T) with a low-rank F, so log-probabilities and entropies are
    exact (``torch.distributions.LowRankMultivariateNormal``). One learned log-scale (the policy's
    ``log_std``) sets all three: the shared components at it, the per-cell noise ``INDIVIDUAL_OFFSET``
    below. (Learned separately, the per-cell scale shrank until its score-function noise, which grows as
    1 / sigma, swamped the shared directions' signal, and REINFORCE stopped learning a planted reward.)

    :param action_dim: B * g^2 scores.
    :param grid_cells: g^2.
    """

    INDIVIDUAL_OFFSET = -1.0  # log-scale of the per-cell noise relative to the shared components

    def __init__(self, action_dim: int, grid_cells: int) -> None:
        super().__init__(action_dim)
        self.grid_cells = grid_cells

    def proba_distribution(self, mean_actions: torch.Tensor, log_std: torch.Tensor,  # type: ignore[override]
                           cell_features: torch.Tensor) -> "CorrelatedScoresDistribution":
        n, d = mean_actions.shape
        scales = (log_std[0] + torch.tensor([self.INDIVIDUAL_OFFSET, 0.0, 0.0], device=log_std.device)).exp()
        per_cell = torch.eye(self.grid_cells, device=mean_actions.device).repeat(d // self.grid_cells, 1) * scales[1]
        factor = torch.cat([per_cell.expand(n, d, self.grid_cells), cell_features * scales[2]], dim=2)
        self.distribution = torch.distributions.LowRankMultivariateNormal(
            mean_actions, factor, (scales[0] ** 2).expand(n, d))
        return self

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(actions)

    def entropy(self) -> torch.Tensor:
        return self.distribution.entropy()

    def sample(self) -> torch.Tensor:
        return self.distribution.rsample()

    def mode(self) -> torch.Tensor:
        return self.distribution.loc


def score_distribution(action_space: gym.spaces.Space, network: "MaskNetwork") -> DiagGaussianDistribution:
    """The distribution of a score action space: correlated across images where the network says so."""
    action_dim = int(math.prod(action_space.shape))
    if network.correlated:
        return CorrelatedScoresDistribution(action_dim, network.grid * network.grid)
    return DiagGaussianDistribution(action_dim)


def score_distribution_from(dist: DiagGaussianDistribution, network: "MaskNetwork", latent: torch.Tensor,
                            log_std: torch.Tensor) -> DiagGaussianDistribution:
    """Set a score distribution's parameters from the network's latent (means, and cell features if correlated)."""
    if isinstance(dist, CorrelatedScoresDistribution):
        means, features = network.split_scores(latent)
        return dist.proba_distribution(means, log_std, features)
    return dist.proba_distribution(latent, log_std)


def score_log_std(log_std_init: float) -> nn.Parameter:
    """The learned log-scale of a score distribution: one standard deviation for every cell and image slot,
    so the policy serves any batch size (correlated exploration derives its three scales from it)."""
    return nn.Parameter(torch.full((1,), float(log_std_init)))


class MaskActorCriticPolicy(ActorCriticPolicy):
    """SB3 actor-critic policy built on :class:`MaskNetwork` (Bernoulli over MultiBinary in the
    ``cells`` and ``shared`` modes, a diagonal Gaussian over Box scores in ``scores`` and ``shared_scores``
    with one learned log standard deviation for every cell, one categorical per dimension of
    MultiDiscrete in ``family``).

    Works with every SB3 on-policy algorithm that uses ``ActorCriticPolicy`` (PPO, A2C, sb3-contrib's
    TRPO). :param mask_net_kwargs: options of :class:`MaskNetwork`. Other parameters are SB3's.

    :param log_prob_reduction: ``"sum"`` gives SB3's joint log-probability of the whole action (1024
        Bernoullis in the default ``cells`` mode); ``"mean"`` divides it, and the entropy, by the number
        of factors. With ``mean`` PPO's ratio is the geometric mean of the per-cell ratios, so its clip
        range bounds the average change per cell rather than the product of a thousand changes; A2C and
        PPO gradients shrink by the same factor, which Adam's scale invariance undoes.
    """

    LOG_PROB_REDUCTIONS = ("sum", "mean")

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, lr_schedule: Any,
                 mask_net_kwargs: dict[str, Any] | None = None, log_prob_reduction: str = "mean",
                 log_std_init: float = SCORE_LOG_STD_INIT, **kwargs: Any) -> None:
        if log_prob_reduction not in self.LOG_PROB_REDUCTIONS:
            raise ValueError(f"log_prob_reduction must be one of {self.LOG_PROB_REDUCTIONS}, got {log_prob_reduction!r}")
        self.mask_net_kwargs = mask_net_kwargs or {}
        self.log_prob_reduction = log_prob_reduction
        self.action_factors = action_factors(action_space)
        kwargs.setdefault("features_extractor_class", MaskObservationExtractor)
        kwargs.setdefault("ortho_init", False)  # keep MaskNetwork's own initialisation
        super().__init__(observation_space, action_space, lr_schedule, log_std_init=log_std_init, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = MaskNetwork(self.observation_space, self.action_space, **self.mask_net_kwargs)

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()  # MaskNetwork's latent_pi already are the logits (or score means)
        if isinstance(self.action_space, gym.spaces.Box):
            self.action_dist = score_distribution(self.action_space, self.mlp_extractor)
            self.log_std = score_log_std(self.log_std_init)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        if isinstance(self.action_space, gym.spaces.Box):
            return score_distribution_from(self.action_dist, self.mlp_extractor, latent_pi, self.log_std)
        return super()._get_action_dist_from_latent(latent_pi)

    def _reduce(self, per_action: torch.Tensor) -> torch.Tensor:
        return per_action / self.action_factors if self.log_prob_reduction == "mean" else per_action

    def forward(self, obs: torch.Tensor, deterministic: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        actions, values, log_prob = super().forward(obs, deterministic)
        return actions, values, self._reduce(log_prob)

    def evaluate_actions(self, obs: Any, actions: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        values, log_prob, entropy = super().evaluate_actions(obs, actions)
        return values, self._reduce(log_prob), None if entropy is None else self._reduce(entropy)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["mask_net_kwargs"] = self.mask_net_kwargs
        data["log_prob_reduction"] = self.log_prob_reduction
        return data
