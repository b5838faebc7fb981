"""Which Procrustean training? The selection protocol, fixed in code before any selection run.

Our default reconstruction of MFW (mixing point stage1, median selection rule, always on) was fixed before any
data and is the pre-registered test. The ablations suggest other choices do better, but they can only be read
on the test set, and choosing on the test set is the pitfall we document in the reference code. So a variant
is chosen here on a validation split (`RunConfig.val_per_class`: training images the imbalanced subset leaves
unused), by rules written before the first selection run:

- Candidates (`STAGE_A`, `STAGE_B`):
  stage A, MFW alone, on CIFAR-10 step-100, exp-100 and exp-10: mixing point stage1 (default) or stage2, crossed
  with selection rule median (default) or power (gamma 1): 4 candidates a benchmark;
  stage B, MFW + LDAM-DRW, on step-100 and exp-100, with the point and rule stage A chose on that benchmark: MFW
  active always (default) or until DRW starts.
- Score (`SCORE`): the last-epoch validation error (balanced: the mean over classes) of seed 0.
- Tie rule (`TIE_RULE`, `choose`): the best-scoring challenger replaces the default only when it beats the
  default by more than the noise: max(MIN_GAIN points, 2 x the paired standard error of the two error rates on
  the same validation images). MIN_GAIN is 1 point because subset seeds alone move CIFAR accuracy by more than a
  point (docs/paper.md, the reference code's pitfalls). Otherwise the default is kept. Challengers tie-break in the order listed.
- Then (`seed_runs`): the chosen MFW (stage A, on all three benchmarks) and the chosen MFW + LDAM-DRW (stage B,
  on step-100 and exp-100) get seeds 1 and 2. A stored run with the same training counts (the grid's runs of
  the default config, which lack only the validation split), since validation never changes training
  (tests/test_validation.py).
- Verdicts (`procrustes.results.claims`): the chosen method against ERM, and the chosen MFW + LDAM-DRW against
  LDAM-DRW, with `claims.NOISE_RULE`, beside the default-reconstruction rows, labelled "selected on validation".

Screening runs carry the validation split and no per-epoch test curve (`SCREEN_EVAL`): nothing in them invites a
look at the test set before the last epoch, and the evaluation they save pays for the validation they add.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..training.config import PROFILES, RunConfig, make_config, run_label

# images a class of the validation split, per profile; the paper profile has no unused CIFAR training images
# (class 0 keeps all 5,000), so it has no selection grid
VAL_PER_CLASS = {"cpu": 100, "smoke": 10}
# a screening run's evaluation: the validation split every epoch, the test set at the last epoch only
SCREEN_EVAL = {"eval_per_class": 0}
SEEDS = {"cpu": (0, 1, 2), "smoke": (0,)}  # the seeds a chosen config gets (smoke: nbval's one seed)
SCREEN_SEED = 0
SCORE = "last-epoch validation error (%) of seed 0, balanced validation split"
MIN_GAIN = 1.0  # points of validation error a challenger must gain at least
NOISE_Z = 2.0  # ... and more than this many paired standard errors
TIE_RULE = (f"a challenger replaces the default only when its validation error is lower by more than "
            f"max({MIN_GAIN:g} point, {NOISE_Z:g} x the paired standard error of the difference on the same "
            f"validation images); otherwise the default is kept; challengers tie-break in the order listed")


@dataclass(frozen=True)
class Candidate:
    label: str
    overrides: dict
    default: bool = False


STAGE_A_BENCHMARKS = (("step", 100), ("exp", 100), ("exp", 10))
STAGE_A = (
    Candidate("stage1 / median", {"mfw_point": "stage1", "mfw_select": "median"}, default=True),
    Candidate("stage1 / power", {"mfw_point": "stage1", "mfw_select": "power", "mfw_gamma": 1.0}),
    Candidate("stage2 / median", {"mfw_point": "stage2", "mfw_select": "median"}),
    Candidate("stage2 / power", {"mfw_point": "stage2", "mfw_select": "power", "mfw_gamma": 1.0}),
)
STAGE_B_BENCHMARKS = (("step", 100), ("exp", 100))
STAGE_B = (
    Candidate("always", {"mfw_active": "always"}, default=True),
    Candidate("until DRW", {"mfw_active": "until-drw"}),
)
STAGES = {"A": ("mfw", STAGE_A_BENCHMARKS, STAGE_A), "B": ("mfw+ldam-drw", STAGE_B_BENCHMARKS, STAGE_B)}


def bench_name(imbalance: str, ratio: float) -> str:
    return f"{imbalance}-{ratio:g}"


def screening_config(profile: str, imbalance: str, ratio: float, method: str, overrides: dict,
                     seed: int = SCREEN_SEED) -> RunConfig:
    """A run of the selection grid: the profile's run of CIFAR-10 with the candidate's choices, the validation
    split and no per-epoch test curve."""
    return make_config(profile, dataset="cifar10", imbalance=imbalance, ratio=ratio, method=method, seed=seed,
                       val_per_class=VAL_PER_CLASS[profile], **SCREEN_EVAL, **overrides)


def training_twin(cfg: RunConfig) -> RunConfig:
    """The same training with the profile's own evaluation settings (no validation split, the usual test curve):
    the form the grid's runs are stored in. Its numbers at the last epoch are the same (tests/test_validation.py)."""
    prof = PROFILES[cfg.profile]
    return cfg.replace(val_per_class=None, eval_per_class=prof.get("eval_per_class", RunConfig.eval_per_class))


def find(cfg: RunConfig, root: Path | None = None) -> dict | None:
    """The stored result of cfg, or of its training twin (the same training, stored without validation)."""
    from ..training.store import read_result

    return read_result(cfg, root) or read_result(training_twin(cfg), root)


def has_selection(profile: str) -> bool:
    return profile in VAL_PER_CLASS


def paired_se(a: dict, b: dict) -> float:
    """Standard error (points) of the difference of two validation error rates on the same images, from their
    per-image correctness (`summary.val_correct`, '1'/'0' a validation image in a fixed order): the paired
    (McNemar) form, sqrt(n01 + n10 - (n01 - n10)^2 / n) / n."""
    ca, cb = a["summary"]["val_correct"], b["summary"]["val_correct"]
    if len(ca) != len(cb) or not ca:
        raise ValueError("the two runs were validated on different images")
    n = len(ca)
    n01 = sum(x == "0" and y == "1" for x, y in zip(ca, cb))
    n10 = sum(x == "1" and y == "0" for x, y in zip(ca, cb))
    return 100.0 * math.sqrt(max(n01 + n10 - (n01 - n10) ** 2 / n, 0.0)) / n


@dataclass
class Choice:
    """The outcome of one stage on one benchmark."""

    stage: str
    bench: str
    chosen: Candidate | None  # None: candidates missing
    scores: dict  # candidate label -> validation error (%), for the stored ones
    reason: str


def choose(stage: str, bench: str, results: dict[str, dict | None], candidates=None) -> Choice:
    """TIE_RULE over the seed-0 screening results of every candidate (label -> result, None when missing)."""
    candidates = candidates or STAGES[stage][2]
    scores = {c.label: results[c.label]["summary"]["val_error"] for c in candidates if results.get(c.label)}
    missing = [c.label for c in candidates if not results.get(c.label)]
    if missing:
        return Choice(stage, bench, None, scores, f"waiting for {len(missing)} of {len(candidates)} candidates: "
                      + ", ".join(missing))
    default = next(c for c in candidates if c.default)
    challengers = [c for c in candidates if not c.default]
    best = min(challengers, key=lambda c: scores[c.label])  # min keeps the first of equal scores: the listed order
    gain = scores[default.label] - scores[best.label]
    se = paired_se(results[default.label], results[best.label])
    need = max(MIN_GAIN, NOISE_Z * se)
    if gain > need:
        return Choice(stage, bench, best, scores, f"{best.label} beats the default by {gain:.2f} points "
                      f"(> {need:.2f} = max({MIN_GAIN:g}, {NOISE_Z:g} x paired SE {se:.2f}))")
    return Choice(stage, bench, default, scores, f"best challenger {best.label} gains {gain:.2f} points "
                  f"(<= {need:.2f} = max({MIN_GAIN:g}, {NOISE_Z:g} x paired SE {se:.2f})): the default is kept")


def stage_configs(profile: str, stage: str, imbalance: str, ratio: float, base: dict | None = None,
                  seed: int = SCREEN_SEED) -> dict[str, RunConfig]:
    """candidate label -> its screening run on one benchmark; `base`: choices carried from an earlier stage."""
    method, _, candidates = STAGES[stage]
    return {c.label: screening_config(profile, imbalance, ratio, method, {**(base or {}), **c.overrides}, seed)
            for c in candidates}


def select(profile: str, root: Path | None = None) -> dict[str, dict[str, Choice]]:
    """Stage -> benchmark -> Choice, from what the store holds now (stage B waits for stage A's choice)."""
    out: dict[str, dict[str, Choice]] = {"A": {}, "B": {}}
    if not has_selection(profile):
        return out
    from ..training.store import read_result  # the screening run itself: its training twin has no validation record

    for imb, r in STAGE_A_BENCHMARKS:
        cfgs = stage_configs(profile, "A", imb, r)
        out["A"][bench_name(imb, r)] = choose("A", bench_name(imb, r), {k: read_result(c, root) for k, c in cfgs.items()})
    for imb, r in STAGE_B_BENCHMARKS:
        a = out["A"][bench_name(imb, r)]
        if a.chosen is None:
            out["B"][bench_name(imb, r)] = Choice("B", bench_name(imb, r), None, {}, "waiting for stage A")
            continue
        cfgs = stage_configs(profile, "B", imb, r, base=a.chosen.overrides)
        out["B"][bench_name(imb, r)] = choose("B", bench_name(imb, r), {k: read_result(c, root) for k, c in cfgs.items()})
    return out


def chosen_configs(profile: str, root: Path | None = None, seeds=None,
                   choices: dict | None = None) -> dict[tuple[str, str], list[RunConfig]]:
    """(stage, benchmark) -> the chosen config at each seed (screening form), for every decided choice;
    `choices`: select()'s answer when the caller has it already."""
    if not has_selection(profile):
        return {}
    seeds = SEEDS.get(profile, (SCREEN_SEED,)) if seeds is None else seeds
    choices = choices or select(profile, root)
    out = {}
    for stage, per_bench in choices.items():
        method, benches, _ = STAGES[stage]
        for imb, r in benches:
            ch = per_bench[bench_name(imb, r)]
            if ch.chosen is None:
                continue
            base = choices["A"][bench_name(imb, r)].chosen.overrides if stage == "B" else {}
            out[(stage, bench_name(imb, r))] = [
                screening_config(profile, imb, r, method, {**base, **ch.chosen.overrides}, seed=s) for s in seeds]
    return out


def screening_runs(profile: str, root: Path | None = None, choices: dict | None = None) -> list[RunConfig]:
    """Every screening run that can be listed now: stage A always, stage B once stage A chose on its benchmark."""
    if not has_selection(profile):
        return []
    runs = [c for imb, r in STAGE_A_BENCHMARKS for c in stage_configs(profile, "A", imb, r).values()]
    choices = choices or select(profile, root)
    for imb, r in STAGE_B_BENCHMARKS:
        a = choices["A"][bench_name(imb, r)].chosen
        if a is not None:
            runs += list(stage_configs(profile, "B", imb, r, base=a.overrides).values())
    return runs


def seed_runs(profile: str, root: Path | None = None, choices: dict | None = None) -> list[RunConfig]:
    """Seeds 1 and 2 of every chosen config (screening form); `find` also accepts their training twins."""
    return [c for cfgs in chosen_configs(profile, root, choices=choices).values() for c in cfgs if c.seed != SCREEN_SEED]


def all_selection_runs(profile: str, root: Path | None = None) -> list[RunConfig]:
    """What notebook 09 needs now: the screening runs, then the seeds of what they chose (the store read once)."""
    if not has_selection(profile):
        return []
    choices = select(profile, root)
    return screening_runs(profile, root, choices) + seed_runs(profile, root, choices)


def stored(cfg: RunConfig, root: Path | None = None) -> dict | None:
    """The stored result that stands for a selection run: a screening run (seed 0) only as itself (it must carry
    the validation record), a seed run as itself or as its training twin."""
    from ..training.store import read_result

    return read_result(cfg, root) if cfg.seed == SCREEN_SEED else find(cfg, root)


def pending(profile: str, root: Path | None = None) -> list[str]:
    """Lines for the runs that cannot be listed yet because they wait for a choice: stage B and the seeds of each
    stage, per benchmark (stage A's screening runs are always listed)."""
    if not has_selection(profile):
        return []
    lines = []
    choices = select(profile, root)
    for stage, per_bench in choices.items():
        for bench, ch in per_bench.items():
            if ch.chosen is not None:
                continue
            what = "its 2 screening runs and " if stage == "B" else ""
            lines.append(f"stage {stage} on {bench}: {what}seeds 1-2 of its choice wait ({ch.reason})")
    return lines


# ---------------------------------------------------------------------------------------- what notebook 09 shows


def gather(profile: str, *, train_missing: bool = False, device="auto", data_root=None, root: Path | None = None,
           progress: bool = True) -> list[RunConfig]:
    """With train_missing, train the selection grid stage by stage (stage A, then stage B on its choice, then the
    seeds of both choices); returns what is still missing."""
    from ..training.train import run

    for _ in range(3):  # stage A, stage B, seeds: each round can list what the previous one decided
        todo = [c for c in all_selection_runs(profile, root) if stored(c, root) is None]
        if not train_missing or not todo:
            return todo
        for c in todo:
            run(c, device=device, data_root=data_root, results=root, progress=progress)
    return [c for c in all_selection_runs(profile, root) if stored(c, root) is None]


def candidates_table(profile: str, root: Path | None = None):
    """One row a candidate: stage, benchmark, candidate, whether it is the default, its validation error, the
    choice and the reason. No test number: the choice never sees one."""
    import pandas as pd

    rows = []
    for stage, per_bench in select(profile, root).items():
        for bench, ch in per_bench.items():
            for c in STAGES[stage][2]:
                rows.append({"stage": stage, "benchmark": bench, "candidate": c.label, "default": c.default,
                             "val_error": ch.scores.get(c.label, float("nan")),
                             "chosen": ch.chosen is not None and ch.chosen.label == c.label, "reason": ch.reason})
    return pd.DataFrame(rows)


def chosen_results(profile: str, root: Path | None = None,
                   choices: dict | None = None) -> dict[tuple[str, str], dict[int, dict]]:
    """(stage, benchmark) -> {seed: stored result} of the chosen config (screening run or training twin)."""
    out = {}
    for key, cfgs in chosen_configs(profile, root, choices=choices).items():
        out[key] = {c.seed: r for c in cfgs if (r := stored(c, root)) is not None}
    return out


BASELINE = {"A": "erm", "B": "ldam-drw"}  # what the chosen method of each stage is compared with


def baseline_results(profile: str, root: Path | None = None) -> dict[tuple[str, str], dict[int, dict]]:
    """(stage, benchmark) -> {seed: result} of the grid's baseline run (ERM for stage A, LDAM-DRW for stage B)."""
    from ..training.store import read_result

    out = {}
    for stage, (_, benches, _) in STAGES.items():
        for imb, r in benches:
            runs = {}
            for s in SEEDS.get(profile, (SCREEN_SEED,)):
                res = read_result(make_config(profile, dataset="cifar10", imbalance=imb, ratio=r, method=BASELINE[stage],
                                              seed=s), root)
                if res is not None:
                    runs[s] = res
            out[(stage, bench_name(imb, r))] = runs
    return out


def results_table(profile: str, root: Path | None = None):
    """The chosen configs' last-epoch test error beside their baseline's, per seed and as mean/std."""
    import numpy as np
    import pandas as pd

    choices = select(profile, root)
    chosen, base = chosen_results(profile, root, choices), baseline_results(profile, root)
    rows = []
    for (stage, bench), runs in chosen.items():
        b = base.get((stage, bench), {})
        for name, rs in ((f"{STAGES[stage][0]} [{choices[stage][bench].chosen.label}]", runs), (BASELINE[stage], b)):
            errs = [rs[s]["summary"]["test_error"] for s in sorted(rs)]
            rows.append({"stage": stage, "benchmark": bench, "method": name, "seeds": len(errs),
                         "test_error_mean": float(np.mean(errs)) if errs else float("nan"),
                         "test_error_std": float(np.std(errs, ddof=1)) if len(errs) > 1 else float("nan"),
                         "per_seed": ", ".join(f"{e:.2f}" for e in errs)})
    return pd.DataFrame(rows)


# Said wherever runs on different code paths meet: the general fact, fixed (the numbers beside it are computed).
OTHER_PATH = ("a whole run on the other code path is another trajectory: compiled and eager steps agree to rounding "
              "(tests/test_compile.py), but over a run the rounding grows, and the same training on the two paths "
              "ends as far apart as runs with different seeds")


def code_path(result: dict) -> str:
    """How a stored run trained, from its provenance with the store's corrections applied: "compiled"
    (torch.compile, no fall-back to eager seen), "eager" (also runs from before the compile setting was
    recorded), or "unknown" (a correction says the record is wrong and the truth cannot be recovered). Not in
    the run's key: see OTHER_PATH."""
    from ..training.corrections import code_path as path

    return path(result)


def twin_pairs(profile: str, root: Path | None = None, choices: dict | None = None):
    """One row a selection run stored twice, as itself (with validation) and as its training twin (the grid's
    form): the same training, so any difference in test error comes from the code path (compiled or eager),
    the commit or the machine. These rows measure how far a run moves between paths: the noise that mixing
    paths adds to a comparison. `choices`: select()'s answer when the caller has it already."""
    import pandas as pd

    from ..training.store import read_result

    rows = []
    if not has_selection(profile):
        return pd.DataFrame(rows)
    choices = choices or select(profile, root)
    for c in screening_runs(profile, root, choices) + seed_runs(profile, root, choices):
        a, b = read_result(c, root), read_result(training_twin(c), root)
        if a is None or b is None:
            continue
        ea, eb = a["summary"]["test_error"], b["summary"]["test_error"]
        rows.append({"benchmark": bench_name(c.imbalance, c.ratio), "method": c.method, "run_label": run_label(c),
                     "seed": c.seed, "path": code_path(a), "twin_path": code_path(b), "test_error": ea,
                     "twin_test_error": eb, "difference": ea - eb,
                     "commits": f"{a['provenance'].get('git_commit', '?')[:8]} / {b['provenance'].get('git_commit', '?')[:8]}"})
    return pd.DataFrame(rows)


def _paths(runs: dict[int, dict]) -> str:
    """'compiled (seeds 0, 1, 2)' or 'compiled (seed 0), eager (seeds 1, 2)'."""
    by: dict[str, list[int]] = {}
    for s in sorted(runs):
        by.setdefault(code_path(runs[s]), []).append(s)
    return ", ".join(f"{p} (seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))})" for p, ss in by.items())


def path_caveat(sides: dict[str, dict[int, dict]], pairs) -> str:
    """'' when every run of every side trained on one known code path; else a sentence naming each side's paths
    (from provenance, corrections applied) and what the runs stored on both paths (twin_pairs) measured, so a
    verdict is not read as free of that noise."""
    paths = {code_path(r) for runs in sides.values() for r in runs.values()}
    if len(paths) <= 1 and "unknown" not in paths:
        return ""
    what = "code paths differ" if len(paths - {"unknown"}) > 1 else "code paths not all known"
    text = f"; careful: {what}: " + "; ".join(f"{n} {_paths(rs)}" for n, rs in sides.items() if rs)
    mixed = _compiled_eager(pairs)
    if len(mixed):
        moves = ", ".join(f"{d if p == 'compiled' else -d:+.2f} ({b} {m} seed {s})" for d, p, b, m, s in
                          zip(mixed["difference"], mixed["path"], mixed["benchmark"], mixed["method"], mixed["seed"]))
        text += f"; the same training stored on both paths moved by {moves} points (compiled minus eager)"
    return text + f"; {OTHER_PATH}"


def _compiled_eager(pairs):
    """The twin pairs stored once compiled and once eager (whole runs on each path)."""
    if not len(pairs):
        return pairs
    return pairs[[{a, b} == {"compiled", "eager"} for a, b in zip(pairs["path"], pairs["twin_path"])]]


def paths_summary(profile: str, root: Path | None = None, choices: dict | None = None) -> list[str]:
    """One line a (stage, benchmark): the code path of each seed of the baseline and of the chosen config, from
    their provenance (corrections applied); then the twin pairs on two paths against the configs' seed stds."""
    import numpy as np

    choices = choices or select(profile, root)
    chosen, base = chosen_results(profile, root, choices), baseline_results(profile, root)
    lines = []
    for stage, (method, benches, _) in STAGES.items():
        for imb, r in benches:
            key, ch = (stage, bench_name(imb, r)), choices[stage][bench_name(imb, r)].chosen
            if ch is None:
                continue
            lines.append(f"stage {stage}, {key[1]}: {BASELINE[stage]} {_paths(base.get(key, {})) or 'not stored'}; "
                         f"{method} [{ch.label}] {_paths(chosen.get(key, {})) or 'not stored'}")
    pairs = twin_pairs(profile, root, choices)
    known = _compiled_eager(pairs)
    if len(known):
        sds = [np.std([x["summary"]["test_error"] for x in runs.values()], ddof=1)
               for runs in list(chosen.values()) + list(base.values()) if len(runs) > 1]
        lines.append(f"the same training on both paths moved by {', '.join(f'{abs(d):.2f}' for d in known['difference'])} "
                     f"points; the seed std of these configs is {min(sds):.2f}-{max(sds):.2f}" if sds else "")
    return [x for x in lines if x]


def verdicts(profile: str, root: Path | None = None, meta: dict | None = None) -> list:
    """claims.NOISE_RULE on the chosen configs against their baselines, per benchmark, and 'especially step' for
    the chosen MFW at rho = 100: the rows of claims.md labelled 'selected on validation'."""
    from . import claims

    if not has_selection(profile):
        return []
    meta = {"profile": profile, **(meta or {})}
    choices = select(profile, root)
    chosen, base = chosen_results(profile, root, choices), baseline_results(profile, root)
    pairs = twin_pairs(profile, root, choices)
    pools = {bench_name(imb, r): claims.benchmark_results(profile, "cifar10", imb, r, root)
             for imb, r in {b for _, bs, _ in STAGES.values() for b in bs}}
    out = []
    for stage, (method, benches, _) in STAGES.items():
        for imb, r in benches:
            bench = bench_name(imb, r)
            ch = choices[stage][bench].chosen
            label = f"{'MFW' if stage == 'A' else 'MFW + LDAM-DRW'} [{ch.label if ch else 'not chosen yet'}]"
            base_name = "ERM" if stage == "A" else "LDAM-DRW"
            err = {s: x["summary"]["test_error"] for s, x in chosen.get((stage, bench), {}).items()}
            ref = {s: x["summary"]["test_error"] for s, x in base.get((stage, bench), {}).items()}
            v = claims.compare(f"6s cifar10 {bench}: selected {method} vs {BASELINE[stage]}",
                               f"cifar10 {bench}: {label}, selected on validation, has a lower last-epoch top-1 error "
                               f"than {base_name}", ref, err, base_name, label, expect=-1, unit="%", digits=2,
                               pool=claims.config_groups(pools[bench], claims.top1_error), **meta)
            seeds = set(err) & set(ref)
            v.numbers += path_caveat({base_name: {s: base[(stage, bench)][s] for s in seeds},
                                      label: {s: chosen[(stage, bench)][s] for s in seeds}}, pairs)
            out.append(v)
    gain, sides = {}, {}
    for imb in ("step", "exp"):
        b, c = base.get(("A", bench_name(imb, 100)), {}), chosen.get(("A", bench_name(imb, 100)), {})
        e = {s: x["summary"]["test_error"] for s, x in b.items()}
        m = {s: x["summary"]["test_error"] for s, x in c.items()}
        gain[imb] = {s: e[s] - m[s] for s in set(e) & set(m)}
        sides[f"ERM {imb}-100"] = {s: b[s] for s in gain[imb]}
        sides[f"MFW {imb}-100"] = {s: c[s] for s in gain[imb]}
    v = claims.verdict_step_gain(gain["exp"], gain["step"], "6s cifar10 rho=100: selected MFW gains more on step",
                                 "the selected MFW's gain over ERM (error points) is larger on step than on exp "
                                 "imbalance", pools=(pools["exp-100"], pools["step-100"]), **meta)
    if set(gain["exp"]) & set(gain["step"]):
        v.numbers += path_caveat(sides, pairs)
    out.append(v)
    return out
