"""run_many: several runs at once through each executor, every result in the one store, finished runs
skipped. Runs are tiny (a generated ImageFolder tree, one step an epoch); nothing here asserts on time."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from procrustes import make_config
from procrustes.training import store
from procrustes.tooling.packing import RunFailures, run_many

from .conftest import make_imagefolder


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("pack-tree"), num_classes=4, train_per_class=12, test_per_class=5)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A private data cache (children inherit it) and a private store."""
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    return tmp_path / "store"


def configs():
    return [make_config("smoke", dataset="imagefolder", imbalance="exp", ratio=2, epochs=1, eval_per_class=5,
                        test_per_class=5, seed=s) for s in (0, 1)]


def _stamps(cfgs, root):
    return [(store.run_dir(c, root) / "result.json").stat().st_mtime_ns for c in cfgs]


def _check_twice(executor, tree, root, monkeypatch, **kw):
    cfgs = configs()
    res = run_many(cfgs, device="cpu", workers=2, executor=executor, data_root=tree, results=root, progress=False, **kw)
    assert [r["key"].split("-")[0] for r in res] == [c.key() for c in cfgs]  # <config key>-<data id>
    for c in cfgs:
        assert store.read_result(c, root) is not None
    before = _stamps(cfgs, root)

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sys.modules["procrustes.training.train"], "train", no_training)
    again = run_many(cfgs, device="cpu", workers=2, executor=executor, data_root=tree, results=root, progress=False, **kw)
    assert [r["key"] for r in again] == [r["key"] for r in res]
    assert _stamps(cfgs, root) == before
    return res


def test_serial(tree, env, monkeypatch):
    _check_twice("serial", tree, env, monkeypatch)


def test_process_pool(tree, env, monkeypatch):
    _check_twice("process", tree, env, monkeypatch)


@pytest.mark.skipif(importlib.util.find_spec("submitit") is None, reason="submitit is not installed")
def test_local_submitit(tree, env, monkeypatch):
    _check_twice("local-submitit", tree, env, monkeypatch)
    assert (env / "submitit").is_dir()  # its logs and pickles live beside the results


@pytest.mark.parametrize("executor", ["serial", "process-job"])
def test_each_run_starts_with_a_fresh_compiler(executor, tree, env, monkeypatch):
    """A worker trains run after run: without a reset, torch.compile's guards of earlier runs reached dynamo's
    recompile limit and later runs trained eager. Each run must find the compiler's caches empty."""
    import torch._dynamo

    from procrustes.tooling import packing

    resets, seen = [], []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    monkeypatch.setattr(sys.modules["procrustes.training.train"], "run",
                        lambda c, **k: seen.append(len(resets)) or {"key": c.key()})
    cfgs = configs() + [configs()[0].replace(seed=2)]
    if executor == "serial":
        packing._serial(cfgs, "cpu", tree, env, False)
    else:
        for c in cfgs:
            packing._process_job(c.to_dict(), "cpu", 0, tree, str(env))
    assert seen == [1, 2, 3]  # a reset before each run, not once per process


def test_a_failed_run_is_raised_after_the_others_finish(tree, env):
    good = configs()[0]
    bad = good.replace(ratio=1000.0)  # 12 images in the largest class: the smallest would keep none
    with pytest.raises(RunFailures) as e:
        run_many([bad, good], executor="serial", device="cpu", data_root=tree, results=env, progress=False)
    assert [c.key() for c, _ in e.value.failures] == [bad.key()]
    assert store.read_result(good, env) is not None


def test_duplicate_configs_run_once(tree, env):
    c = configs()[0]
    res = run_many([c, c], executor="serial", device="cpu", data_root=tree, results=env, progress=False)
    assert res[0]["key"] == res[1]["key"] and res[0]["key"].startswith(c.key() + "-")


def test_submitit_is_an_optional_extra_named_before_any_work(tmp_path, monkeypatch):
    """submitit left the required dependencies: without it, the submitit executors say how to get it, before a
    run is looked up or trained."""
    import importlib.util as iu

    from procrustes.tooling import packing

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "submitit" else real(name, *a))
    for executor in ("submitit", "local-submitit"):
        with pytest.raises(ValueError, match=r"needs submitit, an optional extra: pip install -e '\.\[slurm\]'"):
            packing.run_many([], executor=executor, results=tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()
