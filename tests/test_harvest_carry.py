"""issue 27: runs continue across leases. A run asked to stop checkpoints at the end of its epoch; its checkpoint
goes into a carry file; the next harvest takes it back (checked completely first, loaded with weights_only=True,
never replacing anything stored) and the run resumes and ends bit-identical to an uninterrupted run, whose
result harvest-import accepts. Also: checkpoints by time, and the commit recorded for a tree without git.

The runs train on a generated 10-class tree in a temporary PROCRUSTES_DATA (no real data needed)."""
from __future__ import annotations

import io
import time
import json
import tarfile
from pathlib import Path

import pytest
import torch

from procrustes.tooling import harvest
from procrustes.training import store, train

from .conftest import make_imagefolder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("carry-data")
    make_imagefolder(d / "cifar10", 10, 100, 10, size=32)
    return d


@pytest.fixture
def env(data_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("PROCRUSTES_DATA", str(data_dir))
    monkeypatch.delenv("PROCRUSTES_STOP_FILE", raising=False)
    monkeypatch.delenv("PROCRUSTES_CHECKPOINT_S", raising=False)
    return tmp_path


def _cfg():
    return harvest.priority_runs("smoke")[0]  # step-100 ERM, the top priority, at smoke size (3 epochs)


def _data_id(c):
    from procrustes.training.data import load_benchmark

    return load_benchmark(c).data["id"]


def _stop_after_first_epoch(monkeypatch):
    calls = iter([False, True])  # before the first epoch: go on; at its end: stop
    monkeypatch.setattr(train, "stop_requested", lambda: next(calls, True))


def _saves(monkeypatch) -> list[tuple[str, bool]]:
    saved, real = [], store.atomic_torch_save
    monkeypatch.setattr(store, "atomic_torch_save",
                        lambda path, obj, fsync=True: saved.append((Path(path).name, fsync)) or real(path, obj, fsync))
    return saved


def test_stopped_run_carried_and_resumed_is_bit_identical_and_imports(env, monkeypatch):
    cfg = _cfg()
    saves = _saves(monkeypatch)
    ref = train.run(cfg, device="cpu", results=env / "ref", progress=False)
    assert [s for s in saves if s[0] == "checkpoint.pt"] == [("checkpoint.pt", True)] * cfg.epochs  # default: every epoch
    ref_model = torch.load(store.run_dir(cfg, env / "ref") / "model.pt", weights_only=True)

    # lease 1: asked to stop at the end of epoch 1; its checkpoint goes into the carry file
    _stop_after_first_epoch(monkeypatch)
    assert train.run(cfg, device="cpu", results=env / "work1", progress=False) is None
    monkeypatch.setattr(train, "stop_requested", lambda: False)
    out = env / "out"
    out.mkdir()
    paths, lines = harvest.write_carry(out, "harvest-carry-smoke-x.tar", env / "work1", [cfg.key()])
    assert len(paths) == 1 and "epoch 1/3" in lines[0]
    with tarfile.open(paths[0]) as tar:
        assert tar.getnames() == [f"smoke/{store.run_key(cfg, _data_id(cfg))}/checkpoint.pt"]

    # lease 2: takes it back and resumes at epoch 1, checkpointing by time (so only at its last epoch, unsynced)
    taken = harvest.take_carry(out, env / "work2", [cfg], _data_id)
    assert taken == {cfg.key(): 1}
    monkeypatch.setenv("PROCRUSTES_CHECKPOINT_S", "1e9")
    saves.clear()
    res = train.run(cfg, device="cpu", results=env / "work2", progress=False)
    assert [s for s in saves if s[0] == "checkpoint.pt"] == [("checkpoint.pt", False)]
    assert res["summary"] == ref["summary"]
    strip = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
    assert strip(res["history"]) == strip(ref["history"]) and res["history"]["epoch"] == [1, 2, 3]
    model = torch.load(store.run_dir(cfg, env / "work2") / "model.pt", weights_only=True)
    assert model.keys() == ref_model.keys() and all(torch.equal(model[k], ref_model[k]) for k in model)

    # its result goes into the archive and harvest-import accepts it
    finished = harvest._finished(env / "work2")
    archive = harvest.write_archive(out, "harvest-smoke-x.tar.gz", finished, {})
    done = harvest.import_archive(archive, env / "store")
    assert len(done["imported"]) == 1
    # the finished run leaves nothing to carry
    assert harvest.write_carry(out, "again.tar", env / "work2", [cfg.key()]) == ([], [])


@pytest.fixture
def checkpoint(env, monkeypatch) -> tuple[str, bytes]:
    """(tar member name, bytes) of a real checkpoint of the smoke step-100 ERM run at epoch 1."""
    cfg = _cfg()
    assert train.run(cfg, device="cpu", results=env / "w", progress=False, stop_after=1) is None
    key = store.run_key(cfg, _data_id(cfg))
    return f"smoke/{key}/checkpoint.pt", (env / "w" / "smoke" / key / "checkpoint.pt").read_bytes()


def _carry(folder: Path, entries: dict[str, bytes], name: str = "c.tar") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / name, "w") as tar:
        for n, data in entries.items():
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return folder / name


def _resave(data: bytes, **changes) -> bytes:
    ck = torch.load(io.BytesIO(data), weights_only=True)
    ck.update(changes)
    buf = io.BytesIO()
    torch.save(ck, buf)
    return buf.getvalue()


class Evil:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_carried_checkpoints_are_checked_before_anything_is_written(env, checkpoint, monkeypatch, capsys):
    name, good = checkpoint
    cfg = _cfg()
    other = name.replace(cfg.key(), cfg.replace(seed=1).key())
    evil = io.BytesIO()
    torch.save({"model": Evil()}, evil)
    bad_cases = {
        "epoch": {name: _resave(good, epoch=cfg.epochs)},
        "folder": {other: good},
        "weights_only": {name: evil.getvalue()},
        "history": {name: _resave(good, history={})},
        "model": {name: _resave(good, model={"fc.weight": torch.zeros(3)})},
        "not a checkpoint path": {name.replace("checkpoint.pt", "model.pt"): good},
        "second entry": {name: good, other: _resave(good, epoch=0)},
    }
    for label, entries in bad_cases.items():
        folder = env / f"carry-{label.replace(' ', '-')}"
        with pytest.raises(ValueError):
            harvest.read_carry(_carry(folder, entries))
        work = env / f"work-{label.replace(' ', '-')}"
        assert harvest.take_carry(folder, work, [cfg, cfg.replace(seed=1)], _data_id) == {}
        assert not work.exists(), label  # nothing written
        out = capsys.readouterr().out
        assert "refused" in out and "Traceback" not in out and "code ran" not in out, (label, out)

    monkeypatch.setattr(harvest, "MAX_CHECKPOINT_BYTES", 1000)  # an entry larger than the cap: refused from its header
    with pytest.raises(ValueError, match="more than the 1000"):
        harvest.read_carry(_carry(env / "carry-big", {name: good}))


def test_carry_never_replaces_and_takes_the_furthest(env, checkpoint, monkeypatch, capsys):
    name, good = checkpoint
    cfg = _cfg()
    folder = env / "carry"
    _carry(folder, {name: good}, "a.tar")
    _carry(folder, {name: _resave(good, epoch=2, history={k: v * 2 for k, v in torch.load(
        io.BytesIO(good), weights_only=True)["history"].items()} | {"epoch": [1, 2]})}, "b.tar")
    work = env / "work"
    assert harvest.take_carry(folder, work, [cfg], _data_id) == {cfg.key(): 2}  # the furthest of the two
    assert "(carried in b.tar)" in capsys.readouterr().out
    stored = (work / name).read_bytes()
    assert harvest.take_carry(folder, work, [cfg], _data_id) == {}  # already in the work store: kept as it is
    assert (work / name).read_bytes() == stored
    # a run that is committed meanwhile (not wanted any more) is not taken
    assert harvest.take_carry(folder, env / "work3", [], _data_id) == {}
    assert not (env / "work3").exists()
    # a checkpoint trained on other data is not taken
    assert harvest.take_carry(folder, env / "work4", [cfg], lambda c: "f" * 16) == {}
    assert "trained on other data" in capsys.readouterr().out


def test_carry_files_split_by_size_in_priority_order(env, checkpoint, monkeypatch):
    name, good = checkpoint
    order = [c.key() for c in harvest.priority_runs("smoke")[:3]]
    work = env / "work"
    for k in order:  # three unfinished runs (the same bytes: write_carry only packs them)
        (work / "smoke" / f"{k}-0123abcd").mkdir(parents=True)
        (work / "smoke" / f"{k}-0123abcd" / "checkpoint.pt").write_bytes(good)
    (work / "smoke" / f"{order[1]}-0123abcd" / "result.json").write_text("{}")  # finished: not carried
    monkeypatch.setattr(harvest, "MAX_CARRY_BYTES", len(good) + 5000)  # one checkpoint a file
    paths, lines = harvest.write_carry(env, "harvest-carry-smoke-x.tar", work, order[::-1])
    assert [p.name for p in paths] == ["harvest-carry-smoke-x.tar", "harvest-carry-smoke-x-2.tar"]
    with tarfile.open(paths[0]) as tar:
        assert tar.getnames() == [f"smoke/{order[2]}-0123abcd/checkpoint.pt"]  # order[::-1]: order[2] first
    monkeypatch.setattr(harvest, "CARRY_FILES", 1)
    (work / "smoke" / f"{order[1]}-0123abcd" / "result.json").unlink()
    paths, lines = harvest.write_carry(env, "c.tar", work, order)
    assert len(paths) == 1 and sum("left out" in line for line in lines) == 2


def test_recorded_commit_for_a_tree_without_git(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "REPO", tmp_path)  # no .git there
    monkeypatch.delenv("PROCRUSTES_COMMIT", raising=False)
    assert store.git_commit() == "unknown"
    (tmp_path / ".procrustes-commit").write_text("a" * 40 + "+dirty\n")
    assert store.git_commit() == "a" * 40 + "+dirty"
    monkeypatch.setenv("PROCRUSTES_COMMIT", "b" * 40)
    assert store.git_commit() == "b" * 40
    monkeypatch.setenv("PROCRUSTES_COMMIT", "rm -rf /")
    assert store.git_commit() == "unknown"


def test_stop_before_start_trains_nothing(env, monkeypatch):
    stop = env / "stop"
    stop.touch()
    monkeypatch.setenv("PROCRUSTES_STOP_FILE", str(stop))
    assert train.run(_cfg(), device="cpu", results=env / "w", progress=False) is None
    assert not list((env / "w").rglob("checkpoint.pt"))


def test_smoke_budget_scales_with_a_busy_cpu_and_starts_after_the_data(env, monkeypatch, capsys):
    """issue 25 item 19: on a busy CPU the default smoke budget is 90 s times this CPU's slowdown, counted from
    when the data are loaded (decoding CIFAR-10 ate 56 s of a fixed 90 s budget before)."""
    import types

    monkeypatch.setattr(harvest, "cpu_slowdown", lambda seconds=0.3: 3.0)
    monkeypatch.setattr(harvest, "_start_child", lambda *a, **k: types.SimpleNamespace(poll=lambda: 0))
    monkeypatch.setattr(store, "collect", lambda queue, root=None: (list(queue), []))  # nothing missing: ends there
    from procrustes.training import data as d

    real = d.load_split
    monkeypatch.setattr(d, "load_split", lambda *a: time.sleep(2) or real(*a))  # a slow data step
    t0 = time.time()
    assert harvest.harvest(smoke=True, budget_s=None, t0=t0, out=env / "out", work=None, committed=None) == 1
    out = capsys.readouterr().out
    assert "budget 270 s (smoke: 90.0 s x 3.0" in out and "counted from when the data are loaded" in out
    (archive,) = (env / "out").glob("harvest-smoke-*.tar.gz")
    with tarfile.open(archive) as tar:
        summary = json.load(tar.extractfile("harvest-summary.json"))
    assert summary["budget_s"] == 270
