"""store.py: atomic writes, damaged result files (reported, skipped, set aside, never overwritten), collect."""
from __future__ import annotations

import json
import warnings

import pytest

from procrustes import store
from procrustes.config import make_config
from procrustes.store import DamagedResult


def _finished(cfg):
    return {"key": cfg.key(), "config": cfg.to_dict(), "summary": {"test_acc": 0.5}}


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
    assert store.run_dir(cfg, tmp_path) == tmp_path / "smoke" / cfg.key()
    monkeypatch.setenv("PROCRUSTES_RESULTS", str(tmp_path / "env"))
    assert store.results_dir() == tmp_path / "env"
    assert store.run_dir(cfg) == tmp_path / "env" / "smoke" / cfg.key()


def test_read_result(tmp_path):
    cfg = make_config("smoke")
    assert store.read_result(cfg, tmp_path) is None  # nothing there: no warning either
    store.atomic_write_json(store.run_dir(cfg, tmp_path) / "result.json", _finished(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert store.read_result(cfg, tmp_path)["summary"] == {"test_acc": 0.5}


@pytest.mark.parametrize("content", ['{"key": "abc", "summ', "", "null", "[1, 2]", '{"key": "WRONGKEY", "summary": {}}',
                                     '{"key": "%KEY%"}', b"\xff\xfe\x00garbage"],
                         ids=["truncated", "empty", "null", "list", "other-key", "unfinished", "binary"])
def test_damaged_result_warns_and_returns_none(tmp_path, content):
    cfg = make_config("smoke")
    path = store.run_dir(cfg, tmp_path) / "result.json"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content.replace("%KEY%", cfg.key()))
    with pytest.warns(DamagedResult, match="damaged"):
        assert store.read_result(cfg, tmp_path) is None
    assert store.read_result_quiet(cfg, tmp_path) is None


def test_set_aside_damaged_keeps_the_file(tmp_path):
    cfg = make_config("smoke")
    path = store.run_dir(cfg, tmp_path) / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text("{ half a file")
    kept = store.set_aside_damaged(cfg, tmp_path)
    assert kept is not None and kept.parent == path.parent and kept.name.startswith("result.damaged-")
    assert kept.read_text() == "{ half a file"
    assert not path.exists()
    # a good result is never moved
    store.atomic_write_json(path, _finished(cfg))
    assert store.set_aside_damaged(cfg, tmp_path) is None
    assert path.exists() and kept.read_text() == "{ half a file"


def test_collect_lists_missing(tmp_path):
    a, b, c = (make_config("smoke", seed=s) for s in (0, 1, 2))
    store.atomic_write_json(store.run_dir(a, tmp_path) / "result.json", _finished(a))
    damaged = store.run_dir(c, tmp_path) / "result.json"
    damaged.parent.mkdir(parents=True)
    damaged.write_text("not json")
    with pytest.warns(DamagedResult):
        done, missing = store.collect([a, b, c], tmp_path)
    assert [r["key"] for r in done] == [a.key()]
    assert missing == [b, c]
    assert damaged.read_text() == "not json"  # reading never touches it


def test_provenance_keys():
    p = store.provenance("cpu", "2024-01-01T00:00:00+00:00", 12.345, 678.91, "fp32", ["abc", "def"])
    for k in ("git_commit", "torch", "python", "device", "device_name", "precision", "started_utc", "finished_utc",
              "wall_s", "train_images_per_s", "host"):
        assert k in p
    assert p["wall_s"] == 12.35 and p["train_images_per_s"] == 678.9
    assert p["git_commit"] == "abc, def" and p["git_commits"] == ["abc", "def"] and "threads" in p["device_name"]
