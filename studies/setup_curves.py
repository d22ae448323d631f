"""Learning curves that choose a dataset's setup: which SimCLR settings make the encoder learn within a CPU budget.

For every named setting (augmentation strength, temperature, batch, learning rate, optimizer) and view source
(``plain``: the setting's augmentations of the original images, the ``simclr_aug`` row; ``camnet``: CAM-Net's
keep-all views under the same augmentations, the ``keep_all`` row; ``supervised``: the same encoder trained with
the labels by cross-entropy on the same augmentations, what the kNN protocol can show of this encoder at this
budget), trains the CPU encoder from scratch for
``--steps`` SimCLR updates and measures kNN and linear-probe accuracy on the test split at ``--eval-at`` updates,
beside an untrained encoder and raw pixels. This is how ``EnvConfig.preset("fashion_mnist")`` and its evaluation
length were chosen (``docs/results/fashion_mnist/setup.md``):

    python studies/setup_curves.py --dataset fashion_mnist --task sr --views plain --steps 1000 --seeds 2 \
        --out docs/results/fashion_mnist/setup_grid.json              # the settings, at 1000 updates
    python studies/setup_curves.py --dataset fashion_mnist --task sr --settings simclr,gray --views plain,camnet \
        --steps 4000 --seeds 2 --out docs/results/fashion_mnist/setup_curves.json   # the chosen one, longer

It writes the JSON (``--out``), a Markdown table next to it (``.md``) and the curves (``.png``); ``--report`` redraws
them from saved JSON files. Every number is one seed's encoder; the table gives mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from corruption_env.camnet import quantize_camnet
from corruption_env.data import load_dataset
from corruption_env.evaluation import EncoderRun, encoder_accuracies, pixel_accuracies, train_encoder
from corruption_env.files import atomic_write_json, atomic_write_text
from corruption_env.images import to_unit
from corruption_env.precision import autocast, cpu_name
from corruption_env.simclr import _MEAN, _STD, SimCLRLearner
from corruption_env.views import ViewMaker, build_decorruptor, simclr_augmentation


@dataclass(frozen=True)
class Setting:
    """One point of the grid: SimCLR's augmentations (crop scale ``crop_min``-1, jitter strength ``jitter``, 0 for
    none) and the learner's options."""

    crop_min: float = 0.5
    jitter: float = 0.4
    temperature: float = 0.5
    lr: float = 1e-3
    batch: int = 64
    optimizer: str = "adam"

    def augmentation(self, image_size: int) -> nn.Module:
        if self.jitter == 0:
            return simclr_augmentation(image_size, self.crop_min)[:2]  # crop and flip only
        return simclr_augmentation(image_size, self.crop_min, self.jitter)


SETTINGS = {
    "simclr": Setting(),  # SimCLR's set at its CIFAR strength: the env's default view_augmentation
    "no_jitter": Setting(jitter=0.0),
    "temperature_0.2": Setting(temperature=0.2),
    "temperature_0.1": Setting(temperature=0.1),
    "crop_0.2": Setting(crop_min=0.2),
    "crop_0.8": Setting(crop_min=0.8),
    "jitter_0.8": Setting(jitter=0.8),
    "gray": Setting(crop_min=0.8, jitter=0.8),  # the fashion_mnist preset's view_augmentation
    "gray_jitter_1.0": Setting(crop_min=0.8, jitter=1.0),
    "gray_temperature_0.2": Setting(crop_min=0.8, jitter=0.8, temperature=0.2),
    "lr_3e-3": Setting(lr=3e-3),
    "batch_256": Setting(batch=256),
    "sgd_0.05": Setting(optimizer="sgd", lr=0.05),
}
VIEWS = ("plain", "camnet", "supervised")


def run_grid(args: argparse.Namespace, settings: list[str], views: list[str], eval_at: tuple[int, ...]) -> dict:
    train = load_dataset(args.dataset, root=args.data_root, split="train", channels=3)
    test = load_dataset(args.dataset, root=args.data_root, split="test", channels=3)
    size = train.images.shape[-1]
    results: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "cpu": cpu_name(), "eval_at": list(eval_at), "pixels": pixel_accuracies(train, test),
                     "untrained": {}, "rows": {}}
    camnet = None
    if "camnet" in views:  # int8, as the env runs it on the CPU, calibrated on the training split
        camnet = quantize_camnet(build_decorruptor("camnet", args.task, args.scale, size, args.dataset),
                                 torch.from_numpy(np.array(train.images)), 4)
    for seed in range(args.seeds):
        results["untrained"][str(seed)] = encoder_accuracies(SimCLRLearner(seed=seed, precision=args.precision),
                                                             train, test)
    for name in settings:
        setting = SETTINGS[name]
        for view in views:
            maker = ViewMaker(camnet if view == "camnet" else None, args.task, args.scale, "none", size, args.precision)
            maker.augment = setting.augmentation(size)
            train_run = supervised_encoder if view == "supervised" else train_encoder
            row = results["rows"].setdefault(f"{name} / {view}", {"setting": asdict(setting), "view": view, "runs": []})
            for seed in range(args.seeds):
                learner = SimCLRLearner(seed=seed, temperature=setting.temperature, lr=setting.lr,
                                        optimizer=setting.optimizer, precision=args.precision)
                start = time.process_time()
                run = train_run(maker, learner, train, test, args.steps, setting.batch, eval_at=eval_at,
                                seed=1000 + seed, progress=f"{name} / {view} seed {seed}")
                row["runs"].append({"seed": seed, "accuracy": {str(k): v for k, v in run.accuracy.items()},
                                    "cpu_seconds": round(time.process_time() - start, 1)})
                print(f"{name} / {view} seed {seed}: " + " ".join(f"{k}:{v['knn']:.3f}" for k, v in run.accuracy.items()),
                      file=sys.stderr, flush=True)
                atomic_write_json(args.out, results)  # every finished run is kept
    return results


def supervised_encoder(views: ViewMaker, learner: SimCLRLearner, train, test, steps: int, batch_size: int,
                       eval_at: tuple[int, ...], seed: int, progress: str | None = None) -> EncoderRun:
    """The learner's encoder trained with the labels instead (a linear classifier on its features, cross-entropy,
    the learner's optimizer settings, the same augmentations and batches as :func:`train_encoder`), measured the
    same way: what the evaluation can show of this encoder at this budget."""
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    classifier = nn.Linear(learner.feature_dim, train.num_classes).to(learner.device)
    optimizer = torch.optim.Adam(list(learner.encoder.parameters()) + list(classifier.parameters()), lr=learner.lr)
    labels = torch.from_numpy(np.asarray(train.labels))
    run = EncoderRun()
    for step in range(steps + 1):
        if step in eval_at or step == steps:
            run.accuracy[step] = encoder_accuracies(learner, train, test)
        if step == steps:
            break
        index = rng.integers(0, len(train), batch_size)
        images = views.augment_pair(*[to_unit(train.images[index])] * 2, gen)[0]
        learner.encoder.train()
        with autocast(learner.precision, learner.device):
            logits = classifier(learner.encoder((images - _MEAN) / _STD)).float()
        loss = nn.functional.cross_entropy(logits, labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.losses.append(float(loss))
    return run


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def format_table(results: dict) -> str:
    """Markdown: kNN at each evaluated update count and the final linear probe, per row (mean ± std over seeds),
    with keep_all − untrained and − raw pixels for the camnet rows."""
    eval_at = [str(k) for k in results["eval_at"]]
    last = eval_at[-1]
    untrained = list(results["untrained"].values())
    pixels = results["pixels"]
    lines = [f"CPU: {results['cpu']}; {len(untrained)} seed(s); kNN (k = 200) and linear probe on the test split.", "",
             "| setting / views | " + " | ".join(f"kNN @{k}" for k in eval_at) + f" | linear @{last} | "
             "kNN − untrained | CPU s / run (evaluations included) |", "|" + "---|" * (len(eval_at) + 4),
             f"| untrained encoder | {_mean_std([u['knn'] for u in untrained])} |" + " |" * (len(eval_at) - 1)
             + f" {_mean_std([u['linear'] for u in untrained])} | | |",
             f"| raw pixels | {pixels['knn']:.3f} |" + " |" * (len(eval_at) - 1) + f" {pixels['linear']:.3f} | | |"]
    for name, row in results["rows"].items():
        runs = row["runs"]
        knn = [_mean_std([r["accuracy"][k]["knn"] for r in runs if k in r["accuracy"]]) for k in eval_at]
        margin = [r["accuracy"][last]["knn"] - results["untrained"][str(r["seed"])]["knn"] for r in runs]
        lines.append(f"| {name} ({len(runs)} seeds) | " + " | ".join(knn) + f" | "
                     f"{_mean_std([r['accuracy'][last]['linear'] for r in runs])} | {np.mean(margin):+.3f} | "
                     f"{np.mean([r['cpu_seconds'] for r in runs]):.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [int(k) for k in results["eval_at"]]
    for name, row in results["rows"].items():
        means = [np.mean([r["accuracy"][str(k)]["knn"] for r in row["runs"]]) for k in steps]
        ax.plot(steps, means, marker="o", label=name,
                linestyle={"camnet": "-", "plain": "--"}.get(row["view"], ":"))
    ax.axhline(np.mean([u["knn"] for u in results["untrained"].values()]), color="gray", linestyle=":",
               label="untrained encoder")
    ax.axhline(results["pixels"]["knn"], color="black", linestyle=":", label="raw pixels")
    ax.set_xscale("log")
    ax.set_xlabel("SimCLR updates")
    ax.set_ylabel("kNN accuracy (test split)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--task", default="sr", help="CAM-Net's task (its shipped weights for the dataset)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--views", default="plain",
                        help="comma-separated, of plain (no CAM-Net), camnet (keep-all), supervised (labels)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-at", default=None, help="comma-separated update counts (default: steps/4, /2, steps)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/setup_curves.json"))
    parser.add_argument("--report", type=Path, help="redraw the table and plot of a saved JSON and exit")
    args = parser.parse_args(argv)
    if args.report:
        results = json.loads(args.report.read_text())
        args.out = args.report
    else:
        settings, views = args.settings.split(","), args.views.split(",")
        unknown = [s for s in settings if s not in SETTINGS] + [v for v in views if v not in VIEWS]
        if unknown:
            parser.error(f"unknown settings or views {unknown}; settings: {', '.join(SETTINGS)}; views: {', '.join(VIEWS)}")
        eval_at = (tuple(int(k) for k in args.eval_at.split(",")) if args.eval_at else
                   (args.steps // 4, args.steps // 2, args.steps))
        if args.steps < 1 or min(eval_at) < 1 or max(eval_at) > args.steps:
            parser.error("--steps must be >= 1 and every --eval-at in 1..steps")
        results = run_grid(args, settings, views, tuple(sorted(set(eval_at))))
    table = format_table(results)
    atomic_write_text(args.out.with_suffix(".md"), table)
    plot(results, args.out.with_suffix(".png"))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
