"""Saving and loading CAM-Net checkpoints, and the weights shipped with the package.

A checkpoint is a ``torch.save`` dict ``{"format": "camnet-v1", "config": CAMNetConfig dict,
"state_dict": ...}`` holding the weight-normalised training parametrisation; ``load_camnet``
rebuilds the net, loads it, folds weight norm into plain convs and freezes it for inference.
Shipped weights live in ``camnet/weights/<dataset>_<task>_x<scale>.pt`` next to a model card
``.json`` that says how they were made (``python -m corruption_env.camnet.pretrain``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from corruption_env.camnet.model import CAMNet, CAMNetConfig, fold_weight_norm
from corruption_env.files import atomic_path

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


def save_camnet(model: CAMNet, path: str | Path) -> None:
    """Write ``model`` (weight-normalised, as trained) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "config": model.cfg.to_dict(), "state_dict": model.state_dict()}, tmp)


def read_camnet(path: str | Path) -> CAMNet:
    """The trainable (weight-normalised) CAM-Net stored at ``path``, with a clear error for anything else.

    :raises FileNotFoundError: ``path`` does not exist (or is a folder).
    :raises ValueError: ``path`` is not a readable CAM-Net checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CAM-Net checkpoint {path} does not exist; {_how_to_make(path)}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, not a torch file, ...
        raise ValueError(f"CAM-Net checkpoint {path} could not be read ({type(exc).__name__}: {exc}); "
                         f"it is corrupt or not a checkpoint: pass another path, or {_how_to_make()}") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a CAM-Net checkpoint (format {FORMAT!r} expected); pass another path, "
                         f"or {_how_to_make()}")
    model = CAMNet(CAMNetConfig(**blob["config"]))
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"CAM-Net checkpoint {path} does not match its own config ({exc}); pass another path, "
                         f"or {_how_to_make()}") from exc
    return model


def load_camnet(path: str | Path, device: str | torch.device = "cpu", expect_task: str | None = None,
                expect_scale: int | None = None, expect_image_size: int | None = None) -> CAMNet:
    """Load a frozen, inference-ready CAM-Net (weight norm folded, eval mode, no gradients).

    :param path: a checkpoint written by ``save_camnet`` / the pretraining script.
    :param device: where to put it.
    :param expect_task, expect_scale, expect_image_size: if given, raise a ValueError when the
        checkpoint was trained for something else (a clear error instead of a shape mismatch later).
    """
    model = read_camnet(path)
    cfg = model.cfg
    wanted = {"task": expect_task, "scale": expect_scale, "image_size": expect_image_size}
    wrong = {k: (v, getattr(cfg, k)) for k, v in wanted.items() if v is not None and getattr(cfg, k) != v}
    if wrong:
        details = ", ".join(f"{k}={have!r} (wanted {want!r})" for k, (want, have) in wrong.items())
        raise ValueError(f"CAM-Net checkpoint {path} was trained for {details}; pass a checkpoint trained for "
                         f"this setting, or {_how_to_make()}")
    fold_weight_norm(model)
    model.requires_grad_(False)
    return model.eval().to(device)
