"""The command line of the Procrustean-training companion: `python -m procrustes COMMAND [options]`.

Commands: `counts` (per-class training counts of a benchmark), `train` (one run), `reproduce` (every run the
notebooks need), `bench` (training speed). `python -m procrustes COMMAND --help` lists a command's options, each
with its choices and its default. A misspelt option or value is an error that names the closest valid one."""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys

from ..method.choices import MFW_LAM, MFW_SELECT, MIXING_POINTS
from ..method.counts import PAPER_SIZES
from ..training.config import (DATASETS, IMBALANCES, LOSSES, MFW_ACTIVE, MIXERS, MODELS, NONE, PROFILES, SAMPLERS,
                               ConfigError, RunConfig, make_config, parse_assignment)
from ..training.data import DataError

COUNTS_DEFAULTS = {"dataset": "cifar10", "imbalance": "exp", "ratio": 100.0}
DEVICE_HELP = "auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; default auto"
PAPER_N_MAX = "the paper's n_max"
MIXING_POINT_CHOICES = tuple(dict.fromkeys(p for points in MIXING_POINTS.values() for p in points)) + ("random",)


def _one_of(choices) -> str:
    return "{" + ",".join(choices) + "}"


def _by_profile(field: str, none: str = "all") -> str:
    """A RunConfig field's value in each profile, e.g. 'paper: 200, cpu: 80, smoke: 2': the default of a flag left out."""
    values = []
    for p, over in PROFILES.items():
        v = over.get(field, getattr(RunConfig, field))
        values.append(f"{p}: {none if v is None else v}")
    return ", ".join(values)


def method_spellings() -> list[str]:
    """Every valid --method: a loss, a mixing method, or one of each joined by '+' (either order)."""
    pairs = [f"{a}+{b}" for loss in LOSSES for mix in MIXERS for a, b in ((loss, mix), (mix, loss))]
    return [*LOSSES, *MIXERS, *pairs]


def did_you_mean(value: str, choices) -> str:
    """'; did you mean X?' for the closest of `choices` (difflib), or '' when none is close."""
    hit = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {hit[0]}?" if hit else ""


def suggest(message: str) -> str:
    """A ConfigError's message with a close match appended where it names an unknown value: 'unknown X 'v':
    choose one of a, b' gets the closest of a, b; an unknown method the closest valid spelling."""
    m = re.match(r"unknown method '([^']*)'", message)
    if m:
        return message + did_you_mean(m.group(1).lower(), method_spellings())
    m = re.match(r"unknown config field '([^']*)'", message)
    if m:
        return message + did_you_mean(m.group(1), [f.name for f in dataclasses.fields(RunConfig)])
    m = re.match(r"unknown [\w ]+ '([^']*)'.*choose one of ([^:;()]+)", message)
    if m:
        return message + did_you_mean(m.group(1), [c.strip() for c in m.group(2).split(",")])
    return message


class Parser(argparse.ArgumentParser):
    """argparse without its guesses: no abbreviated options (`--epoch 3` is an error, not --epochs), and every
    error is one line, 'error: ...', with the closest valid option or command, then exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        m = re.search(r"invalid choice: '([^']*)'", message)
        if m:
            choices = [c for a in self._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices]
            message = f"unknown command '{m.group(1)}': choose one of {', '.join(choices)}" + did_you_mean(m.group(1), choices)
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = self._commands().get(getattr(ns, "cmd", None), self)
            options = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
            hints = "".join(did_you_mean(t.split("=")[0], options) for t in extra if t.startswith("-"))
            sub.error(f"unrecognized arguments: {' '.join(extra)}{hints}")
        return ns

    def _commands(self) -> dict:
        return {name: p for a in self._actions if isinstance(a, argparse._SubParsersAction) for name, p in a.choices.items()}


def _benchmark_options(p: argparse.ArgumentParser, datasets=DATASETS, defaults: dict | None = None) -> None:
    d = {"dataset": "cifar10", "imbalance": "exp", "ratio": 100.0} if defaults is None else defaults
    p.add_argument("--dataset", default=d.get("dataset"), metavar=_one_of(datasets),
                   help=f"the benchmark's images: {', '.join(datasets)}; default cifar10")
    p.add_argument("--imbalance", default=d.get("imbalance"), metavar=_one_of(IMBALANCES),
                   help="how the training set is made imbalanced (LDAM-DRW rule): exp (long-tailed), step (half the "
                   "classes keep n_max, half n_max / rho), none (as it is); default exp")
    p.add_argument("--ratio", type=float, default=d.get("ratio"), metavar="RHO",
                   help="rho = n_max / n_min, a number >= 1; default 100")


def _counts_parser(sub) -> None:
    c = sub.add_parser("counts", help="per-class training counts of a benchmark (no images needed)",
                       description="Per-class training counts of a benchmark, by the LDAM-DRW rule; with no option, "
                       "CIFAR-10 exp rho=100 (and it says so).")
    _benchmark_options(c, [d for d in DATASETS if d != "imagefolder"], defaults={})
    c.add_argument("--max-per-class", type=int, metavar="N",
                   help="n_max, the largest class's images; default the paper's (" +
                   ", ".join(f"{d} {n}" for d, (_, n) in PAPER_SIZES.items()) + ")")


def _run_options(t: argparse.ArgumentParser) -> None:
    """The options of one run (train): the benchmark, the method and MFW's reconstructed choices."""
    t.add_argument("--method", default="erm", metavar="LOSS[+MIXER]",
                   help=f"a loss ({', '.join(LOSSES)}) and at most one mixing method ({', '.join(MIXERS)}), joined by "
                   "'+', e.g. mfw+ldam-drw; default erm")
    t.add_argument("--sampler", metavar=_one_of(SAMPLERS), help=f"default {RunConfig.sampler}")
    t.add_argument("--model", metavar=_one_of(MODELS),
                   help="default auto: resnet32 for 32x32 images, resnet18 for Tiny-ImageNet")
    t.add_argument("--profile", default="paper", metavar=_one_of(PROFILES),
                   help="the run's size: paper (the LDAM-DRW protocol, a GPU), cpu (CIFAR-10 shrunk to run on a CPU), "
                   "smoke (seconds); default paper")
    t.add_argument("--epochs", type=int, metavar="N",
                   help=f"default the profile's ({_by_profile('epochs')}; paper: 120 for Tiny-ImageNet)")
    t.add_argument("--seed", type=int, metavar="N", help=f"default {RunConfig.seed}")
    t.add_argument("--max-per-class", type=int, metavar="N",
                   help=f"n_max, the largest class's images; default the profile's ({_by_profile('max_per_class', none=PAPER_N_MAX)})")
    t.add_argument("--mfw-point", metavar=_one_of(MIXING_POINT_CHOICES),
                   help=f"where MFW mixes features (stage4: resnet18 only); default {RunConfig.mfw_point}")
    t.add_argument("--mfw-select", metavar=_one_of(MFW_SELECT),
                   help=f"MFW's selection rule p(class); default {RunConfig.mfw_select}")
    t.add_argument("--mfw-prob", type=float, metavar="P",
                   help=f"MFW's largest selection probability, in [0, 1]; default {RunConfig.mfw_prob:g}")
    t.add_argument("--mfw-lam", metavar=_one_of(MFW_LAM), help=f"MFW's law of lam; default {RunConfig.mfw_lam}")
    t.add_argument("--mfw-active", metavar=_one_of(MFW_ACTIVE),
                   help=f"when MFW is on (until-drw: off from the DRW epoch); default {RunConfig.mfw_active}")
    t.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any RunConfig field (the README's table of reconstructed choices), repeatable; it wins over "
                   "the flag of the same field; VALUE none sets an optional field to None; default none set")


def _where_options(p: argparse.ArgumentParser, compile_modes, images: str = "the images") -> None:
    """Where a run trains and what it reads and writes (train, reproduce)."""
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--data-root", metavar="FOLDER", help=f"{images}; default data/<dataset> (or $PROCRUSTES_DATA/<dataset>)")
    p.add_argument("--results", metavar="FOLDER", help="the result store; default results/ (or $PROCRUSTES_RESULTS)")
    p.add_argument("--compile", metavar=_one_of(compile_modes),
                   help="torch.compile the model (on: torch's default mode; the others are torch's modes); default "
                   "$PROCRUSTES_COMPILE, else auto: on CUDA, and on a CPU for runs of 200,000 training images or more")


def _bench_parser(sub) -> None:
    b = sub.add_parser("bench", help="training speed: our trainer against the reference pipeline, in one process",
                       description="Images/s of our trainer against the LDAM-DRW reference pipeline (PIL + DataLoader), "
                       "alternating in one process; the ratio is printed last.")
    b.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    b.add_argument("--steps", type=int, default=20, metavar="N", help="training steps a timing round; default 20")
    b.add_argument("--rounds", type=int, default=3, metavar="N", help="timing rounds; default 3")
    b.add_argument("--workers", type=int, default=2, metavar="N",
                   help="DataLoader worker processes of the reference pipeline; default 2")
    b.add_argument("--data-root", metavar="FOLDER", help="the CIFAR-10 images; default data/cifar10")
    b.add_argument("--accuracy-steps", type=int, metavar="K",
                   help="also train each pipeline K steps and compare test accuracy; default off")
    b.add_argument("--aug-samples", type=int, default=10000, metavar="N",
                   help="crops sampled from each pipeline for the augmentation check; default 10000")
    b.add_argument("--packed", type=int, metavar="N",
                   help="instead: N short runs one after another against N packed concurrently; default off")
    b.add_argument("--packed-epochs", type=int, metavar="N",
                   help="epochs of each --packed run; default 5 on CUDA, 1 smoke run on a CPU")
    b.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                   help="also time ours compiled (torch.compile), in torch's MODE if given (default, reduce-overhead, "
                   "max-autotune, max-autotune-no-cudagraphs; compiling takes about a minute on a CPU); default off")
    b.add_argument("--eval", nargs="?", const="default", metavar="N",
                   help="instead: the trainer's evaluation (img/s) at several batches on N random images (default 2000 "
                   "on a CPU, 10000 on CUDA), ratio last; default off")
    b.add_argument("--precision", action="store_true", help="instead: the trainer's step in fp32 against bf16 autocast "
                   "(img/s, alternating in one process, ratio bf16/fp32 last): how CPU runs choose their precision")
    b.add_argument("--hooks", action="store_true", help="instead: MFW through forward hooks (the trainer's path and "
                   "procrustes.method.weaken's) against the same mixing written in line, ResNet-32 on the CPU")


def _parser() -> argparse.ArgumentParser:
    from ..training.train import COMPILE_MODES

    ap = Parser(prog="python -m procrustes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{counts,train,reproduce,bench}", parser_class=Parser)
    _counts_parser(sub)

    t = sub.add_parser("train", help="train one run (or read it back from the result store)",
                       description="Train one run, or read it back from the result store when it is there; an "
                       "interrupted run resumes from its last checkpoint.")
    _benchmark_options(t)
    _run_options(t)
    _where_options(t, COMPILE_MODES)

    r = sub.add_parser("reproduce", help="train every run the notebooks need that the store lacks (resumable)",
                       description="Train every run the notebooks need that the result store lacks, in the order "
                       "the notebooks need them; interrupted runs resume.")
    r.add_argument("--profile", default="cpu", metavar=_one_of(PROFILES), help="default cpu (the committed results)")
    r.add_argument("--only", nargs="*", metavar="PREFIX",
                   help="only the runs of these notebooks, by name prefix, e.g. 02 05; default every notebook")
    _where_options(r, COMPILE_MODES, images="the CIFAR-10 images (the other datasets are read from data/<dataset>)")
    r.add_argument("--list", action="store_true", help="only list the missing runs, in training order")
    r.add_argument("--workers", default="auto", metavar="N|auto",
                   help="runs trained at once on each device (one process each); default auto: measure 1 against 2, 3, "
                   "4 packed for a few seconds and keep the count that pays (procrustes.tooling.speed.best_workers)")
    _bench_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "counts":
            return _counts(args)
        if args.cmd == "train":
            return _train(args)
        if args.cmd == "reproduce":
            return _reproduce(args)
        if args.cmd == "bench":
            from .bench import main as bench_main

            return bench_main(args)
    except (ConfigError, DataError) as e:
        print(f"error: {suggest(str(e))}", file=sys.stderr)
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


def _counts(args) -> int:
    """`counts`: the per-class training counts of one benchmark; with no option, says which one it shows and how to
    choose another."""
    from ..training.data import benchmark_counts

    chosen = {k: getattr(args, k) for k in COUNTS_DEFAULTS if getattr(args, k) is not None}
    if not chosen and args.max_per_class is None:
        datasets = _one_of(d for d in DATASETS if d != "imagefolder")
        print(f"no benchmark chosen, so the default: CIFAR-10, exp imbalance, rho=100. Choose another with --dataset "
              f"{datasets} --imbalance {_one_of(IMBALANCES)} --ratio RHO [--max-per-class N]")
    b = {**COUNTS_DEFAULTS, **chosen}
    make_config("paper", dataset=b["dataset"], imbalance=b["imbalance"], ratio=b["ratio"], max_per_class=args.max_per_class)
    counts = benchmark_counts(b["dataset"], b["imbalance"], b["ratio"], args.max_per_class)
    print(f"{b['dataset']} {b['imbalance']} rho={b['ratio']:g}: {counts}")
    print(f"total: {sum(counts)}")
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
