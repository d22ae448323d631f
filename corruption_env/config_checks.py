"""The checks ``EnvConfig.validate()`` runs: names against their registries, reward, dataset and planted-pattern
options, tracked rewards, the device.

They live here, above the registries they read (datasets, known-answer patterns, rewards, encoders, decorruptors
and augmentations), so that ``config.py`` sits below all of them: a registry module may import ``EnvConfig`` and
no import goes in a circle. Each check is registered into :data:`corruption_env.config.CHECKS` when this module
is imported, which the package's ``__init__`` does; ``validate()`` runs them in order.
"""
from __future__ import annotations

import inspect

from corruption_env.camnet.checkpoint import shipped_checkpoint
from corruption_env.config import CHECKS, ENV_PRESETS, EnvConfig, check_device
from corruption_env.data import DATASETS, available_datasets
from corruption_env.known_answer import PLANTED_OPTIONS, is_known_answer, planted_from_options
from corruption_env.rewards import REWARDS, available_rewards, make_reward
from corruption_env.simclr import SimCLRLearner, available_encoders
from corruption_env.views import available_augmentations, available_decorruptors


def check_names(config: EnvConfig) -> None:
    """Every named choice is registered."""
    choices = {"dataset": available_datasets(), "encoder": available_encoders(),
               "decorruptor": available_decorruptors(), "view_augmentation": available_augmentations(),
               "optimizer": list(SimCLRLearner.OPTIMIZERS), "reward": available_rewards()}
    for key, valid in choices.items():
        if getattr(config, key) not in valid:
            raise ValueError(f"unknown {key} {getattr(config, key)!r}; available: {', '.join(valid)}")


def check_rewards(config: EnvConfig) -> None:
    """The reward's options, the tracked rewards, and a known-answer task for rewards that read the answer."""
    make_reward(config.reward, **config.reward_kwargs)  # rejects bad reward options
    tracked = config.track_rewards
    answer_readers = [n for n in [config.reward, *([] if isinstance(tracked, str) else tracked)]
                      if n in available_rewards() and REWARDS[n].reads_answer]
    if answer_readers and not is_known_answer(config.dataset_kwargs):
        raise ValueError(f"reward(s) {', '.join(answer_readers)} read a known answer: they need a known-answer task "
                         "(dataset_kwargs {'shortcut': 'fixed'} or {'distractor': ...})")
    unknown = [n for n in ([tracked] if isinstance(tracked, str) else tracked) if n not in available_rewards()]
    if (isinstance(tracked, str) and tracked not in ("free", "all")) or (not isinstance(tracked, str) and unknown):
        raise ValueError(f"track_rewards must be 'free', 'all' or a list of reward names, got {tracked!r}; "
                         f"rewards: {', '.join(available_rewards())}")


def check_dataset_options(config: EnvConfig) -> None:
    """``dataset_kwargs`` names options the dataset's loader (or a planted pattern) has, with valid values."""
    options = inspect.signature(DATASETS[config.dataset]).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in options.values()):
        valid = [n for n in options if n not in ("root", "image_size", "split")] + list(PLANTED_OPTIONS)
        bad = sorted(set(config.dataset_kwargs) - set(valid))
        if bad:
            raise ValueError(f"dataset {config.dataset!r} has no option(s) {', '.join(bad)} in dataset_kwargs; "
                             f"its options: {', '.join(valid) or 'none'}")
    if set(config.dataset_kwargs) & set(PLANTED_OPTIONS):
        planted_from_options(config.dataset_options(), config.image_size)  # rejects bad shortcut/distractor options


def check_camnet_weights(config: EnvConfig) -> None:
    """CAM-Net without a checkpoint of the user's runs the weights shipped for (dataset, task, scale): they exist."""
    if config.decorruptor != "camnet" or config.camnet_checkpoint is not None:
        return
    path = shipped_checkpoint(config.dataset, config.task, config.scale)
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.pt"))
        tasks = [n.removeprefix(f"{config.dataset}_").rsplit("_x", 1)[0] for n in shipped if n.startswith(f"{config.dataset}_")]
        preset = f", or --preset {config.dataset}" if config.dataset in ENV_PRESETS else ""
        hint = (f"they ship for task {' and '.join(tasks)} (--env-kwargs task:{tasks[0]}{preset})" if tasks else
                f"pretrain them with `python -m corruption_env.camnet.pretrain --dataset {config.dataset} --task "
                f"{config.task} --scale {config.scale} --out PATH.pt` and pass --env-kwargs camnet_checkpoint:PATH.pt")
        raise ValueError(f"no CAM-Net weights ship for dataset {config.dataset!r}, task {config.task!r}, scale "
                         f"{config.scale} (shipped: {', '.join(shipped)}); {hint}, or use decorruptor 'bicubic'")


def check_this_device(config: EnvConfig) -> None:
    check_device(config.device, "(the 'gpu' preset sets device 'cuda')")


if not CHECKS:  # once, however often this module is reloaded
    CHECKS.extend([check_names, check_rewards, check_dataset_options, check_camnet_weights, check_this_device])
