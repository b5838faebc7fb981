"""Command line: `python -m procrustes {counts,train,reproduce,bench} ...`; bad input is one line, exit 2."""
from __future__ import annotations

import argparse
import sys

from ..training.config import NONE, PROFILES, ConfigError, make_config, parse_assignment
from ..training.data import DataError


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m procrustes", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("counts", help="per-class training counts of a benchmark (no images needed)")
    c.add_argument("--dataset", default="cifar10")
    c.add_argument("--imbalance", default="exp")
    c.add_argument("--ratio", type=float, default=100)
    c.add_argument("--max-per-class", type=int)

    t = sub.add_parser("train", help="train one run (or read it back from the result store)")
    t.add_argument("--dataset", default="cifar10")
    t.add_argument("--imbalance", default="exp")
    t.add_argument("--ratio", type=float, default=100)
    t.add_argument("--method", default="erm", help="a loss, optionally '+' a mixing method, e.g. mfw+ldam-drw")
    t.add_argument("--sampler")
    t.add_argument("--model")
    t.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--max-per-class", type=int)
    t.add_argument("--mfw-point")
    t.add_argument("--mfw-select")
    t.add_argument("--mfw-prob", type=float)
    t.add_argument("--mfw-lam")
    t.add_argument("--mfw-active")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any RunConfig field")
    t.add_argument("--device", default="auto")
    t.add_argument("--data-root")
    t.add_argument("--results", help="result store (default: results/ or $PROCRUSTES_RESULTS)")
    t.add_argument("--compile", help="torch.compile the model: auto, on, off, or a torch mode (reduce-overhead, "
                   "max-autotune, max-autotune-no-cudagraphs); default $PROCRUSTES_COMPILE or auto: on CUDA, and on "
                   "a CPU for runs of 200k images or more")

    r = sub.add_parser("reproduce", help="train every run the notebooks need that the store lacks (resumable)")
    r.add_argument("--profile", default="cpu")
    r.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 02 05")
    r.add_argument("--device", default="auto")
    r.add_argument("--data-root", help="data root for CIFAR-10 (others use data/<name>)")
    r.add_argument("--results")
    r.add_argument("--compile", help="as for train")
    r.add_argument("--list", action="store_true", help="only list the missing runs")
    r.add_argument("--workers", default="auto", help="runs trained at once on each device (packed, one process "
                   "each), or auto (the default): measure 1 against 2, 3, 4 packed for a few seconds, keep the "
                   "count that pays (procrustes.tooling.speed.best_workers)")

    b = sub.add_parser("bench", help="images/s of our trainer against the reference pipeline, same process")
    b.add_argument("--device", default="auto")
    b.add_argument("--steps", type=int, default=20)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--data-root")
    b.add_argument("--accuracy-steps", type=int, metavar="K", help="also train each pipeline K steps and compare test accuracy")
    b.add_argument("--aug-samples", type=int, default=10000, help="crops sampled from each pipeline for the augmentation check")
    b.add_argument("--packed", type=int, metavar="N", help="instead: N short runs one after another against N packed concurrently")
    b.add_argument("--packed-epochs", type=int, help="epochs of each --packed run (default: 5 on CUDA, 1 smoke run on CPU)")
    b.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="also time ours with the model compiled (torch.compile, in torch's MODE if given: default, "
                   "reduce-overhead, max-autotune, ...; its compilation takes about a minute on a CPU)")
    b.add_argument("--eval", nargs="?", const="default", metavar="N", help="instead: the trainer's evaluation "
                   "(img/s) at several batches on N random images (default 2000 on a CPU, 10000 on CUDA), ratio last")
    b.add_argument("--precision", action="store_true", help="instead: the trainer's step in fp32 against bf16 autocast "
                   "(img/s, alternating in one process, ratio bf16/fp32 last): how CPU runs choose their precision")
    b.add_argument("--hooks", action="store_true", help="instead: MFW through forward hooks (the trainer's path and "
                   "procrustes.method.weaken's) against the same mixing written in line, ResNet-32 on the CPU")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "counts":
            from ..training.data import benchmark_counts

            make_config("paper", dataset=args.dataset, imbalance=args.imbalance, ratio=args.ratio, max_per_class=args.max_per_class)
            counts = benchmark_counts(args.dataset, args.imbalance, args.ratio, args.max_per_class)
            print(f"{args.dataset} {args.imbalance} rho={args.ratio:g}: {counts}")
            print(f"total: {sum(counts)}")
            return 0
        if args.cmd == "train":
            return _train(args)
        if args.cmd == "reproduce":
            return _reproduce(args)
        if args.cmd == "bench":
            from .bench import main as bench_main

            return bench_main(args)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from ..training.store import StoreError
        from ..training.train import TrainingDiverged

        if isinstance(e, (TrainingDiverged, StoreError)):
            _close_bars()
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    return 0


def _close_bars() -> None:
    """Close the progress bars an error interrupted, so that the error gets a line of its own."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()


def _train(args) -> int:
    from pathlib import Path

    from ..training.data import check_root
    from ..training.store import check_writable, run_dir
    from ..training.train import resolve_device, run, use_compile

    use_compile(args.compile, resolve_device("cpu"), 0)  # a bad setting: one line, before anything is read
    over = {k: getattr(args, k) for k in ("dataset", "imbalance", "ratio", "method", "sampler", "model", "epochs", "seed",
                                          "max_per_class", "mfw_point", "mfw_select", "mfw_prob", "mfw_lam", "mfw_active")}
    over.update(set_overrides(args.set))  # --set wins over the flags, as a later flag would
    cfg = make_config(args.profile, **over)
    check_root(cfg.dataset, args.data_root)
    check_writable(Path(args.results) if args.results else None)
    try:
        dev = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from None
    res = run(cfg, device=dev, data_root=args.data_root, results=Path(args.results) if args.results else None,
              compile=args.compile)
    s = res["summary"]
    groups = ", ".join(f"{g} {100 * a:.1f}%" for g, a in s["group_test_acc"].items() if a is not None)
    print(f"{cfg.label()}: test top-1 error {s['test_error']:.2f}% ({groups})")
    print(f"result: {run_dir(cfg, Path(args.results) if args.results else None, res['data']['id']) / 'result.json'}")
    return 0


def _reproduce(args) -> int:
    from pathlib import Path

    from ..training.config import run_label
    from ..results.experiments import all_runs, stored_and_missing
    from ..results.selection import pending
    from ..training.store import checkpoint_epoch

    results = Path(args.results) if args.results else None
    workers = _workers_arg(args.workers)
    _check_only(args.only)
    configs = all_runs(args.profile, args.only, results)
    _, missing = stored_and_missing(configs, results)
    gpu_only = []
    if args.profile == "paper" and _device_type(args.device) == "cpu":
        # a CPU trains the paper profile's anchors and selected MFW rows, in their order; the rest of the grid
        # (CIFAR-100, Tiny-ImageNet, the other methods) is left to a GPU
        from ..results.experiments import paper_cpu_runs

        order = {c.key(): i for i, c in enumerate(paper_cpu_runs(results))}
        gpu_only = [c for c in missing if c.key() not in order]
        missing = sorted((c for c in missing if c.key() in order), key=lambda c: order[c.key()])
    print(f"{args.profile}: {len(configs) - len(missing) - len(gpu_only)} of {len(configs)} runs stored, "
          f"{len(missing) + len(gpu_only)} missing")
    if not args.only or any("09_selection".startswith(n) for n in args.only):
        for line in pending(args.profile, results):
            print(f"  not yet listed: {line}")
    hours = _cpu_hours(missing, args) if gpu_only or (args.profile == "paper" and missing and _device_type(args.device) == "cpu") else None
    for i, c in enumerate(missing):
        ep = checkpoint_epoch(c, results)
        h = "" if hours is None else f", about {hours(c) * (1 - (ep or 0) / c.epochs):.1f} h here"
        print(f"  missing: {run_label(c)} [{c.key()}]" + (f" ({ep} of {c.epochs} epochs checkpointed: resumes{h})" if ep
                                                             else (f" ({h[2:]})" if h else "")))
    if gpu_only:
        print(f"  left to a GPU: {len(gpu_only)} more missing runs of the paper grid (CIFAR-100, Tiny-ImageNet, the other "
              f"methods and ablations); this CPU trains the {len(missing)} above")
    if args.list or not missing:
        return 0
    from ..training.store import check_writable

    check_writable(results)
    from ..training.train import resolve_device, use_compile

    use_compile(args.compile, resolve_device("cpu"), 0)  # a bad $PROCRUSTES_COMPILE: one line, before any work
    try:
        dev = resolve_device(args.device)
    except (ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from None
    if workers is None:
        workers = _measured_workers(missing[0], str(dev), len(missing), args.data_root)
    if workers == 1:
        from ..training.train import run

        for i, c in enumerate(missing):
            print(f"[{i + 1}/{len(missing)}] {c.label()}", flush=True)
            root = args.data_root if c.dataset == "cifar10" else None
            run(c, device=args.device, data_root=root, results=results, compile=args.compile)
        return 0
    import os

    from .packing import gpu_count, run_many

    if args.compile:  # the pool's fresh interpreters read it from the environment
        os.environ["PROCRUSTES_COMPILE"] = args.compile
    gpus = gpu_count(str(dev))
    run_many(missing, device=args.device, workers=workers * max(1, gpus), results=results,
             data_root={"cifar10": args.data_root} if args.data_root else None)
    return 0


def _cpu_hours(missing: list, args):
    """hours(cfg) for the paper profile on this CPU: wall hours from the training and evaluation rates measured now
    on the first missing run (one thread, eager, fp32, as the runs train; `speed.measure_rates`), printed with the
    load they were measured under; None when the data cannot be loaded (the list is printed without hours)."""
    from ..training.data import DataError
    from .speed import measure_rates, run_hours

    try:
        rates = measure_rates(missing[0], args.data_root)
    except (DataError, OSError) as e:
        print(f"  (no hours: cannot measure on {missing[0].label()}: {e})")
        return None
    print(f"  hours: measured now with {rates['config']}, one thread, eager, fp32: training {rates['train']:.0f} img/s, "
          f"evaluation {rates['eval']:.0f} img/s, load average {rates['load']:.2f} (other work on the cores makes them "
          f"pessimistic); two runs train side by side, one thread each")
    return lambda c: run_hours(c, rates)


def _check_only(prefixes: list[str] | None) -> None:
    """--only: each prefix must name at least one notebook that has runs (a typo would list 0 of 0 runs and
    succeed)."""
    from ..results.experiments import NOTEBOOK_RUNS, SELECTION_NOTEBOOK

    names = [*NOTEBOOK_RUNS, SELECTION_NOTEBOOK]
    for n in prefixes or []:
        if not any(name.startswith(n) for name in names):
            raise ConfigError(f"--only {n!r} names no notebook with runs: give prefixes of {', '.join(names)}")


def _device_type(device: str) -> str:
    """'cpu' or 'cuda': the type --device resolves to (auto: cuda when torch sees one), 'cpu' when it cannot
    be resolved (the error comes later, in one line)."""
    from ..training.train import resolve_device

    try:
        return resolve_device(device).type
    except (ValueError, RuntimeError):
        return "cpu"


def set_overrides(assignments: list[str]) -> dict:
    """--set FIELD=VALUE ... as make_config overrides: a value none sets the field to None (NONE), where a flag
    left out (None) keeps the profile's value."""
    return {name: NONE if value is None else value for name, value in map(parse_assignment, assignments)}


def _workers_arg(value: str) -> int | None:
    """--workers: a positive count, or "auto" (None: chosen by measurement)."""
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--workers must be a positive number of runs or auto, not {value!r}")
    return n


def _measured_workers(cfg, device: str, n_missing: int, data_root) -> int:
    """Runs to pack per device, measured with the first missing run's step (procrustes.tooling.speed): 1 for a single
    missing run or where the measurement fails."""
    from .packing import _cores
    from .speed import MEASURE_S, PACK_MIN_GAIN, best_workers, measure, pack_rates

    if n_missing < 2:
        return 1
    top = n_missing if device.startswith("cuda") else min(n_missing, _cores())
    packs = [k for k in (2, 3, 4) if k <= top]
    if not packs:
        return 1
    print(f"workers: measuring {cfg.label()} alone and {', '.join(map(str, packs))} packed on {device} ...", flush=True)
    root = data_root if cfg.dataset == "cifar10" else None
    b = measure(cfg, device, seconds=MEASURE_S, packs=packs, compile_cap=0, cap_s=300.0, data_root=root)
    w = best_workers(b)
    rates = pack_rates(b, alone=True, unit="")
    errors = f"; errors: {'; '.join(b['errors'])}" if b["errors"] else ""
    print(f"workers: {w} a device (aggregate img/s {rates}; a larger count must gain "
          f"{(PACK_MIN_GAIN - 1) * 100:.0f}%){errors}", flush=True)
    return w
