"""The README's results block: one figure and the short table of the claims' verdicts, written between two markers
by `make figures` (`python -m procrustes.results.readme`) from `figures/claims.json`, which the notebooks write. So
the first screen of the README shows the answer and cannot go stale: tests/test_docs.py fails when the block
differs from what this module writes from the committed claims.json.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from . import claims

REPO = Path(__file__).resolve().parents[2]
BEGIN = "<!-- results:begin (written by `make figures` from figures/claims.json; do not edit by hand) -->"
END = "<!-- results:end -->"
# the one figure of the first screen: where the method's effect is plainest (notebook 04)
FIGURE = "figures/per_class_test_acc.png"
FIGURE_SOURCE = "04_procrustean_training"
FIGURE_ALT = ("Bar chart of the per-class test accuracy after the last epoch on CIFAR-10 with step imbalance: ERM and "
              "MFW side by side for each of the ten classes, the five major classes on the left, the five minor ones "
              "on the right, with whiskers for the standard deviation over seeds")


class ReadmeError(ValueError):
    """The README lacks its markers (or has them out of order)."""


def caption(data: dict[str, list[dict]]) -> str:
    """What the figure shows and where its numbers come from, from the verdicts of the notebook that drew it."""
    rows = data.get(FIGURE_SOURCE) or [{}]
    profile, seeds, setting = rows[0].get("profile", "?"), rows[0].get("seeds", []), rows[0].get("setting", "")
    imb = re.search(r"imbalance=(\w+)", setting)
    rho = re.search(r"ratio=([0-9.]+)", setting)
    bench = f"CIFAR-10, {imb.group(1) if imb else 'step'} imbalance, rho={rho.group(1) if rho else '100'}"
    return (f"*Per-class test accuracy after the last epoch, ERM against MFW (the method as we reconstruct it), {bench}, "
            f"`{profile}` profile, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}: "
            f"[notebook {FIGURE_SOURCE[:2]}](notebooks/{FIGURE_SOURCE}.ipynb).*")


def block(data: dict[str, list[dict]]) -> str:
    """The text between the markers (markers included)."""
    return "\n".join([
        BEGIN,
        f"![{FIGURE_ALT}]({FIGURE})",
        "",
        caption(data),
        "",
        "What the committed runs say about each claim of the abstract ([docs/paper.md](docs/paper.md) numbers them), "
        "by rules fixed before the data: a difference counts only when it exceeds twice the standard deviation over "
        "seeds and every seed agrees in sign, and reads " + claims.WORSE + " when the opposite direction passes that "
        "rule; a threshold only when every seed meets it. A difference marked " + claims.FRAGILE + " passes only with "
        "its own sides' seed spread, not with the benchmark's pooled one. `6s` rows use MFW's choices "
        "selected on a validation split. Every number, with each seed and each rule, is in "
        "[figures/claims.md](figures/claims.md).",
        "",
        *claims.summary_table(data, notebooks="notebooks/"),
        END,
    ])


def _span(text: str) -> tuple[int, int]:
    """Where the block stands in text: from BEGIN to the end of END."""
    i, j = text.find(BEGIN), text.find(END)
    if i < 0 or j < i:
        raise ReadmeError(f"the README needs the lines {BEGIN!r} and {END!r}, in that order")
    return i, j + len(END)


def replace_block(text: str, new_block: str) -> str:
    """text with the part from BEGIN to END replaced by new_block."""
    i, j = _span(text)
    return text[:i] + new_block + text[j:]


def current_block(text: str) -> str:
    i, j = _span(text)
    return text[i:j]


def update(readme: Path = REPO / "README.md", figures: Path = REPO / "figures") -> bool:
    """Rewrite the README's results block from figures/claims.json; True when the file changed."""
    data = json.loads(claims.claims_path(figures).read_text())
    text = readme.read_text()
    new = replace_block(text, block(data))
    if new == text:
        return False
    from ..training.store import atomic_write_text

    atomic_write_text(readme, new)
    return True


def main(argv: list[str] | None = None) -> int:
    """python -m procrustes.results.readme [--check]: write the README's results block (--check: only say whether
    it is up to date; exit status 1 when it is not)."""
    args = sys.argv[1:] if argv is None else argv
    readme, figures = REPO / "README.md", REPO / "figures"
    try:
        if args == ["--check"]:
            data = json.loads(claims.claims_path(figures).read_text())
            stale = current_block(readme.read_text()) != block(data)
            print("README results block: " + ("STALE, run make figures" if stale else "up to date"))
            return 1 if stale else 0
        if args:
            print("usage: python -m procrustes.results.readme [--check]", file=sys.stderr)
            return 2
        print("README results block: " + ("rewritten" if update(readme, figures) else "unchanged"))
    except (ReadmeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
