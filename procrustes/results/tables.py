"""Tables from the result store: last-epoch top-1 error (mean and std over seeds) per benchmark and method,
beside the LDAM-DRW paper's reported numbers; missing runs; provenance; CSV + Markdown output in figures/.

Reported numbers: `procrustes/reference/ldam_drw_reported.csv` (LDAM-DRW paper, Cao et al., NeurIPS 2019,
Tables 2, 4 and 5; see the README beside it). Methods without a reported number (every MFW variant, the
label-mixing relatives) stay blank. The Procrustean paper's own numbers are unknown to us and never appear.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..training.config import RunConfig, base_config, run_label
from ..method.counts import group_definition, major_classes
from .plots import (benchmark_name, figures_dir, group_test_acc, groups_of, majority_group, method_name, minority_group,
                    run_scale, shot_groups)

REFERENCE_CSV = Path(__file__).resolve().parent / "reference" / "ldam_drw_reported.csv"

# our method -> the LDAM-DRW paper's row name; per-dataset exceptions below (Tiny-ImageNet's Table 4 says ERM-DRW)
REPORTED_NAMES = {"erm": "ERM", "focal": "Focal", "ldam": "LDAM", "cb": "CB RW", "drw": "DRW", "ldam-drw": "LDAM-DRW"}
REPORTED_NAMES_BY_DATASET = {"tinyimagenet": {"drw": "ERM-DRW"}}

COLUMN_LABELS = {
    "dataset": "dataset", "imbalance": "imbalance", "ratio": "rho", "method": "method",
    "seeds_done": "seeds done", "top1_error_mean": "top-1 error (%)", "top1_error_std": "std over seeds",
    "minority_group": "minority group", "minority_acc_mean": "minority-group acc. (%)",
    "majority_group": "majority group", "majority_acc_mean": "majority-group acc. (%)",
    "lower_half_acc_mean": "lower half acc. (%) [median split, every row]",
    "upper_half_acc_mean": "upper half acc. (%) [median split, every row]",
    "reported_method": "LDAM-DRW row", "reported_top1_error": "LDAM-DRW reported top-1 error (%)",
    "ours_minus_reported": "ours - reported (points)", "benchmark": "benchmark", "group": "varies",
    "label": "variant", "largest_class": "largest class", "smallest_class": "smallest class",
    "paper_md_total": "total stated in docs/paper.md", "default": "MFW's default choice",
    "same_training_as": "same training as", "code_path": "code path",
}
ERROR_COLUMNS = ["dataset", "imbalance", "ratio", "method", "seeds_done", "top1_error_mean", "top1_error_std",
                 "lower_half_acc_mean", "upper_half_acc_mean",
                 "minority_group", "minority_acc_mean", "majority_group", "majority_acc_mean", "reported_method",
                 "reported_top1_error", "ours_minus_reported"]


# ---------------------------------------------------------------------------------------- reported numbers


def reported() -> pd.DataFrame:
    """The LDAM-DRW paper's numbers, with the imbalance column named `imbalance`."""
    df = pd.read_csv(REFERENCE_CSV, comment="#")
    return df.rename(columns={"profile": "imbalance"})


def reported_name(dataset: str, method: str) -> str | None:
    """The LDAM-DRW row that corresponds to our method, or None (MFW variants, relatives: no reported number)."""
    return REPORTED_NAMES_BY_DATASET.get(dataset, {}).get(method, REPORTED_NAMES.get(method))


def reported_error(dataset: str, imbalance: str, ratio: float, method: str, ref: pd.DataFrame | None = None) -> float:
    """The reported top-1 error (%) of our method on this benchmark, NaN when the paper has none."""
    name = reported_name(dataset, method)
    if name is None:
        return math.nan
    ref = reported() if ref is None else ref
    hit = ref[(ref.dataset == dataset) & (ref.imbalance == imbalance) & (ref.ratio == float(ratio)) & (ref.method == name)]
    return float(hit.top1_error.iloc[0]) if len(hit) else math.nan


# ---------------------------------------------------------------------------------------- our numbers


def config_key(result: dict) -> str:
    """The config part of a result's key (its folder is '<config key>-<data id>')."""
    return str(result["key"]).split("-")[0]


# One definition of head and tail for every row of a table (issue 25, item 15): the halves of the median split of
# the training counts (`counts.major_classes`: the upper half has at least the median count), whatever the
# benchmark, beside the shot groups (whose meaning changes with the benchmark: minor / few / a median half).
HALVES_NOTE = ("lower / upper half: the classes below / at or above the median training count, the same definition "
               "on every row")


def half_accs(result: dict) -> tuple[float, float]:
    """Last-epoch test accuracy (%) of the lower and the upper half of the median split (nan where no split)."""
    upper = major_classes(result["summary"]["train_counts"])
    acc = 100 * np.asarray(result["summary"]["test_acc_per_class"], dtype=float)
    return (float(acc[~upper].mean()) if (~upper).any() else math.nan,
            float(acc[upper].mean()) if upper.any() and (~upper).any() else math.nan)


def run_rows(results: list[dict]) -> pd.DataFrame:
    """One row per finished run: benchmark, method, seed, errors, minority- and majority-group accuracy (groups
    scaled with n_max, or the median halves where one shot group holds every class: see plots.groups_of; both,
    since a long-tailed method trades one for the other), config key."""
    rows = []
    for r in results:
        c, s = r["config"], r["summary"]
        low, high = minority_group(r), majority_group(r)
        lower, upper = half_accs(r)
        rows.append({"lower_half_acc": lower, "upper_half_acc": upper, "dataset": c["dataset"],
                     "imbalance": c["imbalance"], "ratio": float(c["ratio"]),
                     "method": c["method"], "seed": c["seed"], "top1_error": s["test_error"],
                     "top5_error": s.get("top5_error"), "minority_group": low,
                     "minority_acc": 100 * group_test_acc(r, low), "majority_group": high,
                     "majority_acc": 100 * group_test_acc(r, high), "key": config_key(r)})
    return pd.DataFrame(rows, columns=["dataset", "imbalance", "ratio", "method", "seed", "top1_error", "top5_error",
                                       "lower_half_acc", "upper_half_acc", "minority_group", "minority_acc",
                                       "majority_group", "majority_acc", "key"])


def _std(x: pd.Series) -> float:
    return float(x.std(ddof=1)) if x.notna().sum() > 1 else math.nan


def error_table(configs: list[RunConfig], results: list[dict], compare: bool = True) -> pd.DataFrame:
    """One row per (dataset, imbalance, ratio, method) of `configs`, in their order, finished or not:
    seeds done (of planned), mean and std over seeds of the last-epoch top-1 error, minority- and majority-group accuracy,
    the LDAM-DRW paper's reported error and ours minus reported (left blank when compare is False).
    A row whose runs are all missing keeps NaN numbers: the table's shape does not depend on progress."""
    ref = reported()
    runs = run_rows(results)
    by_key = {config_key(r): r for r in results}
    cells: dict[tuple, list[RunConfig]] = {}
    for c in configs:
        cells.setdefault((c.dataset, c.imbalance, float(c.ratio), c.method), []).append(c)
    rows = []
    for (d, i, ratio, m), cs in cells.items():
        done = runs[runs.key.isin([c.key() for c in cs if c.key() in by_key])]
        rep = reported_error(d, i, ratio, m, ref)
        summary = _seeds_summary(done, len(cs))
        rows.append({
            "dataset": d, "imbalance": i, "ratio": ratio, "method": m, **summary,
            "reported_method": reported_name(d, m) or "",
            "reported_top1_error": rep,
            "ours_minus_reported": summary["top1_error_mean"] - rep if compare else math.nan,
        })
    out = pd.DataFrame(rows, columns=ERROR_COLUMNS)
    out.attrs["protocol"] = protocol(configs)  # what the bars trained with, for the figure (plots.plot_error_table)
    return out


def protocol(configs: list[RunConfig]) -> str:
    """The training budget of the table's runs in words, per profile: 'cpu profile: n_max 2,000, 80 epochs'
    ('full data' where the benchmark keeps the paper's n_max)."""
    parts = []
    for profile in dict.fromkeys(c.profile for c in configs):
        cs = [c for c in configs if c.profile == profile]
        sizes = sorted({"full data" if c.max_per_class is None else f"n_max {c.max_per_class:,}" for c in cs})
        eps = sorted({c.epochs for c in cs})
        parts.append(f"{profile} profile: {', '.join(sizes)}, {' or '.join(map(str, eps))} epochs")
    return "; ".join(parts)


def _seeds_summary(done: pd.DataFrame, planned: int) -> dict:
    """The columns a table row shares, from the finished seeds of one cell (run_rows' rows): seeds done of planned,
    mean/std top-1 error, mean half- and group accuracies (NaN and None while no seed is done)."""
    def mean(col: str) -> float:
        return float(done[col].mean()) if len(done) else math.nan

    def first(col: str):
        return done[col].iloc[0] if len(done) else None

    return {"seeds_done": f"{len(done)}/{planned}", "top1_error_mean": mean("top1_error"), "top1_error_std": _std(done.top1_error),
            "lower_half_acc_mean": mean("lower_half_acc"), "upper_half_acc_mean": mean("upper_half_acc"),
            "minority_group": first("minority_group"), "minority_acc_mean": mean("minority_acc"),
            "majority_group": first("majority_group"), "majority_acc_mean": mean("majority_acc")}


def table_groups_note(results: list[dict]) -> str:
    """The group definitions a table of these runs uses, one per imbalance type, and the benchmarks whose classes
    all fall in one group (their minority and majority groups are the median halves), in words."""
    first: dict[str, dict] = {}
    single: dict[str, tuple[str, int]] = {}
    for r in results:
        c = r["config"]
        first.setdefault(c["imbalance"], r)
        g = shot_groups(r)
        if len(g) == 1 and len(groups_of(r)) == 2:
            single.setdefault(benchmark_name(c["dataset"], c["imbalance"], c["ratio"]),
                              (next(iter(g)), min(r["summary"]["train_counts"])))
    parts = [HALVES_NOTE] + [f"{i}: {group_definition(i, run_scale(r['config']))}" for i, r in first.items()]
    parts += [f"{b}: every class is {g} (the smallest has {n} training images), so its minority and majority groups "
              f"are the halves of the median split (upper half: at least the median training count; lower half: "
              f"the rest)" for b, (g, n) in single.items()]
    return "; ".join(parts)


def add_profile_column(df: pd.DataFrame, configs: list[RunConfig], results: list[dict], profile: str) -> pd.DataFrame:
    """df with the `profile` runs' mean top-1 error and seeds done beside each (dataset, imbalance, ratio,
    method) row (blank where that profile has no run): e.g. the paper profile's numbers next to the cpu table
    and the LDAM-DRW paper's, as GPU harvests fill them in."""
    other = error_table(configs, results, compare=False)[["dataset", "imbalance", "ratio", "method", "seeds_done",
                                                          "top1_error_mean"]]
    other = other.rename(columns={"seeds_done": f"{profile}_seeds_done", "top1_error_mean": f"{profile}_top1_error_mean"})
    out = df.merge(other, on=["dataset", "imbalance", "ratio", "method"], how="left")
    out[f"{profile}_seeds_done"] = out[f"{profile}_seeds_done"].fillna("no run")
    out.attrs = dict(df.attrs)  # merge drops them; the figure reads the bars' protocol there
    COLUMN_LABELS.setdefault(f"{profile}_seeds_done", f"{profile} profile: seeds done")
    COLUMN_LABELS.setdefault(f"{profile}_top1_error_mean", f"{profile} profile: top-1 error (%)")
    return out


def ablation_table(pairs: list, results: list[dict]) -> pd.DataFrame:
    """Notebook 07: one row per (benchmark, variant) from experiments.ablation_runs' (Variant, config) pairs:
    what it varies (group), the variant, whether it is MFW's default choice (the run its method has in the
    profile with no other change: stage1, median, U(0.5, 1), always), which other variants of its group are the
    same training under another config (experiments.training_signature: e.g. two selection rules that give the
    same probabilities on the benchmark's counts), the code path of its runs (provenance, corrections applied),
    seeds done, mean/std top-1 error, minority- and majority-group accuracy."""
    from ..training.corrections import code_path
    from ..training.signature import training_signature

    runs = run_rows(results).set_index("key")
    paths = {config_key(r): code_path(r) for r in results}
    cells: dict[tuple, list[RunConfig]] = {}
    for v, c in pairs:
        bench = benchmark_name(c.dataset, c.imbalance, c.ratio)
        cells.setdefault((bench, v.group, v.label, c.method), []).append(c)
    sig = {cell: {training_signature(c) for c in cs} for cell, cs in cells.items()}
    keys_of = {cell: {c.key() for c in cs} for cell, cs in cells.items()}
    rows = []
    for (bench, group, label, method), cs in cells.items():
        keys = [c.key() for c in cs if c.key() in runs.index]
        done = runs.loc[keys] if keys else runs.iloc[0:0]
        default = group != "relatives" and all(c.key() == base_config(c).key() for c in cs)
        twins = [o[2] for o in cells if o[:2] == (bench, group) and o != (bench, group, label, method)
                 and sig[o] == sig[(bench, group, label, method)] and keys_of[o] != keys_of[(bench, group, label, method)]]
        rows.append({"benchmark": bench, "group": group, "label": label, "method": method, "default": default,
                     "same_training_as": ", ".join(twins),
                     "code_path": ", ".join(sorted({paths[k] for k in keys if k in paths})),
                     **_seeds_summary(done, len(cs))})
    return pd.DataFrame(rows, columns=["benchmark", "group", "label", "method", "default", "same_training_as", "code_path",
                                       "seeds_done", "top1_error_mean", "top1_error_std", "lower_half_acc_mean",
                                       "upper_half_acc_mean", "minority_group", "minority_acc_mean", "majority_group",
                                       "majority_acc_mean"])


def same_training_notes(df: pd.DataFrame) -> list[str]:
    """One line for each pair of ablation rows that are the same training under two configs (ablation_table's
    same_training_as): their gap is no effect of the choice they vary; it measures what else differed between
    the two runs, read from their provenance: the code path, else the machine or commit (else nothing: then
    the two should agree bit for bit)."""
    from .selection import OTHER_PATH

    lines, seen = [], set()
    for r in df[df.same_training_as != ""].itertuples():
        for other in r.same_training_as.split(", "):
            o = df[(df.benchmark == r.benchmark) & (df.group == r.group) & (df.label == other)].iloc[0]
            pair = (r.benchmark, r.group, *sorted((r.label, other)))
            if pair in seen:
                continue
            seen.add(pair)
            gap = r.top1_error_mean - o.top1_error_mean
            if r.code_path and o.code_path and r.code_path != o.code_path:
                what = (f"it measures the code path ({r.label}: {r.code_path}; {other}: {o.code_path}): "
                        f"{OTHER_PATH}")
            elif gap == gap and gap != 0:
                what = "both runs took the same code path, so it measures the commit or the machine that trained them"
            else:
                what = "the two runs agree, as one training should"
            gap_text = f"{gap:+.2f} points" if gap == gap else "not measured yet (runs missing)"
            lines.append(f"{r.benchmark}, {r.group}: '{r.label}' and '{other}' are the same training (the same "
                         f"selection probabilities on this benchmark's class counts, every other setting equal); their "
                         f"error gap, {gap_text}, is no effect of the {r.group}: {what}")
    return lines


def report_missing(missing: list[RunConfig], planned: int | None = None) -> str:
    """A printable paragraph: how many runs are missing, which, and how to train them."""
    if not missing:
        return f"all {planned} runs are in the result store" if planned is not None else "no run is missing"
    profile = missing[0].profile
    head = f"{len(missing)} run(s){f' of {planned}' if planned is not None else ''} missing from the result store " \
           f"(their rows and curves are left out, not invented):"
    lines = [f"  - {run_label(c)} (key {c.key()})" for c in missing]
    tail = (f"train them with `python -m procrustes reproduce --profile {profile}` (or rerun this notebook with "
            f"PROCRUSTES_TRAIN_MISSING=1)")
    return "\n".join([head, *lines, tail])


def machines(provenance: dict) -> str:
    """Every machine a run trained on, in order ("A, then B" for a run resumed elsewhere), from its segments."""
    return ", then ".join(provenance.get("device_names") or [provenance["device_name"]])


def commits(provenance: dict) -> str:
    """Every commit a run trained at, short, each with its '+dirty' mark: a run resumed after a change of code
    shows both commits."""
    full = provenance.get("git_commits") or str(provenance["git_commit"]).split(", ")
    return ", ".join(c[:10] + ("+dirty" if c.endswith("+dirty") else "") for c in full)


def corrected_mark(result: dict, *fields: str) -> str:
    """" (corrected)" where results/corrections.json changed one of these provenance fields of result: said on the
    column that shows the field, not on every column of the run."""
    fixed = {x["field"] for x in result.get("corrections", [])}
    return " (corrected)" if fixed & {f"provenance.{f}" for f in fields} else ""


def provenance_table(results: list[dict]) -> pd.DataFrame:
    """Where each shown number comes from: run, profile, git commit, device, precision, code path (compiled,
    eager or unknown: provenance with the store's corrections applied), finish date (UTC), wall time."""
    from ..training.corrections import code_path

    rows = []
    for r in results:
        p, c = r.get("provenance", {}), r["config"]
        try:
            name = run_label(RunConfig.from_dict(c)).replace(f" ({c['profile']})", "")
        except Exception:  # a result written by another version of RunConfig
            name = f"{c['dataset']} {c['imbalance']}-{c['ratio']:g} {c['method']} seed {c['seed']}"
        rows.append({"run": name, "profile": c["profile"], "key": r["key"],
                     "git commit": (commits(p) if p.get("git_commit") else "?") + corrected_mark(r, "git_commit", "git_commits"),
                     "device": machines(p) if p.get("device_name") else p.get("device", "?"), "precision": p.get("precision"),
                     "code path": code_path(r) + corrected_mark(r, "compiled", "code_path", "eager"),
                     "finished (UTC)": p.get("finished_utc"), "wall time (min)": round(p.get("wall_s", math.nan) / 60, 1)})
    return pd.DataFrame(rows, columns=["run", "profile", "key", "git commit", "device", "precision", "code path",
                                       "finished (UTC)", "wall time (min)"])


# ---------------------------------------------------------------------------------------- output


def pretty(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Readable column names, method names as in the figures, numbers rounded, NaN shown as blank."""
    out = df.copy()
    if "method" in out:
        out["method"] = out["method"].map(method_name)
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            if col == "ratio":
                out[col] = out[col].map(lambda v: f"{v:g}")
            else:
                out[col] = out[col].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
    out = out.astype(object).where(out.notna(), "")
    return out.rename(columns=COLUMN_LABELS)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (no tabulate needed)."""
    def cell(v) -> str:
        s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
        return s.replace("|", "\\|").replace("\n", " ")

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, name: str, outdir: str | Path | None = None, note: str | None = None,
                profile: str | None = None) -> list[Path]:
    """figures/<name>.csv (the raw numbers) and figures/<name>.md (readable: `pretty`, with `note` above it);
    in figures/<profile>/ for a profile that is not the committed one. Each written atomically (a temporary file
    beside it, then a rename): a kill while writing leaves the old table or the new one, never half of one."""
    from ..training.store import atomic_write_text

    d = figures_dir(outdir, profile)
    csv, md = d / f"{name}.csv", d / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=False, float_format="%.4g"))
    atomic_write_text(md, (f"{note}\n\n" if note else "") + to_markdown(pretty(df)))
    return [csv, md]


def shape_line(df: pd.DataFrame, name: str = "table") -> str:
    """'table: 8 rows x 12 columns' (what nbval compares: it does not depend on the profile or on progress)."""
    return f"{name}: {df.shape[0]} rows x {df.shape[1]} columns"


__all__ = ["REFERENCE_CSV", "REPORTED_NAMES", "reported", "reported_name", "reported_error", "run_rows", "error_table",
           "ablation_table", "config_key", "machines", "commits", "corrected_mark", "table_groups_note", "add_profile_column",
           "report_missing", "provenance_table", "pretty", "to_markdown", "write_table", "shape_line"]
