"""Training speed measured in fresh processes, as the runs will train: one run alone (ERM and MFW), k runs packed
at once (their aggregate images/s), forward-only evaluation, and optionally compiled.

Why a module of its own: the GPU harvest (`procrustes.tooling.harvest`) plans what fits in its window from these rates,
and `python -m procrustes reproduce --workers auto` chooses how many runs to pack from them
(`best_workers`). Packing is only worth it where it is measured to pay: without MPS a GPU time-slices between
processes, and on a CPU k processes share the same cores (each gets cores // k torch threads).

Imports only torch, numpy, PIL, tqdm and this package (the harvest's GPU machine has nothing else)."""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from ..training.config import RunConfig
from .packing import _cores

# a packed count is chosen only when its aggregate beats the best smaller count's by this factor: below it, the
# gain is within the noise of a few seconds' measurement, and each extra process costs memory and makes every
# run's own wall time longer (the results of a sweep arrive later, one by one)
PACK_MIN_GAIN = 1.05
# seconds of back-to-back training steps behind each rate `reproduce --workers auto` compares (after a warm-up
# step): long enough for tens of ResNet-32 steps on a CPU and hundreds on a GPU, short beside any real run
MEASURE_S = 3.0


def threads_per_process(device: str, sizes: list[int], cores: int) -> dict[int, int]:
    """Torch threads of each process while k of them train, for each k in sizes. CUDA: the host cores split
    evenly over the largest pack (the GPU does the work, threads only feed it). CPU: cores // k, as run_many
    gives its workers, so that one process alone uses every core and k packed ones share them."""
    if device.startswith("cuda"):
        return {k: max(1, cores // max(sizes)) for k in sizes}
    return {k: max(1, cores // k) for k in sizes}


def best_workers(b: dict, min_gain: float = PACK_MIN_GAIN) -> int:
    """Runs to pack per device, from measure()'s rates: 1 (one run alone at b["eager"]) unless a packed count's
    aggregate images/s beats the best smaller count's by min_gain; the largest such count wins."""
    if not b.get("eager"):
        return 1
    best_k, best_rate = 1, b["eager"]
    for k, rate in sorted(b.get("packed", {}).items()):
        if rate and rate >= min_gain * best_rate:
            best_k, best_rate = k, rate
    return best_k


def _die_with(parent: int) -> None:
    """In a worker or the training process: when the harvest that started it is gone (killed by a timeout, say),
    kill its own process group (itself and its helpers), so that nothing keeps the GPU busy for nobody."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def _timed_for(step, seconds: float, lr: float, dev) -> tuple[int, float]:
    """Images trained and seconds taken by back-to-back steps for about `seconds` (at least 1 step on a CPU, 2
    on a GPU, where the first may still be queued when the clock starts)."""
    from .bench import sync

    sync(dev)
    t0, n, k = time.perf_counter(), 0, 0
    while k < (2 if dev.type == "cuda" else 1) or time.perf_counter() - t0 < seconds:
        n += step(lr)
        k += 1
    sync(dev)
    return n, time.perf_counter() - t0


def _bench_worker(i: int, cfg_d: dict, device: str, seconds: float, packs: list[int], compile_cap: float,
                  threads: dict[int, int], barrier, q, parent: int, data_root=None,
                  compile_mode: str = "default") -> None:
    """One bench process: ERM alone (worker 0), MFW alone (worker 0), then k workers at once for each k in
    packs, then (worker 0) the forward-only evaluation rate and torch.compile. threads[k]: torch threads of each
    process while k of them train. Messages go to q."""
    try:
        entered = time.time()  # the imports of the spawned interpreter are done by now
        os.setpgrp()  # its own process group: stopping it also stops the compiler's helper processes
        _die_with(parent)
        import torch

        from .bench import Ours, timed_steps
        from ..training.data import load_benchmark
        from ..training.store import device_name
        from ..training.train import evaluate, resolve_device

        torch.set_num_threads(threads[1])
        dev = resolve_device(device)
        cfg = RunConfig.from_dict(cfg_d)
        b = load_benchmark(cfg, data_root)
        warm = 3 if dev.type == "cuda" else 1
        ours = Ours(b, cfg, dev)
        timed_steps(ours.step, warm, cfg.lr, dev)
        mfw = Ours(b, cfg.replace(method="mfw"), dev) if i == 0 else None
        if mfw is not None:
            timed_steps(mfw.step, warm, cfg.lr, dev)
        q.put(("ready", i, entered, time.time() - entered, device_name(dev), ours.bf16))
        wait = lambda: barrier.wait(timeout=300)  # noqa: E731
        wait()
        if i == 0:
            q.put(("eager", i, *_timed_for(ours.step, seconds, cfg.lr, dev)))
        wait()
        if i == 0:
            q.put(("mfw", i, *_timed_for(mfw.step, seconds, cfg.lr, dev)))
        for k in packs:
            torch.set_num_threads(threads[k])
            wait()
            if i < k:
                q.put((f"packed{k}", i, *_timed_for(ours.step, seconds, cfg.lr, dev)))
        if i != 0:
            return
        torch.set_num_threads(threads[1])
        n_eval = 10000 if dev.type == "cuda" else 64
        tx = torch.from_numpy(b.test_x[:n_eval]).to(dev)
        ty = torch.from_numpy(b.test_y[:n_eval]).to(dev)
        args = (ours.model, tx, ty, len(b.counts), b.spec.mean, b.spec.std, ours.bf16)
        evaluate(*args)
        from .bench import sync

        sync(dev)
        t = time.perf_counter()
        evaluate(*args)
        sync(dev)
        q.put(("eval", i, len(ty), time.perf_counter() - t))
        if compile_cap > 0:
            try:
                t = time.perf_counter()
                ours.model.compile(mode=compile_mode)  # in place, as train() compiles
                timed_steps(ours.step, 3, cfg.lr, dev)  # compiles
                q.put(("compile-ready", i, time.perf_counter() - t))
                q.put(("compiled", i, *_timed_for(ours.step, seconds, cfg.lr, dev)))
            except Exception as e:  # noqa: BLE001 (any failure of torch.compile is reported, not fatal)
                q.put(("compile-error", i, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))
    except Exception as e:  # noqa: BLE001
        try:
            barrier.abort()
        finally:
            q.put(("error", i, f"{type(e).__name__}: {str(e)[:200]}"))


def _killpg(pgid: int | None, sig: int) -> None:
    """Signal a process group that one of our workers made (nothing when it is gone)."""
    try:
        if pgid:
            os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _collect(q, procs, res: dict, got: dict, need: set, packs: list[int], compile_cap: float, cap_s: float,
             t0: float, spawned: float) -> None:
    """Read the bench processes' messages into res (setup, errors, compilation) and got (rates by kind) until
    every rate is in and the compilation is done or out of time, or cap_s runs out."""
    import queue as _queue

    deadline, compile_deadline = t0 + cap_s, None
    while True:
        now = time.perf_counter()
        end = compile_deadline if compile_deadline else deadline
        if now >= end:
            if compile_deadline:
                res["compile_note"] = f"not done within {compile_cap:.0f} s"
            else:
                res["errors"].append(f"bench not done within {cap_s:.0f} s")
            return
        try:
            msg = q.get(timeout=min(1.0, end - now))
        except _queue.Empty:
            if not any(p.is_alive() for p in procs):
                res["errors"].append(f"bench processes ended (exit codes {[p.exitcode for p in procs]})")
                return
            continue
        kind = msg[0]
        if kind == "ready":  # start_s: a fresh interpreter's imports; setup_s: data, model, first steps
            res["start_s"] = max(res["start_s"] or 0.0, msg[2] - spawned)
            res["setup_s"] = max(res["setup_s"] or 0.0, msg[3])
            res["device_name"], res["bf16"] = msg[4], msg[5]
        elif kind == "error":
            res["errors"].append(f"worker {msg[1]}: {msg[2]}")
            return
        elif kind == "compile-ready":
            res["compile_s"] = msg[2]
        elif kind == "compile-error":
            res["compile_note"] = msg[2]
            return
        elif kind == "compiled":
            res["compiled"], res["compile_note"] = msg[2] / msg[3], "ok"
            return
        else:
            got.setdefault(kind, []).append(msg[2:])
        if need <= set(got) and all(len(got[f"packed{k}"]) == k for k in packs) and compile_deadline is None:
            if compile_cap <= 0:
                return
            compile_deadline = time.perf_counter() + compile_cap


def _stop_workers(procs) -> None:
    """Join the bench processes; stop (then kill) any still running, with their compiler helper processes."""
    for p in procs:
        p.join(timeout=2)
        if p.is_alive():
            _killpg(p.pid, signal.SIGTERM)
            p.join(timeout=5)
        _killpg(p.pid, signal.SIGKILL)  # the compiler's helper processes may outlive the worker
        if p.is_alive():  # it had not made its group yet
            p.kill()
            p.join(timeout=5)


def measure(cfg: RunConfig, device: str, *, seconds: float, packs: list[int], compile_cap: float,
            cap_s: float, data_root=None, compile_mode: str = "default") -> dict:
    """Training images/s of cfg's step in fresh processes (as the runs will be): eager alone, MFW alone, k packed
    processes (aggregate), forward-only evaluation, and compiled in torch's compile_mode (within compile_cap
    seconds). What was not measured is None. cap_s bounds everything but the compilation."""
    import multiprocessing as mp

    n = max([1] + packs)
    threads = threads_per_process(device, [1] + packs, _cores())
    ctx = mp.get_context("spawn")
    q, barrier = ctx.Queue(), ctx.Barrier(n)
    t0, spawned = time.perf_counter(), time.time()
    procs = [ctx.Process(target=_bench_worker, args=(i, cfg.to_dict(), device, seconds, packs, compile_cap, threads,
                                                     barrier, q, os.getpid(), data_root, compile_mode))
             for i in range(n)]
    for p in procs:
        p.start()
    need = {"eager", "mfw", "eval"} | {f"packed{k}" for k in packs}
    got: dict[str, list] = {}
    res: dict[str, Any] = {"eager": None, "mfw": None, "packed": {}, "eval": None, "compiled": None,
                           "compile_note": "skipped" if compile_cap <= 0 else "not reached", "start_s": None, "setup_s": None,
                           "device_name": None,
                           "bf16": None, "threads": threads, "compile_mode": compile_mode, "errors": []}
    try:
        _collect(q, procs, res, got, need, packs, compile_cap, cap_s, t0, spawned)
    finally:
        _stop_workers(procs)
    rate = lambda rows: sum(r[0] for r in rows) / max(r[1] for r in rows)  # noqa: E731 (aggregate of concurrent ones)
    for k in ("eager", "mfw", "eval"):
        if k in got:
            res[k] = rate(got[k])
    for k in packs:
        if len(got.get(f"packed{k}", [])) == k:
            res["packed"][k] = rate(got[f"packed{k}"])
    res["wall_s"] = time.perf_counter() - t0
    return res


def rate(v: float | None, unit: str = " img/s") -> str:
    """One measured rate as printed everywhere: whole images a second, or 'n/a' where nothing was measured."""
    return f"{v:.0f}{unit}" if v else "n/a"


def pack_rates(b: dict, alone: bool = False, unit: str = " img/s") -> str:
    """'x2 ..., x3 ...': the aggregate rate of each packed count in a measurement (with x1 first if alone)."""
    rows = ([(1, b["eager"])] if alone else []) + sorted(b["packed"].items())
    return ", ".join(f"x{k} {rate(v, unit)}" for k, v in rows) or "n/a"


def bench_line(cfg: RunConfig, n_train: int, b: dict) -> str:
    """The one bench line: every number measured here, 'n/a' for what was not."""
    packed = pack_rates(b)
    comp = rate(b["compiled"]) if b["compiled"] else f"n/a ({b['compile_note']})"
    if b["compile_note"] != "skipped":
        comp = f"({b.get('compile_mode', 'default')}) {comp}"
    if b["compiled"] and b.get("compile_s"):
        comp += f" after {b['compile_s']:.0f} s of compilation"
    threads = ", ".join(f"x{k} {t}" for k, t in sorted((b.get("threads") or {}).items())) or "n/a"
    errors = f"; errors: {'; '.join(b['errors'])}" if b["errors"] else ""
    return (f"bench: cifar10 {cfg.imbalance}-{cfg.ratio:g} {cfg.method} ({cfg.profile}, {n_train} train images, batch "
            f"{cfg.batch_size}) on {b['device_name'] or 'n/a'} ({'bf16' if b['bf16'] else 'fp32'}): "
            f"eager {rate(b['eager'])}, mfw {rate(b['mfw'])}, compiled {comp}, packed aggregate {packed}, "
            f"eval {rate(b['eval'])}; torch threads a process {threads}; process start {b['start_s'] or 0:.1f} s, "
            f"run set-up {b['setup_s'] or 0:.1f} s; "
            f"{b['wall_s']:.0f} s{errors}")


# ---------------------------------------------------------------- hours a run will take on this machine

TEST_PER_CLASS = {"cifar10": 1000, "cifar100": 100, "tinyimagenet": 50}  # the balanced test (val) sets' sizes


def epoch_images(cfg: RunConfig) -> tuple[int, int]:
    """(training images an epoch, images a whole run evaluates) of a named CIFAR/Tiny benchmark, from its counts
    and its evaluation settings (`train.evaluate_epoch`, `train.full_test_epoch`), without loading it."""
    from ..training.data import benchmark_counts
    from ..training.train import full_test_epoch

    counts = benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class)
    per_class = TEST_PER_CLASS[cfg.dataset] if cfg.test_per_class is None else min(cfg.test_per_class, TEST_PER_CLASS[cfg.dataset])
    test_n = per_class * len(counts)
    curve = test_n if cfg.eval_per_class is None else min(cfg.eval_per_class, per_class) * len(counts)
    clean = sum(counts) if cfg.clean_per_class is None else sum(min(n, cfg.clean_per_class) for n in counts)
    val = 0 if cfg.val_per_class is None else cfg.val_per_class * len(counts)
    full = sum(full_test_epoch(cfg, e) for e in range(cfg.epochs))
    # an epoch with the whole test set takes the curve from it; the others evaluate the curve (when asked)
    evals = (cfg.epochs - full) * curve + full * test_n + cfg.epochs * (clean + val)
    return sum(counts), evals


def measure_rates(cfg: RunConfig, data_root=None, seconds: float = 10.0) -> dict:
    """Training and evaluation images/s of cfg's step on this CPU, one thread, eager, fp32 (as `reproduce` trains
    a CPU's paper runs), measured now for about `seconds` each after a warm-up, with the load average beside it:
    other processes on the cores make these rates pessimistic."""
    import torch

    from ..training.data import load_benchmark
    from ..training.train import evaluate
    from .bench import Ours

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        bench = load_benchmark(cfg, data_root)
        ours = Ours(bench, cfg, torch.device("cpu"))
        ours.step(cfg.lr)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += ours.step(cfg.lr)
        train = n / (time.perf_counter() - t0)
        x, y = ours.train_x[:1000], ours.train_y[:1000]
        evaluate(ours.model, x[:128], y[:128], len(bench.counts), bench.spec.mean, bench.spec.std, False)
        m, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 2:
            evaluate(ours.model, x, y, len(bench.counts), bench.spec.mean, bench.spec.std, False)
            m += len(y)
        ev = m / (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return {"train": train, "eval": ev, "load": os.getloadavg()[0], "config": cfg.label()}


def run_hours(cfg: RunConfig, rates: dict) -> float:
    """Expected wall hours of cfg at measure_rates' rates (training plus evaluation)."""
    n, evals = epoch_images(cfg)
    return (n * cfg.epochs / rates["train"] + evals / rates["eval"]) / 3600
