"""The data profile (procrustes.training.data_profile) reads what JPEG files are from their headers: the IJG
quality, the chroma subsampling, the bytes an image. Files are written here with PIL at known settings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from procrustes.results import fidelity
from procrustes.training import data_profile as dp
from procrustes.training.store import REPO


def _jpegs(folder, n=3, **save):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        (folder / split / "a").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
            img.save(folder / split / "a" / f"{i:04d}.jpg", **save)
    return folder


@pytest.mark.parametrize("quality", [10, 50, 75, 90, 95])
@pytest.mark.parametrize("subsampling,name", [(0, "4:4:4"), (2, "4:2:0")])
def test_the_quality_and_subsampling_an_encoder_used_are_read_back(tmp_path, quality, subsampling, name):
    p = dp.measure(_jpegs(tmp_path, quality=quality, subsampling=subsampling))
    assert p["ijg_quality"] == {str(quality): 6} and p["chroma_subsampling"] == {name: 6}
    assert p["files"] == 6 and p["by_split"] == {"test": 3, "train": 3} and p["image_size"] == {"32x32": 6}
    assert p["mean_raw_bytes"] == 3072 and 0 < p["mean_bytes"]


def test_tables_no_quality_gives_are_custom_and_a_mixed_folder_is_counted_by_kind(tmp_path):
    _jpegs(tmp_path / "d", n=2, quality=75)
    _jpegs(tmp_path / "d", n=1, qtables=[list(range(1, 65)), list(range(2, 66))])  # overwrites 0000 of each split
    p = dp.measure(tmp_path / "d")
    assert p["ijg_quality"] == {"75": 2, "custom tables": 2}
    assert "2 at IJG quality 75" in dp.describe(p) and "2 with custom tables" in dp.describe(p)


def test_ijg_tables_are_libjpegs():
    assert dp.ijg_table(dp.IJG_LUMA, 50) == dp.IJG_LUMA  # quality 50 is the standard's table itself
    assert set(dp.ijg_table(dp.IJG_LUMA, 100)) == {1}
    assert dp.ijg_quality({0: list(dp.ijg_table(dp.IJG_LUMA, 75))}) == 75  # a grey JPEG has one table
    assert dp.ijg_quality({0: [7] * 64}) is None


def test_a_stored_profile_is_kept_for_the_same_files_and_never_replaced_by_other_files(tmp_path, capsys):
    data = _jpegs(tmp_path / "data", quality=75)
    res = tmp_path / "results"
    assert dp.main([str(data), "--name", "toy", "--results", str(res)]) == 0
    path = dp.profile_path("toy", res)
    first = path.read_bytes()
    assert dp.main([str(data), "--name", "toy", "--results", str(res)]) == 0
    assert path.read_bytes() == first and "unchanged" in capsys.readouterr().out  # provenance and date kept
    _jpegs(tmp_path / "data", quality=90)
    assert dp.main([str(data), "--name", "toy", "--results", str(res)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never replaced" in err and path.read_bytes() == first


def test_a_damaged_profile_is_set_aside_and_reported(tmp_path, capsys):
    data = _jpegs(tmp_path / "data", quality=75)
    res = tmp_path / "results"
    path = dp.profile_path("toy", res)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert "damaged data profile" in fidelity.data_note("toy", results=res)
    assert dp.main([str(data), "--name", "toy", "--results", str(res)]) == 0
    assert "set aside" in capsys.readouterr().err
    kept = [p for p in path.parent.iterdir() if p != path]
    assert len(kept) == 1 and kept[0].read_text() == "{not json"
    assert json.loads(path.read_text())["ijg_quality"] == {"75": 6}


def test_a_folder_without_jpegs_is_one_line_before_anything_is_written(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert dp.main([str(tmp_path / "empty"), "--results", str(tmp_path / "r")]) == 2
    assert dp.main([str(tmp_path / "nowhere"), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no JPEG files" in err[0] and "no folder" in err[1]
    assert not (tmp_path / "r").exists()


def test_the_note_says_what_is_measured_and_what_is_not(tmp_path):
    res = tmp_path / "results"
    assert "not measured here" in fidelity.data_note("toy", results=res)
    dp.main([str(_jpegs(tmp_path / "data", quality=75, subsampling=2)), "--name", "toy", "--results", str(res)])
    note = fidelity.data_note("toy", label="Toy", results=res)
    assert note.startswith("Our Toy: 6 JPEG files, all at IJG quality 75; chroma subsampling: all 4:2:0")
    assert "not measured here" in note


def test_the_committed_profile_describes_the_cifar10_files_at_hand(cifar10_root):
    """The stored profile is of these very files (same sha256 over every file), and every 50th file's header,
    read again, is counted in it. (Re-measuring all 60,000 headers takes minutes on a busy 2-core machine; the
    toy tests above check measure() itself.)"""
    if not (cifar10_root / "train").is_dir():
        pytest.skip("CIFAR-10 here is not the JPEG copy the committed profile measured")
    stored = dp.read_profile("cifar10", REPO / "results")
    assert stored is not None, "results/data_profile/cifar10.json: run make data-profile"
    files = dp.jpeg_files(cifar10_root)
    assert len(files) == stored["files"] and dp.files_sha256(cifar10_root, files) == stored["files_sha256"]
    for f in files[::50]:
        q, s, wh, _ = dp.header(f)
        assert q in stored["ijg_quality"] and s in stored["chroma_subsampling"] and wh in stored["image_size"], f
