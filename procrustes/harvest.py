"""Harvest: train the most valuable missing paper-profile runs within a short GPU lease, bring back one archive,
and import it into the committed result store.

Why: a lent GPU gives about 9 minutes of compute, with no internet and no ssh; what comes back is a few files.
So `python -m procrustes.harvest run` (`make gpu-harvest`) measures the training speed there, trains only the
runs its estimate says will finish within the budget (packed, several processes on the one GPU), and writes ONE
tar.gz of their result.json files (no weights, no checkpoints). `python -m procrustes.harvest import FILE`
(`make harvest-import FILE=...`) checks every entry before writing any, never replaces a stored result, and
writes atomically. Selection skips what the committed store already holds, so a second harvest continues.

Imports only torch, numpy, PIL, tqdm and this package: the GPU machine's python has nothing else.
`--smoke` runs the same path on the CPU at smoke-profile size (tests; about 90 s)."""
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

from . import store
from .config import PROFILES, ConfigError, RunConfig, make_config, validate
from .speed import _die_with, bench_line, measure

# the harvest's runs train eager: its estimates of what finishes in the window come from the eager rate it
# measures, and a compilation per run (tens of seconds, more in several packed processes at once) would eat a
# window of a few minutes. A longer lease can set PROCRUSTES_COMPILE=on (or auto) before `make gpu-harvest`.
HARVEST_COMPILE = "off"
# the compile mode its bench line times (`$HARVEST_COMPILE_MODE` overrides): "reduce-overhead" (CUDA graphs), the
# candidate for a launch-bound ResNet-32 on a large GPU that no GPU here has measured yet; compile="auto" keeps
# torch's default mode until this number says otherwise (procrustes.train.AUTO_COMPILE_MODE)
HARVEST_COMPILE_MODE = "reduce-overhead"
SAFETY = 1.15  # estimates are multiplied by this: a run that overshoots the budget is killed and lost
ARCHIVE_RESERVE_S = {"paper": 15.0, "smoke": 5.0}  # kept at the end of the budget to stop the runs, write the archive
# smoke runs, smaller still than the smoke profile (one epoch, tiny evaluations), so that a CPU shared with other
# work trains one within the smoke budget; step-100 needs the profile's 100 images a major class (1 a minor one)
SMOKE_OVERRIDES = {"epochs": 1, "eval_per_class": 5, "test_per_class": 10, "clean_per_class": 5}
LOG: list[str] = []


def say(msg: str) -> None:
    """Print and keep the line for harvest.log (the archive carries what the console showed)."""
    print(msg, flush=True)
    LOG.append(msg)


# ---------------------------------------------------------------- keys and checks (shared by run and import)


def expected_key(result: dict) -> str:
    """The store key a result must carry: its config's hash alone when it records no data, else the hash, '-'
    and the first 8 hex of its data's content id. The one place in the harvest that knows the key scheme."""
    cfg = RunConfig.from_dict(result["config"])
    data = result.get("data")
    return store.run_key(cfg, data["id"]) if data else cfg.key()


# what a harvest archive may hold: a real result.json is well under 1 MB (a paper-profile CIFAR-10 run, 200 epochs
# of per-class history, is about 0.3 MB; CIFAR-100 about 3 MB); each entry's size is read from its tar header and
# an entry above the cap is refused before a byte of it is decompressed
MAX_RESULT_BYTES = 4 << 20
MAX_MEMBERS = 20_000  # the whole paper grid is a few hundred runs
MAX_JSON_DEPTH = 16  # a result nests 4 levels deep; deeper is not a result (and deep enough breaks the parser)
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "feature_grad", "pred_major_share", "weakened_share",
                "test_acc", "test_top1", "seconds", "train_acc_clean", "pred_major_share_clean")


def _num(x: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A finite int or float (not a bool) in [lo, hi]."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def _int(x: Any, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def json_depth(obj: Any) -> int:
    """How deeply lists and dicts nest in a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, (list, dict)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                todo.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def parse_json(data: bytes, what: str) -> Any:
    """JSON from bytes, or ValueError in one line (bad UTF-8, bad JSON, nested too deeply)."""
    try:
        obj = json.loads(data.decode())
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what}: damaged json ({str(e)[:80]})") from None
    if json_depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"{what}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return obj


def _check_summary(s: dict, cfg: RunConfig) -> None:
    """ValueError naming the first field of a result's summary that has the wrong type or an impossible value."""
    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            raise ValueError(f"summary.{field} {str(s.get(field))[:40]!r} is not {what}")

    need(_num(s.get("test_error"), 0, 100), "test_error", "a number in [0, 100]")
    need(_num(s.get("test_acc"), 0, 1), "test_acc", "a number in [0, 1]")
    need(abs(s["test_error"] - 100 * (1 - s["test_acc"])) < 1e-6, "test_error", "100 x (1 - test_acc)")
    need(_num(s.get("top5_error"), 0, s["test_error"] + 1e-6), "top5_error", "a number in [0, test_error]")
    need(s.get("best_epoch_test_acc") is None or _num(s["best_epoch_test_acc"], 0, 1), "best_epoch_test_acc",
         "null or a number in [0, 1]")
    counts = s.get("train_counts")
    need(isinstance(counts, list) and len(counts) >= 2 and all(_int(c, 1) for c in counts), "train_counts",
         "a list of positive class counts")
    if cfg.dataset != "imagefolder" and cfg.imbalance != "none":
        from .data import benchmark_counts

        need(counts == benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class), "train_counts",
             "the counts its config asks for")
    C = len(counts)
    per = s.get("test_acc_per_class")
    need(isinstance(per, list) and len(per) == C and all(_num(a, 0, 1) for a in per), "test_acc_per_class",
         f"a list of {C} numbers in [0, 1]")
    classes = s.get("classes")
    need(isinstance(classes, list) and len(classes) == C and all(isinstance(c, str) for c in classes), "classes",
         f"a list of {C} class names")
    need(_int(s.get("test_images"), 1), "test_images", "a positive integer")
    groups = s.get("groups")
    need(isinstance(groups, dict) and all(isinstance(v, list) and all(_int(c) and c < C for c in v)
                                          for v in groups.values()), "groups", "class lists by group")
    gacc = s.get("group_test_acc")
    need(isinstance(gacc, dict) and all(v is None or _num(v, 0, 1) for v in gacc.values()), "group_test_acc",
         "null or numbers in [0, 1] by group")


def _check_history(h: Any, cfg: RunConfig) -> None:
    if not isinstance(h, dict):
        raise ValueError("no history")
    for k in HISTORY_KEYS:
        v = h.get(k)
        if not isinstance(v, list) or len(v) != cfg.epochs:
            raise ValueError(f"history.{k} is not a list of {cfg.epochs} epochs")
        flat = [x for row in v for x in (row if isinstance(row, list) else [row])]
        if not all(_num(x) for x in flat):
            raise ValueError(f"history.{k} holds something other than finite numbers")
    if h["epoch"] != list(range(1, cfg.epochs + 1)):
        raise ValueError("history.epoch is not 1..epochs")
    if not all(_num(x, 0, 1) for x in h["test_top1"]):
        raise ValueError("history.test_top1 is not in [0, 1]")


def _check_provenance(p: Any) -> None:
    if not isinstance(p, dict):
        raise ValueError("no provenance")
    for k in ("git_commit", "device", "torch", "precision"):
        if not isinstance(p.get(k), str):
            raise ValueError(f"provenance.{k} is not a string")
    for k in ("wall_s", "train_images_per_s"):
        if not _num(p.get(k), 0):
            raise ValueError(f"provenance.{k} {str(p.get(k))[:40]!r} is not a number >= 0")


def check_result(result: Any, profile: str, folder: str) -> RunConfig:
    """ValueError saying why `result` (parsed from <profile>/<folder>/result.json) is not a finished, consistent
    result that may enter the store; its config otherwise. Checks every field the notebooks, tables and claims
    read, its type and its range (errors in [0, 100], accuracies in [0, 1], one history entry an epoch, ...)."""
    if not isinstance(result, dict) or not isinstance(result.get("summary"), dict):
        raise ValueError("not a finished result (no summary)")
    if not isinstance(result.get("config"), dict):
        raise ValueError("no config")
    data = result.get("data")
    if not (isinstance(data, dict) and isinstance(data.get("id"), str) and len(data["id"]) >= 8
            and all(ch in "0123456789abcdef" for ch in data["id"])):
        raise ValueError("its data record has no content id")
    try:
        cfg = RunConfig.from_dict(result["config"])
        validate(cfg)
        key = expected_key(result)
    except (ConfigError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"unreadable or impossible config ({type(e).__name__}: {str(e)[:80]})") from None
    if result.get("key") != key:
        raise ValueError(f"key {result.get('key')!r} does not match its config and data ({key})")
    if folder != key:
        raise ValueError(f"folder {folder!r} does not match its key ({key})")
    if cfg.profile != profile:
        raise ValueError(f"profile {cfg.profile!r} stored under {profile!r}")
    _check_summary(result["summary"], cfg)
    _check_history(result.get("history"), cfg)
    _check_provenance(result.get("provenance"))
    return cfg


# ---------------------------------------------------------------- what to train, in order


def _in_profile(cfg: RunConfig, profile: str) -> RunConfig:
    """The same run (benchmark, method, seed, MFW choices) at another profile's size (smoke: SMOKE_OVERRIDES)."""
    over = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(RunConfig)
            if f.name != "profile" and getattr(cfg, f.name) != f.default}
    return make_config(profile, **over, **(SMOKE_OVERRIDES if profile == "smoke" else {}))


def priority_runs(profile: str = "paper") -> list[RunConfig]:
    """CIFAR-10 paper-profile runs, most valuable first (issue 7): (1) step-100 ERM and MFW; (2) exp-100 and
    step-100 x {ERM, LDAM-DRW, MFW, MFW+LDAM-DRW}; (3) the rest of the CIFAR-10 table, all seed 0; (4) the same
    for seed 1, then seed 2; (5) the ablations, seed by seed. Other profiles: the same runs at their size."""
    from .experiments import ablation_runs, cifar_table_runs

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


def images(cfg: RunConfig) -> tuple[int, int, int]:
    """(training images an epoch, evaluated images an epoch, evaluated images at the last epoch): CIFAR-10."""
    from .data import benchmark_counts

    counts = benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class)
    per = lambda k: len(counts) * min(k or 1000, 1000)  # noqa: E731 (CIFAR test sets: 1000 or 100 a class)
    clean = sum(min(c, cfg.clean_per_class or c) for c in counts)
    return sum(counts), per(cfg.eval_per_class) + clean, per(cfg.test_per_class) + clean


def estimate_s(cfg: RunConfig, rates: dict, slow: float) -> float:
    """Seconds one run takes: epochs x (train images / img/s + evaluated images / eval img/s) + set-up, where
    img/s is the eager rate (MFW's for a mixing method) x slow (the per-run share when packed), times SAFETY."""
    n, ev, last = images(cfg)
    train = (rates["mfw"] or rates["eager"]) if cfg.mixer else rates["eager"]
    r, e = train * slow, (rates["eval"] or 3 * rates["eager"]) * slow
    return SAFETY * (rates["setup_s"] + cfg.epochs * n / r + ((cfg.epochs - 1) * ev + last) / e + 0.05 * cfg.epochs)


def plan_runs(missing: list[RunConfig], rates: dict, workers: int, slow: float, available_s: float) -> list[dict]:
    """Greedy list scheduling in priority order over `workers` slots (what a process pool does with a FIFO
    queue): a run is planned when it ends within available_s in the slot that frees first."""
    slots, plan = [0.0] * workers, []
    for rank, c in enumerate(missing):
        est = estimate_s(c, rates, slow)
        i = min(range(workers), key=slots.__getitem__)
        if slots[i] + est <= available_s:
            slots[i] += est
            plan.append({"rank": rank, "cfg": c, "est_s": est, "end_s": slots[i]})
    return plan


def choose(missing: list[RunConfig], b: dict, available_s: float, default_workers: int) -> tuple[int, list[dict]]:
    """The worker count whose plan trains the highest-priority runs (compared rank by rank, then more runs),
    among 1 and each measured packed count; with no packed measurement, `default_workers`."""
    rates = {"eager": b["eager"], "mfw": b["mfw"], "eval": b["eval"], "setup_s": b["setup_s"]}
    options = {1: 1.0} if b["packed"] else {default_workers: 1.0 / default_workers}
    options.update({k: v / k / b["eager"] for k, v in b["packed"].items()})
    best = None
    for w, slow in sorted(options.items()):
        plan = plan_runs(missing, rates, w, min(1.0, slow), available_s)
        score = tuple(p["rank"] for p in plan) + (math.inf,)
        if best is None or score < best[0]:
            best = (score, w, plan)
    return best[1], best[2]


# ---------------------------------------------------------------- the run


def _train_child(plan_path: str) -> int:
    """The training process (its own process group, killed at the deadline). Started before the bench, so that
    its interpreter start overlaps it: waits for the plan, then run_many over the planned runs."""
    from .packing import RunFailures, run_many

    path = Path(plan_path)
    _die_with(os.getppid())
    while not path.exists():
        time.sleep(0.2)
    p = json.loads(path.read_text())
    if not p["configs"]:
        return 0
    cfgs = [RunConfig.from_dict(d) for d in p["configs"]]
    try:
        run_many(cfgs, device=p["device"], workers=p["workers"], executor="process", results=Path(p["results"]))
    except RunFailures as e:
        print(f"harvest: {e}", flush=True)
        return 1
    return 0


def _start_child(plan_path: Path) -> subprocess.Popen:
    """Start the training process now (it waits for plan_path); its output goes to the console and the log."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(store.REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PROCRUSTES_COMPILE", HARVEST_COMPILE)
    child = subprocess.Popen([sys.executable, "-m", "procrustes.harvest", "_train", str(plan_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def pump() -> None:
        for line in child.stdout:
            say("  | " + line.rstrip())

    child.reader = threading.Thread(target=pump, daemon=True)  # type: ignore[attr-defined]
    child.reader.start()  # type: ignore[attr-defined]
    return child


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the training process group (the child and its pool workers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if child.poll() is not None:
            break
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            break
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
    child.reader.join(timeout=5)  # type: ignore[attr-defined]


def _write_plan(plan_path: Path, plan: list[dict], workers: int, device: str, work: Path) -> None:
    store.atomic_write_text(plan_path, json.dumps({"configs": [p["cfg"].to_dict() for p in plan], "workers": workers,
                                                   "device": device, "results": str(work)}))


def _finished(work: Path) -> list[tuple[str, str, dict]]:
    """(profile, folder, result) of every finished, consistent result in the work store."""
    out = []
    for path in sorted(work.glob("*/*/result.json")):
        profile, folder = path.parent.parent.name, path.parent.name
        try:
            res = json.loads(path.read_text())
            check_result(res, profile, folder)
            out.append((profile, folder, res))
        except (ValueError, OSError) as e:
            say(f"harvest: {path} left out ({e})")
    return out


def _train(child: subprocess.Popen, plan_path: Path, plan: list[dict], workers: int, device: str, work: Path,
           deadline: float) -> int:
    """Hand the plan to the training process and wait for it, at most until the deadline (then stop it: runs
    that did not finish are left out). Returns its exit status."""
    from tqdm.auto import tqdm

    _write_plan(plan_path, plan, workers, device, work)
    bar = tqdm(total=len(plan), desc="harvest runs", unit="run", mininterval=10)
    done = 0
    while child.poll() is None and time.time() < deadline:
        time.sleep(1.0)
        now = len(list(work.glob("*/*/result.json")))
        if now > done:
            bar.update(now - done)
            done = now
    bar.close()
    if child.poll() is None:
        say(f"harvest: budget reached, stopping the runs still training (process group {child.pid})")
    _stop(child)
    return child.returncode if child.returncode is not None else -9


def write_archive(out_dir: Path, profile: str, finished: list[tuple[str, str, dict]], summary: dict) -> Path:
    """One tar.gz: <profile>/<key>/result.json for each finished run, harvest.log and harvest-summary.json."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = out_dir / f"harvest-{profile}-{stamp}.tar.gz"
    tmp = out_dir / f".{path.name}.{os.getpid()}.tmp"

    def add(tar: tarfile.TarFile, name: str, text: str) -> None:
        data = text.encode()
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tmp, "w:gz") as tar:
        for prof, folder, res in finished:
            add(tar, f"{prof}/{folder}/result.json", json.dumps(res, indent=1) + "\n")
        add(tar, "harvest-summary.json", json.dumps(summary, indent=1) + "\n")
        add(tar, "harvest.log", "\n".join(LOG) + "\n")
    os.replace(tmp, path)
    return path


def harvest(*, smoke: bool, budget_s: float, t0: float, out: Path | None, work: Path | None,
            committed: Path | None, compile_cap: float | None = None) -> int:
    """The whole harvest (see the module docstring). Returns 0 when the archive holds at least one run."""
    import torch

    from .train import TORCH_COMPILE_MODES

    device = os.environ.get("HARVEST_DEVICE") or ("cpu" if smoke else "cuda")
    mode = os.environ.get("HARVEST_COMPILE_MODE", HARVEST_COMPILE_MODE)
    if mode not in TORCH_COMPILE_MODES:
        say(f"harvest: unknown HARVEST_COMPILE_MODE {mode!r}: choose one of {', '.join(TORCH_COMPILE_MODES)}")
        return 2
    if device.startswith("cuda") and not torch.cuda.is_available():
        say("harvest: no CUDA device here (use --smoke on a CPU)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="procrustes-harvest-"))
    plan_path = tmp / "plan.json"
    child = _start_child(plan_path)
    try:
        return _harvest(smoke, device, budget_s, t0, out, work or tmp / "store", committed, compile_cap, child,
                        plan_path, mode)
    finally:
        if child.poll() is None:
            _write_plan(plan_path, [], 0, device, tmp)
            _stop(child)


def _harvest(smoke: bool, device: str, budget_s: float, t0: float, out: Path | None, work: Path, committed: Path | None,
             compile_cap: float | None, child: subprocess.Popen, plan_path: Path, mode: str) -> int:
    import torch

    profile, deadline = ("smoke" if smoke else "paper"), t0 + budget_s
    out = out or Path(tempfile.mkdtemp(prefix="procrustes-harvest-out-"))
    out.mkdir(parents=True, exist_ok=True)
    say(f"harvest: profile {profile}, device {device}, budget {budget_s:.0f} s ({deadline - time.time():.0f} s left), "
        f"torch {torch.__version__}, work store {work}, committed store {committed or store.results_dir()}")

    from .data import load_split

    t = time.time()
    for split in ("train", "test"):  # decode into the uint8 cache once, before any worker starts
        load_split("cifar10", None, split)
    say(f"harvest: CIFAR-10 loaded in {time.time() - t:.1f} s")
    queue = priority_runs(profile)
    _, missing = store.collect(queue, committed)
    say(f"harvest: {len(queue) - len(missing)} of {len(queue)} candidate runs already committed, "
        f"{len(missing)} missing")

    first = missing[0] if missing else queue[0]
    cap = float(os.environ.get("HARVEST_COMPILE_CAP_S", 0 if smoke else 45)) if compile_cap is None else compile_cap
    cap = min(cap, 0.1 * budget_s)  # what compilation costs is training time lost
    packs = [2] if smoke else [2, 3, 4]
    b = measure(first, device, seconds=0.3 if smoke else 3.0, packs=packs, compile_cap=cap,
                cap_s=max(10.0, min(120.0, deadline - time.time() - 30)), compile_mode=mode)
    n_first = images(first)[0]
    say(bench_line(first, n_first, b))
    summary: dict[str, Any] = {"profile": profile, "device": device, "budget_s": budget_s,
                               "started_utc": store.now_utc(), "bench": dict(b), "committed": len(queue) - len(missing),
                               "missing": len(missing), "planned": [], "finished": []}
    finished: list[tuple[str, str, dict]] = []
    if b["eager"] and missing:
        # the pool's processes start an interpreter before the first run (the training process started already)
        available = deadline - time.time() - ARCHIVE_RESERVE_S[profile] - b["start_s"]
        workers, plan = choose(missing, b, available, default_workers=2)
        summary["workers"] = workers
        summary["planned"] = [{"key": p["cfg"].key(), "label": p["cfg"].label(), "est_s": round(p["est_s"], 1),
                               "est_end_s": round(p["end_s"], 1)} for p in plan]
        say(f"plan: {len(plan)} run(s) on {workers} worker(s) within {available:.0f} s"
            + "".join(f"\n  {p['cfg'].label()} [{p['cfg'].key()}]: ~{p['est_s']:.0f} s, ends by ~{p['end_s']:.0f} s"
                      for p in plan))
        if plan:
            child_rc = _train(child, plan_path, plan, workers, device, work, deadline - ARCHIVE_RESERVE_S[profile])
            say(f"harvest: training ended (rc {child_rc}) with {deadline - time.time():.0f} s of the budget left")
            finished = _finished(work)
    elif not missing:
        say("harvest: nothing missing")
    else:
        say("harvest: no training rate measured, nothing trained")
    est = {p["key"]: p["est_s"] for p in summary["planned"]}
    for prof, folder, res in finished:
        pv = res.get("provenance", {})
        summary["finished"].append({"key": folder, "label": RunConfig.from_dict(res["config"]).label(),
                                    "wall_s": pv.get("wall_s"), "est_s": est.get(folder.split("-")[0]),
                                    "train_images_per_s": pv.get("train_images_per_s"),
                                    "test_error": res["summary"].get("test_error")})
    summary["elapsed_s"] = round(time.time() - t0, 1)
    say(f"harvest: {len(finished)} of {len(summary['planned'])} planned run(s) finished"
        + "".join(f"\n  {f['label']} [{f['key']}]: test error {f['test_error']:.2f}%, wall {f['wall_s']} s "
                  f"(estimated {f['est_s'] or 0:.0f} s)" for f in summary["finished"]))
    path = write_archive(out, profile, finished, summary)
    say(f"harvest: archive {path} ({len(finished)} result(s)); import it with: make harvest-import FILE={path.name}")
    return 0 if finished else 1


# ---------------------------------------------------------------- import


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
    the first bad entry (then nothing may be imported). Memory stays bounded: an entry is read only after its
    header says it is at most MAX_RESULT_BYTES."""
    entries, seen = [], set()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in _members(tar, MAX_RESULT_BYTES):
                if m.name in ("harvest.log", "harvest-summary.json"):
                    continue
                parts = m.name.split("/")
                if len(parts) != 3 or parts[2] != "result.json" or parts[0] not in PROFILES:
                    raise ValueError(f"{m.name}: not <profile>/<key>/result.json")
                if m.name in seen:
                    raise ValueError(f"{m.name}: twice in the archive")
                seen.add(m.name)
                data = tar.extractfile(m).read(MAX_RESULT_BYTES + 1)
                if len(data) > MAX_RESULT_BYTES:
                    raise ValueError(f"{m.name}: more than {MAX_RESULT_BYTES} bytes")
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
    stored different one is kept and the incoming one written beside it as result.harvest-<stamp>.json."""
    root = Path(root or store.results_dir())
    entries = read_archive(path)
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
    ap = argparse.ArgumentParser(prog="python -m procrustes.harvest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="measure, train what fits in the budget, write one archive")
    r.add_argument("--smoke", action="store_true", default=os.environ.get("HARVEST_SMOKE") == "1",
                   help="CPU, smoke profile, 90 s (also HARVEST_SMOKE=1)")
    r.add_argument("--budget", type=float, help="seconds (default $HARVEST_BUDGET_S, else 540, or 90 with --smoke)")
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
    budget = args.budget or float(env("HARVEST_BUDGET_S") or (90 if args.smoke else 540))
    t0 = float(env("HARVEST_T0") or time.time())
    pick = lambda a, k: Path(a) if a else (Path(env(k)) if env(k) else None)  # noqa: E731
    return harvest(smoke=args.smoke, budget_s=budget, t0=t0, out=pick(args.out, "OUT"),
                   work=pick(args.work, "HARVEST_RESULTS"), committed=Path(args.committed) if args.committed else None)


if __name__ == "__main__":
    from procrustes import harvest as _h  # the importable module, so that spawned workers find its functions

    sys.exit(_h.main())
