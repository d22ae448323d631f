"""CAM-Net at small size: a cascade of latent-modulated RRDB levels (Peng, Moazeni & Li, 2021).

CAM-Net ("Cascading Modular Network for Multimodal Conditional Image Synthesis", arXiv 2106.09015)
produces one plausible restoration per latent code. Each level is an ESRGAN trunk: a 3x3 feature
conv, RRDB blocks (residual-in-residual dense blocks, residuals scaled by 0.2) each followed by an
AdaIN-style modulation ``(1 + gamma) * InstanceNorm(h) + beta`` whose gamma/beta come from a
per-block Linear of the level's mapping-network output, a long skip, an optional nearest x2
upsample, and a tanh output. A level's latent code is a vector (through the mapping network) plus
``code_nc`` noise channels concatenated to its input; level i > 0 takes the previous level's output
and 0.1 x its features. Convolutions are weight-normalised with LeakyReLU(0.2), as in CAM-Net.

The degraded image and its pixel mask (1 = kept) go in together, so the network knows which cells
it must invent. Levels per task (``levels_for``): ``sr`` one upsampling level per factor of two;
``sr_colorize`` a colorization level at the input resolution, then the upsampling levels;
``colorize`` a level at half resolution and one upsampling to full, predicting Lab (ab scaled by
``AB_RANGE``) whose L is used only where the input's cells were dropped. A code is one flat tensor per image
(``code_dim`` values), so "the same z" is a plain tensor and batching two codes is a concat.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from corruption_env.corruption import check_task, input_channels

AB_RANGE = 110.0  # Lab a/b channels of sRGB colours lie within about +-110


@dataclass
class CAMNetConfig:
    """Architecture of a CAM-Net; stored in every checkpoint.

    :param task: ``sr``, ``colorize`` or ``sr_colorize``.
    :param scale: super-resolution factor (1 for ``colorize``).
    :param image_size: side of the output image; the input side is ``image_size // scale``.
    :param nf: feature channels of each level's trunk.
    :param gc: growth channels inside a dense block.
    :param n_rrdb: RRDB blocks per level.
    :param code_nc: noise channels of the latent code concatenated to each level's input.
    :param z_dim: length of each level's latent vector (the mapping network's input).
    :param w_dim: mapping network output width (input of the per-block modulation).
    :param map_layers: depth of each level's mapping network.
    """

    task: str = "sr_colorize"
    scale: int = 2
    image_size: int = 32
    nf: int = 32
    gc: int = 16
    n_rrdb: int = 1
    code_nc: int = 2
    z_dim: int = 32
    w_dim: int = 64
    map_layers: int = 3

    def __post_init__(self) -> None:
        check_task(self.task, self.scale)
        if self.image_size % (2 * self.scale):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2 x scale ({2 * self.scale})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LevelSpec:
    in_size: int  # working resolution of the level's input
    upsample: bool  # whether the level doubles the resolution
    first: bool

    @property
    def out_size(self) -> int:
        return self.in_size * (2 if self.upsample else 1)


def levels_for(cfg: CAMNetConfig) -> list[LevelSpec]:
    """The cascade of a config: one level per output resolution."""
    n_up = int(math.log2(cfg.scale))
    low = cfg.image_size // cfg.scale
    if cfg.task == "sr":
        plan = [True] * n_up
    elif cfg.task == "sr_colorize":
        plan = [False] + [True] * n_up
    else:  # colorize: half resolution first, then up to full
        low, plan = cfg.image_size // 2, [False, True]
    specs, size = [], low
    for i, up in enumerate(plan):
        specs.append(LevelSpec(size, up, i == 0))
        size *= 2 if up else 1
    return specs


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(cin, cout, k, padding=k // 2))


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class DenseBlock(nn.Module):
    """ESRGAN's residual dense block: five convs, each seeing all earlier outputs; residual x 0.2."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv(nf + i * gc, gc) for i in range(4))
        self.out = _conv(nf + 4 * gc, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in self.convs:
            feats.append(_lrelu(conv(torch.cat(feats, 1))))
        return x + 0.2 * self.out(torch.cat(feats, 1))


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks and an outer residual scaled by 0.2."""

    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.body = nn.Sequential(DenseBlock(nf, gc), DenseBlock(nf, gc), DenseBlock(nf, gc))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.body(x)


class MappingNetwork(nn.Sequential):
    """MLP from a level's latent vector to the vector that drives its modulations."""

    def __init__(self, z_dim: int, w_dim: int, layers: int) -> None:
        dims = [z_dim] + [w_dim] * layers
        mods: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mods += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
        super().__init__(*mods)


class Modulation(nn.Module):
    """CAM-Net's AdaIN-style modulation of a block's output: ``(1 + gamma) * InstanceNorm(h) + beta``.

    It has no parameters (gamma and beta come from the level's ``affines``); it is a module of its own so
    that the int8 CAM-Net (:mod:`corruption_env.camnet.quantize`) can keep it in fp32 by name.
    """

    def forward(self, h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        return (1 + gamma) * F.instance_norm(h) + beta


class CAMNetLevel(nn.Module):
    """One level of the cascade: trunk of modulated RRDBs, long skip, optional x2 upsample, tanh."""

    def __init__(self, in_nc: int, out_nc: int, cfg: CAMNetConfig, spec: LevelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.map_layers)
        self.conv_first = _conv(in_nc, cfg.nf)
        self.blocks = nn.ModuleList(RRDB(cfg.nf, cfg.gc) for _ in range(cfg.n_rrdb))
        self.affines = nn.ModuleList(nn.Linear(cfg.w_dim, 2 * cfg.nf) for _ in range(cfg.n_rrdb))
        self.modulation = Modulation()
        self.conv_body = _conv(cfg.nf, cfg.nf)
        self.conv_up = _conv(cfg.nf, cfg.nf) if spec.upsample else None
        self.conv_hr = _conv(cfg.nf, cfg.nf)
        self.conv_last = _conv(cfg.nf, out_nc)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (output in [-1, 1], features at the output resolution)."""
        w = self.mapping(z)
        fea = self.conv_first(x)
        h = fea
        for block, affine in zip(self.blocks, self.affines):
            gamma, beta = affine(w)[:, :, None, None].chunk(2, dim=1)
            h = self.modulation(block(h), gamma, beta)
        h = fea + self.conv_body(h)
        if self.conv_up is not None:
            h = _lrelu(self.conv_up(F.interpolate(h, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_hr(h))
        return torch.tanh(self.conv_last(feat)), feat


class CAMNet(nn.Module):
    """The cascade. ``forward(x_c, pixel_mask, code)`` returns RGB in [0, 1] at ``image_size``.

    :param cfg: architecture; see :class:`CAMNetConfig`.
    """

    def __init__(self, cfg: CAMNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.specs = levels_for(cfg)
        self.in_nc = input_channels(cfg.task)
        self.out_nc = 3  # RGB, or Lab for colorize
        levels = []
        for spec in self.specs:
            carried = self.in_nc if spec.first else self.out_nc + cfg.nf
            levels.append(CAMNetLevel(carried + 1 + cfg.code_nc, self.out_nc, cfg, spec))
        self.levels = nn.ModuleList(levels)
        self.code_sizes = [cfg.z_dim + cfg.code_nc * s.in_size ** 2 for s in self.specs]

    @property
    def code_dim(self) -> int:
        """Length of one image's latent code (all levels' vectors and noise maps, flattened)."""
        return sum(self.code_sizes)

    @property
    def input_size(self) -> int:
        return self.cfg.image_size // self.cfg.scale

    def sample_code(self, n: int, generator: torch.Generator | None = None,
                    device: str | torch.device | None = None) -> torch.Tensor:
        """Draw ``n`` latent codes ~ N(0, I), shaped (n, code_dim)."""
        device = device if device is not None else next(self.parameters()).device
        return torch.randn(n, self.code_dim, generator=generator, device=device)

    def split_code(self, code: torch.Tensor) -> list[torch.Tensor]:
        """Cut flat codes (N, code_dim) into one (N, code_size_i) chunk per level."""
        if code.ndim != 2 or code.shape[1] != self.code_dim:
            raise ValueError(f"code must be shaped (N, {self.code_dim}), got {tuple(code.shape)}")
        return list(code.split(self.code_sizes, dim=1))

    def run_level(self, i: int, x_c: torch.Tensor, pixel_mask: torch.Tensor,
                  prev: tuple[torch.Tensor, torch.Tensor] | None, level_code: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run level ``i`` given the previous level's (output, features) and this level's code chunk."""
        spec, cfg = self.specs[i], self.cfg
        n, size = level_code.shape[0], spec.in_size
        z, noise = level_code.split([cfg.z_dim, cfg.code_nc * size * size], dim=1)
        noise = noise.reshape(n, cfg.code_nc, size, size)
        mask = pixel_mask if pixel_mask.shape[-1] == size else F.interpolate(pixel_mask, size=(size, size), mode="nearest")
        if spec.first:
            carried = x_c if x_c.shape[-1] == size else F.avg_pool2d(x_c, x_c.shape[-1] // size)
        else:
            carried = torch.cat([prev[0], 0.1 * prev[1]], dim=1)
        return self.levels[i](torch.cat([carried * 2 - 1 if spec.first else carried, mask, noise], dim=1), z)

    def forward_levels(self, x_c: torch.Tensor, pixel_mask: torch.Tensor, code: torch.Tensor
                       ) -> list[torch.Tensor]:
        """Every level's output in the task's output space ([-1, 1]), lowest resolution first."""
        outs, prev = [], None
        for i, chunk in enumerate(self.split_code(code)):
            prev = self.run_level(i, x_c, pixel_mask, prev, chunk)
            outs.append(prev[0])
        return outs

    def to_rgb(self, out: torch.Tensor, x_c: torch.Tensor, pixel_mask: torch.Tensor) -> torch.Tensor:
        """Turn a last-level output into RGB in [0, 1]; for colorize, the input's L wins where kept."""
        if self.cfg.task != "colorize":
            return (out + 1) / 2
        lightness = pixel_mask * x_c + (1 - pixel_mask) * (out[:, :1] + 1) / 2
        lab = torch.cat([lightness * 100.0, out[:, 1:] * AB_RANGE], dim=1)
        return kornia.color.lab_to_rgb(lab, clip=True)

    def forward(self, x_c: torch.Tensor, pixel_mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Restore masked degraded images ``x_c`` (N, C', h, w) in [0, 1] with pixel masks (N, 1, h, w)."""
        return self.to_rgb(self.forward_levels(x_c, pixel_mask, code)[-1], x_c, pixel_mask)


def level_targets(model: CAMNet, target_rgb: torch.Tensor) -> list[torch.Tensor]:
    """The ground truth for each level, in its output space ([-1, 1]) and resolution."""
    outs = []
    for spec in model.specs:
        rgb = F.adaptive_avg_pool2d(target_rgb, spec.out_size)
        if model.cfg.task == "colorize":
            lab = kornia.color.rgb_to_lab(rgb)
            outs.append(torch.cat([lab[:, :1] / 50.0 - 1, lab[:, 1:] / AB_RANGE], dim=1))
        else:
            outs.append(rgb * 2 - 1)
    return outs


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace weight-normalised convs by plain ones holding the same weights (faster inference)."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["CAMNet", "CAMNetConfig", "fold_weight_norm", "level_targets", "levels_for", "AB_RANGE",
           "count_parameters"]
