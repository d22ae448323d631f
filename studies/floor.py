"""The learnability floor: does the CPU-default encoder visibly learn within its budget?

Trains the default encoder for ``--steps`` SimCLR updates with three view sources, for several seeds,
and prints kNN accuracy on the test split at 0/250/500/1000 updates beside an untrained encoder's
and raw pixels':

  (a)  simclr_aug     plain SimCLR augmentations of the original images, no CAM-Net
  (b1) camnet_crop    CAM-Net keep-all views (two latent codes) + crop/flip only
  (b2) camnet_simclr  CAM-Net keep-all views + the full SimCLR augmentation set

Nothing downstream can be read unless (a) clears the untrained encoder by 15 points. (b) is the
project's premise in one number: do CAM-Net's views add to hand-made augmentations?

    python studies/floor.py                    # 3 seeds x 1000 updates (about an hour on 2 cores)
    python studies/floor.py --steps 200 --seeds 1 --rows simclr_aug   # a quick look
    python studies/floor.py --report results/floor_a.json results/floor_b.json   # one table from parts
    python studies/floor.py --precision fp32 --out results/floor_fp32.json      # rows named "simclr_aug [fp32]"
    python studies/floor.py --precision fp32 --camnet-quantize   # CAM-Net rows named "camnet_simclr [fp32, int8 CAM-Net]"

The last line reads ``floor: simclr_aug=<kNN> untrained=<kNN> margin=<difference>``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from corruption_env.camnet import quantize_camnet
from corruption_env.data import load_dataset
from corruption_env.evaluation import pixel_accuracies, train_encoder
from corruption_env.files import atomic_write_json
from corruption_env.precision import PRECISIONS, resolve_precision
from corruption_env.simclr import SimCLRLearner
from corruption_env.views import ViewMaker, build_decorruptor

ROWS = {  # name: (decorruptor or None, augmentation)
    "simclr_aug": (None, "simclr"),
    "camnet_crop": ("camnet", "crop_flip"),
    "camnet_simclr": ("camnet", "simclr"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--task", default="sr_colorize")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--encoder", default="small_cnn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="bf16 autocast, fp32, or auto (bf16 where native); rows are named with it")
    parser.add_argument("--camnet-quantize", action="store_true",
                        help="run CAM-Net in int8 (EnvConfig.camnet_quantize, calibrated on the training split); "
                             "its rows are named with it")
    parser.add_argument("--out", type=Path, default=Path("results/floor.json"))
    parser.add_argument("--report", type=Path, nargs="+", metavar="JSON",
                        help="print one table from saved results (e.g. rows run in parallel) and exit")
    args = parser.parse_args(argv)
    if args.report:
        print(format_table(merge([json.loads(p.read_text()) for p in args.report])))
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; available: {', '.join(ROWS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    train = load_dataset(args.dataset, split="train", channels=3)
    test = load_dataset(args.dataset, split="test", channels=3)
    size = train.images.shape[-1]
    precision = resolve_precision(args.precision)
    eval_at = tuple(sorted({0, args.steps // 4, args.steps // 2, args.steps}))
    results: dict = {"config": vars(args) | {"out": str(args.out)}, "eval_at": eval_at,
                     "pixels": pixel_accuracies(train, test), "rows": {}}
    decorruptor = None
    for row in rows:
        kind, augmentation = ROWS[row]
        if kind is not None and decorruptor is None:
            decorruptor = build_decorruptor(kind, args.task, args.scale, size, dataset=args.dataset)
            if args.camnet_quantize:
                decorruptor = quantize_camnet(decorruptor, train.images)
        views = ViewMaker(decorruptor if kind else None, args.task, args.scale, augmentation, size, precision)
        label = f"{precision}, int8 CAM-Net" if kind and args.camnet_quantize else precision
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            learner = SimCLRLearner(args.encoder, seed=seed, precision=precision)
            start = time.time()
            run = train_encoder(views, learner, train, test, args.steps, args.batch_size, eval_at=eval_at,
                                seed=1000 + seed, progress=f"{row} seed {seed}")
            results["rows"].setdefault(f"{row} [{label}]", []).append(
                {"seed": seed, "accuracy": {str(k): v for k, v in run.accuracy.items()},
                 "final_loss": float(np.mean(run.losses[-20:])), "seconds": round(time.time() - start, 1)})
            print(f"{row} seed {seed}: " + " ".join(f"{k}:{v['knn']:.3f}" for k, v in run.accuracy.items())
                  + f" ({time.time() - start:.0f} s)", file=sys.stderr)
    atomic_write_json(args.out, results)
    print(format_table(results))
    return 0


def merge(results: list[dict]) -> dict:
    """One result from several runs of this script (same steps; rows and pixels from the first that has them)."""
    merged = dict(results[0], rows={})
    for result in results:
        if result["eval_at"] != merged["eval_at"]:
            raise SystemExit(f"cannot merge results evaluated at {result['eval_at']} and {merged['eval_at']}")
        merged["rows"].update(result["rows"])
    return merged


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def format_table(results: dict) -> str:
    """Markdown table: kNN per row at each update count (mean ± std over seeds), linear probe at the end."""
    eval_at = [str(k) for k in results["eval_at"]]
    last = eval_at[-1]
    head = "| views | " + " | ".join(f"kNN @{k}" for k in eval_at) + f" | linear @{last} | s/run |"
    lines = [head, "|" + "---|" * (len(eval_at) + 3)]
    first = next(iter(results["rows"].values()))  # a seed's untrained encoder is the same in every row
    untrained = [r["accuracy"]["0"]["knn"] for r in first]
    pixels = results["pixels"]
    lines.append(f"| untrained encoder | {_mean_std(untrained)} |" + " |" * (len(eval_at) - 1)
                 + f" {_mean_std([r['accuracy']['0']['linear'] for r in first])} | |")
    lines.append(f"| raw pixels | {pixels['knn']:.3f} |" + " |" * (len(eval_at) - 1) + f" {pixels['linear']:.3f} | |")
    for row, runs in results["rows"].items():
        cells = [_mean_std([r["accuracy"][k]["knn"] for r in runs]) for k in eval_at]
        lin = _mean_std([r["accuracy"][last]["linear"] for r in runs])
        lines.append(f"| {row} ({len(runs)} seeds) | " + " | ".join(cells) + f" | {lin} | "
                     f"{np.mean([r['seconds'] for r in runs]):.0f} |")
    aug_rows = [runs for row, runs in results["rows"].items() if row.split(" [")[0] == "simclr_aug"]
    if aug_rows:
        aug = float(np.mean([r["accuracy"][last]["knn"] for r in aug_rows[0]]))
        base = float(np.mean(untrained))
        lines.append("")
        lines.append(f"floor: simclr_aug={aug:.3f} untrained={base:.3f} margin={aug - base:+.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
