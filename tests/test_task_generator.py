"""Generated known-answer tasks: patterns on any cells, the generator's split, and the judges the audit compares."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from corruption_env import EnvConfig
from corruption_env.data import load_dataset
from corruption_env.evaluation import alignment_uniformity, lidar, spectrum_decay
from corruption_env.known_answer import PATTERNS, Pattern, register_pattern
from corruption_env.task_generator import SPLITS, generate_task, generate_tasks

SMALL = dict(train_size=120, test_size=40)
CORNER_OR_ROW = [[[0, 0], [0, 1], [1, 0], [1, 1]], [[3, 0], [3, 1], [3, 2], [3, 3]]]


@pytest.mark.parametrize("pattern", sorted(PATTERNS.names()))
def test_each_pattern_is_painted_into_exactly_its_cells(pattern):
    plain = load_dataset("shapes", **SMALL)
    data = load_dataset("shapes", planted="random", planted_pattern=pattern, planted_size=2,
                        planted_places=CORNER_OR_ROW, **SMALL)
    cells = data.planted_cells
    assert data.planted_kind == "planted" and (cells.sum((1, 2)) == 4).all()
    assert cells[:, 0, 0].any() and cells[:, 3, 3].any()  # both places are used
    pixels = np.broadcast_to(np.repeat(np.repeat(cells, 8, 1), 8, 2)[:, None], data.images.shape)
    assert not (data.images != plain.images)[~pixels].any()  # nothing outside the planted cells changes
    patches = {data.images[i][pixels[i]].tobytes() for i in range(len(data)) if cells[i, 3, 0]}
    assert (len(patches) > 10) == PATTERNS[pattern].per_image  # a stamp is the same in every image


def test_a_new_pattern_is_one_registered_class():
    @register_pattern("half_gray")
    class HalfGray(Pattern):
        per_image = False

        def draw(self, rng, n, height, width):
            return np.full((n, height, width), 0.5)

    try:
        data = load_dataset("shapes", planted="fixed", planted_pattern="half_gray", planted_places=CORNER_OR_ROW[:1],
                            **SMALL)
        assert (data.images[:, :, :16, :16] == 128).all()
    finally:
        del PATTERNS.entries["half_gray"]


@pytest.mark.parametrize("options,match", [
    ({"planted": "fixed", "planted_pattern": "plaid"}, "unknown planted pattern 'plaid'"),
    ({"planted": "fixed", "planted_places": [[[4, 0]]]}, "outside the 4 x 4 grid"),
    ({"planted": "fixed", "planted_places": CORNER_OR_ROW}, "use planted='random'"),
    ({"planted": "fixed", "planted_size": 0}, "size must be a positive integer"),
    ({"planted_size": 2}, "without planted="),
])
def test_bad_planted_options_are_explained(options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("shapes", **SMALL, **options)


def test_generated_tasks_are_reproducible_split_by_index_and_valid():
    tasks = generate_tasks(10, seed=3)
    assert tasks == generate_tasks(10, seed=3) and tasks != generate_tasks(10, seed=4)
    assert generate_task(7, seed=3) == tasks[7]  # a task depends on its index alone: the split cannot leak
    assert [t.split for t in tasks] == [SPLITS[i % 2] for i in range(10)]
    assert {t.name for t in generate_tasks(10, 3, "heldout")} == {t.name for t in tasks[1::2]}
    for task in tasks:
        config = EnvConfig(**task.overrides(), decorruptor="bicubic").validate()
        assert config.keep_cells == 12 and all(len(place) == 4 for place in task.places)
    with pytest.raises(ValueError, match="split must be one of"):
        generate_tasks(4, split="test")


def test_lidar_counts_directions_that_separate_images_more_than_views():
    torch.manual_seed(0)
    images = torch.randn(200, 1, 32)
    informative = lidar(images + 0.05 * torch.randn(200, 4, 32))  # views agree: every direction separates images
    one_direction = images.clone()
    one_direction[:, :, 1:] = 0
    collapsed = lidar(one_direction + 0.05 * torch.randn(200, 4, 32))  # only one direction separates images
    assert informative > 25 and collapsed < 5


def test_spectrum_decay_reads_the_power_law_and_alignment_uniformity_their_directions():
    torch.manual_seed(0)
    white = torch.randn(2000, 64)
    decaying = white * torch.arange(1, 65).float().pow(-0.5)  # variance ~ rank^-1
    assert spectrum_decay(white) < 0.3 and abs(spectrum_decay(decaying) - 1) < 0.15
    close, _ = alignment_uniformity(white, white + 0.01 * torch.randn_like(white))
    far, _ = alignment_uniformity(white, torch.randn_like(white))
    _, spread = alignment_uniformity(white, white)
    _, bunched = alignment_uniformity(white[:, :2] + 5, white[:, :2] + 5)
    assert close < 0.01 < far and spread < bunched
