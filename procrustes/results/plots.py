"""The figures the notebooks share: one colour-blind-safe style, and every figure saved as PNG and PDF.

Conventions: x is the epoch (1 = after the first epoch); accuracies are in %; the feature-gradient norm is
||dLoss/d(feature)|| per training example (the penultimate feature, arbitrary units). Group curves average the
per-class values over the classes of a group (`procrustes.method.counts.class_groups`): major/minor for step
imbalance, many/medium/few for the others (thresholds scaled with n_max). Titles name the benchmark and the
profile the numbers come from. Several seeds of a method are drawn as their mean (thick line), a band from
the lowest to the highest seed and every seed as a thin line; labels say how many seeds. Dotted vertical lines
mark the learning-rate drops (and the DRW switch).
"""
from __future__ import annotations

import io
import math
import os
import textwrap
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from ..method.counts import class_groups, report_group_definition, report_groups
from ..method.counts import group_scale as counts_group_scale
from .figure_files import write_figure_file

REPO = Path(__file__).resolve().parents[2]

# seaborn "colorblind": 0 blue, 1 orange, 2 green, 3 vermilion, 4 purple, 5 brown, 6 pink, 7 grey, 8 yellow, 9 sky
PALETTE = sns.color_palette("colorblind")
GROUP_COLORS = {"major": PALETTE[0], "minor": PALETTE[3], "many": PALETTE[0], "medium": PALETTE[2],
                "few": PALETTE[3], "all": PALETTE[7]}
METHOD_COLORS = {"erm": PALETTE[7], "mfw": PALETTE[4], "focal": PALETTE[5], "ldam": PALETTE[9], "cb": PALETTE[8],
                 "drw": PALETTE[2], "ldam-drw": PALETTE[0], "mfw+drw": PALETTE[1], "mfw+ldam-drw": PALETTE[3],
                 "mixup": PALETTE[6], "manifold-mixup": PALETTE[9], "remix": PALETTE[5]}
LINESTYLES = ["-", "--", ":", "-."]
SEQUENTIAL_CMAP = "cividis"  # perceptually uniform and readable with colour-vision deficiencies
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "tinyimagenet": "Tiny-ImageNet-200", "imagefolder": "image folder"}
METHOD_NAMES = {"erm": "ERM", "focal": "Focal", "cb": "CB RW", "drw": "DRW", "ldam": "LDAM", "ldam-drw": "LDAM-DRW",
                "logit-adjust": "logit adj.", "mfw": "MFW", "mixup": "mixup", "manifold-mixup": "manifold mixup",
                "remix": "Remix"}

METRICS = {  # history key -> (axis label with units, factor applied to the stored value)
    "train_acc": ("training accuracy on the\naugmented, mixed batches (%)", 100.0),
    "train_acc_clean": ("training accuracy, clean (%)\n(eval mode, no augmentation or mixing)", 100.0),
    "pred_major_share_clean": ("predicted as a major class (%)\n(clean training images)", 100.0),
    "test_acc": ("test accuracy (%)", 100.0),
    "feature_grad": ("feature-gradient norm\n||dL/dh|| per example (a.u.)", 1.0),
    "pred_major_share": ("predicted as a major class (%)", 100.0),
}

RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.frameon": False,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "pdf.fonttype": 42,
}


def apply_style() -> None:
    """Set the package style for the rest of the session (what the notebooks call once)."""
    sns.set_theme(context="notebook", style="ticks", palette="colorblind")
    matplotlib.rcParams.update(RC)


# ---------------------------------------------------------------------------------------- saving


COMMITTED_PROFILE = "cpu"  # the profile whose figures are committed in figures/


def figures_dir(outdir: str | Path | None = None, profile: str | None = None) -> Path:
    """outdir, else $PROCRUSTES_FIGURES, else the repository's figures/ folder for the committed profile and
    figures/<profile>/ for any other, so that a run of another profile never overwrites committed figures."""
    if outdir:
        d = Path(outdir)
    else:
        d = Path(os.environ.get("PROCRUSTES_FIGURES") or REPO / "figures")
        if profile not in (None, COMMITTED_PROFILE):
            d = d / profile
    d.mkdir(parents=True, exist_ok=True)
    return d


def save_figure(fig, name: str, outdir: str | Path | None = None, dpi: int = 150, profile: str | None = None) -> list[Path]:
    """figures/<name>.png (dpi 150) and figures/<name>.pdf (in figures/<profile>/ for a profile that is not the
    committed one); returns both paths. No date in either file and a fixed hash salt for the PDF, so that
    regenerating an unchanged figure gives the same bytes; a file that already shows the same figure up to
    another CPU's rounding noise is left as it is (`figure_files`), so `make figures` leaves the tree clean."""
    matplotlib.rcParams["svg.hashsalt"] = "procrustes"
    d = figures_dir(outdir, profile)
    paths = [d / f"{name}.png", d / f"{name}.pdf"]
    for path, kw in ((paths[0], {"dpi": dpi, "metadata": {"Software": None}}),
                     (paths[1], {"metadata": {"CreationDate": None, "ModDate": None, "Producer": None,
                                              "Creator": None}})):
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix[1:], bbox_inches="tight", **kw)
        write_figure_file(path, buf.getvalue())
    return paths


# ---------------------------------------------------------------------------------------- labels


def method_name(method: str) -> str:
    """'mfw+ldam-drw' -> 'MFW + LDAM-DRW'; a bracketed variant stays as written: 'mfw [stage2 / power]' ->
    'MFW [stage2 / power]' (notebook 09's chosen configs)."""
    base, bracket, variant = method.partition(" [")
    return " + ".join(METHOD_NAMES.get(p, p) for p in base.split("+")) + bracket + variant


def benchmark_name(dataset: str, imbalance: str, ratio: float) -> str:
    imb = {"exp": "long-tailed (exp)", "step": "step", "none": "as-is"}.get(imbalance, imbalance)
    return f"{DATASET_NAMES.get(dataset, dataset)}, {imb} imbalance, rho={ratio:g}"


def setting_title(result_or_config: dict, what: str = "") -> str:
    """'<what>\\nCIFAR-10, step imbalance, rho=100 | cpu profile: n_max 2000, 80 epochs, seed 0'."""
    c = result_or_config.get("config", result_or_config)
    size = f"n_max {c['max_per_class']}, " if c.get("max_per_class") else ""
    line = (f"{benchmark_name(c['dataset'], c['imbalance'], c['ratio'])} | {c['profile']} profile: "
            f"{size}{c['epochs']} epochs, seed {c['seed']}")
    return f"{what}\n{line}" if what else line


def result_label(result: dict) -> str:
    return method_name(result["config"]["method"])


# ---------------------------------------------------------------------------------------- data access


def run_scale(config: dict) -> float:
    """n_max of the run over the benchmark's paper n_max: the factor of the many/few-shot thresholds."""
    return counts_group_scale(config["dataset"], config.get("max_per_class"))


def shot_groups(result: dict) -> dict[str, list[int]]:
    """The run's groups by `counts.class_groups` (thresholds scaled with its n_max), without empty groups."""
    s, c = result["summary"], result["config"]
    g = class_groups(s["train_counts"], c["imbalance"], run_scale(c))
    return {k: v for k, v in g.items() if v}


def groups_of(result: dict) -> dict[str, list[int]]:
    """The reporting groups of a run: `counts.report_groups` of its training counts (shot groups, or the median
    halves where one shot group holds every class)."""
    c = result["config"]
    return report_groups(result["summary"]["train_counts"], c["imbalance"], run_scale(c))


def groups_note(result: dict) -> str:
    """The group definition a figure or table of this run uses, in words."""
    c = result["config"]
    return report_group_definition(result["summary"]["train_counts"], c["imbalance"], run_scale(c))


def group_test_acc(result: dict, group: str) -> float:
    """Last-epoch test accuracy (0..1) of a group, from the per-class accuracies (nan for an empty group)."""
    idx = groups_of(result).get(group)
    acc = np.asarray(result["summary"]["test_acc_per_class"], dtype=float)
    return float(acc[idx].mean()) if idx else float("nan")


def minority_group(result: dict) -> str:
    """'minor' (step) or 'few' (otherwise); 'medium' or the last group when 'few' is empty."""
    g = groups_of(result)
    for name in ("minor", "few", "medium"):
        if name in g:
            return name
    return list(g)[-1]


def majority_group(result: dict) -> str:
    g = groups_of(result)
    for name in ("major", "many", "medium"):
        if name in g:
            return name
    return list(g)[0]


def epochs(result: dict) -> np.ndarray:
    return np.asarray(result["history"]["epoch"])


def per_class(result: dict, metric: str) -> np.ndarray:
    """(epochs, classes) array of a per-class history metric, in the metric's plotting units."""
    factor = METRICS.get(metric, ("", 1.0))[1]
    return np.asarray(result["history"][metric], dtype=float) * factor


def group_curves(result: dict, metric: str) -> dict[str, np.ndarray]:
    """{group: curve along epochs}: per-class values averaged over the classes of each (non-empty) group."""
    a = per_class(result, metric)
    return {g: a[:, idx].mean(axis=1) for g, idx in groups_of(result).items()}


def _mark_schedule(ax, result: dict) -> None:
    """A dotted vertical line at every learning-rate drop (x factor of the base lr) and at the DRW switch."""
    sched = result["summary"].get("schedule", {})
    miles = sched.get("lr_milestones") or []
    factors = sched.get("lr_factors") or []
    n = result["config"]["epochs"]
    marks: dict[float, list[str]] = {}
    for m, f in zip(miles, factors):
        if 0 < m < n:
            marks.setdefault(m, []).append(f"lr x{f:g}")
    drw = sched.get("drw_epoch")
    if drw is not None and 0 < drw < n and ("drw" in result["config"]["method"] or result["config"].get("sampler") == "drs"):
        marks.setdefault(drw, []).append("DRW on")
    for m, texts in sorted(marks.items()):
        x = m + 0.5
        ax.axvline(x, color="0.5", lw=0.8, ls=(0, (2, 2)), zorder=0)
        ax.annotate(", ".join(texts), (x, 0.02), xycoords=("data", "axes fraction"), xytext=(-2, 0),
                    textcoords="offset points", rotation=90, fontsize=7, color="0.4", ha="right", va="bottom")


def leading_digit(v: float) -> str:
    """The first significant digit of v: '2' for 0.2, 2 and 20 (what a log axis's minor labels are chosen by)."""
    return f"{abs(v):.0e}"[0]


def plain_log_ticks(axis, minor: bool = True) -> None:
    """Tick labels 0.05, 0.1, 0.2, 0.5, 1, 2 instead of 5 x 10^-2 on a logarithmic axis: every power of ten and,
    with minor, the 2s and 5s between them (so that an axis spanning less than a decade still has labels)."""
    axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    label = (lambda v, _: f"{v:g}" if leading_digit(v) in "25" else "") if minor else (lambda v, _: "")
    axis.set_minor_formatter(matplotlib.ticker.FuncFormatter(label))


def _epoch_axis(ax, result: dict) -> None:
    n = result["config"]["epochs"]
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, n + 0.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=8))


# ---------------------------------------------------------------------------------------- class counts


def plot_benchmark_counts(counts: dict[tuple[str, str, float], list[int]], log: bool = True):
    """One panel per dataset: training images per class (class index, largest first) for each (imbalance, rho);
    one legend for all panels (the totals are in the benchmark_counts table)."""
    datasets = list(dict.fromkeys(d for d, _, _ in counts))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.4 * len(datasets), 4.0), squeeze=False, layout="constrained")
    styles = {}
    for (_, imb, r) in counts:
        if (imb, r) not in styles:
            k = len(styles)
            styles[(imb, r)] = (PALETTE[k % len(PALETTE)], LINESTYLES[k % len(LINESTYLES)])
    for ax, d in zip(axes[0], datasets):
        for (dd, imb, r), c in counts.items():
            if dd != d:
                continue
            col, ls = styles[(imb, r)]
            ax.plot(np.arange(len(c)), c, drawstyle="steps-mid" if imb == "step" else "default", color=col, ls=ls,
                    lw=1.8, marker="o" if len(c) <= 10 else None, ms=3.5)
        if log:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis, minor=False)
        ax.set_title(DATASET_NAMES.get(d, d))
        ax.set_xlabel("class index (largest class first)")
        ax.set_ylabel("training images per class")
    handles = [matplotlib.lines.Line2D([], [], color=col, ls=ls, lw=1.8, label=f"{imb} imbalance, rho={r:g}")
               for (imb, r), (col, ls) in styles.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), handlelength=3)
    fig.suptitle("Class-count profiles of the benchmarks (LDAM-DRW convention; test sets stay balanced)")
    return fig


def plot_class_counts(ax, result: dict) -> None:
    """Bars of training images per class, coloured by reporting group."""
    s = result["summary"]
    counts = np.asarray(s["train_counts"])
    colors = ["0.5"] * len(counts)
    for g, idx in groups_of(result).items():
        for i in idx:
            colors[i] = GROUP_COLORS.get(g, "0.5")
    ax.bar(np.arange(len(counts)), counts, color=colors)
    _class_ticks(ax, result)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("training images per class")
    if counts.max() / max(counts.min(), 1) > 20:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    handles = [matplotlib.patches.Patch(color=GROUP_COLORS.get(g, "0.5"), label=f"{g} ({len(i)} classes)")
               for g, i in groups_of(result).items()]
    ax.legend(handles=handles, loc="upper right")


def _class_ticks(ax, result: dict) -> None:
    classes = result["summary"].get("classes") or []
    n = len(result["summary"]["train_counts"])
    if n <= 20 and len(classes) == n:
        ax.set_xticks(np.arange(n))
        ax.set_xticklabels([f"{i}: {c}" for i, c in enumerate(classes)], rotation=40, ha="right")
        ax.set_xlabel("class (largest first)")
    else:
        ax.set_xlabel("class index (largest first)")


# ---------------------------------------------------------------------------------------- curves


def by_method(results: list[dict]) -> dict[str, list[dict]]:
    """{method: its results sorted by seed}, methods in first-seen order."""
    out: dict[str, list[dict]] = {}
    for r in results:
        out.setdefault(r["config"]["method"], []).append(r)
    return {m: sorted(rs, key=lambda r: r["config"]["seed"]) for m, rs in out.items()}


def seeds_label(rs: list[dict]) -> str:
    n = len(rs)
    return f"{n} seed{'s' if n != 1 else ''}"


def seed_curves(rs: list[dict], metric: str, group: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, seeds x epochs array) of one group's curve, over the seeds of one method (common epochs only)."""
    n = min(len(epochs(r)) for r in rs)
    return epochs(rs[0])[:n], np.stack([group_curves(r, metric)[group][:n] for r in rs])


def draw_seeds(ax, x: np.ndarray, ys: np.ndarray, color, ls: str = "-", label: str | None = None) -> None:
    """Mean over seeds as a thick line; with several seeds, a band from the lowest to the highest seed and
    every seed as a thin line."""
    ax.plot(x, ys.mean(0), color=color, ls=ls, lw=1.8, label=label)
    if len(ys) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=color, alpha=0.15, lw=0)
        for y in ys:
            ax.plot(x, y, color=color, ls=ls, lw=0.5, alpha=0.6)


def plot_group_metric(ax, results: list[dict], metric: str, groups: list[str] | None = None,
                      ylabel: str | None = None, schedule: bool = True) -> None:
    """Group curves of one history metric: colour = group, line style = method; seeds as in `draw_seeds`."""
    methods = by_method(results)
    for k, (m, rs) in enumerate(methods.items()):
        for g in groups_of(rs[0]):
            if groups is not None and g not in groups:
                continue
            x, ys = seed_curves(rs, metric, g)
            lab = (f"{g}, {method_name(m)}" if len(methods) > 1 else g) + f" ({seeds_label(rs)})"
            draw_seeds(ax, x, ys, GROUP_COLORS.get(g), LINESTYLES[k % len(LINESTYLES)], lab)
    if results:
        _epoch_axis(ax, results[0])
        if schedule:
            _mark_schedule(ax, results[0])
    ax.set_ylabel(ylabel or METRICS[metric][0])
    if METRICS.get(metric, ("", 1))[1] == 100.0:
        ax.set_ylim(-3, 103)


def plot_underfit_then_overfit(results: list[dict]):
    """Notebook 02: major vs minor clean training accuracy and test accuracy along epochs, and where the
    minor-class training images are predicted; one method, all its seeds."""
    results = results if isinstance(results, list) else [results]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), layout="constrained")
    plot_group_metric(axes[0], results, "train_acc_clean")
    axes[0].set_title("training accuracy (clean: eval mode, no augmentation)")
    plot_group_metric(axes[1], results, "test_acc", ylabel="test accuracy (%)")
    axes[1].set_title("test accuracy (balanced test set)")
    low = minority_group(results[0])
    plot_group_metric(axes[2], results, "pred_major_share_clean", groups=[low],
                      ylabel=f"{low}-class training images\npredicted as a major class (%)")
    axes[2].axhline(50, color="0.6", lw=0.8, ls=":")
    axes[2].set_title(f"where {low}-class training images are predicted")
    for ax in axes:
        ax.legend(loc="best")
    r = results[0]
    fig.suptitle(setting_title(r, f"{result_label(r)}: per-group accuracy along training").replace(
        f"seed {r['config']['seed']}", f"seeds {', '.join(str(x['config']['seed']) for x in results)}"))
    return fig


def gradient_ratio(result: dict) -> np.ndarray:
    """Per epoch: mean feature-gradient norm of the minority group over that of the majority group."""
    c = group_curves(result, "feature_grad")
    return c[minority_group(result)] / np.maximum(c[majority_group(result)], 1e-12)


def plot_feature_gradients(results: list[dict]):
    """Notebook 03, two rows: above, group means of the per-example feature-gradient norm (colour = group, style =
    method) and the minority/majority ratio per method; below, one class x epoch heat map per method (its first
    seed) on a shared logarithmic colour scale. Two rows keep each panel wide enough to read at a glance."""
    methods = by_method(results)
    firsts = [rs[0] for rs in methods.values()]
    n = len(firsts)
    fig = plt.figure(figsize=(12.5, 8.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 0.95])
    ax0, ax1 = top.subplots(1, 2)
    _plot_gradient_means(ax0, results)
    _plot_gradient_ratio(ax1, methods, firsts[0])
    _plot_gradient_maps(bottom, firsts, n)
    fig.suptitle(setting_title(firsts[0], "Feature-gradient norm along training: " +
                               " vs ".join(method_name(m) for m in methods)).split(", seed")[0])
    return fig


def _plot_gradient_means(ax, results: list[dict]) -> None:
    plot_group_metric(ax, results, "feature_grad", ylabel="||dL/dh|| per example (a.u., log scale)")
    ax.set_yscale("log")
    plain_log_ticks(ax.yaxis)
    ax.set_title("group means")
    ax.legend(loc="best", fontsize=8)


def _plot_gradient_ratio(ax, methods: dict[str, list[dict]], first: dict) -> None:
    for k, (m, rs) in enumerate(methods.items()):
        n_ep = min(len(epochs(r)) for r in rs)
        ys = np.stack([gradient_ratio(r)[:n_ep] for r in rs])
        draw_seeds(ax, epochs(rs[0])[:n_ep], ys, METHOD_COLORS.get(m, PALETTE[k]), LINESTYLES[k % len(LINESTYLES)],
                   f"{method_name(m)} ({seeds_label(rs)})")
    ax.axhline(1, color="0.4", lw=0.8)
    _epoch_axis(ax, first)
    _mark_schedule(ax, first)
    lo, hi = minority_group(first), majority_group(first)
    ax.set_ylabel(f"{lo} / {hi} feature-gradient norm\n(1 = balanced)")
    ax.set_title("imbalance of feature gradients")
    ax.legend(loc="best")


def _plot_gradient_maps(subfig, firsts: list[dict], n: int) -> None:
    """One class x epoch heat map per method, shared log colour scale, one colour bar."""
    axes = subfig.subplots(1, n, squeeze=False)[0]
    mats = [per_class(r, "feature_grad") for r in firsts]
    pos = np.concatenate([m[m > 0].ravel() for m in mats]) if mats else np.array([1.0])
    norm = matplotlib.colors.LogNorm(vmin=max(pos.min(), 1e-6), vmax=pos.max()) if pos.size else None
    im = None
    for ax, r, m in zip(axes, firsts, mats):
        ep = epochs(r)
        im = ax.imshow(np.where(m > 0, m, np.nan).T, aspect="auto", origin="upper", cmap=SEQUENTIAL_CMAP, norm=norm,
                       extent=(ep[0] - 0.5, ep[-1] + 0.5, m.shape[1] - 0.5, -0.5), interpolation="nearest")
        counts = r["summary"]["train_counts"]
        if len(counts) <= 20:
            ax.set_yticks(np.arange(len(counts)))
            ax.set_yticklabels([f"{i} (n={c})" for i, c in enumerate(counts)], fontsize=8.5)
        ax.set_ylabel("class (training images)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=8))
        ax.grid(False)
        ax.set_title(f"{result_label(r)}, seed {r['config']['seed']}: per class")
    if im is not None:
        cb = subfig.colorbar(im, ax=list(axes), fraction=0.04, pad=0.02)
        cb.set_label("||dL/dh|| per example (a.u., log scale)")
        plain_log_ticks(cb.ax.yaxis)


def _method_curves(ax, results: list[dict], metric: str, group: str) -> None:
    """One group's curve of one metric, a line per method (colour = method; seeds as in `draw_seeds`)."""
    for k, (m, rs) in enumerate(by_method(results).items()):
        x, ys = seed_curves(rs, metric, group)
        draw_seeds(ax, x, ys, METHOD_COLORS.get(m, PALETTE[k]), LINESTYLES[k % len(LINESTYLES)], method_label(m, rs))


def method_label(m: str, rs: list[dict]) -> str:
    """'MFW (3 seeds; weakens 99.0% of each epoch's examples)': a mixing method's label says how much it mixed,
    averaged over its epochs and seeds (`history.weakened_share`)."""
    label = f"{method_name(m)} ({seeds_label(rs)}"
    if "mfw" in m.split("+") and all(r["history"].get("weakened_share") for r in rs):
        share = 100 * float(np.mean([np.mean(r["history"]["weakened_share"]) for r in rs]))
        label += f"; weakens {share:.1f}% of each epoch's examples"
    return label + ")"


def plot_train_balance(results: list[dict]):
    """Notebook 04, a row per group (majority above, minority below) and a column per measure (clean training
    accuracy, test accuracy), the methods compared within each panel: the bands of one group never cover the
    other's, and a row's panels share their y axis so the train-test gap (over-fitting) reads directly. The legend
    (below) says how many seeds each method has and what share of the examples MFW weakened."""
    hi, lo = majority_group(results[0]), minority_group(results[0])
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 7.6), layout="constrained", sharex=True, sharey="row")
    for row, g in zip(axes, (hi, lo)):
        for ax, metric, what in ((row[0], "train_acc_clean", "training accuracy (clean)"), (row[1], "test_acc", "test accuracy")):
            _method_curves(ax, results, metric, g)
            _epoch_axis(ax, results[0])
            _mark_schedule(ax, results[0])
            ax.set_title(f"{g} classes: {what}")
            ax.set_ylabel(f"{g}-class accuracy (%)")
        row[0].set_ylim(bottom=-2)
    for ax in axes[0]:
        ax.set_xlabel("")
    axes[0][1].set_ylabel("")
    axes[1][1].set_ylabel("")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), handlelength=3)
    fig.suptitle(setting_title(results[0], "Training (clean: eval mode, no augmentation or mixing) and test accuracy "
                               "along epochs: " + " vs ".join(method_name(m) for m in by_method(results))).split(", seed")[0])
    return fig


def plot_per_class_test_acc(results: list[dict], ax=None, title: str | None = None):
    """Final (last-epoch) per-class test accuracy, one bar per method and class (mean over seeds; whiskers:
    std over seeds, drawn only with several seeds), group shading behind."""
    own = ax is None
    methods = by_method(results)
    if own:
        C0 = len(results[0]["summary"]["train_counts"])
        fig, ax = plt.subplots(figsize=(min(16, 4.0 + 0.45 * C0 * len(methods) ** 0.5), 4.2), layout="constrained")
    else:
        fig = ax.figure
    C = len(results[0]["summary"]["train_counts"])
    w = 0.8 / len(methods)
    for g, idx in groups_of(results[0]).items():
        ax.axvspan(min(idx) - 0.5, max(idx) + 0.5, color=GROUP_COLORS.get(g), alpha=0.08, lw=0)
        ax.annotate(f"{g}", ((min(idx) + max(idx)) / 2, 1.0), xycoords=("data", "axes fraction"), ha="center",
                    va="bottom", fontsize=8.5, color=GROUP_COLORS.get(g))
    for k, (m, rs) in enumerate(methods.items()):
        acc = 100 * np.asarray([r["summary"]["test_acc_per_class"] for r in rs], dtype=float)
        err = acc.std(0, ddof=1) if len(rs) > 1 else None
        mean_all = np.mean([100 * r["summary"]["test_acc"] for r in rs])
        ax.bar(np.arange(C) - 0.4 + w * (k + 0.5), acc.mean(0), width=w, yerr=err, capsize=2, error_kw={"lw": 0.8},
               color=METHOD_COLORS.get(m, PALETTE[k]), label=f"{method_name(m)}: {mean_all:.1f}% ({seeds_label(rs)})")
    _class_ticks(ax, results[0])
    ax.set_xlim(-0.6, C - 0.4)
    ax.set_ylim(0, 105)
    ax.grid(axis="x", visible=False)
    ax.set_ylabel("last-epoch test accuracy (%)")
    many = any(len(rs) > 1 for rs in methods.values())
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), title="method: mean accuracy" + ("\n(whiskers: std over seeds)" if many else ""),
              title_fontsize=8.5)
    ax.set_title(title or setting_title(results[0], "Per-class test accuracy after the last epoch").split(", seed")[0], pad=16)
    return fig


def plot_quickstart(result: dict):
    """Notebook 00: the class counts of the run beside its per-class test accuracy."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), layout="constrained")
    plot_class_counts(axes[0], result)
    axes[0].set_title("training set (test set balanced)")
    plot_per_class_test_acc([result], ax=axes[1], title="per-class test accuracy after the last epoch")
    fig.suptitle(setting_title(result, f"{result_label(result)}: one run"))  # the setting line says how many epochs
    return fig


# ---------------------------------------------------------------------------------------- tables as figures


def seed_counts(cell) -> tuple[int, int]:
    """(done, planned) from a table's 'seeds done' cell such as '2/3'; (0, 0) for anything else."""
    done, _, planned = str(cell).partition("/")
    return (int(done), int(planned)) if done.isdigit() and planned.isdigit() else (0, 0)


def plot_error_table(df, title: str, show_reported: bool = True):
    """Top-1 error per benchmark (x) and method (bars; each benchmark shows the methods of its grid rows), with
    the LDAM-DRW paper's number as a black mark (unless show_reported is False: for runs on data that the
    reported numbers do not describe). Grid rows without a finished run are marked 'missing'."""
    import pandas as pd

    benches = list(dict.fromkeys(zip(df["dataset"], df["imbalance"], df["ratio"])))
    methods = list(dict.fromkeys(df["method"]))
    per_bench = {b: [m for m in methods if ((df["dataset"] == b[0]) & (df["imbalance"] == b[1]) & (df["ratio"] == b[2])
                                            & (df["method"] == m)).any()] for b in benches}
    slots = max(len(v) for v in per_bench.values())
    fig, ax = plt.subplots(figsize=(max(5.0, 3.0 + 0.5 * sum(len(v) for v in per_bench.values())), 4.4),
                           layout="constrained")
    w = 0.8 / slots
    seen_methods, marked = set(), False
    done_counts = {seed_counts(v)[0] for v, y in zip(df.get("seeds_done", []), df["top1_error_mean"]) if pd.notna(y)}
    for x0, b in enumerate(benches):
        ms = per_bench[b]
        for j, m in enumerate(ms):
            row = df[(df["dataset"] == b[0]) & (df["imbalance"] == b[1]) & (df["ratio"] == b[2]) & (df["method"] == m)].iloc[0]
            x = x0 + (j - (len(ms) - 1) / 2) * w
            y, e, rep = row["top1_error_mean"], row["top1_error_std"], row["reported_top1_error"]
            color = METHOD_COLORS.get(m, PALETTE[methods.index(m) % len(PALETTE)])
            label = None if m in seen_methods else method_name(m)
            seen_methods.add(m)
            if pd.notna(y):
                ax.bar(x, y, width=w * 0.95, color=color, label=label,
                       yerr=e if pd.notna(e) and e > 0 else None, capsize=2, error_kw={"lw": 0.8})
                n, _ = seed_counts(row.get("seeds_done"))
                if n and len(done_counts) > 1:  # how many seeds this bar averages, where bars differ
                    ax.annotate(f"n={n}", (x, y + (e if pd.notna(e) else 0.0)), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=6.5, color="0.25")
            else:
                ax.bar(x, 0, width=w * 0.95, color=color, label=label)
                ax.annotate("missing", (x, 1), rotation=90, ha="center", va="bottom", fontsize=7, color="0.3")
            if show_reported and pd.notna(rep):
                ax.plot([x - w / 2, x + w / 2], [rep, rep], color="k", lw=1.6,
                        label=None if marked else reported_label(benches))
                marked = True
    ax.set_xticks(np.arange(len(benches)))
    ax.set_xticklabels([f"{DATASET_NAMES.get(d, d)}\n{i}, rho={r:g}" for d, i, r in benches])
    ax.set_xlim(-0.6, len(benches) - 0.4)
    most = max(done_counts, default=0)
    seeds = f"{most} seeds" if len(done_counts) == 1 else "n seeds"
    ax.set_ylabel("last-epoch top-1 error (%)\n" + (f"(mean over {seeds}; whiskers: std over seeds)" if most > 1
                                                   else "(one seed: no whiskers)"))
    ax.set_ylim(0, error_axis_top(df, show_reported))
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    bars = df.attrs.get("protocol")
    if show_reported and marked and bars:  # the reference lines come from another training budget: say so
        note = (f"bars: {bars}; black lines: {reported_label(benches)}. Different training budgets: compare "
                "the methods within a benchmark, not a bar's height with its line.")
        width = max(60, int(fig.get_figwidth() * 13))  # characters a line at fontsize 8.5
        fig.supxlabel(textwrap.fill(note, width), fontsize=8.5, color="0.25", ha="center")
    return fig


def reported_label(benches) -> str:
    """'reported by the LDAM-DRW paper (full data, 200 epochs)': the protocol of its numbers, computed from the
    paper profile of each dataset shown."""
    from ..training.config import make_config

    epochs = sorted({make_config("paper", dataset=d).epochs for d, _, _ in benches if d in DATASET_NAMES and d != "imagefolder"})
    return f"reported by the LDAM-DRW paper (full data, {' or '.join(map(str, epochs))} epochs)"


def error_axis_top(df, show_reported: bool = True) -> float:
    """The top of an error axis: the tallest bar with its whisker (or reported line), plus room for its 'n=' label,
    rounded up to 10, at most 100: bars of 30-50% no longer sit in the lower half of a 0-100 axis."""
    import pandas as pd

    tops = [m + (e if pd.notna(e) else 0.0) for m, e in zip(df["top1_error_mean"], df["top1_error_std"]) if pd.notna(m)]
    if show_reported:
        tops += [v for v in df["reported_top1_error"] if pd.notna(v)]
    return float(min(100.0, 10 * math.ceil(1.12 * max(tops, default=90.0) / 10)))


def plot_ablation(df, title: str, spread: dict[str, tuple[float, int]] | None = None):
    """Notebook 07: test error, minority- and majority-group test accuracy per variant (rows, labelled 'what it
    varies: variant', '(default)' on MFW's defaults, and coloured by what it varies); one row of panels per
    benchmark. Uncertainty: a variant with several seeds gets a whisker (std over seeds) on its error and its seed
    count in its label; the title says how many seeds the variants have, and with one seed that a difference is
    a measurement, not a finding. spread: {benchmark: (std of the error over seeds, seeds)} of MFW's default
    elsewhere (e.g. notebook 05), drawn as a band of +-1 std around the default's error as a yardstick."""
    import pandas as pd

    benches = list(dict.fromkeys(df["benchmark"]))
    n = len(df[df["benchmark"] == benches[0]])
    fig, axes = plt.subplots(len(benches), 3, figsize=(14, 1.0 + (0.3 * n + 0.9) * len(benches)), squeeze=False,
                             layout="constrained", sharey="row")
    groups = list(dict.fromkeys(df["group"]))
    gcol = {g: PALETTE[k % len(PALETTE)] for k, g in enumerate(groups)}
    for row, b in zip(axes, benches):
        sub = df[df["benchmark"] == b].reset_index(drop=True)
        y = np.arange(len(sub))[::-1]
        low, high = sub["minority_group"].dropna(), sub["majority_group"].dropna()
        for ax, col, xlabel in ((row[0], "top1_error_mean", "last-epoch top-1 error (%)"),
                                (row[1], "minority_acc_mean", f"{low.iloc[0] if len(low) else 'minority'}-class test accuracy (%)"),
                                (row[2], "majority_acc_mean", f"{high.iloc[0] if len(high) else 'majority'}-class test accuracy (%)")):
            vals = sub[col].astype(float)
            err = sub["top1_error_std"].astype(float).fillna(0) if col == "top1_error_mean" else None
            ax.barh(y, vals.fillna(0), color=[gcol[g] for g in sub["group"]], height=0.7,
                    xerr=err if err is not None and (err > 0).any() else None, capsize=2, error_kw={"lw": 0.8})
            for yy, v in zip(y, vals):
                ax.annotate("missing" if pd.isna(v) else f"{v:.1f}", (0 if pd.isna(v) else v, yy), xytext=(3, 0),
                            textcoords="offset points", va="center", fontsize=7.5)
            ax.set_xlabel(xlabel)
            ax.set_xlim(0, 105)
            ax.grid(axis="y", visible=False)
        row[0].set_yticks(y)
        row[0].set_yticklabels([f"{g}: {lab}" + (" (default)" if d else "") + (f" [{k} seeds]" if k > 1 else "")
                                for g, lab, d, k in zip(sub["group"], sub["label"], sub["default"],
                                                        (seed_counts(v)[0] for v in sub["seeds_done"]))], fontsize=8)
        row[0].set_title(b, loc="left", fontsize=10)
        _ablation_yardstick(row[0], sub, (spread or {}).get(b))
    fig.suptitle(f"{title}\n{ablation_seeds_line(df)}")
    return fig


def ablation_seeds_line(df) -> str:
    """How many seeds the ablation's variants have, and what that allows."""
    counts = sorted({seed_counts(v)[1] for v in df["seeds_done"]} - {0})
    if counts == [1]:
        return "1 seed per variant: no spread to show, so a difference between two bars is a measurement, not a finding"
    n = "/".join(map(str, counts)) or "0"
    return f"{n} seeds per variant: bars are means, whiskers the std over seeds"


def _ablation_yardstick(ax, sub, spread: tuple[float, int] | None) -> None:
    """A band of +-1 std (over `spread`'s seeds) around the default variant's error: how far seeds alone move it."""
    defaults = sub[sub["default"] & sub["top1_error_mean"].notna()]
    if spread is None or defaults.empty:
        return
    sd, k = spread
    m = float(defaults["top1_error_mean"].iloc[0])
    ax.axvspan(m - sd, m + sd, color="0.5", alpha=0.18, lw=0, zorder=0,
               label=f"default +- 1 std over {k} seeds ({sd:.2f} points)")
    ax.legend(loc="lower right", fontsize=7.5)


__all__ = ["PALETTE", "GROUP_COLORS", "METHOD_COLORS", "apply_style", "figures_dir", "save_figure",
           "method_name", "benchmark_name", "setting_title", "shot_groups", "groups_of", "minority_group", "majority_group",
           "group_curves", "per_class", "epochs", "plot_benchmark_counts", "plot_class_counts", "plot_group_metric",
           "plot_underfit_then_overfit", "plot_feature_gradients", "plot_train_balance", "plot_per_class_test_acc",
           "plot_quickstart", "plot_error_table", "plot_ablation", "by_method", "seed_curves", "seed_counts", "draw_seeds",
           "gradient_ratio", "run_scale", "groups_note", "group_test_acc", "figures_dir", "COMMITTED_PROFILE"]


def plot_selection(df, title: str):
    """Notebook 09: each candidate's last-epoch validation error (seed 0), one panel a stage, bars grouped by
    benchmark; the default is hatched, the chosen candidate outlined in black and marked with a star."""
    stages = [s for s in ("A", "B") if s in set(df.stage)]
    fig, axes = plt.subplots(1, max(1, len(stages)), figsize=(5.2 * max(1, len(stages)), 3.6), squeeze=False)
    names = {"A": "stage A: MFW alone (point / selection rule)", "B": "stage B: MFW + LDAM-DRW (when MFW is on)"}
    for ax, stage in zip(axes[0], stages):
        sub = df[df.stage == stage]
        benches, cands = list(dict.fromkeys(sub.benchmark)), list(dict.fromkeys(sub.candidate))
        width = 0.8 / len(cands)
        for j, cand in enumerate(cands):
            rows = [sub[(sub.benchmark == b) & (sub.candidate == cand)].iloc[0] for b in benches]
            x = np.arange(len(benches)) + (j - (len(cands) - 1) / 2) * width
            ax.bar(x, [r.val_error for r in rows], width, color=PALETTE[j], label=cand + (" (default)" if rows[0].default else ""),
                   hatch="//" if rows[0].default else None, edgecolor=["black" if r.chosen else "none" for r in rows],
                   linewidth=1.5)
            for xi, r in zip(x, rows):
                if r.chosen:
                    ax.annotate("*", (xi, r.val_error), ha="center", va="bottom", fontsize=14)
        ax.set_xticks(np.arange(len(benches)), [f"CIFAR-10 {b}" for b in benches])
        ax.set_xlim(-0.5, len(benches) - 0.5)  # a benchmark still waiting for its runs keeps its slot
        ax.set_ylabel("validation error (%)\nlast epoch, seed 0")
        ax.set_title(names[stage])
        ax.set_ylim(0, 1.12 * max(sub.val_error.max(), 1) if sub.val_error.notna().any() else 1)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(title + "  (* chosen)")
    fig.tight_layout()
    return fig
