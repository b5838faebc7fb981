"""The result store: results/<profile>/<config hash>/result.json, written atomically with its provenance.

A finished run is read back instead of retrained; a damaged result file is reported and kept aside, never
overwritten; a checkpoint beside it lets an interrupted run resume."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

from .config import RunConfig

REPO = Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """$PROCRUSTES_RESULTS, else the repository's results/ folder."""
    env = os.environ.get("PROCRUSTES_RESULTS")
    return Path(env) if env else REPO / "results"


def run_dir(cfg: RunConfig, root: Path | None = None) -> Path:
    return Path(root or results_dir()) / cfg.profile / cfg.key()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def atomic_torch_save(path: Path, obj) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class DamagedResult(UserWarning):
    pass


def read_result(cfg: RunConfig, root: Path | None = None) -> dict | None:
    """The finished result of cfg, or None when there is none or the file is damaged (then a warning)."""
    path = run_dir(cfg, root) / "result.json"
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_text())
        if not isinstance(res, dict) or res.get("key") != cfg.key() or "summary" not in res:
            raise ValueError("it does not hold a finished result of this configuration")
        return res
    except (ValueError, OSError) as e:
        warnings.warn(f"damaged results file {path} skipped ({str(e)[:80]})", DamagedResult, stacklevel=2)
        return None


def set_aside_damaged(cfg: RunConfig, root: Path | None = None) -> Path | None:
    """Before a retrain writes a fresh result, keep the damaged file under a new name (never overwrite it)."""
    path = run_dir(cfg, root) / "result.json"
    if path.exists() and read_result_quiet(cfg, root) is None:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        kept = path.with_name(f"result.damaged-{stamp}.json")
        os.replace(path, kept)
        return kept
    return None


def read_result_quiet(cfg: RunConfig, root: Path | None = None) -> dict | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedResult)
        return read_result(cfg, root)


def git_commit() -> str:
    """HEAD of the repository this package lives in, with '+dirty' when tracked files were modified."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        return (head or "unknown") + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def device_name(device) -> str:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({torch.get_num_threads()} threads)"


def provenance(device, started: str, wall_s: float, images_per_s: float, precision: str, commits: list[str]) -> dict:
    """Where a result came from. commits: the git commit(s) whose code trained it (read at each (re)start)."""
    import torch

    return {
        "git_commit": ", ".join(commits),
        "git_commits": commits,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "started_utc": started,
        "finished_utc": now_utc(),
        "wall_s": round(wall_s, 2),
        "train_images_per_s": round(images_per_s, 1),
        "host": platform.node(),
    }


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def collect(configs: list[RunConfig], root: Path | None = None) -> tuple[list[dict], list[RunConfig]]:
    """(finished results, configs still missing) for a list of runs; damaged files count as missing."""
    done, missing = [], []
    for c in configs:
        r = read_result(c, root)
        (done.append(r) if r is not None else missing.append(c))
    return done, missing
