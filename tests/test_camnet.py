"""CAM-Net: architecture per task, determinism given (input, mask, z), multimodality, checkpoints with
clear errors, the pretraining CLI (train, resume, card), the shipped weights' model cards, and the int8
CAM-Net (close to fp32, still multimodal, calibrated deterministically, used by the env when asked)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from corruption_env.camnet import (CAMNet, CAMNetConfig, Int8CAMNet, load_camnet, quantize_camnet, save_camnet,
                                   shipped_checkpoint)
from corruption_env.camnet import quantize as quantize_module
from corruption_env.camnet.model import fold_weight_norm
from corruption_env.camnet.pretrain import main as pretrain_main
from corruption_env.corruption import apply_mask, bernoulli_mask, degrade, random_training_masks

TINY = dict(nf=8, gc=4, z_dim=4, w_dim=8, map_layers=1)


@pytest.mark.parametrize("task,scale,levels", [("sr_colorize", 2, 2), ("sr", 2, 1), ("sr", 4, 2), ("colorize", 1, 2)])
def test_levels_and_output_shape(task, scale, levels):
    model = CAMNet(CAMNetConfig(task=task, scale=scale, **TINY)).eval()
    assert len(model.levels) == levels
    x = degrade(torch.rand(3, 3, 32, 32), scale, task)
    x_c, pm = apply_mask(x, torch.ones(3, 4, 4))
    out = model(x_c, pm, model.sample_code(3))
    assert out.shape == (3, 3, 32, 32) and 0 <= out.min() and out.max() <= 1


def test_deterministic_given_code_and_codes_matter():
    model = CAMNet(CAMNetConfig(**TINY)).eval()
    x_c, pm = apply_mask(torch.rand(4, 1, 16, 16), torch.ones(4, 4, 4))
    z1, z2 = model.sample_code(4), model.sample_code(4)
    with torch.no_grad():
        assert torch.equal(model(x_c, pm, z1), model(x_c, pm, z1))
        assert (model(x_c, pm, z1) - model(x_c, pm, z2)).abs().mean() > 1e-4


def test_folding_weight_norm_keeps_outputs():
    model = CAMNet(CAMNetConfig(**TINY)).eval()
    x_c, pm = apply_mask(torch.rand(2, 1, 16, 16), torch.ones(2, 4, 4))
    z = model.sample_code(2)
    with torch.no_grad():
        before = model(x_c, pm, z)
        after = fold_weight_norm(model)(x_c, pm, z)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-4)


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = CAMNet(CAMNetConfig(**TINY)).eval()
    path = tmp_path / "net.pt"
    save_camnet(model, path)
    loaded = load_camnet(path)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x_c, pm = apply_mask(torch.rand(2, 1, 16, 16), torch.ones(2, 4, 4))
    z = model.sample_code(2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x_c, pm, z), model(x_c, pm, z), atol=1e-5, rtol=1e-4)
    with pytest.raises(FileNotFoundError, match="camnet.pretrain"):
        load_camnet(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_camnet(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="task='sr_colorize' \\(wanted 'sr'\\)"):
        load_camnet(path, expect_task="sr")
    with pytest.raises(ValueError, match="code must be shaped"):
        loaded(x_c, pm, torch.zeros(2, 3))


def test_pretrain_cli_trains_resumes_and_writes_card(tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    args = ["--out", str(out), "--pool-size", "16", "--batch-size", "8", "--epochs-per-pool", "1", "--samples", "3",
            "--eval-images", "16", "--nf", "8", "--gc", "4", "--z-dim", "4", "--w-dim", "8"]
    assert pretrain_main(args + ["--steps", "2"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 2 and card["task"] == "sr_colorize"
    assert {"nearest_of_s_mse", "bicubic_mse", "diversity_kept"} <= set(card["heldout"]["keep_all"])
    assert "diversity_dropped" in card["heldout"]["masked"] and out.with_suffix(".png").is_file()
    assert pretrain_main(args + ["--steps", "4"]) == 0  # resumes from tiny.ckpt at step 2
    assert "resuming from" in capsys.readouterr().out
    assert json.loads(out.with_suffix(".json").read_text())["training"]["steps"] == 4
    load_camnet(out)
    for changed in (["--batch-size", "4"], ["--pool-size", "32"], ["--epochs-per-pool", "2"]):  # would not reproduce
        assert pretrain_main(args + ["--steps", "6", *changed]) == 2
        assert f"{changed[0][2:].replace('-', '_')} " in capsys.readouterr().err
    assert json.loads(out.with_suffix(".json").read_text())["training"]["steps"] == 4


def test_distillation_pulls_the_student_onto_the_teachers_views(tmp_path):
    """A narrower student distilled from a teacher reproduces the teacher's output code by code: its held-out
    distance to the teacher falls well below an untrained student's (a copy that ignored the teacher would not)."""
    torch.manual_seed(3)
    teacher = CAMNet(CAMNetConfig(nf=8, gc=4, z_dim=4, w_dim=8))
    save_camnet(teacher, tmp_path / "teacher.pt")
    out = tmp_path / "student.pt"
    args = ["--out", str(out), "--distill-from", str(tmp_path / "teacher.pt"), "--pool-size", "32",
            "--batch-size", "16", "--epochs-per-pool", "1", "--eval-images", "16", "--samples", "2", "--nf", "4",
            "--gc", "4", "--z-dim", "4", "--w-dim", "8", "--lr", "3e-3", "--precision", "fp32"]

    def teacher_mse(steps: int) -> float:
        assert pretrain_main(args + ["--steps", str(steps)]) == 0
        card = json.loads(out.with_suffix(".json").read_text())
        assert card["pretrain_config"]["distill_from"] == str(tmp_path / "teacher.pt")
        return card["heldout"]["masked"]["teacher_mse"]

    untrained = teacher_mse(1)
    assert teacher_mse(150) < 0.3 * untrained  # resumed from step 1


def test_pretrain_help_runs():
    result = subprocess.run([sys.executable, "-m", "corruption_env.camnet.pretrain", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "conditional IMLE" in result.stdout


@pytest.mark.parametrize("task", ["sr_colorize", "sr"])
def test_shipped_weights_load_and_card_meets_the_bar(task):
    path = shipped_checkpoint("shapes", task, 2)
    model = load_camnet(path, expect_task=task, expect_scale=2, expect_image_size=32)
    card = json.loads(path.with_suffix(".json").read_text())
    masked = card["heldout"]["masked"]
    assert masked["nearest_of_s_mse"] < masked["bicubic_mse"]
    assert masked["diversity_kept"] > 0 and card["heldout"]["keep_all"]["diversity_kept"] > 0
    assert card["camnet_config"] == model.cfg.to_dict()


def test_shipped_sr_colorize_differs_across_z_in_kept_cells(tiny_shapes):
    """Multimodality where nothing was dropped: colorization gives each z its own colours."""
    model = load_camnet(shipped_checkpoint("shapes", "sr_colorize", 2))
    images = torch.tensor(tiny_shapes[1].images[:32]).float() / 255
    mask = bernoulli_mask(32, 4, 0.5, torch.Generator().manual_seed(0))
    x_c, pm = apply_mask(degrade(images, 2, "sr_colorize"), mask)
    with torch.no_grad():
        v1, v2 = model(x_c, pm, model.sample_code(32)), model(x_c, pm, model.sample_code(32))
    kept = torch.nn.functional.interpolate(pm, size=32, mode="nearest")
    diff_kept = float(((v1 - v2).abs().mean(1, keepdim=True) * kept).sum() / kept.sum())
    assert diff_kept > 0.01


def _int8_inputs(model: CAMNet, images, n: int = 64):
    """(x_c, pixel mask, code) of ``n`` held-out images under CAM-Net's training masks, seeded."""
    generator = torch.Generator().manual_seed(0)
    x_c, pm = apply_mask(degrade(torch.tensor(images[:n]).float() / 255, 2, model.cfg.task),
                         random_training_masks(n, 4, generator))
    return x_c, pm, model.sample_code(n, generator)


@pytest.mark.parametrize("task", ["sr_colorize", "sr"])
def test_int8_camnet_stays_close_to_fp32_and_codes_still_matter(task, tiny_shapes):
    fp32 = load_camnet(shipped_checkpoint("shapes", task, 2))
    int8 = quantize_camnet(fp32, tiny_shapes[0].images)
    x_c, pm, code = _int8_inputs(fp32, tiny_shapes[1].images)
    other = fp32.sample_code(x_c.shape[0], torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out, out_other = fp32(x_c, pm, code), int8(x_c, pm, code), int8(x_c, pm, other)
        ref_other = fp32(x_c, pm, other)
    # studies/camnet_quantize.py: int8 - fp32 MSE 1e-4 to 9e-4 over calibration draws; nearest-of-20 MSE 0.0275 / 0.0123
    assert 0 < float((out - ref).pow(2).mean()) < 2e-3
    diversity, diversity_fp32 = float((out - out_other).abs().mean()), float((ref - ref_other).abs().mean())
    assert abs(diversity - diversity_fp32) < 0.1 * diversity_fp32


def test_int8_calibration_is_deterministic_cached_and_ignores_autocast(tiny_shapes, monkeypatch):
    fp32 = load_camnet(shipped_checkpoint("shapes", "sr_colorize", 2))
    first = quantize_camnet(fp32, tiny_shapes[0].images)
    assert isinstance(first, Int8CAMNet) and quantize_camnet(fp32, tiny_shapes[0].images) is first
    monkeypatch.setattr(quantize_module, "_CACHE", {})
    second = quantize_camnet(fp32, tiny_shapes[0].images)
    assert second is not first
    x_c, pm, code = _int8_inputs(fp32, tiny_shapes[1].images, n=16)
    with torch.no_grad():
        out = first(x_c, pm, code)
        assert torch.equal(out, second(x_c, pm, code))
        with torch.autocast("cpu", dtype=torch.bfloat16):  # int8 takes bf16's place for CAM-Net
            assert torch.equal(out, first(x_c, pm, code))
    with pytest.raises(ValueError, match=r"uint8 RGB shaped \(N, 3, 32, 32\)"):
        quantize_camnet(fp32, tiny_shapes[0].images[:, :1])


def test_env_runs_the_int8_camnet_when_asked(tiny_shapes):
    from corruption_env import CorruptionEnv, EnvConfig

    env = CorruptionEnv(EnvConfig(batch_size=8, episode_length=2, camnet_quantize=True, heldout_size=32,
                                  dataset_kwargs={"train_size": 512, "test_size": 256}))
    assert isinstance(env.views.decorruptor, Int8CAMNet)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["loss"] > 0
