"""Pretrain CAM-Net with conditional IMLE, evaluate it, and write its model card.

Conditional IMLE (Li & Malik 2019; CAM-Net's training rule): for every image in a pool, draw
``samples`` latent codes, keep the one whose output is nearest the ground truth, then take gradient
steps pulling the kept outputs toward their targets. Selection is level by level as in CAM-Net: the
first level's code is chosen by its own output's distance, the next level's code given the chosen
first, and so on. The distance is per-pixel MSE (CAM-Net uses LPIPS, whose VGG weights cannot be
downloaded here). Inputs are corrupted with random masks (half Bernoulli, half CowMask, keep
fraction ~ U(0.25, 1)) so the net learns to fill dropped cells; the pool is redrawn every
``epochs_per_pool`` epochs. Every pool's data, masks and codes derive from (seed, pool index), so a
resumed run reproduces an uninterrupted one.

    python -m corruption_env.camnet.pretrain --dataset shapes --task sr_colorize --out PATH.pt

writes PATH.pt (the weights), PATH.json (the model card: config, steps, wall time, held-out
nearest-of-S distance against bicubic, diversity over kept and dropped cells), PATH.png (a sample
grid) and, while training, PATH.ckpt (resumable state; Ctrl-C saves it).

Distillation (``--distill-from TEACHER.pt``, e.g. a narrower net from the shipped one): the same loop, but each
pool's codes are drawn at random instead of selected and each level's target is the teacher's output for the same
corrupted input and code, so the student learns the teacher's map from code to view (the distribution of views the
environment samples), not only its best restorations. The card then also reports the student's held-out distance to
the teacher, code by code.

    python -m corruption_env.camnet.pretrain --dataset shapes --task sr_colorize --nf 16 \
        --distill-from corruption_env/camnet/weights/shapes_sr_colorize_x2.pt --out PATH.pt
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import kornia
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from tqdm import tqdm

from corruption_env.camnet.checkpoint import load_camnet, read_camnet, save_camnet
from corruption_env.camnet.model import CAMNet, CAMNetConfig, count_parameters, level_targets
from corruption_env.cli_options import ArgumentParser, UsageError, usage_errors
from corruption_env.config import check_device
from corruption_env.corruption import TASKS, apply_mask, bicubic_restoration, degrade, random_training_masks
from corruption_env.data import available_datasets, load_dataset
from corruption_env.files import atomic_path, atomic_write_json
from corruption_env.images import ImageDataset, to_unit
from corruption_env.pictures import comparison_grid
from corruption_env.precision import PRECISIONS, autocast, describe_precision, resolve_precision


@dataclass
class PretrainConfig:
    """Conditional-IMLE pretraining settings (the model's own are in CAMNetConfig).

    :param dataset: registry name of the training images.
    :param data_root: directory for file-based datasets.
    :param mask_grid: side g of the g x g mask grid used to corrupt inputs.
    :param steps: gradient steps in total.
    :param batch_size: images per gradient step.
    :param pool_size: images whose codes are selected together; redrawn every ``epochs_per_pool``.
    :param epochs_per_pool: passes over a pool before new codes are drawn.
    :param samples: latent codes drawn per image and level (the S of nearest-of-S).
    :param lr: Adam learning rate, cosine-decayed to 10 % of it over ``steps``.
    :param seed: seed of data order, masks and codes.
    :param checkpoint_every_s: seconds between resumable checkpoints.
    :param eval_images: held-out images for the model card.
    :param precision: ``auto`` (bf16 autocast where the hardware has native bf16, else fp32), ``bf16``
        or ``fp32``; covers the forward passes of code selection, training and evaluation (weights,
        optimizer state and distances stay fp32; see ``corruption_env.precision``).
    :param distill_from: weights of a trained CAM-Net (same task, scale, image size and code layout) to distill:
        random codes, the teacher's outputs as targets, instead of conditional IMLE on the images.
    """

    dataset: str = "shapes"
    data_root: str | None = None
    mask_grid: int = 4
    steps: int = 20000
    batch_size: int = 32
    pool_size: int = 1024
    epochs_per_pool: int = 10
    samples: int = 20
    lr: float = 2e-4
    seed: int = 0
    checkpoint_every_s: float = 120.0
    eval_images: int = 512
    precision: str = "auto"
    distill_from: str | None = None


def corrupt(model: CAMNet, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Degrade RGB targets for the model's task and apply the cell mask: (x_c, pixel mask)."""
    return apply_mask(degrade(target, model.cfg.scale, model.cfg.task), mask)


@torch.no_grad()
def select_codes(model: CAMNet, x_c: torch.Tensor, pixel_mask: torch.Tensor, targets: list[torch.Tensor],
                 samples: int, generator: torch.Generator, chunk: int = 6) -> torch.Tensor:
    """Nearest-of-``samples`` codes, chosen level by level (CAM-Net's hierarchical selection)."""
    chosen_all = []
    for start in range(0, x_c.shape[0], chunk):
        xs, ms = x_c[start:start + chunk], pixel_mask[start:start + chunk]
        n, prev, chosen = xs.shape[0], None, []
        for level, size in enumerate(model.code_sizes):
            candidates = torch.randn(n, samples, size, generator=generator)
            rep = (lambda t: t.repeat_interleave(samples, dim=0))
            prev_rep = None if prev is None else (rep(prev[0]), rep(prev[1]))
            out, _ = model.run_level(level, rep(xs), rep(ms), prev_rep, candidates.reshape(n * samples, size))
            target = rep(targets[level][start:start + chunk])
            dist = (out.float() - target).pow(2).flatten(1).mean(1).reshape(n, samples)
            best = candidates[torch.arange(n), dist.argmin(1)]
            chosen.append(best)
            prev = model.run_level(level, xs, ms, prev, best)
        chosen_all.append(torch.cat(chosen, dim=1))
    return torch.cat(chosen_all)


@torch.no_grad()
def teacher_targets(teacher: CAMNet, x_c: torch.Tensor, pixel_mask: torch.Tensor, codes: torch.Tensor,
                    chunk: int = 128) -> list[torch.Tensor]:
    """The teacher's output at every level for these inputs and codes, as fp32 (computed at the caller's autocast
    precision): the distillation targets."""
    parts = [teacher.forward_levels(x_c[i:i + chunk], pixel_mask[i:i + chunk], codes[i:i + chunk])
             for i in range(0, x_c.shape[0], chunk)]
    return [torch.cat([p[level] for p in parts]).float() for level in range(len(teacher.specs))]


def imle_loss(model: CAMNet, x_c: torch.Tensor, pixel_mask: torch.Tensor, codes: torch.Tensor,
              targets: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of the MSE between each level's output (with the chosen codes) and its target."""
    outs = model.forward_levels(x_c, pixel_mask, codes)
    return sum(F.mse_loss(o.float(), t) for o, t in zip(outs, targets))


def _pool(data: ImageDataset, model: CAMNet, cfg: PretrainConfig, index: int, teacher: CAMNet | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Pool ``index``: images (randomly flipped), masks, corrupted inputs, level targets, codes (nearest-of-S
    codes and the images' levels; with a ``teacher``, random codes and the teacher's outputs for them)."""
    rng = np.random.default_rng([cfg.seed, index])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    target = to_unit(data.images[rng.choice(len(data), cfg.pool_size, replace=len(data) < cfg.pool_size)])
    flip = torch.from_numpy(rng.random(cfg.pool_size) < 0.5)
    target = torch.where(flip[:, None, None, None], target.flip(-1), target)
    mask = random_training_masks(cfg.pool_size, cfg.mask_grid, gen)
    x_c, pixel_mask = corrupt(model, target, mask)
    if teacher is None:
        targets = level_targets(model, target)  # outside autocast: the targets stay exact fp32
    else:
        codes = torch.randn(cfg.pool_size, model.code_dim, generator=gen)
    with autocast(resolve_precision(cfg.precision, x_c.device), x_c.device):
        if teacher is None:
            codes = select_codes(model, x_c, pixel_mask, targets, cfg.samples, gen)
        else:
            targets = teacher_targets(teacher, x_c, pixel_mask, codes)
    order = torch.from_numpy(np.concatenate([rng.permutation(cfg.pool_size) for _ in range(cfg.epochs_per_pool)]))
    return x_c, pixel_mask, codes, targets, order


def _lr_at(cfg: PretrainConfig, step: int) -> float:
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(cfg.steps, 1), 1.0))))


RESUME_MAY_CHANGE = ("steps", "checkpoint_every_s", "eval_images", "data_root")  # the rest would change the run


def resume_state(ckpt_path: Path, camnet_cfg: CAMNetConfig, cfg: PretrainConfig) -> dict | None:
    """The resumable state at ``ckpt_path`` (None if there is none), refusing one written with other
    settings: a resumed run reproduces an uninterrupted one only with the same model, seed, pools and
    batches. Only :data:`RESUME_MAY_CHANGE` may differ (a longer ``steps`` also stretches the lr schedule)."""
    if not ckpt_path.is_file():
        return None
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved_camnet, saved = state["camnet"], state["pretrain"]
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise UsageError(f"{ckpt_path} is not a readable pretraining state ({type(exc).__name__}); "
                         "delete it to start over") from None
    changed = [f"{k} {v!r} -> {getattr(camnet_cfg, k)!r}" for k, v in saved_camnet.items()
               if getattr(camnet_cfg, k, v) != v]
    changed += [f"{k} {v!r} -> {getattr(cfg, k)!r}" for k, v in saved.items()
                if k not in RESUME_MAY_CHANGE and getattr(cfg, k, v) != v]
    if changed:
        raise UsageError(f"{ckpt_path} holds a run with other settings ({', '.join(changed)}); pass the same ones "
                         f"to resume it (only {', '.join(RESUME_MAY_CHANGE)} may change), or delete it to start over")
    return state


def train(model: CAMNet, cfg: PretrainConfig, out: Path, quiet: bool = False, teacher: CAMNet | None = None) -> dict:
    """Train ``model`` in place (by conditional IMLE, or distilling ``teacher``), resuming from ``out``.ckpt if
    present; return the run's bookkeeping."""
    data = load_dataset(cfg.dataset, root=cfg.data_root, image_size=model.cfg.image_size, split="train", channels=3)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    ckpt_path = out.with_suffix(".ckpt")
    step, elapsed = 0, 0.0
    state = resume_state(ckpt_path, model.cfg, cfg)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed_s"]
        if not quiet:
            print(f"resuming from {ckpt_path} at step {step}")

    def checkpoint() -> None:
        with atomic_path(ckpt_path) as tmp:
            torch.save({"camnet": model.cfg.to_dict(), "pretrain": asdict(cfg), "model": model.state_dict(),
                        "optimizer": opt.state_dict(), "step": step, "elapsed_s": elapsed + time.time() - t0}, tmp)
        save_camnet(model, out)

    steps_per_pool = cfg.pool_size * cfg.epochs_per_pool // cfg.batch_size
    precision = resolve_precision(cfg.precision, next(model.parameters()).device)
    t0, last_save = time.time(), time.time()
    bar = tqdm(total=cfg.steps, initial=step, desc="cIMLE" if teacher is None else "distil", unit="step",
               disable=quiet, dynamic_ncols=True)
    loss_ema = None
    try:
        while step < cfg.steps:
            pool_index, offset = divmod(step, steps_per_pool)
            x_c, pixel_mask, codes, targets, order = _pool(data, model, cfg, pool_index, teacher)
            for k in range(offset, steps_per_pool):
                if step >= cfg.steps:
                    break
                idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
                for group in opt.param_groups:
                    group["lr"] = _lr_at(cfg, step)
                with autocast(precision, x_c.device):
                    loss = imle_loss(model, x_c[idx], pixel_mask[idx], codes[idx], [t[idx] for t in targets])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss_ema:.4f}", pool=pool_index)
                if time.time() - last_save > cfg.checkpoint_every_s:
                    checkpoint()
                    last_save = time.time()
    except KeyboardInterrupt:
        checkpoint()
        bar.close()
        print(f"\ninterrupted at step {step}; state saved to {ckpt_path}. Run the same command again to resume.")
        raise
    bar.close()
    checkpoint()
    return {"steps": step, "wall_time_s": round(elapsed + time.time() - t0, 1), "final_loss_ema": loss_ema}


# ------------------------------------------------------------------------------------------ evaluation

def _pairwise_diversity(views: torch.Tensor, region: torch.Tensor) -> float:
    """Mean over pairs of views and over ``region`` pixels of the channel-mean absolute difference.

    :param views: (K, N, C, H, W); :param region: (N, 1, H, W) weights (1 = pixel counts).
    """
    total, count = 0.0, 0.0
    for i, j in itertools.combinations(range(views.shape[0]), 2):
        diff = (views[i] - views[j]).abs().mean(1, keepdim=True)
        total += float((diff * region).sum())
        count += float(region.sum())
    return total / max(count, 1e-12)


@torch.no_grad()
def evaluate_camnet(model: CAMNet, data: ImageDataset, n_images: int = 512, samples: int = 24,
                    diversity_codes: int = 6, mask_grid: int = 4, seed: int = 1234, precision: str = "fp32",
                    teacher: CAMNet | None = None) -> dict:
    """Held-out numbers for the model card, for keep-all and for randomly masked inputs.

    ``nearest_of_s_mse``: per-pixel MSE (RGB in [0, 1]) of the best of ``samples`` outputs;
    ``bicubic_mse``: the same for bicubic upsampling of the corrupted input; ``mean_z_mse``: the
    average over codes. ``diversity_kept`` / ``diversity_dropped``: mean pairwise absolute
    difference between outputs for different codes over pixels whose cell was kept / dropped.
    For colorization tasks, ``colour_diversity_*`` is the same in Lab's ab plane (Lab units).
    ``precision`` is that of the model's forward passes (``bf16``, ``fp32`` or ``auto``). With a ``teacher``,
    ``teacher_mse``: the per-pixel MSE between the model's and the teacher's output for the same input and code,
    averaged over codes (how closely a distilled net reproduces the views it replaces).
    """
    precision = resolve_precision(precision, next(model.parameters()).device)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    n_images = min(n_images, len(data))
    target = to_unit(data.images[:n_images])
    report: dict = {"images": n_images, "samples": samples}
    all_kept = torch.ones(n_images, mask_grid, mask_grid)
    masked = random_training_masks(n_images, mask_grid, gen)
    for name, mask in (("keep_all", all_kept), ("masked", masked)):
        x_c, pixel_mask = corrupt(model, target, mask)
        hi_mask = F.interpolate(pixel_mask, size=target.shape[-2:], mode="nearest")
        best = torch.full((n_images,), float("inf"))
        mean_mse, teacher_mse = torch.zeros(n_images), 0.0
        views = []
        for s in range(samples):
            code = model.sample_code(n_images, gen)
            with autocast(precision, x_c.device):
                out = model(x_c, pixel_mask, code).float().clamp(0, 1)
                if teacher is not None:
                    teacher_out = teacher(x_c, pixel_mask, code).float().clamp(0, 1)
                    teacher_mse += float((out - teacher_out).pow(2).mean()) / samples
            mse = (out - target).pow(2).flatten(1).mean(1)
            best, mean_mse = torch.minimum(best, mse), mean_mse + mse / samples
            if s < diversity_codes:
                views.append(out)
        views_t = torch.stack(views)
        row = {"nearest_of_s_mse": float(best.mean()), "mean_z_mse": float(mean_mse.mean()),
               "bicubic_mse": float((bicubic_restoration(x_c, model.cfg.scale) - target).pow(2).mean()),
               "kept_fraction": float(mask.mean()),
               "diversity_kept": _pairwise_diversity(views_t, hi_mask)}
        if teacher is not None:
            row["teacher_mse"] = teacher_mse
        if name == "masked":
            row["diversity_dropped"] = _pairwise_diversity(views_t, 1 - hi_mask)
        if model.cfg.task in ("colorize", "sr_colorize"):
            ab = kornia.color.rgb_to_lab(views_t.flatten(0, 1))[:, 1:].unflatten(0, views_t.shape[:2])
            row["colour_diversity_kept"] = _pairwise_diversity(ab, hi_mask)
            if name == "masked":
                row["colour_diversity_dropped"] = _pairwise_diversity(ab, 1 - hi_mask)
        report[name] = {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}
    return report


@torch.no_grad()
def sample_grid(model: CAMNet, data: ImageDataset, path: Path, rows: int = 8, codes: int = 5,
                mask_grid: int = 4, seed: int = 7) -> None:
    """PNG: per row, target | degraded input | masked input | ``codes`` restorations (different z)."""
    gen = torch.Generator().manual_seed(seed)
    target = to_unit(data.images[:rows])
    x_lr = degrade(target, model.cfg.scale, model.cfg.task)
    mask = random_training_masks(rows, mask_grid, gen, keep_range=(0.5, 0.8))
    x_c, pixel_mask = apply_mask(x_lr, mask)
    columns = [target, x_lr, x_c] + [model(x_c, pixel_mask, model.sample_code(rows, gen)) for _ in range(codes)]
    grid = comparison_grid(columns, size=2 * target.shape[-1], max_images=rows, images_as_rows=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(grid, path)


# ------------------------------------------------------------------------------------------------- CLI

def _param_help(cls: type) -> dict[str, str]:
    """``:param name: text`` entries of a dataclass docstring, whitespace collapsed."""
    entries = re.findall(r":param (\w+): (.*?)(?=:param |\Z)", cls.__doc__ or "", flags=re.S)
    # argparse formats help text with %
    return {name: " ".join(text.replace("``", "").split()).replace("%", "%%") for name, text in entries}


def _add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                        choices: dict[str, tuple] | None = None) -> None:
    helps = _param_help(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type).split(" ")[0], str)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default,
                            choices=(choices or {}).get(f.name),
                            help=f"{helps.get(f.name, '').rstrip('.')} (default {f.default})".lstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m corruption_env.camnet.pretrain",
        description="Pretrain CAM-Net with conditional IMLE on masked, degraded images and write "
                    "weights, a model card (.json) and a sample grid (.png) next to --out.")
    parser.add_argument("--out", type=Path, required=True, help="weights file to write (PATH.pt)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="torch device to train on: cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--eval-only", action="store_true", help="only evaluate --out and rewrite its card and grid")
    _add_dataclass_args(parser, CAMNetConfig, choices={"task": TASKS})
    _add_dataclass_args(parser, PretrainConfig, skip=("data_root",))
    parser.add_argument("--data-root", default=None, help="directory for file-based datasets")
    return parser


def check_args(args: argparse.Namespace, camnet_cfg: CAMNetConfig, cfg: PretrainConfig) -> None:
    """Every bad input as a :class:`UsageError`, before anything is trained or written."""
    if cfg.dataset not in available_datasets():
        raise UsageError(f"unknown dataset {cfg.dataset!r}; available: {', '.join(available_datasets())}")
    if cfg.precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {cfg.precision!r}; available: {', '.join(PRECISIONS)}")
    small = [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in
             ("steps", "batch_size", "pool_size", "epochs_per_pool", "samples", "eval_images", "mask_grid")
             if getattr(cfg, k) < 1]
    small += [f"--threads {args.threads}"] if args.threads is not None and args.threads < 1 else []
    if small:
        raise UsageError(f"{', '.join(small)}: must be >= 1")
    if cfg.lr <= 0 or cfg.checkpoint_every_s <= 0:
        raise UsageError(f"--lr ({cfg.lr}) and --checkpoint-every-s ({cfg.checkpoint_every_s}) must be > 0")
    if cfg.batch_size > cfg.pool_size * cfg.epochs_per_pool:
        raise UsageError(f"--batch-size {cfg.batch_size} is larger than a pool's --pool-size x --epochs-per-pool "
                         f"= {cfg.pool_size * cfg.epochs_per_pool} images; lower it or raise those")
    if (camnet_cfg.image_size // camnet_cfg.scale) % cfg.mask_grid:
        raise UsageError(f"--mask-grid {cfg.mask_grid} must divide the input side image_size / scale = "
                         f"{camnet_cfg.image_size // camnet_cfg.scale}")
    try:
        check_device(args.device)
    except ValueError as exc:
        raise UsageError(f"--device: {exc}") from None
    if args.out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; pass a weights file path such as {args.out / 'camnet.pt'}")
    try:  # a bad data root fails here, not after minutes of training
        for split in ("train", "test"):
            load_dataset(cfg.dataset, root=cfg.data_root, image_size=camnet_cfg.image_size, split=split, channels=3)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def load_teacher(camnet_cfg: CAMNetConfig, cfg: PretrainConfig) -> CAMNet | None:
    """The frozen CAM-Net named by ``--distill-from`` (None without one), refused unless the student can
    take its codes and inputs: same task, scale, image size, ``z_dim`` and ``code_nc``."""
    if cfg.distill_from is None:
        return None
    try:
        teacher = load_camnet(cfg.distill_from, expect_task=camnet_cfg.task, expect_scale=camnet_cfg.scale,
                              expect_image_size=camnet_cfg.image_size)
    except (ValueError, OSError) as exc:
        raise UsageError(f"--distill-from: {exc}") from None
    differ = [f"--{k.replace('_', '-')} {getattr(camnet_cfg, k)} (teacher {getattr(teacher.cfg, k)})"
              for k in ("z_dim", "code_nc") if getattr(camnet_cfg, k) != getattr(teacher.cfg, k)]
    if differ:
        raise UsageError(f"--distill-from {cfg.distill_from}: the student's codes must be the teacher's, but "
                         f"{', '.join(differ)}; pass the teacher's values")
    return teacher


@usage_errors
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        camnet_cfg = CAMNetConfig(**{f.name: getattr(args, f.name) for f in fields(CAMNetConfig)})
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    out: Path = args.out
    card_path = out.with_suffix(".json")
    if args.eval_only:
        try:
            model = read_camnet(out)
        except (ValueError, OSError) as exc:
            raise UsageError(f"--eval-only: {exc}") from None
        camnet_cfg = model.cfg
    check_args(args, camnet_cfg, cfg)
    teacher = load_teacher(camnet_cfg, cfg)
    print(describe_precision(cfg.precision, args.device, change_hint="--precision fp32"), file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.eval_only:
        run = json.loads(card_path.read_text())["training"] if card_path.is_file() else {}
    else:
        resume_state(out.with_suffix(".ckpt"), camnet_cfg, cfg)  # refuse a mismatched resume before building
        torch.manual_seed(cfg.seed)
        model = CAMNet(camnet_cfg).to(args.device)
        try:
            run = train(model, cfg, out, teacher=teacher)
        except KeyboardInterrupt:
            return 130
    model.eval()
    test = load_dataset(cfg.dataset, root=cfg.data_root, image_size=camnet_cfg.image_size, split="test", channels=3)
    print("evaluating on held-out images ...", file=sys.stderr)
    card = {
        "model": "CAM-Net (small re-implementation, corruption_env.camnet)",
        "dataset": cfg.dataset, "task": camnet_cfg.task, "scale": camnet_cfg.scale,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m corruption_env.camnet.pretrain " + " ".join(sys.argv[1:] if argv is None else argv),
        "parameters": count_parameters(model), "code_dim": model.code_dim,
        "camnet_config": camnet_cfg.to_dict(), "pretrain_config": asdict(cfg),
        "training": run, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "precision": resolve_precision(cfg.precision, args.device),
        "heldout": evaluate_camnet(model, test, n_images=cfg.eval_images, samples=cfg.samples, mask_grid=cfg.mask_grid,
                                   precision=cfg.precision, teacher=teacher),
    }
    atomic_write_json(card_path, card)
    sample_grid(model, test, out.with_suffix(".png"), mask_grid=cfg.mask_grid)
    print(json.dumps(card["heldout"], indent=2))
    print(f"wrote {out}, {card_path}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
