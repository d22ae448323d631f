"""The shipped CAM-Nets in fp32 and int8 side by side: model-card numbers and forward time.

``EnvConfig.camnet_quantize`` must not change what CAM-Net does: this calibrates the int8 copy of each
shipped checkpoint as the environment does (``quantize_camnet`` on the training split), evaluates both
on the same held-out images, masks and latent codes (``evaluate_camnet``, the model card's own
measurement), prints one table per checkpoint with the difference and whether every number is within
``TOLERANCE`` of fp32 (bicubic MSE does not depend on the model: it checks that the inputs are the same),
and times the 2B forward of the environment's default batch in both, interleaved in rounds.

    python studies/camnet_quantize.py --threads 1      # both shipped checkpoints, about 5 minutes on one core
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from corruption_env.camnet import load_camnet, quantize_camnet, shipped_checkpoint
from corruption_env.camnet.pretrain import evaluate_camnet
from corruption_env.corruption import apply_mask, degrade, random_training_masks
from corruption_env.data import load_dataset
from corruption_env.files import atomic_write_json
from corruption_env.images import to_unit

METRICS = ("nearest_of_s_mse", "bicubic_mse", "mean_z_mse", "diversity_kept", "diversity_dropped",
           "colour_diversity_kept", "colour_diversity_dropped")
TOLERANCE = 0.05  # relative: |int8 - fp32| <= 5 % of the fp32 number, for every model-card number


def forward_ms(models: dict[str, torch.nn.Module], inputs: tuple[torch.Tensor, ...], rounds: int, repeats: int = 3
               ) -> dict[str, float]:
    """Median milliseconds of one forward per model, the models interleaved within each round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():
            model(*inputs)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                for _ in range(repeats):
                    model(*inputs)
                times[name].append((time.perf_counter() - start) / repeats)
    return {name: round(float(np.median(t)) * 1e3, 1) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="held-out images (the cards use 512)")
    parser.add_argument("--samples", type=int, default=20, help="latent codes per image (the cards use 20)")
    parser.add_argument("--batch", type=int, default=64, help="B of the timed 2B forward (the env's default 64)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("results/camnet_quantize.json"), help="JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} thread(s), "
          f"quantized engine {torch.backends.quantized.engine}")
    report: dict = {"threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                    "tolerance": TOLERANCE}
    verdicts = []
    for task in ("sr_colorize", "sr"):  # the shipped checkpoints: shapes, scale 2
        path = shipped_checkpoint("shapes", task, 2)
        fp32 = load_camnet(path)
        train = load_dataset("shapes", image_size=fp32.cfg.image_size, split="train", channels=3)
        start = time.perf_counter()
        int8 = quantize_camnet(fp32, train.images)
        calibration_s = time.perf_counter() - start
        test = load_dataset("shapes", image_size=fp32.cfg.image_size, split="test", channels=3)
        cards = {name: evaluate_camnet(model, test, n_images=args.images, samples=args.samples, precision="fp32")
                 for name, model in (("fp32", fp32), ("int8", int8))}

        generator = torch.Generator().manual_seed(0)
        target = to_unit(test.images[:args.batch])
        x_c, pixel_mask = apply_mask(degrade(target, fp32.cfg.scale, fp32.cfg.task),
                                     random_training_masks(args.batch, 4, generator))
        code = fp32.sample_code(2 * args.batch, generator)
        inputs = (torch.cat([x_c, x_c]), torch.cat([pixel_mask, pixel_mask]), code)
        env_fp32 = load_camnet(path).to(memory_format=torch.channels_last)  # as the environment runs it
        ms = forward_ms({"fp32": env_fp32, "int8": int8}, inputs, args.rounds)
        report[path.stem] = {"cards": cards, "forward_ms": ms, "calibration_s": round(calibration_s, 2)}

        print(f"\n{path.stem}: int8 calibration {calibration_s:.1f} s; 2B={2 * args.batch} forward "
              f"fp32 {ms['fp32']} ms, int8 {ms['int8']} ms, int8/fp32 {ms['int8'] / ms['fp32']:.2f}")
        print("| input | metric | fp32 | int8 | int8 - fp32 | relative | within |\n|---|---|---|---|---|---|---|")
        failed = []
        for inputs_kind in ("masked", "keep_all"):
            for metric in METRICS:
                a, b = cards["fp32"][inputs_kind].get(metric), cards["int8"][inputs_kind].get(metric)
                if a is None:
                    continue
                ok = abs(b - a) <= TOLERANCE * abs(a)
                failed += [] if ok else [f"{inputs_kind} {metric}"]
                print(f"| {inputs_kind} | {metric} | {a:.4f} | {b:.4f} | {b - a:+.4f} | {(b - a) / a:+.1%} | "
                      f"{'yes' if ok else 'NO'} |")
        report[path.stem]["outside_tolerance"] = failed
        verdicts.append(f"{path.stem}: " + (f"every number within {TOLERANCE:.0%} of fp32" if not failed else
                                            f"outside {TOLERANCE:.0%}: {', '.join(failed)}"))
    atomic_write_json(args.out, report)
    print(f"\nverdict (tolerance: |int8 - fp32| <= {TOLERANCE:.0%} of fp32)\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    raise SystemExit(main())
