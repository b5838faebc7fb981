"""tables.py and plots.py on synthetic results: reported numbers, table shapes with missing runs, group curves,
files written; and the notebook grid text that nbval compares (the same in the smoke and cpu profiles, seeds aside)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from procrustes.results import experiments as ex
from procrustes.results import plots, tables
from procrustes.training.data import class_groups


def fake_result(cfg, error: float, epochs: int = 3) -> dict:
    """A result dict shaped like train.train's, with simple made-up numbers (for tests only)."""
    from procrustes.training.data import benchmark_counts

    counts = benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class)
    C = len(counts)
    acc = np.linspace(0.9, 0.1, C)
    groups = class_groups(counts, cfg.imbalance)
    hist = {k: [] for k in ("epoch", "lr", "train_loss", "train_acc", "feature_grad", "pred_major_share",
                            "weakened_share", "test_acc", "test_top1", "seconds", "train_acc_clean", "pred_major_share_clean")}
    for e in range(1, epochs + 1):
        hist["epoch"].append(e)
        hist["train_acc"].append((acc * e / epochs).tolist())
        hist["train_acc_clean"].append((acc * e / epochs).tolist())
        hist["pred_major_share_clean"].append([0.5] * C)
        hist["test_acc"].append((acc * e / epochs).tolist())
        hist["feature_grad"].append((1.0 + np.arange(C)).tolist())
        hist["pred_major_share"].append([0.5] * C)
        for k in ("lr", "train_loss", "weakened_share", "test_top1", "seconds"):
            hist[k].append(0.1)
    return {"key": f"{cfg.key()}-abcdef01", "config": cfg.to_dict(), "data": {"id": "abcdef0123456789", "root": "default"},
            "summary": {"test_acc": 1 - error / 100, "test_error": error, "top5_error": None,
                        "test_acc_per_class": acc.tolist(),
                        "group_test_acc": {g: float(acc[i].mean()) if i else None for g, i in groups.items()},
                        "groups": groups, "train_counts": counts, "classes": [f"c{i}" for i in range(C)],
                        "test_images": 100 * C, "schedule": {"lr_milestones": [2], "lr_factors": [0.01], "drw_epoch": 2}},
            "history": hist,
            "provenance": {"git_commit": "abc", "device_name": "cpu", "finished_utc": "2020-01-01", "wall_s": 60}}


def test_reported_numbers_and_names():
    assert tables.reported_error("cifar10", "exp", 100, "erm") == 29.64
    assert tables.reported_error("cifar10", "step", 100, "ldam-drw") == 23.08
    assert tables.reported_error("cifar10", "exp", 100, "drw") == 25.14  # Table 5
    assert tables.reported_error("tinyimagenet", "exp", 100, "drw") == 64.57  # Table 4 calls it ERM-DRW
    assert tables.reported_error("cifar10", "exp", 100, "cb") == 27.63  # CB RW
    for m in ("mfw", "mfw+ldam-drw", "mixup", "remix"):
        assert math.isnan(tables.reported_error("cifar10", "exp", 100, m))


def test_method_names_keep_a_chosen_variant():
    assert plots.method_name("mfw+ldam-drw") == "MFW + LDAM-DRW"
    assert plots.method_name("mfw [stage2 / power]") == "MFW [stage2 / power]"  # notebook 09's chosen configs
    assert plots.method_name("mfw+ldam-drw [until DRW]") == "MFW + LDAM-DRW [until DRW]"


def test_shipped_reference_is_the_shared_one():
    shared = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ldam_drw_reported.csv"
    if not shared.exists():
        pytest.skip("no ../shared/reference here")
    assert tables.REFERENCE_CSV.read_text() == shared.read_text()


def test_error_table_keeps_missing_rows():
    configs = ex.cifar_table_runs("smoke")
    full = tables.error_table(configs, [fake_result(c, 30.0) for c in configs])
    part = tables.error_table(configs, [fake_result(configs[0], 40.0)])
    assert full.shape == part.shape
    assert part.top1_error_mean.notna().sum() == 1
    row = part.iloc[0]
    assert row.seeds_done == "1/1" and row.top1_error_mean == 40.0
    assert row.ours_minus_reported == pytest.approx(40.0 - tables.reported_error(row.dataset, row.imbalance, row.ratio, row.method))
    # both ends of the distribution, from the per-class test accuracies (0.9 down to 0.1 over the classes)
    r = fake_result(configs[0], 40.0)
    acc = np.asarray(r["summary"]["test_acc_per_class"])
    g = plots.groups_of(r)
    assert (row.minority_group, row.majority_group) == (plots.minority_group(r), plots.majority_group(r))
    assert row.minority_acc_mean == pytest.approx(100 * acc[g[row.minority_group]].mean())
    assert row.majority_acc_mean == pytest.approx(100 * acc[g[row.majority_group]].mean())
    assert row.majority_acc_mean > row.minority_acc_mean
    assert tables.shape_line(part) == tables.shape_line(full)
    assert "missing" in tables.report_missing(configs[1:], planned=len(configs))


def test_one_group_benchmark_uses_the_median_halves():
    """exp-10 at n_max 2000: every class is many-shot, so the table must not print the overall accuracy twice
    as 'minority group many' and 'majority group many': it shows the halves of the median split instead."""
    exp10 = ex.make_config("cpu", dataset="cifar10", imbalance="exp", ratio=10, method="erm")
    step10 = ex.make_config("cpu", dataset="cifar10", imbalance="step", ratio=10, method="erm")
    results = [fake_result(exp10, 27.0), fake_result(step10, 31.0)]
    assert list(plots.shot_groups(results[0])) == ["many"]
    df = tables.error_table([exp10, step10], results)
    one, two = df.iloc[0], df.iloc[1]
    acc = 100 * np.asarray(results[0]["summary"]["test_acc_per_class"])  # 90 down to 10 over the classes
    assert (one.minority_group, one.majority_group) == ("lower half", "upper half")
    assert one.majority_acc_mean == pytest.approx(acc[:5].mean())  # counts 2000..718 are at or above the median
    assert one.minority_acc_mean == pytest.approx(acc[5:].mean())
    assert (two.minority_group, two.majority_group) == ("minor", "major")
    assert two.majority_acc_mean > two.minority_acc_mean
    md = tables.to_markdown(tables.pretty(df))
    assert "| many |" not in md and "| lower half |" in md and "| minor |" in md
    note = tables.table_groups_note(results)
    assert "step: major" in note and "exp: many" in note
    assert "rho=10: every class is many" in note and f"smallest has {min(results[0]['summary']['train_counts'])}" in note


def test_every_row_also_has_the_median_halves(tmp_path):
    """Issue 25, item 15: the shot-group columns change meaning from row to row (minor, few, a median half), so
    every row also carries the halves of the median split, one definition, named in the header: exp-100's head
    loss shows as plainly as step's."""
    exp100 = ex.make_config("cpu", dataset="cifar10", imbalance="exp", ratio=100, method="erm")
    step = ex.make_config("cpu", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    results = [fake_result(exp100, 47.0), fake_result(step, 52.0)]
    df = tables.error_table([exp100, step], results)
    for row, r in zip(df.itertuples(), results):
        acc = 100 * np.asarray(r["summary"]["test_acc_per_class"])
        upper = np.asarray(r["summary"]["train_counts"]) >= np.median(r["summary"]["train_counts"])
        assert row.upper_half_acc_mean == pytest.approx(acc[upper].mean())
        assert row.lower_half_acc_mean == pytest.approx(acc[~upper].mean())
    assert df.iloc[0].minority_group == "medium" and df.iloc[1].minority_group == "minor"  # the shot groups differ ...
    md = tables.to_markdown(tables.pretty(df))
    assert "lower half acc. (%) [median split, every row]" in md  # ... the halves are one named definition
    assert tables.table_groups_note(results).startswith(tables.HALVES_NOTE)


def test_ablation_table_and_plot(tmp_path):
    pairs = ex.ablation_runs("smoke")
    configs = list({c.key(): c for _, c in pairs}.values())
    df = tables.ablation_table(pairs, [fake_result(c, 50.0) for c in configs[:-1]])
    assert len(df) == len(pairs)
    assert set(zip(df.group[df.default], df.label[df.default])) == {
        ("mixing point", "stage1"), ("selection rule", "median"), ("law of lam", "U(0.5, 1)"),  # the same run as MFW
        ("when active (+DRW)", "always"), ("when active (+LDAM-DRW)", "always")}  # mfw_active's default
    fig = plots.plot_ablation(df, "test")
    assert [ax.get_xlabel() for ax in fig.axes] == ["last-epoch top-1 error (%)", "minor-class test accuracy (%)",
                                                    "major-class test accuracy (%)"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "mixing point: stage1 (default)" in labels and "relatives: MFW" in labels and "mixing point: stem" in labels
    assert fig._suptitle.get_text().endswith("1 seed per variant: no spread to show, so a difference between two bars is a "
                                             "measurement, not a finding")
    paths = plots.save_figure(fig, "ablation_test", tmp_path)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_group_curves_average_classes():
    cfg = ex.dynamics_runs("smoke")[0]
    r = fake_result(cfg, 50.0)
    g = plots.group_curves(r, "feature_grad")
    assert set(g) == {"major", "minor"}
    assert g["major"][0] == pytest.approx(np.mean([1, 2, 3, 4, 5]))
    assert g["minor"][0] == pytest.approx(np.mean([6, 7, 8, 9, 10]))
    assert plots.minority_group(r) == "minor" and plots.majority_group(r) == "major"


def test_figures_and_tables_are_written(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_FIGURES", str(tmp_path))
    configs = ex.dynamics_runs("smoke")
    results = [fake_result(c, 50.0) for c in configs]
    plots.apply_style()
    for name, fig in (("a", plots.plot_underfit_then_overfit([results[0]])), ("b", plots.plot_feature_gradients(results)),
                      ("c", plots.plot_train_balance(results)), ("d", plots.plot_per_class_test_acc(results)),
                      ("e", plots.plot_quickstart(results[0]))):
        plots.save_figure(fig, name)
        assert (tmp_path / f"{name}.png").exists() and (tmp_path / f"{name}.pdf").exists()
    df = tables.error_table(ex.cifar_table_runs("smoke"), results)
    tables.write_table(df, "t", note="note")
    assert (tmp_path / "t.csv").read_text().startswith("dataset,")
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("note") and "| dataset |" in md
    fig = plots.plot_error_table(df, "t")
    done = [str(v).split("/")[0] for v in df["seeds_done"] if not str(v).startswith("0/")]
    labels = sorted(t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("n="))
    if len(set(done)) > 1:  # each bar says how many seeds it averages ...
        assert done and labels == sorted(f"n={n}" for n in done)
    else:  # ... unless they all have the same number: the axis says it once
        assert done and labels == [] and (f"mean over {done[0]} seeds" in fig.axes[0].get_ylabel() or done[0] == "1")
    plots.save_figure(fig, "t")
    mixed = df.copy()
    mixed.loc[mixed["top1_error_mean"].notna().idxmax(), "seeds_done"] = "7/9"
    fig = plots.plot_error_table(mixed, "t")
    assert any(t.get_text() == "n=7" for t in fig.axes[0].texts) and "mean over n seeds" in fig.axes[0].get_ylabel()


def test_train_balance_has_one_legend_below_the_accuracy_panels():
    """Inside the panels the legend covered the learning-rate labels; below, the four panels share it."""
    results = [fake_result(c, 50.0) for c in ex.dynamics_runs("smoke")]
    plots.apply_style()
    fig = plots.plot_train_balance(results)
    assert all(ax.get_legend() is None for ax in fig.axes)
    (leg,) = fig.legends
    labels = [t.get_text() for t in leg.get_texts()]
    assert labels == [line.get_label() for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len(labels) == len(plots.by_method(results))


def test_train_balance_keeps_each_group_in_its_own_panels_and_says_how_much_mfw_weakened():
    """The major and minor bands overlapped in one panel, and a third panel was a flat line at 99%: now a row per
    group (ERM and MFW compared within it), and the weakened share is in MFW's legend entry."""
    results = [fake_result(c, 50.0) for c in ex.dynamics_runs("smoke")]
    for r in results:
        r["history"]["weakened_share"] = [0.99] * len(r["history"]["epoch"])
    fig = plots.plot_train_balance(results)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["major classes: training accuracy (clean)", "major classes: test accuracy",
                      "minor classes: training accuracy (clean)", "minor classes: test accuracy"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(lab.startswith("MFW (") and "weakens 99.0% of each epoch's examples" in lab for lab in labels)
    assert any(lab.startswith("ERM (") and "weakens" not in lab for lab in labels)


def test_log_axes_label_their_2s_and_5s():
    """plain_log_ticks chose minor labels by the first character of '0.2' ('0'): an axis from 0.1 to 3 showed only
    1 and 2."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0.11, 2.9])
    ax.set_yscale("log")
    plots.plain_log_ticks(ax.yaxis)
    fig.canvas.draw()
    shown = {t.label1.get_text() for t in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
             if 0.11 <= t.get_loc() <= 2.9 and t.label1.get_text()}
    assert shown == {"0.2", "0.5", "1", "2"}
    plt.close(fig)


def test_error_table_axis_fits_the_bars_and_names_the_reported_protocol():
    """The y axis ran to 100 with bars of 30-50%, and the black reference lines (200 epochs, full data) made every
    cpu bar look worse with no word on why."""
    configs = ex.cifar_table_runs("smoke")
    df = tables.error_table(configs, [fake_result(c, 40.0) for c in configs])
    assert df.attrs["protocol"] == "smoke profile: n_max 100, 2 epochs"
    fig = plots.plot_error_table(df, "t")
    ax = fig.axes[0]
    assert ax.get_ylim()[1] == 50.0  # 40% bars (reported lines lower): 1.12 x 40 rounded up to 10
    assert "reported by the LDAM-DRW paper (full data, 200 epochs)" in [t.get_text() for t in ax.get_legend().get_texts()]
    note = fig._supxlabel.get_text().replace("\n", " ")
    assert note.startswith("bars: smoke profile: n_max 100, 2 epochs; black lines: reported by the LDAM-DRW paper")
    with_paper = tables.add_profile_column(df, [], [], "paper")
    assert with_paper.attrs["protocol"] == df.attrs["protocol"]  # the merge keeps it for the figure


def test_quickstart_title_says_the_epochs_once():
    cfg = ex.dynamics_runs("smoke")[0]
    fig = plots.plot_quickstart(fake_result(cfg, 50.0))
    assert fig._suptitle.get_text().count("epochs") == 1


def test_feature_gradients_in_two_rows():
    """Four panels side by side made a 2,702-pixel-wide figure whose text was too small to read."""
    results = [fake_result(c, 50.0) for c in ex.dynamics_runs("smoke")]
    fig = plots.plot_feature_gradients(results)
    w, h = fig.get_size_inches()
    assert w <= 13 and h >= 8
    fig.canvas.draw()
    tops = sorted({round(ax.get_window_extent().y0, -1) for ax in fig.axes if ax.get_images() or ax.get_lines()})
    assert len(tops) == 2  # curves above, heat maps below


def test_table_shapes_are_profile_independent():
    """nbval compares the table shapes between the committed (cpu) outputs and a smoke run."""
    smoke, cpu = ex.cifar_table_runs("smoke"), ex.cifar_table_runs("cpu")
    assert tables.error_table(smoke, []).shape == tables.error_table(cpu, []).shape
    assert tables.ablation_table(ex.ablation_runs("smoke"), []).shape == tables.ablation_table(ex.ablation_runs("cpu"), []).shape
    assert tables.error_table(ex.tiny_table_runs("smoke"), []).shape == tables.error_table(ex.tiny_table_runs("cpu"), []).shape


def test_paper_profile_column_beside_the_cpu_table():
    """Issue 7: paper-profile results (from GPU harvests) appear beside the same rows, 'no run' where absent."""
    cpu = ex.cifar_table_runs("smoke")
    df = tables.error_table(cpu, [])
    rows = set(zip(df.dataset, df.imbalance, df.ratio, df.method))
    paper = [c for c in ex.cifar_table_runs("paper") if (c.dataset, c.imbalance, float(c.ratio), c.method) in rows]
    assert len(paper) == 3 * len(rows)
    one = [c for c in paper if (c.imbalance, c.method) == ("step", "erm")]
    out = tables.add_profile_column(df, paper, [fake_result(c, 20.0 + c.seed) for c in one[:2]], "paper")
    assert len(out) == len(df)
    hit = out[(out.imbalance == "step") & (out.ratio == 100) & (out.method == "erm")].iloc[0]
    assert hit.paper_seeds_done == "2/3" and hit.paper_top1_error_mean == pytest.approx(20.5)
    assert (out[out.method == "mfw"].paper_seeds_done == "0/3").all()
