"""claims.py: the noise-margin and threshold rules, each claim's verdict on made-up runs whose answer is known,
and claims.md written deterministically."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest

from procrustes.results import claims
from procrustes.results import experiments as ex

from .test_tables_plots import fake_result


def test_noise_rule():
    a = {0: 50.0, 1: 51.0, 2: 50.5}
    far = {k: v - 5 for k, v in a.items()}
    assert claims.noise_test({k: far[k] - a[k] for k in a}, [a, far]) == (claims.SHOWN, -1)
    near = {0: 49.0, 1: 51.5, 2: 50.0}  # within twice the std
    assert claims.noise_test({k: near[k] - a[k] for k in a}, [a, near])[0] == claims.NOT_SHOWN
    mixed_sign = {0: 1.0, 1: 1.0, 2: -0.1}
    assert claims.noise_test(mixed_sign)[0] == claims.NOT_SHOWN
    assert claims.noise_test({0: 10.0}) == (claims.ONE_SEED, 0)


def test_threshold_rule():
    assert claims.threshold_test({0: True, 1: True, 2: True}) == claims.SHOWN
    assert claims.threshold_test({0: True, 1: False}) == claims.NOT_SHOWN
    assert claims.threshold_test({0: True}) == claims.ONE_SEED


def test_compare_pairs_seeds_and_reports_each():
    v = claims.compare("x", "s", {0: 10.0, 1: 11.0, 2: 10.5}, {0: 20.0, 1: 21.0, 2: 20.2}, "A", "B", expect=+1)
    assert v.verdict == claims.SHOWN and v.seeds == [0, 1, 2]
    assert "seeds 0, 1, 2" in v.numbers and "20.2" in v.numbers
    opposite = claims.compare("x", "s", {0: 10.0, 1: 11.0}, {0: 20.0, 1: 21.0}, "A", "B", expect=-1)
    assert opposite.verdict == claims.WORSE and "the opposite direction passes the same rule" in opposite.numbers
    assert "opposite" not in claims.compare("x", "s", {0: 10.0, 1: 11.0}, {0: 10.5, 1: 10.0}, "A", "B", expect=-1).numbers
    assert claims.compare("x", "s", {0: 1.0}, {1: 2.0}, "A", "B", expect=1).verdict == claims.MISSING


def test_difference_of_percentages_is_in_points():
    v = claims.compare("x", "s", {0: 10.0, 1: 11.0}, {0: 20.0, 1: 21.5}, "A", "B", expect=+1, unit="%")
    assert "A 10.5 +- 0.7% (" in v.numbers and "difference 10.2 points (seeds 0, 1: 10.0, 10.5)" in v.numbers
    # the noise printed beside a difference is the one the rule uses (the more variable side's std: B's 1.06),
    # named, with the bar it sets; not the std of the differences (0.35)
    assert "rule's noise = std of the more variable side 1.1, needs |mean| > 2.1" in v.numbers
    assert "difference 1.0 (seed 0)" in claims.compare("x", "s", {0: 1.0}, {0: 2.0}, "A", "B", expect=1).numbers


def _dynamics(minor_curve, minor_test, seeds=(0, 1, 2), method="erm", to_major=0.9):
    out = []
    for s in seeds:
        cfg = ex.dynamics_runs("smoke", methods=(method,), seeds=(s,))[0]
        r = fake_result(cfg, 50.0, epochs=len(minor_curve))
        for e, m in enumerate(minor_curve):
            r["history"]["train_acc_clean"][e] = [0.9] * 5 + [m + 0.001 * s] * 5
            r["history"]["pred_major_share_clean"][e] = [0.0] * 5 + [to_major] * 5
        r["summary"]["test_acc_per_class"] = [0.8] * 5 + [minor_test] * 5
        out.append(r)
    return out


def test_underfit_then_overfit_verdicts():
    curve = [0.0] * 4 + [0.2] * 8 + [0.6] * 8  # 20 epochs: nothing for the first fifth, then fitted
    runs = _dynamics(curve, minor_test=0.05)
    assert claims.verdict_underfit(runs).verdict == claims.SHOWN
    assert claims.verdict_overfit(runs).verdict == claims.SHOWN
    early_fit = _dynamics([0.3] + curve[1:], minor_test=0.05)  # 7.5% on average over the first 4 epochs
    assert claims.verdict_underfit(early_fit).verdict == claims.NOT_SHOWN
    # one early epoch at 10% but 2.5% on average: the literal rule (mean) passes, the earlier one (every epoch) not
    touch = _dynamics([0.1] + curve[1:], minor_test=0.05)
    assert claims.verdict_underfit(touch).verdict == claims.SHOWN
    assert claims.verdict_underfit_until_2026_11_29(touch).verdict == claims.NOT_SHOWN
    # "most of their data into the major classes": exactly half counts for the literal rule, not for the old one
    half = _dynamics(curve, minor_test=0.05, to_major=0.5)
    assert claims.verdict_underfit(half).verdict == claims.SHOWN
    assert claims.verdict_underfit_until_2026_11_29(half).verdict == claims.NOT_SHOWN
    assert claims.verdict_underfit(_dynamics(curve, minor_test=0.05, to_major=0.49)).verdict == claims.NOT_SHOWN
    generalises = _dynamics(curve, minor_test=0.5)  # gap 10 points < 20
    assert claims.verdict_overfit(generalises).verdict == claims.NOT_SHOWN
    assert claims.verdict_overfit(_dynamics(curve, 0.05, seeds=(0,))).verdict == claims.ONE_SEED
    assert claims.verdict_underfit([]).verdict == claims.MISSING


def test_train_balance_needs_minor_classes_to_rise():
    erm = _dynamics([0.0] * 10 + [0.5] * 10, 0.05)
    mfw = _dynamics([0.2] * 10 + [0.7] * 10, 0.3, method="mfw")
    v = claims.verdict_train_balance(erm + mfw)
    assert v.verdict == claims.SHOWN
    # a smaller gap because the major classes slow down does not count
    slow = _dynamics([0.0] * 10 + [0.5] * 10, 0.05, method="mfw")
    for r in slow:
        for e in range(20):
            r["history"]["train_acc_clean"][e][:5] = [0.5] * 5
    assert claims.verdict_train_balance(erm + slow).verdict == claims.NOT_SHOWN
    assert claims.verdict_minor_test(erm + mfw).verdict == claims.SHOWN


def test_gradient_verdicts():
    erm = _dynamics([0.0] * 5, 0.0)
    for k, r in enumerate(erm):
        r["history"]["feature_grad"] = [[1.0] * 5 + [3.0 + 0.1 * k] * 5] * 5
    mfw = _dynamics([0.0] * 5, 0.0, method="mfw")
    for k, r in enumerate(mfw):
        r["history"]["feature_grad"] = [[1.0] * 5 + [1.2 + 0.05 * k] * 5] * 5
    assert claims.grad_ratio_mean(erm[0]) == pytest.approx(3.0)
    assert claims.verdict_gradients(erm).verdict == claims.SHOWN
    assert claims.verdict_gradient_balance(erm + mfw).verdict == claims.SHOWN
    assert claims.verdict_gradient_balance(mfw + [dict(r, config=dict(r["config"], method="erm")) for r in mfw]).verdict \
        == claims.NOT_SHOWN


def test_claims_md_is_deterministic_and_per_notebook(tmp_path):
    v1 = claims.compare("2 b", "s", {0: 1.0, 1: 2.0}, {0: 5.0, 1: 6.0}, "A", "B", expect=1, source="nb2", profile="cpu")
    v0 = claims.compare("1 a", "s", {0: 1.0}, {0: 2.0}, "A", "B", expect=1, source="nb1", profile="cpu")
    claims.record([v1], tmp_path, "nb2")
    claims.record([v0], tmp_path, "nb1")
    text = (tmp_path / "claims.md").read_text()
    assert text.index("| 1 a |") < text.index("| 2 b |") and "one seed: no verdict" in text
    before = (tmp_path / "claims.md").stat().st_mtime_ns
    claims.record([v0], tmp_path, "nb1")  # same verdicts: the file is not rewritten
    assert (tmp_path / "claims.md").stat().st_mtime_ns == before and (tmp_path / "claims.md").read_text() == text
    claims.record([], tmp_path, "nb2")  # a notebook's verdicts are replaced, not appended
    assert "| 2 b |" not in (tmp_path / "claims.md").read_text()
    assert np.isnan(claims.mean_sd([1.0])[1])


def test_harm_reads_worse_with_its_size():
    """A difference whose opposite direction passes the rule is harm: verdict WORSE (not NOT SHOWN), with the
    size and the bar it passed, in claims.md's verdict column and in the line a notebook prints."""
    erm, mfw = {0: 27.27, 1: 26.62, 2: 26.86}, {0: 34.88, 1: 35.19, 2: 34.67}  # exp-10 MFW vs ERM: +8.00 points
    v = claims.compare("6 x", "MFW has a lower error than ERM", erm, mfw, "ERM", "MFW", expect=-1, unit="%", digits=2,
                       source="05", profile="cpu")
    assert v.verdict == claims.WORSE and v.line().startswith("6 x: WORSE.")
    assert "WORSE: the opposite direction passes the same rule (MFW above ERM by 8.00 points, needs > 0.66)" in v.numbers
    md = claims.render({"05": [asdict(v)]})
    assert "| 6 x | **WORSE** |" in md and "reads WORSE" in md
    assert any(c.startswith("2026-12-07, every difference") for c in claims.RULE_CHANGES)
    assert not any("issue" in c for c in claims.RULE_CHANGES)  # reader-facing text
    # noise, and the claimed direction, keep their words
    assert claims.compare("x", "s", erm, {k: v + 0.1 for k, v in erm.items()}, "A", "B", expect=-1).verdict == claims.NOT_SHOWN
    assert claims.compare("x", "s", mfw, erm, "A", "B", expect=-1).verdict == claims.SHOWN


def test_welch_p_values():
    # two-sided 5% points of Student's t (tables): df 1, 2, 4, 10, and the normal limit
    for t, df in ((12.706, 1), (4.303, 2), (2.776, 4), (2.228, 10), (1.960, 1e7)):
        assert claims.t_two_sided_p(t, df) == pytest.approx(0.05, abs=2e-4)
    assert claims.t_two_sided_p(0.0, 3.3) == pytest.approx(1.0)
    assert claims.t_two_sided_p(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| > 1) = 1/2
    # exp-100 selected MFW vs ERM: Welch's df 2.09, p 0.050
    t, df, p = claims.welch({0: 48.50, 1: 47.88, 2: 46.41}, {0: 44.86, 1: 45.18, 2: 45.00})
    assert (round(t, 2), round(df, 2), round(p, 3)) == (-4.12, 2.09, 0.05)
    assert np.isnan(claims.welch({0: 1.0}, {0: 2.0, 1: 3.0})[2])


def test_pooled_noise_marks_a_fragile_row():
    """A difference that passes the primary rule only because the more variable side is unusually steady reads
    SHOWN, fragile: with the benchmark's pooled seed std it does not pass. The verdict itself never changes."""
    erm, sel = {0: 48.50, 1: 47.88, 2: 46.41}, {0: 44.86, 1: 45.18, 2: 45.00}  # exp-100 selected MFW vs ERM
    others = [{0: 46.19, 1: 49.58, 2: 46.75}, {0: 37.32, 1: 34.94, 2: 36.02}, {0: 42.42, 1: 44.38, 2: 46.61},
              {0: 35.74, 1: 37.08, 2: 35.82}]  # the benchmark's other configs with three seeds
    sd, n, df = claims.pooled_sd([erm, sel, *others])
    assert (round(sd, 2), n, df) == (1.35, 6, 12)
    v = claims.compare("6s x", "s", erm, sel, "ERM", "MFW", expect=-1, unit="%", digits=2, pool=[erm, sel, *others])
    assert v.verdict == claims.SHOWN and v.fragile and v.shown_verdict() == "SHOWN, fragile"
    assert "needs |mean| > 2.69 points and one sign: fails: fragile" in v.robustness and "p = 0.050" in v.robustness
    assert "| **SHOWN** (fragile) |" in claims.render({"09": [asdict(v)]})
    robust = claims.compare("6s y", "s", erm, {k: x - 6 for k, x in erm.items()}, "ERM", "MFW", expect=-1, pool=[erm, *others])
    assert robust.verdict == claims.SHOWN and not robust.fragile and ": passes;" in robust.robustness
    assert claims.compare("1", "s", {0: 1.0}, {0: 2.0}, "A", "B", expect=1).robustness == ""  # one seed: none
    # groups of stored runs: a training stored twice (with and without validation) is one config
    cfg = ex.dynamics_runs("smoke", methods=("mfw",), seeds=(0,))[0]
    twin = fake_result(cfg.replace(val_per_class=10, eval_per_class=0), 40.0)
    assert claims.config_groups([twin, fake_result(cfg, 41.0), fake_result(cfg.replace(seed=1), 42.0)],
                                claims.top1_error) == [{0: 41.0, 1: 42.0}]


def test_claim_codes_map_to_the_abstract():
    """claims.md maps the claim codes to the abstract's words each tests, after the short table of verdicts and
    before the detailed rows; every row's code is listed."""
    from pathlib import Path

    paper = (Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "PAPER.md")
    md = claims.render({"x": [asdict(claims.compare("6s a", "s", {0: 1.0}, {0: 2.0}, "A", "B", expect=1))]})
    assert md.index("| claim | verdict | key numbers") < md.index("| claim code |") < md.index("| claim | verdict | what was tested")
    for claim, code in (("1 under-fit first", "1"), ("1 under-fit first (rule until 2026-11-29)", "1"),
                        ("2 larger minor gradients", "2"), ("3 then over-fit", "3"), ("4 MFW raises minority test accuracy", "4t"),
                        ("5 MFW balances feature gradients", "5g"), ("5 MFW balances training accuracy", "5a"),
                        ("6 cifar10 exp-100: mfw vs erm", "6"), ("6s cifar10 exp-10: selected mfw vs erm", "6s")):
        assert claims.claim_code(claim) == code and f"| {code} |" in md
    if paper.exists():  # each sentence quotes the abstract (brackets mark our words)
        import re

        text = " ".join(paper.read_text().split())
        for quote, _ in claims.CLAIM_SENTENCES.values():
            for part in re.split(r"\[[^\]]*\]", quote):
                assert " ".join(part.split()).strip(" ,") in text, part
