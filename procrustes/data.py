"""Imbalanced benchmarks: sources (torchvision CIFAR, ImageFolder trees, Tiny-ImageNet), a uint8 cache, and the
LDAM-DRW subset convention (same counts, same seeded choice of images), plus the class groups used in reports."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ConfigError


class DataError(RuntimeError):
    """A dataset that cannot be found or read: one line that says where to put the files."""


@dataclass(frozen=True)
class DatasetSpec:
    num_classes: int
    n_max: int  # images per class of the balanced training set (the paper's n_max)
    image_size: int
    pad: int  # zero padding of the random crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
# Tiny-ImageNet statistics: the usual ImageNet ones (reconstructed; the LDAM-DRW paper does not state them).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPECS = {
    "cifar10": DatasetSpec(10, 5000, 32, 4, CIFAR_MEAN, CIFAR_STD),
    "cifar100": DatasetSpec(100, 500, 32, 4, CIFAR_MEAN, CIFAR_STD),
    "tinyimagenet": DatasetSpec(200, 500, 64, 8, IMAGENET_MEAN, IMAGENET_STD),
    # user data: n_max is the largest class found; 32x32 crops unless the images are larger (then their size)
    "imagefolder": DatasetSpec(0, 0, 32, 4, CIFAR_MEAN, CIFAR_STD),
}


def spec(dataset: str) -> DatasetSpec:
    if dataset not in SPECS:
        raise ConfigError(f"unknown dataset {dataset!r}: choose one of {', '.join(SPECS)}")
    return SPECS[dataset]


# ---------------------------------------------------------------- counts and groups


def class_counts(num_classes: int, n_max: int, imbalance: str, ratio: float) -> list[int]:
    """Per-class training counts, exactly as the LDAM-DRW code computes them (class 0 is the largest)."""
    if imbalance == "exp":
        return [int(n_max * (1.0 / ratio) ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if imbalance == "step":
        half = num_classes // 2
        return [n_max] * half + [int(n_max * (1.0 / ratio))] * (num_classes - half)
    if imbalance == "none":
        return [n_max] * num_classes
    raise ConfigError(f"unknown imbalance {imbalance!r}: choose one of exp, step, none")


def benchmark_counts(dataset: str, imbalance: str, ratio: float, max_per_class: int | None = None) -> list[int]:
    """Counts of a named benchmark without touching its images (for `python -m procrustes counts`)."""
    s = spec(dataset)
    if s.num_classes == 0:
        raise ConfigError("counts of an imagefolder dataset depend on its files: load it with load_benchmark")
    n_max = s.n_max if max_per_class is None else min(max_per_class, s.n_max)
    return class_counts(s.num_classes, n_max, imbalance, ratio)


def subset_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """The LDAM-DRW choice: np.random.seed(seed) once, then per class in label order the first n of a shuffle."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed) + np.random.shuffle
    chosen = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if n > len(idx):
            raise ConfigError(f"class {c} has {len(idx)} images, fewer than the {n} the benchmark asks for")
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.concatenate(chosen)


def major_classes(counts: list[int] | np.ndarray) -> np.ndarray:
    """Boolean mask: classes with at least the median count (for step imbalance, exactly the n_max half)."""
    c = np.asarray(counts)
    return c >= np.median(c)


GROUP_DEFINITIONS = {
    "major/minor": "major: classes with at least the median training count; minor: the rest",
    "many/medium/few": "many: more than 100 training images; medium: 20 to 100; few: fewer than 20",
}


def class_groups(counts: list[int] | np.ndarray, imbalance: str) -> dict[str, list[int]]:
    """Reporting groups: major/minor for step, many/medium/few (>100, 20..100, <20 images) otherwise."""
    c = np.asarray(counts)
    if imbalance == "step":
        mask = major_classes(c)
        return {"major": np.where(mask)[0].tolist(), "minor": np.where(~mask)[0].tolist()}
    return {
        "many": np.where(c > 100)[0].tolist(),
        "medium": np.where((c >= 20) & (c <= 100))[0].tolist(),
        "few": np.where(c < 20)[0].tolist(),
    }


# ---------------------------------------------------------------- sources


@dataclass
class ImageArrays:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]


def default_data_dir() -> Path:
    """$PROCRUSTES_DATA, else the repository's data/ folder."""
    env = os.environ.get("PROCRUSTES_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


def default_root(dataset: str) -> Path:
    return default_data_dir() / {"tinyimagenet": "tiny-imagenet-200"}.get(dataset, dataset)


def _cache_path(kind: str, root: Path, split: str, files: list[Path]) -> Path:
    h = hashlib.sha256(f"{kind}|{root.resolve()}|{split}|{len(files)}|{files[0] if files else ''}|{files[-1] if files else ''}".encode())
    return default_data_dir() / "cache" / f"{kind}-{split}-{h.hexdigest()[:12]}.npz"


def _decode(files: list[Path], size: int | None, desc: str) -> np.ndarray:
    from PIL import Image
    from tqdm.auto import tqdm

    out = None
    for i, f in enumerate(tqdm(files, desc=desc, leave=False, mininterval=2)):
        im = Image.open(f).convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        if out is None:
            out = np.empty((len(files),) + a.shape, np.uint8)
        if a.shape != out.shape[1:]:
            raise DataError(f"{f}: image of shape {a.shape} differs from {out.shape[1:]}; pass image_size to resize")
        out[i] = a
    return out if out is not None else np.empty((0, 1, 1, 3), np.uint8)


def _cached(kind: str, root: Path, split: str, files: list[Path], labels: list[int], classes: list[str], size: int | None) -> ImageArrays:
    path = _cache_path(kind, root, split, files)
    if path.exists():
        try:
            z = np.load(path, allow_pickle=False)
            return ImageArrays(z["images"], z["labels"], [str(c) for c in z["classes"]])
        except Exception:  # a damaged cache is rebuilt; it is ours, not the user's
            pass
    imgs = _decode(files, size, f"decoding {kind} {split}")
    arr = ImageArrays(imgs, np.asarray(labels, np.int64), classes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=arr.images, labels=arr.labels, classes=np.asarray(classes))
    os.replace(tmp, path)
    return arr


IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def load_imagefolder(root: Path, split: str, size: int | None = None) -> ImageArrays:
    """ROOT/<split>/<class>/* with classes in sorted order (torchvision's ImageFolder convention)."""
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"no folder {d}: expected {root}/{split}/<class>/<image files>")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    files, labels = [], []
    for c, name in enumerate(classes):
        fs = sorted(p for p in (d / name).iterdir() if p.suffix.lower() in IMG_EXT)
        files += fs
        labels += [c] * len(fs)
    if not files:
        raise DataError(f"no images under {d}/<class>/")
    return _cached("imagefolder", Path(root), split, files, labels, classes, size)


def load_tinyimagenet(root: Path, split: str) -> ImageArrays:
    """The official Tiny-ImageNet-200 layout; its labelled val set serves as the test set."""
    root = Path(root)
    if not (root / "wnids.txt").exists():
        raise DataError(f"no Tiny-ImageNet-200 at {root}: expected {root}/wnids.txt, train/<wnid>/images, val/val_annotations.txt")
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    if split == "train":
        for w in wnids:
            fs = sorted((root / "train" / w / "images").glob("*.JPEG"))
            files += fs
            labels += [index[w]] * len(fs)
    else:
        for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                files.append(root / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
    return _cached("tinyimagenet", root, split, files, labels, wnids, 64)


def load_cifar(dataset: str, root: Path, split: str, download: bool = True) -> ImageArrays:
    """torchvision's pickles when present (downloaded if possible), else an ImageFolder tree at root."""
    root = Path(root)
    if (root / split).is_dir():
        arr = load_imagefolder(root, split)
        if len(arr.classes) != spec(dataset).num_classes:
            raise DataError(f"{root}/{split} holds {len(arr.classes)} classes, {dataset} has {spec(dataset).num_classes}")
        return arr
    import torchvision

    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=False)
    except RuntimeError:
        if not download:
            raise DataError(f"no {dataset} at {root}: put torchvision's pickles or an ImageFolder tree ({root}/train/<class>/*) there") from None
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as e:  # no internet
            raise DataError(
                f"no {dataset} at {root} and the download failed ({type(e).__name__}): put torchvision's pickles or an "
                f"ImageFolder tree ({root}/train/<class>/*, {root}/test/<class>/*) there"
            ) from None
    return ImageArrays(np.asarray(ds.data, np.uint8), np.asarray(ds.targets, np.int64), list(ds.classes))


def load_split(dataset: str, root: str | Path | None, split: str) -> ImageArrays:
    root = Path(root) if root else default_root(dataset)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(dataset, root, split)
    if dataset == "tinyimagenet":
        return load_tinyimagenet(root, "train" if split == "train" else "val")
    if dataset == "imagefolder":
        if not root.is_dir():
            raise DataError(f"data root {root} does not exist")
        return load_imagefolder(root, split)
    raise ConfigError(f"unknown dataset {dataset!r}")


def check_root(dataset: str, root: str | Path | None) -> None:
    """Fail early (before any training) when a given data root does not exist."""
    if root is not None and not Path(root).exists():
        raise DataError(f"data root {root} does not exist")
    if dataset in ("tinyimagenet", "imagefolder") and root is None and not default_root(dataset).exists():
        raise DataError(f"no {dataset} data at {default_root(dataset)}: pass --data-root")


@dataclass
class Benchmark:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    counts: list[int]
    classes: list[str]
    spec: DatasetSpec
    data: dict | None = None  # {"id": content hash of the arrays above, "root": where they were read}


def content_id(*arrays: np.ndarray, classes: list[str] = ()) -> str:
    """A 16-hex sha256 of the bytes, shapes and dtypes of arrays and of the class names: what the data are."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    h.update("\n".join(classes).encode())
    return h.hexdigest()[:16]


def load_benchmark(cfg, root: str | Path | None = None) -> Benchmark:
    """The imbalanced training subset and the balanced test set a RunConfig asks for."""
    tr = load_split(cfg.dataset, root, "train")
    te = load_split(cfg.dataset, root, "test")
    s = spec(cfg.dataset)
    available = np.bincount(tr.labels, minlength=len(tr.classes))
    if cfg.dataset == "imagefolder":
        size = tr.images.shape[1]
        s = DatasetSpec(len(tr.classes), int(available.max()), size, max(4, size // 8), s.mean, s.std)
    n_max = s.n_max if cfg.max_per_class is None else min(cfg.max_per_class, s.n_max)
    if cfg.imbalance == "none":
        counts = [int(min(a, n_max)) for a in available]
    else:
        counts = class_counts(s.num_classes, n_max, cfg.imbalance, cfg.ratio)
    if min(counts) < 1:
        raise ConfigError(f"impossible ratio {cfg.ratio:g} for n_max={n_max}: the smallest class would keep no image")
    idx = subset_indices(tr.labels, counts, cfg.subset_seed)
    b = Benchmark(tr.images[idx], tr.labels[idx], te.images, te.labels, counts, tr.classes, s)
    b.data = {"id": content_id(b.train_x, b.train_y, b.test_x, b.test_y, classes=b.classes),
              "root": str(Path(root) if root else default_root(cfg.dataset))}
    return b
