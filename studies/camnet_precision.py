"""The shipped CAM-Nets' model-card numbers recomputed in fp32 and bf16 side by side.

bf16 autocast must not change what CAM-Net does: this evaluates each shipped checkpoint on the same
held-out images, masks and latent codes in both precisions (``evaluate_camnet``, the model card's
own measurement) and prints one table per checkpoint with the difference.

    python studies/camnet_precision.py            # both shipped checkpoints, about 2 minutes on 2 cores
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from corruption_env.camnet import load_camnet
from corruption_env.camnet.checkpoint import shipped_checkpoint
from corruption_env.camnet.pretrain import evaluate_camnet
from corruption_env.data import load_dataset
from corruption_env.files import atomic_write_json

METRICS = ("nearest_of_s_mse", "bicubic_mse", "mean_z_mse", "diversity_kept", "diversity_dropped",
           "colour_diversity_kept", "colour_diversity_dropped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="held-out images (the cards use 512)")
    parser.add_argument("--samples", type=int, default=20, help="latent codes per image (the cards use 20)")
    parser.add_argument("--out", type=Path, default=Path("results/camnet_precision.json"), help="JSON report")
    args = parser.parse_args(argv)
    report = {}
    for task in ("sr_colorize", "sr"):  # the shipped checkpoints: shapes, scale 2
        path = shipped_checkpoint("shapes", task, 2)
        name, model = path.stem, load_camnet(path)
        test = load_dataset("shapes", image_size=model.cfg.image_size, split="test", channels=3)
        report[name] = {p: evaluate_camnet(model, test, n_images=args.images, samples=args.samples, precision=p)
                        for p in ("fp32", "bf16")}
        print(f"\n{name}\n| input | metric | fp32 | bf16 | bf16 - fp32 |\n|---|---|---|---|---|")
        for inputs in ("masked", "keep_all"):
            for metric in METRICS:
                a = report[name]["fp32"][inputs].get(metric)
                b = report[name]["bf16"][inputs].get(metric)
                if a is not None:
                    print(f"| {inputs} | {metric} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
