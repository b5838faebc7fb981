"""park: the checkpoints of unfinished runs are staged for a commit (git add -f past .gitignore), finished runs'
and anything that is not a plain checkpoint file are left alone."""
from __future__ import annotations

import subprocess

from procrustes.tooling.park import park, unfinished


def _git(repo, *args) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def test_park_stages_unfinished_checkpoints_only(tmp_path):
    repo = tmp_path / "repo"
    base = repo / "results" / "paper"
    for name, finished in (("aaa-1", False), ("bbb-2", True)):
        d = base / name
        d.mkdir(parents=True)
        (d / "checkpoint.pt").write_bytes(b"ck")
        (d / "config.json").write_text("{}")
        if finished:
            (d / "result.json").write_text("{}")
    (base / "ccc-3").mkdir()
    (base / "ccc-3" / "checkpoint.pt").symlink_to(base / "aaa-1" / "checkpoint.pt")  # not a plain file: ignored
    _git(repo.parent, "init", "-q", str(repo))
    (repo / ".gitignore").write_text("results/**/checkpoint.pt\n")
    staged = park("paper", repo / "results", repo)
    assert staged == [base / "aaa-1" / "checkpoint.pt"]
    assert _git(repo, "diff", "--cached", "--name-only").split() == ["results/paper/aaa-1/checkpoint.pt",
                                                                     "results/paper/aaa-1/config.json"]
    assert unfinished("cpu", repo / "results") == []
