"""What a reader sees first: the README's results block is what `make figures` writes (from figures/claims.json),
within the first screen; the paper's summary and every file a document links to are in the repository;
reader-facing text names no issue and no missing file; the licence, citation and changelog exist; and the conda
environment names the same packages and pins as pyproject.toml."""
from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from procrustes.results import claims, readme

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DATA = json.loads((REPO / "figures" / "claims.json").read_text())


def test_readme_results_block_is_what_make_figures_writes():
    """Recomputed from the committed figures/claims.json: a verdict that changes without `make figures` (or a
    hand edit of the block) fails here."""
    assert readme.current_block(README.read_text()) == readme.block(DATA)
    assert readme.main(["--check"]) == 0


def test_the_first_screen_shows_a_figure_and_the_claims_table():
    lines = README.read_text().splitlines()[:60]
    figure = [i for i, line in enumerate(lines) if re.match(r"!\[[^\]]{20,}\]\(figures/[\w.-]+\.png\)", line)]
    table = [i for i, line in enumerate(lines) if line.startswith("| claim | verdict |")]
    assert figure and table, "a figure (with alt text) and the claims table within the README's first 60 lines"
    assert (REPO / readme.FIGURE).exists()
    rows = [line for line in lines[table[0]:] if line.startswith("| ") and "**" in line]
    assert len(rows) == sum(len(v) for v in DATA.values())  # every verdict has its row
    commands = [i for i, line in enumerate(lines) if line.startswith(("make figures", "make test"))]
    assert len(commands) == 2 and max(commands) < figure[0]  # the two commands first, then the answer


def test_readme_block_is_rewritten_from_the_claims(tmp_path):
    data = json.loads(json.dumps(DATA))
    first = next(iter(data))
    data[first][0]["verdict"] = "NOT SHOWN"
    text = README.read_text()
    fake = tmp_path / "README.md"
    fake.write_text(text)
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "claims.json").write_text(json.dumps(data))
    assert readme.update(fake, figures) is True
    assert readme.current_block(fake.read_text()) == readme.block(data) != readme.block(DATA)
    assert readme.update(fake, figures) is False  # unchanged claims: the file is left alone
    fake.write_text("# no markers\n")
    with pytest.raises(readme.ReadmeError):
        readme.update(fake, figures)


def test_claims_md_opens_with_the_same_short_table():
    text = claims.render(DATA)
    short = claims.summary_table(DATA, notebooks="../notebooks/")
    detail = text.index("## Each verdict in detail")
    assert text.index("\n".join(short)) < detail
    in_readme = claims.summary_table(DATA, notebooks="notebooks/")
    assert [r.replace("../notebooks/", "notebooks/") for r in short] == in_readme
    assert "\n".join(in_readme) in README.read_text()


def test_short_numbers_keep_the_means_and_the_rule_and_drop_each_seed():
    long = ("ERM 47.60 +- 1.07% (seeds 0, 1, 2: 48.50, 47.88, 46.41); MFW 47.51 +- 1.82% (seeds 0, 1, 2: 46.19, 49.58, "
            "46.75); difference -0.09 points (seeds 0, 1, 2: -2.31, 1.70, 0.34); rule's noise = std of the more variable "
            "side 1.82, needs |mean| > 3.63 and one sign; careful: code paths differ: ERM eager; MFW compiled")
    assert claims.short_numbers(long) == ("ERM 47.60 +- 1.07%; MFW 47.51 +- 1.82%; difference -0.09 points; "
                                          "needs |mean| > 3.63; careful: code paths differ")
    assert claims.short_numbers("ratio 4.01 (seed 0)") == "ratio 4.01"


def _reader_texts() -> dict[str, str]:
    """README, docs, the notebooks' cells (sources and outputs), the committed Markdown tables and claims.md as the
    code writes it from the committed claims.json."""
    texts = {"README.md": README.read_text(), "claims.md (rendered)": claims.render(DATA)}
    texts.update({str(p.relative_to(REPO)): p.read_text() for p in (REPO / "docs").glob("*.md")})
    texts.update({str(p.relative_to(REPO)): p.read_text() for p in (REPO / "figures").glob("*.md") if p.name != "claims.md"})
    for p in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = json.loads(p.read_text())
        texts[str(p.relative_to(REPO))] = "\n".join("".join(c["source"]) for c in nb["cells"])
    return texts


def test_reader_facing_text_names_no_issue_and_no_absent_summary():
    for name, text in _reader_texts().items():
        assert not re.search(r"issue [0-9]", text), name
        if not name.startswith("figures/"):  # a committed table says what its code said when make figures last ran
            assert "PAPER.md" not in text, name  # the summary is docs/paper.md, in the repository
    from procrustes.results import tables

    assert not any("PAPER.md" in label for label in tables.COLUMN_LABELS.values())  # benchmark_counts' header


def test_every_relative_link_of_the_docs_exists():
    for doc in [README, *(REPO / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            assert (doc.parent / target).exists(), f"{doc.name} links to {target}, which is missing"


def test_readme_lists_the_notebooks_in_order_and_every_one():
    rows = re.findall(r"^\| `(\d\d)_\w+` \|", README.read_text(), flags=re.M)
    assert rows == sorted(rows) == sorted(p.name[:2] for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_licence_citation_and_changelog():
    yaml = pytest.importorskip("yaml")
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Ye", "Zhan", "Chao"]
    assert paper["year"] == 2021 and "Procrustean Training for Imbalanced Deep Learning" == paper["title"]
    assert {"type": "other", "value": "arXiv:2104.01769"} in paper["identifiers"]
    assert cff["version"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    changelog = (REPO / "CHANGELOG.md").read_text()
    dates = re.findall(r"^## (\d{4}-\d\d-\d\d)", changelog, flags=re.M)
    assert dates and dates == sorted(dates, reverse=True)  # newest first
    for change in claims.RULE_CHANGES:  # every rule change is in the changelog, under its date
        assert change.split(",")[0] in dates and not re.search(r"issue [0-9]", change)


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()


def test_environment_yml_names_the_packages_and_pins_of_pyproject():
    """No conda solver was reachable here, so environment.yml was never built: this is what can be checked."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {_requirement_name(d): d for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    text = (REPO / "environment.yml").read_text()
    pip = [line.strip()[2:].strip() for line in text[text.index("- pip:"):].splitlines()[1:] if line.strip().startswith("- ")]
    editable = [p for p in pip if p.startswith("-e ")]
    assert editable == ["-e .[dev]"] and "dev" in extras  # the package itself, so every dependency comes with it
    for req in pip:
        if not req.startswith("-e "):
            ours = deps.get(_requirement_name(req))
            assert ours == req, f"environment.yml pins {req!r}, pyproject.toml {ours!r}"
    python = re.search(r"- python=(\d+)\.(\d+)", text)
    low = re.match(r">=(\d+)\.(\d+)", project["requires-python"])
    assert python and low and tuple(map(int, python.groups())) >= tuple(map(int, low.groups()))


def test_no_dependency_the_package_never_uses():
    """Each required package is imported somewhere (package, scripts, notebooks) or is a tool the Makefile runs."""
    deps = [_requirement_name(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    code = "\n".join(p.read_text() for d in ("procrustes", "scripts", "tests") for p in (REPO / d).rglob("*.py"))
    code += "\n".join(p.read_text() for p in (REPO / "notebooks").glob("*.ipynb"))
    makefile = (REPO / "Makefile").read_text()
    imports = {"pillow": "PIL"}
    tools = {"jupyterlab": "jupyter lab", "ipykernel": "-k python3", "nbval": "--nbval", "papermill": "papermill"}
    for d in deps:
        used = re.search(rf"^\s*(import|from) {imports.get(d, d)}\b", code, flags=re.M) or tools.get(d, "\0") in makefile + code
        used = used or (d == "jupyterlab" and "jupyter lab" in README.read_text())
        assert used, f"{d} is required by pyproject.toml but nothing uses it"


def test_make_help_speaks_of_this_machine_and_a_gpu_session():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "HERE" not in out and "lease" not in out and "lent" not in out
    assert "on this machine, before a GPU session" in out
