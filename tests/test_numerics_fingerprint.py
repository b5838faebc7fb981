"""Training numerics change only on purpose: a few smoke epochs each of ERM, MFW and LDAM-DRW on CIFAR-10,
eager, one thread, must give the weights, history and summary recorded in tests/numerics/<cpu kind>.json
(procrustes.tooling.fingerprint). A CPU kind without a file records one and is skipped, saying so: commit the
file. Any other difference fails until the file is updated, in a commit that says why the numbers moved."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from procrustes.tooling import fingerprint as fpr

EXPECTED = Path(__file__).resolve().parent / "numerics"


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def current(cifar10_root, tmp_path) -> dict:
    return {json.dumps(o, sort_keys=True): fpr.digest(fpr.fingerprint(o, tmp_path, data_root=cifar10_root))
            for o in fpr.TEST_RUNS}


def test_training_numerics_match_the_expected_file_of_this_cpu_kind(cifar10_root, tmp_path, one_thread):
    path = EXPECTED / f"{fpr.cpu_kind()}.json"
    now = current(cifar10_root, tmp_path)
    if not path.exists():
        path.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        pytest.skip(f"no expected numerics for this CPU kind yet: recorded {path.relative_to(EXPECTED.parents[1])}; "
                    f"commit it, and this test compares with it from then on")
    expected = json.loads(path.read_text())
    moved = []
    for run, exp in expected.items():
        got = now.get(run)
        if got != exp:
            parts = [k for k in exp if got is None or got.get(k) != exp[k]]
            moved.append(f"{run}: {', '.join(parts)} differ (train_loss {exp['train_loss']} -> "
                         f"{got and got['train_loss']}; test_error {exp['test_error']} -> {got and got['test_error']})")
    assert not moved and set(now) == set(expected), (
        f"training numerics moved on {fpr.cpu_kind()} against {path.name}:\n" + "\n".join(moved)
        + "\nIf the change is meant, rewrite the file (delete it and rerun this test) in a commit that says why.")
