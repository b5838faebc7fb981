"""The paper profile on a CPU: its training order, the evaluation schedule behind best-on-test, the hours
estimate, and the fidelity rule against the LDAM-DRW paper's reported numbers (fixed before any paper result)."""
from __future__ import annotations

import json

import pytest

from procrustes.results import experiments as ex
from procrustes.results import fidelity, tables
from procrustes.results.claims import MISSING, NOT_SHOWN, ONE_SEED, SHOWN
from procrustes.training.config import make_config
from procrustes.training.train import best_on_test, full_test_epoch
from tests.test_tables_plots import fake_result


def _store(root, cfg, error: float, best: float | None) -> None:
    r = fake_result(cfg, error)
    if best is not None:
        r["summary"].update(best_test_error=best, best_test_acc=1 - best / 100, best_test_epoch=190)
    d = root / cfg.profile / r["key"]
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(r))


def test_paper_cpu_order_anchors_first_then_selected_mfw_then_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "selected_overrides", lambda m, i, r, results=None: (
        {} if "mfw" not in m else {"mfw_select": "power"} if i == "exp" else {"mfw_point": "stage1"}))
    runs = ex.paper_cpu_runs(tmp_path)
    head = [(c.imbalance, c.method, c.seed) for c in runs[:8]]
    assert head == [("exp", "erm", 0), ("exp", "ldam-drw", 0), ("step", "erm", 0), ("step", "ldam-drw", 0),
                    ("step", "mfw", 0), ("step", "mfw+ldam-drw", 0), ("exp", "mfw", 0), ("exp", "mfw+ldam-drw", 0)]
    assert [c.seed for c in runs] == [0] * 8 + [1] * 8 + [2] * 8
    assert all(c.profile == "paper" and c.epochs == 200 and c.max_per_class is None for c in runs)
    assert runs[6].mfw_select == "power" and runs[7].mfw_select == "power" and runs[4].mfw_select == "median"
    # an undecided selection leaves its MFW rows out rather than guessing a variant
    monkeypatch.setattr(ex, "selected_overrides", lambda m, i, r, results=None: None if "mfw" in m else {})
    assert [c.method for c in ex.paper_cpu_runs(tmp_path, seeds=(0,))] == ["erm", "ldam-drw", "erm", "ldam-drw"]


def test_selected_overrides_come_from_the_cpu_selection_study():
    """The committed cpu store decided: step-100 keeps the defaults, exp-100 chose the power rule (notebook 09)."""
    from procrustes.results import selection
    from procrustes.training.store import REPO

    root = REPO / "results"
    ch = selection.select("cpu", root)
    assert ch["A"]["exp-100"].chosen.label == "stage1 / power" and ch["A"]["step-100"].chosen.label == "stage1 / median"
    assert ex.selected_overrides("erm", "exp", 100, root) == {}
    assert ex.selected_overrides("mfw", "exp", 100, root) == dict(ch["A"]["exp-100"].chosen.overrides)
    b = ex.selected_overrides("mfw+ldam-drw", "step", 100, root)
    assert b == {**ch["A"]["step-100"].chosen.overrides, **ch["B"]["step-100"].chosen.overrides}


def test_full_test_schedule_of_the_paper_profile():
    c = make_config("paper", dataset="cifar10", imbalance="exp", ratio=100)
    epochs = [e + 1 for e in range(c.epochs) if full_test_epoch(c, e)]
    assert epochs[:3] == [10, 20, 30]
    assert epochs[-21:] == [180] + list(range(181, 201))  # every 10, then every epoch at the final lr (from 181)
    assert len(epochs) == 38
    cpu = make_config("cpu", dataset="cifar10", imbalance="exp", ratio=100)
    assert [e for e in range(cpu.epochs) if full_test_epoch(cpu, e)] == [cpu.epochs - 1]  # the cpu runs: unchanged


def test_the_new_evaluation_fields_leave_old_keys_alone():
    cpu = make_config("cpu", dataset="cifar10", imbalance="step", ratio=100, method="mfw")
    assert "full_test_every" not in cpu.to_dict() and "full_test_final_lr" not in cpu.to_dict()
    assert cpu.replace(full_test_every=10).key() != cpu.key()


def test_best_on_test_takes_the_best_full_evaluation_and_its_epoch():
    h = {"epoch": [1, 2, 3, 4], "full_test_top1": [None, 0.70, 0.75, 0.75]}
    b = best_on_test(h)
    assert b["best_test_acc"] == 0.75 and b["best_test_epoch"] == 3 and b["full_test_epochs"] == 3
    assert b["best_test_error"] == pytest.approx(25.0)
    assert best_on_test({"epoch": [1], "test_top1": [0.5]}) == {}


def test_fidelity_rule_one_seed_within_and_outside(tmp_path, monkeypatch):
    monkeypatch.setattr(ex, "selected_overrides", lambda m, i, r, results=None: None if "mfw" in m else {})
    erm = [make_config("paper", dataset="cifar10", imbalance="exp", ratio=100, method="erm", seed=s) for s in range(3)]
    ldam = [make_config("paper", dataset="cifar10", imbalance="exp", ratio=100, method="ldam-drw", seed=s) for s in range(3)]

    def verdicts():
        return {v.claim: v for v in fidelity.fidelity_verdicts(tmp_path)}

    assert verdicts()["F cifar10 exp-100 paper: erm fidelity"].verdict == MISSING
    _store(tmp_path, erm[0], 31.0, 29.9)  # reported 29.64
    v = verdicts()["F cifar10 exp-100 paper: erm fidelity"]
    assert v.verdict == ONE_SEED and "+0.26 points from reported 29.64%" in v.numbers
    for c in erm[1:]:
        _store(tmp_path, c, 31.0, 30.9)  # mean best 30.57: +0.93 <= 1.5
    assert verdicts()["F cifar10 exp-100 paper: erm fidelity"].verdict == SHOWN
    for c, best in zip(ldam, (25.0, 24.6, 24.8)):  # reported 22.97: +1.83 > 1.5
        _store(tmp_path, c, 26.0, best)
    v = verdicts()["F cifar10 exp-100 paper: ldam-drw fidelity"]
    assert v.verdict == NOT_SHOWN and "+1.83 points" in v.numbers
    t = fidelity.fidelity_table(tmp_path)
    row = t[(t.benchmark == "CIFAR-10 exp-100") & (t.method == "ldam-drw")].iloc[0]
    assert row.seeds_done == "3/3" and row.reported_error == 22.97
    assert row.best_minus_reported == pytest.approx(24.8 - 22.97) and row.last_minus_reported == pytest.approx(26.0 - 22.97)


def test_hours_estimate_counts_training_and_every_evaluation():
    from procrustes.tooling.speed import epoch_images, run_hours

    c = make_config("paper", dataset="cifar10", imbalance="exp", ratio=100)
    n, evals = epoch_images(c)
    assert n == 12406
    # 162 epochs with the 1,000-image curve, 38 with the whole test set, and 1,000 clean images every epoch (100 a
    # class; the smallest class has 50)
    clean = sum(min(k, 100) for k in (5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50))
    assert evals == 162 * 1000 + 38 * 10000 + 200 * clean
    assert run_hours(c, {"train": 100.0, "eval": 400.0}) == pytest.approx((n * 200 / 100 + evals / 400) / 3600)


def test_run_table_names_every_machine_and_commit_of_a_resumed_run(tmp_path, monkeypatch):
    """A paper run trained over several sessions lists each machine and each commit, with '+dirty' where the code
    was not the commit's, from its provenance."""
    monkeypatch.setattr(ex, "selected_overrides", lambda m, i, r, results=None: None if "mfw" in m else {})
    cfg = make_config("paper", dataset="cifar10", imbalance="exp", ratio=100, method="erm", seed=0)
    _store(tmp_path, cfg, 30.0, 29.0)
    path = next((tmp_path / "paper").glob("*/result.json"))
    r = json.loads(path.read_text())
    a, b = "a" * 40, "b" * 40 + "+dirty"
    r["provenance"].update(train_images_per_s=80.0, precision="fp32", eval_s=6.0, git_commit=f"{a}, {b}",
                           git_commits=[a, b], device_names=["unrecorded", "AMD EPYC (1 threads)"])
    path.write_text(json.dumps(r))
    row = fidelity.run_table(tmp_path).iloc[0]
    assert row.machine == "unrecorded, then AMD EPYC (1 threads)"
    assert row.commit == "aaaaaaaaaa, bbbbbbbbbb+dirty"
    assert row.eval_share == pytest.approx(0.1) and row.best_error == 29.0
    # the provenance table under every notebook says the same, not the first 12 characters of the commit list
    prov = tables.provenance_table([r]).iloc[0]
    assert prov["git commit"] == row.commit and prov["device"] == row.machine
    # a commit corrected in results/corrections.json shows the corrected value, marked on the commit column only
    fix = {"value": [a, "b" * 40], "reason": "the tree was dirty only through the result store"}
    (tmp_path / "corrections.json").write_text(json.dumps({"runs": {r["key"].split("-")[0]: {
        "finished_utc": r["provenance"]["finished_utc"], "fields": {"provenance.git_commits": fix}}}}))
    assert fidelity.run_table(tmp_path).iloc[0].commit == "aaaaaaaaaa, bbbbbbbbbb (corrected)"
    from procrustes.training.store import read_result
    prov = tables.provenance_table([read_result(cfg, tmp_path)]).iloc[0]
    assert prov["git commit"] == "aaaaaaaaaa, bbbbbbbbbb (corrected)" and "corrected" not in prov["code path"]
