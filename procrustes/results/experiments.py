"""The runs behind each notebook, per profile: one place that the notebooks and `make reproduce` share.

`paper` is the full protocol. `cpu` is CIFAR-10 at n_max 2,000 for 80 epochs, on reduced grids sized for 2 CPU
cores; `all_runs("cpu")` lists them in the order they are trained (issue 10): (a) step-100 ERM and MFW, seeds
0-2; (b) exp-100 ERM and MFW, seeds 0-2; (c) exp-100 and step-100 LDAM-DRW and MFW + LDAM-DRW, seeds 0-2;
(d) the ablations on step-100, seed 0; (e) exp-10 and step-10 ERM and MFW, seeds 0-2. `smoke` has the shape of
`cpu` in seconds (one seed), so that nbval checks the same notebooks in CI."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..training.config import RunConfig, make_config
from ..training.signature import training_signature  # noqa: F401  (re-exported beside the run lists)

SEEDS = {"paper": (0, 1, 2), "cpu": (0, 1, 2), "smoke": (0,)}
TABLE_METHODS = ("erm", "focal", "ldam", "cb", "drw", "ldam-drw", "mfw", "mfw+drw", "mfw+ldam-drw")
# the cpu table, reduced to fit 2 CPU cores: (imbalance, ratio) -> methods
CPU_TABLE = {("step", 100): ("erm", "mfw", "ldam-drw", "mfw+ldam-drw"), ("exp", 100): ("erm", "mfw", "ldam-drw", "mfw+ldam-drw"),
             ("step", 10): ("erm", "mfw"), ("exp", 10): ("erm", "mfw")}
TINY_METHODS = ("erm", "drw", "ldam-drw", "mfw", "mfw+drw", "mfw+ldam-drw")


def _seeds(profile: str) -> tuple[int, ...]:
    return SEEDS.get(profile, (0,))


def dynamics_runs(profile: str, methods=("erm", "mfw"), seeds: tuple[int, ...] | None = None,
                  imbalance: str = "step", ratio: float = 100) -> list[RunConfig]:
    """CIFAR-10 (step rho=100 by default), ERM against MFW, every seed of the profile (or `seeds`):
    notebooks 02, 03 and 04."""
    return [make_config(profile, dataset="cifar10", imbalance=imbalance, ratio=ratio, method=m, seed=s)
            for s in (seeds if seeds is not None else _seeds(profile)) for m in methods]


def cifar_table_runs(profile: str) -> list[RunConfig]:
    """Notebook 05: CIFAR-10/100 x {exp, step} x {100, 10} x TABLE_METHODS (paper); CPU_TABLE otherwise."""
    if profile == "paper":
        grid = [(d, i, r, TABLE_METHODS) for d in ("cifar10", "cifar100") for i in ("exp", "step") for r in (100, 10)]
    else:
        grid = [("cifar10", i, r, methods) for (i, r), methods in CPU_TABLE.items()]
    return [make_config(profile, dataset=d, imbalance=i, ratio=r, method=m, seed=s)
            for d, i, r, methods in grid for m in methods for s in _seeds(profile)]


def tiny_table_runs(profile: str) -> list[RunConfig]:
    """Notebook 06: Tiny-ImageNet-200 with ResNet-18. Outside the paper profile, the slice of
    `../shared/data` (10 train images a class) with rho=10 and 3 epochs (cpu): a pipeline check, not a result."""
    if profile == "paper":
        return [make_config(profile, dataset="tinyimagenet", imbalance=i, ratio=r, method=m, seed=s)
                for i in ("exp", "step") for r in (100, 10) for m in TINY_METHODS for s in _seeds(profile)]
    epochs = 3 if profile == "cpu" else 1
    return [make_config(profile, dataset="tinyimagenet", imbalance="exp", ratio=10, max_per_class=10, epochs=epochs,
                        eval_per_class=5, test_per_class=5, method=m) for m in ("erm", "mfw")]


@dataclass(frozen=True)
class Variant:
    group: str  # which reconstructed choice it varies
    label: str
    overrides: dict


def ablation_variants(profile: str) -> list[Variant]:
    """Notebook 07: every reconstructed choice of MFW, one at a time from the defaults, and the relatives."""
    full = [
        Variant("mixing point", p, {"method": "mfw", "mfw_point": p}) for p in ("input", "stem", "stage1", "stage2", "stage3", "random")
    ] + [
        Variant("selection rule", "median", {"method": "mfw", "mfw_select": "median"}),
        Variant("selection rule", "power (gamma 1)", {"method": "mfw", "mfw_select": "power", "mfw_gamma": 1.0}),
        Variant("selection rule", "power (gamma 2)", {"method": "mfw", "mfw_select": "power", "mfw_gamma": 2.0}),
        Variant("selection rule", "inverse", {"method": "mfw", "mfw_select": "inverse"}),
        Variant("selection rule", "all classes", {"method": "mfw", "mfw_select": "all"}),
        Variant("law of lam", "U(0.5, 1)", {"method": "mfw", "mfw_lam": "uniform", "mfw_lam_min": 0.5}),
        Variant("law of lam", "U(0, 1)", {"method": "mfw", "mfw_lam": "uniform", "mfw_lam_min": 0.0}),
        Variant("law of lam", "Beta(1,1) folded", {"method": "mfw", "mfw_lam": "beta-folded"}),
        Variant("when active (+DRW)", "always", {"method": "mfw+drw", "mfw_active": "always"}),
        Variant("when active (+DRW)", "until DRW", {"method": "mfw+drw", "mfw_active": "until-drw"}),
        # the same question under LDAM-DRW, where MFW active through the re-weighted phase may over-correct:
        # "always" is the MFW + LDAM-DRW run of the table, "until DRW" its one-field change
        Variant("when active (+LDAM-DRW)", "always", {"method": "mfw+ldam-drw", "mfw_active": "always"}),
        Variant("when active (+LDAM-DRW)", "until DRW", {"method": "mfw+ldam-drw", "mfw_active": "until-drw"}),
        Variant("relatives", "ERM", {"method": "erm"}),
        Variant("relatives", "MFW", {"method": "mfw"}),
        Variant("relatives", "mixup", {"method": "mixup"}),
        Variant("relatives", "manifold mixup", {"method": "manifold-mixup"}),
        Variant("relatives", "Remix", {"method": "remix"}),
    ]
    if profile == "paper":
        return full
    drop = {("mixing point", "random"), ("selection rule", "power (gamma 2)"), ("selection rule", "inverse")}
    return [v for v in full if (v.group, v.label) not in drop]


def ablation_benchmarks(profile: str) -> list[tuple[str, str, int]]:
    return [("cifar10", "exp", 100), ("cifar10", "step", 100)] if profile == "paper" else [("cifar10", "step", 100)]


def ablation_runs(profile: str) -> list[tuple[Variant, RunConfig]]:
    """Every variant on every ablation benchmark; seeds 0-2 in the paper profile, seed 0 elsewhere."""
    seeds = _seeds(profile) if profile == "paper" else (0,)
    return [(v, make_config(profile, dataset=d, imbalance=i, ratio=r, seed=s, **v.overrides))
            for d, i, r in ablation_benchmarks(profile) for v in ablation_variants(profile) for s in seeds]


# The paper profile on a CPU: the runs a reader can hold against the LDAM-DRW paper's reported numbers, cheapest
# and most telling first: (a) exp-100 ERM and LDAM-DRW (the cheapest anchors), (b) step-100 ERM and LDAM-DRW,
# (c) step-100 MFW and MFW + LDAM-DRW, (d) exp-100 MFW and MFW + LDAM-DRW, the MFW rows with the choices notebook
# 09 selected on a validation split at `cpu` scale; seed 0 of every row, then seed 1, then seed 2.
PAPER_CPU_ROWS = (("exp", 100, ("erm", "ldam-drw")), ("step", 100, ("erm", "ldam-drw")),
                  ("step", 100, ("mfw", "mfw+ldam-drw")), ("exp", 100, ("mfw", "mfw+ldam-drw")))
PAPER_CPU_SEEDS = (0, 1, 2)
CHOICES_FROM = "cpu"  # the profile whose selection study (notebook 09) chose the MFW rows' variants


def selected_overrides(method: str, imbalance: str, ratio: float, results=None) -> dict | None:
    """The MFW choices notebook 09 selected on validation for `method` on a CIFAR-10 benchmark, in the
    CHOICES_FROM profile (computed from its stored runs, never typed): stage A's point and rule for MFW, plus
    stage B's schedule for MFW + LDAM-DRW; {} for a method without MFW; None while the selection has not decided."""
    from . import selection

    if "mfw" not in method:
        return {}
    choices = selection.select(CHOICES_FROM, results)
    name = selection.bench_name(imbalance, ratio)
    a = choices["A"].get(name)
    if a is None or a.chosen is None:
        return None
    if method == "mfw":
        return dict(a.chosen.overrides)
    b = choices["B"].get(name)
    return None if b is None or b.chosen is None else {**a.chosen.overrides, **b.chosen.overrides}


def paper_cpu_runs(results=None, seeds: tuple[int, ...] = PAPER_CPU_SEEDS) -> list[RunConfig]:
    """PAPER_CPU_ROWS at each seed, in training order (a row's MFW choices from `selected_overrides`; a row whose
    choice is not decided yet is left out)."""
    out = []
    for s in seeds:
        for imb, r, methods in PAPER_CPU_ROWS:
            for m in methods:
                over = selected_overrides(m, imb, r, results)
                if over is not None:
                    out.append(make_config("paper", dataset="cifar10", imbalance=imb, ratio=r, method=m, seed=s, **over))
    return out


def paper_cpu_order(configs: list[RunConfig], results=None) -> list[RunConfig]:
    """`configs` with the runs of paper_cpu_runs first, in their order, then the rest in their order: how a CPU
    trains the paper profile."""
    first = {c.key(): i for i, c in enumerate(paper_cpu_runs(results))}
    return sorted(configs, key=lambda c: first.get(c.key(), len(first)))


NOTEBOOK_RUNS = {
    "00_quickstart": lambda p: dynamics_runs(p, methods=("erm",), seeds=(0,)),
    "02_underfit_then_overfit": lambda p: dynamics_runs(p, methods=("erm",)),
    "03_feature_gradients": dynamics_runs,
    "04_procrustean_training": dynamics_runs,
    "05_cifar_table": lambda p: cifar_table_runs(p) + (paper_cpu_runs() if p == "paper" else []),
    "06_tiny_imagenet_table": tiny_table_runs,
    "07_ablations": lambda p: [c for _, c in ablation_runs(p)],
}


def _mfw_defaults(c: RunConfig) -> bool:
    """Whether every mfw_* field of c is at its RunConfig default (the table's runs; ablations vary one)."""
    return all(getattr(c, f.name) == f.default for f in dataclasses.fields(RunConfig) if f.name.startswith("mfw_"))


def priority(c: RunConfig) -> tuple:
    """The order in which runs are trained (issue 10's rows a-e): step-100 ERM/MFW over seeds, then exp-100
    ERM/MFW, then LDAM-DRW and MFW + LDAM-DRW, then the ablations (seed 0), then rho=10; seeds ascending inside
    each row, so that a row's seed 0 runs are done before its seed 1 runs. A run whose MFW choices differ from
    the defaults is an ablation, whatever its method."""
    default = _mfw_defaults(c)
    if c.val_per_class is not None:  # the selection grid (issue 24): screening runs (seed 0), then the seeds
        row = 6
    elif c.dataset == "cifar10" and c.ratio == 100 and default and c.method in ("erm", "mfw"):
        row = 0 if c.imbalance == "step" else 1
    elif c.dataset == "cifar10" and c.ratio == 100 and default and c.method in ("ldam-drw", "mfw+ldam-drw"):
        row = 2
    elif c.dataset == "cifar10" and c.ratio == 100:
        row = 3
    elif c.dataset == "cifar10":
        row = 4
    else:
        row = 5
    return (row, c.seed)


SELECTION_NOTEBOOK = "09_selection"  # its runs depend on what is stored (`procrustes.results.selection`)


def all_runs(profile: str, notebooks: list[str] | None = None, results=None) -> list[RunConfig]:
    """Every run the notebooks need (or the named ones), without duplicates, in training order (`priority`);
    the selection grid as far as the runs stored in `results` decide it (stage B after stage A, then seeds)."""
    from . import selection

    seen, out = set(), []
    grids = {**NOTEBOOK_RUNS, SELECTION_NOTEBOOK: lambda p: selection.all_selection_runs(p, results)}
    for name, fn in grids.items():
        if notebooks and not any(name.startswith(n) for n in notebooks):
            continue
        for c in fn(profile):
            if c.key() not in seen:
                seen.add(c.key())
                out.append(c)
    return sorted(out, key=priority)  # stable: the notebooks' order inside a row


# ---------------------------------------------------------------- helpers the notebooks share


def stored_and_missing(configs: list[RunConfig], results=None) -> tuple[list[dict], list[RunConfig]]:
    """store.collect, where a selection seed run also counts as stored when its training twin is
    (`selection.stored`)."""
    from .selection import stored
    from ..training.store import read_result

    done, missing = [], []
    for c in configs:
        r = stored(c, results) if c.val_per_class is not None else read_result(c, results)
        (done.append(r) if r is not None else missing.append(c))
    return done, missing


def gather(configs: list[RunConfig], *, train_missing: bool = False, device="auto", data_root=None, results=None,
           progress: bool = True) -> tuple[list[dict], list[RunConfig]]:
    """(finished results, missing configs) from the result store, in the order of `configs`; with
    train_missing, first train (and store) the missing ones with `train.run`."""
    from ..training.store import collect

    done, missing = collect(configs, results)
    if train_missing and missing:
        from ..training.train import run

        for c in missing:
            run(c, device=device, data_root=data_root, results=results, progress=progress)
        done, missing = collect(configs, results)
    return done, missing


def describe_grid(configs: list[RunConfig]) -> str:
    """The grid a notebook needs, by benchmark, method and seed only (no profile, sizes or epochs), so that the
    text is the same in the cpu and smoke profiles (nbval compares it)."""
    benches = list(dict.fromkeys(f"{c.dataset} {c.imbalance} rho={c.ratio:g}" for c in configs))
    methods = list(dict.fromkeys(c.method for c in configs))
    seeds = sorted({c.seed for c in configs})
    return "\n".join([f"benchmarks ({len(benches)}): " + "; ".join(benches),
                      f"methods ({len(methods)}): " + ", ".join(methods),
                      "seeds: " + ", ".join(map(str, seeds)),
                      f"runs: {len({c.key() for c in configs})}"])


def describe_ablation(pairs: list[tuple[Variant, RunConfig]]) -> str:
    """describe_grid for ablation_runs' (Variant, config) pairs: each variant with what it varies."""
    lines = [describe_grid([c for _, c in pairs]).split("\n")[0], "variants:"]
    seen = set()
    for v, _ in pairs:
        if (v.group, v.label) in seen:
            continue
        seen.add((v.group, v.label))
        lines.append(f"  {v.group}: {v.label} ({', '.join(f'{k}={val}' for k, val in v.overrides.items())})")
    lines.append(f"runs: {len({c.key() for _, c in pairs})}")
    return "\n".join(lines)
