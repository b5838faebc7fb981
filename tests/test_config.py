"""config.py: the stable hash, dict round trips, method composition, validation and schedule scaling."""
from __future__ import annotations

import dataclasses
import json

import pytest

from procrustes.training.config import PROFILES, ConfigError, RunConfig, make_config, parse_assignment, run_label, split_method, validate


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value + ((value[0] if value else 1),)
    if value is None:
        return 3
    raise AssertionError(f"no change rule for {value!r}")


def test_same_config_same_key():
    a = make_config("smoke", dataset="cifar10", method="mfw+ldam-drw", ratio=10)
    b = make_config("smoke", dataset="cifar10", method="mfw+ldam-drw", ratio=10)
    assert a == b and a.key() == b.key()
    assert len(a.key()) == 12 and int(a.key(), 16) >= 0
    # field order of the dict it came from does not matter
    c = RunConfig.from_dict(dict(reversed(list(a.to_dict().items()))))
    assert c.key() == a.key()


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(RunConfig)])
def test_any_field_change_changes_key(name):
    cfg = make_config("smoke")
    other = cfg.replace(**{name: _changed(getattr(cfg, name))})
    assert other.key() != cfg.key()


def test_profile_is_part_of_the_key():
    assert make_config("smoke").key() != make_config("cpu").key() != make_config("paper").key()


def test_dict_round_trip_through_json():
    cfg = make_config("cpu", method="mfw+drw", lr_milestones=(12, 15), lr_factors=(0.1, 0.01),
                      mfw_random_points=("stem", "stage2"), max_per_class=300)
    d = json.loads(json.dumps(cfg.to_dict()))
    back = RunConfig.from_dict(d)
    assert back == cfg
    assert back.key() == cfg.key()
    assert isinstance(back.lr_milestones, tuple) and isinstance(back.manifold_points, tuple)
    assert all(not isinstance(v, tuple) for v in cfg.to_dict().values())


def test_from_dict_rejects_unknown_fields():
    d = make_config("smoke").to_dict()
    d["colour"] = "blue"
    with pytest.raises(ConfigError, match="colour"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("method,expected", [
    ("mfw+ldam-drw", ("ldam-drw", "mfw")),
    ("ldam-drw+mfw", ("ldam-drw", "mfw")),
    ("remix", ("erm", "remix")),
    ("erm", ("erm", None)),
    ("LDAM-DRW", ("ldam-drw", None)),
    ("focal + manifold-mixup", ("focal", "manifold-mixup")),
])
def test_split_method(method, expected):
    assert split_method(method) == expected


@pytest.mark.parametrize("method", ["", "+", "foo", "mfw+foo", "erm+focal", "mfw+remix", "ldam_drw"])
def test_split_method_rejects(method):
    with pytest.raises(ConfigError):
        split_method(method)


def test_loss_and_mixer_properties():
    cfg = make_config("smoke", method="mfw+drw")
    assert (cfg.loss, cfg.mixer) == ("drw", "mfw")


@pytest.mark.parametrize("overrides,match", [
    ({"dataset": "cifar1000"}, "dataset"),
    ({"method": "foo"}, "method"),
    ({"imbalance": "linear"}, "imbalance"),
    ({"ratio": 0.5}, "ratio"),
    ({"ratio": 0}, "ratio"),
    ({"ratio": 10**5}, "ratio"),  # n_max 5000 / 1e5: the smallest class would keep no image
    ({"ratio": 100, "max_per_class": 40}, "ratio"),  # int(40 / 100) == 0
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 1}, "batch_size"),
    ({"max_per_class": 0}, "max_per_class"),
    ({"test_per_class": 0}, "test_per_class"),
    ({"mfw_prob": 1.5}, "mfw_prob"),
    ({"mfw_lam_min": -0.1}, "mfw_lam_min"),
    ({"mfw_point": "stage4"}, "mixing point"),  # resnet32 has three stages
    ({"mfw_point": "random", "mfw_random_points": ("stem", "stage9")}, "stage9"),
    ({"manifold_points": ("input", "head")}, "head"),
    ({"sampler": "balanced"}, "sampler"),
    ({"mfw_select": "max"}, "mfw_select"),
    ({"mfw_lam": "gauss"}, "mfw_lam"),
    ({"mfw_active": "never"}, "mfw_active"),
    ({"model": "vgg"}, "model"),
    ({"precision": "fp16"}, "precision"),
    ({"colour": "blue"}, "colour"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_config("paper", **overrides)


def test_unknown_profile():
    with pytest.raises(ConfigError, match="profile"):
        make_config("huge")


def test_valid_edge_cases():
    make_config("paper", ratio=1)  # rho = 1 is balanced, allowed
    make_config("smoke", ratio=40, max_per_class=40, imbalance="step")  # smallest class keeps exactly one image
    make_config("paper", dataset="tinyimagenet", mfw_point="stage4")  # ResNet-18 has a fourth stage
    make_config("paper", imbalance="none", ratio=10**6)  # no subset: the ratio is not used
    make_config("paper", dataset="imagefolder", ratio=10**6)  # counts depend on the files


def test_validate_checks_a_replaced_config():
    cfg = make_config("smoke").replace(epochs=0)
    with pytest.raises(ConfigError):
        validate(cfg)


def test_none_overrides_are_ignored():
    assert make_config("smoke", epochs=None).epochs == PROFILES["smoke"]["epochs"]


def test_schedule_scaling():
    assert make_config("paper").schedule() == (5.0, (160, 180), (0.01, 1e-4), 160)
    warm, miles, factors, drw = make_config("paper", epochs=20).schedule()
    assert (warm, miles, drw) == (0.5, (16, 18), 16)
    assert factors == (0.01, 1e-4)
    tiny = make_config("paper", dataset="tinyimagenet")
    assert tiny.epochs == 120 and tiny.resolved_model() == "resnet18"
    assert tiny.schedule() == (0.0, (90,), (0.1,), 90)
    # explicit values win over the scaled defaults (drw_epoch where the run uses it: a DRW loss)
    cfg = make_config("paper", method="ldam-drw", epochs=20, drw_epoch=5, warmup_epochs=0, lr_milestones=(10,),
                      lr_factors=(0.5,))
    assert cfg.schedule() == (0.0, (10,), (0.5,), 5)


def test_resolved_model():
    assert make_config("paper").resolved_model() == "resnet32"
    assert make_config("paper", model="resnet18").resolved_model() == "resnet18"


@pytest.mark.parametrize("text,expected", [
    ("mfw_prob=0.5", ("mfw_prob", 0.5)),
    ("ratio=10", ("ratio", 10.0)),
    ("epochs=3", ("epochs", 3)),
    ("max_per_class=7", ("max_per_class", 7)),
    ("max_per_class=None", ("max_per_class", None)),
    ("drw_epoch=12", ("drw_epoch", 12)),
    ("eval_per_class=5", ("eval_per_class", 5)),
    ("warmup_epochs=2", ("warmup_epochs", 2.0)),
    ("lr_milestones=10,20", ("lr_milestones", (10, 20))),
    ("lr_factors=0.1,0.01", ("lr_factors", (0.1, 0.01))),
    ("manifold_points=stem,stage1", ("manifold_points", ("stem", "stage1"))),
    ("method=mfw+drw", ("method", "mfw+drw")),
    ("mfw_point=stage2", ("mfw_point", "stage2")),
])
def test_parse_assignment(text, expected):
    name, value = parse_assignment(text)
    assert (name, value) == expected
    assert type(value) is type(expected[1])
    if isinstance(value, tuple):
        assert all(type(a) is type(b) for a, b in zip(value, expected[1]))


@pytest.mark.parametrize("text", ["epochs", "nofield=1", "epochs=abc", "seed=1.5", "mfw_prob=half"])
def test_parse_assignment_errors(text):
    with pytest.raises(ConfigError):
        parse_assignment(text)


def test_parsed_assignments_make_a_config():
    over = dict(parse_assignment(a) for a in ["method=mfw", "mfw_prob=0.5", "lr_milestones=1,2", "eval_per_class=5"])
    cfg = make_config("smoke", **over)
    assert (cfg.mfw_prob, cfg.lr_milestones, cfg.eval_per_class) == (0.5, (1, 2), 5)


def test_ratio_spelling_does_not_change_the_key():
    # the command line parses --ratio as a float, the notebooks pass ints: both must name the same stored run
    assert make_config("smoke", ratio=10).key() == make_config("smoke", ratio=10.0).key()
    assert make_config("paper").key() == make_config("paper", ratio=100).key()
    assert make_config("smoke", ratio=2.5).ratio == 2.5
    name, value = parse_assignment("ratio=10")
    assert make_config("smoke", **{name: value}).key() == make_config("smoke", ratio=10).key()


def test_run_label_names_the_fields_an_ablation_changes():
    base = make_config("cpu", imbalance="step", method="mfw+ldam-drw")
    assert run_label(base) == base.label()
    until = dataclasses.replace(base, mfw_active="until-drw", mfw_lam_min=0.0)
    assert run_label(until) == base.label() + " [mfw_lam_min=0.0, mfw_active=until-drw]"


# ---------------------------------------------------------------- issue 25: bad input, one run one key


def test_committed_result_keys_are_stable():
    """Every committed result's folder is its key; remaking its config through make_config gives the same key
    (the canonical spellings below never change a committed run's key)."""
    import glob
    import json
    from pathlib import Path

    from procrustes.training import store
    from procrustes.training.config import NONE

    files = sorted(glob.glob(str(Path(__file__).resolve().parents[1] / "results" / "*" / "*" / "result.json")))
    if not files:
        pytest.skip("no committed results")
    for f in files:
        res = json.loads(Path(f).read_text())
        cfg = RunConfig.from_dict(res["config"])
        assert store.run_key(cfg, res["data"]["id"]) == Path(f).parent.name == res["key"], f
        fields = {k: NONE if v is None else tuple(v) if isinstance(v, list) else v
                  for k, v in res["config"].items() if k != "profile"}
        remade = make_config(res["config"]["profile"], **fields)
        assert remade.to_dict() == cfg.to_dict() and remade.key() == cfg.key(), f


@pytest.mark.parametrize("spelling", ["MFW", " mfw ", "Mfw", "erm+mfw", "mfw+erm"])
def test_method_spellings_are_one_key(spelling):
    assert make_config("smoke", method=spelling).key() == make_config("smoke", method="mfw").key()


def test_method_order_is_canonical():
    for spelling in ("LDAM-DRW+MFW", "ldam-drw + mfw", "mfw+ldam-drw"):
        assert make_config("cpu", method=spelling).method == "mfw+ldam-drw"
    assert make_config("cpu", method="drw+mfw").method == "mfw+drw"
    assert make_config("cpu", method="ERM+Remix").method == "remix"
    assert make_config("cpu", method="ERM").method == "erm"


def test_ratio_under_imbalance_none_does_not_change_the_key():
    base = make_config("smoke", dataset="imagefolder", imbalance="none")
    assert make_config("smoke", dataset="imagefolder", imbalance="none", ratio=10).key() == base.key()
    assert make_config("smoke", dataset="imagefolder", imbalance="none", ratio=10.0).key() == base.key()
    assert base.ratio == 100  # the default: a config made before this rule with the default ratio keeps its key
    assert make_config("smoke", imbalance="step", ratio=10).key() != make_config("smoke", imbalance="step").key()


@pytest.mark.parametrize("assignment,match", [
    ("lr_milestones=", "lr_milestones is empty"),
    ("mfw_random_points=", "mfw_random_points must name at least one mixing point"),
    ("manifold_points=", "manifold_points must name at least one mixing point"),
])
def test_empty_lists_are_refused(assignment, match):
    name, value = parse_assignment(assignment)
    with pytest.raises(ConfigError, match=match):
        make_config("smoke", method="mfw", mfw_point="random", **{name: value})


def test_none_is_honoured_or_refused():
    from procrustes.tooling.cli import set_overrides

    over = set_overrides(["eval_per_class=none", "max_per_class=None", "clean_per_class=NONE"])
    cfg = make_config("cpu", **over)
    assert (cfg.eval_per_class, cfg.max_per_class, cfg.clean_per_class) == (None, None, None)
    assert make_config("cpu").eval_per_class == 200  # a flag not given (None) keeps the profile's value
    assert make_config("smoke", **set_overrides(["imbalance=none"])).imbalance == "none"  # a choice named none
    with pytest.raises(ConfigError, match="epochs cannot be none"):
        set_overrides(["epochs=none"])
    with pytest.raises(ConfigError, match="ratio cannot be none"):
        set_overrides(["ratio=none"])
