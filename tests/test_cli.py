"""The command line on bad input: exit status 2, one line on stderr that starts with "error:", no traceback,
and nothing loaded or written (the data and result folders point at empty temporary folders)."""
from __future__ import annotations

import pytest

from .conftest import cli_env, run_cli_many

CASES = {
    "unknown dataset": (["train", "--dataset", "cifar1000"], "unknown dataset 'cifar1000'"),
    "unknown method": (["train", "--method", "mfw+magic"], "unknown method 'mfw+magic'"),
    "ratio below one": (["train", "--ratio", "0.5"], "impossible ratio 0.5"),
    "zero epochs": (["train", "--epochs", "0"], "impossible epochs 0"),
    "unknown mixing point": (["train", "--method", "mfw", "--mfw-point", "stage4"], "unknown mixing point 'stage4'"),
    "no workers": (["reproduce", "--workers", "0"], "--workers must be a positive number of runs or auto, not '0'"),
    "unknown compile setting": (["train", "--profile", "smoke", "--compile", "fast"], "unknown compile setting 'fast'"),
    "unknown bench compile mode": (["bench", "--device", "cpu", "--compile", "fastest"], "unknown compile mode 'fastest'"),
    "bench eval images not a number": (["bench", "--device", "cpu", "--eval", "many"], "impossible --eval 'many'"),
    "missing data root": (["train", "--profile", "smoke", "--data-root", "{tmp}/nowhere"], "{tmp}/nowhere does not exist"),
    "results is a file": (["train", "--profile", "smoke", "--results", "{tmp}/afile"], "{tmp}/afile is a file, not a folder"),
    "meta device": (["train", "--profile", "smoke", "--device", "meta"], "device 'meta': the trainer runs on cpu or cuda"),
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data, results = tmp / "data", tmp / "results"
    data.mkdir()
    results.mkdir()
    (tmp / "afile").write_text("not a folder")
    env = cli_env(PROCRUSTES_DATA=str(data), PROCRUSTES_RESULTS=str(results))
    argvs = [[a.replace("{tmp}", str(tmp)) for a in argv] for argv, _ in CASES.values()]
    procs = run_cli_many(argvs, env)
    return {"tmp": tmp, "data": data, "results": results, **dict(zip(CASES, procs))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_status_2(cli, case):
    p = cli[case]
    expected = CASES[case][1].replace("{tmp}", str(cli["tmp"]))
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert p.stdout == ""


def test_nothing_was_loaded_or_written(cli):
    # a data load would have created data/cache (or tried a download into data/cifar10); a run, results/<profile>
    assert list(cli["data"].iterdir()) == []
    assert list(cli["results"].iterdir()) == []


def test_main_returns_2_in_process(capsys):
    from procrustes.tooling.cli import main

    assert main(["train", "--set", "mfw_prob=2"]) == 2
    assert main(["train", "--set", "nosuchfield=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("error: ") for e in err)
    assert "mfw_prob" in err[0] and "nosuchfield" in err[1]


def test_unknown_subcommand_is_argparse_status_2(capsys):
    from procrustes.tooling.cli import main

    with pytest.raises(SystemExit) as e:
        main(["fly"])
    assert e.value.code == 2


def test_disk_full_during_training_is_one_line_and_leaves_no_temp_file(cifar10_root, tmp_path, monkeypatch, capsys):
    """Issue 25.7: the checkpoint write fails with ENOSPC: one line, a non-zero status, no .checkpoint.pt.*.tmp."""
    import errno
    import os

    from procrustes.training import store
    from procrustes.tooling.cli import main

    real_fsync = os.fsync

    def fsync(fd):
        if "checkpoint" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(store.os, "fsync", fsync)
    code = main(["train", "--profile", "smoke", "--epochs", "1", "--max-per-class", "20", "--imbalance", "step",
                 "--ratio", "10", "--results", str(tmp_path)])
    err = capsys.readouterr().err  # the progress bar, then the error
    assert code != 0 and "Traceback" not in err
    errors = [line[line.index("error: "):] for line in err.splitlines() if "error: " in line]
    assert len(errors) == 1 and "No space left on device" in errors[0], err
    assert err.splitlines()[-1].startswith("error: "), err  # on a line of its own, after the closed bar
    assert not list(tmp_path.rglob("*.tmp")) and list(tmp_path.rglob("config.json"))


def test_set_takes_the_fields_of_the_flags_and_none(monkeypatch, tmp_path, capsys):
    """Issue 25.9-11: --set ratio=/method=/dataset=/imbalance= are honoured like the flags (not a TypeError),
    --set FIELD=none sets None, and the method's spelling is made canonical."""
    import importlib

    from procrustes.tooling.cli import main

    trainer = importlib.import_module("procrustes.training.train")  # procrustes.training.train is also the function
    seen = []

    def fake_run(cfg, **kwargs):
        seen.append(cfg)
        return {"summary": {"group_test_acc": {}, "test_error": 1.0}, "data": {"id": "0123456789abcdef"}}

    monkeypatch.setattr(trainer, "run", fake_run)
    argv = ["train", "--profile", "cpu", "--device", "cpu", "--results", str(tmp_path), "--ratio", "50",
            "--set", "ratio=10", "--set", "imbalance=step", "--set", "method=LDAM-DRW+MFW", "--set", "dataset=cifar100",
            "--set", "eval_per_class=none"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = seen[0]
    assert (cfg.ratio, cfg.imbalance, cfg.method, cfg.dataset, cfg.eval_per_class) == (10, "step", "mfw+ldam-drw", "cifar100", None)


@pytest.mark.parametrize("assignment,match", [
    ("lr_milestones=", "lr_milestones is empty"),
    ("mfw_random_points=", "mfw_random_points must name at least one"),
    ("manifold_points=", "manifold_points must name at least one"),
    ("epochs=none", "epochs cannot be none"),
])
def test_bad_set_is_one_line_before_anything_is_written(tmp_path, capsys, assignment, match):
    from procrustes.tooling.cli import main

    assert main(["train", "--profile", "smoke", "--method", "mfw", "--mfw-point", "random", "--results", str(tmp_path),
                 "--set", assignment]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_read_only_results_is_one_line_before_training(tmp_path, monkeypatch, capsys):
    """Issue 25.7 (as root chmod does not stop writes: the permission check is simulated)."""
    import os

    from procrustes.training import store
    from procrustes.tooling.cli import main

    real_access = os.access
    monkeypatch.setattr(store.os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    assert main(["train", "--profile", "smoke", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"error: results folder {tmp_path} is not writable: pass another folder to --results"
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- a command line that does not guess

GUESSES = {
    "abbreviated option": (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3; did you mean --epochs?"),
    "misspelt method": (["train", "--method", "erm+mfx"], "unknown method 'erm+mfx'"),
    "misspelt command": (["trian"], "unknown command 'trian'"),
}
GUESS_HINTS = {"abbreviated option": "did you mean --epochs?", "misspelt method": "did you mean erm+mfw?",
               "misspelt command": "did you mean train?"}


@pytest.fixture(scope="module")
def guesses(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guesses")
    (tmp / "data").mkdir()
    (tmp / "results").mkdir()
    env = cli_env(PROCRUSTES_DATA=str(tmp / "data"), PROCRUSTES_RESULTS=str(tmp / "results"))
    return tmp, dict(zip(GUESSES, run_cli_many([argv for argv, _ in GUESSES.values()], env)))


@pytest.mark.parametrize("case", list(GUESSES))
def test_a_misspelt_option_value_or_command_is_an_error_with_the_closest_match(guesses, case):
    """`--epoch 3` used to train as `--epochs 3` (argparse's abbreviations); now it is refused before anything
    runs, and the error names the option meant."""
    tmp, procs = guesses
    p = procs[case]
    assert p.returncode == 2 and p.stdout == "", (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert GUESSES[case][1] in lines[0] and GUESS_HINTS[case] in lines[0]
    assert list((tmp / "data").iterdir()) == [] and list((tmp / "results").iterdir()) == []


def _options(parser):
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: p for a in subs for name, p in a.choices.items()}


def test_no_parser_takes_abbreviations_and_every_option_says_its_choices_and_default():
    from procrustes.tooling.cli import _parser

    top = _parser()
    commands = _options(top)
    assert set(commands) == {"counts", "train", "reproduce", "bench"}
    assert top.allow_abbrev is False and all(p.allow_abbrev is False for p in commands.values())
    for name, p in commands.items():
        for a in p._actions:
            if not a.option_strings or "-h" in a.option_strings or a.nargs == 0:
                continue  # help, and on/off switches (store_true) whose default is off
            assert a.help and "default" in a.help, (name, a.option_strings, a.help)
    train = {o: a for a in commands["train"]._actions for o in a.option_strings}
    assert "{exp,step,none}" in train["--imbalance"].metavar and "{median,power,inverse,all}" in train["--mfw-select"].metavar
    assert "cpu: 80" in train["--epochs"].help  # the profile's values, computed from PROFILES
    assert "exit 2" not in top.description and "one line" not in top.description  # user-facing text


def test_close_matches_for_values_and_fields():
    from procrustes.tooling.cli import suggest

    assert suggest("unknown dataset 'cifar1000': choose one of cifar10, cifar100").endswith("; did you mean cifar100?")
    assert suggest("unknown method 'ldam-drv+mfw': compose ...").endswith("did you mean ldam-drw+mfw?")
    assert suggest("unknown config field 'mfw_porb' in --set").endswith("did you mean mfw_prob?")
    assert suggest("impossible epochs 0: must be at least 1") == "impossible epochs 0: must be at least 1"
    assert suggest("unknown dataset 'zzz': choose one of cifar10, cifar100").endswith("cifar100")  # nothing close: as it was


def test_counts_without_options_says_what_it_shows_and_how_to_choose(capsys):
    from procrustes.tooling.cli import main

    assert main(["counts"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("no benchmark chosen, so the default: CIFAR-10, exp imbalance, rho=100")
    assert "--dataset {cifar10,cifar100,tinyimagenet}" in out[0] and "--imbalance {exp,step,none}" in out[0]
    assert out[1] == "cifar10 exp rho=100: [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]"
    assert main(["counts", "--imbalance", "step"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cifar10 step rho=100: ")  # a chosen benchmark: no preamble
