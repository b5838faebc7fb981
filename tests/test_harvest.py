"""procrustes.tooling.harvest: the priority list, the plan, the import checks, and one SMOKE run of the whole
`make gpu-harvest SMOKE=1` path on the CPU (bench, plan, packed training, archive), imported with
`make harvest-import` into a temporary store (never results/).

The smoke run uses a small copy of data/cifar10 (100 training and 50 test images a class), so that each of its
processes does not spend seconds listing 60,000 files. Its budget is the harvest's own smoke default, 90 s times
how much slower than an idle core this CPU runs now, counted from when the data are loaded (issue 25 item 19: a
fixed budget was flaky on a busy CPU); HARVEST_TEST_BUDGET_S sets an exact one."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from procrustes.results import experiments
from procrustes.tooling import harvest
from procrustes import make_config
from procrustes.training import store

from .conftest import REPO, cli_env


def _result(cfg, data_id: str = "0123456789abcdef", error: float = 50.0) -> dict:
    """A finished result of cfg, with every field the import checks, consistent as the trainer writes it (its
    summary agrees with its history, its per-class numbers with its overall ones), keyed as the store keys it."""
    from procrustes.method.counts import group_scale, report_group_definition, report_groups
    from procrustes.training.data import benchmark_counts
    from procrustes.training.train import lr_at

    counts = benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class)
    C, E, acc = len(counts), cfg.epochs, 1 - error / 100
    scale = group_scale(cfg.dataset, cfg.max_per_class)
    groups = report_groups(counts, cfg.imbalance, scale)
    warm, miles, factors, drw = cfg.schedule()
    steps = -(-sum(counts) // cfg.batch_size)
    res = {"config": cfg.to_dict(),
           "summary": {"test_acc": acc, "test_error": error, "top5_error": error / 5, "best_epoch_test_acc": None,
                       "test_acc_per_class": [acc] * C, "group_test_acc": {g: acc for g in groups},
                       "groups": groups, "group_definition": report_group_definition(counts, cfg.imbalance, scale),
                       "train_counts": counts, "classes": [f"c{i}" for i in range(C)], "test_images": 50 * C,
                       "schedule": {"warmup_epochs": warm, "lr_milestones": list(miles), "lr_factors": list(factors),
                                    "drw_epoch": drw}},
           "history": {k: [[acc] * C] * E if k in ("train_acc", "feature_grad", "pred_major_share", "test_acc",
                                                    "train_acc_clean", "pred_major_share_clean") else [acc] * E
                       for k in harvest.HISTORY_KEYS},
           "provenance": {"git_commit": "ab" * 20, "device": "cpu", "torch": "2", "precision": "fp32", "wall_s": 1.0,
                          "train_images_per_s": 100.0}}
    res["history"]["epoch"] = list(range(1, E + 1))
    res["history"]["lr"] = [lr_at(cfg, e * steps + steps - 1, steps) for e in range(E)]
    if cfg.eval_per_class == cfg.test_per_class:
        res["summary"]["best_epoch_test_acc"] = acc
    if data_id:
        res["data"] = {"id": data_id, "root": "default"}
    res["key"] = harvest.expected_key(res)
    return res


def _archive(path: Path, entries: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in entries.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _entry(res: dict) -> tuple[str, str]:
    return f"{res['config']['profile']}/{res['key']}/result.json", json.dumps(res)


# ---------------------------------------------------------------- pure functions


def test_expected_key_both_forms():
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="mfw")
    assert harvest.expected_key(_result(cfg, data_id=None)) == cfg.key()
    assert harvest.expected_key(_result(cfg)) == f"{cfg.key()}-01234567"


def test_priority_order_and_coverage():
    runs = harvest.priority_runs("paper")
    labels = [(c.imbalance, c.method, c.seed) for c in runs]
    assert labels[:2] == [("step", "erm", 0), ("step", "mfw", 0)]
    assert set(labels[:8]) == {(i, m, 0) for i in ("exp", "step") for m in ("erm", "ldam-drw", "mfw", "mfw+ldam-drw")}
    assert len({c.key() for c in runs}) == len(runs)
    assert all(c.dataset == "cifar10" and c.profile == "paper" for c in runs)
    table = [c.key() for c in experiments.cifar_table_runs("paper") if c.dataset == "cifar10"]
    ablations = {c.key() for _, c in experiments.ablation_runs("paper")}
    keys = [c.key() for c in runs]
    assert set(keys) == set(table) | ablations
    first_seed1 = next(i for i, c in enumerate(runs) if c.seed == 1)
    assert set(keys[:first_seed1]) == {k for k, c in zip(keys, runs) if c.seed == 0 and k in table}
    smoke = harvest.priority_runs("smoke")
    assert [(c.imbalance, c.method, c.seed) for c in smoke] == labels and {c.profile for c in smoke} == {"smoke"}


def test_plan_fits_the_budget_and_keeps_priority():
    missing = harvest.priority_runs("paper")
    rates = {"eager": 20000.0, "mfw": 16000.0, "eval": 80000.0, "setup_s": 5.0}
    plan = harvest.plan_runs(missing, rates, workers=2, slow=0.75, available_s=600)
    assert plan and all(p["end_s"] <= 600 for p in plan)
    assert [p["rank"] for p in plan][:2] == [0, 1]  # step-100 ERM and MFW first
    whole = harvest.plan_runs(missing, rates, workers=2, slow=0.75, available_s=400, partial=False)
    assert whole and whole[0]["rank"] > 1  # without partial runs: they cannot end in 400 s, shorter runs fill the slots
    # a slower packed rate that cannot fit step-100 loses to one that can, whatever it fits afterwards
    b = {"eager": 20000.0, "mfw": 16000.0, "eval": 80000.0, "setup_s": 5.0, "packed": {2: 30000.0, 4: 24000.0}}
    workers, plan = harvest.choose(missing, b, 400, default_workers=2)
    assert workers == 1 and [(p["rank"], p["partial"]) for p in plan] == [(0, False), (1, True)]
    workers, plan = harvest.choose(missing, b, 800, default_workers=2)
    assert workers == 2 and [p["rank"] for p in plan if not p["partial"]][:4] == [0, 1, 2, 3]
    b["packed"] = {}
    workers, _ = harvest.choose(missing, b, 800, default_workers=2)
    assert workers == 2  # nothing measured packed: the default


def test_budget_arithmetic_fills_the_window_with_partial_runs_of_the_highest_priority():
    """issue 27: at the rates the review estimated for an H200 (15k img/s eager, 12k with MFW; 2 packed give 1.4x),
    a paper step-100 run needs about 420 s and the window is about 400 s. The plan no longer trains exp-100 runs
    instead: the two top-priority runs train to the window's end and are carried, and every slot is full."""
    missing = harvest.priority_runs("paper")
    b = {"eager": 15000.0, "mfw": 12000.0, "eval": 45000.0, "setup_s": 4.0, "packed": {2: 21000.0}}
    rates = {k: b[k] for k in ("eager", "mfw", "eval", "setup_s")}
    assert 400 < harvest.estimate_s(missing[0], rates, 1.0) < 480
    available = 400.0
    workers, plan = harvest.choose(missing, b, available, default_workers=2)
    assert [p["rank"] for p in plan] == list(range(workers))  # the highest priority, nothing else
    assert all(p["partial"] and p["from_epoch"] == 0 and 0 < p["to_epoch"] < 200 for p in plan)
    assert all(p["end_s"] == available for p in plan)  # the window is filled, slot by slot
    assert sum(p["est_s"] for p in plan) == pytest.approx(workers * available)

    # the next lease resumes them: their remaining epochs finish, then the next runs in priority order follow,
    # each slot again filled to the window's end by a partial run
    done = {p["cfg"].key(): p["to_epoch"] for p in plan}
    workers2, plan2 = harvest.choose(missing, b, available, default_workers=2, done=done)
    first = [p for p in plan2 if p["rank"] < workers]
    assert first and all(not p["partial"] and p["from_epoch"] == done[p["cfg"].key()] for p in first)
    assert harvest.estimate_s(missing[0], rates, 1.0, done[missing[0].key()]) < 0.6 * available
    assert [p["rank"] for p in plan2] == list(range(len(plan2)))  # in priority order, no gap
    ends = sorted(p["end_s"] for p in plan2)
    assert ends[-1] == available and sum(p["partial"] for p in plan2) >= 1
    # a run that ends exactly within the window is whole; an estimate that does not is partial
    for p in plan2:
        assert p["end_s"] <= available + 1e-9
        assert p["partial"] == (p["to_epoch"] < p["cfg"].epochs)


def test_plan_is_explained():
    missing = harvest.priority_runs("paper")
    b = {"eager": 15000.0, "mfw": 12000.0, "eval": 45000.0, "setup_s": 4.0, "packed": {}}
    workers, plan = harvest.choose(missing, b, 400.0, default_workers=1, done={missing[0].key(): 150})
    text = harvest.explain(plan, workers, 400.0, 540.0, missing[5:6])
    assert "resumes at epoch 150/200, finishes" in text
    assert "is carried to the next lease" in text and "spare:" in text
    assert "s of the 540 s budget (" in text and "into finished results" in text


# ---------------------------------------------------------------- import


def test_import_checks_everything_first(tmp_path):
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    good, other = _result(cfg), _result(cfg.replace(seed=1))
    root = tmp_path / "store"
    tampered = dict(other, config=dict(other["config"], seed=2))  # key no longer matches its config
    for bad in (dict([_entry(good), _entry(tampered)]),
                dict([_entry(good), (_entry(other)[0], _entry(other)[1][:-20])]),  # damaged json
                dict([_entry(good), (f"smoke/{good['key']}/model.pt", "x")]),  # not a result.json
                dict([_entry(good), (f"paper/{good['key']}/result.json", json.dumps(good))])):  # wrong profile
        with pytest.raises(ValueError):
            harvest.import_archive(_archive(tmp_path / "bad.tar.gz", bad), root)
        assert not root.exists()  # nothing imported from a refused archive
    (tmp_path / "damaged.tar.gz").write_bytes(b"\x1f\x8b\x08not a gzip")
    with pytest.raises(ValueError, match="damaged archive"):
        harvest.import_archive(tmp_path / "damaged.tar.gz", root)

    ok = _archive(tmp_path / "ok.tar.gz", dict([_entry(good), _entry(other), ("harvest.log", "log")]))
    done = harvest.import_archive(ok, root)
    assert len(done["imported"]) == 2 and not done["identical"]
    assert store.read_result(cfg, root) == good
    again = harvest.import_archive(ok, root)
    assert len(again["identical"]) == 2 and not again["imported"]
    # a different result under the same key: the stored one stays, the new one is kept beside it
    changed = _result(cfg, error=10.0)
    out = harvest.import_archive(_archive(tmp_path / "changed.tar.gz", dict([_entry(changed)])), root)
    assert len(out["kept aside"]) == 1
    folder = root / "smoke" / good["key"]
    assert json.loads((folder / "result.json").read_text()) == good
    assert [json.loads(p.read_text()) for p in folder.glob("result.harvest-*.json")] == [changed]


def _store_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.mark.parametrize("field, value", [("test_error", "12.5"), ("test_error", -5.0), ("test_error", 101.0),
                                          ("test_error", None), ("test_acc", 1.5), ("test_acc_per_class", [0.5]),
                                          ("train_counts", [1, 2])])
def test_import_refuses_bad_values_and_writes_nothing(tmp_path, capsys, field, value):
    """issue 25 item 3: an entry with a non-numeric, null or out-of-range value is refused in one line before
    anything is written, whichever entry it is (here the second: the first one is fine)."""
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    good, bad = _result(cfg), _result(cfg.replace(seed=1))
    bad["summary"][field] = value
    archive = _archive(tmp_path / "a.tar.gz", dict([_entry(good), _entry(bad)]))
    root = tmp_path / "store"
    rc = harvest.main(["import", str(archive), "--results", str(root)])
    err = capsys.readouterr().err
    assert rc == 1 and "refused" in err and f"summary.{field}" in err and len(err.strip().splitlines()) == 1, err
    assert _store_files(root) == []


def test_import_refuses_bad_history(tmp_path):
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    res = _result(cfg)
    res["history"]["test_top1"][-1] = 1.5  # out of range (NaN is not JSON at all: test_trust4)
    with pytest.raises(ValueError, match="history.test_top1"):
        harvest.import_archive(_archive(tmp_path / "a.tar.gz", dict([(_entry(res)[0], json.dumps(res))])),
                               tmp_path / "store")
    assert _store_files(tmp_path / "store") == []


def test_import_is_all_or_nothing_when_a_write_fails(tmp_path, monkeypatch):
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    a, b = _result(cfg), _result(cfg.replace(seed=1))
    archive = _archive(tmp_path / "a.tar.gz", dict([_entry(a), _entry(b)]))
    real, calls = os.replace, []

    def failing(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(harvest.os, "replace", failing)
    with pytest.raises(OSError):
        harvest.import_archive(archive, tmp_path / "store")
    assert _store_files(tmp_path / "store") == []


def test_import_refuses_a_padded_entry_in_bounded_memory(tmp_path, monkeypatch, capsys):
    """issue 25 item 2: a small archive holding a huge (valid, space-padded) result.json is refused from its
    header, writes nothing, and never holds the entry in memory. The cap is lowered so that the test is fast:
    a 64 MB entry (about 64 kB compressed) against a 1 MB cap."""
    import resource
    import tracemalloc

    monkeypatch.setattr(harvest, "MAX_RESULT_BYTES", 1 << 20)
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    res = _result(cfg)
    name, text = _entry(res)
    pad = 64 << 20
    path = tmp_path / "padded.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        body = text.encode()
        info.size = len(body) + pad

        class Padded(io.RawIOBase):  # streams the entry: the test itself never holds 64 MB
            def __init__(self):
                self.left, self.head = pad, body

            def readable(self):
                return True

            def readinto(self, b):
                if self.head:
                    n = min(len(b), len(self.head))
                    b[:n], self.head = self.head[:n], self.head[n:]
                    return n
                n = min(len(b), self.left)
                b[:n] = b" " * n
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Padded(), 1 << 16))
    assert path.stat().st_size < 1 << 20
    root = tmp_path / "store"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        rc = harvest.main(["import", str(path), "--results", str(root)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert rc == 1 and "more than" in err and len(err.strip().splitlines()) == 1, err
    assert _store_files(root) == []
    assert peak < 8 << 20, f"{peak} bytes allocated while refusing a {pad}-byte entry"
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 32 << 10  # kB: no jump of 32 MB


def test_import_refuses_deeply_nested_json_in_one_line(tmp_path, capsys):
    """issue 25 item 4: a deeply nested JSON is a one-line refusal, not a RecursionError traceback."""
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=100, method="erm")
    res = _result(cfg)
    for depth in (100_000, 40):
        deep = "[" * depth + "]" * depth
        text = json.dumps(res)[:-1] + f', "extra": {deep}}}'
        archive = _archive(tmp_path / f"deep{depth}.tar.gz", {_entry(res)[0]: text})
        rc = harvest.main(["import", str(archive), "--results", str(tmp_path / "store")])
        err = capsys.readouterr().err
        assert rc == 1 and "nested too deeply" in err and len(err.strip().splitlines()) == 1, err
    assert _store_files(tmp_path / "store") == []


# ---------------------------------------------------------------- the smoke run


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory) -> Path:
    """PROCRUSTES_DATA with cifar10/{train,test}: the first 100 and 50 images of each class of data/cifar10."""
    from procrustes.training.data import default_root

    src = default_root("cifar10")
    if not (src / "train").is_dir():
        pytest.skip(f"no CIFAR-10 image tree at {src} (extract ../shared/data/cifar10-jpeg.tar.gz there)")
    data = tmp_path_factory.mktemp("harvest-data")
    for split, n in (("train", 100), ("test", 50)):
        for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            dst = data / "cifar10" / split / cls.name
            dst.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:n]:
                shutil.copy2(f, dst / f.name)
    return data


@pytest.fixture(scope="module")
def smoke_archive(small_cifar, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    tmp = tmp_path_factory.mktemp("harvest-smoke")
    # the harvest's own smoke budget: 90 s x this CPU's slowdown, from the data's end (HARVEST_TEST_BUDGET_S: exact)
    budget = os.environ.get("HARVEST_TEST_BUDGET_S", "")
    env = cli_env(PROCRUSTES_DATA=str(small_cifar), PROCRUSTES_RESULTS=str(tmp / "committed"), OUT=str(tmp / "out"),
                  HARVEST_BUDGET_S=budget, OMP_NUM_THREADS="1")
    cmd = (["make", "-s", "gpu-harvest", "SMOKE=1"] if shutil.which("make")
           else ["bash", "scripts/gpu_harvest.sh", "--smoke"])
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=1200)
    wall = time.perf_counter() - t
    archives = sorted((tmp / "out").glob("harvest-smoke-*.tar.gz"))
    assert len(archives) == 1, p.stdout[-3000:] + p.stderr[-3000:]
    too_slow = ("plan: 0 run(s)" in p.stdout or "bench not done within" in p.stdout) and p.returncode != 0
    if too_slow:  # the estimate gate worked; this CPU is too busy to train one smoke run within the budget
        bench = next((line for line in p.stdout.splitlines() if line.startswith("bench:")), "no bench line")
        pytest.skip(f"CPU too busy for the {budget or 'default'} smoke budget ({wall:.0f} s): {bench}")
    return archives[0], p, wall


def test_smoke_harvest_archive_imports(smoke_archive, tmp_path):
    archive, p, wall = smoke_archive
    print(p.stdout[-4000:], f"\nsmoke harvest: {wall:.0f} s")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "bench: cifar10 step-100 erm (smoke" in p.stdout
    cores = len(os.sched_getaffinity(0))  # on a CPU one process alone gets every core, 2 packed half each
    assert f"torch threads a process x1 {cores}, x2 {max(1, cores // 2)};" in p.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    results = [n for n in names if n.endswith("/result.json")]
    assert results and all(n.startswith("smoke/") for n in results)
    assert "harvest.log" in names and "harvest-summary.json" in names
    assert not any(n.endswith((".pt", ".tmp")) for n in names)

    root = tmp_path / "store"
    cmd = (["make", "-s", "harvest-import", f"FILE={archive}"] if shutil.which("make")
           else [sys.executable, "-m", "procrustes.tooling.harvest", "import", str(archive)])
    out = subprocess.run(cmd, cwd=REPO, env=cli_env(PROCRUSTES_RESULTS=str(root)), text=True, capture_output=True,
                         timeout=120)
    assert out.returncode == 0 and f"{len(results)} imported" in out.stdout, out.stdout + out.stderr
    # what was imported is no longer missing: a second harvest would not train it again
    queue = harvest.priority_runs("smoke")
    _, missing = store.collect(queue, root)
    assert len(missing) == len(queue) - len(results)


def test_smoke_archive_tampered_or_damaged_is_refused(smoke_archive, tmp_path, capsys):
    archive, _, _ = smoke_archive
    with tarfile.open(archive) as tar:
        entries = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}
    name = next(n for n in entries if n.endswith("/result.json"))
    res = json.loads(entries[name])
    res["config"]["seed"] += 7  # the key no longer matches the config
    for label, text in (("tampered", json.dumps(res)), ("damaged", entries[name][: len(entries[name]) // 2])):
        bad = _archive(tmp_path / f"{label}.tar.gz", {**entries, name: text})
        root = tmp_path / f"store-{label}"
        capsys.readouterr()
        rc = harvest.main(["import", str(bad), "--results", str(root)])
        err = capsys.readouterr().err
        assert rc == 1 and "refused" in err and len(err.strip().splitlines()) == 1, err
        assert not root.exists()


def test_unknown_compile_mode_is_refused_before_anything_starts(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HARVEST_COMPILE_MODE", "fastest")
    monkeypatch.setattr(harvest, "_start_child", lambda *a: pytest.fail("training process started"))
    assert harvest.harvest(smoke=True, budget_s=60, t0=time.time(), out=tmp_path, work=None, committed=None) == 2
    assert "unknown HARVEST_COMPILE_MODE 'fastest'" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
