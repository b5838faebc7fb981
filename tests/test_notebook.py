"""notebook.py: parameters are read after papermill's injection and validated (B5), unknown names are errors,
and executed notebooks are stripped of what changes between runs."""
from __future__ import annotations

import json
import types

import pytest

from procrustes.results import notebook
from procrustes.results.notebook import ParameterError


def ns(**values):
    base = {"profile": None, "train_missing": None, "device": "auto", "data_root": None, "seeds": None,
            "In": [], "Out": {}, "get_ipython": print, "_i1": "", "os": types, "sys": types}
    base.update(values)
    return base


def test_environment_defaults_are_read_after_injection(monkeypatch):
    monkeypatch.delenv("PROCRUSTES_PROFILE", raising=False)
    monkeypatch.delenv("PROCRUSTES_TRAIN_MISSING", raising=False)
    assert notebook.settings(ns()).profile == "cpu"
    assert notebook.settings(ns()).train_missing is False
    # B5: -p profile smoke alone makes train_missing follow the profile
    assert notebook.settings(ns(profile="smoke")).train_missing is True
    monkeypatch.setenv("PROCRUSTES_PROFILE", "smoke")
    assert notebook.settings(ns()).profile == "smoke"
    assert notebook.settings(ns(profile="paper")).profile == "paper"


@pytest.mark.parametrize("value,expected", [("no", False), ("False", False), (False, False), ("yes", True), (True, True),
                                            ("1", True), (0, False)])
def test_booleans_accept_true_false_forms_only(value, expected):
    assert notebook.settings(ns(train_missing=value)).train_missing is expected


@pytest.mark.parametrize("bad", [{"train_missing": "nope"}, {"train_missing": 2}, {"profile": "quick"},
                                 {"seeds": "0"}, {"seeds": [0, "1"]}, {"seeds": [-1]}, {"device": 3},
                                 {"data_root": 1}, {"profil": "smoke"}])
def test_bad_or_unknown_parameters_are_errors(bad):
    with pytest.raises(ParameterError):
        notebook.settings(ns(**bad))


def test_typed_extra_parameters():
    s = notebook.settings(ns(methods=["mfw"], ratio=10), methods=["erm"], ratio=100, imbalance="step")
    assert s.methods == ("mfw",) and s.ratio == 10 and s.imbalance == "step"
    with pytest.raises(ParameterError, match="list"):
        notebook.settings(ns(methods="mfw"), methods=["erm"])  # B5: a string where a list is expected
    with pytest.raises(ParameterError):
        notebook.settings(ns(imbalance=3), imbalance="step")


def test_strip_volatile(tmp_path):
    nb = {"cells": [{"cell_type": "code", "id": "a", "source": [], "outputs": [], "execution_count": 1,
                     "metadata": {"execution": {"iopub.status.busy": "2026-01-01T00:00:00Z"},
                                  "papermill": {"duration": 1.5, "start_time": "x", "end_time": "y", "status": "completed"},
                                  "tags": ["parameters"]}}],
          "metadata": {"papermill": {"duration": 7.1, "start_time": "s", "end_time": "e", "parameters": {"a": 1},
                                     "input_path": "i", "output_path": "o", "version": "2.7.0"}},
          "nbformat": 4, "nbformat_minor": 5}
    p = tmp_path / "n.ipynb"
    p.write_text(json.dumps(nb))
    assert notebook.strip_volatile(p) is True
    out = json.loads(p.read_text())
    assert out["metadata"]["papermill"] == {"parameters": {"a": 1}}
    assert out["cells"][0]["metadata"] == {"papermill": {"status": "completed"}, "tags": ["parameters"]}
    text = p.read_text()
    assert notebook.strip_volatile(p) is False and p.read_text() == text


def test_strip_volatile_joins_the_chunks_of_a_stream(tmp_path):
    """One print cut into two messages (timing) and the same print in one message strip to the same file."""
    def nb(outputs):
        return {"cells": [{"cell_type": "code", "id": "a", "source": [], "execution_count": 1, "metadata": {},
                           "outputs": outputs}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    cut = [{"output_type": "stream", "name": "stdout", "text": ["a\n", "b"]},
           {"output_type": "stream", "name": "stdout", "text": "c\nd\n"},
           {"output_type": "stream", "name": "stderr", "text": "e\n"},
           {"output_type": "stream", "name": "stdout", "text": "f\n"}]
    whole = [{"output_type": "stream", "name": "stdout", "text": "a\nbc\nd\n"},
             {"output_type": "stream", "name": "stderr", "text": ["e\n"]},
             {"output_type": "stream", "name": "stdout", "text": ["f\n"]}]
    paths = []
    for name, outputs in (("cut", cut), ("whole", whole)):
        paths.append(tmp_path / f"{name}.ipynb")
        paths[-1].write_text(json.dumps(nb(outputs)))
        notebook.strip_volatile(paths[-1])
    assert paths[0].read_text() == paths[1].read_text()
    outs = json.loads(paths[0].read_text())["cells"][0]["outputs"]
    assert [(o["name"], o["text"]) for o in outs] == [("stdout", ["a\n", "bc\n", "d\n"]), ("stderr", ["e\n"]),
                                                      ("stdout", ["f\n"])]


def test_parameters_other_than_the_committed_ones_never_write_over_the_committed_record(monkeypatch, tmp_path):
    """Issue 25, item 13: a notebook run with -y 'seeds: [0]' or -p imbalance exp writes to figures/custom/...,
    and every claims row names the setting that produced it."""
    from procrustes.results import plots

    monkeypatch.delenv("PROCRUSTES_FIGURES", raising=False)
    monkeypatch.setattr(plots, "REPO", tmp_path)
    monkeypatch.setenv("PROCRUSTES_PROFILE", "cpu")
    committed = notebook.settings({"profile": None, "seeds": None}, imbalance="step", ratio=100)
    assert committed.custom() == {} and committed.figures == tmp_path / "figures"
    seeds = notebook.settings({"seeds": [0]}, imbalance="step", ratio=100)
    exp = notebook.settings({"imbalance": "exp"}, imbalance="step", ratio=100)
    assert seeds.figures == tmp_path / "figures" / "custom" / "seeds-0"
    assert exp.figures == tmp_path / "figures" / "custom" / "imbalance-exp"
    assert exp.meta("02_x") == {"source": "02_x", "profile": "cpu", "setting": "profile cpu; seeds all; imbalance=exp; ratio=100"}
    # where a run starts (device, train_missing) is not a different result: the committed folder
    assert notebook.settings({"device": "cpu", "train_missing": True}).figures == tmp_path / "figures"
    # a parameters cell whose seeds are not None (notebook 00 shows seed 0): those seeds are the committed run
    assert notebook.settings({"seeds": [0]}, committed={"seeds": [0]}, methods=["erm"]).custom() == {}
    assert notebook.settings({"seeds": None}, committed={"seeds": [0]}).figures == tmp_path / "figures" / "custom" / "seeds-all"
    # another profile has its own folder, and a custom run of it a sub-folder there
    assert notebook.settings({"profile": "smoke", "seeds": [0]}).figures == tmp_path / "figures" / "smoke" / "custom" / "seeds-0"


def test_a_run_with_other_parameters_says_where_its_figures_went(monkeypatch, tmp_path):
    """A reader who runs a notebook with -y 'seeds: [0]' (or another profile) is told where its figures went,
    in the first cell's output; the committed run's output is unchanged."""
    from procrustes.results import plots

    monkeypatch.delenv("PROCRUSTES_FIGURES", raising=False)
    monkeypatch.setattr(plots, "REPO", tmp_path)
    monkeypatch.setenv("PROCRUSTES_PROFILE", "cpu")
    committed = notebook.settings({"seeds": None}, imbalance="step", ratio=100)
    assert committed.where() == "" and "\n" not in committed.line()
    seeds = notebook.settings({"seeds": [0]}, imbalance="step", ratio=100)
    assert seeds.line().splitlines()[1] == ("this run's figures, tables and claims go to figures/custom/seeds-0/ "
                                            "(the committed ones in figures/ are left alone)")
    assert "figures/smoke/" in notebook.settings({"profile": "smoke"}).line()
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"  # outside the repository: its absolute path
    monkeypatch.setenv("PROCRUSTES_FIGURES", str(elsewhere))
    assert f"go to {elsewhere / 'custom' / 'seeds-0'}/ " in notebook.settings({"seeds": [0]}).where()


def test_stored_results_counts_finished_runs_only(tmp_path, capsys):
    """`make figures` regenerates a profile's figures once it holds a finished run: a parked checkpoint is not one."""
    assert notebook.stored_results("paper", tmp_path) == 0
    (tmp_path / "paper" / "aaa-1").mkdir(parents=True)
    (tmp_path / "paper" / "aaa-1" / "checkpoint.pt").write_bytes(b"x")
    assert notebook.stored_results("paper", tmp_path) == 0
    (tmp_path / "paper" / "bbb-1").mkdir()
    (tmp_path / "paper" / "bbb-1" / "result.json").write_text("{}")
    assert notebook.stored_results("paper", tmp_path) == 1
    assert notebook.stored_results("cpu", tmp_path) == 0
    assert notebook.main(["check-profile", "paper"]) == 0
    assert notebook.main(["stored", "quick"]) == 2
    assert "choose one of" in capsys.readouterr().err


_TINY_NB = {"cells": [{"cell_type": "code", "execution_count": None, "id": "p", "metadata": {"tags": ["parameters"]},
                       "outputs": [], "source": "x = 1"},
                      {"cell_type": "code", "execution_count": None, "id": "q", "metadata": {}, "outputs": [],
                       "source": "import os\nprint('profile', os.environ['PROCRUSTES_PROFILE'], x)"}],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_run_notebooks_writes_another_profiles_copy_beside_its_figures(tmp_path):
    """scripts/run_notebooks.sh: the cpu profile's executed notebook replaces the committed one; another profile's
    goes to <figures>/<profile>/notebooks/ and the committed notebook keeps its bytes."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO, cli_env

    (tmp_path / "notebooks").mkdir()
    nb = tmp_path / "notebooks" / "02_tiny.ipynb"
    nb.write_text(json.dumps(_TINY_NB))
    committed = nb.read_bytes()
    env = cli_env(PY=sys.executable, PROCRUSTES_FIGURES="figs")
    env.pop("PROCRUSTES_PROFILE", None)

    def run(profile):
        return subprocess.run(["bash", str(REPO / "scripts" / "run_notebooks.sh"), profile, "notebooks/02_tiny.ipynb"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    out = run("smoke")
    assert out.returncode == 0, out.stderr
    copy = tmp_path / "figs" / "smoke" / "notebooks" / "02_tiny.ipynb"
    assert nb.read_bytes() == committed
    assert "profile smoke 1" in copy.read_text()
    out = run("cpu")
    assert out.returncode == 0, out.stderr
    assert "profile cpu 1" in nb.read_text() and not (tmp_path / "figs" / "cpu").exists()
    out = run("cpu;touch PWNED")
    assert out.returncode == 2 and "choose one of" in out.stderr, out.stderr
    assert not [p for p in os.listdir(tmp_path) if "PWNED" in p]
