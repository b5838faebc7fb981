"""How many runs to pack (procrustes.tooling.speed.best_workers), the threads each measured process gets, and the
`reproduce --workers` plumbing: auto measures and packs what pays, a count is used as given, 1 trains in this
process as before. The measurement itself runs for real in the smoke harvest (tests/test_harvest.py)."""
from __future__ import annotations

import pytest

from procrustes.tooling import speed
from procrustes.tooling.speed import PACK_MIN_GAIN, best_workers, threads_per_process


def rates(eager, **packed):
    return {"eager": eager, "packed": {int(k[1:]): v for k, v in packed.items()}, "errors": []}


@pytest.mark.parametrize("b, expected", [
    (rates(None, x2=500.0), 1),  # nothing measured alone: no basis to pack
    (rates(100.0), 1),  # no packed measurement
    (rates(100.0, x2=104.0), 1),  # +4%: within the noise
    (rates(100.0, x2=120.0), 2),
    (rates(100.0, x2=120.0, x3=123.0, x4=124.0), 2),  # 3 and 4 add less than 5% to 2
    (rates(100.0, x2=120.0, x3=123.0, x4=130.0), 4),  # 4 beats the best smaller count (2) by 8%
    (rates(100.0, x2=90.0, x3=106.0), 3),  # 2 loses, 3 gains 6% on 1
    (rates(100.0, x2=None, x3=200.0), 3),  # a count that was not measured is skipped
])
def test_best_workers_packs_only_what_pays(b, expected):
    assert best_workers(b) == expected


def test_best_workers_gain_is_a_parameter():
    b = rates(100.0, x2=104.0)
    assert best_workers(b, min_gain=1.03) == 2
    assert best_workers(b, min_gain=PACK_MIN_GAIN) == 1


def test_threads_split_the_cores_as_run_many_does():
    assert threads_per_process("cpu", [1, 2, 3, 4], 16) == {1: 16, 2: 8, 3: 5, 4: 4}
    assert threads_per_process("cpu", [1, 2], 1) == {1: 1, 2: 1}  # never 0
    assert threads_per_process("cuda", [1, 2, 3, 4], 16) == {1: 4, 2: 4, 3: 4, 4: 4}


@pytest.fixture
def fake(monkeypatch, tmp_path):
    """reproduce with speed.measure and packing.run_many / train.run replaced by recorders."""
    import procrustes.tooling.packing as packing
    import procrustes.training.train as train

    calls = {"measure": [], "run_many": [], "run": []}

    def measure(cfg, device, **kw):
        calls["measure"].append((cfg.key(), device, kw["packs"]))
        return rates(100.0, x2=150.0)

    monkeypatch.setattr(speed, "measure", measure)
    monkeypatch.setattr(packing, "run_many", lambda cfgs, **kw: calls["run_many"].append((len(cfgs), kw)))
    monkeypatch.setattr(train, "run", lambda cfg, **kw: calls["run"].append(cfg.key()))
    monkeypatch.setattr(packing, "_cores", lambda: 2)
    return calls, tmp_path


def _reproduce(tmp_path, *extra):
    from procrustes.__main__ import main

    return main(["reproduce", "--profile", "smoke", "--only", "04", "--device", "cpu", "--results", str(tmp_path),
                 *extra])


def test_reproduce_auto_measures_and_packs(fake, capsys):
    calls, tmp = fake
    assert _reproduce(tmp) == 0
    out = capsys.readouterr().out
    (key, device, packs), = calls["measure"]
    assert device == "cpu" and packs == [2]  # a 2-core CPU: at most 2 at once
    (n, kw), = calls["run_many"]
    assert n >= 2 and kw["workers"] == 2 and kw["device"] == "cpu"
    assert calls["run"] == []
    assert "workers: 2 a device (aggregate img/s x1 100, x2 150" in out


def test_reproduce_given_count_is_used_as_given(fake):
    calls, tmp = fake
    assert _reproduce(tmp, "--workers", "3") == 0
    assert calls["measure"] == [] and calls["run_many"][0][1]["workers"] == 3


def test_reproduce_one_worker_trains_here_one_after_another(fake):
    calls, tmp = fake
    assert _reproduce(tmp, "--workers", "1") == 0
    assert calls["measure"] == [] and calls["run_many"] == [] and len(calls["run"]) >= 2


def test_reproduce_list_measures_nothing(fake, capsys):
    calls, tmp = fake
    import torch

    from procrustes.results.experiments import all_runs

    first = all_runs("smoke", ["04"])[0]  # interrupted after one epoch
    (tmp / "smoke" / f"{first.key()}-abcdef01").mkdir(parents=True)
    torch.save({"model": {}, "epoch": 1}, tmp / "smoke" / f"{first.key()}-abcdef01" / "checkpoint.pt")
    assert _reproduce(tmp, "--list") == 0
    assert calls == {"measure": [], "run_many": [], "run": []}
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "missing:" in ln]
    assert lines[0].endswith(f"[{first.key()}] (1 of {first.epochs} epochs checkpointed: resumes)")
    assert all("checkpointed" not in ln for ln in lines[1:])


def test_reproduce_one_missing_run_measures_nothing(fake):
    calls, tmp = fake
    from procrustes.__main__ import main

    assert main(["reproduce", "--profile", "smoke", "--only", "02", "--device", "cpu", "--results", str(tmp)]) == 0
    assert calls["measure"] == [] and calls["run_many"] == [] and len(calls["run"]) == 1


def test_rates_print_alike_in_bench_and_workers():
    b = rates(287.6, x2=295.4, x3=None)
    assert speed.rate(None) == "n/a" and speed.rate(287.6) == "288 img/s"
    assert speed.pack_rates(b) == "x2 295 img/s, x3 n/a"
    assert speed.pack_rates(b, alone=True, unit="") == "x1 288, x2 295, x3 n/a"
    assert speed.pack_rates(rates(100.0)) == "n/a"


def test_gpu_count_of_a_device_string(monkeypatch):
    import torch

    from procrustes.tooling.packing import default_workers, gpu_count

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [gpu_count(d) for d in ("cpu", "cuda", "cuda:1")] == [0, 4, 1]
    assert [default_workers(d) for d in ("cpu", "cuda", "cuda:1")] == [1, 8, 2]
