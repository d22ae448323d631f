"""Labelled image datasets behind one registry.

Every loader returns an :class:`~corruption_env.images.ImageDataset`: uint8 images shaped (N, C, H, W)
resized to ``image_size``, int64 labels and the class names. ``shapes`` is generated from a seed and needs no
files (the embedded default); ``fashion_mnist`` reads its IDX files from where Debian's ``dataset-fashion-mnist``
installs them (or a folder the user gives); ``idx`` (MNIST-format), ``cifar10`` (python-pickle batches) and
``imagefolder`` read a local directory the user gives, since nothing is downloaded at run time.
Register a new source with ``@register_dataset("name")`` on a function
``loader(root, image_size, split, **kwargs) -> ImageDataset``.

**Known-answer tasks.** Any dataset can carry a planted pattern (``load_dataset(..., shortcut="fixed")``
or ``distractor=...``); :mod:`corruption_env.known_answer` defines the patterns and plants them.
"""
from __future__ import annotations

import functools
import gzip
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from corruption_env.images import SPLITS, ImageDataset
from corruption_env.known_answer import planted_from_options
from corruption_env.registry import Registry

Loader = Callable[..., ImageDataset]
DATASETS: Registry[Loader] = Registry("dataset")
register_dataset = DATASETS.register  # decorator: ``loader(root, image_size, split, **kwargs)`` as ``name``
available_datasets = DATASETS.names


def load_dataset(
    name: str,
    root: str | Path | None = None,
    image_size: int = 32,
    split: str = "train",
    channels: int | None = None,
    **kwargs,
) -> ImageDataset:
    """Load a registered dataset.

    :param name: registry name, one of :func:`available_datasets`.
    :param root: directory holding the files (not needed for ``shapes``).
    :param image_size: side length every image is resized to.
    :param split: ``"train"`` or ``"test"``.
    :param channels: if given, convert to this many channels (1 -> 3 repeats grayscale).
    :param kwargs: loader-specific options (e.g. ``classes=3`` or ``seed`` for ``shapes``), and the
        planted-pattern options of any dataset: ``shortcut`` (``"fixed"`` or ``"random"``) with
        ``shortcut_bits``, ``shortcut_rows``, ``shortcut_contrast``, ``shortcut_layout``,
        ``shortcut_positions``, ``shortcut_grid``, ``shortcut_seed`` (the fields of :class:`corruption_env.known_answer.Shortcut`, prefixed),
        or ``distractor`` with ``distractor_grain``, ``distractor_contrast``, ... (:class:`corruption_env.known_answer.Distractor`).
    """
    DATASETS[name]  # an unknown name lists the valid ones
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if image_size < 4:
        raise ValueError(f"image_size must be >= 4, got {image_size}")
    hashable = {k: _frozen(v) for k, v in kwargs.items()}  # JSON gives lists (of lists: planted places)
    data = _cached_load(name, None if root is None else str(root), image_size, split, tuple(sorted(hashable.items())))
    return data if channels is None else data.with_channels(channels)


def _frozen(value: object) -> object:
    """Lists (and lists of lists) as tuples, so that loader options can key the cache."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


@functools.lru_cache(maxsize=8)
def _cached_load(name: str, root: str | None, image_size: int, split: str, kwargs: tuple) -> ImageDataset:
    options = dict(kwargs)
    planted = planted_from_options(options, image_size)  # removes the shortcut_* / distractor_* options
    data = DATASETS[name](root=root, image_size=image_size, split=split, **options)
    if planted is not None:
        data = planted.plant(data, split)
    for array in (data.images, data.labels, data.planted_cells):
        if array is not None:
            array.setflags(write=False)
    return data


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, C, H, W) images to (size, size) with antialiased bilinear interpolation."""
    if images.shape[-2:] == (size, size):
        return images
    out = []
    for start in range(0, len(images), 1024):
        chunk = torch.tensor(images[start:start + 1024], dtype=torch.float32)
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(chunk.round().clamp(0, 255).to(torch.uint8).numpy())
    return np.concatenate(out) if out else images.reshape(0, images.shape[1], size, size)


def _require_dir(root: str | None, dataset: str, expected: str) -> Path:
    if root is None:
        raise FileNotFoundError(f"dataset {dataset!r} reads local files: give the folder holding {expected} "
                                "(--env-kwargs data_root:DIR; EnvConfig.data_root; load_dataset(root=...))")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: directory {path} does not exist; expected it to hold {expected}")
    return path


SHAPE_NAMES = ("disk", "square", "triangle", "cross", "ring")
_SUPERSAMPLE = 4  # render at 4x and average down: anti-aliased edges


def _shape_masks(kind: np.ndarray, x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Inside-test of each shape in its own rotated frame; x, y (n, S, S), kind (n,), r (n, 1, 1)."""
    inside = np.empty(x.shape, dtype=bool)
    for index in np.unique(kind):
        sel = kind == index
        u, v, rad = x[sel], y[sel], r[sel]
        if index == 0:  # disk
            mask = u * u + v * v <= rad * rad
        elif index == 1:  # square
            mask = np.maximum(np.abs(u), np.abs(v)) <= 0.85 * rad
        elif index == 2:  # equilateral triangle: every edge normal's projection <= inradius = circumradius/2
            mask = np.ones(u.shape, dtype=bool)
            for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
                mask &= (-u * np.cos(angle) - v * np.sin(angle)) <= 1.25 * rad / 2
        elif index == 3:  # cross
            au, av, arm = np.abs(u), np.abs(v), 0.35 * rad
            mask = ((au <= rad) & (av <= arm)) | ((av <= rad) & (au <= arm))
        else:  # ring
            d2 = u * u + v * v
            mask = (d2 <= rad * rad) & (d2 >= (0.6 * rad) ** 2)
        inside[sel] = mask
    return inside


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114])


def generate_shapes(n: int, image_size: int = 32, classes: int = 5, seed: int = 0,
                    chunk: int = 500) -> ImageDataset:
    """Render ``n`` images of coloured shapes over gradient backgrounds, deterministically from ``seed``.

    The label is the shape; colour, position, size, rotation and background are nuisances. Geometry is
    given for 32 px and scales with ``image_size``: radius r ~ U(10, 14), centre 16 +- U(4), square
    half-side 0.85r, triangle circumradius 1.25r, cross arms +-r of half-width 0.35r, ring inner radius
    0.6r. The object colour is redrawn until its luminance differs from both background ends by at
    least 0.2, so the shape stays visible in the grayscale inputs of the colorization tasks.
    """
    if not 2 <= classes <= len(SHAPE_NAMES):
        raise ValueError(f"shapes: classes must be in 2..{len(SHAPE_NAMES)}, got {classes}")
    rng = np.random.default_rng(seed)
    unit = image_size / 32.0
    side = image_size * _SUPERSAMPLE
    coords = ((np.arange(side) + 0.5) / _SUPERSAMPLE).astype(np.float32)  # pixel centres in output-pixel units
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    labels = rng.integers(0, classes, size=n)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    for start in range(0, n, chunk):
        kind = labels[start:start + chunk]
        m = len(kind)
        r = (rng.uniform(10, 14, m) * unit).astype(np.float32)
        cx = ((16 + rng.uniform(-4, 4, m)) * unit).astype(np.float32)
        cy = ((16 + rng.uniform(-4, 4, m)) * unit).astype(np.float32)
        theta = rng.uniform(0, 2 * np.pi, m).astype(np.float32)
        bg_a, bg_b = rng.uniform(0, 1, (m, 3)), rng.uniform(0, 1, (m, 3))
        direction = rng.uniform(0, 2 * np.pi, m)
        fg = rng.uniform(0, 1, (m, 3))
        for _ in range(100):  # redraw colours that do not stand out from the background in luminance
            weak = np.minimum(np.abs(_luma(fg) - _luma(bg_a)), np.abs(_luma(fg) - _luma(bg_b))) < 0.2
            if not weak.any():
                break
            fg[weak] = rng.uniform(0, 1, (int(weak.sum()), 3))
        # a pair of background ends can leave no colour 0.2 away from both; pull those ends together
        fg[weak] = np.where(_luma(bg_a[weak])[:, None] > 0.5, 0.0, 1.0)
        bg_b[weak] = bg_a[weak]

        dx = gx[None] - cx[:, None, None]
        dy = gy[None] - cy[:, None, None]
        c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        inside = _shape_masks(kind, c * dx + s * dy, -s * dx + c * dy, r[:, None, None])
        # coverage of each output pixel by the shape; the gradient background is linear, so its
        # pixel average is its value at the pixel centre and needs no supersampling
        alpha = inside.reshape(m, image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE).mean(axis=(2, 4))
        centres = np.arange(image_size) + 0.5 - image_size / 2
        t = (np.cos(direction)[:, None, None] * centres[None, None, :]
             + np.sin(direction)[:, None, None] * centres[None, :, None]) / image_size + 0.5
        t = np.clip(t, 0, 1)[:, None]  # (m, 1, H, W)
        background = bg_a[:, :, None, None] * (1 - t) + bg_b[:, :, None, None] * t
        alpha = alpha[:, None]
        picture = alpha * fg[:, :, None, None] + (1 - alpha) * background
        images[start:start + m] = np.round(picture * 255).astype(np.uint8)
    return ImageDataset(images, labels.astype(np.int64), SHAPE_NAMES[:classes])


@register_dataset("shapes")
def _load_shapes(root: str | None, image_size: int, split: str, classes: int = 5, seed: int = 0,
                 train_size: int = 8000, test_size: int = 2000) -> ImageDataset:
    """Generated shapes; train and test come from different streams of ``seed``."""
    n = train_size if split == "train" else test_size
    return generate_shapes(n, image_size=image_size, classes=classes, seed=seed * 2 + (split == "test"))


# ------------------------------------------------------------------------------------------------ idx

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzipped or not): magic 0x0000 <dtype 0x08> <ndim>, big-endian sizes, data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values (truncated file?)")
    return data.reshape(shape)


def _read_idx_split(folder: Path, split: str, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The (images, labels) arrays of ``split`` from the MNIST-format files in ``folder``."""
    names = _IDX_FILES[split]
    expected = " and ".join(f"{n}[.gz]" for n in names)
    found = []
    for name in names:
        hit = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
        if hit is None:
            raise FileNotFoundError(f"dataset {dataset!r} ({split}): expected {expected} in {folder}; {name}[.gz] is missing")
        found.append(hit)
    images, labels = read_idx(found[0]), read_idx(found[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"idx files disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def _idx_dataset(images: np.ndarray, labels: np.ndarray, image_size: int, class_names: tuple[str, ...] | None = None
                 ) -> ImageDataset:
    classes = int(labels.max()) + 1 if len(labels) else 0
    names = class_names if class_names is not None else tuple(str(i) for i in range(classes))
    if classes > len(names):
        raise ValueError(f"labels go up to {classes - 1} but the dataset has {len(names)} classes")
    return ImageDataset(resize_uint8(images[:, None], image_size), labels.astype(np.int64), names)


@register_dataset("idx")
def _load_idx(root: str | None, image_size: int, split: str) -> ImageDataset:
    """MNIST-format files (MNIST, Fashion-MNIST, KMNIST): images (N, 1, H, W), labels 0..9."""
    expected = " and ".join(f"{n}[.gz]" for n in _IDX_FILES[split])
    folder = _require_dir(root, "idx", expected)
    return _idx_dataset(*_read_idx_split(folder, split, "idx"), image_size)


# ------------------------------------------------------------------------------------- fashion_mnist

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist installs the files
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")


@register_dataset("fashion_mnist")
def _load_fashion_mnist(root: str | None, image_size: int, split: str) -> ImageDataset:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 gray clothing, 10 classes, 60,000 train / 10,000 test,
    read offline from its four IDX files in ``root`` (default: :data:`FASHION_MNIST_ROOT`, where Debian's
    ``dataset-fashion-mnist`` package puts them), or in ``root/FashionMNIST/raw`` or ``root/raw`` (torchvision's
    layout)."""
    base = Path(root).expanduser() if root is not None else Path(FASHION_MNIST_ROOT)
    names = _IDX_FILES[split]
    folders = [base, base / "FashionMNIST" / "raw", base / "raw"]
    folder = next((f for f in folders if any((f / n).is_file() or (f / f"{n}.gz").is_file() for n in names)), None)
    if folder is None:
        files = ", ".join(f"{n}[.gz]" for pair in _IDX_FILES.values() for n in pair)
        where = "the default folder " if root is None else ""
        raise FileNotFoundError(
            f"dataset 'fashion_mnist': its IDX files ({files}) are not in {where}{base} (nor in its FashionMNIST/raw "
            f"or raw subfolders). Install them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu: "
            f"{FASHION_MNIST_ROOT}), or copy the four files from https://github.com/zalandoresearch/fashion-mnist "
            "(or a torchvision download) and pass --env-kwargs data_root:DIR")
    return _idx_dataset(*_read_idx_split(folder, split, "fashion_mnist"), image_size, FASHION_MNIST_CLASSES)


# -------------------------------------------------------------------------------------------- cifar10

_CIFAR_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}


@register_dataset("cifar10")
def _load_cifar10(root: str | None, image_size: int, split: str) -> ImageDataset:
    """CIFAR-10 python-pickle batches, from ``root`` or its ``cifar-10-batches-py`` subfolder."""
    expected = "data_batch_1..data_batch_5, test_batch and batches.meta (CIFAR-10 python version)"
    folder = _require_dir(root, "cifar10", expected)
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    images, labels = [], []
    for name in _CIFAR_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"dataset 'cifar10': {path} is missing; expected {expected} in {folder}")
        with path.open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    meta = folder / "batches.meta"
    if meta.is_file():
        with meta.open("rb") as handle:
            names = tuple(n.decode() for n in pickle.load(handle, encoding="bytes")[b"label_names"])
    else:
        names = tuple(str(i) for i in range(10))
    return ImageDataset(resize_uint8(np.concatenate(images), image_size), np.concatenate(labels), names)


# ---------------------------------------------------------------------------------------- imagefolder

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".gif", ".webp", ".tif", ".tiff"}


@register_dataset("imagefolder")
def _load_imagefolder(root: str | None, image_size: int, split: str, test_every: int = 5) -> ImageDataset:
    """One subfolder per class (torchvision's ImageFolder layout), read as RGB.

    If ``root`` has ``train/`` and ``test/`` subfolders they are the splits; otherwise every
    ``test_every``-th file of each class (in sorted order) is the test split.
    """
    from PIL import Image

    expected = "one subfolder per class with image files (optionally under train/ and test/)"
    folder = _require_dir(root, "imagefolder", expected)
    has_splits = (folder / "train").is_dir() and (folder / "test").is_dir()
    base = folder / split if has_splits else folder
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"dataset 'imagefolder': no class subfolders in {base}; expected {expected}")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (base / name).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not has_splits:
            files = [p for i, p in enumerate(files) if (i % test_every == test_every - 1) == (split == "test")]
        for path in files:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            images.append(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise FileNotFoundError(f"dataset 'imagefolder' ({split}): no image files ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {base}")
    return ImageDataset(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(classes))
