"""What a PPO minibatch costs the mask network: forward + backward on a minibatch of observations at the default env
size (B = 64 images of 16 x 16, g = 4) for the image scorer as built (its convolutions in channels_last), the same
network with its convolutions in NCHW (the layout before 2026-12-07), and the position-free cell scorer, measured
side by side in one process (interleaved repeats, medians), printed as ratios.

    python studies/policy_speed.py [--minibatch 64] [--repeats 7] [--threads 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from agents.policies import MaskNetwork, MaskObservationExtractor
from corruption_env import CorruptionEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minibatch", type=int, default=64, help="observations per forward (PPO's batch_size)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = CorruptionEnv(decorruptor="bicubic", action_mode="scores", keep_budget=0.75)
    obs, _ = env.reset(seed=0)
    extractor = MaskObservationExtractor(env.observation_space)
    batch = {k: torch.as_tensor(v)[None].expand(args.minibatch, *v.shape) for k, v in obs.items()}
    features = extractor(batch)
    nets = {s: MaskNetwork(env.observation_space, env.action_space, scorer=s) for s in ("image", "cell")}
    nets["image, NCHW"] = nchw = MaskNetwork(env.observation_space, env.action_space, scorer="image")
    nchw.cnn.to(memory_format=torch.contiguous_format)

    def cells_nchw(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # MaskNetwork._cells, in NCHW
        images, learner = nchw._split(features)
        cells = torch.nn.functional.adaptive_avg_pool2d(nchw.cnn(images.contiguous()), nchw.grid)
        return cells.unflatten(0, (features.shape[0], nchw.batch)), learner

    nchw._cells = cells_nchw  # type: ignore[method-assign]
    times: dict[str, list[float]] = {s: [] for s in nets}
    for _ in range(args.repeats):
        for scorer, net in nets.items():
            start = time.perf_counter()
            pi, vf = net(features)
            (pi.sum() + vf.sum()).backward()
            times[scorer].append(time.perf_counter() - start)
    median = {s: statistics.median(t) for s, t in times.items()}
    for scorer, seconds in median.items():
        print(f"{scorer:>11} scorer: {seconds * 1000:8.1f} ms per minibatch of {args.minibatch} observations")
    print(f"cell / image = {median['cell'] / median['image']:.2f}; image as built / image in NCHW = "
          f"{median['image'] / median['image, NCHW']:.2f}")


if __name__ == "__main__":
    main()
