"""The runs behind each notebook, per profile: one place that the notebooks and `make reproduce` share.

`paper` is the full protocol. `quick` is a reduced form sized for 2 CPU cores (fewer settings, one seed),
`smoke` has the same shape as `quick` in seconds, so that nbval checks the same tables in CI."""
from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig, make_config

SEEDS = {"paper": (0, 1, 2), "quick": (0,), "smoke": (0,)}
TABLE_METHODS = ("erm", "focal", "ldam", "cb", "drw", "ldam-drw", "mfw", "mfw+drw", "mfw+ldam-drw")
# the quick table, reduced to fit 2 CPU cores: (imbalance, ratio) -> methods
QUICK_TABLE = {("exp", 100): ("erm", "ldam-drw", "mfw", "mfw+ldam-drw"), ("step", 100): ("erm", "mfw")}
TINY_METHODS = ("erm", "drw", "ldam-drw", "mfw", "mfw+drw", "mfw+ldam-drw")


def _seeds(profile: str) -> tuple[int, ...]:
    return SEEDS.get(profile, (0,))


def dynamics_runs(profile: str, methods=("erm", "mfw")) -> list[RunConfig]:
    """CIFAR-10 step rho=100, ERM against MFW, seed 0: notebooks 02, 03 and 04."""
    return [make_config(profile, dataset="cifar10", imbalance="step", ratio=100, method=m) for m in methods]


def cifar_table_runs(profile: str) -> list[RunConfig]:
    """Notebook 05: CIFAR-10/100 x {exp, step} x {100, 10} x TABLE_METHODS (paper); QUICK_TABLE otherwise."""
    if profile == "paper":
        grid = [(d, i, r, TABLE_METHODS) for d in ("cifar10", "cifar100") for i in ("exp", "step") for r in (100, 10)]
    else:
        grid = [("cifar10", i, r, methods) for (i, r), methods in QUICK_TABLE.items()]
    return [make_config(profile, dataset=d, imbalance=i, ratio=r, method=m, seed=s)
            for d, i, r, methods in grid for m in methods for s in _seeds(profile)]


def tiny_table_runs(profile: str) -> list[RunConfig]:
    """Notebook 06: Tiny-ImageNet-200 with ResNet-18. Outside the paper profile, the slice of
    `../shared/data` (10 train images a class) with rho=10 and 3 epochs (quick): a pipeline check, not a result."""
    if profile == "paper":
        return [make_config(profile, dataset="tinyimagenet", imbalance=i, ratio=r, method=m, seed=s)
                for i in ("exp", "step") for r in (100, 10) for m in TINY_METHODS for s in _seeds(profile)]
    epochs = 3 if profile == "quick" else 1
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
        Variant("when active", "always (+DRW)", {"method": "mfw+drw", "mfw_active": "always"}),
        Variant("when active", "until DRW (+DRW)", {"method": "mfw+drw", "mfw_active": "until-drw"}),
        Variant("relatives", "ERM", {"method": "erm"}),
        Variant("relatives", "MFW", {"method": "mfw"}),
        Variant("relatives", "mixup", {"method": "mixup"}),
        Variant("relatives", "manifold mixup", {"method": "manifold-mixup"}),
        Variant("relatives", "Remix", {"method": "remix"}),
    ]
    if profile == "paper":
        return full
    keep = {("mixing point", "stem"), ("mixing point", "stage1"),
            ("relatives", "ERM"), ("relatives", "MFW"), ("relatives", "Remix")}
    return [v for v in full if (v.group, v.label) in keep]


def ablation_benchmarks(profile: str) -> list[tuple[str, str, int]]:
    return [("cifar10", "exp", 100), ("cifar10", "step", 100)] if profile == "paper" else [("cifar10", "exp", 100)]


def ablation_runs(profile: str) -> list[tuple[Variant, RunConfig]]:
    return [(v, make_config(profile, dataset=d, imbalance=i, ratio=r, seed=s, **v.overrides))
            for d, i, r in ablation_benchmarks(profile) for v in ablation_variants(profile) for s in _seeds(profile)]


NOTEBOOK_RUNS = {
    "00_quickstart": lambda p: dynamics_runs(p, methods=("erm",)),
    "02_underfit_then_overfit": lambda p: dynamics_runs(p, methods=("erm",)),
    "03_feature_gradients": dynamics_runs,
    "04_procrustean_training": dynamics_runs,
    "05_cifar_table": cifar_table_runs,
    "06_tiny_imagenet_table": tiny_table_runs,
    "07_ablations": lambda p: [c for _, c in ablation_runs(p)],
}


def all_runs(profile: str, notebooks: list[str] | None = None) -> list[RunConfig]:
    """Every run the notebooks need (or the named ones), without duplicates, figure runs first."""
    seen, out = set(), []
    for name, fn in NOTEBOOK_RUNS.items():
        if notebooks and not any(name.startswith(n) for n in notebooks):
            continue
        for c in fn(profile):
            if c.key() not in seen:
                seen.add(c.key())
                out.append(c)
    return out


# ---------------------------------------------------------------- helpers the notebooks share


def gather(configs: list[RunConfig], *, train_missing: bool = False, device="auto", data_root=None, results=None,
           progress: bool = True) -> tuple[list[dict], list[RunConfig]]:
    """(finished results, missing configs) from the result store, in the order of `configs`; with
    train_missing, first train (and store) the missing ones with `train.run`."""
    from .store import collect

    done, missing = collect(configs, results)
    if train_missing and missing:
        from .train import run

        for c in missing:
            run(c, device=device, data_root=data_root, results=results, progress=progress)
        done, missing = collect(configs, results)
    return done, missing


def describe_grid(configs: list[RunConfig]) -> str:
    """The grid a notebook needs, by benchmark, method and seed only (no profile, sizes or epochs), so that the
    text is the same in the quick and smoke profiles (nbval compares it)."""
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
