"""store.py: atomic writes, damaged result files (reported, skipped, set aside, never overwritten), collect."""
from __future__ import annotations

import json
import warnings

import pytest

from procrustes.training import store
from procrustes.training.config import make_config
from procrustes.training.store import DamagedResult


DATA = "0123456789abcdef"


def _finished(cfg, data=DATA):
    return {"key": store.run_key(cfg, data), "config": cfg.to_dict(), "data": {"id": data, "root": "default"},
            "summary": {"test_acc": 0.5}}


def _dir(cfg, root, data=DATA):
    return store.run_dir(cfg, root, data)


def test_atomic_write_json_leaves_no_temp_file(tmp_path):
    path = tmp_path / "deep" / "er" / "result.json"
    store.atomic_write_json(path, {"a": [1, 2], "b": None})
    store.atomic_write_json(path, {"a": 3})  # replace
    assert json.loads(path.read_text()) == {"a": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["result.json"]


def test_atomic_torch_save_leaves_no_temp_file(tmp_path):
    import torch

    store.atomic_torch_save(tmp_path / "c.pt", {"x": torch.arange(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(torch.load(tmp_path / "c.pt")["x"], torch.arange(3))


def test_run_dir_layout(tmp_path, monkeypatch):
    cfg = make_config("smoke")
    assert store.run_dir(cfg, tmp_path, DATA) == tmp_path / "smoke" / f"{cfg.key()}-{DATA[:8]}"
    monkeypatch.setenv("PROCRUSTES_RESULTS", str(tmp_path / "env"))
    assert store.results_dir() == tmp_path / "env"
    assert store.run_dir(cfg, data_id=DATA) == tmp_path / "env" / "smoke" / f"{cfg.key()}-{DATA[:8]}"
    with pytest.raises(LookupError):
        store.run_dir(cfg)  # no data id and nothing stored
    (tmp_path / "env" / "smoke" / f"{cfg.key()}-{DATA[:8]}").mkdir(parents=True)
    assert store.run_dir(cfg) == tmp_path / "env" / "smoke" / f"{cfg.key()}-{DATA[:8]}"


def test_read_result(tmp_path):
    cfg = make_config("smoke")
    assert store.read_result(cfg, tmp_path) is None  # nothing there: no warning either
    store.atomic_write_json(_dir(cfg, tmp_path) / "result.json", _finished(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_result(cfg, tmp_path)["summary"] == {"test_acc": 0.5}
        assert store.read_result(cfg, tmp_path, DATA)["summary"] == {"test_acc": 0.5}


def test_same_config_on_other_data_is_another_run(tmp_path):
    """B1: the key covers the data: a result on data A is not the result on data B."""
    cfg = make_config("smoke")
    store.atomic_write_json(_dir(cfg, tmp_path) / "result.json", _finished(cfg))
    other = "fedcba9876543210"
    assert store.read_result(cfg, tmp_path, other) is None
    assert store.run_dir(cfg, tmp_path, other) != store.run_dir(cfg, tmp_path, DATA)
    store.atomic_write_json(_dir(cfg, tmp_path, other) / "result.json", _finished(cfg, other))
    assert store.read_result(cfg, tmp_path, other)["data"]["id"] == other
    assert store.read_result(cfg, tmp_path, DATA)["data"]["id"] == DATA


@pytest.mark.parametrize("content", ['{"key": "abc", "summ', "", "null", "[1, 2]", '{"key": "WRONGKEY", "summary": {}}',
                                     '{"key": "%KEY%"}', b"\xff\xfe\x00garbage", "%OTHERCONFIG%"],
                         ids=["truncated", "empty", "null", "list", "other-key", "unfinished", "binary", "other-config"])
def test_damaged_result_warns_and_returns_none(tmp_path, content):
    cfg = make_config("smoke")
    path = _dir(cfg, tmp_path) / "result.json"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "%OTHERCONFIG%":
        res = _finished(cfg)
        res["config"]["lr"] = 0.2
        path.write_text(json.dumps(res))
    else:
        path.write_text(content.replace("%KEY%", store.run_key(cfg, DATA)))
    with pytest.warns(DamagedResult, match="damaged"):
        assert store.read_result(cfg, tmp_path) is None


def test_set_aside_damaged_keeps_the_file(tmp_path):
    cfg = make_config("smoke")
    path = _dir(cfg, tmp_path) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ half a file")
    kept = store.set_aside_damaged(path)
    assert kept is not None and kept.parent == path.parent and kept.name.startswith("result.damaged-")
    assert kept.read_text() == "{ half a file"
    assert not path.exists()
    # a good result is never moved
    store.atomic_write_json(path, _finished(cfg))
    assert store.set_aside_damaged(path) is None
    assert path.exists() and kept.read_text() == "{ half a file"


def test_set_asides_in_the_same_second_never_overwrite_each_other(tmp_path):
    """B8: two set-asides at once (same second, same process) keep both files."""
    path = tmp_path / "result.json"
    kept = []
    for i in range(5):
        path.write_text(f"damaged {i}")
        kept.append(store.set_aside(path))
    assert len({k.name for k in kept}) == 5
    assert sorted(k.read_text() for k in kept) == [f"damaged {i}" for i in range(5)]


def test_damaged_checkpoint_is_set_aside(tmp_path):
    """B7: a truncated or garbage checkpoint is reported in one line naming it, set aside, and not loaded."""
    import torch

    ck = tmp_path / "checkpoint.pt"
    store.atomic_torch_save(ck, {"model": {}, "epoch": 1})
    good = ck.read_bytes()
    for bad in (good[: len(good) // 2], b"garbage", b""):
        ck.write_bytes(bad)
        with pytest.warns(DamagedResult, match=str(ck)):
            assert store.load_checkpoint(ck, "cpu") is None
        assert not ck.exists()
    assert len(list(tmp_path.glob("checkpoint.damaged-*.pt"))) == 3
    store.atomic_torch_save(ck, {"model": {"w": torch.ones(1)}, "epoch": 2})
    assert store.load_checkpoint(ck, "cpu")["epoch"] == 2


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = proc.pid  # a process that has exited (and been reaped): its pid runs nothing now
    stale = tmp_path / f".checkpoint.pt.{dead}.tmp"
    mine = tmp_path / f".checkpoint.pt.{__import__('os').getpid()}.tmp"
    stale.write_text("x")
    mine.write_text("x")
    assert store.remove_stale_temps(tmp_path) == [stale]
    assert mine.exists() and not stale.exists()


def test_collect_lists_missing(tmp_path):
    a, b, c = (make_config("smoke", seed=s) for s in (0, 1, 2))
    store.atomic_write_json(_dir(a, tmp_path) / "result.json", _finished(a))
    damaged = _dir(c, tmp_path) / "result.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("not json")
    with pytest.warns(DamagedResult):
        done, missing = store.collect([a, b, c], tmp_path)
    assert [r["key"] for r in done] == [store.run_key(a, DATA)]
    assert missing == [b, c]
    assert damaged.read_text() == "not json"  # reading never touches it


def test_provenance_keys():
    p = store.provenance("cpu", "2024-01-01T00:00:00+00:00", 12.345, 678.91, "fp32", ["abc", "def"])
    for k in ("git_commit", "torch", "python", "device", "device_name", "precision", "started_utc", "finished_utc",
              "wall_s", "train_images_per_s", "host"):
        assert k in p
    assert p["wall_s"] == 12.35 and p["train_images_per_s"] == 678.9
    assert p["git_commit"] == "abc, def" and p["git_commits"] == ["abc", "def"] and "threads" in p["device_name"]


@pytest.mark.parametrize("native", [False, True])
def test_cpu_device_name_says_whether_the_cpu_has_native_bf16(monkeypatch, native):
    """Wall times of fp32 runs differ between CPUs with and without bf16 units: the provenance tells them apart."""
    monkeypatch.setattr(store, "cpu_has_bf16", lambda: native)
    name = store.device_name("cpu")
    assert "threads" in name and name.endswith(", native bf16)") == native


def test_checkpoint_epoch_reads_without_touching(tmp_path):
    """reproduce --list says how far an interrupted run got; a damaged checkpoint stays where it is for the
    trainer to report and set aside."""
    import torch

    cfg = make_config("smoke", seed=0)
    assert store.checkpoint_epoch(cfg, tmp_path) is None
    folder = tmp_path / "smoke" / f"{cfg.key()}-abcdef01"
    folder.mkdir(parents=True)
    torch.save({"model": {}, "epoch": 3}, folder / "checkpoint.pt")
    assert store.checkpoint_epoch(cfg, tmp_path) == 3
    other = tmp_path / "smoke" / f"{cfg.key()}-12345678"  # the same config on other data
    other.mkdir()
    (other / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert store.checkpoint_epoch(cfg, tmp_path) == 3
    assert (other / "checkpoint.pt").read_bytes() == b"not a checkpoint"


# ---------------------------------------------------------------- issue 25: security and data safety


class _Payload:
    """A pickle payload: unpickling it would create the marker file (code run by reading a checkpoint)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _evil_checkpoint(path, marker):
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {}, "epoch": 5, "payload": _Payload(marker)}, path)


def test_pickle_payload_in_a_checkpoint_never_runs(tmp_path):
    """Issue 25.1: reading a checkpoint (reproduce --list, a resume) refuses a pickle payload unread."""
    cfg = make_config("smoke", seed=0)
    marker = tmp_path / "PWNED"
    ck = tmp_path / "smoke" / f"{cfg.key()}-abcdef01" / "checkpoint.pt"
    _evil_checkpoint(ck, marker)
    assert store.checkpoint_epoch(cfg, tmp_path) is None  # --list: skipped, not run, not moved
    assert not marker.exists() and ck.exists()
    with pytest.warns(DamagedResult, match="refused"):
        assert store.load_checkpoint(ck, "cpu") is None  # a resume: reported and set aside
    assert not marker.exists() and not ck.exists()
    assert len(list(ck.parent.glob("checkpoint.damaged-*.pt"))) == 1


def test_a_checkpoint_of_plain_values_loads_weights_only(tmp_path):
    """What the trainer's checkpoints hold (state dicts, a generator state, numpy's PCG64 state with its
    128-bit ints, history lists, strings, None) passes weights_only."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    rng.random(3)
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.ones(1, 2)).sum().backward()
    opt.step()
    ck = {"model": m.state_dict(), "opt": opt.state_dict(), "gen": torch.Generator().get_state(),
          "rng": rng.bit_generator.state, "history": {"a": [1.0, float("nan")]}, "epoch": 1, "config": {"x": None}}
    store.atomic_torch_save(tmp_path / "checkpoint.pt", ck)
    back = store.load_checkpoint(tmp_path / "checkpoint.pt", "cpu")
    assert back["rng"] == ck["rng"] and back["epoch"] == 1 and torch.equal(back["gen"], ck["gen"])


def test_a_result_that_parses_but_fails_the_checks_is_set_aside_when_replaced(tmp_path):
    """Issue 25.5: an edited result.json (and model.pt, config.json) is kept aside before a retrain replaces it."""
    cfg = make_config("smoke")
    d = _dir(cfg, tmp_path)
    edited = dict(_finished(cfg), key="EDITED")
    store.atomic_write_json(d / "result.json", edited)
    (d / "model.pt").write_bytes(b"the user's weights")
    (d / "config.json").write_text('{"edited": true}\n')
    with pytest.warns(DamagedResult):
        assert store.read_result(cfg, tmp_path) is None
    store.write_config(d, cfg)
    store.save_finished(d, {}, _finished(cfg))
    kept = {p.name.split(".")[0]: p for p in d.iterdir() if "-20" in p.name}
    assert json.loads(kept["result"].read_text()) == edited
    assert kept["model"].read_bytes() == b"the user's weights"
    assert kept["config"].read_text() == '{"edited": true}\n'
    assert store.read_result(cfg, tmp_path)["summary"] == {"test_acc": 0.5}
    before = sorted(p.name for p in d.iterdir())
    store.write_config(d, cfg)  # the same content again: nothing to set aside
    assert sorted(p.name for p in d.iterdir()) == before


def test_model_pt_is_checked_against_its_recorded_hash(tmp_path):
    """Issue 25.6: a garbage model.pt beside a result is reported as damaged; no model.pt (a fresh clone) and
    no recorded hash (the committed results) both read fine."""
    import torch

    cfg = make_config("smoke")
    d = _dir(cfg, tmp_path)
    store.save_finished(d, {"w": torch.ones(2)}, _finished(cfg))
    res = store.read_result(cfg, tmp_path)
    assert res["model_sha256"] == store.sha256_file(d / "model.pt")
    (d / "model.pt").write_bytes(b"garbage")
    with pytest.warns(DamagedResult, match="model.pt"):
        assert store.read_result(cfg, tmp_path) is None
    (d / "model.pt").unlink()
    assert store.read_result(cfg, tmp_path)["key"] == store.run_key(cfg, DATA)
    store.atomic_write_json(d / "result.json", _finished(cfg))  # no hash recorded
    (d / "model.pt").write_bytes(b"anything")
    assert store.read_result(cfg, tmp_path) is not None


def _disk_full(*args):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("write", ["json", "torch"])
def test_disk_full_is_one_error_and_leaves_no_temp_file(tmp_path, monkeypatch, write):
    """Issue 25.7: the temporary file of a failed write is removed (a full disk stays usable)."""
    monkeypatch.setattr(store.os, "fsync", _disk_full)
    with pytest.raises(store.StoreError, match="No space left on device"):
        if write == "json":
            store.atomic_write_json(tmp_path / "result.json", {"a": 1})
        else:
            store.atomic_torch_save(tmp_path / "checkpoint.pt", {"epoch": 1})
    assert list(tmp_path.iterdir()) == []


def test_check_writable(tmp_path, monkeypatch):
    """Issue 25.7: --results naming a file, or a read-only folder, is one line before training."""
    import os

    from procrustes.training.config import ConfigError

    store.check_writable(tmp_path / "new" / "folder")  # made when needed
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        store.check_writable(tmp_path / "afile")
    with pytest.raises(ConfigError, match="is a file"):
        store.check_writable(tmp_path / "afile" / "below")
    with pytest.raises(store.StoreError, match="cannot write"):  # the Python API: one error, no traceback of ours
        store.atomic_write_json(tmp_path / "afile" / "smoke" / "result.json", {})
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(store.os, "access", lambda p, mode: False if str(p) == str(ro) else real_access(p, mode))
    with pytest.raises(ConfigError, match="not writable"):
        store.check_writable(ro / "cpu")


def test_a_read_only_folder_fails_its_write_with_one_error(tmp_path, monkeypatch):
    import errno

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.os, "replace", denied)
    with pytest.raises(store.StoreError, match="Permission denied"):
        store.atomic_write_json(tmp_path / "result.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("shutil").which("git") is None, reason="no git here")
def test_a_parked_checkpoint_being_trained_does_not_make_the_code_dirty(tmp_path):
    """git_commit's '+dirty' says the code is not HEAD's: a tracked checkpoint under results/ (make park) that the
    resumed run rewrites every epoch is data, and leaves the commit clean; a change of code does not."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "results" / "paper" / "k").mkdir(parents=True)
    (tmp_path / "results" / "paper" / "k" / "checkpoint.pt").write_bytes(b"epoch 1")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "c")
    assert not store.tree_is_dirty(tmp_path)
    (tmp_path / "results" / "paper" / "k" / "checkpoint.pt").write_bytes(b"epoch 2")
    assert not store.tree_is_dirty(tmp_path)
    (tmp_path / "code.py").write_text("x = 2\n")
    assert store.tree_is_dirty(tmp_path)
