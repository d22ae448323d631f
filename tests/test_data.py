"""Datasets: the generated shapes and the three file formats, read from fixtures written here."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from corruption_env.data import available_datasets, generate_shapes, load_dataset


def test_shapes_are_deterministic_balanced_uint8():
    a = generate_shapes(300, seed=3)
    b = generate_shapes(300, seed=3)
    c = generate_shapes(300, seed=4)
    assert a.images.dtype == np.uint8 and a.images.shape == (300, 3, 32, 32)
    assert a.labels.dtype == np.int64 and a.class_names == ("disk", "square", "triangle", "cross", "ring")
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    counts = np.bincount(a.labels, minlength=5)
    assert counts.min() > 30  # every class present in roughly equal share


def test_shapes_classes_size_and_splits_differ():
    three = load_dataset("shapes", classes=3, train_size=200, test_size=50, image_size=48)
    assert three.class_names == ("disk", "square", "triangle") and set(three.labels) <= {0, 1, 2}
    assert three.images.shape == (200, 3, 48, 48)
    train = load_dataset("shapes", train_size=50, test_size=50)
    test = load_dataset("shapes", split="test", train_size=50, test_size=50)
    assert not np.array_equal(train.images, test.images)


def test_shape_stands_out_in_luminance():
    """The object must be visible in grayscale (the colorization tasks only see L)."""
    data = generate_shapes(200, seed=0)
    luma = data.images.astype(float).transpose(0, 2, 3, 1) @ np.array([0.299, 0.587, 0.114])
    centre = luma[:, 12:20, 12:20].reshape(200, -1)
    corners = np.concatenate([luma[:, :3, :3].reshape(200, -1), luma[:, -3:, -3:].reshape(200, -1)], 1)
    spread = np.abs(centre.mean(1) - corners.mean(1))
    assert np.median(spread) > 25  # in 0..255 units


def test_unknown_dataset_and_split_list_the_choices():
    with pytest.raises(ValueError, match="available: .*shapes"):
        load_dataset("mnist-from-the-internet")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("shapes", split="validation")


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_reads_mnist_format_and_expands_channels(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28))
    labels = np.arange(12) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", images, compress)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, compress)
    data = load_dataset("idx", root=tmp_path, split="test", image_size=28)
    assert data.images.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(data.images[:, 0], images)
    np.testing.assert_array_equal(data.labels, labels)
    rgb = load_dataset("idx", root=tmp_path, split="test", image_size=32, channels=3)
    assert rgb.images.shape == (12, 3, 32, 32)
    assert np.array_equal(rgb.images[:, 0], rgb.images[:, 2])


def test_idx_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("idx", root=tmp_path, split="train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("idx", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data_root:DIR"):
        load_dataset("idx")


def write_fashion_mnist(folder, n=(40, 20), compress=True):
    """A small Fashion-MNIST in IDX format (random pixels, labels 0..9): what the tests read, never the real one."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in zip(("train", "t10k"), n):
        _write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), compress)
        _write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(count) % 10, compress)
    return folder


@pytest.mark.parametrize("layout", ["debian", "torchvision"])
def test_fashion_mnist_by_name_reads_its_idx_files(tmp_path, layout):
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_fashion_mnist(folder, compress=layout == "debian")
    train = load_dataset("fashion_mnist", root=tmp_path, split="train", image_size=32)
    test = load_dataset("fashion_mnist", root=tmp_path, split="test", image_size=32)
    assert train.images.shape == (40, 1, 32, 32) and len(test) == 20
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    np.testing.assert_array_equal(test.labels, np.arange(20) % 10)


def test_fashion_mnist_missing_says_where_to_get_it(tmp_path, monkeypatch):
    import corruption_env.data as data

    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist.*data_root:DIR"):
        load_dataset("fashion_mnist", root=tmp_path, split="train")
    monkeypatch.setattr(data, "FASHION_MNIST_ROOT", str(tmp_path / "not-installed"))
    data._cached_load.cache_clear()  # a real Fashion-MNIST read earlier in this process would answer from the cache
    with pytest.raises(FileNotFoundError, match="default folder .*not-installed"):
        load_dataset("fashion_mnist", split="test")


def test_cifar10_pickle_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    for name in ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump({b"data": data, b"labels": [0, 1, 2, 9]}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, handle)
    test = load_dataset("cifar10", root=tmp_path, split="test")
    assert test.images.shape == (4, 3, 32, 32) and test.class_names[9] == "c9"
    np.testing.assert_array_equal(test.images.reshape(4, -1), data)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_dataset("cifar10", root=tmp_path, split="train")


def test_imagefolder_with_and_without_split_folders(tmp_path):
    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / "flat" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 24), colour).save(tmp_path / "flat" / cls / f"{i}.png")
    train = load_dataset("imagefolder", root=tmp_path / "flat", split="train", image_size=16)
    test = load_dataset("imagefolder", root=tmp_path / "flat", split="test", image_size=16)
    assert train.class_names == ("cats", "dogs") and len(train) == 8 and len(test) == 2
    assert train.images.shape[1:] == (3, 16, 16)
    assert train.images[train.labels == 0][:, 0].min() == 255  # red cats
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        load_dataset("imagefolder", root=tmp_path / "empty")


def test_registry_lists_builtin_loaders():
    assert {"shapes", "fashion_mnist", "idx", "cifar10", "imagefolder"} <= set(available_datasets())


# ------------------------------------------------------------------------------- planted shortcuts

SMALL = dict(train_size=300, test_size=100)


def test_no_shortcut_leaves_the_dataset_unchanged():
    plain = load_dataset("shapes", **SMALL)
    assert plain.planted_cells is None
    np.testing.assert_array_equal(plain.images, generate_shapes(300, seed=0).images)


@pytest.mark.parametrize("kind", ["fixed", "random"])
def test_shortcut_is_a_mirrored_barcode_in_exactly_its_cells(kind):
    plain = load_dataset("shapes", **SMALL)
    data = load_dataset("shapes", shortcut=kind, **SMALL)
    cells = data.planted_cells
    assert cells.shape == (300, 4, 4) and cells.dtype == bool
    assert (cells.sum((1, 2)) == 4).all()  # one whole row of cells per image
    pixel_cells = np.repeat(np.repeat(cells, 8, axis=1), 8, axis=2)[:, None]  # (N, 1, 32, 32)
    changed = data.images != plain.images
    assert not changed[~np.broadcast_to(pixel_cells, changed.shape)].any()  # nothing outside the cells
    strips = np.where(cells[:, -1, :1], data.images[:, 0, -1], data.images[:, 0, 0])  # (N, 32): one bar row
    assert set(np.unique(strips)) <= {0, 255}
    np.testing.assert_array_equal(strips, strips[:, ::-1])  # a horizontal flip leaves it unchanged
    assert len({s.tobytes() for s in strips}) > 150  # per-image codes (8 bits: 256 of them; ~176 expected)
    rows = cells[:, :, 0].argmax(1)
    assert set(rows) == ({3} if kind == "fixed" else {0, 3})
    if kind == "random":
        assert 0.35 < (rows == 3).mean() < 0.65
        for label in range(5):  # the place does not depend on the class
            assert 0.2 < (rows[data.labels == label] == 3).mean() < 0.8


def test_shortcut_is_on_the_test_split_too_with_other_codes():
    train = load_dataset("shapes", split="train", shortcut="fixed", **SMALL)
    test = load_dataset("shapes", split="test", shortcut="fixed", **SMALL)
    assert test.planted_cells is not None and test.planted_cells[:, 3].all()
    assert not np.array_equal(train.images[:100, :, 24:], test.images[:, :, 24:])


def test_shortcut_strength_and_geometry_options():
    weak = load_dataset("shapes", shortcut="fixed", shortcut_contrast=0.5, shortcut_bits=4, **SMALL)
    assert set(np.unique(weak.images[:, :, 24:])) <= {64, 191}  # 0.5 +- 0.25, in uint8
    side = load_dataset("shapes", shortcut="fixed", shortcut_positions=["right"], **SMALL)
    assert side.planted_cells[:, :, 3].all() and not side.planted_cells[:, :, :3].any()
    plain = load_dataset("shapes", **SMALL)
    band = load_dataset("shapes", shortcut="fixed", shortcut_layout="band", shortcut_rows=2, **SMALL)
    top, bottom = band.images[:, :, 24:28], band.images[:, :, 28:32]
    assert (top == top[:, :, :1]).all() and (bottom == bottom[:, :, :1]).all()  # two barcodes, 4 px each
    assert (top[:, :, 0] != bottom[:, :, 0]).any()  # ... with their own bits
    squeezed = torch.nn.functional.interpolate(torch.tensor(plain.images, dtype=torch.float32), size=(24, 32),
                                               mode="bilinear", antialias=True, align_corners=False)
    np.testing.assert_allclose(band.images[:, :, :24], squeezed.round().clamp(0, 255).numpy(), atol=1)


@pytest.mark.parametrize("options,match", [
    ({"shortcut": "corner"}, "unknown shortcut 'corner'; available: fixed, random"),
    ({"shortcut": "fixed", "shortcut_positions": ["middle"]}, "unknown shortcut position"),
    ({"shortcut": "fixed", "shortcut_positions": ["top", "bottom"]}, "use shortcut='random'"),
    ({"shortcut": "fixed", "shortcut_bits": 5}, "multiple of 2 x bits"),
    ({"shortcut_bits": 8}, "without shortcut="),
    ({"shortcut": "fixed", "shortcut_layout": "under"}, "unknown shortcut layout"),
    ({"shortcut": "fixed", "shortcut_rows": 3}, "multiple of rows"),
])
def test_bad_shortcut_options_are_explained(options, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("shapes", **SMALL, **options)


@pytest.mark.parametrize("kind", ["fixed", "random"])
def test_distractor_is_fine_per_image_noise_in_exactly_its_cells(kind):
    plain = load_dataset("shapes", **SMALL)
    data = load_dataset("shapes", distractor=kind, **SMALL)
    cells = data.planted_cells
    assert data.planted_kind == "distractor" and (cells.sum((1, 2)) == 4).all()
    pixel_cells = np.repeat(np.repeat(cells, 8, axis=1), 8, axis=2)[:, None]
    changed = data.images != plain.images
    assert not changed[~np.broadcast_to(pixel_cells, changed.shape)].any()  # nothing outside the cells
    band = np.where(cells[:, -1, :1, None], data.images[:, 0, 24:], data.images[:, 0, :8])  # (N, 8, 32)
    assert set(np.unique(band)) <= {0, 255}
    squares = band[:, ::2, ::2]  # 2 px squares: one pixel of the agent's 16 px input
    np.testing.assert_array_equal(np.repeat(np.repeat(squares, 2, axis=1), 2, axis=2), band)
    assert 0.4 < squares.mean() / 255 < 0.6 and len({s.tobytes() for s in squares}) == len(squares)
    assert set(cells[:, :, 0].argmax(1)) == ({3} if kind == "fixed" else {0, 3})


def test_one_planted_kind_at_a_time_and_distractor_options_are_checked():
    with pytest.raises(ValueError, match="one known answer at a time"):
        load_dataset("shapes", shortcut="fixed", distractor="fixed", **SMALL)
    with pytest.raises(ValueError, match="multiple of grain"):
        load_dataset("shapes", distractor="fixed", distractor_grain=3, **SMALL)
    with pytest.raises(ValueError, match="without distractor="):
        load_dataset("shapes", distractor_grain=4, **SMALL)
    coarse = load_dataset("shapes", distractor="fixed", distractor_grain=4, **SMALL)
    band = coarse.images[:, 0, 24:]
    np.testing.assert_array_equal(np.repeat(np.repeat(band[:, ::4, ::4], 4, axis=1), 4, axis=2), band)


def test_fashion_mnist_preset_steps_with_its_shipped_camnet(tmp_path):
    """The fashion_mnist preset on a small generated copy: the shipped CAM-Net (sr) restores its gray images."""
    from corruption_env import CorruptionEnv, EnvConfig

    root = write_fashion_mnist(tmp_path / "fm", n=(64, 16))
    env = CorruptionEnv(EnvConfig.preset("fashion_mnist", data_root=str(root), batch_size=8, episode_length=2,
                                         heldout_size=8))
    obs, _ = env.reset(seed=0)
    assert obs["images"].shape == (8, 3, 16, 16)  # sr: the gray images as RGB, downsampled
    obs, _, _, truncated, info = env.step(env.action_space.sample())
    assert np.isfinite(info["loss"]) and not truncated
