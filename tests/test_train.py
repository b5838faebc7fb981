"""train.py end to end, on smoke-sized runs of real data: resume after an interruption gives the uninterrupted
result exactly, a finished run is read back instead of retrained, a damaged result is set aside, the trainer
learns, the result holds its provenance, and the Tiny-ImageNet slice trains. Every run writes to a temporary
result store; Tiny-ImageNet's decoded cache goes to a temporary data folder."""
from __future__ import annotations

import importlib
import json
import warnings

import pytest
import torch

from procrustes.training import store
from procrustes.training.config import make_config
from procrustes.training.store import DamagedResult
from procrustes.training.train import lr_at, run

HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "feature_grad", "pred_major_share", "weakened_share",
                "test_acc", "test_top1", "seconds", "train_acc_clean", "pred_major_share_clean")
# `procrustes.training.train` is the function (the package re-exports it), so reach the module through importlib
trainer = importlib.import_module("procrustes.training.train")
PROVENANCE_KEYS = ("git_commit", "torch", "device_name", "started_utc", "wall_s", "train_images_per_s")


@pytest.fixture(scope="module")
def cfg():
    # step rho=10 with n_max 40: classes 0-4 keep 40 images, 5-9 keep 4; DRW switches on for the second epoch.
    # Sizes are spelled out so that a change of the smoke profile does not change what this file checks.
    return make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, method="mfw+drw", epochs=2, drw_epoch=1,
                       max_per_class=40, batch_size=64, eval_per_class=20, test_per_class=50)


@pytest.fixture(scope="module")
def data_id(cifar10_root, cfg):
    from procrustes.training.data import load_benchmark

    return load_benchmark(cfg).data["id"]


@pytest.fixture(scope="module")
def straight(cifar10_root, cfg, tmp_path_factory):
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("straight")
    return root, run(cfg, results=root, device="cpu", progress=False)


@pytest.fixture(scope="module")
def resumed(cifar10_root, cfg, data_id, tmp_path_factory):
    """The same run stopped after one epoch, given a damaged result.json, then run again to the end."""
    root = tmp_path_factory.mktemp("resumed")
    d = store.run_dir(cfg, root, data_id)
    out = {"first": run(cfg, results=root, device="cpu", progress=False, stop_after=1)}
    out["files_after_stop"] = sorted(p.name for p in d.iterdir())
    out["checkpoint_epoch"] = torch.load(d / "checkpoint.pt", weights_only=False)["epoch"]
    out["damaged_text"] = '{"key": "%s", "summ' % cfg.key()  # half a file
    (d / "result.json").write_text(out["damaged_text"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["result"] = run(cfg, results=root, device="cpu", progress=False)
    out["warnings"] = [w.category for w in caught]
    out["dir"] = d
    return out


def test_stop_after_leaves_a_checkpoint(resumed):
    assert resumed["first"] is None
    assert "checkpoint.pt" in resumed["files_after_stop"] and "result.json" not in resumed["files_after_stop"]
    assert resumed["checkpoint_epoch"] == 1


def test_auto_precision_is_fp32_on_every_cpu(monkeypatch):
    """A CPU run's key gives the same numbers on any CPU: 'auto' ignores native bf16 units; bf16 is asked for."""
    monkeypatch.setattr(store, "cpu_has_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert trainer.use_bf16("auto", cpu) is False
    assert trainer.use_bf16("bf16", cpu) is True and trainer.use_bf16("fp32", cpu) is False


def test_a_checkpoint_resumes_only_in_its_own_precision(cfg, data_id, tmp_path, monkeypatch):
    d = store.run_dir(cfg, tmp_path, data_id)
    assert run(cfg, results=tmp_path, device="cpu", progress=False, stop_after=1) is None
    assert torch.load(d / "checkpoint.pt", weights_only=False)["precision"] == "fp32"
    before = (d / "checkpoint.pt").read_bytes()
    monkeypatch.setattr(trainer, "use_bf16", lambda precision, device: True)  # as on a device where auto is bf16
    with pytest.raises(ValueError, match="trained in fp32, but precision 'auto' gives bf16"):
        run(cfg, results=tmp_path, device="cpu", progress=False)
    assert (d / "checkpoint.pt").read_bytes() == before and not (d / "result.json").exists()


def test_a_run_is_credited_to_the_commit_its_code_was_loaded_from(cfg, data_id, tmp_path, monkeypatch):
    """A long-lived worker trains runs after the checkout moved on: the commit is the one read at import."""
    monkeypatch.setattr(store, "git_commit", lambda: "moved-on")
    assert trainer.CODE_COMMIT != "moved-on"
    assert run(cfg, results=tmp_path, device="cpu", progress=False, stop_after=1) is None
    ck = torch.load(store.run_dir(cfg, tmp_path, data_id) / "checkpoint.pt", weights_only=False)
    assert ck["commits"] == [trainer.CODE_COMMIT]


def test_resume_gives_the_uninterrupted_result(cfg, straight, resumed):
    a, b = straight[1], resumed["result"]
    for k in ("test_acc", "train_acc", "train_loss", "test_top1", "feature_grad", "weakened_share", "lr",
              "pred_major_share", "epoch", "train_acc_clean", "pred_major_share_clean"):
        assert a["history"][k] == b["history"][k], k
    assert a["summary"]["test_acc"] == b["summary"]["test_acc"]
    assert a["summary"]["test_acc_per_class"] == b["summary"]["test_acc_per_class"]
    wa = torch.load(store.run_dir(cfg, straight[0], a["data"]["id"]) / "model.pt")
    wb = torch.load(resumed["dir"] / "model.pt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_damaged_result_is_set_aside_when_the_run_retrains(cfg, resumed):
    assert DamagedResult in resumed["warnings"]
    d = resumed["dir"]
    kept = list(d.glob("result.damaged-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == resumed["damaged_text"]
    assert store.read_result(cfg, d.parent.parent)["summary"] == resumed["result"]["summary"]
    assert not (d / "checkpoint.pt").exists() and (d / "model.pt").exists()
    assert not list(d.glob(".*.tmp"))


def test_a_finished_run_is_read_back_not_retrained(cfg, straight, monkeypatch):
    root, first = straight

    def boom(*a, **k):
        raise AssertionError("run() trained again")

    monkeypatch.setattr(trainer, "train", boom)
    again = run(cfg, results=root, device="cpu", progress=False)
    assert again == json.loads((store.run_dir(cfg, root) / "result.json").read_text())
    assert again["summary"] == first["summary"] and again["provenance"] == first["provenance"]
    with pytest.raises(AssertionError, match="trained again"):  # the patch is live: a new config would train
        run(cfg.replace(seed=1), results=root, device="cpu", progress=False)


def test_cli_train_reads_back_the_same_run(cfg, straight, monkeypatch, capsys):
    """The command line builds the same config (same key) and prints the stored result."""
    from procrustes.__main__ import main

    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("trained again"))
    rc = main(["train", "--profile", "smoke", "--dataset", "cifar10", "--imbalance", "step", "--ratio", "10",
               "--method", "mfw+drw", "--epochs", "2", "--max-per-class", "40", "--set", "drw_epoch=1",
               "--set", "batch_size=64", "--set", "eval_per_class=20", "--set", "test_per_class=50", "--device", "cpu",
               "--results", str(straight[0])])
    out = capsys.readouterr().out
    assert rc == 0
    err = straight[1]["summary"]["test_error"]
    assert f"test top-1 error {err:.2f}%" in out and straight[1]["key"] in out


def test_result_contents(cfg, straight):
    root, res = straight
    assert res["key"] == f"{cfg.key()}-{res['data']['id'][:8]}" and res["config"] == cfg.to_dict()
    for k in PROVENANCE_KEYS:
        assert k in res["provenance"], k
    assert res["provenance"]["wall_s"] > 0 and res["provenance"]["train_images_per_s"] > 0
    assert res["provenance"]["torch"] == torch.__version__
    h = res["history"]
    for k in HISTORY_KEYS:
        assert isinstance(h[k], list) and len(h[k]) == cfg.epochs, k
    assert h["epoch"] == [1, 2]
    s = res["summary"]
    assert s["train_counts"] == [40] * 5 + [4] * 5
    assert s["test_images"] == 500  # test_per_class 50
    assert s["groups"] == {"major": [0, 1, 2, 3, 4], "minor": [5, 6, 7, 8, 9]}
    assert s["test_acc"] == pytest.approx(h["test_top1"][-1])  # the last epoch is evaluated on the final test set
    assert s["test_error"] == pytest.approx(100 * (1 - s["test_acc"]))
    assert s["best_epoch_test_acc"] is None  # the curve used another test subset
    assert s["schedule"]["drw_epoch"] == 1
    assert 0 <= s["test_acc"] <= 1 and len(s["test_acc_per_class"]) == 10
    # MFW with the median rule and p = 1 weakens every major example, and only those: 200 of 220
    assert h["weakened_share"] == [pytest.approx(200 / 220)] * 2
    assert all(len(a) == 10 for a in h["train_acc"] + h["feature_grad"] + h["test_acc"])
    assert json.loads((store.run_dir(cfg, root) / "result.json").read_text()) == res
    # clean training accuracy: every image of the 4-image minor classes, 20 (clean_per_class) of each major
    assert all(0 <= a <= 1 and a * 4 == round(a * 4) for accs in h["train_acc_clean"] for a in accs[5:])
    assert all(a * 20 == pytest.approx(round(a * 20)) for accs in h["train_acc_clean"] for a in accs[:5])


def test_a_killed_finish_is_completed_by_a_rerun(cfg, straight, tmp_path, monkeypatch):
    """B6: weights are written before the result; a kill between the two leaves the final checkpoint, from which
    a rerun writes both without training again."""
    real = store.atomic_write_bytes

    def killed(path, data, **kw):
        if path.name == "result.json":
            raise KeyboardInterrupt("killed")
        real(path, data, **kw)

    monkeypatch.setattr(store, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, results=tmp_path, device="cpu", progress=False)
    d = store.run_dir(cfg, tmp_path)
    assert (d / "model.pt").exists() and (d / "checkpoint.pt").exists() and not (d / "result.json").exists()
    monkeypatch.setattr(store, "atomic_write_bytes", real)
    monkeypatch.setattr(trainer.TrainStep, "__call__", lambda *a, **k: pytest.fail("trained again"))
    res = run(cfg, results=tmp_path, device="cpu", progress=False)
    assert res["summary"]["test_acc_per_class"] == straight[1]["summary"]["test_acc_per_class"]
    assert (d / "result.json").exists() and not (d / "checkpoint.pt").exists()
    assert not list(d.glob("*.replaced-*")) and not list(d.glob(".*.tmp"))  # the same model.pt again: nothing set aside


def test_a_damaged_checkpoint_restarts_the_run(cfg, straight, data_id, tmp_path):
    """B7: garbage in checkpoint.pt is reported, set aside, and the run trains from scratch to the same result."""
    d = store.run_dir(cfg, tmp_path, data_id)
    d.mkdir(parents=True)
    (d / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (d / ".checkpoint.pt.999999999.tmp").write_bytes(b"left by a killed process")
    with pytest.warns(DamagedResult, match="checkpoint.pt"):
        res = run(cfg, results=tmp_path, device="cpu", progress=False)
    assert res["history"]["train_loss"] == straight[1]["history"]["train_loss"]
    assert len(list(d.glob("checkpoint.damaged-*.pt"))) == 1 and not list(d.glob(".*.tmp"))


def test_diverged_run_is_not_stored(cifar10_root, tmp_path):
    """B4: a run whose loss becomes nan or inf stops with TrainingDiverged and stores no result."""
    bad = make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, epochs=2, max_per_class=40, lr=1e6,
                      batch_size=64, eval_per_class=5, test_per_class=5)
    with pytest.raises(trainer.TrainingDiverged, match="diverged at epoch"):
        run(bad, results=tmp_path, device="cpu", progress=False)
    assert not list(tmp_path.rglob("result.json"))


def test_other_data_under_the_same_config_trains_again(tmp_path, monkeypatch):
    """B1: the same config on another data root is another run (its own folder and result), not a cache hit."""
    from PIL import Image

    import numpy as np

    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))
    roots = []
    for k in range(2):
        root = tmp_path / f"ds{k}"
        rng = np.random.default_rng(k)
        for split, n in (("train", 6), ("test", 2)):
            for c in ("a", "b"):
                (root / split / c).mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
        roots.append(root)
    cfg = make_config("smoke", dataset="imagefolder", imbalance="none", epochs=1, batch_size=4)
    r0 = run(cfg, data_root=roots[0], results=tmp_path / "res", device="cpu", progress=False)
    r1 = run(cfg, data_root=roots[1], results=tmp_path / "res", device="cpu", progress=False)
    assert r0["data"]["id"] != r1["data"]["id"] and r0["key"] != r1["key"]
    assert len(store.run_dirs(cfg, tmp_path / "res")) == 2
    assert run(cfg, data_root=roots[0], results=tmp_path / "res", device="cpu", progress=False) == r0


def test_lr_schedule():
    cfg = make_config("paper")
    steps = 10
    assert lr_at(cfg, 0, steps) == pytest.approx(0.1 / 50)  # warm-up: 5 epochs of 10 steps
    assert lr_at(cfg, 24, steps) == pytest.approx(0.1 * 25 / 50)
    assert lr_at(cfg, 50, steps) == pytest.approx(0.1)
    assert lr_at(cfg, 1599, steps) == pytest.approx(0.1)
    assert lr_at(cfg, 1600, steps) == pytest.approx(0.1 * 0.01)
    assert lr_at(cfg, 1800, steps) == pytest.approx(0.1 * 1e-4)


def reference_ldam_drw_lr(epoch: int, lr: float = 0.1) -> float:
    """The LDAM-DRW reference code's adjust_learning_rate (cifar_train.py), restated: epoch is 0-based."""
    e = epoch + 1
    if e <= 5:
        return lr * e / 5
    if e > 180:
        return lr * 0.0001
    if e > 160:
        return lr * 0.01
    return lr


def test_warmup_per_epoch_is_the_reference_codes_schedule_at_every_step():
    cfg = make_config("paper", warmup_per="epoch")
    steps = 97  # CIFAR-10 exp-100: ceil(12,406 / 128)
    got = [lr_at(cfg, e * steps + s, steps) for e in range(200) for s in (0, steps // 2, steps - 1)]
    want = [reference_ldam_drw_lr(e) for e in range(200) for _ in range(3)]
    assert got == pytest.approx(want, rel=1e-12)
    # the default ramps within each epoch instead, and only the warm-up differs
    plain = make_config("paper")
    assert lr_at(plain, 0, steps) == pytest.approx(0.1 / (5 * steps)) != lr_at(cfg, 0, steps)
    assert [lr_at(plain, e * steps, steps) for e in range(5, 200)] == [lr_at(cfg, e * steps, steps) for e in range(5, 200)]


def test_warmup_per_keeps_the_keys_of_stored_runs_and_refuses_other_values():
    from procrustes.training.config import ConfigError

    plain = make_config("paper")
    assert "warmup_per" not in plain.to_dict()  # key-neutral at its default: stored runs keep their keys
    assert make_config("paper", warmup_per="epoch").key() != plain.key()
    # without a warm-up it decides nothing: one training, one key
    assert make_config("paper", warmup_per="epoch", warmup_epochs=0).key() == make_config("paper", warmup_epochs=0).key()
    with pytest.raises(ConfigError, match="warmup_per"):
        make_config("paper", warmup_per="step")


def test_trainer_fits_a_small_cifar10_subset(cifar10_root, tmp_path):
    # 50 images a class, 6 epochs: measured 0.25 (seed 0) and 0.24 (seed 1) on 1000 test images; chance is 0.10
    cfg = make_config("smoke", dataset="cifar10", imbalance="none", max_per_class=50, epochs=6, batch_size=32,
                      lr=0.02, eval_per_class=10, test_per_class=100)
    res = run(cfg, results=tmp_path, device="cpu", progress=False)
    assert res["summary"]["test_images"] == 1000
    assert res["summary"]["test_acc"] > 0.15, res["history"]["test_top1"]
    assert res["history"]["train_loss"][-1] < res["history"]["train_loss"][0]


def test_tiny_imagenet_slice_trains(tiny_root, tmp_path, monkeypatch):
    """ResNet-18 on 64x64 crops of the 200-class slice. Smaller than the notebooks' smoke run (10 a class,
    rho=10, 5 test images a class) to keep the suite short: 407 training and 200 test images."""
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))  # decoded cache: temporary
    cfg = make_config("smoke", dataset="tinyimagenet", imbalance="exp", ratio=5, max_per_class=5, epochs=1,
                      batch_size=64, eval_per_class=1, test_per_class=1)
    res = run(cfg, data_root=tiny_root, results=tmp_path / "results", device="cpu", progress=False)
    s = res["summary"]
    assert cfg.resolved_model() == "resnet18"
    assert len(s["train_counts"]) == 200 and s["train_counts"][0] == 5 and s["train_counts"][-1] == 1
    assert sum(s["train_counts"]) == 407
    assert s["test_images"] == 200 and len(s["classes"]) == 200 and s["classes"][0].startswith("n")
    assert len(res["history"]["test_top1"]) == 1 and 0 <= s["test_acc"] <= 1
    assert s["schedule"]["lr_milestones"] == [1]  # 0.75 of one epoch, rounded
    assert (store.run_dir(cfg, tmp_path / "results") / "model.pt").exists()


class _Payload:
    """Unpickling it would create the marker file: code run by reading a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_pickled_payload_is_refused_and_an_edited_result_is_kept(cfg, data_id, tmp_path):
    """Issue 25.1 and 25.5: a checkpoint.pt with a pickle payload is reported, set aside and never run (the run
    restarts); a result.json that parses but fails the store's checks is set aside, not trained over."""
    d = store.run_dir(cfg, tmp_path, data_id)
    d.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    torch.save({"model": {}, "epoch": 1, "payload": _Payload(marker)}, d / "checkpoint.pt")
    edited = {"key": "EDITED", "config": cfg.to_dict(), "data": {"id": data_id}, "summary": {"test_error": 1.0}}
    (d / "result.json").write_text(json.dumps(edited))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(cfg, results=tmp_path, device="cpu", progress=False)
    assert not marker.exists()
    assert any(w.category is DamagedResult and "refused" in str(w.message) for w in caught)
    assert len(list(d.glob("checkpoint.damaged-*.pt"))) == 1
    kept = list(d.glob("result.replaced-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == edited
    assert res["history"]["epoch"] == [1, 2]  # restarted from scratch
    assert res["model_sha256"] == store.sha256_file(d / "model.pt")
    assert store.read_result(cfg, tmp_path, data_id)["summary"] == res["summary"]


def test_a_run_resumed_on_another_machine_lists_both(cfg, data_id, tmp_path, monkeypatch):
    """Numerics depend on the machine: provenance lists each (re)start's machine, in order (device_names), and a
    checkpoint written before segments were recorded says its machine is unrecorded rather than guessing."""
    monkeypatch.setattr(store, "device_name", lambda dev: "machine A")
    assert run(cfg, results=tmp_path, device="cpu", progress=False, stop_after=1) is None
    monkeypatch.setattr(store, "device_name", lambda dev: "machine B")
    p = run(cfg, results=tmp_path, device="cpu", progress=False)["provenance"]
    assert p["device_names"] == ["machine A", "machine B"] and p["device_name"] == "machine B"
    assert [s["from_epoch"] for s in p["segments"]] == [0, 1]
    assert all(s["commit"] == trainer.CODE_COMMIT and s["torch"] == torch.__version__ for s in p["segments"])

    other = tmp_path / "old"
    assert run(cfg, results=other, device="cpu", progress=False, stop_after=1) is None
    path = store.run_dir(cfg, other, data_id) / "checkpoint.pt"
    ck = torch.load(path, weights_only=False)
    del ck["segments"]
    torch.save(ck, path)
    p = run(cfg, results=other, device="cpu", progress=False)["provenance"]
    assert p["device_names"] == [trainer.UNRECORDED, "machine B"]
