"""Corrections of stored results (procrustes.training.corrections): applied by every reader of the store,
never written into a result file; an entry holds only for the result it was written for; the committed file is
valid and corrects what it says it corrects."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from procrustes.training import corrections, store
from procrustes.training.config import make_config

from .test_tables_plots import fake_result

REPO = Path(__file__).resolve().parents[1]


def _stored(root: Path, cfg, **prov) -> Path:
    r = fake_result(cfg, 40.0)
    r["provenance"].update(compiled=True, compile_mode="default", finished_utc="2026-12-06T07:20:00+00:00", **prov)
    d = root / cfg.profile / r["key"]
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(r))
    return d / "result.json"


def _corrections(root: Path, cfg, value, finished="2026-12-06T07:20:00+00:00") -> None:
    (root / corrections.FILE).write_text(json.dumps({"runs": {cfg.key(): {
        "label": "x", "finished_utc": finished,
        "fields": {"provenance.compiled": {"value": value, "reason": "hit the recompile limit", "evidence": "log"}}}}}))


def test_the_corrections_file_is_applied_when_a_result_is_read(tmp_path):
    from procrustes.results.selection import code_path

    cfg = make_config("smoke", method="mfw", seed=0)
    path = _stored(tmp_path, cfg)
    before = path.read_bytes()
    assert store.read_result(cfg, tmp_path)["provenance"]["compiled"] is True  # no corrections file: as stored
    _corrections(tmp_path, cfg, False)
    r = store.read_result(cfg, tmp_path)
    assert r["provenance"]["compiled"] is False and code_path(r) == "eager"
    assert r["corrections"] == [{"field": "provenance.compiled", "was": True, "value": False,
                                 "reason": "hit the recompile limit", "evidence": "log"}]
    assert path.read_bytes() == before  # the result file keeps its bytes
    _corrections(tmp_path, cfg, corrections.UNKNOWN)
    assert code_path(store.read_result(cfg, tmp_path)) == "unknown"
    listed = corrections.listed(tmp_path, "smoke")
    assert [(c["key"], c["field"], c["value"]) for c in listed] == [(cfg.key(), "provenance.compiled", "unknown")]
    assert corrections.listed(tmp_path, "cpu") == []


def test_a_correction_holds_only_for_the_result_it_was_written_for(tmp_path):
    cfg = make_config("smoke", method="mfw", seed=0)
    _stored(tmp_path, cfg)
    _corrections(tmp_path, cfg, False, finished="2026-12-01T00:00:00+00:00")  # another (earlier) training of cfg
    r = store.read_result(cfg, tmp_path)
    assert r["provenance"]["compiled"] is True and "corrections" not in r


def test_a_bad_corrections_file_is_one_clear_error(tmp_path):
    cfg = make_config("smoke", method="mfw", seed=0)
    _stored(tmp_path, cfg)
    (tmp_path / corrections.FILE).write_text("{not json")
    with pytest.raises(corrections.CorrectionsError, match="corrections.json: not a readable JSON file"):
        store.read_result(cfg, tmp_path)
    (tmp_path / corrections.FILE).write_text(json.dumps({"runs": {cfg.key(): {"finished_utc": "x", "fields": {
        "provenance.compiled": {"value": False}}}}}))
    with pytest.raises(corrections.CorrectionsError, match="needs 'value' and 'reason'"):
        store.read_result(cfg, tmp_path)


def test_the_committed_corrections_apply_to_the_committed_runs():
    """Every entry of results/corrections.json names a stored run and its finished_utc; the runs known to have
    fallen back to eager read eager, none of the runs whose code path is corrected reads compiled any more, and a
    corrected commit field no longer reads '+dirty' where the correction removed it."""
    from procrustes.training.config import RunConfig

    runs = corrections.load(REPO / "results")
    assert {"147c5d0fb5c0", "019aff05719d"} <= set(runs)
    for key, entry in runs.items():
        [folder] = list((REPO / "results").glob(f"*/{key}-*/result.json"))
        stored = json.loads(folder.read_text())
        assert stored["provenance"]["finished_utc"] == entry["finished_utc"], key
        cfg = RunConfig.from_dict(stored["config"])
        r = store.read_result(cfg, REPO / "results")
        assert {c["field"] for c in r["corrections"]} == set(entry["fields"]), key
        if "provenance.compiled" in entry["fields"]:
            assert r["provenance"]["compiled"] in (False, corrections.UNKNOWN), key
        for name in entry["fields"]:
            leaf = name.split(".")[-1]
            assert r["provenance"][leaf] == entry["fields"][name]["value"] != stored["provenance"][leaf], (key, name)
    for key in ("147c5d0fb5c0", "019aff05719d"):
        [folder] = list((REPO / "results" / "cpu").glob(f"{key}-*"))
        cfg = RunConfig.from_dict(json.loads((folder / "result.json").read_text())["config"])
        assert corrections.code_path(store.read_result(cfg, REPO / "results")) == "eager"
