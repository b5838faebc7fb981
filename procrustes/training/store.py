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

REPO = Path(__file__).resolve().parents[2]


def check_writable(root: Path | None) -> None:
    """ConfigError (one line, before any data is loaded) when the result store cannot be written: a file where
    its folder should be, or a read-only folder."""
    from .config import ConfigError

    path = Path(root or results_dir())
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"results {path}: {probe} is a file, not a folder; pass a folder to --results")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"results folder {probe} is not writable: pass another folder to --results")


def results_dir() -> Path:
    """$PROCRUSTES_RESULTS, else the repository's results/ folder."""
    env = os.environ.get("PROCRUSTES_RESULTS")
    return Path(env) if env else REPO / "results"


def run_key(cfg: RunConfig, data_id: str) -> str:
    """The name of a run's folder: the config's hash and the first 8 hex of the data's content id, so that
    the same config trained on other data (another data root, other pixels) is another run, never a cache hit."""
    return f"{cfg.key()}-{data_id[:8]}"


def run_dirs(cfg: RunConfig, root: Path | None = None) -> list[Path]:
    """Every stored folder of cfg, whatever its data, in sorted order."""
    base = Path(root or results_dir()) / cfg.profile
    return sorted(p for p in base.glob(f"{cfg.key()}-*") if p.is_dir()) if base.is_dir() else []


def run_dir(cfg: RunConfig, root: Path | None = None, data_id: str | None = None) -> Path:
    """The folder of cfg trained on the data `data_id`; without data_id, the one folder stored for cfg
    (LookupError when there is none, or several on different data)."""
    if data_id is not None:
        return Path(root or results_dir()) / cfg.profile / run_key(cfg, data_id)
    dirs = run_dirs(cfg, root)
    if len(dirs) != 1:
        raise LookupError(f"{len(dirs)} stored folders for {cfg.label()} [{cfg.key()}]: pass data_id")
    return dirs[0]


class StoreError(RuntimeError):
    """The result store cannot be written (disk full, read-only folder, a file where a folder should be): the
    CLI prints it as one line; the temporary file of the failed write is already gone."""


def _write_error(path: Path, e: OSError) -> StoreError:
    return StoreError(f"cannot write {path}: {e.strerror or e}")


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers never see half a file. A failed
    write (disk full, no permission) removes its temporary file (a full disk stays usable) and raises StoreError.
    fsync=False: a killed process still never leaves half a file, only a crash of the machine may (the GPU
    harvest's temporary store)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


def torch_bytes(obj) -> bytes:
    """torch.save's bytes of obj (in memory: a write error is then an OSError of our own write, not torch's)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(path: Path, obj, fsync: bool = True) -> None:
    """torch.save through a temporary file, fsync (see atomic_write_bytes) and rename: a kill never leaves half a
    checkpoint."""
    atomic_write_bytes(path, torch_bytes(obj), fsync=fsync)


def torch_load(path: Path, device="cpu"):
    """A stored .pt read with weights_only=True: tensors, dicts, lists and plain numbers and strings, never an
    arbitrary pickle. Results folders travel through git and harvest archives, and a pickle payload in a
    checkpoint would run code when it is read (even by `reproduce --list`)."""
    import torch

    return torch.load(path, map_location=device, weights_only=True)


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def set_aside_if_replaced(path: Path, new: bytes) -> Path | None:
    """Before `new` replaces the file at `path`, keep the file aside when it holds anything else (damaged,
    edited, another run's): nothing a user produced is lost. None when there was nothing to keep."""
    if not path.exists():
        return None
    try:
        if path.read_bytes() == new:
            return None
    except OSError:
        pass
    return set_aside(path, "damaged" if _damaged_json(path) else "replaced")


def _damaged_json(path: Path) -> bool:
    """A .json file that does not parse or holds no finished result (for the name a set-aside copy gets)."""
    if path.suffix != ".json":
        return False
    try:
        return not isinstance(json.loads(path.read_text()), dict)
    except Exception:
        return True


def replace_file(path: Path, data: bytes) -> None:
    """Atomically write data at path, first setting aside whatever different file was there."""
    set_aside_if_replaced(path, data)
    atomic_write_bytes(path, data)


def write_config(out: Path, cfg: RunConfig) -> None:
    """A run folder's config.json (a different one there, e.g. edited, is set aside first)."""
    replace_file(out / "config.json", (json.dumps(cfg.to_dict(), indent=1, sort_keys=False) + "\n").encode())


def save_finished(out: Path, state_dict, result: dict) -> None:
    """Store a finished run: model.pt first (its sha256 recorded in the result as `model_sha256`), then
    result.json, each atomically, each different file they replace set aside first. A kill in between leaves
    the last checkpoint, from which a rerun writes both."""
    weights = torch_bytes(state_dict)
    import hashlib

    result["model_sha256"] = hashlib.sha256(weights).hexdigest()
    replace_file(out / "model.pt", weights)
    replace_file(out / "result.json", (json.dumps(result, indent=1, sort_keys=False) + "\n").encode())


def load_checkpoint(path: Path, device) -> dict | None:
    """A checkpoint to resume from, or None. One that cannot be read (truncated, garbage) is reported in one
    line naming the file, set aside, and the run restarts from scratch instead of failing on every rerun. One
    that holds anything but tensors and plain values (a pickle payload) is refused unread in the same way."""
    import pickle

    if not path.exists():
        return None
    try:
        ck = torch_load(path, device)
        if not isinstance(ck, dict) or "model" not in ck or "epoch" not in ck:
            raise ValueError("not a checkpoint of this trainer")
        return ck
    except Exception as e:  # torch raises many types for a damaged file
        kept = set_aside(path)
        why = "refused: it holds objects other than tensors and plain values" if isinstance(e, pickle.UnpicklingError) \
            else type(e).__name__
        warnings.warn(f"damaged checkpoint {path} ({why}) set aside as {kept.name}; the run restarts",
                      DamagedResult, stacklevel=2)
        return None


def checkpoint_epoch(cfg: RunConfig, root: Path | None = None) -> int | None:
    """How many epochs an interrupted run of cfg has checkpointed (the furthest of its folders, on any data), or
    None. Read only, for listings: an unreadable checkpoint is skipped here; the trainer sets it aside when the
    run starts (a pickle payload is never run: see torch_load)."""
    best = None
    for d in run_dirs(cfg, root):
        path = d / "checkpoint.pt"
        if not path.exists():
            continue
        try:
            ep = int(torch_load(path)["epoch"])
        except Exception:  # damaged or foreign: the trainer reports it when it resumes
            continue
        best = ep if best is None else max(best, ep)
    return best


class DamagedResult(UserWarning):
    pass


def _read(path: Path, cfg: RunConfig, data_id: str | None) -> dict:
    """A finished result of cfg at path, or ValueError/OSError saying why not."""
    res = json.loads(path.read_text())
    if not isinstance(res, dict) or "summary" not in res:
        raise ValueError("it does not hold a finished result")
    if res.get("config") != json.loads(json.dumps(cfg.to_dict())):
        raise ValueError("it holds a result of another configuration")
    rid = (res.get("data") or {}).get("id", "")
    if res.get("key") != path.parent.name or not path.parent.name.endswith(f"-{rid[:8]}") or not rid:
        raise ValueError("its key does not match its folder and data")
    if data_id is not None and rid != data_id:
        raise ValueError("it was trained on other data")
    _check_model(path.parent / "model.pt", res.get("model_sha256"))
    return res


def _check_model(path: Path, sha: str | None) -> None:
    """ValueError when model.pt is present but is not the file the result recorded. A result without the hash
    (stored before it was recorded) or without model.pt (git-ignored: a fresh clone) passes."""
    if sha is not None and path.exists() and sha256_file(path) != sha:
        raise ValueError("its model.pt is not the one it recorded (sha256 differs)")


def read_result(cfg: RunConfig, root: Path | None = None, data_id: str | None = None) -> dict | None:
    """The finished result of cfg (on the data `data_id` when given, else on whatever data it was stored
    with), or None when there is none; a damaged file is skipped with a DamagedResult warning. The store's
    corrections file (`corrections.py`) is applied to what is returned, never to the file."""
    dirs = [run_dir(cfg, root, data_id)] if data_id is not None else run_dirs(cfg, root)
    found = []
    for d in dirs:
        path = d / "result.json"
        if not path.exists():
            continue
        try:
            found.append(_read(path, cfg, data_id))
        except (ValueError, OSError) as e:
            warnings.warn(f"damaged results file {path} skipped ({str(e)[:80]})", DamagedResult, stacklevel=2)
    if len(found) > 1:
        warnings.warn(f"{cfg.label()}: {len(found)} results on different data ({', '.join(r['key'] for r in found)}); "
                      f"using {found[0]['key']}", stacklevel=2)
    from . import corrections

    return corrections.apply(found[0], Path(root or results_dir())) if found else None


def set_aside(path: Path, tag: str = "damaged") -> Path | None:
    """Keep a file the store cannot use under a new, never-reused name beside it (never overwrite, never
    delete: it may be the only copy of something a user made); None when there is no such file. A folder where
    the file should be is not moved: StoreError (one line) saying so."""
    if not path.exists():
        return None
    if path.is_dir():
        raise _not_a_file(path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    for i in range(1000):
        kept = path.with_name(f"{path.stem}.{tag}-{stamp}-{os.getpid()}{f'-{i}' if i else ''}{path.suffix}")
        try:
            os.link(path, kept)  # fails if `kept` exists: no set-aside ever replaces another
        except FileExistsError:
            continue
        except OSError as e:
            raise StoreError(f"cannot set {path} aside as {kept.name}: {e.strerror or e}") from None
        os.unlink(path)
        return kept
    raise StoreError(f"could not set {path} aside")


# the files of a run folder the trainer reads and writes
RUN_FILES = ("checkpoint.pt", "result.json", "model.pt", "config.json")


def _not_a_file(path: Path) -> StoreError:
    return StoreError(f"{path} is a folder, not a file: the run keeps its {path.name} there; move the folder away "
                      f"and rerun")


def check_run_files(out: Path) -> None:
    """StoreError (one line, before any training) when a file the run reads or writes (RUN_FILES) is a folder or
    anything but a plain file: found at the end, it would cost the whole training."""
    for name in RUN_FILES:
        path = out / name
        if path.exists() and not path.is_file():
            raise _not_a_file(path) if path.is_dir() else StoreError(f"{path} is not a plain file: move it away and rerun")


class RunLocked(StoreError):
    """Another process is training the same run (same key, same data) now."""


LOCK_NAME = ".train.lock"  # in the run folder: flock'ed by the process training the run, holds its pid


def lock_run(out: Path, label: str):
    """The open lock file of the run folder `out`, locked (fcntl.flock, exclusive) for as long as it stays open:
    close it when the training ends (the kernel releases it when the process dies, however it dies). RunLocked
    (one line naming the run and the holder's pid) when another process holds it: one training of a key at a time,
    never two writing the same checkpoint and result."""
    import fcntl

    path = out / LOCK_NAME
    try:
        out.mkdir(parents=True, exist_ok=True)
        f = open(path, "a+")
    except IsADirectoryError:
        raise _not_a_file(path) from None
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunLocked(f"{label} [{out.name}] is being trained by process {holder} now (lock {path}): wait for it to "
                        f"finish, or stop it, then rerun") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def set_aside_damaged(path: Path) -> Path | None:
    """Before a retrain writes a fresh result.json at `path`, keep an unreadable one aside."""
    if not path.exists():
        return None
    try:
        json.loads(path.read_text())["summary"]
        return None
    except Exception:
        return set_aside(path)


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete our own temporary files (.NAME.PID.tmp) left by a killed process (its pid no longer runs)."""
    gone = []
    for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


# Tracked files whose changes are data, not code: the result store, where parked checkpoints of unfinished runs
# (`make park`) are rewritten by every epoch of the run that resumes them
DATA_PATHS = ("results",)


def tree_is_dirty(repo: Path) -> bool:
    """Whether tracked files outside DATA_PATHS differ from HEAD in repo: the code a run used is not HEAD's."""
    exclude = [f":(exclude){d}" for d in DATA_PATHS]
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *exclude], cwd=repo,
                         capture_output=True, text=True, timeout=10)
    return bool(out.stdout.strip())


def git_commit() -> str:
    """HEAD of the repository this package lives in, with '+dirty' when tracked files outside the result store
    were modified (a parked checkpoint being trained on is data, not a change of code). Where there is no git
    repository (a copied tree, as on a lent GPU machine): recorded_commit(), else "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        if head:
            return head + ("+dirty" if tree_is_dirty(REPO) else "")
    except Exception:
        pass
    return recorded_commit() or "unknown"


COMMIT_FILE = ".procrustes-commit"  # written by `make gpu-prepare` before the tree is copied to a lent machine


def recorded_commit() -> str | None:
    """The commit recorded for a tree without git: $PROCRUSTES_COMMIT, else the first line of REPO/.procrustes-commit
    (`make gpu-prepare` writes it); None when neither holds a commit (40 hex, optionally '+dirty')."""
    import re

    text = os.environ.get("PROCRUSTES_COMMIT")
    if not text:
        try:
            text = (REPO / COMMIT_FILE).read_text().splitlines()[0]
        except (OSError, IndexError):
            return None
    text = text.strip()
    return text if re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", text) else None


def cpu_has_bf16() -> bool:
    """Native bf16 matrix units (AMX or AVX512-BF16): there bf16 autocast is faster than fp32 (about 2x with AMX),
    and fp32 runs are faster too, so the device name says it (wall times are compared between machines)."""
    import torch

    f = [getattr(torch.cpu, n, None) for n in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(fn() for fn in f if fn is not None)


def device_name(device) -> str:
    """The GPU's name, or the CPU's model name with the torch threads and whether it has native bf16."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"{cpu_model_name()} ({torch.get_num_threads()} threads{', native bf16' if cpu_has_bf16() else ''})"


def cpu_model_name() -> str:
    """The CPU's model name (/proc/cpuinfo), or what platform knows where there is none."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def provenance(device, started: str, wall_s: float, images_per_s: float, precision: str, commits: list[str],
               compile_mode: str | None = None, eval_batch: int | None = None, eval_s: float | None = None,
               compile_log: list | None = None, segments: list | None = None) -> dict:
    """Where a result came from. commits: the git commit(s) whose code trained it (train.CODE_COMMIT of the process of each (re)start);
    compile_mode: torch.compile's mode for its model, None when it trained eager (the last (re)start's setting);
    eval_batch: images a forward pass of its evaluations (speed only; None where not recorded);
    eval_s: seconds of wall_s spent evaluating (None where not recorded, or a resumed checkpoint predates it);
    compile_log: train.CompileWatch's record of each (re)start (frames compiled, recompile-limit hits, fall-back):
    `compiled` is true only when every recorded segment trained compiled without falling back to eager (without
    a log, as before it was recorded: when a compile mode was set). segments: train.segment() of each (re)start;
    `device_names` lists their machines in order (device_name is the machine that finished it)."""
    import torch

    return {
        "git_commit": ", ".join(commits),
        "git_commits": commits,
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": str(device),
        "device_name": device_name(device),
        "precision": precision,
        "compiled": compile_mode is not None and (compile_log is None or all(
            r.get("mode") is not None and not r.get("fell_back") for r in compile_log)),
        "compile_mode": compile_mode,
        **({"compile_evidence": compile_log, "code_path": code_path_of(compile_log)} if compile_log else {}),
        **({"segments": segments, "device_names": list(dict.fromkeys(s["device_name"] for s in segments))}
           if segments else {}),
        "eval_batch": eval_batch,
        **({"eval_s": round(eval_s, 2)} if eval_s is not None and eval_s == eval_s else {}),
        "started_utc": started,
        "finished_utc": now_utc(),
        "wall_s": round(wall_s, 2),
        "train_images_per_s": round(images_per_s, 1),
        "host": platform.node(),
    }


def code_path_of(compile_log: list) -> str:
    """The path a run trained on, from train.CompileWatch's records: "compiled" (every segment compiled, no
    fall-back), "eager" (no segment compiled a graph), else "partly compiled" (a fall-back after some graphs
    were compiled, or segments on both paths)."""
    compiled = [r.get("mode") is not None and r.get("frames_compiled", 0) > 0 for r in compile_log]
    if all(compiled) and not any(r.get("fell_back") for r in compile_log):
        return "compiled"
    return "partly compiled" if any(compiled) else "eager"


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def collect(configs: list[RunConfig], root: Path | None = None) -> tuple[list[dict], list[RunConfig]]:
    """(finished results, configs still missing) for a list of runs, whatever data each was stored with (its
    result records the data's content id); damaged files count as missing."""
    done, missing = [], []
    for c in configs:
        r = read_result(c, root)
        (done.append(r) if r is not None else missing.append(c))
    return done, missing
