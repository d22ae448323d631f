"""Every cache is keyed by everything that shapes its value: each input changed in turn gives a fresh value, the
same value an uncached computation gives. The caches: the judged whole runs of a process (a pool worker or a
reused Ray actor judges row after row, search after search), the evaluation's rows on disk, the int8 CAM-Net of a
process and the loaded datasets of a process."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.whole_run_agent import judge_candidates, judge_keep_all
from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.whole_run import WholeRun, make_corruptor
from test_whole_run import TINY

THETA = np.linspace(-1.0, 1.0, 16)
SETTINGS = {"run": TINY.replace(num_threads=1).to_dict(), "updates": 2, "judge": "rankme", "corruptor": "score_map",
            "seed": 5, "threads": 1}
# each input of a judged run, changed: the judge, the run length, the runs' config
JUDGED_RUN_CHANGES = {
    "judge": {"judge": "probe_accuracy"},
    "updates": {"updates": 3},
    "config": {"run": {**SETTINGS["run"], "heldout_size": 48}},
}


def uncached_judge(settings: dict, keep_all: bool = False) -> float:
    config = EnvConfig.from_dict(settings["run"])
    runs = WholeRun(config.without_budget() if keep_all else config, settings["updates"], settings["judge"])
    if keep_all:
        return runs.judge(lambda obs: np.ones(runs.env.action_space.shape, np.float32), settings["seed"]).judge
    return runs.judge_candidate(make_corruptor(settings["corruptor"], runs.config), THETA, settings["seed"]).judge


@pytest.mark.parametrize("change", sorted(JUDGED_RUN_CHANGES))
def test_a_judged_run_is_keyed_by_its_judge_length_and_config(change):
    judge_candidates(SETTINGS, [THETA])  # this process has judged with the base settings
    judge_keep_all(SETTINGS)
    changed = {**SETTINGS, **JUDGED_RUN_CHANGES[change]}
    assert judge_candidates(changed, [THETA])[0]["judge"] == uncached_judge(changed)
    assert judge_keep_all(changed)["judge"] == uncached_judge(changed, keep_all=True)
    assert judge_candidates(SETTINGS, [THETA])[0]["judge"] == uncached_judge(SETTINGS)  # and back


def test_a_label_judged_search_after_a_label_free_one_in_one_process_is_judged_with_labels():
    """A benchmark worker runs a ``cmaes`` row, then a ``cmaes_labels`` row of the same task: the second search's
    candidates are judged by kNN with labels (a share in [0, 1]), as in a fresh process, not by RankMe."""
    from agents import make_agent

    options = dict(run_updates=2, run_batch=4, population=4, rungs=1, confirm_updates=2, engine="local", verbose=0)
    free = make_agent("cmaes", CorruptionEnv(TINY), seed=0, judge="rankme", **options).learn(2 * 4)
    labels = make_agent("cmaes_labels", CorruptionEnv(TINY), seed=0, **options).learn(2 * 4)
    free_judges = [r["judge"] for r in free.history]
    label_judges = [r["judge"] for r in labels.history]
    assert all(j > 1 for j in free_judges)  # RankMe of 128-d features
    assert all(0 <= j <= 1 for j in label_judges), label_judges
    settings = {**labels.settings, "judge": "probe_accuracy"}
    runs = WholeRun(EnvConfig.from_dict(settings["run"]), settings["updates"], "probe_accuracy")
    corruptor = make_corruptor(settings["corruptor"], runs.config)
    fresh = [runs.judge_candidate(corruptor, np.asarray(r["theta"]), settings["seed"]).judge for r in labels.history]
    assert label_judges == fresh
    assert labels.keep_all["judge"] <= 1  # keeping everything is judged with labels too


def test_a_cached_row_is_keyed_by_config_steps_seed_row_weights_and_code(tmp_path, monkeypatch):
    """The identity of a cached evaluation row changes with each input; a checkpoint rewritten at the same path
    (new content) and a change of the code give new rows."""
    import agents.corruptor_evaluation as evaluation
    from agents.corruptor_evaluation import Row, RowCache
    from corruption_env.camnet import shipped_checkpoint

    checkpoint = tmp_path / "camnet.pt"
    checkpoint.write_bytes(shipped_checkpoint("shapes", "sr_colorize", 2).read_bytes())
    config = EnvConfig(camnet_checkpoint=str(checkpoint))
    cache = RowCache(tmp_path / "cache")
    base = cache.identity(config, 10, 0, Row("random", "random", {"keep_prob": 0.5}))
    changed = {
        "config": cache.identity(config.replace(batch_size=32), 10, 0, Row("random", "random", {"keep_prob": 0.5})),
        "steps": cache.identity(config, 11, 0, Row("random", "random", {"keep_prob": 0.5})),
        "seed": cache.identity(config, 10, 1, Row("random", "random", {"keep_prob": 0.5})),
        "row": cache.identity(config, 10, 0, Row("random", "random", {"keep_prob": 0.6})),
    }
    checkpoint.write_bytes(shipped_checkpoint("shapes", "sr", 2).read_bytes())  # the same path, other weights
    changed["weights"] = cache.identity(config, 10, 0, Row("random", "random", {"keep_prob": 0.5}))
    monkeypatch.setattr(evaluation, "code_version", lambda: "another version of the code")
    changed["code"] = cache.identity(config, 10, 0, Row("random", "random", {"keep_prob": 0.5}))
    paths = {name: cache.path(identity) for name, identity in changed.items()}
    assert all(identity != base for identity in changed.values())
    assert len(set(paths.values()) | {cache.path(base)}) == len(changed) + 1
    # the thread count only changes float noise: the same row
    assert cache.identity(config.replace(num_threads=2), 10, 0, Row("random", "random", {"keep_prob": 0.5})) == \
        changed["code"] != base


def test_the_code_version_follows_the_source(tmp_path, monkeypatch):
    import agents.corruptor_evaluation as evaluation

    first = evaluation.code_version()
    assert first == evaluation.code_version() and len(first) == 20
    evaluation.code_version.cache_clear()
    monkeypatch.setattr(evaluation, "__file__", str(tmp_path / "agents" / "corruptor_evaluation.py"))
    (tmp_path / "agents").mkdir()
    (tmp_path / "agents" / "corruptor_evaluation.py").write_text("# another agents package\n")
    try:
        assert evaluation.code_version() != first
    finally:
        evaluation.code_version.cache_clear()


def test_the_int8_camnet_is_keyed_by_weights_images_grid_and_architecture(tiny_shapes):
    from corruption_env.camnet import CAMNet, CAMNetConfig, quantize_camnet
    from corruption_env.camnet.model import fold_weight_norm

    def model(seed: int, **cfg) -> CAMNet:
        torch.manual_seed(seed)
        return fold_weight_norm(CAMNet(CAMNetConfig(nf=8, gc=4, z_dim=4, w_dim=8, map_layers=1, **cfg))).eval()

    images = tiny_shapes[0].images[:16]
    base = quantize_camnet(model(0), images)
    assert quantize_camnet(model(0), images) is base  # the same weights and images: the cached one
    fresh = {"weights": quantize_camnet(model(1), images),
             "images": quantize_camnet(model(0), tiny_shapes[0].images[16:32]),
             "mask grid": quantize_camnet(model(0), images, mask_grid=8),
             "architecture": quantize_camnet(model(0, code_nc=3), images)}
    assert all(m is not base for m in fresh.values())
    assert len({id(m) for m in fresh.values()}) == len(fresh)


def test_a_loaded_dataset_is_keyed_by_name_size_split_and_options():
    from corruption_env.data import load_dataset

    base = dict(train_size=64, test_size=32)
    first = load_dataset("shapes", **base)
    assert load_dataset("shapes", **base) is first
    fresh = {"split": load_dataset("shapes", split="test", **base),
             "image size": load_dataset("shapes", image_size=16, **base),
             "options": load_dataset("shapes", train_size=64, test_size=32, classes=3),
             "planted": load_dataset("shapes", train_size=64, test_size=32, shortcut="fixed")}
    for name, data in fresh.items():
        assert data is not first, name
        assert not (data.images.shape == first.images.shape and np.array_equal(data.images, first.images)), name
