"""Command line: `python -m procrustes {counts,train,reproduce,bench} ...`; bad input is one line, exit 2."""
from __future__ import annotations

import argparse
import sys

from .config import PROFILES, ConfigError, make_config, parse_assignment
from .data import DataError


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
    t.add_argument("--compile", choices=("auto", "on", "off"), help="torch.compile the model (default: "
                   "$PROCRUSTES_COMPILE or auto: on CUDA, and on a CPU for runs of 200k images or more)")

    r = sub.add_parser("reproduce", help="train every run the notebooks need that the store lacks (resumable)")
    r.add_argument("--profile", default="cpu")
    r.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 02 05")
    r.add_argument("--device", default="auto")
    r.add_argument("--data-root", help="data root for CIFAR-10 (others use data/<name>)")
    r.add_argument("--results")
    r.add_argument("--compile", choices=("auto", "on", "off"), help="as for train")
    r.add_argument("--list", action="store_true", help="only list the missing runs")

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
    b.add_argument("--compile", action="store_true", help="also time ours with the model compiled (torch.compile; "
                   "its compilation takes about a minute on a CPU)")
    b.add_argument("--hooks", action="store_true", help="instead: MFW through forward hooks (the trainer's path and "
                   "procrustes.weaken's) against the same mixing written in line, ResNet-32 on the CPU")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "counts":
            from .data import benchmark_counts

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
        from .train import TrainingDiverged

        if isinstance(e, TrainingDiverged):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    return 0


def _train(args) -> int:
    from pathlib import Path

    from .data import check_root
    from .store import run_dir
    from .train import resolve_device, run

    over = {k: getattr(args, k) for k in ("sampler", "model", "epochs", "seed", "max_per_class", "mfw_point", "mfw_select",
                                          "mfw_prob", "mfw_lam", "mfw_active")}
    over.update(dict(parse_assignment(a) for a in args.set))
    cfg = make_config(args.profile, dataset=args.dataset, imbalance=args.imbalance, ratio=args.ratio, method=args.method, **over)
    check_root(cfg.dataset, args.data_root)
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

    from .experiments import all_runs
    from .store import collect
    from .train import run

    results = Path(args.results) if args.results else None
    configs = all_runs(args.profile, args.only)
    _, missing = collect(configs, results)
    print(f"{args.profile}: {len(configs) - len(missing)} of {len(configs)} runs stored, {len(missing)} missing")
    for i, c in enumerate(missing):
        print(f"  missing: {c.label()} [{c.key()}]")
    if args.list:
        return 0
    for i, c in enumerate(missing):
        print(f"[{i + 1}/{len(missing)}] {c.label()}", flush=True)
        root = args.data_root if c.dataset == "cifar10" else None
        run(c, device=args.device, data_root=root, results=results, compile=args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
