"""Tests that pin the protocol (issue 37, item 20): one test a single-line change of the protocol's code would
otherwise pass (a surviving mutant), each stating the rule it holds: the selection's tie rule and paired standard
error, the sign of the step gain, the claims' early epochs and sign agreement, the reference ResNet-32's option-A
shortcut and Kaiming-normal init, the last-epoch validation score, the configured weight decay, the shipped size
cap of a harvest entry, per-class accuracies in [0, 1], the subset seed and the CIFAR normalisation."""
from __future__ import annotations

import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch

from procrustes.results import claims, selection
from procrustes.tooling import harvest
from procrustes.training.config import make_config

from .conftest import REPO, make_imagefolder


# ---------------------------------------------------------------- selection.py


def _scored(error: float, correct: str) -> dict:
    return {"summary": {"val_error": error, "val_correct": correct}}


def test_a_challenger_that_ties_the_margin_exactly_does_not_replace_the_default():
    """TIE_RULE says "by more than": a gain equal to max(MIN_GAIN, 2 SE) keeps the default (with 0.1-point steps
    an exact tie happens). Identical per-image correctness: SE 0, the margin is MIN_GAIN = 1 point."""
    same = "1" * 50 + "0" * 50
    default, *challengers = selection.STAGE_A
    results = {default.label: _scored(10.0, same)}
    results.update({c.label: _scored(10.0 - selection.MIN_GAIN if i == 0 else 12.0, same) for i, c in enumerate(challengers)})
    choice = selection.choose("A", "step-100", results)
    assert choice.chosen == default and "the default is kept" in choice.reason
    results[challengers[0].label] = _scored(10.0 - selection.MIN_GAIN - 0.1, same)  # more than the margin: it wins
    assert selection.choose("A", "step-100", results).chosen == challengers[0]


@pytest.mark.parametrize("a, b", [("1100", "0110"), ("1110000000", "0001110110"), ("1" * 30 + "0" * 70, "0" * 10 + "1" * 90)])
def test_paired_standard_error_is_mcnemars(a, b):
    """sqrt(n01 + n10 - (n01 - n10)^2 / n) / n (x 100): the standard error of the mean per-image difference,
    computed here from the differences themselves; cases where both n01 and n10 are non-zero."""
    d = np.array([int(y) - int(x) for x, y in zip(a, b)], dtype=float)
    want = 100.0 * d.std(ddof=0) / math.sqrt(len(d))
    assert selection.paired_se(_scored(0, a), _scored(0, b)) == pytest.approx(want, rel=1e-12)


def test_the_step_gain_of_the_selected_mfw_is_erm_minus_mfw(monkeypatch):
    """verdicts' "especially step" row compares MFW's gain over ERM in error points, ERM's error minus MFW's, per
    seed, on the committed CPU results."""
    seen = {}
    real = claims.verdict_step_gain

    def capture(gain_exp, gain_step, *args, **kw):
        seen.update(exp=gain_exp, step=gain_step)
        return real(gain_exp, gain_step, *args, **kw)

    monkeypatch.setattr(claims, "verdict_step_gain", capture)
    root = REPO / "results"
    selection.verdicts("cpu", root)
    base, chosen = selection.baseline_results("cpu", root), selection.chosen_results("cpu", root)
    for imb in ("step", "exp"):
        b, c = base[("A", f"{imb}-100")], chosen[("A", f"{imb}-100")]
        want = {s: b[s]["summary"]["test_error"] - c[s]["summary"]["test_error"] for s in set(b) & set(c)}
        assert want and seen[imb] == pytest.approx(want)


# ---------------------------------------------------------------- claims.py


def test_early_epochs_round_up():
    """The first fifth of the epochs, rounded up: 12 epochs give 3 (2.4 -> 3), 10 give 2, 80 give 16."""
    for epochs, k in ((12, 3), (10, 2), (80, 16), (1, 1), (6, 2)):
        assert claims.early_epochs({"history": {"epoch": list(range(1, epochs + 1))}}) == k


def test_a_zero_difference_is_not_a_sign():
    """NOISE_RULE needs every seed's difference on one side of zero: a seed at exactly 0 does not agree."""
    tight = [{0: 1.0, 1: 1.1, 2: 0.9}, {0: 1.0, 1: 1.0, 2: 1.0}]  # noise 0.1: the mean is far beyond 2 x noise
    assert claims.noise_test({0: 0.0, 1: 10.0, 2: 10.0}, tight)[0] == claims.NOT_SHOWN
    assert claims.noise_test({0: -0.0, 1: -10.0, 2: -10.0}, tight)[0] == claims.NOT_SHOWN
    assert claims.noise_test({0: 0.5, 1: 10.0, 2: 10.0}, tight) == (claims.SHOWN, 1)


# ---------------------------------------------------------------- models.py


def test_option_a_shortcut_puts_the_subsampled_input_in_the_middle_channels():
    """The reference ResNet-32's option-A shortcut: x[:, :, ::2, ::2] zero-padded by (cout - cin) / 2 channels on
    each side, so the input sits in channels [pad, pad + cin)."""
    from procrustes.method.models import BasicBlock

    block = BasicBlock(16, 32, 2, "A").eval()
    with torch.no_grad():
        block.conv2.weight.zero_()
        block.bn2.bias.zero_()  # the residual branch gives 0: the block's output is relu(shortcut)
    x = torch.rand(2, 16, 8, 8) + 0.1
    out = block(x)
    assert out.shape == (2, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0


def test_convolutions_and_the_classifier_start_kaiming_normal():
    """Kaiming normal (fan in, gain sqrt 2): std sqrt(2 / fan_in), and unbounded: about 8% of the weights lie beyond
    sqrt(6 / fan_in), the bound a Kaiming-uniform init (same std) never crosses."""
    from procrustes.method.models import resnet32

    torch.manual_seed(0)
    net = resnet32(10)
    w = net.stages["stage3"][1].conv1.weight.detach()
    fan_in = w[0].numel()
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03)
    beyond = (w.abs() > math.sqrt(6 / fan_in)).float().mean().item()
    assert 0.06 < beyond < 0.11, beyond
    fc = net.fc.weight.detach()
    assert (fc.abs() > math.sqrt(6 / fc.shape[1])).any()


# ---------------------------------------------------------------- train.py


def test_the_validation_score_is_the_last_epochs():
    """SCORE is pre-registered as the last epoch's validation error, never the best epoch's."""
    from procrustes.training.train import _val_summary

    out = _val_summary({"val_acc": [[0.9, 0.7], [0.4, 0.6]], "val_top1": [0.8, 0.5]})
    assert out == {"val_error": pytest.approx(50.0), "val_acc_per_class": [0.4, 0.6]}


def test_the_optimizer_takes_the_configured_weight_decay_and_momentum():
    from procrustes.training.config import parse_assignment
    from procrustes.training.train import make_model, make_optimizer

    cfg = make_config("smoke", **dict([parse_assignment("weight_decay=5e-4"), parse_assignment("momentum=0.5")]))
    model = make_model(cfg, 10, False, torch.device("cpu"))
    group = make_optimizer(model, cfg, torch.device("cpu")).param_groups[0]
    assert group["weight_decay"] == 5e-4 and group["momentum"] == 0.5 and group["lr"] == cfg.lr


# ---------------------------------------------------------------- harvest.py


def test_the_shipped_entry_cap_refuses_a_result_just_over_4_mib(tmp_path, capsys):
    """MAX_RESULT_BYTES as shipped (not lowered by the test): a valid result padded to 4 MiB + 1 byte is refused
    from its header; the same result unpadded imports."""
    from .test_harvest import _result

    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    res = _result(cfg)
    name = f"smoke/{res['key']}/result.json"
    body = json.dumps(res).encode()
    padded = body[:-1] + b" " * ((4 << 20) + 1 - len(body)) + b"}"
    assert len(padded) == (4 << 20) + 1 and json.loads(padded) == res
    for data, rc in ((padded, 1), (body, 0)):
        path = tmp_path / f"a{rc}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        assert harvest.main(["import", str(path), "--results", str(tmp_path / "store")]) == rc
        err = capsys.readouterr().err
        assert rc == 0 or ("more than the 4194304" in err and len(err.strip().splitlines()) == 1), err


def test_a_per_class_accuracy_outside_0_1_is_refused_even_when_the_mean_agrees(tmp_path, capsys):
    from .test_harvest import _archive, _entry, _result

    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    res = _result(cfg)
    per = res["summary"]["test_acc_per_class"]
    per[0], per[1] = per[0] + 0.6, per[1] - 0.6  # 1.1 and -0.1: the mean and the range of the overall stay
    rc = harvest.main(["import", str(_archive(tmp_path / "a.tar.gz", dict([_entry(res)]))), "--results",
                       str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert rc == 1 and "summary.test_acc_per_class" in err and "in [0, 1]" in err, err


# ---------------------------------------------------------------- data.py


def test_the_subset_is_drawn_with_subset_seed_not_the_run_seed(tmp_path, monkeypatch):
    """Seeds 1 and 2 train on the reference's subset (subset_seed 0), only their own initialisation and batches
    differ; subset_seed alone changes the subset."""
    from procrustes.training.data import load_benchmark

    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    root = make_imagefolder(tmp_path / "tree", 3, 12, 2, size=8)
    cfg = make_config("smoke", dataset="imagefolder", imbalance="exp", ratio=4)
    ids = {s: load_benchmark(cfg.replace(seed=s), root).data["id"] for s in (0, 1, 2)}
    assert ids[0] == ids[1] == ids[2]
    assert load_benchmark(cfg.replace(subset_seed=1), root).data["id"] != ids[0]


def test_cifar_normalisation_is_the_reference_codes():
    """The LDAM-DRW reference normalises CIFAR with mean (0.4914, 0.4822, 0.4465) and std (0.2023, 0.1994, 0.2010)
    (transforms.Normalize in its cifar_train.py); a run normalises its images with exactly these."""
    from procrustes.method.augment import normalise
    from procrustes.training.data import spec

    for name in ("cifar10", "cifar100"):
        s = spec(name)
        assert s.mean == (0.4914, 0.4822, 0.4465) and s.std == (0.2023, 0.1994, 0.2010)
        x = torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)
        got = normalise(x, s.mean, s.std)
        want = (1.0 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2023, 0.1994, 0.2010])
        torch.testing.assert_close(got[0, :, 0, 0], want)
