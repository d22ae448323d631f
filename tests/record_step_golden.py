"""Record a seeded rollout of every registered reward and every action mode (cheap config) to
tests/data/step_golden.json, so refactors of ``CorruptionEnv.step`` can be checked to change no number.
Run it only to re-record on purpose: ``python tests/record_step_golden.py``."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


from corruption_env import CorruptionEnv
from corruption_env.rewards import available_rewards

GOLDEN = Path(__file__).with_name("data") / "step_golden.json"
STEPS = 4
BASE = dict(batch_size=8, episode_length=6, decorruptor="bicubic", heldout_size=64, precision="fp32",
            num_threads=1, dataset_kwargs={"shortcut": "fixed"})
PERIODIC_OPTIONS = {"heldout_gain": {"every": 2}, "probe_accuracy": {"every": 2}, "rankme_gain": {"every": 2}}


def cases() -> dict[str, dict]:
    """Every registered built-in reward under a keep budget (scores mode) and without one (cells mode), and
    every action mode with the default reward."""
    out = {}
    for name in available_rewards():
        for label, mode in (("budget", dict(action_mode="scores", keep_budget=0.75)), ("free", dict(action_mode="cells"))):
            out[f"{name}/{label}"] = dict(BASE, reward=name, reward_kwargs=PERIODIC_OPTIONS.get(name, {}),
                                          track_rewards=[], **mode)
    for mode in ("cells", "shared", "family", "scores", "shared_scores"):
        out[f"mode/{mode}"] = dict(BASE, action_mode=mode, track_rewards="free",
                                   keep_budget=None if mode == "family" else 0.5)
    return out


def rollout(config: dict) -> dict:
    env = CorruptionEnv(**config)
    obs, _ = env.reset(seed=3)
    env.action_space.seed(5)
    record = {"rewards": [], "losses": [], "terms": [], "learner": [obs["learner"].tolist()],
              "images": [hashlib.sha1(obs["images"].tobytes()).hexdigest()], "keep": []}
    for _ in range(STEPS):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        record["rewards"].append(float(reward))
        record["losses"].append(float(info["loss"]))
        record["terms"].append({k: float(v) for k, v in sorted(info["reward_terms"].items())})
        record["learner"].append(obs["learner"].tolist())
        record["images"].append(hashlib.sha1(obs["images"].tobytes()).hexdigest())
        record["keep"].append(float(info["keep_fraction"]))
    return record


if __name__ == "__main__":
    GOLDEN.parent.mkdir(exist_ok=True)
    golden = {name: rollout(config) for name, config in cases().items()}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(golden)} rollouts in {GOLDEN}")
