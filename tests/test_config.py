"""EnvConfig: presets, validation with the valid keys named, JSON round trip."""
from __future__ import annotations

import pytest

from corruption_env.config import EnvConfig


def test_json_round_trip(tmp_path):
    cfg = EnvConfig(batch_size=16, reward_kwargs={"beta": 0.5}, dataset_kwargs={"classes": 3}, seed=7)
    path = tmp_path / "env.json"
    cfg.to_json(path)
    assert EnvConfig.from_json(path) == cfg
    assert EnvConfig.from_json(cfg.to_json()) == cfg


def test_presets_and_unknown_keys():
    assert EnvConfig.preset("cpu") == EnvConfig()
    gpu = EnvConfig.preset("gpu", batch_size=128)
    assert gpu.device == "cuda" and gpu.encoder == "resnet18" and gpu.batch_size == 128
    with pytest.raises(ValueError, match="valid keys: .*batch_size"):
        EnvConfig().replace(batchsize=3)
    with pytest.raises(ValueError, match="available: cpu, gpu, fashion_mnist"):
        EnvConfig.preset("tpu")
    fashion = EnvConfig.preset("fashion_mnist")
    assert (fashion.dataset, fashion.task, fashion.view_augmentation) == ("fashion_mnist", "sr", "gray")


def test_missing_camnet_weights_name_the_task_that_has_them():
    with pytest.raises(ValueError, match="no CAM-Net weights ship for dataset 'fashion_mnist', task 'sr_colorize'.*"
                                         "task:sr, or --preset fashion_mnist"):
        EnvConfig(dataset="fashion_mnist").validate()
    with pytest.raises(ValueError, match="pretrain them with .*--dataset idx"):
        EnvConfig(dataset="idx", data_root="/nowhere").validate()
    EnvConfig(dataset="idx", data_root="/nowhere", decorruptor="bicubic").validate()  # no weights needed


@pytest.mark.parametrize("kwargs,match", [({"batch_size": 1}, "batch_size"), ({"mask_grid": 5}, "mask_grid"),
                                          ({"lr": 0.0}, "lr"), ({"scale": 0}, "positive")])
def test_invalid_values_are_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EnvConfig(**kwargs)


def test_camnet_quantize_is_on_where_it_runs_and_cpu_only_when_asked():
    assert EnvConfig().int8_camnet and not EnvConfig(camnet_quantize=False).int8_camnet  # default: on, on the CPU
    assert not EnvConfig.preset("gpu").int8_camnet and not EnvConfig(device="cuda").int8_camnet
    with pytest.raises(ValueError, match="camnet_quantize=False"):
        EnvConfig(device="cuda", camnet_quantize=True)
    with pytest.raises(ValueError, match="CPU only"):
        EnvConfig(camnet_quantize=True).replace(device="cuda:1")
