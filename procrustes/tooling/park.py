"""Carry unfinished runs to the next machine: `python -m procrustes.tooling.park --profile paper`.

A `paper` run on a CPU takes longer than a working session, and a session's machine is gone when it ends (the
next one may be another CPU). Checkpoints are git-ignored (they change every epoch); this stages the checkpoint
and config of every unfinished run of a profile with `git add -f`, so that the next commit carries them and the
next machine's `reproduce` resumes them (the trainer checks that a checkpoint belongs to its run first). When the
run finishes, the trainer deletes its checkpoint, and the commit of its result removes it from git too.

Only paths found under results/<profile>/ are passed to git, as arguments (never through a shell)."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from ..training.config import PROFILES
from ..training.store import REPO, results_dir


def unfinished(profile: str, root: Path | None = None) -> list[Path]:
    """The checkpoint.pt of every run folder of `profile` that has no result.json yet (plain files only)."""
    base = Path(root or results_dir()) / profile
    if not base.is_dir():
        return []
    return sorted(d / "checkpoint.pt" for d in base.iterdir()
                  if d.is_dir() and not d.is_symlink() and (d / "checkpoint.pt").is_file()
                  and not (d / "checkpoint.pt").is_symlink() and not (d / "result.json").exists())


def park(profile: str, root: Path | None = None, repo: Path = REPO) -> list[Path]:
    """git add -f the unfinished runs' checkpoints and configs; returns the checkpoints staged."""
    found = unfinished(profile, root)
    paths = [p for ck in found for p in (ck, ck.parent / "config.json") if p.exists()]
    if paths:
        subprocess.run(["git", "add", "-f", "--", *map(str, paths)], cwd=repo, check=True)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m procrustes.tooling.park", allow_abbrev=False,
                                 description="Stage the checkpoints of unfinished runs (git add -f) so that a commit "
                                             "carries them to the next machine, which resumes them.")
    ap.add_argument("--profile", default="paper", choices=sorted(PROFILES), help="whose runs (default: paper)")
    args = ap.parse_args(argv)
    try:
        staged = park(args.profile)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"error: cannot stage the checkpoints: {e}", file=sys.stderr)
        return 1
    if not staged:
        print(f"park: no unfinished {args.profile} run")
        return 0
    import torch

    for ck in staged:
        try:
            epoch = torch.load(ck, map_location="cpu", weights_only=True)["epoch"]
        except Exception:  # noqa: BLE001 (a damaged file: the trainer sets it aside when it resumes)
            epoch = "?"
        print(f"park: staged {ck.relative_to(REPO) if ck.is_relative_to(REPO) else ck} (epoch {epoch})")
    print("park: now commit them (git commit), e.g. 'Unfinished paper runs, checkpoints at epoch N'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
