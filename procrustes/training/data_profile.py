"""How lossy a JPEG copy of a dataset is: `python -m procrustes.training.data_profile data/cifar10`.

Our CIFAR-10 is a JPEG copy (the original pickles cannot be had here), so part of any gap to published numbers
may come from the pixels. This measures what the files are, from their headers alone: the IJG quality their
quantisation tables were scaled from, their chroma subsampling, their bytes per image against the raw pixels.
It writes results/data_profile/<name>.json with its provenance, which notebook 05 cites beside the fidelity rows.
It measures the copy, not what the compression costs in accuracy: that needs the lossless originals."""
from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import io
import json
import sys
from pathlib import Path

from .store import REPO, atomic_write_json, git_commit, results_dir, set_aside

# The example tables of the JPEG standard (ITU-T T.81, Annex K, Tables K.1 and K.2) in natural (row-major) order:
# libjpeg (IJG) scales them by its quality setting, and most encoders (PIL, OpenCV, ImageMagick) use them.
IJG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
            14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
            49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
IJG_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
              47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32
SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}  # PIL's JpegImagePlugin.get_sampling codes
JPEG_EXT = (".jpg", ".jpeg")
OUT_DIR = "data_profile"  # under the result store


class ProfileError(ValueError):
    """Bad input: printed as one line."""


def ijg_table(base: tuple[int, ...], quality: int) -> tuple[int, ...]:
    """libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (baseline: clipped to 1..255)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return tuple(min(255, max(1, (v * scale + 50) // 100)) for v in base)


def ijg_quality(tables: dict[int, list[int]]) -> int | None:
    """The lowest IJG quality (1-100) whose scaled standard tables are these (luma, and chroma when present);
    None for tables that no quality gives (a custom encoder)."""
    luma = tuple(tables.get(0, ()))
    chroma = tuple(tables[1]) if 1 in tables else None
    for q, (lt, ct) in enumerate(_IJG_TABLES, start=1):
        if lt == luma and (chroma is None or ct == chroma):
            return q
    return None


_IJG_TABLES = [(ijg_table(IJG_LUMA, q), ijg_table(IJG_CHROMA, q)) for q in range(1, 101)]  # computed once


def jpeg_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in JPEG_EXT and p.is_file() and not p.is_symlink())


def _digest(digest, root: Path, f: Path, data: bytes) -> None:
    """Feed one file (relative path, length, bytes) into the running sha256 of files_sha256."""
    digest.update(f.relative_to(root).as_posix().encode() + b"\0" + len(data).to_bytes(8, "little") + data)


def files_sha256(root: Path, files: list[Path] | None = None) -> str:
    """sha256 over the relative path, length and bytes of each JPEG under root, in sorted order: which files a
    profile describes."""
    digest = hashlib.sha256()
    for f in jpeg_files(root) if files is None else files:
        _digest(digest, root, f, f.read_bytes())
    return digest.hexdigest()


def header(f: Path, data: bytes | None = None) -> tuple[str, str, str, int]:
    """(IJG quality or "custom tables", chroma subsampling, "WxH", raw pixel bytes) of one JPEG, from its header
    (read from `data`, f's bytes, when given)."""
    from PIL import Image, JpegImagePlugin

    try:
        with Image.open(f if data is None else io.BytesIO(data)) as im:
            q = ijg_quality(im.quantization)
            bands = len(im.getbands())
            s = JpegImagePlugin.get_sampling(im) if bands == 3 else -1
            w, h = im.size
    except Exception as e:  # noqa: BLE001 (any unreadable file is named, then the whole profile stops)
        raise ProfileError(f"unreadable JPEG {f}: {e}") from None
    sampling = SUBSAMPLING.get(s, "none (one channel)" if s == -1 else f"code {s}")
    return ("custom tables" if q is None else str(q)), sampling, f"{w}x{h}", w * h * bands


def measure(root: Path) -> dict:
    """The profile of every JPEG under root: counts by quality, subsampling, image size and split (the first
    folder under root), bytes per image, and files_sha256."""
    files = jpeg_files(root)
    if not files:
        raise ProfileError(f"no JPEG files (*.jpg, *.jpeg) under {root}")
    quality, sampling, size, split = (collections.Counter() for _ in range(4))
    total, raw = 0, 0
    digest = hashlib.sha256()
    for f in files:
        data = f.read_bytes()  # read once: the header and the sha256 both come from these bytes
        _digest(digest, root, f, data)
        q, s, wh, r = header(f, data)
        quality[q] += 1
        sampling[s] += 1
        size[wh] += 1
        rel = f.relative_to(root).as_posix()
        split[rel.split("/")[0] if "/" in rel else "."] += 1
        total += len(data)
        raw += r
    return {"files": len(files), "by_split": dict(sorted(split.items())), "ijg_quality": dict(quality.most_common()),
            "chroma_subsampling": dict(sampling.most_common()), "image_size": dict(size.most_common()),
            "mean_bytes": round(total / len(files), 1), "mean_raw_bytes": round(raw / len(files), 1),
            "files_sha256": digest.hexdigest()}


def profile(root: Path, name: str) -> dict:
    import PIL

    m = measure(root)
    try:
        shown = root.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = root.name
    return {"name": name, "root": shown, **m,
            "provenance": {"git_commit": git_commit(), "pillow": PIL.__version__,
                           "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           "command": f"python -m procrustes.training.data_profile {shown}"}}


def profile_path(name: str, results: Path | None = None) -> Path:
    return Path(results or results_dir()) / OUT_DIR / f"{name}.json"


def _read(path: Path) -> dict | None:
    """The JSON object at path; None when there is no file; ProfileError when it is not a profile."""
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"damaged data profile {path}: {e}") from None
    if not isinstance(obj, dict) or not {"files", "ijg_quality", "chroma_subsampling", "files_sha256"} <= set(obj):
        raise ProfileError(f"damaged data profile {path}: not a profile written by this module")
    return obj


def read_profile(name: str, results: Path | None = None) -> dict | None:
    """The stored profile of `name`, or None when there is none (ProfileError when it is damaged)."""
    return _read(profile_path(name, results))


def write(new: dict, path: Path) -> str:
    """Store new at path. The same measurement already there is kept as it is (so its provenance and the git tree
    stay); a profile of other files is never replaced (ProfileError)."""
    try:
        old = _read(path)
    except ProfileError as e:
        moved = set_aside(path)
        print(f"{e}; set aside as {moved}", file=sys.stderr)
        old = None
    if old is not None:
        if old.get("files_sha256") != new["files_sha256"]:
            raise ProfileError(f"{path} profiles other files (sha256 {str(old.get('files_sha256'))[:12]}, these "
                               f"{new['files_sha256'][:12]}): move it aside first, it is never replaced")
        if {k: v for k, v in old.items() if k != "provenance"} == {k: v for k, v in new.items() if k != "provenance"}:
            return f"{path}: unchanged (the same files, the same measurement)"
    atomic_write_json(path, new)
    return f"{path}: {describe(new)}"


SUBSAMPLING_MEANS = {"4:2:0": "colour at half the resolution in each axis", "4:2:2": "colour at half the horizontal "
                     "resolution", "4:4:4": "colour at full resolution"}


def describe(p: dict) -> str:
    """One sentence a reader can check against the file: quality, subsampling and size of the copy."""
    n = p["files"]

    def counted(d: dict, say) -> str:
        if len(d) == 1:
            return f"all {say(next(iter(d)))}"
        return ", ".join(f"{c:,} {say(k)}" for k, c in d.items())

    q = counted(p["ijg_quality"], lambda k: f"at IJG quality {k}" if k.isdigit() else f"with {k}")
    s = counted(p["chroma_subsampling"], lambda k: f"{k}" + (f" ({SUBSAMPLING_MEANS[k]})" if k in SUBSAMPLING_MEANS else ""))
    return (f"{n:,} JPEG files, {q}; chroma subsampling: {s}; {p['mean_bytes']:,.0f} bytes an image on average "
            f"against {p['mean_raw_bytes']:,.0f} bytes of raw pixels")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m procrustes.training.data_profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", help="the dataset folder, e.g. data/cifar10")
    ap.add_argument("--name", help="the profile's name; default the folder's name")
    ap.add_argument("--results", help="the result store; default results/ (or $PROCRUSTES_RESULTS)")
    a = ap.parse_args(argv)
    root = Path(a.root)
    try:
        if not root.is_dir():
            raise ProfileError(f"no folder {root}")
        name = a.name or root.resolve().name
        print(write(profile(root, name), profile_path(name, Path(a.results) if a.results else None)))
    except ProfileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
