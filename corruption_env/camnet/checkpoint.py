"""Saving and loading CAM-Net checkpoints, and the weights shipped with the package.

A checkpoint is a ``torch.save`` dict ``{"format": "camnet-v1", "config": CAMNetConfig dict,
"state_dict": ...}`` holding the weight-normalised training parametrisation; ``load_camnet``
rebuilds the net, loads it, folds weight norm into plain convs and freezes it for inference.
Shipped weights live in ``camnet/weights/<dataset>_<task>_x<scale>.pt`` next to a model card
``.json`` that says how they were made (``python -m corruption_env.camnet.pretrain``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from corruption_env.camnet.model import CAMNet, CAMNetConfig, fold_weight_norm

FORMAT = "camnet-v1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shipped_checkpoint(dataset: str, task: str, scale: int) -> Path:
    """Path of the weights shipped for (dataset, task, scale); it may not exist."""
    return WEIGHTS_DIR / f"{dataset}_{task}_x{scale}.pt"


def available_checkpoints() -> list[str]:
    return sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))


def _how_to_make(path: Path | None = None) -> str:
    out = f" --out {path}" if path is not None else " --out PATH.pt"
    return ("make one with `python -m corruption_env.camnet.pretrain --dataset shapes --task sr_colorize"
            f"{out}`, or use one of the shipped checkpoints: {', '.join(available_checkpoints()) or 'none'}")


def atomic_save(obj: object, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; weights are shared, readable files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_camnet(model: CAMNet, path: str | Path) -> None:
    """Write ``model`` (weight-normalised, as trained) to ``path`` atomically."""
    atomic_save({"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": model.state_dict()}, path)


def load_camnet(path: str | Path, device: str | torch.device = "cpu", expect_task: str | None = None,
                expect_scale: int | None = None, expect_image_size: int | None = None) -> CAMNet:
    """Load a frozen, inference-ready CAM-Net (weight norm folded, eval mode, no gradients).

    :param path: a checkpoint written by ``save_camnet`` / the pretraining script.
    :param device: where to put it.
    :param expect_task, expect_scale, expect_image_size: if given, raise a ValueError when the
        checkpoint was trained for something else (a clear error instead of a shape mismatch later).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CAM-Net checkpoint {path} does not exist; {_how_to_make(path)}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise ValueError(f"CAM-Net checkpoint {path} could not be read ({type(exc).__name__}: {exc}); "
                         f"it is corrupt or not a checkpoint: {_how_to_make(path)}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a CAM-Net checkpoint (format {FORMAT!r} expected); {_how_to_make(path)}")
    cfg = CAMNetConfig(**blob["config"])
    wanted = {"task": expect_task, "scale": expect_scale, "image_size": expect_image_size}
    wrong = {k: (v, getattr(cfg, k)) for k, v in wanted.items() if v is not None and getattr(cfg, k) != v}
    if wrong:
        details = ", ".join(f"{k}={have!r} (wanted {want!r})" for k, (want, have) in wrong.items())
        raise ValueError(f"CAM-Net checkpoint {path} was trained for {details}; pass a checkpoint trained for "
                         f"this setting, or {_how_to_make()}")
    model = CAMNet(cfg)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"CAM-Net checkpoint {path} does not match its own config ({exc}); {_how_to_make(path)}") from exc
    fold_weight_norm(model)
    model.requires_grad_(False)
    return model.eval().to(device)
