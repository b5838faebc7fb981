"""Run several training runs concurrently ("packing") and land every result in the one result store.

`run_many(configs, executor=...)`:

- "process" (the default): a pool of `workers` spawned subprocesses on this machine, each calling
  `procrustes.training.train.run`. With one GPU, the workers share it; with several, worker i uses cuda:(i mod n). On the
  CPU each worker gets cores // workers torch threads. It is the default because it needs nothing but this
  machine (no scheduler, no extra service), keeps each run in its own process (a crash or an out-of-memory
  error ends one run, not the batch; CUDA state is never shared) and uses the same code path as a single run.
- "submitit": submitit's AutoExecutor (SLURM when the machine has it, else local subprocesses; submitit is an
  optional extra, `pip install -e '.[slurm]'`); its logs and pickles go to <results>/submitit; `submitit_params`
  passes parameters through (`slurm_partition`,
  `slurm_time`, `timeout_min`, `gpus_per_node`, `cpus_per_task`, ...). One job per run, at most `workers`
  at a time (a SLURM job array with `slurm_array_parallelism` on SLURM).
- "local-submitit": submitit's LocalExecutor (what the tests use here), at most `workers` jobs at a time.
- "serial": one after another in this process.

Why pack at all: a ResNet-32 at batch 128 leaves most of a modern GPU idle (small kernels, launch overhead,
per-epoch evaluation and checkpoints on the host), so two or more runs per GPU may finish a sweep sooner.
Without MPS the GPU time-slices between processes rather than running their kernels side by side, so the gain
is bounded and MUST BE MEASURED ON THE GPU ITSELF. `python -m procrustes reproduce` (`--workers auto`) and the GPU
harvest do: they time the step alone and k packed in fresh processes (`procrustes.tooling.speed.measure`) and pass the
count that pays (`speed.best_workers`) as `workers`. `python -m procrustes bench --packed N` (`bench_packing`)
times N whole short runs one after another against N packed. run_many's own default when no count is given
(2 workers per GPU, 1 on a CPU, where torch already uses every core) is a guess, not a measurement.

Finished runs (a readable result.json in the store) are skipped; configs with the same key run once. The
images are decoded into the uint8 cache once, here, before any worker starts, so that workers never race to
write the same cache file.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from ..training import store
from ..training.config import RunConfig

EXECUTORS = ("process", "submitit", "local-submitit", "serial")
DEFAULT_TIMEOUT_MIN = 24 * 60  # submitit's own defaults (2 to 5 minutes) would kill a paper run

_WORKER: dict[str, Any] = {}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_count(device: str) -> int:
    """CUDA devices a pool on `device` spreads over: every visible one for "cuda", one for "cuda:k", none on a CPU."""
    if not device.startswith("cuda"):
        return 0
    if device != "cuda":
        return 1
    import torch

    return torch.cuda.device_count()


def default_workers(device: str) -> int:
    """2 processes per visible GPU for CUDA, 1 on a CPU (see the module docstring: measure with bench --packed)."""
    return 2 * max(1, gpu_count(device)) if device.startswith("cuda") else 1


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def torch_device_index(device: str) -> int | None:
    """'cuda:1' -> 1, 'cuda' -> None."""
    _, _, idx = device.partition(":")
    return int(idx) if idx else None


def _root_for(data_root, dataset: str):
    """data_root may be one root for every dataset, or a dict dataset -> root (missing datasets: default)."""
    if isinstance(data_root, dict):
        return data_root.get(dataset)
    return data_root


# ---------------------------------------------------------------- worker-side functions (importable, picklable)


def _init_process_worker(counter, threads: int | None, parent: int | None = None) -> None:
    with counter.get_lock():
        _WORKER["id"] = counter.value
        counter.value += 1
    _set_threads(threads)
    if parent is not None:
        end_with_parent(parent)


def end_with_parent(parent: int) -> None:
    """End this process when `parent` ends, however it ends (SIGKILL, SIGTERM, a crash): a pool worker whose parent
    is gone would go on training and writing the store for nobody. Linux: the kernel sends SIGKILL at the parent's
    death (prctl PR_SET_PDEATHSIG); everywhere, a thread checks the parent once a second. Only this process is
    ended (not its process group, which may hold the user's shell job); its runs resume from their checkpoints."""
    import signal
    import threading

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the thread below does it
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:  # gone before the signal was asked for
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True, name="end-with-parent").start()


def _fresh_compiler() -> None:
    """Forget the graphs torch.compile made for the runs before this one in the same process. Each run brings its own
    hooks and batch sizes, and the guards pile up: on 2026-12-06 a pool worker's third run hit torch._dynamo's
    recompile limit (8) and silently trained eager. A pool worker holds nothing else; in the serial path a caller's own
    compiled functions lose their graphs too and recompile on their next call (slower once, same results)."""
    import torch._dynamo

    torch._dynamo.reset()


def _process_job(cfg_dict: dict, device: str, gpus: int, data_root, results: str, progress: bool = False) -> dict | None:
    """One run in a pool worker; with progress, its bar on the worker's own line of the terminal. None without
    training when a stop was asked ($PROCRUSTES_STOP_FILE, train.stop_requested) before it started."""
    from ..training.train import run, stop_requested

    if stop_requested():
        return None

    if gpus > 1 and device == "cuda":  # several GPUs: worker i on cuda:(i mod n)
        device = f"cuda:{_WORKER.get('id', 0) % gpus}"
    if device.startswith("cuda") and torch_device_index(device) is not None:
        import torch

        torch.cuda.set_device(torch_device_index(device))
    cfg = RunConfig.from_dict(cfg_dict)
    _fresh_compiler()
    return run(cfg, device=device, data_root=_root_for(data_root, cfg.dataset), results=Path(results), progress=progress,
               bar_position=_WORKER.get("id", 0) if progress else None)


def _submitit_job(cfg_dict: dict, device: str, data_root, results: str, threads: int | None) -> dict | None:
    """One run inside a submitit job (SLURM or local). The job sees only its own GPU(s), so "cuda" means cuda:0."""
    from ..training.train import run

    slurm_cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    _set_threads(int(slurm_cpus) if slurm_cpus else threads)
    cfg = RunConfig.from_dict(cfg_dict)
    return run(cfg, device=device, data_root=_root_for(data_root, cfg.dataset), results=Path(results), progress=False)


# ---------------------------------------------------------------- the parent side


def _warm_cache(configs: list[RunConfig], data_root) -> None:
    """Load each distinct dataset once here, so that its uint8 cache exists before workers start (and a
    missing dataset fails now, with one message, rather than once per worker)."""
    from ..training.data import load_split

    seen = set()
    for c in configs:
        root = _root_for(data_root, c.dataset)
        if (c.dataset, str(root)) in seen:
            continue
        seen.add((c.dataset, str(root)))
        for split in ("train", "test"):
            load_split(c.dataset, root, split)


def _resolve(device: str) -> str:
    from ..training.train import resolve_device

    dev = resolve_device(device)
    return "cuda" if device in ("auto", "cuda") and dev.type == "cuda" else str(dev)


class RunFailures(RuntimeError):
    """Some runs of run_many failed; the others finished and are in the store. `.failures`: (config, error)."""

    def __init__(self, failures: list[tuple[RunConfig, BaseException]]):
        self.failures = failures
        lines = "; ".join(f"{c.label()} [{c.key()}]: {type(e).__name__}: {str(e)[:200]}" for c, e in failures)
        super().__init__(f"{len(failures)} run(s) failed: {lines}")


def run_many(configs: list[RunConfig], *, device: str = "auto", workers: int | None = None, executor: str = "process",
             data_root=None, results: Path | str | None = None, progress: bool = True,
             submitit_params: dict | None = None) -> list[dict]:
    """Train the configs the store lacks, several at a time, and return every config's result, in order.

    device: "auto", "cuda", "cuda:1", "cpu", ... ("auto"/"cuda" with several GPUs: round-robin over them).
    workers: runs at a time (None: 2 per GPU on CUDA, 1 on a CPU; for "submitit" on SLURM: no limit).
    executor: "process" (default), "submitit", "local-submitit" or "serial" (see the module docstring).
    data_root: one data root, or a dict dataset -> root. results: the store (default: results/ or
    $PROCRUSTES_RESULTS); every executor writes there. submitit_params: passed to update_parameters.
    Raises RunFailures after the other runs have finished when some runs fail.

    The process executor spawns fresh interpreters that import the caller's main module: a script that calls
    run_many needs the usual `if __name__ == "__main__":` guard (notebooks and `python -c` need nothing)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    if "submitit" in executor and importlib.util.find_spec("submitit") is None:
        raise ValueError(f"executor {executor!r} needs submitit, an optional extra: pip install -e '.[slurm]'")
    root = Path(results) if results is not None else store.results_dir()
    root = root.resolve()
    unique: dict[str, RunConfig] = {}
    for c in configs:
        unique.setdefault(c.key(), c)
    missing = [c for c in unique.values() if store.read_result(c, root) is None]
    if progress:
        print(f"run_many: {len(unique)} run(s), {len(unique) - len(missing)} already in {root}, {len(missing)} to train "
              f"({executor})", flush=True)
    failures: list[tuple[RunConfig, BaseException]] = []
    if missing:
        if executor == "serial":
            failures = _serial(missing, device, data_root, root, progress)
        else:
            dev = _resolve(device)
            _warm_cache(missing, data_root)
            if executor == "process":
                failures = _processes(missing, dev, workers, data_root, root, progress)
            else:
                failures = _submitit(missing, dev, workers, data_root, root, progress, executor, submitit_params or {})
    out = []
    for c in configs:
        r = store.read_result(c, root)
        if r is None and not any(f[0].key() == c.key() for f in failures):
            failures.append((c, RuntimeError("no result in the store after its run")))
        out.append(r)
    if failures:
        raise RunFailures(failures)
    return out


def _report(i: int, n: int, c: RunConfig, res: dict | None, t0: float) -> None:
    err = f"test error {res['summary']['test_error']:.2f}%" if res else "no result"
    print(f"[{i}/{n}] {c.label()} [{c.key()}]: {err} ({time.perf_counter() - t0:.0f} s since start)", flush=True)


def _collect(get_result, c: RunConfig, done: int, n: int, t0: float, failures: list, progress: bool, where: str) -> None:
    """Wait for one job's result; report it, or keep its failure for the end (the other runs go on)."""
    try:
        res = get_result()
        if progress:
            _report(done, n, c, res, t0)
    except Exception as e:  # noqa: BLE001
        failures.append((c, e))
        if progress:
            print(f"[{done}/{n}] {c.label()} [{c.key()}] FAILED{where}: {type(e).__name__}: {str(e)[-300:]}", flush=True)


def _serial(missing, device, data_root, root, progress):
    from ..training.train import run

    failures, t0 = [], time.perf_counter()
    for i, c in enumerate(missing):
        _fresh_compiler()
        job = partial(run, c, device=device, data_root=_root_for(data_root, c.dataset), results=root, progress=progress)
        _collect(job, c, i + 1, len(missing), t0, failures, progress, "")
    return failures


def _processes(missing, dev: str, workers, data_root, root, progress):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    gpus = gpu_count(dev)
    w = max(1, min(workers or default_workers(dev), len(missing)))
    threads = max(1, _cores() // w)
    ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA or torch's thread pools
    counter = ctx.Value("i", 0)
    failures, t0, done = [], time.perf_counter(), 0
    if progress:
        print(f"process pool: {w} worker(s), {threads} torch thread(s) each, device {dev}"
              + (f" (round-robin over {gpus} GPUs)" if gpus > 1 and dev == "cuda" else ""), flush=True)
    init = (counter, threads, os.getpid())  # the workers end with this process (end_with_parent)
    with ProcessPoolExecutor(max_workers=w, mp_context=ctx, initializer=_init_process_worker, initargs=init) as ex:
        # each run's own bar only on a terminal (on its worker's line); in a log file or a pipe, k bars rewriting
        # one line are unreadable: the per-run lines below say what finished
        bars = progress and sys.stderr.isatty()
        futs = {ex.submit(_process_job, c.to_dict(), dev, gpus, data_root, str(root), bars): c for c in missing}
        for f in as_completed(futs):
            done += 1
            _collect(f.result, futs[f], done, len(missing), t0, failures, progress, "")
    return failures


@contextlib.contextmanager
def _importable_env():
    """While jobs are submitted (they copy this environment), put this package's folder on PYTHONPATH, so
    that a job's fresh interpreter imports the same procrustes even where it is not pip-installed."""
    old = os.environ.get("PYTHONPATH")
    here = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = here + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _submitit(missing, dev: str, workers, data_root, root, progress, executor: str, params: dict):
    with _importable_env():
        return _submitit_jobs(missing, dev, workers, data_root, root, progress, executor, params)


def _submitit_jobs(missing, dev: str, workers, data_root, root, progress, executor: str, params: dict):
    import submitit

    folder = root / "submitit"
    cuda = dev.startswith("cuda")
    gpus = 0
    if cuda:
        import torch

        gpus = max(1, torch.cuda.device_count())
    if executor == "local-submitit":
        ex = submitit.LocalExecutor(folder=folder)
    else:
        ex = submitit.AutoExecutor(folder=folder)
    slurm = getattr(ex, "cluster", "local") == "slurm"
    base: dict[str, Any] = {"timeout_min": DEFAULT_TIMEOUT_MIN, "gpus_per_node": 1 if cuda else 0}
    if executor == "submitit":
        base["name"] = "procrustes"
    base.update(params)
    w = workers or (None if slurm else default_workers(dev))
    threads = None if slurm else max(1, _cores() // (w or 1))
    job_device = "cuda" if cuda else dev  # each job sees its own GPU as cuda:0
    failures, t0, done = [], time.perf_counter(), 0
    args = [(c.to_dict(), job_device, data_root, str(root), threads) for c in missing]

    if slurm:
        if w:
            base.setdefault("slurm_array_parallelism", w)
        ex.update_parameters(**base)
        jobs = ex.map_array(_submitit_job, *zip(*args))
        if progress:
            print(f"submitit (slurm): {len(jobs)} job(s) in {folder}, ids {jobs[0].job_id}..", flush=True)
        pending = list(zip(missing, jobs))
    else:
        # local: submit at most w at a time, each job on one GPU chosen round-robin
        ex.update_parameters(**base)
        queue, pending, running = list(zip(missing, args)), [], []
        if progress:
            print(f"submitit (local): {len(queue)} job(s), {w} at a time, logs in {folder}", flush=True)
        i = 0
        while queue or running:
            while queue and len(running) < w:
                c, a = queue.pop(0)
                if cuda:  # AutoExecutor does not pass visible_gpus through: set it on its LocalExecutor
                    getattr(ex, "_executor", ex).update_parameters(visible_gpus=[i % gpus])
                i += 1
                running.append((c, ex.submit(_submitit_job, *a)))
            time.sleep(0.5)
            still = []
            for c, j in running:
                (pending if j.done() else still).append((c, j))
            running = still
    for c, j in pending:
        done += 1
        _collect(j.result, c, done, len(missing), t0, failures, progress, f" (job {j.job_id}, logs {folder})")
    return failures
