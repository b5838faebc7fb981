"""The harvest import with untrusted archives (issue 37): a result must agree with itself (ranges, summary against
history, per-class against overall), be valid JSON, hold plain text, carry the key make_config gives; archive
headers are bounded before tarfile reads them; a killed import leaves nothing behind for good. S: a result the
trainer wrote (tiny ImageFolder runs trained here, and the committed CPU results), edited as each case says."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from procrustes.tooling import harvest
from procrustes.tooling.result_check import expected_key
from procrustes.training.config import make_config
from procrustes.training.train import run

from .conftest import REPO, cli_env, make_imagefolder

COMMITTED = sorted((REPO / "results").glob("*/*/result.json"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict]:
    """Results the trainer wrote: "full" (a validation split, the final test set every 2 epochs and at the last,
    the curve on the final test set: every optional part of a result, best-on-test over epochs 2 and 3) and
    "no-curve" (eval_per_class 0: no per-epoch test curve)."""
    tmp = tmp_path_factory.mktemp("trained")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROCRUSTES_DATA", str(tmp / "data"))
    try:
        tree = make_imagefolder(tmp / "tree", 3, 8, 4, size=8)
        base = dict(dataset="imagefolder", batch_size=8, epochs=3, clean_per_class=4, test_per_class=4)
        cfgs = {"full": make_config("smoke", imbalance="exp", ratio=2, max_per_class=6, val_per_class=2, eval_per_class=4,
                                    full_test_every=2, full_test_final_lr=True, **base),
                "no-curve": make_config("smoke", imbalance="none", eval_per_class=0, **base)}
        return {k: run(c, data_root=tree, results=tmp / "store", device="cpu", progress=False) for k, c in cfgs.items()}
    finally:
        mp.undo()


def _archive(path: Path, results: list[dict], text: dict[int, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for i, res in enumerate(results):
            data = ((text or {}).get(i) or json.dumps(res, indent=1)).encode()
            info = tarfile.TarInfo(f"{res['config']['profile']}/{res['key']}/result.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _import(tmp_path: Path, results: list[dict], capsys, text: dict[int, str] | None = None) -> tuple[int, str]:
    archive = _archive(tmp_path / f"h{len(list(tmp_path.glob('h*.tar.gz')))}.tar.gz", results, text)
    rc = harvest.main(["import", str(archive), "--results", str(tmp_path / "store")])
    return rc, capsys.readouterr().err


def _store_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_every_committed_result_passes_the_import_checks():
    """The checks are what the writer guarantees: every result it stored passes them (the screening runs of the
    selection have no per-epoch test curve, eval_per_class 0; their import was refused)."""
    assert len(COMMITTED) >= 70
    for p in COMMITTED:
        harvest.check_result(harvest.parse_json(p.read_bytes(), str(p)), p.parent.parent.name, p.parent.name)


def test_results_the_trainer_writes_import(trained, tmp_path, capsys):
    rc, err = _import(tmp_path, list(trained.values()), capsys)
    assert rc == 0, err
    assert len(_store_files(tmp_path / "store")) == 2
    assert trained["no-curve"]["history"]["test_top1"][:-1] == [None, None]
    full = trained["full"]
    assert full["history"]["full_test_top1"][0] is None and None not in full["history"]["full_test_top1"][1:]
    assert full["summary"]["best_test_epoch"] in (2, 3) and full["summary"]["full_test_epochs"] == 2
    assert full["summary"]["val_images"] == 6 and full["summary"]["best_epoch_test_acc"] == max(full["history"]["test_top1"])


def _set(path: str, value):
    """An edit of a result: put value at the dotted path (list indices as numbers)."""
    def edit(r: dict) -> None:
        *head, last = path.split(".")
        o = r
        for k in head:
            o = o[int(k)] if isinstance(o, list) else o[k]
        o[int(last) if isinstance(o, list) else last] = value
    return edit


def _all_per_class_one(r: dict) -> None:
    s = r["summary"]
    s["test_acc_per_class"] = [1.0] * len(s["test_acc_per_class"])
    s["group_test_acc"] = {g: 1.0 for g in s["group_test_acc"]}


CASES = {  # edit of S -> the field the refusal must name
    "per-class and group accuracies 1.0, overall unchanged": ("full", _all_per_class_one, "summary.test_acc"),
    "group accuracy not its classes' mean": ("full", lambda r: r["summary"]["group_test_acc"].update(
        {g: 0.0 for g in r["summary"]["group_test_acc"]}), "summary.group_test_acc"),
    "clean training accuracy 7.0": ("full", _set("history.train_acc_clean.0.0", 7.0), "history.train_acc_clean"),
    "training accuracy -3.0": ("full", _set("history.train_acc.1.2", -3.0), "history.train_acc"),
    "best_epoch_test_acc not the history's best": ("full", _set("summary.best_epoch_test_acc", 0.99),
                                                   "summary.best_epoch_test_acc"),
    "best_epoch_test_acc where there is no best": ("no-curve", _set("summary.best_epoch_test_acc", 0.99),
                                                   "summary.best_epoch_test_acc"),
    "best-on-test not the full-test maximum": ("full", _set("summary.best_test_acc", 0.999), "summary.best_test_acc"),
    "best-on-test epoch": ("full", _set("summary.best_test_epoch", 7), "summary.best_test_epoch"),
    "full-test epochs": ("full", _set("summary.full_test_epochs", 1), "summary.full_test_epochs"),
    "best-on-test where no full test ran": ("no-curve", _set("summary.best_test_acc", 0.5), "summary.best_test_acc"),
    "a full-test accuracy out of range": ("full", _set("history.full_test_top1.1", 1.5), "history.full_test_top1"),
    "a full-test accuracy where none ran": ("full", _set("history.full_test_top1.0", 0.5), "history.full_test_top1"),
    "validation error -40": ("full", _set("summary.val_error", -40.0), "summary.val_error"),
    "validation per-class 5.0": ("full", _set("summary.val_acc_per_class.0", 5.0), "summary.val_acc_per_class"),
    "validation correct images": ("full", _set("summary.val_correct", "111111"), "summary.val_correct"),
    "test accuracy not the last epoch's": ("full", _set("history.test_top1.2", 0.0), "summary.test_acc"),
    "a curve missing where the run has one": ("full", _set("history.test_acc.0", None), "history.test_acc"),
    "a learning rate off the schedule": ("full", _set("history.lr.0", 0.2), "history.lr"),
    "a schedule not its config's": ("full", _set("summary.schedule.drw_epoch", 1), "summary.schedule"),
    "top-5 error of no whole image count": ("full", _set("summary.top5_error", 0.123), "summary.top5_error"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_result_that_disagrees_with_itself_is_refused_in_one_line(trained, tmp_path, capsys, case):
    which, edit, field = CASES[case]
    res = json.loads(json.dumps(trained[which]))
    edit(res)
    rc, err = _import(tmp_path, [trained["no-curve" if which == "full" else "full"], res], capsys)
    assert rc == 1 and field in err and len(err.strip().splitlines()) == 1, err
    assert _store_files(tmp_path / "store") == []


def test_a_validation_split_claimed_after_the_fact_is_refused(trained, tmp_path, capsys):
    """S without a validation split, given val_per_class 20 (key recomputed) and validation numbers."""
    res = json.loads(json.dumps(trained["no-curve"]))
    res["config"]["val_per_class"] = 20
    res["summary"].update(val_error=-40.0, val_acc_per_class=[5.0] * 3)
    res["key"] = expected_key(res)
    rc, err = _import(tmp_path, [res], capsys)
    assert rc == 1 and "history.val_acc" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("spell", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_and_are_refused(trained, tmp_path, capsys, spell):
    res = json.loads(json.dumps(trained["full"]))
    text = json.dumps(res).replace('"eval_batch": 128', f'"eval_batch": 128, "eval_s": {spell}')
    assert spell in text
    rc, err = _import(tmp_path, [res], capsys, text={0: text})
    assert rc == 1 and "not a JSON number" in err and len(err.strip().splitlines()) == 1, err
    text = json.dumps(res).replace('"lr_factors": null', f'"lr_factors": [{spell}, 0.5]')
    assert rc == 1 and _import(tmp_path, [res], capsys, text={0: text})[0] == 1


@pytest.mark.parametrize("where, value", [("provenance.git_commit", "\x1b[31m" + "a" * 40),
                                          ("provenance.device_name", "cpu\u202egnp.live"),
                                          ("summary.classes.0", "<script>alert(1)</script>"),
                                          ("summary.classes.1", "b\u202ed"),
                                          ("data.root", "x\ny")])
def test_strings_that_would_reach_tables_must_be_plain_text(trained, tmp_path, capsys, where, value):
    res = json.loads(json.dumps(trained["full"]))
    _set(where, value)(res)
    rc, err = _import(tmp_path, [res], capsys)
    assert rc == 1 and where.split(".0")[0].split(".1")[0] in err and len(err.strip().splitlines()) == 1, err
    assert "\x1b" not in err and "\u202e" not in err  # shown escaped, never sent to the terminal raw


@pytest.mark.parametrize("edit", ["method ERM", "explicit null", "unused field", "float ratio"])
def test_a_config_make_config_never_gives_is_refused(trained, tmp_path, capsys, edit):
    """Such a result would be stored under a key no run is looked up under (it would still count as missing), or
    be skipped as damaged when read."""
    res = json.loads(json.dumps(trained["no-curve"]))
    if edit == "method ERM":
        res["config"]["method"] = "ERM"
    elif edit == "explicit null":  # a field the key leaves out at this value, spelled out
        res["config"]["val_per_class"] = None
    elif edit == "unused field":
        res["config"]["ldam_scale"] = 10.0
    else:
        res["config"]["ratio"] = float(res["config"]["ratio"])
    res["key"] = expected_key(res)
    rc, err = _import(tmp_path, [res], capsys)
    assert rc == 1 and "the form make_config gives" in err and len(err.strip().splitlines()) == 1, err


def test_a_run_without_a_per_epoch_curve_imports_its_own_result(trained, tmp_path, capsys):
    """`--set eval_per_class=0` is documented: its result (no curve before the last epoch) imports."""
    rc, err = _import(tmp_path, [trained["no-curve"]], capsys)
    assert rc == 0, err


def test_a_killed_imports_temporary_files_are_removed_by_the_next(trained, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    res = trained["full"]
    folder = tmp_path / "store" / "smoke" / res["key"]
    folder.mkdir(parents=True)
    left = [folder / f".result.json.{dead.pid}.tmp", tmp_path / "store" / "smoke" / "other" / f".result.json.{dead.pid}.tmp"]
    left[1].parent.mkdir()
    for p in left:
        p.write_text("{half")
    mine = folder / ".result.json.1.tmp"  # a live process's (pid 1): left alone
    mine.write_text("{")
    rc, err = _import(tmp_path, [res], capsys)
    assert rc == 0, err
    assert not any(p.exists() for p in left) and mine.exists()
    assert (folder / "result.json").exists()


# ---------------------------------------------------------------- item 7: tar headers bounded before they are read


def _block(name: bytes, size: int, kind: bytes) -> bytes:
    h = bytearray(512)
    h[:len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:265] = b"ustar\x0000"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def write_bomb(path: Path, kind: bytes, size: int) -> Path:
    """A tar.gz whose first member is announced by a PAX header ('x') or a GNU long name ('L') of `size` bytes,
    streamed through gzip (the test never holds it): a few MB on disk, `size` bytes once decompressed."""
    with gzip.open(path, "wb", compresslevel=6) as f:
        f.write(_block(b"././@PaxHeader" if kind == b"x" else b"././@LongLink", size, kind))
        record = b"%d path=" % size
        f.write(record)
        chunk, left = b"a" * (1 << 20), size - len(record)
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)
        f.write(b"\0" * (-size % 512))
        body = b"{}"
        f.write(_block(b"smoke/x/result.json", len(body), b"0") + body + b"\0" * 510 + b"\0" * 1024)
    return path


MEASURE = """
import resource, sys
from procrustes.tooling import harvest
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rc = harvest.main(["import", sys.argv[1], "--results", sys.argv[2]])
print(rc, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_a_huge_extended_header_is_refused_in_bounded_memory(tmp_path, kind):
    """A PAX header or GNU long name of 200 MB (under 1 MB compressed): refused in one line from its 512-byte
    header, with the import's peak memory under 50 MB above what it was before."""
    bomb = write_bomb(tmp_path / "bomb.tar.gz", kind, 200 << 20)
    assert bomb.stat().st_size < 2 << 20
    out = subprocess.run([sys.executable, "-c", MEASURE, str(bomb), str(tmp_path / "store")], env=cli_env(),
                         capture_output=True, text=True, timeout=600)
    rc, grown_kb = map(int, out.stdout.split())
    assert rc == 1 and "refused before it is read" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert grown_kb < 50 << 10, f"peak memory grew by {grown_kb} kB while refusing"
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("kind, what", [(b"2", "not a plain file"), (b"S", "not a plain file"), (b"g", "PAX global")])
def test_links_sparse_files_and_global_headers_are_refused_from_their_header(tmp_path, capsys, kind, what):
    path = tmp_path / "a.tar.gz"
    with gzip.open(path, "wb") as f:
        f.write(_block(b"smoke/k/result.json", 0, kind) + b"\0" * 1024)
    rc = harvest.main(["import", str(path), "--results", str(tmp_path / "store")])
    err = capsys.readouterr().err
    assert rc == 1 and what in err and len(err.strip().splitlines()) == 1, err
