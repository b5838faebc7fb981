"""Imbalanced benchmarks: sources (torchvision CIFAR, ImageFolder trees, Tiny-ImageNet), a uint8 cache, and the
LDAM-DRW subset convention (same counts, same seeded choice of images), plus the class groups used in reports."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..method import counts as _counts
from .config import ConfigError
from ..method.counts import class_counts, class_groups, major_classes  # noqa: F401  (re-exported: the package's public names)


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


def _benchmark_class_counts(num_classes: int, n_max: int, imbalance: str, ratio: float) -> list[int]:
    """`procrustes.method.counts.class_counts` (the one definition) with its errors as ConfigError, for user input."""
    try:
        return _counts.class_counts(num_classes, n_max, imbalance, ratio)
    except ValueError as e:
        raise ConfigError(f"{e}: add class folders" if "needs at least 2" in str(e) else str(e)) from None


def benchmark_counts(dataset: str, imbalance: str, ratio: float, max_per_class: int | None = None) -> list[int]:
    """Counts of a named benchmark without touching its images (for `python -m procrustes counts`)."""
    s = spec(dataset)
    if s.num_classes == 0:
        raise ConfigError("counts of an imagefolder dataset depend on its files: load it with load_benchmark")
    n_max = s.n_max if max_per_class is None else min(max_per_class, s.n_max)
    return _benchmark_class_counts(s.num_classes, n_max, imbalance, ratio)


def subset_indices(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """The LDAM-DRW choice: np.random.seed(seed) once, then per class in label order the first n of a shuffle."""
    return subset_and_validation(labels, counts, seed, 0)[0]


def subset_and_validation(labels: np.ndarray, counts: list[int], seed: int = 0,
                          val_per_class: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(the LDAM-DRW training subset, a balanced validation split): per class, the first n of the seeded shuffle
    train, the LAST `val_per_class` of the same shuffle validate. Why the last ones: the shuffle of a class does not
    depend on the counts, so the validation images are the same for every benchmark of a dataset (exp or step,
    any rho) at one subset seed, and they never meet the training subset; the random stream is the reference's."""
    rng = np.random.RandomState(seed)  # the same stream as np.random.seed(seed) + np.random.shuffle
    chosen, val = [], []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if n > len(idx):
            raise ConfigError(f"class {c} has {len(idx)} images, fewer than the {n} the benchmark asks for")
        rng.shuffle(idx)
        chosen.append(idx[:n])
        if val_per_class:
            if n + val_per_class > len(idx):
                raise ConfigError(f"val_per_class {val_per_class}: class {c} has {len(idx)} training images and the "
                                  f"benchmark uses {n}, leaving {len(idx) - n} for validation; lower val_per_class or "
                                  f"max_per_class")
            val.append(idx[len(idx) - val_per_class:])
    return np.concatenate(chosen), (np.concatenate(val) if val else np.zeros(0, np.int64))


# ---------------------------------------------------------------- sources


@dataclass
class ImageArrays:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    files: list[str | Path] | None = None  # the image file of each row (None for torchvision's pickles)
    source: str = ""  # where the split was read, for messages


def default_data_dir() -> Path:
    """$PROCRUSTES_DATA, else the repository's data/ folder."""
    env = os.environ.get("PROCRUSTES_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def default_root(dataset: str) -> Path:
    return default_data_dir() / {"tinyimagenet": "tiny-imagenet-200"}.get(dataset, dataset)


CACHE_FORMAT = 2  # part of every cache key: bump it when what a cache holds changes
# part of the key of a cache that holds any PNG: 16-bit PNGs are scaled to 8 bits (before: clipped to white).
# Only those caches are rebuilt (a JPEG tree, such as data/cifar10, keeps its cache).
PNG_DECODING = 2


def _cache_key(kind: str, root: Path, split: str, files: list[str | Path], labels: list[int], classes: list[str],
               size: int | None) -> str:
    """sha256 over what the decoded arrays depend on: every file's path relative to root, its label, and from one
    stat() its size, mtime_ns and ctime_ns; plus the class names (in label order) and the resize size. Why:
    rewriting any image changes its mtime (and usually its size), adding, removing, renaming one or moving it to
    another class folder changes the listing, so each gives another key and another cache file, where the old key
    (root, count, first and last name) returned the old pixels and labels.

    Not read: the files' bytes. size + mtime_ns alone miss a rewrite that keeps both (a tool that restores the
    mtime, such as `touch -r`, `cp -p` or `rsync -t`, onto same-sized content), and a swap by rename of two
    same-named, same-sized files written in the same clock tick; ctime_ns cannot be set by the user and changes
    on every write, rename, chmod or utime, so it closes those cases for free (the same stat call). What remains:
    an edit under a reset system clock, or a file system that does not keep ctime; delete data/cache/ then. The
    price: metadata-only changes (chmod, chown, a copy of the folder) cost one rebuild.

    Hashing every byte instead was measured on the 60,000 CIFAR-10 JPEGs of data/cifar10 (55 MB, warm page
    cache, 2-core AMD EPYC shared with a training, nice 10): 0.74 s to read and sha256 all files against 0.34 s
    to stat them, on top of about 0.3 s to list the folders and 0.1 s to load the npz, i.e. about 1.15 s against
    0.75 s for a cached CIFAR-10 load, and more from a cold disk or for larger image folders."""
    prefix = str(Path(root)) + os.sep
    h = hashlib.sha256(json.dumps([CACHE_FORMAT, kind, split, size, [str(c) for c in classes], len(files)]).encode())
    if any(str(f).lower().endswith(".png") for f in files):
        h.update(f"png-decoding-{PNG_DECODING}\n".encode())  # a cache of clipped 16-bit PNGs is not reused
    for f, y in zip(files, labels):
        s = str(f)
        try:
            st = os.stat(s)
        except OSError as e:
            raise DataError(f"cannot read {f} ({e.strerror}): restore the file or remove it from the dataset") from None
        rel = s[len(prefix):].replace(os.sep, "/") if s.startswith(prefix) else s
        h.update(f"{rel}\0{int(y)}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode())
    return h.hexdigest()


def _cache_path(kind: str, split: str, key: str) -> Path:
    return default_data_dir() / "cache" / f"{kind}-{split}-{key[:16]}.npz"


def _content_key(kind: str, root: Path, split: str, files: list[str | Path], labels, classes: list[str],
                 size: int | None) -> str:
    """sha256 over every file's bytes (with its path relative to root and its label), the class names and the
    resize size: what the decoded arrays are, whatever the files' timestamps. Computed only when the stat key of
    `_cache_key` misses (about 0.74 s for CIFAR-10 here, against tens of seconds to decode it), so that the same
    images extracted or copied anew (new ctimes: a fresh `tar -x` of the same archive, a clean clone's data/)
    reuse the decoded cache instead of decoding again."""
    prefix = str(Path(root)) + os.sep
    h = hashlib.sha256(json.dumps(["content", CACHE_FORMAT, kind, split, size, [str(c) for c in classes],
                                   len(files)]).encode())
    for f, y in zip(files, labels):
        s = str(f)
        try:
            with open(s, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise DataError(f"cannot read {f} ({e.strerror}): restore the file or remove it from the dataset") from None
        rel = s[len(prefix):].replace(os.sep, "/") if s.startswith(prefix) else s
        h.update(f"{rel}\0{int(y)}\0{len(data)}\n".encode())
        h.update(data)
    return h.hexdigest()


def _by_content(kind: str, split: str, ckey: str, n: int, labels: np.ndarray) -> np.ndarray | None:
    """The images of a cache of the same kind and split that records the content key `ckey`, or None."""
    for path in sorted((default_data_dir() / "cache").glob(f"{kind}-{split}-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                # only a consistent file: the key it stores is the one its name was made from
                if ("content_key" in z.files and str(z["content_key"]) == ckey
                        and str(z["key"])[:16] == path.stem.rsplit("-", 1)[-1]):
                    images = z["images"]
                    if len(images) == n and np.array_equal(z["labels"], labels):
                        return images
        except Exception:  # a damaged or foreign cache: not this one
            continue
    return None


# decoding: in parallel processes from this many files on (below it, starting them costs more than it saves)
DECODE_PARALLEL_MIN = 4096


def decode_workers() -> int:
    """Processes that decode a large image folder: $PROCRUSTES_DECODE_WORKERS, else every core this process may
    use (at most 32). 1: decode in this process."""
    env = os.environ.get("PROCRUSTES_DECODE_WORKERS")
    if env and env.isdigit() and int(env) >= 1:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(32, cores))


def _decode(files: list[str | Path], size: int | None, desc: str) -> np.ndarray:
    """uint8 (N, H, W, 3) images of files: in decode_workers() processes for DECODE_PARALLEL_MIN files or more
    (CIFAR-10's 60,000 JPEGs: 12-16 s in one process on the GPU machine's cores, 56 s on a busy 2-core one)."""
    w = decode_workers()
    if w > 1 and len(files) >= DECODE_PARALLEL_MIN:
        return _decode_parallel(files, size, desc, w)
    return _decode_files(files, size, desc)


def _decode_parallel(files: list[str | Path], size: int | None, desc: str, workers: int) -> np.ndarray:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    step = max(256, -(-len(files) // (4 * workers)))
    chunks = [[str(f) for f in files[i : i + step]] for i in range(0, len(files), step)]
    # spawn: never fork a process that may hold torch's threads
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        parts = list(tqdm(ex.map(_decode_files, chunks, [size] * len(chunks), [None] * len(chunks)),
                          total=len(chunks), desc=f"{desc} ({workers} processes)", leave=False, mininterval=2))
    for part, chunk in zip(parts[1:], chunks[1:]):
        if part.shape[1:] != parts[0].shape[1:]:
            raise DataError(_size_message(chunks[0][0], parts[0].shape[1:], chunk[0], part.shape[1:]))
    return np.concatenate(parts)


def _decode_files(files: list[str | Path], size: int | None, desc: str | None) -> np.ndarray:
    from PIL import Image
    from tqdm.auto import tqdm

    out, first = None, None
    for i, f in enumerate(tqdm(files, desc=desc, leave=False, mininterval=2, disable=desc is None)):
        try:
            with Image.open(f) as src:
                im = _to_rgb8(src, f)
        except DataError:
            raise
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError (truncated), ValueError, SyntaxError...
            raise DataError(f"{f} cannot be read as an image ({type(e).__name__}): replace or remove it") from None
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        if out is None:
            out, first = np.empty((len(files),) + a.shape, np.uint8), f
        if a.shape != out.shape[1:]:
            raise DataError(_size_message(first, out.shape[1:], f, a.shape))
        out[i] = a
    return out if out is not None else np.empty((0, 1, 1, 3), np.uint8)


def _to_rgb8(src, f) -> "PIL.Image.Image":  # noqa: F821 (PIL is imported inside: it is slow to import)
    """An 8-bit RGB copy of an opened image. 16-bit greyscale (PNG's I;16 or I) is scaled by 255/65535, where
    PIL's convert("RGB") clips every value above 255 to white; other modes of more than 8 bits are refused."""
    from PIL import Image

    if src.mode.startswith("I;16") or (src.mode == "I" and src.format == "PNG"):
        a = np.asarray(src).astype(np.int64)
        a = ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(np.stack([a] * 3, axis=-1), "RGB")
    if src.mode in ("I", "F") or src.mode.startswith(("I;", "F;")):
        raise DataError(f"{f} is a {src.mode} image (more than 8 bits a channel): convert it to 8-bit RGB or "
                        f"16-bit greyscale PNG")
    return src.convert("RGB")


def _size_message(f1, shape1, f2, shape2) -> str:
    return (f"images of different sizes ({f1} is {shape1[0]}x{shape1[1]}, {f2} is {shape2[0]}x{shape2[1]}): "
            f"resize them to one size first")


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write to a temporary file of this process and thread alone, then rename it into place (atomic), so that
    two processes building the same cache at once both succeed and a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _cached(kind: str, root: Path, split: str, files: list[str | Path], labels: list[int], classes: list[str], size: int | None,
            source: str = "") -> ImageArrays:
    """Decoded uint8 images of files, from data/cache/ when a cache with the same key exists (see `_cache_key`);
    the key is also stored inside the npz and compared on load. When it misses, a cache that records the same
    content (`_content_key`: the same images under new timestamps) gives the images instead of decoding them."""
    key = _cache_key(kind, root, split, files, labels, classes, size)
    path = _cache_path(kind, split, key)
    labels = np.asarray(labels, np.int64)
    classes = [str(c) for c in classes]
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    images, cached_labels = z["images"], z["labels"]
                    if len(images) == len(files) and np.array_equal(cached_labels, labels):
                        return ImageArrays(images, labels, classes, files, source)
        except Exception:  # a damaged or foreign cache is rebuilt; it is ours, not the user's
            pass
    ckey = _content_key(kind, root, split, files, labels, classes, size)
    imgs = _by_content(kind, split, ckey, len(files), labels)
    if imgs is None:
        imgs = _decode(files, size, f"decoding {kind} {split}")
    _write_npz(path, images=imgs, labels=labels, classes=np.asarray(classes), key=np.asarray(key),
               content_key=np.asarray(ckey))
    return ImageArrays(imgs, labels, classes, files, source)


IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _class_files(base: str) -> list[str]:
    """The image files of one class folder, in its sub-folders too, in torchvision ImageFolder's order (folders
    walked in sorted order, names sorted in each; symbolic links followed): a flat folder gives its sorted names,
    as before sub-folders were read. A folder is read once: a link back to a folder already walked (`loop -> .`,
    a cycle) or a second link to one is skipped, where os.walk(followlinks=True) would list every image again on
    each turn of the cycle until the path grows too long."""
    out, seen = [], set()
    for folder, dirs, names in os.walk(base, followlinks=True):
        try:
            st = os.stat(folder)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []  # walked already: neither its images nor its sub-folders again
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        out.append((folder, [os.path.join(folder, n) for n in sorted(names) if os.path.splitext(n)[1].lower() in IMG_EXT]))
    return [f for _, files in sorted(out) for f in files]


def load_imagefolder(root: Path, split: str, size: int | None = None) -> ImageArrays:
    """ROOT/<split>/<class>/** with classes in sorted order (torchvision's ImageFolder convention, images in
    nested sub-folders of a class included). Every class folder must hold at least one image (a class without
    images can be neither trained nor scored)."""
    d = Path(root) / split
    if not d.is_dir():
        raise DataError(f"no folder {d}: expected {root}/{split}/<class>/<image files>")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    files, labels = [], []
    for c, name in enumerate(classes):
        # path strings sorted by name: the order of sorted Paths on POSIX, without building and comparing 50,000
        # Path objects (several seconds of a cached CIFAR-10 load on a busy 2-core machine)
        fs = _class_files(os.path.join(str(d), name))
        files += fs
        labels += [c] * len(fs)
    if not files:
        raise DataError(f"no images under {d}/<class>/: expected {root}/{split}/<class>/<image files> ({', '.join(IMG_EXT)})")
    present = set(labels)
    empty = [name for c, name in enumerate(classes) if c not in present]
    if empty:
        raise DataError(f"class folder {d / empty[0]} holds no images ({', '.join(IMG_EXT)})"
                        + (f", nor do {len(empty) - 1} other class folders" if len(empty) > 1 else "")
                        + ": add images or remove the folder")
    return _cached("imagefolder", Path(root), split, files, labels, classes, size, source=str(d))


def load_tinyimagenet(root: Path, split: str) -> ImageArrays:
    """The official Tiny-ImageNet-200 layout; its labelled val set serves as the test set.

    Class i is the i-th wnid in sorted order (the ImageFolder convention), not line i of wnids.txt: the official
    wnids.txt is not sorted, and two copies whose wnids.txt lines differ in order would otherwise give other
    class indices, hence other major/minor classes and another benchmark."""
    root = Path(root)
    if not (root / "wnids.txt").is_file():
        raise DataError(f"no Tiny-ImageNet-200 at {root}: expected {root}/wnids.txt, train/<wnid>/images, val/val_annotations.txt")
    wnids = sorted({w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()})
    index = {w: i for i, w in enumerate(wnids)}
    files, labels = [], []
    if split == "train":
        for w in wnids:
            fs = sorted((root / "train" / w / "images").glob("*.JPEG"))
            files += fs
            labels += [index[w]] * len(fs)
        source = str(root / "train")
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataError(f"no {ann}: expected the official Tiny-ImageNet-200 val/ folder (val/images/, val/val_annotations.txt)")
        for n, line in enumerate(ann.read_text().splitlines(), 1):
            parts = line.split("\t")
            if len(parts) >= 2:
                if parts[1] not in index:
                    raise DataError(f"{ann} line {n}: class {parts[1]} is not in {root / 'wnids.txt'}: add it there or remove the line")
                files.append(root / "val" / "images" / parts[0])
                labels.append(index[parts[1]])
        source = str(ann)
    if not files:
        raise DataError(f"no images in the Tiny-ImageNet-200 {split} split at {root}: expected train/<wnid>/images/*.JPEG, "
                        f"val/images/ and val/val_annotations.txt")
    return _cached("tinyimagenet", root, split, files, labels, wnids, 64, source=source)


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
            raise DataError(f"no {dataset} at {root}: put torchvision's pickles or an ImageFolder tree "
                            f"({root}/train/<class>/*) there") from None
        try:
            ds = cls(str(root), train=split == "train", download=True)
        except Exception as e:  # no internet
            raise DataError(
                f"no {dataset} at {root} and the download failed ({type(e).__name__}): put torchvision's pickles or an "
                f"ImageFolder tree ({root}/train/<class>/*, {root}/test/<class>/*) there"
            ) from None
    return ImageArrays(np.asarray(ds.data, np.uint8), np.asarray(ds.targets, np.int64), list(ds.classes), source=str(root))


def _check_folder(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder: pass the folder that holds the dataset")
    if not root.exists():
        raise DataError(f"data root {root} does not exist")


def load_split(dataset: str, root: str | Path | None, split: str) -> ImageArrays:
    root = Path(root) if root else default_root(dataset)
    if root.exists() and not root.is_dir():
        _check_folder(root)  # a file: say so (a missing root is each loader's own message)
    if dataset in ("cifar10", "cifar100"):
        return load_cifar(dataset, root, split)
    if dataset == "tinyimagenet":
        return load_tinyimagenet(root, "train" if split == "train" else "val")
    if dataset == "imagefolder":
        _check_folder(root)
        return load_imagefolder(root, split)
    raise ConfigError(f"unknown dataset {dataset!r}")


def check_root(dataset: str, root: str | Path | None) -> None:
    """Fail early (before any training) when a given data root does not exist or is a file."""
    if root is not None:
        _check_folder(Path(root))
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
    val_x: np.ndarray | None = None  # the validation split (cfg.val_per_class), None without one
    val_y: np.ndarray | None = None


def portable_root(root: str | Path | None) -> str:
    """The data root as a result records it, without the training machine's paths (results are committed and
    shared): "default" for the default location, a root inside the repository relative to it, a relative
    root as given, and "external" for an absolute path elsewhere (the data id says what the data were)."""
    if not root:
        return "default"
    p = Path(root)
    if not p.is_absolute():
        return p.as_posix()
    repo = Path(__file__).resolve().parents[2]
    try:
        return Path(os.path.abspath(p)).relative_to(repo).as_posix()
    except ValueError:
        return "external"


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
    """The imbalanced training subset and the balanced test set a RunConfig asks for. Test labels are matched to
    the training classes by class NAME (not by sorted position): a test class that training lacks, or a
    training class without test images, is a DataError that names it. `data["root"]`: see `portable_root` (never a
    machine-specific path)."""
    tr = load_split(cfg.dataset, root, "train")
    te = load_split(cfg.dataset, root, "test")
    test_y = _test_labels_by_name(tr, te)
    if tr.images.shape[1:] != te.images.shape[1:] and len(tr.images) and len(te.images):
        f1 = tr.files[0] if tr.files else f"{tr.source} (train)"
        f2 = te.files[0] if te.files else f"{te.source} (test)"
        raise DataError(_size_message(f1, tr.images.shape[1:], f2, te.images.shape[1:]))
    s = spec(cfg.dataset)
    available = np.bincount(tr.labels, minlength=len(tr.classes))
    if cfg.dataset == "imagefolder":
        if len(tr.classes) < 2:  # one class: every prediction is right, a 0% error that means nothing
            raise DataError(f"{tr.source} holds {len(tr.classes)} class folder ({', '.join(tr.classes)}): a classifier "
                            f"needs at least 2 classes (imbalance {cfg.imbalance}); add class folders")
        size = tr.images.shape[1]
        s = DatasetSpec(len(tr.classes), int(available.max()), size, max(4, size // 8), s.mean, s.std)
    n_max = s.n_max if cfg.max_per_class is None else min(cfg.max_per_class, s.n_max)
    if cfg.imbalance == "none":
        counts = [int(min(a, n_max)) for a in available]
    else:
        counts = _benchmark_class_counts(s.num_classes, n_max, cfg.imbalance, cfg.ratio)
    if min(counts) < 1:
        raise ConfigError(f"impossible ratio {cfg.ratio:g} for n_max={n_max}: the smallest class would keep no image")
    short = [c for c, n in enumerate(counts) if c < len(available) and available[c] < n]
    if short:
        c = short[0]
        raise ConfigError(f"class {tr.classes[c]} (class {c}) of {tr.source} has {available[c]} training images, fewer than "
                          f"the {counts[c]} that {cfg.imbalance} imbalance asks for: add images or lower max_per_class")
    val_per_class = getattr(cfg, "val_per_class", None) or 0
    if val_per_class and cfg.imbalance == "none":
        raise ConfigError("val_per_class needs training images the subset leaves unused: with imbalance none every "
                          "image up to n_max trains; use a separate validation folder instead")
    idx, vidx = subset_and_validation(tr.labels, counts, cfg.subset_seed, val_per_class)
    b = Benchmark(tr.images[idx], tr.labels[idx], te.images, test_y, counts, tr.classes, s)
    arrays = [b.train_x, b.train_y, b.test_x, b.test_y]
    if val_per_class:  # the run's data id covers the validation images too (they decide its validation numbers)
        b.val_x, b.val_y = tr.images[vidx], tr.labels[vidx]
        arrays += [b.val_x, b.val_y]
    b.data = {"id": content_id(*arrays, classes=b.classes), "root": portable_root(root)}
    if val_per_class:  # val_id names the validation images alone
        b.data["val_id"] = content_id(b.val_x, b.val_y, classes=b.classes)
    return b


def _test_labels_by_name(tr: ImageArrays, te: ImageArrays) -> np.ndarray:
    """te.labels renumbered so that each test image has the index of the training class of the same name."""
    train_classes = set(tr.classes)
    extra = [c for c in te.classes if c not in train_classes]
    if extra:
        raise DataError(f"test class {extra[0]} (in {te.source}) is not a training class of {tr.source}"
                        + (f", nor are {len(extra) - 1} other test classes" if len(extra) > 1 else "")
                        + ": rename or remove it so that test classes are training classes")
    present = {te.classes[y] for y in np.unique(te.labels)}
    missing = [c for c in tr.classes if c not in present]
    if missing:
        raise DataError(f"training class {missing[0]} (in {tr.source}) has no test images in {te.source}"
                        + (f", nor do {len(missing) - 1} other training classes" if len(missing) > 1 else "")
                        + ": add its test images or remove the class from training")
    if te.classes == tr.classes:
        return te.labels
    to_train = np.asarray([tr.classes.index(c) for c in te.classes], np.int64)
    return to_train[te.labels]
