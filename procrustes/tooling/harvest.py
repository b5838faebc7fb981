"""Harvest: turn every minute of a short GPU lease into committed results: train the most valuable missing
paper-profile runs, bring back an archive of results and a file of the unfinished runs' checkpoints, import the
one into the committed store and give the other to the next lease.

Why: a lent GPU gives about 15 minutes of device time, machine start included, 600 s a command, no internet, no
ssh; what comes back is what the command left in $OUT (8 files at most, 16 MiB each). So `python -m
procrustes.tooling.harvest run` (`make gpu-harvest`), in one command: loads CIFAR-10 (decoded in parallel), takes back
the checkpoints earlier leases carried (data/harvest-carry/*.tar, each checked before anything is written),
runs a GPU check (a few eager epochs of the first missing run through the whole trainer, seconds), measures the
training speed in fresh processes (eager, MFW, packed, evaluation; no compile probe while the runs train
eager), plans the runs in priority order (whole where they end in the window, else the most valuable ones to
the window's end, to be finished by a later lease), prints the plan with its expected finish times, and trains
them packed on the GPU. Its archive harvest-<profile>-<stamp>.tar.gz of result.json files (plus harvest.log and
harvest-summary.json) is in $OUT from the first seconds and rewritten atomically each time a run finishes; the
carry file harvest-carry-<profile>-<stamp>.tar of the unfinished runs' checkpoints is rewritten as they move on;
near the deadline the runs are asked to checkpoint at the end of their epoch and stop. A kill at any moment
leaves the last complete archive, carry file and the console log (scripts/gpu_harvest.sh tees it into $OUT).
`python -m procrustes.tooling.harvest import FILE` (`make harvest-import FILE=...`) checks every entry completely before
writing any, writes all or none, and never replaces a stored result. Selection skips what the committed store
already holds, so the next harvest continues.

Imports only torch, numpy, PIL, tqdm and this package: the GPU machine's python has nothing else.
`--smoke` runs the same path on the CPU at smoke-profile size (tests; 90 s scaled by how busy the CPU is)."""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from ..training import store
from ..training.config import PROFILES, ConfigError, RunConfig, make_config, validate
from .result_check import HISTORY_KEYS, MAX_JSON_DEPTH, _int, _num, check_result, expected_key, json_depth, parse_json  # noqa: F401
from .speed import _die_with, bench_line, measure
from .tar_headers import check_tar

# the harvest's runs train eager: its estimates of what finishes in the window come from the eager rate it
# measures, and a compilation per run (tens of seconds, more in several packed processes at once) would eat a
# window of a few minutes. A longer lease can set PROCRUSTES_COMPILE=on (or auto) before `make gpu-harvest`.
HARVEST_COMPILE = "off"
# the compile mode its bench line times (`$HARVEST_COMPILE_MODE` overrides): "reduce-overhead" (CUDA graphs), the
# candidate for a launch-bound ResNet-32 on a large GPU that no GPU here has measured yet; compile="auto" keeps
# torch's default mode until this number says otherwise (procrustes.training.train.AUTO_COMPILE_MODE)
HARVEST_COMPILE_MODE = "reduce-overhead"
SAFETY = 1.15  # estimates are multiplied by this: a whole run planned for the window must end in it
PAPER_BUDGET_S = 540.0  # of a 600 s command: the rest for the machine's python start and slack
SMOKE_BUDGET_S = 90.0  # on an idle CPU; scaled by cpu_slowdown() and counted from the data's end
ARCHIVE_RESERVE_S = {"paper": 10.0, "smoke": 3.0}  # kept at the end of the budget to stop the runs, write the files
CHECKPOINT_EVERY_S = {"paper": 30.0, "smoke": 0.0}  # the runs' checkpoints (and one at a stop): $PROCRUSTES_CHECKPOINT_S
CARRY_EVERY_S = {"paper": 60.0, "smoke": 2.0}  # the carry file in $OUT is rewritten at most this often (and at the end)
CHECK_EPOCHS = {"paper": 2, "smoke": 1}  # the GPU check's run
CHECK_CAP_S = {"paper": 60.0, "smoke": 30.0}
# smoke runs, smaller still than the smoke profile (three epochs, tiny evaluations), so that a CPU shared with
# other work trains one within the smoke budget, and a run can be stopped and resumed between epochs;
# step-100 needs the profile's 100 images a major class (1 a minor one)
# ($HARVEST_SMOKE_EPOCHS sets the epochs: longer smoke runs that a short budget leaves unfinished)
SMOKE_OVERRIDES = {"epochs": int(os.environ.get("HARVEST_SMOKE_EPOCHS") or 3), "eval_per_class": 5,
                   "test_per_class": 10, "clean_per_class": 5}
SPARES_A_WORKER = 4  # runs queued after the plan, for workers that the estimates leave idle before the stop
LOG: list[str] = []


def say(msg: str) -> None:
    """Print and keep the line for harvest.log (the archive carries what the console showed)."""
    print(msg, flush=True)
    LOG.append(msg)


# ---------------------------------------------------------------- keys and checks (shared by run and import)


# what a harvest archive may hold: a real result.json is well under 1 MB (a paper-profile CIFAR-10 run, 200 epochs
# of per-class history, is about 0.3 MB; CIFAR-100 about 3 MB); each entry's size is read from its tar header and
# an entry above the cap is refused before a byte of it is decompressed
MAX_RESULT_BYTES = 4 << 20
MAX_MEMBERS = 20_000  # the whole paper grid is a few hundred runs


# ---------------------------------------------------------------- what to train, in order


def _in_profile(cfg: RunConfig, profile: str) -> RunConfig:
    """The same run (benchmark, method, seed, MFW choices) at another profile's size (smoke: SMOKE_OVERRIDES): the
    fields where cfg differs from its own profile's run of its benchmark, over `profile`'s values (so the paper
    profile's evaluation settings stay the paper profile's)."""
    base = make_config(cfg.profile, dataset=cfg.dataset)
    over = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)
            if f.name != "profile" and getattr(cfg, f.name) != getattr(base, f.name)}
    return make_config(profile, **{**over, **(SMOKE_OVERRIDES if profile == "smoke" else {})})


def priority_runs(profile: str = "paper") -> list[RunConfig]:
    """CIFAR-10 paper-profile runs, most valuable first (issue 7): (1) step-100 ERM and MFW; (2) exp-100 and
    step-100 x {ERM, LDAM-DRW, MFW, MFW+LDAM-DRW}; (3) the rest of the CIFAR-10 table, all seed 0; (4) the same
    for seed 1, then seed 2; (5) the ablations, seed by seed. Other profiles: the same runs at their size."""
    from ..results.experiments import ablation_runs, cifar_table_runs

    def cfg(imb: str, m: str, seed: int = 0, ratio: int = 100) -> RunConfig:
        return make_config("paper", dataset="cifar10", imbalance=imb, ratio=ratio, method=m, seed=seed)

    first = [cfg("step", "erm"), cfg("step", "mfw")]
    first += [cfg(i, m) for i in ("exp", "step") for m in ("erm", "ldam-drw", "mfw", "mfw+ldam-drw")]
    table = [c for c in cifar_table_runs("paper") if c.dataset == "cifar10"]
    seed0 = first + [c for c in table if c.seed == 0]
    later = [c.replace(seed=s) for s in (1, 2) for c in seed0]
    abl = sorted((c for _, c in ablation_runs("paper") if c.dataset == "cifar10"), key=lambda c: c.seed)
    seen, out = set(), []
    for c in seed0 + later + abl:
        c = _in_profile(c, profile)
        if c.key() not in seen:
            seen.add(c.key())
            out.append(c)
    return out


# ---------------------------------------------------------------- estimates and the plan


def images(cfg: RunConfig) -> tuple[int, int, float]:
    """(training images an epoch, evaluated images an epoch before the last (on average: the whole test set is
    evaluated every `full_test_every` epochs and at the final learning rate), evaluated images at the last epoch)."""
    from .speed import epoch_images

    n, evals = epoch_images(cfg)
    last = epoch_images(cfg.replace(epochs=1, warmup_epochs=0.0, lr_milestones=(1,), lr_factors=(1.0,), drw_epoch=0))[1]
    return n, (evals - last) / max(1, cfg.epochs - 1), last


def epoch_s(cfg: RunConfig, rates: dict, slow: float, last: bool = False) -> float:
    """Seconds of one epoch (training, then its evaluations), without SAFETY: train images / img/s + evaluated
    images / eval img/s, where img/s is the eager rate (MFW's for a mixing method) x slow (the per-run share
    when packed)."""
    n, ev, fin = images(cfg)
    train = (rates["mfw"] or rates["eager"]) if cfg.mixer else rates["eager"]
    r, e = train * slow, (rates["eval"] or 3 * rates["eager"]) * slow
    return n / r + (fin if last else ev) / e + 0.05


def estimate_s(cfg: RunConfig, rates: dict, slow: float, from_epoch: int = 0) -> float:
    """Seconds one run takes from its checkpoint at `from_epoch` (0: from scratch) to its end: set-up + its
    remaining epochs (epoch_s), times SAFETY."""
    left = cfg.epochs - from_epoch
    body = (left - 1) * epoch_s(cfg, rates, slow) + epoch_s(cfg, rates, slow, last=True) if left > 0 else 0.0
    return SAFETY * (rates["setup_s"] + body)


def plan_runs(missing: list[RunConfig], rates: dict, workers: int, slow: float, available_s: float,
              done: dict[str, int] | None = None, partial: bool = True) -> list[dict]:
    """Greedy list scheduling in priority order over `workers` slots (what a process pool does with a FIFO
    queue). A run is planned whole when it ends within available_s in the slot that frees first; otherwise, with
    `partial`, it is planned to train until the window ends (its checkpoint is carried to the next lease) when
    that gives it at least one epoch, and its slot is then full. done: epochs already checkpointed, by config
    key (a resumed run plans only its remaining epochs). Each entry: rank, cfg, from_epoch, to_epoch (expected),
    partial, est_s (seconds in this window), start_s, end_s, work_s (training seconds, set-up excluded)."""
    done = done or {}
    slots, plan = [0.0] * workers, []
    for rank, c in enumerate(missing):
        i = min(range(workers), key=slots.__getitem__)
        left = available_s - slots[i]
        frm = done.get(c.key(), 0)
        est = estimate_s(c, rates, slow, frm)
        if est <= left:
            plan.append({"rank": rank, "cfg": c, "from_epoch": frm, "to_epoch": c.epochs, "partial": False,
                         "est_s": est, "start_s": slots[i], "end_s": slots[i] + est,
                         "work_s": est - SAFETY * rates["setup_s"]})
            slots[i] += est
            continue
        if not partial:
            continue
        ep = SAFETY * epoch_s(c, rates, slow)
        epochs = int((left - SAFETY * rates["setup_s"]) // ep)
        if epochs >= 1:
            plan.append({"rank": rank, "cfg": c, "from_epoch": frm, "to_epoch": min(c.epochs - 1, frm + epochs),
                         "partial": True, "est_s": left, "start_s": slots[i], "end_s": available_s,
                         "work_s": left - SAFETY * rates["setup_s"]})
            slots[i] = available_s
        if all(available_s - s < SAFETY * (rates["setup_s"] + epoch_s(c, rates, slow)) for s in slots):
            break  # every slot is full
    return plan


def plan_score(plan: list[dict]) -> tuple:
    """What `choose` compares (smaller is better): first the ranks of the runs that finish, in priority order
    (finishing a more valuable run beats any number of less valuable ones), then the training seconds the plan
    turns into results or carried checkpoints (more is better)."""
    finished = tuple(p["rank"] for p in plan if not p["partial"]) + (math.inf,)
    return finished, -round(sum(p["work_s"] * p.get("speed", 1.0) for p in plan), 6)


def choose(missing: list[RunConfig], b: dict, available_s: float, default_workers: int,
           done: dict[str, int] | None = None, partial: bool = True) -> tuple[int, list[dict]]:
    """The worker count whose plan scores best (plan_score), among 1 and each measured packed count; with no
    packed measurement, `default_workers`."""
    rates = {"eager": b["eager"], "mfw": b["mfw"], "eval": b["eval"], "setup_s": b["setup_s"]}
    options = {1: 1.0} if b["packed"] else {default_workers: 1.0 / default_workers}
    options.update({k: v / k / b["eager"] for k, v in b["packed"].items()})
    best = None
    for w, slow in sorted(options.items()):
        plan = plan_runs(missing, rates, w, min(1.0, slow), available_s, done, partial)
        for p in plan:
            p["speed"] = min(1.0, slow)  # a packed run's seconds count at its share of the GPU
        score = plan_score(plan)
        if best is None or score < best[0]:
            best = (score, w, plan)
    return best[1], best[2]


def explain(plan: list[dict], workers: int, available_s: float, budget_s: float, spares: list[RunConfig]) -> str:
    """The plan in words: each run (resumed or not, whole or to be carried), its expected end, and how much of
    the lease it expects to turn into results."""
    lines = [f"plan: {len(plan)} run(s) on {workers} worker(s) within {available_s:.0f} s of training window"]
    for p in plan:
        c = p["cfg"]
        what = (f"resumes at epoch {p['from_epoch']}/{c.epochs}" if p["from_epoch"] else "starts") + (
            f", trains to about epoch {p['to_epoch']} and is carried to the next lease" if p["partial"]
            else ", finishes")
        lines.append(f"  #{p['rank']} {c.label()} [{c.key()}]: {what}; from ~{p['start_s']:.0f} s to "
                     f"~{p['end_s']:.0f} s of the window")
    for c in spares:
        lines.append(f"  spare: {c.label()} [{c.key()}]: starts only if a worker is idle before the stop")
    fin = sum(p["work_s"] for p in plan if not p["partial"]) / workers  # wall seconds the GPU trains them
    car = sum(p["work_s"] for p in plan if p["partial"]) / workers
    lines.append(f"expected: {sum(not p['partial'] for p in plan)} finished result(s), "
                 f"{sum(p['partial'] for p in plan)} run(s) carried to the next lease; the GPU trains for ~{fin + car:.0f} s "
                 f"of the {budget_s:.0f} s budget ({100 * (fin + car) / budget_s:.0f}%: ~{fin:.0f} s into finished "
                 f"results, ~{car:.0f} s into carried checkpoints; the rest: start, data, check, bench, set-ups, stop "
                 f"and archives)")
    return "\n".join(lines)


# ---------------------------------------------------------------- checkpoints carried from one lease to the next

# one carry file must come back from $OUT (16 MiB a file there): a ResNet-32 checkpoint is about 4 MB
MAX_CARRY_BYTES = 15 << 20
# two files hold 7 of them: with the CIFAR-10 archive (20 MB) and the code, what the next lease carries stays
# within the 64 MiB a command's tree may hold
CARRY_FILES = 2
MAX_CHECKPOINT_BYTES = 12 << 20  # an entry of a carry file: a CIFAR ResNet-32 checkpoint (weights, momentum, history)
CHECKPOINT_KEYS = {"model": dict, "opt": dict, "history": dict, "epoch": int, "wall": (int, float),
                   "train_wall": (int, float), "images": int, "started": str, "commits": list, "config": dict,
                   "data": dict, "precision": str, "rng": dict}


def carry_dir() -> Path:
    """Where a harvest finds the carry files of earlier leases: $HARVEST_CARRY, else data/harvest-carry/ (copy the
    harvest-carry-*.tar that a lease returned there, and name the folder in the device tool's `carry`)."""
    from ..training.data import default_data_dir

    env = os.environ.get("HARVEST_CARRY")
    return Path(env) if env else default_data_dir() / "harvest-carry"


def check_checkpoint(data: bytes, profile: str, folder: str) -> tuple[RunConfig, dict]:
    """(config, checkpoint) of a carried checkpoint.pt, or ValueError saying why it may not be resumed. Loaded
    with weights_only=True (tensors and plain containers only: no code runs), on the CPU; its config must be
    valid and of `profile`, `folder` its key on its data, its epoch within the run, its history one entry an
    epoch of finite numbers, its weights finite and loadable into the model its config builds (strict), and its
    optimizer state loadable into that model's optimizer."""
    import torch

    try:
        ck = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises many types for a damaged or foreign file)
        raise ValueError(f"not a loadable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''})") from None
    if not isinstance(ck, dict):
        raise ValueError("not a checkpoint of this trainer")
    for k, t in CHECKPOINT_KEYS.items():
        if not isinstance(ck.get(k), t) or isinstance(ck.get(k), bool):
            raise ValueError(f"its {k!r} is missing or of the wrong type")
    if not isinstance(ck.get("gen"), torch.Tensor) or ck["gen"].dtype != torch.uint8:
        raise ValueError("its generator state is not a byte tensor")
    if ck["precision"] not in ("bf16", "fp32"):
        raise ValueError(f"unknown precision {ck['precision']!r}")
    try:
        cfg = RunConfig.from_dict(ck["config"])
        validate(cfg)
    except (ConfigError, TypeError, ValueError) as e:
        raise ValueError(f"unreadable or impossible config ({str(e)[:80]})") from None
    did = ck["data"].get("id")
    if not (isinstance(did, str) and len(did) >= 8 and all(ch in "0123456789abcdef" for ch in did)):
        raise ValueError("its data record has no content id")
    if cfg.profile != profile:
        raise ValueError(f"profile {cfg.profile!r} stored under {profile!r}")
    if folder != store.run_key(cfg, did):
        raise ValueError(f"folder {folder!r} does not match its key ({store.run_key(cfg, did)})")
    if not 1 <= ck["epoch"] < cfg.epochs:
        raise ValueError(f"epoch {ck['epoch']} is not within 1..{cfg.epochs - 1}")
    h = ck["history"]
    for k in HISTORY_KEYS:
        v = h.get(k)
        flat = [x for row in v for x in (row if isinstance(row, list) else [row])] if isinstance(v, list) else None
        if flat is None or len(v) != ck["epoch"] or not all(_num(x) for x in flat):
            raise ValueError(f"history.{k} is not {ck['epoch']} epochs of finite numbers")
    if h["epoch"] != list(range(1, ck["epoch"] + 1)):
        raise ValueError("history.epoch is not 1..epoch")
    if not all(_num(ck[k], 0) for k in ("wall", "train_wall", "images")):
        raise ValueError("negative wall, train_wall or images")
    if not all(isinstance(c, str) for c in ck["commits"]):
        raise ValueError("its commits are not strings")
    from ..training.data import benchmark_counts
    from ..method.losses import Criterion
    from ..training.train import make_model, make_optimizer

    counts = benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class)
    try:
        model = make_model(cfg, len(counts), Criterion(cfg.loss, counts, device="cpu").uses_cosine, torch.device("cpu"))
        model.load_state_dict(ck["model"], strict=True)
        make_optimizer(model, cfg, torch.device("cpu")).load_state_dict(ck["opt"])
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"its weights or optimizer state do not fit its model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:80] if str(e) else ''})") from None
    if not all(torch.isfinite(t).all() for t in ck["model"].values() if t.is_floating_point()):
        raise ValueError("its weights are not finite")
    return cfg, ck


def read_carry(path: Path) -> list[tuple[str, str, bytes, RunConfig, dict]]:
    """(profile, folder, bytes, config, checkpoint) of every checkpoint in a carry file, all checked; ValueError
    naming the first bad entry (then none of them may be taken)."""
    entries, seen = [], set()
    try:
        check_tar(path, MAX_CHECKPOINT_BYTES, MAX_MEMBERS, ("", "gz", "bz2", "xz"), archive_cap=2 * MAX_CARRY_BYTES)
        with tarfile.open(path, "r:*") as tar:
            for m, parts, data in _run_entries(tar, MAX_CHECKPOINT_BYTES, ("carry.json",), "checkpoint.pt", seen):
                try:
                    cfg, ck = check_checkpoint(data, parts[0], parts[1])
                except ValueError as e:
                    raise ValueError(f"{m.name}: {e}") from None
                entries.append((parts[0], parts[1], data, cfg, ck))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"damaged carry file ({type(e).__name__}: {str(e)[:100]})") from None
    return entries


def take_carry(folder: Path, work: Path, wanted: list[RunConfig], data_id) -> dict[str, int]:
    """Put the checkpoints that earlier leases carried (every *.tar in `folder`) into the work store, so that
    their runs resume: only runs in `wanted` (still missing from the committed store), trained on these data
    (`data_id(cfg)`: the content id of cfg's data here); of several checkpoints of one run, the furthest.
    Every file is checked completely before anything
    is written; a bad file is refused in one line and its runs start over. Nothing stored is replaced. Returns
    {config key: epoch} of what was taken."""
    files = sorted(folder.glob("*.tar")) if folder.is_dir() else []
    if not files:
        return {}
    keys = {c.key() for c in wanted}
    best: dict[str, tuple[int, str, str, bytes, RunConfig, str]] = {}
    for f in files:
        try:
            entries = read_carry(f)
        except ValueError as e:
            say(f"harvest: carry file {f} refused: {e}; its runs start over")
            continue
        for profile, fold, data, cfg, ck in entries:
            if cfg.key() not in keys:
                say(f"harvest: carried {cfg.label()} [{fold}] at epoch {ck['epoch']} not taken: already committed "
                    f"or not in this harvest's list")
            elif ck["data"]["id"] != data_id(cfg):
                say(f"harvest: carried {cfg.label()} [{fold}] not taken: trained on other data "
                    f"({ck['data']['id'][:8]}, here {data_id(cfg)[:8]})")
            elif cfg.key() not in best or ck["epoch"] > best[cfg.key()][0]:
                best[cfg.key()] = (ck["epoch"], profile, fold, data, cfg, f.name)
    writes, taken = [], {}
    for key, (epoch, profile, fold, data, cfg, fname) in best.items():
        dest = work / profile / fold / "checkpoint.pt"
        if dest.exists() or (dest.parent / "result.json").exists():
            say(f"harvest: carried {cfg.label()} [{fold}] not taken: the work store already holds it")
            continue
        writes.append((dest, data))
        taken[key] = epoch
        say(f"harvest: resumes {cfg.label()} [{fold}] at epoch {epoch}/{cfg.epochs} (carried in {fname})")
    write_all_or_nothing(writes)
    return taken


def write_carry(out_dir: Path, name: str, work: Path, order: list[str]) -> tuple[list[Path], list[str]]:
    """Write the checkpoints of the work store's unfinished runs into out_dir/name (a tar, atomically), in the
    priority `order` (config keys): MAX_CARRY_BYTES a file (what $OUT gives back), a second file NAME-2.tar and so
    on up to CARRY_FILES, then the least valuable are left out. (the files written, lines saying what they hold)."""
    import torch

    rank = {k: i for i, k in enumerate(order)}
    cks = sorted((p for p in work.glob("*/*/checkpoint.pt") if not (p.parent / "result.json").exists()),
                 key=lambda p: rank.get(p.parent.name.split("-")[0], len(rank)))
    files: list[list[tuple[str, bytes]]] = [[]]
    sizes, lines = [0], []
    for p in cks:
        try:
            data = p.read_bytes()  # the trainer renames a new checkpoint into place: never half a file
            meta = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            label, ep = RunConfig.from_dict(meta["config"]).label(), f"{meta['epoch']}/{meta['config']['epochs']}"
        except Exception as e:  # noqa: BLE001
            lines.append(f"  {p.parent.name}: unreadable checkpoint left out ({type(e).__name__})")
            continue
        if sizes[-1] + len(data) + 4096 > MAX_CARRY_BYTES and files[-1]:
            if len(files) == CARRY_FILES:
                lines.append(f"  {label} [{p.parent.name}] at epoch {ep}: left out ({CARRY_FILES} carry files of "
                             f"{MAX_CARRY_BYTES >> 20} MiB are full)")
                continue
            files.append([])
            sizes.append(0)
        files[-1].append((f"{p.parent.parent.name}/{p.parent.name}/checkpoint.pt", data))
        sizes[-1] += len(data)
        lines.append(f"  {label} [{p.parent.name}]: epoch {ep}")
    paths = []
    for i, entries in enumerate(f for f in files if f):
        path = out_dir / (name if i == 0 else name.replace(".tar", f"-{i + 1}.tar"))
        tmp = out_dir / f".{path.name}.{os.getpid()}.tmp"
        with tarfile.open(tmp, "w") as tar:
            for member, data in entries:
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        paths.append(path)
    return paths, lines


# ---------------------------------------------------------------- the run


def _train_child(plan_path: str) -> int:
    """The training process (its own process group, stopped at the deadline). Started before everything else, so
    that its interpreter start overlaps the data: first the GPU check when check.json appears (a few epochs of the
    first missing run, eager, into a throw-away store: the whole training path on this device, in seconds), then
    run_many over the planned runs when plan.json appears."""
    from .packing import RunFailures, run_many

    path = Path(plan_path)
    check = path.with_name("check.json")
    _die_with(os.getppid())
    while not path.exists() and not check.exists():
        time.sleep(0.1)
    if check.exists():
        _check_run(json.loads(check.read_text()), path.with_name("check-done.json"))
    while not path.exists():
        time.sleep(0.2)
    p = json.loads(path.read_text())
    if not p["configs"]:
        return 0
    cfgs = [RunConfig.from_dict(d) for d in p["configs"]]
    try:
        run_many(cfgs, device=p["device"], workers=p["workers"], executor="process", results=Path(p["results"]))
    except RunFailures as e:
        from ..training.train import stop_requested

        stopped = [c for c, err in e.failures if "no result in the store" in str(err)]
        if stop_requested() and len(stopped) == len(e.failures):
            print(f"harvest: stopped at the deadline, {len(stopped)} run(s) unfinished (those that had trained an "
                  f"epoch left a checkpoint)", flush=True)
            return 0
        print(f"harvest: {e}", flush=True)
        return 1
    return 0


def _check_run(c: dict, done_path: Path) -> None:
    """The GPU check: train c["config"] (a few epochs) on c["device"] into c["results"], write what happened."""
    from ..training.train import run

    t = time.perf_counter()
    try:
        res = run(RunConfig.from_dict(c["config"]), device=c["device"], results=Path(c["results"]), progress=False,
                  compile=False)
        pv = res["provenance"]
        out = {"ok": True, "wall_s": time.perf_counter() - t, "epoch_s": res["history"]["seconds"],
               "train_images_per_s": pv["train_images_per_s"], "test_error": res["summary"]["test_error"],
               "device_name": pv["device_name"], "precision": pv["precision"]}
    except Exception as e:  # noqa: BLE001 (whatever breaks is what the check is for)
        out = {"ok": False, "wall_s": time.perf_counter() - t, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    store.atomic_write_json(done_path, out)


def _start_child(plan_path: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the training process now (it waits for check.json or plan_path); its output goes to the console and
    the log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(store.REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PROCRUSTES_COMPILE", HARVEST_COMPILE)
    env.update(env_extra or {})
    child = subprocess.Popen([sys.executable, "-m", "procrustes.tooling.harvest", "_train", str(plan_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def pump() -> None:
        for line in child.stdout:
            say("  | " + line.rstrip())

    child.reader = threading.Thread(target=pump, daemon=True)  # type: ignore[attr-defined]
    child.reader.start()  # type: ignore[attr-defined]
    return child


def _stop(child: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, to the training process group (the child and its pool workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if child.poll() is not None:
            break
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
    child.reader.join(timeout=5)  # type: ignore[attr-defined]


def _write_plan(plan_path: Path, configs: list[RunConfig], workers: int, device: str, work: Path) -> None:
    store.atomic_write_text(plan_path, json.dumps({"configs": [c.to_dict() for c in configs], "workers": workers,
                                                   "device": device, "results": str(work)}))


def _finished(work: Path) -> list[tuple[str, str, dict]]:
    """(profile, folder, result) of every finished, consistent result in the work store."""
    out = []
    for path in sorted(work.glob("*/*/result.json")):
        profile, folder = path.parent.parent.name, path.parent.name
        try:
            res = parse_json(path.read_bytes(), str(path))
            check_result(res, profile, folder)
            out.append((profile, folder, res))
        except (ValueError, OSError) as e:
            say(f"harvest: {path} left out ({e})")
    return out


class Outputs:
    """What goes back from $OUT, kept current: the results archive (rewritten atomically whenever a run finishes),
    the carry file of unfinished runs' checkpoints (rewritten when their checkpoints moved on, at most every
    carry_every_s, and at the end). A kill at any moment leaves the last complete version of each."""

    def __init__(self, out: Path, profile: str, work: Path, summary: dict, order: list[str], carry_every_s: float):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.out, self.profile, self.work, self.summary, self.order = out, profile, work, summary, order
        self.archive_name = f"harvest-{profile}-{stamp}.tar.gz"
        self.carry_name = f"harvest-carry-{profile}-{stamp}.tar"
        self.carry_every_s, self.carry_at, self.carry_seen = carry_every_s, 0.0, None
        self.finished: list[tuple[str, str, dict]] = []
        self.carried: list[str] = []
        self.archive: Path | None = None
        self.carry: list[Path] = []

    def results(self) -> Path:
        self.finished = _finished(self.work)
        self.summary["finished"] = [f["key"] for f in _finished_rows(self.finished, {})]
        self.summary["elapsed_s"] = round(time.time() - self.summary["t0"], 1)
        self.archive = write_archive(self.out, self.archive_name, self.finished, self.summary)
        return self.archive

    def checkpoints(self, force: bool = False) -> None:
        state = []
        for p in self.work.glob("*/*/checkpoint.pt"):
            try:
                if not (p.parent / "result.json").exists():
                    state.append((str(p), p.stat().st_mtime_ns))
            except OSError:  # renamed or removed meanwhile
                pass
        state.sort()
        now = time.time()
        if not force and (state == self.carry_seen or now - self.carry_at < self.carry_every_s):
            return
        self.carry_seen, self.carry_at = state, now
        paths, self.carried = write_carry(self.out, self.carry_name, self.work, self.order)
        for old in self.carry:
            if old not in paths:
                old.unlink(missing_ok=True)  # its runs have finished since
        self.carry = paths


def _train(child: subprocess.Popen, plan_path: Path, configs: list[RunConfig], workers: int, device: str,
           work: Path, stop_at: float, kill_at: float, stop_file: Path, outputs: Outputs) -> int:
    """Hand the plan to the training process and wait for it. At stop_at, ask the runs to stop (each checkpoints
    at the end of its epoch); at kill_at, stop the process group. Each finished run rewrites the archive in $OUT,
    and moving checkpoints the carry file. Returns the training process's exit status."""
    from tqdm.auto import tqdm

    _write_plan(plan_path, configs, workers, device, work)
    bar = tqdm(total=len(configs), desc="harvest runs", unit="run", mininterval=10)
    done = 0
    while child.poll() is None and time.time() < kill_at:
        time.sleep(0.5)
        now = len(list(work.glob("*/*/result.json")))
        if now > done:
            bar.update(now - done)
            done = now
            outputs.results()
        outputs.checkpoints()
        if time.time() >= stop_at and not stop_file.exists():
            say(f"harvest: {kill_at - time.time():.0f} s before the end: asking the runs still training to "
                f"checkpoint and stop")
            stop_file.touch()
    bar.close()
    if child.poll() is None:
        say(f"harvest: budget reached, stopping the training processes (process group {child.pid})")
    _stop(child, grace_s=2.0)
    return child.returncode if child.returncode is not None else -9


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(data))


def write_archive(out_dir: Path, name: str, finished: list[tuple[str, str, dict]], summary: dict) -> Path:
    """out_dir/name, a tar.gz written atomically: <profile>/<key>/result.json for each finished run, harvest.log
    and harvest-summary.json."""
    path = out_dir / name
    tmp = out_dir / f".{path.name}.{os.getpid()}.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        for prof, folder, res in finished:
            _add(tar, f"{prof}/{folder}/result.json", json.dumps(res, indent=1) + "\n")
        _add(tar, "harvest-summary.json", json.dumps(summary, indent=1, default=str) + "\n")
        _add(tar, "harvest.log", "\n".join(LOG) + "\n")
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _finished_rows(finished: list[tuple[str, str, dict]], est: dict[str, float]) -> list[dict]:
    rows = []
    for prof, folder, res in finished:
        pv = res.get("provenance", {})
        rows.append({"key": folder, "label": RunConfig.from_dict(res["config"]).label(), "wall_s": pv.get("wall_s"),
                     "est_s": est.get(folder.split("-")[0]), "train_images_per_s": pv.get("train_images_per_s"),
                     "test_error": res["summary"].get("test_error")})
    return rows


def cpu_slowdown(seconds: float = 0.3) -> float:
    """How much slower this process runs now than on an idle core: wall / CPU time of a short busy loop (1 on an
    idle machine; about 10 at nice 10 beside one busy process a core), between 1 and 8."""
    t, c = time.perf_counter(), time.process_time()
    x = 0
    while time.perf_counter() - t < seconds:
        for i in range(10000):
            x += i
    used = max(time.process_time() - c, 1e-3)
    return min(8.0, max(1.0, (time.perf_counter() - t) / used))


def harvest(*, smoke: bool, budget_s: float | None, t0: float, out: Path | None, work: Path | None,
            committed: Path | None, compile_cap: float | None = None) -> int:
    """The whole harvest (see the module docstring). budget_s None: the default (PAPER_BUDGET_S; with smoke,
    SMOKE_BUDGET_S scaled by cpu_slowdown and counted from when the data are loaded). Returns 0 when the
    archive holds at least one run or a carried checkpoint."""
    import torch

    from ..training.train import TORCH_COMPILE_MODES

    device = os.environ.get("HARVEST_DEVICE") or ("cpu" if smoke else "cuda")
    mode = os.environ.get("HARVEST_COMPILE_MODE", HARVEST_COMPILE_MODE)
    if mode not in TORCH_COMPILE_MODES:
        say(f"harvest: unknown HARVEST_COMPILE_MODE {mode!r}: choose one of {', '.join(TORCH_COMPILE_MODES)}")
        return 2
    if device.startswith("cuda") and not torch.cuda.is_available():
        say("harvest: no CUDA device here (use --smoke on a CPU)")
        return 2
    profile = "smoke" if smoke else "paper"
    tmp = Path(tempfile.mkdtemp(prefix="procrustes-harvest-"))
    plan_path, stop_file = tmp / "plan.json", tmp / "stop"
    child = _start_child(plan_path, {"PROCRUSTES_STOP_FILE": str(stop_file),
                                     "PROCRUSTES_CHECKPOINT_S": str(CHECKPOINT_EVERY_S[profile])})
    try:
        return _harvest(profile, device, budget_s, t0, out, work or tmp / "store", committed, compile_cap, child,
                        plan_path, stop_file, mode)
    finally:
        if child.poll() is None:
            stop_file.touch()
            _write_plan(plan_path, [], 0, device, tmp)
            _stop(child, grace_s=2.0)


def _packs(smoke: bool) -> list[int]:
    """How many runs the bench packs at once (on a smoke CPU only 2)."""
    return [2] if smoke else [2, 3, 4]


def _gpu_check(first: RunConfig, profile: str, device: str, plan_path: Path, child: subprocess.Popen, slowdown: float,
               budget: float, summary: dict) -> dict | None:
    """The GPU check: a few eager epochs of the first missing run, in the training process (already started);
    its answer, or None (said why) when it failed or did not answer in time."""
    ccfg = first.replace(epochs=CHECK_EPOCHS[profile], eval_per_class=min(first.eval_per_class or 100, 100),
                         test_per_class=min(first.test_per_class or 100, 100))
    t = time.time()
    store.atomic_write_json(plan_path.with_name("check.json"), {"config": ccfg.to_dict(), "device": device,
                                                                "results": str(plan_path.parent / "check-store")})
    check_path = plan_path.with_name("check-done.json")
    cap = max(10.0, min(CHECK_CAP_S[profile] * slowdown, 0.4 * budget))
    while not check_path.exists() and time.time() - t < cap and child.poll() is None:
        time.sleep(0.2)
    if not check_path.exists():
        say(f"check: no answer within {cap:.0f} s (the training process {'ended' if child.poll() is not None else 'is still at it'});"
            f" nothing trained")
        return None
    ck = json.loads(check_path.read_text())
    summary["check"] = ck
    if not ck["ok"]:
        say(f"check: FAILED after {ck['wall_s']:.1f} s: {ck['error']}; nothing trained")
        return None
    say(f"check: {ccfg.label()} for {ccfg.epochs} epochs on {ck['device_name']} ({ck['precision']}, eager) in "
        f"{ck['wall_s']:.1f} s: {ck['train_images_per_s']:.0f} training img/s, epochs "
        + ", ".join(f"{s:.1f}" for s in ck["epoch_s"]) + f" s, test error {ck['test_error']:.1f}%: OK")

    return ck


def _rates(first: RunConfig, ck: dict, device: str, compile_cap: float | None, budget: float, deadline: float,
           slowdown: float, smoke: bool, mode: str, summary: dict) -> dict | None:
    """The bench (eager, MFW, packed, evaluation; the compile probe only where the runs compile), scaled up to
    the GPU check's rate where that is higher; None (said why) when no training rate was measured."""
    import torch

    from ..training.train import compile_mode

    runs_compile = compile_mode(os.environ.get("PROCRUSTES_COMPILE", HARVEST_COMPILE), torch.device(device), 10**9)
    cap = float(os.environ.get("HARVEST_COMPILE_CAP_S") or (45 if runs_compile else 0)) if compile_cap is None else compile_cap
    cap = min(cap, 0.1 * budget)
    packs = _packs(smoke)
    b = measure(first, device, seconds=0.3 if smoke else 3.0, packs=packs, compile_cap=cap,
                cap_s=max(10.0 * slowdown, min(120.0, deadline - time.time() - 30)), compile_mode=runs_compile or mode)
    say(bench_line(first, images(first)[0], b))
    summary["bench"] = dict(b)
    if b["eager"] and ck["train_images_per_s"] > b["eager"]:
        # a few seconds of steps in a fresh process can only be slowed by what else runs (a busy CPU, a GPU still
        # warming up), never sped up: the check's whole epochs in the trainer itself are the better lower bound
        f = ck["train_images_per_s"] / b["eager"]
        say(f"harvest: planning with the check's {ck['train_images_per_s']:.0f} img/s, {f:.1f} x the bench's eager "
            f"rate (MFW, packed and evaluation rates scaled alike)")
        b = dict(b, eager=b["eager"] * f, mfw=b["mfw"] and b["mfw"] * f, eval=b["eval"] and b["eval"] * f,
                 packed={k: v * f for k, v in b["packed"].items()})
    if not b["eager"]:
        say("harvest: no training rate measured, nothing trained")
        return None
    return b



def _report(outputs, summary: dict, plan: list, t0: float, deadline: float, budget: float) -> int:
    """After training: carry the unfinished runs' checkpoints, rewrite the archive, and say what came back."""
    outputs.checkpoints(force=True)
    est = {p["key"]: p["est_s"] for p in summary["planned"]}
    outputs.results()
    rows = _finished_rows(outputs.finished, est)
    summary["finished"], summary["carried"] = rows, outputs.carried
    summary["elapsed_s"] = round(time.time() - t0, 1)
    say(f"harvest: came back: {len(rows)} finished run(s) of {len(plan)} planned"
        + "".join(f"\n  {f['label']} [{f['key']}]: test error {f['test_error']:.2f}%, wall {f['wall_s']} s "
                  + (f"(estimated {f['est_s']:.0f} s)" if f["est_s"] else "(a spare)") for f in rows)
        + (f"\n{len(outputs.carried)} checkpoint(s) carried in {', '.join(map(str, outputs.carry))}:\n"
           + "\n".join(outputs.carried) if outputs.carry else "\nno checkpoint to carry"))
    trained = sum(r["wall_s"] or 0 for r in rows)
    say(f"harvest: {time.time() - (deadline - budget):.0f} s of the {budget:.0f} s budget used ({time.time() - t0:.0f} s "
        f"since the start); finished runs' training wall {trained:.0f} s")
    path = outputs.results()
    say(f"harvest: archive {path} ({len(rows)} result(s)); import it with: make harvest-import FILE={path.name}"
        + (f"\nharvest: for the next lease: make gpu-prepare CARRY=\"{' '.join(p.name for p in outputs.carry)}\" "
           f"(from where they came back), and carry data/harvest-carry" if outputs.carry else ""))
    outputs.results()  # with the last lines in its log
    return 0 if rows or outputs.carry else 1


def _missing_here(queue: list[RunConfig], committed: Path | None) -> list[RunConfig]:
    """The queue's runs that are neither committed nor in training on another machine (a committed checkpoint: a
    CPU trains them, and a run in another precision never mixes with it)."""
    _, missing = store.collect(queue, committed)
    say(f"harvest: {len(queue) - len(missing)} of {len(queue)} candidate runs already committed, "
        f"{len(missing)} missing")
    elsewhere = [c for c in missing if store.checkpoint_epoch(c, committed)]
    if elsewhere:
        say(f"harvest: {len(elsewhere)} missing run(s) are in training on another machine (a committed checkpoint), "
            f"left to it: " + ", ".join(c.key() for c in elsewhere))
    return [c for c in missing if c not in elsewhere]


def _harvest(profile: str, device: str, budget_s: float | None, t0: float, out: Path | None, work: Path,
             committed: Path | None, compile_cap: float | None, child: subprocess.Popen, plan_path: Path,
             stop_file: Path, mode: str) -> int:
    import torch

    smoke = profile == "smoke"
    out = out or Path(tempfile.mkdtemp(prefix="procrustes-harvest-out-"))
    out.mkdir(parents=True, exist_ok=True)
    slowdown = cpu_slowdown() if smoke else 1.0  # scales the smoke budget (unless given) and the smoke caps
    explicit = budget_s is not None
    budget = budget_s if explicit else (SMOKE_BUDGET_S * slowdown if smoke else PAPER_BUDGET_S)
    deadline = t0 + budget
    say(f"harvest: profile {profile}, device {device}, budget {budget:.0f} s"
        + ("" if explicit or not smoke else f" (smoke: {SMOKE_BUDGET_S} s x {slowdown:.1f}, this CPU's slowdown now; "
                                            f"counted from when the data are loaded)")
        + f", {deadline - time.time():.0f} s left, torch {torch.__version__}, commit {store.git_commit()}, "
        f"work store {work}, committed store {committed or store.results_dir()}, output {out}")
    queue = priority_runs(profile)
    summary: dict[str, Any] = {"profile": profile, "device": device, "budget_s": budget, "t0": t0,
                               "started_utc": store.now_utc(), "commit": store.git_commit(), "planned": [],
                               "finished": [], "carried": []}
    outputs = Outputs(out, profile, work, summary, [c.key() for c in queue], CARRY_EVERY_S[profile])
    outputs.results()  # an archive (with the log so far) is in $OUT from now on

    from ..training.data import load_benchmark, load_split

    t = time.time()
    for split in ("train", "test"):  # decode into the uint8 cache once (in parallel), before any worker starts
        load_split("cifar10", None, split)
    say(f"harvest: CIFAR-10 loaded in {time.time() - t:.1f} s")
    if smoke and not explicit:
        deadline = time.time() + budget
    missing = _missing_here(queue, committed)
    if not missing:
        say("harvest: nothing missing")
        outputs.results()
        return 1
    done = take_carry(carry_dir(), work, missing, lambda c: load_benchmark(c).data["id"])

    first = missing[0]
    ck = _gpu_check(first, profile, device, plan_path, child, slowdown, budget, summary)
    b = _rates(first, ck, device, compile_cap, budget, deadline, slowdown, smoke, mode, summary) if ck else None
    if b is None:
        outputs.results()
        return 1

    # the plan: the pool's processes start an interpreter first (the training process is running already)
    grace = min(30.0, 2.0 + 1.5 * max(epoch_s(c, b, 1.0 / max(_packs(smoke))) for c in missing[:8]))
    kill_at = deadline - ARCHIVE_RESERVE_S[profile]
    stop_at = kill_at - grace
    available = stop_at - time.time() - (b["start_s"] or 0.0)
    workers, plan = choose(missing, b, available, default_workers=2, done=done)
    planned = {p["cfg"].key() for p in plan}
    spares = [c for c in missing if c.key() not in planned][:SPARES_A_WORKER * workers]
    summary["workers"] = workers
    summary["planned"] = [{"key": p["cfg"].key(), "label": p["cfg"].label(), "from_epoch": p["from_epoch"],
                           "to_epoch": p["to_epoch"], "partial": p["partial"], "est_s": round(p["est_s"], 1),
                           "est_end_s": round(p["end_s"], 1)} for p in plan]
    start = time.time() - t0 + (b["start_s"] or 0.0)
    say(explain(plan, workers, available, budget, spares)
        + f"\n(the window runs from ~{start:.0f} s to ~{start + available:.0f} s of the budget; at ~{stop_at - t0:.0f} s "
          f"the runs are asked to checkpoint and stop, at ~{kill_at - t0:.0f} s they are stopped)")
    outputs.results()
    if plan:
        rc = _train(child, plan_path, [p["cfg"] for p in plan] + spares, workers, device, work, stop_at, kill_at,
                    stop_file, outputs)
        say(f"harvest: training ended (rc {rc}) with {deadline - time.time():.0f} s of the budget left")
    return _report(outputs, summary, plan, t0, deadline, budget)


# ---------------------------------------------------------------- import


def _run_entries(tar, cap: int, skip: tuple[str, ...], leaf: str, seen: set):
    """(member, its path parts, its bytes) of each <profile>/<key>/<leaf> entry of an archive, other than the
    names in `skip`: an entry of another shape, one seen twice or one over `cap` bytes is a ValueError (its size
    is checked from the header before it is read, and again on reading at most cap + 1 bytes)."""
    for m in _members(tar, cap):
        if m.name in skip:
            continue
        parts = m.name.split("/")
        if len(parts) != 3 or parts[2] != leaf or parts[0] not in PROFILES:
            raise ValueError(f"{m.name}: not <profile>/<key>/{leaf}")
        if m.name in seen:
            raise ValueError(f"{m.name}: twice in the archive")
        seen.add(m.name)
        data = tar.extractfile(m).read(cap + 1)
        if len(data) > cap:
            raise ValueError(f"{m.name}: more than {cap} bytes")
        yield m, parts, data


def _members(tar: tarfile.TarFile, cap: int):
    """The archive's members one by one, each refused (ValueError) on its header alone, before its content is
    decompressed: too large, not a plain file, or one member too many."""
    for i, m in enumerate(tar):
        if i >= MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} entries")
        if m.isdir():
            continue
        if not m.isfile():
            raise ValueError(f"{m.name}: not a plain file")
        if m.size > cap:
            raise ValueError(f"{m.name}: {m.size} bytes, more than the {cap} a harvest entry may hold")
        yield m


def read_archive(path: Path) -> list[tuple[str, str, str, dict]]:
    """(profile, folder, text, result) of every result.json in a harvest archive, all checked; ValueError naming
    the first bad entry (then nothing may be imported). Memory stays bounded: every header of the archive is
    checked first (tar_headers.check_tar: no extended header or long name over its bound, no entry over
    MAX_RESULT_BYTES), and an entry is read only after its header says it is at most MAX_RESULT_BYTES."""
    entries, seen = [], set()
    try:
        check_tar(path, MAX_RESULT_BYTES, MAX_MEMBERS, ("gz",))  # every header bounded before tarfile reads one
        with tarfile.open(path, "r:gz") as tar:
            for m, parts, data in _run_entries(tar, MAX_RESULT_BYTES, ("harvest.log", "harvest-summary.json"), "result.json",
                                               seen):
                res = parse_json(data, m.name)
                try:
                    check_result(res, parts[0], parts[1])
                except ValueError as e:
                    raise ValueError(f"{m.name}: {e}") from None
                entries.append((parts[0], parts[1], data.decode(), res))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"damaged archive ({type(e).__name__}: {str(e)[:100]})") from None
    return entries


def write_all_or_nothing(files: list[tuple[Path, bytes]]) -> None:
    """Write every (path, bytes), none of which exists yet, or none of them: each goes to a temporary file beside
    its place first (fsync), then all are renamed; on any failure the temporaries and the files already renamed
    are removed again."""
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            staged.append((tmp, path))
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in staged:
            if path.exists():
                raise FileExistsError(f"{path} appeared while importing")
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def import_archive(path: Path, root: Path | None = None) -> dict[str, list[str]]:
    """Import a harvest archive into the store `root` (default: results/). Checks every entry completely first
    (ValueError: nothing imported), then writes all of them or none. A stored identical result is skipped; a
    stored different one is kept and the incoming one written beside it as result.harvest-<stamp>.json. The
    temporary files an import killed while staging left in the store are removed first."""
    root = Path(root or store.results_dir())
    entries = read_archive(path)
    for folder in sorted(root.glob("*/*")):  # what a killed import staged (.result.json.PID.tmp of a dead PID)
        store.remove_stale_temps(folder)
    done: dict[str, list[str]] = {"imported": [], "identical": [], "kept aside": []}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    writes: list[tuple[Path, bytes]] = []
    for profile, folder, text, res in entries:
        dest = root / profile / folder / "result.json"
        name = f"{profile}/{folder} ({RunConfig.from_dict(res['config']).label()})"
        if dest.exists():
            try:
                same = json.loads(dest.read_text()) == res
            except (ValueError, OSError, RecursionError):
                same = False
            if same:
                done["identical"].append(name)
                continue
            i, aside = 0, dest.with_name(f"result.harvest-{stamp}.json")
            while aside.exists():
                i += 1
                aside = dest.with_name(f"result.harvest-{stamp}-{i}.json")
            writes.append((aside, text.encode()))
            done["kept aside"].append(f"{name}: differs from the stored result, written as {aside}")
            continue
        writes.append((dest, text.encode()))
        done["imported"].append(f"{name}: test error {res['summary']['test_error']:.2f}%")
    write_all_or_nothing(writes)
    return done


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m procrustes.tooling.harvest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure, train what fits in the budget, write one archive")
    r.add_argument("--smoke", action="store_true", default=os.environ.get("HARVEST_SMOKE") == "1",
                   help="CPU, smoke profile, 90 s scaled by how busy the CPU is (also HARVEST_SMOKE=1)")
    r.add_argument("--budget", type=float, help="seconds from $HARVEST_T0 (default $HARVEST_BUDGET_S, else 540; with "
                   "--smoke 90 x this CPU's slowdown, from when the data are loaded)")
    r.add_argument("--out", help="folder of the archive (default $OUT, else a new temporary folder)")
    r.add_argument("--work", help="work result store (default $HARVEST_RESULTS, else a temporary folder)")
    r.add_argument("--committed", help="store whose runs are skipped (default results/ or $PROCRUSTES_RESULTS)")
    i = sub.add_parser("import", help="import a harvest archive into the result store")
    i.add_argument("file")
    i.add_argument("--results", help="store to import into (default results/ or $PROCRUSTES_RESULTS)")
    t = sub.add_parser("_train", help=argparse.SUPPRESS)
    t.add_argument("plan")
    args = ap.parse_args(argv)
    if args.cmd == "_train":
        return _train_child(args.plan)
    if args.cmd == "import":
        try:
            done = import_archive(Path(args.file), Path(args.results) if args.results else None)
        except (ValueError, OSError) as e:
            print(f"harvest-import: refused {args.file}: {e}; nothing imported", file=sys.stderr)
            return 1
        for what, names in done.items():
            for n in names:
                print(f"{what}: {n}")
        print(f"harvest-import: {len(done['imported'])} imported, {len(done['identical'])} identical skipped, "
              f"{len(done['kept aside'])} kept aside, from {args.file}")
        return 0
    env = lambda k: os.environ.get(k) or None  # noqa: E731
    budget = args.budget or (float(env("HARVEST_BUDGET_S")) if env("HARVEST_BUDGET_S") else None)
    t0 = float(env("HARVEST_T0") or time.time())
    pick = lambda a, k: Path(a) if a else (Path(env(k)) if env(k) else None)  # noqa: E731
    return harvest(smoke=args.smoke, budget_s=budget, t0=t0, out=pick(args.out, "OUT"),
                   work=pick(args.work, "HARVEST_RESULTS"), committed=Path(args.committed) if args.committed else None)


if __name__ == "__main__":
    from procrustes.tooling import harvest as _h  # the importable module, so that spawned workers find its functions

    sys.exit(_h.main())
