"""Untrusted input around training (issue 37): no shell injection through make variables, no foreign checkpoint
resumed, one training of a key at a time, a folder where a run file should be found before training, image folders
with link cycles, atomic tables, pool workers that end with their parent, one key per training, bounded sizes,
and the command line and notebook parameters that name nothing."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from procrustes.training import store
from procrustes.training.config import USED_BY, ConfigError, RunConfig, make_config, parse_assignment
from procrustes.training.store import DamagedResult, StoreError
from procrustes.training.train import run

from .conftest import REPO, cli_env, make_imagefolder


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    """3 classes of 8 training and 4 test images, 8x8 pixels: a run of it takes seconds."""
    return make_imagefolder(tmp_path_factory.mktemp("tiny-tree"), 3, 8, 4, size=8)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCRUSTES_DATA", str(tmp_path / "data"))


def _tiny(seed: int = 0, **over) -> RunConfig:
    return make_config("smoke", dataset="imagefolder", imbalance="none", batch_size=8, epochs=3, eval_per_class=2,
                       test_per_class=4, clean_per_class=4, seed=seed, **over)


# ---------------------------------------------------------------- item 1: make variables never become shell text


def _make(target: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """`make -f Makefile TARGET VAR=...` run from tmp_path/work (so `cd ..` lands in tmp_path), with the repository's
    python for the harvest import."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "shared").mkdir(exist_ok=True)
    (tmp_path / "shared" / "cifar10-jpeg.tar.gz").write_bytes(b"")
    args = ["make", "-s", "-f", str(REPO / "Makefile"), target, f"VENV={Path(sys.executable).parent.parent}",
            f"SHARED={tmp_path / 'shared'}", *(f"{k}={v}" for k, v in variables.items())]
    return subprocess.run(args, cwd=work, env=cli_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_variables_are_data_never_shell_code(tmp_path):
    """A file name with backticks (FILE) or a carry list with one (CARRY) names files; it never runs a command."""
    out = _make("harvest-import", tmp_path, FILE="h`cd ..;touch PWNED`.tar.gz")
    assert out.returncode != 0 and "refused" in out.stderr, out.stderr
    out = _make("gpu-prepare", tmp_path, CARRY="`touch PWNED`")
    assert out.returncode != 0 and "no carry file" in out.stderr, out.stderr
    out = _make("help", tmp_path, PROFILE='cpu";touch PWNED;"', DEVICE="`touch PWNED`", TRAIN="';touch PWNED;'")
    assert out.returncode == 0 and 'PROFILE=cpu";touch PWNED;"' in out.stdout, out.stderr
    assert not list(tmp_path.rglob("PWNED")), "a make variable ran as shell code"
    carry = tmp_path / "work" / "c"
    carry.mkdir()
    for name in ("harvest-carry-a.tar", "harvest carry b.tar"):
        (carry / name).write_bytes(b"x")
    out = _make("gpu-prepare", tmp_path, CARRY="c/harvest-carry-*.tar c/harvest?carry?b.tar")  # globs still work
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in (tmp_path / "work" / "data" / "harvest-carry").iterdir()) == \
        ["harvest carry b.tar", "harvest-carry-a.tar"]
    # the commit the copied tree will record is the one a run here would record (+dirty by the same rule)
    assert (tmp_path / "work" / ".procrustes-commit").read_text().strip() == store.git_commit()


def test_no_recipe_pastes_a_user_variable_into_shell_text():
    """The variables a user sets on the command line reach every recipe as environment variables ("$$PROFILE"):
    a recipe line holding $(PROFILE) would paste the value into the shell's text, where it runs as code."""
    user = ("PROFILE", "DEVICE", "TRAIN", "BENCH_ARGS", "FILE", "CARRY")
    recipes = [line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith("\t")]
    pasted = [line.strip() for line in recipes for v in user if f"$({v})" in line or f"${{{v}}}" in line]
    assert recipes and not pasted, pasted
    exported = " ".join(re.findall(r"^export (.*)$", (REPO / "Makefile").read_text(), flags=re.M)).split()
    assert set(user) <= set(exported)


# ---------------------------------------------------------------- item 2: a checkpoint of another run is not resumed


def test_a_checkpoint_of_another_run_is_set_aside_not_resumed(tiny_tree, data_dir, tmp_path):
    s0, s1 = _tiny(0), _tiny(1)
    assert run(s1, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False, stop_after=1) is None
    d1 = store.run_dirs(s1, tmp_path)[0]
    d0 = d1.parent / d1.name.replace(s1.key(), s0.key())
    d0.mkdir()
    shutil.copy(d1 / "checkpoint.pt", d0 / "checkpoint.pt")  # seed 1's epoch-1 checkpoint in seed 0's folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(s0, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False, stop_after=1) is None
    said = [str(w.message) for w in caught if w.category is DamagedResult]
    assert len(said) == 1 and "another run" in said[0] and "seed" in said[0] and "starts over" in said[0], said
    kept = list(d0.glob("checkpoint.foreign-*.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == (d1 / "checkpoint.pt").read_bytes()
    ck = torch.load(d0 / "checkpoint.pt", weights_only=True)
    assert ck["config"] == s0.to_dict() and ck["epoch"] == 1  # started over: one epoch of its own, not two
    # and a checkpoint of this run on other data (or recording no data) is refused the same way
    ck["data"] = dict(ck["data"], id="f" * 16)
    torch.save(ck, d0 / "checkpoint.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(s0, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False, stop_after=1)
    assert any("other data" in str(w.message) for w in caught)
    # its own checkpoint still resumes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run(s0, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False)
    assert res["history"]["epoch"] == [1, 2, 3] and not [w for w in caught if w.category is DamagedResult]
    assert len(list(d0.glob("checkpoint.foreign-*.pt"))) == 2


# ---------------------------------------------------------------- item 6: a folder where a run file goes


@pytest.mark.parametrize("name", ["checkpoint.pt", "result.json", "model.pt"])
def test_a_folder_where_a_run_file_goes_is_one_error_before_training(tiny_tree, data_dir, tmp_path, name, monkeypatch):
    cfg = _tiny(0)
    from procrustes.training.data import load_benchmark

    d = store.run_dir(cfg, tmp_path, load_benchmark(cfg, tiny_tree).data["id"])
    (d / name).mkdir(parents=True)
    (d / name / "mine.txt").write_text("kept")
    trained = []
    import procrustes.training.train as trainer

    monkeypatch.setattr(trainer, "train_epoch", lambda *a, **k: trained.append(1))
    with pytest.raises(StoreError, match=f"{name} is a folder, not a file"):
        run(cfg, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False)
    assert not trained and (d / name / "mine.txt").read_text() == "kept"
    with pytest.raises(StoreError, match="is a folder"):  # and set_aside never meets a folder with a traceback
        store.set_aside(d / name)


def test_cli_says_so_in_one_line(tiny_tree, tmp_path):
    cfg = _tiny(0)
    args = ["-m", "procrustes", "train", "--profile", "smoke", "--dataset", "imagefolder", "--imbalance", "none",
            "--data-root", str(tiny_tree), "--results", str(tmp_path / "r"), "--device", "cpu",
            *(x for k, v in (("batch_size", 8), ("epochs", 3), ("eval_per_class", 2), ("test_per_class", 4),
                             ("clean_per_class", 4)) for x in ("--set", f"{k}={v}"))]
    env = cli_env(PROCRUSTES_DATA=str(tmp_path / "data"))
    first = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    d = store.run_dirs(cfg, tmp_path / "r")[0]
    (d / "result.json").unlink()
    (d / "result.json").mkdir()
    out = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: ") \
        and "Traceback" not in out.stderr and "result.json is a folder" in out.stderr, out.stderr


# ---------------------------------------------------------------- item 15: one training of a key at a time


def test_a_second_training_of_the_same_run_is_refused_while_the_first_holds_it(tiny_tree, data_dir, tmp_path):
    cfg = _tiny(0)
    from procrustes.training.data import load_benchmark

    d = store.run_dir(cfg, tmp_path, load_benchmark(cfg, tiny_tree).data["id"])
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from procrustes.training import store\n"
                               f"f = store.lock_run(store.Path({str(d)!r}), 'first')\n"
                               "print('locked', flush=True)\n"
                               "time.sleep(120)\n"], env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.RunLocked, match=f"being trained by process {holder.pid}"):
            run(cfg, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False)
        assert not (d / "checkpoint.pt").exists() and not (d / "result.json").exists()
    finally:
        holder.kill()
        holder.wait()
    res = run(cfg, data_root=tiny_tree, results=tmp_path, device="cpu", progress=False)  # the lock died with it
    assert res["history"]["epoch"] == [1, 2, 3] and not list(d.glob("result.*-*.json"))


def test_two_identical_train_commands_at_once_train_once(tiny_tree, tmp_path):
    args = [sys.executable, "-m", "procrustes", "train", "--profile", "smoke", "--dataset", "imagefolder", "--imbalance",
            "none", "--data-root", str(tiny_tree), "--results", str(tmp_path / "r"), "--device", "cpu",
            "--set", "batch_size=8", "--set", "epochs=3", "--set", "eval_per_class=2", "--set", "test_per_class=4",
            "--set", "clean_per_class=4"]
    env = cli_env(PROCRUSTES_DATA=str(tmp_path / "data"))
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) + (p.returncode,) for p in procs]
    d = store.run_dirs(_tiny(0), tmp_path / "r")[0]
    assert not list(d.glob("result.*-*.json")) and (d / "result.json").exists(), sorted(p.name for p in d.iterdir())
    for so, se, rc in outs:  # each either trained it, read back what the other stored, or was refused in one line
        assert rc == 0 or (rc == 1 and "is being trained by process" in se.strip().splitlines()[-1]), se


# ---------------------------------------------------------------- item 4: a link cycle in an image folder


def test_a_link_cycle_in_an_image_folder_is_read_once(tmp_path, data_dir):
    from procrustes.training.data import load_benchmark

    root = make_imagefolder(tmp_path / "tree", 3, 6, 2, size=8)
    os.symlink(".", root / "train" / "c000" / "loop")
    os.symlink("../c001", root / "train" / "c000" / "sub")  # a link to a folder elsewhere is followed (once)
    b = load_benchmark(make_config("smoke", dataset="imagefolder", imbalance="none"), root)
    assert b.counts == [12, 6, 6]


# ---------------------------------------------------------------- item 5: tables are written atomically


KILL_WHEN_CHANGED = """
import os, signal, sys, threading, time
import pandas as pd
from procrustes.results.tables import write_table
out, csv = sys.argv[1], os.path.join(sys.argv[1], "t.csv")
first = os.stat(csv)
def watch():
    while True:
        try:
            st = os.stat(csv)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (first.st_ino, first.st_size, first.st_mtime_ns):
                os.kill(os.getpid(), signal.SIGKILL)
        except FileNotFoundError:
            os.kill(os.getpid(), signal.SIGKILL)
threading.Thread(target=watch, daemon=True).start()
df = pd.DataFrame({"a": range(400000), "b": [0.5] * 400000})
write_table(df, "t", out)
time.sleep(5)
"""


def test_a_kill_while_a_table_is_written_leaves_the_old_table_or_the_new_one(tmp_path):
    import pandas as pd

    from procrustes.results.tables import write_table

    old = pd.DataFrame({"a": range(1000), "b": [0.25] * 1000})
    write_table(old, "t", tmp_path)
    before = (tmp_path / "t.csv").read_text()
    proc = subprocess.run([sys.executable, "-c", KILL_WHEN_CHANGED, str(tmp_path)], env=cli_env(), timeout=300)
    assert proc.returncode == -signal.SIGKILL
    after = (tmp_path / "t.csv").read_text()
    new = pd.DataFrame({"a": range(400000), "b": [0.5] * 400000}).to_csv(index=False, float_format="%.4g")
    assert after in (before, new), f"a half-written table: {len(after)} characters"


# ---------------------------------------------------------------- item 8: pool workers end with their parent


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _pool_workers(pid: int) -> list[int]:
    found = []
    for c in _children(pid):
        try:
            cmd = (Path("/proc") / str(c) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            found.append(c)
    return found


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_end_with_their_parent(tmp_path, sig, cifar10_root):
    """`reproduce --workers 2` killed (SIGKILL, or SIGTERM) while both pool workers train: they end within a few
    seconds, where they went on training and writing the store for nobody. (A worker killed during its own
    start-up, importing torch, ends when that is done, before its first step.)"""
    parent = subprocess.Popen([sys.executable, "-m", "procrustes", "reproduce", "--profile", "smoke", "--only", "04",
                               "--workers", "2", "--device", "cpu", "--results", str(tmp_path)], cwd=REPO,
                              env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.time() + 600
        while time.time() < deadline and parent.poll() is None:
            workers = _pool_workers(parent.pid)
            training = {int(p.read_text() or 0) for p in tmp_path.glob("smoke/*/.train.lock")}
            if len(workers) == 2 and set(workers) <= training:
                break  # both hold their run's lock: past their start-up, in the trainer
            time.sleep(0.2)
        assert len(workers) == 2 and not list(tmp_path.glob("smoke/*/result.json")), "the pool did not start training"
        parent.send_signal(sig)
        parent.wait(timeout=60)
        t0 = time.time()
        while any(_alive(w) for w in workers) and time.time() - t0 < 20:
            time.sleep(0.05)
        left = [w for w in workers if _alive(w)]
        assert not left, f"pool workers {left} outlived their parent by {time.time() - t0:.0f} s"
        assert time.time() - t0 < 5
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# ---------------------------------------------------------------- item 14: one training, one key


def test_fields_a_run_does_not_use_and_spelled_out_defaults_keep_the_key():
    smoke = make_config("smoke")
    for over in ({"mfw_prob": 0.5}, {"ldam_scale": 10}, {"drw_epoch": 2}, {"warmup_epochs": 0.05},
                 {"lr_milestones": (2, 2)}, {"lr_factors": (0.01, 1e-4)}, {"model": "resnet32"}, {"max_per_class": 100},
                 {"mfw_gamma": 3.0, "remix_tau": 0.1, "manifold_points": ("stem",), "focal_gamma": 2.0}):
        assert make_config("smoke", **over).key() == smoke.key(), over
    assert make_config("paper", max_per_class=5000).key() == make_config("paper").key()
    mfw = make_config("smoke", method="mfw")
    assert make_config("smoke", method="mfw", mfw_prob=0.5).key() != mfw.key()  # used: another training
    assert make_config("smoke", method="mfw", mfw_gamma=3.0).key() == mfw.key()  # median rule: gamma unused
    assert make_config("smoke", method="mfw", mfw_select="power", mfw_gamma=3.0).key() != \
        make_config("smoke", method="mfw", mfw_select="power").key()
    assert make_config("smoke", method="ldam-drw", drw_epoch=1).key() != make_config("smoke", method="ldam-drw").key()
    with pytest.raises(ConfigError, match="mixing point"):  # a bad value of an unused field is still an error
        make_config("smoke", mfw_point="nowhere")


def test_the_paper_keys_stay_what_they_are(monkeypatch):
    """Seed 0 of the 8 paper-profile runs a CPU trains (the MFW rows' choices read from the committed results)."""
    from procrustes.results.experiments import all_runs

    monkeypatch.setenv("PROCRUSTES_RESULTS", str(REPO / "results"))
    keys = {c.key() for c in all_runs("paper", results=REPO / "results")}
    assert {"f98118a2028e", "d8ef151aa3d4", "9a068d51675a", "5d3732ad33fa", "b02762414b57", "356cba33e6b4",
            "eec55bbd2fe7", "9121c67e5a9e"} <= keys


def test_every_committed_config_is_in_canonical_form():
    from procrustes.training.config import canonical_config

    paths = sorted((REPO / "results").glob("*/*/config.json"))
    assert paths
    for p in paths:
        cfg = RunConfig.from_dict(json.loads(p.read_text()))
        assert canonical_config(cfg) == cfg and p.parent.name.startswith(cfg.key()), p


ALTERNATIVES = {"cb_beta": 0.99, "focal_gamma": 2.0, "ldam_max_margin": 0.3, "ldam_scale": 10.0, "la_tau": 0.5,
                "drw_epoch": 1, "mfw_point": "stage2", "mfw_random_points": ("stem",), "mfw_select": "power",
                "mfw_prob": 0.5, "mfw_gamma": 2.0, "mfw_lam": "beta", "mfw_lam_min": 0.2, "mfw_alpha": 0.3,
                "mfw_active": "until-drw", "mixup_alpha": 0.4, "manifold_points": ("stem",), "remix_kappa": 2.0,
                "remix_tau": 0.3, "warmup_per": "epoch"}


def _weights(cfg: RunConfig) -> dict:
    """The weights after training cfg (all its epochs) on 19 random 8x8 images of 3 classes, in the trainer's
    own step and epoch loop."""
    from types import SimpleNamespace

    from procrustes.method.counts import major_classes
    from procrustes.method.losses import Criterion
    from procrustes.training.data import SPECS
    from procrustes.training.train import TrainStep, make_model, make_optimizer, train_epoch

    counts = [10, 6, 3]
    g = np.random.default_rng(0)
    data = SimpleNamespace(train_x=torch.from_numpy(g.integers(0, 256, (19, 8, 8, 3), dtype=np.uint8)),
                           train_y=torch.from_numpy(np.repeat(np.arange(3), counts)))
    crit = Criterion(cfg.loss, counts, focal_gamma=cfg.focal_gamma, ldam_max_margin=cfg.ldam_max_margin,
                     ldam_scale=cfg.ldam_scale, la_tau=cfg.la_tau)
    torch.manual_seed(cfg.seed)
    model = make_model(cfg, 3, crit.uses_cosine, torch.device("cpu"))
    gen, rng = torch.Generator().manual_seed(cfg.seed), np.random.default_rng(cfg.seed)
    step = TrainStep(cfg, model, make_optimizer(model, cfg, torch.device("cpu")), crit, counts, SPECS["cifar10"], False,
                     gen, rng, torch.from_numpy(major_classes(counts)))
    for epoch in range(cfg.epochs):
        train_epoch(step, cfg, data, epoch, SimpleNamespace(update=lambda n: None))
    step.close()
    return {k: v.clone() for k, v in model.state_dict().items()}


BASES = [{"method": m} for m in ("erm", "focal", "cb", "drw", "ldam-drw", "logit-adjust", "mfw", "mixup",
                                 "manifold-mixup", "remix", "mfw+ldam-drw")] + [
    {"method": "mfw", "mfw_point": "random", "mfw_lam": "beta", "mfw_select": "power", "mfw_active": "until-drw"},
    {"method": "erm", "sampler": "drs"}, {"method": "erm", "warmup_epochs": 0.0}]


@pytest.mark.parametrize("base", BASES, ids=lambda b: "-".join(str(v) for v in b.values()))
def test_fields_canonical_config_resets_never_change_the_training(base):
    """The ground truth behind USED_BY: a run trained with every field it does not use changed has exactly the
    weights of the run with them at their defaults (4 epochs, DRW from epoch 3); and changing a field it uses
    changes them (the comparison can fail)."""
    cfg = make_config("smoke", epochs=4, batch_size=8, **base)
    unused = {f: ALTERNATIVES[f] for f, used in USED_BY.items() if not used(cfg)}
    assert unused
    ref, other = _weights(cfg), _weights(cfg.replace(**unused))
    assert all(torch.equal(ref[k], other[k]) for k in ref), f"{base}: a field reset as unused changed the training"
    used = next(f for f, u in USED_BY.items() if u(cfg)) if any(u(cfg) for u in USED_BY.values()) else None
    changed = _weights(cfg.replace(**{used: ALTERNATIVES[used]}) if used else cfg.replace(weight_decay=0.1))
    assert not all(torch.equal(ref[k], changed[k]) for k in ref)


# ---------------------------------------------------------------- item 16: bounded epochs and batch size


@pytest.mark.parametrize("over, match", [({"epochs": 1e23}, "epochs"), ({"epochs": 10**23}, "epochs"),
                                         ({"epochs": 2.0}, "epochs"), ({"epochs": 10_001}, "epochs"),
                                         ({"batch_size": 1e23}, "batch_size"), ({"batch_size": 65_537}, "batch_size"),
                                         ({"batch_size": 64.0}, "batch_size")])
def test_epochs_and_batch_size_are_bounded_integers(over, match):
    with pytest.raises(ConfigError, match=f"impossible {match}"):
        make_config("smoke", **over)


def test_the_bounds_themselves_are_allowed():
    from procrustes.training.config import MAX_BATCH_SIZE, MAX_EPOCHS

    assert make_config("smoke", epochs=MAX_EPOCHS, batch_size=MAX_BATCH_SIZE).epochs == MAX_EPOCHS


@pytest.mark.parametrize("setting", ["epochs=1e23", "epochs=100000000000000000000000", "batch_size=1e23",
                                     "batch_size=100000"])
def test_cli_refuses_huge_sizes_in_one_line(setting, tmp_path):
    out = subprocess.run([sys.executable, "-m", "procrustes", "train", "--profile", "smoke", "--set", setting,
                          "--results", str(tmp_path)], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert setting.split("=")[0] in out.stderr and not list(tmp_path.iterdir())
    with pytest.raises(ConfigError):
        make_config("smoke", **dict([parse_assignment(setting)]))


# ---------------------------------------------------------------- items 17 and 18: a selection of nothing


def test_reproduce_only_a_prefix_that_names_no_notebook_is_an_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "procrustes", "reproduce", "--only", "zz", "--list"], cwd=REPO,
                         env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "'zz' names no notebook" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, "-m", "procrustes", "reproduce", "--only", "02", "zz", "--list"], cwd=REPO,
                         env=cli_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout


def test_a_notebook_with_no_seeds_is_an_error_not_empty_tables():
    from procrustes.results import notebook

    with pytest.raises(notebook.ParameterError, match=r"seeds=\[\]"):
        notebook.settings({"seeds": []})
    with pytest.raises(notebook.ParameterError, match=r"methods=\[\]"):
        notebook.settings({"methods": []}, methods=["erm"])
    assert notebook.settings({"seeds": [0]}).seeds == (0,)


# ---------------------------------------------------------------- item 19: which figure folders are committed


def test_readme_and_gitignore_agree_on_the_paper_figures():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO).returncode == 0

    assert not ignored("figures/paper/cifar_table.png") and not ignored("figures/paper/claims.md")
    assert ignored("figures/smoke/cifar_table.png") and ignored("figures/custom/seeds-0/cifar_table.png")
    assert ignored("figures/paper/custom/seeds-0/cifar_table.png")
    assert ignored("results/cpu/abc-def/.train.lock")
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`figures/paper/` is committed" in readme
