"""One run, described by one dataclass: `RunConfig`, its profiles, its validation and its stable hash.

Every choice docs/paper.md lists as reconstructed is a field here with its default documented, so that a
reader can change it from Python, from the command line (`--set field=value`) or from a notebook.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ..method.choices import MFW_LAM, MFW_SELECT, MIXING_POINTS, mixing_points  # noqa: F401  (the method's vocabulary)
from ..method.counts import PAPER_SIZES, class_counts

DATASETS = ("cifar10", "cifar100", "tinyimagenet", "imagefolder")
IMBALANCES = ("exp", "step", "none")
MODELS = ("auto", "resnet32", "resnet18")
LOSSES = ("erm", "focal", "cb", "drw", "ldam", "ldam-drw", "logit-adjust")
MIXERS = ("mfw", "mixup", "manifold-mixup", "remix")
SAMPLERS = ("instance", "class", "sqrt", "progressive", "drs")
MFW_ACTIVE = ("always", "until-drw")
PRECISIONS = ("auto", "bf16", "fp32")
# Upper bounds of the two sizes a typo can make absurd: 10,000 epochs is 50 times the paper's 200 (a larger value
# is a slip such as 1e23, which would train for ever), and 65,536 images a step is more than any training set here
# holds (a larger batch silently becomes full-batch training under a key of its own). Both must be integers.
MAX_EPOCHS = 10_000
MAX_BATCH_SIZE = 65_536


class ConfigError(ValueError):
    """Bad user input: the CLI prints it as one line and exits with status 2, before any data is loaded."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the numbers a run produces (and nothing that does not, such as paths)."""

    # benchmark
    dataset: str = "cifar10"
    imbalance: str = "exp"  # "exp", "step" or "none" (keep the data as they are)
    ratio: float = 100.0  # rho = n_max / n_min, at least 1
    max_per_class: int | None = None  # shrink n_max (the shape and rho stay); None keeps the paper's n_max
    subset_seed: int = 0  # np.random.seed of the LDAM-DRW subset choice (the reference uses 0)
    # model and method
    model: str = "auto"  # "auto": resnet32 for 32x32 data, resnet18 for Tiny-ImageNet
    method: str = "erm"  # a loss, optionally "+" a mixing method: "mfw+ldam-drw", "remix", ...
    sampler: str = "instance"  # instance, class, sqrt, progressive, drs (class-balanced from drw_epoch)
    # optimisation (LDAM-DRW protocol; schedule points are scaled to `epochs` when left as None)
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    warmup_epochs: float | None = None  # None: 5/200 of the epochs (5 for 200); linear
    warmup_per: str = "iteration"  # the warm-up ramp rises each "iteration" (ours), or each "epoch" as in the
    # LDAM-DRW reference code (lr * (e + 1) / 5 through epoch e = 0..4)
    lr_milestones: tuple[int, ...] | None = None  # None: 0.8 and 0.9 of the epochs (CIFAR), 0.75 (Tiny)
    lr_factors: tuple[float, ...] | None = None  # multipliers of lr at each milestone: (0.01, 1e-4) / (0.1,)
    drw_epoch: int | None = None  # None: the first milestone (160 of 200); also DRS's switch epoch
    # losses
    cb_beta: float = 0.9999  # class-balanced weights (1 - beta) / (1 - beta ** n_c), normalised to sum C
    focal_gamma: float = 1.0
    ldam_max_margin: float = 0.5  # margins proportional to n_c ** -1/4, the largest equal to this
    ldam_scale: float = 30.0
    la_tau: float = 1.0  # logit adjustment: logits + tau * log prior (tau=1 is balanced softmax)
    # major feature weakening (MFW), our reconstruction of the paper's method
    mfw_point: str = "stage1"  # where features are mixed: input, stem, stage1..3(4), feature, or "random"
    mfw_random_points: tuple[str, ...] = ("stem", "stage1", "stage2")  # choices when mfw_point="random"
    mfw_select: str = "median"  # p(c): median (n_c >= median count), power, inverse, all
    mfw_prob: float = 1.0  # the largest selection probability, p(c) = mfw_prob * rule(c)
    mfw_gamma: float = 1.0  # exponent of the "power" rule ((n_c - n_min) / (n_max - n_min)) ** gamma
    mfw_lam: str = "uniform"  # law of lam: uniform on [mfw_lam_min, 1], beta(a, a), beta-folded (lam >= .5)
    mfw_lam_min: float = 0.5
    mfw_alpha: float = 1.0  # a of the beta laws
    mfw_active: str = "always"  # "always", or "until-drw": off from drw_epoch on
    # label-mixing relatives
    mixup_alpha: float = 1.0
    manifold_points: tuple[str, ...] = ("input", "stem", "stage1", "stage2")
    remix_kappa: float = 3.0
    remix_tau: float = 0.5
    # evaluation and numerics
    eval_per_class: int | None = None  # per-epoch test curve on this many test images a class (None: all; 0:
    # no curve, the test set is seen at the last epoch only); the last epoch is evaluated on the final test set:
    test_per_class: int | None = None  # the final test set: this many test images a class (None: all of them)
    clean_per_class: int | None = 200  # clean training accuracy each epoch (eval mode, no augmentation, no
    # mixing) on the first this-many training images of each class in the subset's (seeded, shuffled) order:
    # every image of a class smaller than that. None: the whole training set
    full_test_every: int = 0  # also evaluate the final test set every this many epochs (0: at the last epoch only):
    # the epochs a best-on-test number (what the LDAM-DRW reference code reports) is taken over
    full_test_final_lr: bool = False  # and at every epoch at the final learning rate (after the last milestone),
    # where the reference's best test epoch falls; neither changes training, only what is measured
    val_per_class: int | None = None  # a balanced validation split of this many images a class, taken from the
    # training images the imbalanced subset leaves unused (the last ones of each class's seeded shuffle), evaluated
    # every epoch; it never changes training. None: no validation split (every result before it)
    precision: str = "auto"  # auto: bf16 autocast on CUDA (where supported), fp32 on every CPU (see train.use_bf16)
    seed: int = 0
    profile: str = "paper"  # the named profile these values came from (recorded, part of the hash)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def loss(self) -> str:
        return split_method(self.method)[0]

    @property
    def mixer(self) -> str | None:
        return split_method(self.method)[1]

    def resolved_model(self) -> str:
        if self.model != "auto":
            return self.model
        return "resnet18" if self.dataset == "tinyimagenet" else "resnet32"

    def schedule(self) -> tuple[float, tuple[int, ...], tuple[float, ...], int]:
        """(warm-up epochs, lr milestones, lr factors, DRW epoch), scaled to self.epochs when not set."""
        tiny = self.dataset == "tinyimagenet"
        e = self.epochs
        warm = self.warmup_epochs if self.warmup_epochs is not None else (0.0 if tiny else 5 * e / 200)
        fracs, facs = ((0.75,), (0.1,)) if tiny else ((0.8, 0.9), (0.01, 1e-4))
        miles = self.lr_milestones if self.lr_milestones is not None else tuple(round(f * e) for f in fracs)
        factors = self.lr_factors if self.lr_factors is not None else facs
        drw = self.drw_epoch if self.drw_epoch is not None else miles[0]
        return float(warm), tuple(miles), tuple(factors), int(drw)

    def key(self) -> str:
        """A stable 12-hex hash of every field: the name of the run's folder in the result store."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """Every field, except a field added after results were stored while it holds the value those results
        had (KEY_NEUTRAL): so the keys and stored configs of earlier runs stay what they were."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if not (k in KEY_NEUTRAL and v == KEY_NEUTRAL[k])}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        _check_fields(d)
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        return f"{self.dataset} {self.imbalance}-{self.ratio:g} {self.method} seed {self.seed} ({self.profile})"


# Fields added after results were committed, with the value every earlier run had: left out of to_dict (and so of
# the key) at that value, so that adding a field never renames the stored runs.
KEY_NEUTRAL: dict[str, Any] = {"val_per_class": None, "full_test_every": 0, "full_test_final_lr": False,
                                "warmup_per": "iteration"}
WARMUP_PER = ("iteration", "epoch")


def _check_fields(values: dict[str, Any]) -> None:
    unknown = set(values) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")


def split_method(method: str) -> tuple[str, str | None]:
    """'mfw+ldam-drw' -> ('ldam-drw', 'mfw'); 'remix' -> ('erm', 'remix'). Raises ConfigError."""
    parts = [p.strip().lower() for p in method.split("+") if p.strip()]
    losses = [p for p in parts if p in LOSSES]
    mixers = [p for p in parts if p in MIXERS]
    bad = [p for p in parts if p not in LOSSES and p not in MIXERS]
    if bad or not parts:
        raise ConfigError(
            f"unknown method {method!r}: compose one of {', '.join(LOSSES)} with at most one of {', '.join(MIXERS)} using '+'"
        )
    if len(losses) > 1 or len(mixers) > 1:
        raise ConfigError(f"method {method!r} names more than one loss or more than one mixing method")
    return (losses[0] if losses else "erm"), (mixers[0] if mixers else None)


# Profiles: named sets of overrides of RunConfig's defaults.
# cpu: sized by measurement on 2 CPU cores (see README "Profiles"); smoke: seconds, for tests and CI.
PROFILES: dict[str, dict[str, Any]] = {
    # paper: the LDAM-DRW protocol. Its evaluation is sized so that a CPU run spends at most about a tenth of its
    # wall evaluating (measured on a 2-core AMD EPYC: a training step 106 img/s, evaluation 390 img/s, one
    # thread): the per-epoch test curve and the clean training accuracy on 100 images a class, the whole test set
    # every 10 epochs and at every epoch at the final learning rate (best-on-test is taken over those), and at
    # the last epoch (the primary number)
    "paper": {"eval_per_class": 100, "clean_per_class": 100, "full_test_every": 10, "full_test_final_lr": True},
    # cpu: the smallest CIFAR-10 regime measured to leave the under-fitting phase (step-100 keeps 20 images a
    # minor class); the LDAM-DRW schedule scaled to 80 epochs (warm-up 2, x0.01 at 64, x0.0001 at 72)
    "cpu": {"max_per_class": 2000, "epochs": 80, "eval_per_class": 200},
    "smoke": {"max_per_class": 100, "epochs": 2, "batch_size": 64, "eval_per_class": 20, "test_per_class": 50,
              "clean_per_class": 20},
}


class _ExplicitNone:
    """The value None given on purpose (`--set field=none`), where make_config ignores a plain None (an option
    that was not given)."""

    def __repr__(self) -> str:
        return "NONE"


NONE = _ExplicitNone()


def canonical_method(method: Any) -> Any:
    """One spelling per method, that of the committed runs: the mixing method first, then the loss unless it is
    erm, lower case ('LDAM-DRW + MFW' -> 'mfw+ldam-drw', 'erm+remix' -> 'remix'); a bad method is returned
    as it is, for validate to report."""
    if not isinstance(method, str):
        return method
    try:
        loss, mixer = split_method(method)
    except ConfigError:
        return method
    return loss if mixer is None else mixer + ("" if loss == "erm" else f"+{loss}")


def _canonical(values: dict[str, Any]) -> dict[str, Any]:
    """Spellings of one run that must give one key: the method's, and the ratio under imbalance none (where it
    selects nothing: it is set to RunConfig's default)."""
    out = {}
    if "method" in values:
        out["method"] = canonical_method(values["method"])
    if values.get("imbalance", RunConfig.imbalance) == "none":
        out["ratio"] = int(RunConfig.ratio)
    return out


def make_config(profile: str = "paper", **overrides: Any) -> RunConfig:
    """A validated RunConfig: profile defaults, then `overrides` (None values are ignored; NONE sets None).
    The method's spelling and, under imbalance none, the unused ratio are made canonical, and so are the fields
    the run does not use and the values that spell out a default (`canonical_config`): one training, one key."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    values = dict(PROFILES[profile])
    dataset = overrides.get("dataset") or "cifar10"
    if dataset == "tinyimagenet" and profile == "paper":
        values["epochs"] = 120
    values.update({k: (None if v is NONE else v) for k, v in overrides.items() if v is not None})
    values["profile"] = profile
    if isinstance(values.get("ratio", RunConfig.ratio), float) and float(values.get("ratio", RunConfig.ratio)).is_integer():
        # one key per run: --ratio 10 (a float from the command line) and ratio=10 (an int) are the same run
        values["ratio"] = int(values.get("ratio", RunConfig.ratio))
    values.update(_canonical(values))
    _check_fields(values)
    cfg = RunConfig(**values)
    validate(cfg)  # the values as given: a bad value of a field the run does not use is still an error
    cfg = canonical_config(cfg)
    validate(cfg)
    return cfg


# The fields only some runs use, with the test that says whether `c` uses them; every other field is used by every
# run. Where a run does not use a field, its value cannot change the training, so canonical_config sets it to
# RunConfig's default (tests/test_trust4.py trains each method with these fields changed and compares the weights).
def _uses_drw_epoch(c: RunConfig) -> bool:
    return c.loss in ("drw", "ldam-drw") or c.sampler == "drs" or (c.mixer == "mfw" and c.mfw_active == "until-drw")


USED_BY: dict[str, Any] = {
    "cb_beta": lambda c: c.loss in ("cb", "drw", "ldam-drw"),  # losses.class_weights
    "focal_gamma": lambda c: c.loss == "focal",
    "ldam_max_margin": lambda c: c.loss.startswith("ldam"),  # losses.Criterion: margins and scale of the cosine
    "ldam_scale": lambda c: c.loss.startswith("ldam"),
    "la_tau": lambda c: c.loss == "logit-adjust",
    "drw_epoch": _uses_drw_epoch,  # the DRW losses' weights, the drs sampler, MFW until DRW
    "mfw_point": lambda c: c.mixer == "mfw",
    "mfw_random_points": lambda c: c.mixer == "mfw" and c.mfw_point == "random",
    "mfw_select": lambda c: c.mixer == "mfw",
    "mfw_prob": lambda c: c.mixer == "mfw",
    "mfw_gamma": lambda c: c.mixer == "mfw" and c.mfw_select == "power",  # mixing.selection_probs
    "mfw_lam": lambda c: c.mixer == "mfw",
    "mfw_lam_min": lambda c: c.mixer == "mfw" and c.mfw_lam == "uniform",  # mixing.draw_lam
    "mfw_alpha": lambda c: c.mixer == "mfw" and c.mfw_lam != "uniform",
    "mfw_active": lambda c: c.mixer == "mfw",
    "mixup_alpha": lambda c: c.mixer in ("mixup", "manifold-mixup", "remix"),
    "manifold_points": lambda c: c.mixer == "manifold-mixup",
    "remix_kappa": lambda c: c.mixer == "remix",
    "remix_tau": lambda c: c.mixer == "remix",
    "warmup_per": lambda c: c.schedule()[0] > 0,  # train.lr_at: how the warm-up rises, when there is one
}


def canonical_config(cfg: RunConfig) -> RunConfig:
    """cfg with one spelling for one training: a field cfg does not use (USED_BY) at RunConfig's default; a
    schedule value equal to what None resolves to (warm-up, milestones, factors, DRW epoch) as None; model
    "auto" where the named model is what auto resolves to; max_per_class None where it keeps a named benchmark's
    every image. Every committed run is already in this form (its key does not change)."""
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    changes: dict[str, Any] = {name: defaults[name] for name, used in USED_BY.items()
                               if not used(cfg) and getattr(cfg, name) != defaults[name]}
    c = cfg.replace(**changes)
    plain = c.replace(warmup_epochs=None, lr_milestones=None, lr_factors=None)
    warm, miles, factors, _ = plain.schedule()
    if c.warmup_epochs is not None and c.warmup_epochs == warm:
        changes["warmup_epochs"] = None
    if c.lr_milestones is not None and tuple(c.lr_milestones) == miles:
        changes["lr_milestones"] = None
    if c.lr_factors is not None and tuple(c.lr_factors) == factors:
        changes["lr_factors"] = None
    c = cfg.replace(**changes)
    if c.drw_epoch is not None and c.drw_epoch == c.replace(drw_epoch=None).schedule()[3]:
        changes["drw_epoch"] = None
    if c.model != "auto" and c.model == c.replace(model="auto").resolved_model():
        changes["model"] = "auto"
    if c.dataset in PAPER_SIZES and c.max_per_class is not None and not isinstance(c.max_per_class, bool) \
            and isinstance(c.max_per_class, int) and c.max_per_class >= PAPER_SIZES[c.dataset][1]:
        changes["max_per_class"] = None
    return cfg.replace(**changes) if changes else cfg


def _finite(value: Any, name: str, lo: float, hi: float = math.inf, strict: bool = False, hi_open: bool = False) -> None:
    """ConfigError unless value is a finite number in [lo, hi] (lo excluded when strict, hi when hi_open)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > lo if strict else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        lo_s, hi_s = ("(" if strict else "[") + f"{lo:g}", f"{hi:g}" + (")" if hi_open or hi == math.inf else "]")
        raise ConfigError(f"impossible {name} {value!r}: a finite number in {lo_s}, {hi_s}")


def _integer(value: Any, name: str, lo: int, hi: int | None = None) -> None:
    """ConfigError unless value is an integer (not a bool, not a float such as 1e23) in [lo, hi]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        raise ConfigError(f"impossible {name} {value!r}: an integer in [{lo}, {'inf' if hi is None else f'{hi:,}'}]"
                          + (f" (MAX_{name.upper()} in procrustes/training/config.py)" if hi else ""))


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")


def validate(cfg: RunConfig) -> None:
    """Raise ConfigError naming the first bad value; needs no data and no model."""
    _choice("dataset", cfg.dataset, DATASETS)
    _choice("imbalance", cfg.imbalance, IMBALANCES)
    _choice("model", cfg.model, MODELS)
    _choice("sampler", cfg.sampler, SAMPLERS)
    _choice("mfw_select", cfg.mfw_select, MFW_SELECT)
    _choice("mfw_lam", cfg.mfw_lam, MFW_LAM)
    _choice("mfw_active", cfg.mfw_active, MFW_ACTIVE)
    _choice("precision", cfg.precision, PRECISIONS)
    _choice("warmup_per", cfg.warmup_per, WARMUP_PER)
    split_method(cfg.method)
    _check_sequences(cfg)
    if not (isinstance(cfg.ratio, (int, float)) and cfg.ratio >= 1):
        raise ConfigError(f"impossible ratio {cfg.ratio!r}: rho = n_max / n_min must be a number >= 1")
    _integer(cfg.epochs, "epochs", 1, MAX_EPOCHS)
    _integer(cfg.batch_size, "batch_size", 2, MAX_BATCH_SIZE)
    if cfg.max_per_class is not None:
        _integer(cfg.max_per_class, "max_per_class", 1)
    if cfg.drw_epoch is not None:
        _integer(cfg.drw_epoch, "drw_epoch", 0)
    if cfg.lr_milestones is not None:
        for m in cfg.lr_milestones:
            _integer(m, "lr_milestones entry", 1)
    if not isinstance(cfg.full_test_every, int) or isinstance(cfg.full_test_every, bool) or cfg.full_test_every < 0:
        raise ConfigError(f"impossible full_test_every {cfg.full_test_every!r}: an integer of at least 0 (0: the last epoch only)")
    if not isinstance(cfg.full_test_final_lr, bool):
        raise ConfigError(f"impossible full_test_final_lr {cfg.full_test_final_lr!r}: true or false")
    for name in ("eval_per_class", "test_per_class", "clean_per_class", "val_per_class"):
        v, lo = getattr(cfg, name), (0 if name == "eval_per_class" else 1)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
            hint = " (0: no per-epoch test curve)" if lo == 0 else ""
            raise ConfigError(f"impossible {name} {v!r}: an integer of at least {lo}{hint}")
    _finite(cfg.lr, "lr", lo=0.0, strict=True)
    _finite(cfg.momentum, "momentum", lo=0.0, hi=1.0, hi_open=True)
    _finite(cfg.weight_decay, "weight_decay", lo=0.0)
    _finite(cfg.cb_beta, "cb_beta", lo=0.0, hi=1.0, hi_open=True)
    _finite(cfg.focal_gamma, "focal_gamma", lo=0.0)
    _finite(cfg.ldam_max_margin, "ldam_max_margin", lo=0.0)
    _finite(cfg.ldam_scale, "ldam_scale", lo=0.0, strict=True)
    _finite(cfg.la_tau, "la_tau", lo=0.0)
    _finite(cfg.mfw_gamma, "mfw_gamma", lo=0.0)
    _finite(cfg.mfw_alpha, "mfw_alpha", lo=0.0, strict=True)
    _finite(cfg.mixup_alpha, "mixup_alpha", lo=0.0, strict=True)
    _finite(cfg.remix_kappa, "remix_kappa", lo=0.0, strict=True)
    _finite(cfg.remix_tau, "remix_tau", lo=0.0, hi=1.0)
    for name in ("seed", "subset_seed"):
        if not isinstance(getattr(cfg, name), int) or not 0 <= getattr(cfg, name) < 2**32:
            raise ConfigError(f"impossible {name} {getattr(cfg, name)!r}: an integer in [0, 2**32)")
    if cfg.profile not in PROFILES:
        raise ConfigError(f"unknown profile {cfg.profile!r}: choose one of {', '.join(PROFILES)}")
    _check_schedule(cfg)
    _check_mixing(cfg)
    _check_counts(cfg)


def _check_schedule(cfg: RunConfig) -> None:
    warm, miles, factors, drw = cfg.schedule()
    if not (math.isfinite(warm) and 0 <= warm <= cfg.epochs):
        raise ConfigError(f"impossible warmup_epochs {warm!r}: between 0 and epochs ({cfg.epochs})")
    if list(miles) != sorted(miles) or any(not 0 < m <= cfg.epochs for m in miles):
        raise ConfigError(f"impossible lr_milestones {miles!r}: increasing epochs in 1..{cfg.epochs}")
    if len(factors) != len(miles) or any(not (math.isfinite(f) and f > 0) for f in factors):
        raise ConfigError(f"lr_factors {factors!r} must be positive, one per milestone {miles!r}")
    if not 0 <= drw <= cfg.epochs:
        raise ConfigError(f"impossible drw_epoch {drw!r}: between 0 and epochs ({cfg.epochs})")


def _check_mixing(cfg: RunConfig) -> None:
    if not 0 <= cfg.mfw_prob <= 1:
        raise ConfigError(f"impossible mfw_prob {cfg.mfw_prob!r}: a probability in [0, 1]")
    if not 0 <= cfg.mfw_lam_min <= 1:
        raise ConfigError(f"impossible mfw_lam_min {cfg.mfw_lam_min!r}: must lie in [0, 1]")
    points = mixing_points(cfg.resolved_model())
    for p in ((cfg.mfw_point,) if cfg.mfw_point != "random" else cfg.mfw_random_points) + cfg.manifold_points:
        if p not in points:
            raise ConfigError(f"unknown mixing point {p!r} for {cfg.resolved_model()}: choose one of {', '.join(points)}")


def _check_counts(cfg: RunConfig) -> None:
    """A named benchmark's counts must keep at least one image a class (user folders are checked on loading)."""
    if cfg.dataset != "imagefolder" and cfg.imbalance != "none":
        num_classes, paper_n_max = PAPER_SIZES[cfg.dataset]
        n_max = paper_n_max if cfg.max_per_class is None else min(cfg.max_per_class, paper_n_max)
        try:
            counts = class_counts(num_classes, n_max, cfg.imbalance, cfg.ratio)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if min(counts) < 1:
            raise ConfigError(
                f"impossible ratio {cfg.ratio:g} for n_max={n_max}: the smallest class would keep no image"
            )


def _check_sequences(cfg: RunConfig) -> None:
    """An empty list of milestones or of mixing points is an error here, not an IndexError or a failure in the
    middle of training."""
    if cfg.lr_milestones is not None and len(cfg.lr_milestones) == 0:
        raise ConfigError("lr_milestones is empty: give at least one epoch, or none for the scaled default")
    for name in ("mfw_random_points", "manifold_points"):
        if not isinstance(getattr(cfg, name), tuple) or len(getattr(cfg, name)) == 0:
            raise ConfigError(f"{name} must name at least one mixing point, got {getattr(cfg, name)!r}")


def _optional(name: str) -> bool:
    """Whether RunConfig's field `name` may be None."""
    return "None" in str(next(f.type for f in dataclasses.fields(RunConfig) if f.name == name))


def parse_assignment(text: str) -> tuple[str, Any]:
    """'mfw_prob=0.5' -> ('mfw_prob', 0.5), typed by the RunConfig field; for --set on the command line."""
    if "=" not in text:
        raise ConfigError(f"bad --set {text!r}: expected field=value")
    name, raw = text.split("=", 1)
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    if name not in fields:
        raise ConfigError(f"unknown config field {name!r} in --set")
    if name == "profile":
        raise ConfigError("profile cannot be set with --set: use --profile")
    default = fields[name].default
    if raw.lower() == "none" and not _optional(name) and not isinstance(default, str):
        raise ConfigError(f"{name} cannot be none: give it a value")
    try:
        if raw.lower() == "none" and _optional(name):
            return name, None
        if isinstance(default, tuple) or name in ("lr_milestones", "lr_factors"):
            conv = float if name == "lr_factors" else (int if name == "lr_milestones" else str)
            return name, tuple(conv(x) for x in raw.split(",") if x)
        if isinstance(default, bool):
            return name, raw.lower() in ("1", "true", "yes")
        if isinstance(default, float) or name in ("warmup_epochs",):
            return name, float(raw)
        if isinstance(default, int) or name in ("max_per_class", "drw_epoch", "eval_per_class", "test_per_class", "clean_per_class",
                                                            "val_per_class"):
            return name, int(raw)
    except ValueError:
        raise ConfigError(f"bad value {raw!r} for {name}") from None
    return name, raw


def base_config(c: RunConfig) -> RunConfig:
    """c's benchmark, method and seed with its profile's defaults for everything else: the run an ablation
    variant changes one field of."""
    return make_config(c.profile, dataset=c.dataset, imbalance=c.imbalance, ratio=c.ratio, method=c.method, seed=c.seed)


def run_label(c: RunConfig) -> str:
    """c.label() plus the fields that differ from its profile's defaults, so that ablation variants of one method
    can be told apart in lists of runs."""
    base = base_config(c)
    diff = [f"{f.name}={getattr(c, f.name)}" for f in dataclasses.fields(c) if getattr(c, f.name) != getattr(base, f.name)]
    return c.label() + (f" [{', '.join(diff)}]" if diff else "")


__all__ = ["RunConfig", "base_config", "run_label", "ConfigError", "NONE", "PROFILES", "make_config", "canonical_method",
           "canonical_config", "USED_BY", "MAX_EPOCHS", "MAX_BATCH_SIZE",
           "validate", "split_method", "WARMUP_PER", "parse_assignment", "MIXING_POINTS", "mixing_points"]
