"""What a result.json must be to enter the store from elsewhere (a harvest archive): everything the store's own
writer (`procrustes.training.train.finish`) guarantees, checked before a byte is written.

Types and ranges (errors in [0, 100], accuracies and shares in [0, 1], one history entry an epoch, no NaN or
Infinity, which are not JSON), and agreement: the summary with the history it was computed from (the last
epoch's test and validation numbers, the best epoch, best-on-test over the full-test epochs, the learning rate
of every epoch), the overall accuracy with the per-class ones, each group's accuracy with its classes', the groups
and the schedule with what the config gives; a config in the one form make_config gives (else its key is one no
run is ever looked up under); strings that are plain text (no control or direction characters, no markup) since
they reach tables and claims.md. A refusal is one ValueError line naming the field."""
from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from typing import Any

from ..training import store
from ..training.config import NONE, ConfigError, RunConfig, make_config, validate

MAX_JSON_DEPTH = 16  # a result nests 4 levels deep; deeper is not a result (and deep enough breaks the parser)
HISTORY_KEYS = ("epoch", "lr", "train_loss", "train_acc", "feature_grad", "pred_major_share", "weakened_share",
                "test_acc", "test_top1", "seconds", "train_acc_clean", "pred_major_share_clean")
# history entries that hold one number a class, and the range of each history key
PER_CLASS = {"train_acc", "feature_grad", "pred_major_share", "test_acc", "train_acc_clean", "pred_major_share_clean",
             "val_acc"}
RANGE = {"lr": (0, math.inf), "train_loss": (0, math.inf), "feature_grad": (0, math.inf), "seconds": (0, math.inf),
         "epoch": (1, math.inf)}  # every other key: a share or an accuracy, in [0, 1]
MAX_TEXT = 300  # characters of one string of a result (a class name, a device name, a commit list)
COMMIT = re.compile(r"(unknown|[0-9a-f]{40}(\+dirty)?)(, [0-9a-f]{40}(\+dirty)?)*")
TOL = 1e-6  # float32 rounding of numbers the writer computed from the same counts


def expected_key(result: dict) -> str:
    """The store key a result must carry: its config's hash alone when it records no data, else the hash, '-'
    and the first 8 hex of its data's content id. The one place in the harvest that knows the key scheme."""
    cfg = RunConfig.from_dict(result["config"])
    data = result.get("data")
    return store.run_key(cfg, data["id"]) if data else cfg.key()


def _num(x: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    """A finite int or float (not a bool) in [lo, hi]."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi


def _int(x: Any, lo: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= lo


def json_depth(obj: Any) -> int:
    """How deeply lists and dicts nest in a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, todo = 0, [(obj, 1)]
    while todo:
        o, d = todo.pop()
        if isinstance(o, (list, dict)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                todo.extend((v, d + 1) for v in (o.values() if isinstance(o, dict) else o))
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes, what: str) -> Any:
    """JSON from bytes, or ValueError in one line (bad UTF-8, bad JSON, NaN or Infinity, nested too deeply)."""
    try:
        obj = json.loads(data.decode(), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"{what}: JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{what}: damaged json ({str(e)[:80]})") from None
    if json_depth(obj) > MAX_JSON_DEPTH:
        raise ValueError(f"{what}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    return obj


def plain_text(s: Any, limit: int = MAX_TEXT) -> bool:
    """A string readers may see in a table or claims.md: at most `limit` characters, none of them a control,
    format (such as a right-to-left override), unassigned or private character, a line separator, or markup
    (< > ` |)."""
    return isinstance(s, str) and len(s) <= limit and not any(
        unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp") or ch in "<>`|" for ch in s)


def _near(a: float, b: float, tol: float = TOL) -> bool:
    return abs(a - b) <= tol


def _need(ok: bool, where: str, what: str, value: Any = None) -> None:
    if not ok:
        shown = "" if value is None else f" {str(value)[:40]!r}"
        raise ValueError(f"{where}{shown} is not {what}")


# ---------------------------------------------------------------- the config


def check_config(d: Any, profile: str) -> RunConfig:
    """The config of a result: valid, of `profile`, and exactly the one make_config gives for its values (one
    spelling of one training: 'ERM' or an explicit null of a field that the key leaves out is another key, or a
    config no lookup ever compares equal)."""
    if not isinstance(d, dict):
        raise ValueError("no config")
    try:
        cfg = RunConfig.from_dict(d)
        validate(cfg)
        canon = make_config(cfg.profile, **{f.name: (NONE if getattr(cfg, f.name) is None else getattr(cfg, f.name))
                                            for f in dataclasses.fields(RunConfig) if f.name != "profile"})
    except (ConfigError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"unreadable or impossible config ({type(e).__name__}: {str(e)[:80]})") from None
    want = json.loads(json.dumps(canon.to_dict()))
    if canon.key() != cfg.key() or want != d:
        diff = sorted(k for k in set(d) | set(want) if json.dumps(d.get(k, "-")) != json.dumps(want.get(k, "-")))
        why = (f"its key {cfg.key()} is not the run's {canon.key()}" if canon.key() != cfg.key()
               else "the store would never find it under its key")
        raise ValueError(f"its config is not in the form make_config gives ({', '.join(diff) or 'number spelling'}): {why}")
    if cfg.profile != profile:
        raise ValueError(f"profile {cfg.profile!r} stored under {profile!r}")
    return cfg


# ---------------------------------------------------------------- the history


def history_keys(cfg: RunConfig) -> tuple[str, ...]:
    """The history keys the trainer writes for cfg (train._train): the validation curves with a validation split,
    the full-test accuracy with a full-test schedule."""
    return HISTORY_KEYS + (("val_acc", "val_top1") if cfg.val_per_class else ()) + \
        (("full_test_top1",) if cfg.full_test_every or cfg.full_test_final_lr else ())


def _may_be_none(key: str, cfg: RunConfig, epoch: int) -> bool:
    """Whether history[key][epoch] (0-based) may be null: the test curve between the last epochs when the run has
    none (eval_per_class 0), the full-test accuracy at the epochs that did not evaluate the final test set."""
    last = epoch == cfg.epochs - 1
    if key in ("test_acc", "test_top1"):
        return cfg.eval_per_class == 0 and not last
    return key == "full_test_top1"


def check_history(h: Any, cfg: RunConfig, classes: int) -> None:
    """ValueError naming the first history key that is not one entry an epoch of numbers in its range (per class
    where the key is per class), or whose nulls are not where the trainer leaves them."""
    from ..training.train import full_test_epoch

    if not isinstance(h, dict):
        raise ValueError("no history")
    for k in history_keys(cfg):
        v = h.get(k)
        if not isinstance(v, list) or len(v) != cfg.epochs:
            raise ValueError(f"history.{k} is not a list of {cfg.epochs} epochs")
        lo, hi = RANGE.get(k, (0, 1))
        for e, row in enumerate(v):
            if row is None:
                _need(_may_be_none(k, cfg, e), f"history.{k}[{e}]", "a number (null only where the run skips it)", "null")
                continue
            if k == "full_test_top1":
                _need(full_test_epoch(cfg, e), f"history.{k}[{e}]", "null (the run did not evaluate the final test set "
                      "then)", row)
            items = row if k in PER_CLASS else [row]
            if k in PER_CLASS and (not isinstance(row, list) or len(row) != classes):
                raise ValueError(f"history.{k}[{e}] is not a list of {classes} numbers, one a class")
            if not all(_num(x, lo, hi) for x in items):
                raise ValueError(f"history.{k} holds something other than finite numbers in [{lo:g}, {hi:g}]")
        if k == "full_test_top1":
            _need(all(v[e] is not None for e in range(cfg.epochs) if full_test_epoch(cfg, e)), f"history.{k}",
                  "a number at every epoch that evaluated the final test set")
    _need(h["epoch"] == list(range(1, cfg.epochs + 1)), "history.epoch", "1..epochs")


def check_lr(h: dict, cfg: RunConfig, train_images: int) -> None:
    """history.lr: each epoch's last step's learning rate, as train.lr_at gives it for cfg's schedule."""
    from ..training.train import lr_at

    steps = math.ceil(train_images / cfg.batch_size)
    want = [lr_at(cfg, e * steps + steps - 1, steps) for e in range(cfg.epochs)]
    bad = [e for e, (a, b) in enumerate(zip(h["lr"], want)) if not _near(a, b, 1e-9 * max(1.0, abs(b)))]
    _need(not bad, f"history.lr[{bad[0] if bad else 0}]", f"the schedule's learning rate ({want[bad[0]] if bad else 0:g})",
          h["lr"][bad[0]] if bad else None)


# ---------------------------------------------------------------- the summary


def _check_test(s: dict, h: dict, C: int) -> None:
    """The final test numbers: ranges, the overall accuracy against the per-class ones and against the last
    epoch of the history (the same evaluation), whole image counts."""
    _need(_num(s.get("test_error"), 0, 100), "summary.test_error", "a number in [0, 100]", s.get("test_error"))
    _need(_num(s.get("test_acc"), 0, 1), "summary.test_acc", "a number in [0, 1]", s.get("test_acc"))
    _need(abs(s["test_error"] - 100 * (1 - s["test_acc"])) < 1e-6, "summary.test_error", "100 x (1 - test_acc)", s["test_error"])
    _need(_num(s.get("top5_error"), 0, s["test_error"] + 1e-6), "summary.top5_error", "a number in [0, test_error]",
          s.get("top5_error"))
    per = s.get("test_acc_per_class")
    _need(isinstance(per, list) and len(per) == C and all(_num(a, 0, 1) for a in per), "summary.test_acc_per_class",
          f"a list of {C} numbers in [0, 1]", per)
    n = s.get("test_images")
    _need(_int(n, C), "summary.test_images", f"an integer of at least {C} (each class has test images)", n)
    eps = max(1e-3, 1e-6 * n)
    for name, acc in (("test_acc", s["test_acc"]), ("top5_error", 1 - s["top5_error"] / 100)):
        _need(abs(acc * n - round(acc * n)) <= eps, f"summary.{name}", f"a whole number of the {n} test images",
              s[name])
    _need(min(per) - TOL <= s["test_acc"] <= max(per) + TOL, "summary.test_acc", "within its per-class accuracies",
          s["test_acc"])
    if n % C == 0:  # a balanced test set (every named benchmark's): the overall accuracy is the mean over classes
        _need(_near(s["test_acc"], sum(per) / C, 1e-5), "summary.test_acc", "the mean of test_acc_per_class", s["test_acc"])
    one = 1.0 / n + TOL  # the last epoch evaluated the final test set: its numbers are the summary's
    _need(_near(h["test_top1"][-1], s["test_acc"], one), "summary.test_acc", "history.test_top1 at the last epoch",
          s["test_acc"])
    _need(all(_near(a, b, C / n + TOL) for a, b in zip(h["test_acc"][-1], per)), "summary.test_acc_per_class",
          "history.test_acc at the last epoch")


def _check_best(s: dict, h: dict, cfg: RunConfig) -> None:
    """best_epoch_test_acc (the curve's best, where the curve is the final test set) and best-on-test over the
    full-test epochs: what `train.summarise` computes from the history, and absent where it computes nothing."""
    best = s.get("best_epoch_test_acc")
    if cfg.eval_per_class == cfg.test_per_class:
        _need(best == max(h["test_top1"]), "summary.best_epoch_test_acc", "the best of history.test_top1", best)
    else:
        _need(best is None, "summary.best_epoch_test_acc", "null (the per-epoch curve is not the final test set)", best)
    full = h.get("full_test_top1")
    keys = ("best_test_acc", "best_test_error", "best_test_epoch", "full_test_epochs")
    if not full:
        _need(not any(k in s for k in keys), "summary.best_test_acc", "absent (the run evaluated the final test set at "
              "its last epoch only)", s.get("best_test_acc"))
        return
    done = [(a, e) for a, e in zip(full, h["epoch"]) if a is not None]
    acc, ep = max(done, key=lambda t: (t[0], -t[1]))
    _need(s.get("best_test_acc") == acc, "summary.best_test_acc", "the best of history.full_test_top1", s.get("best_test_acc"))
    _need(_num(s.get("best_test_error")) and _near(s["best_test_error"], 100 * (1 - acc)), "summary.best_test_error",
          "100 x (1 - best_test_acc)", s.get("best_test_error"))
    _need(s.get("best_test_epoch") == ep, "summary.best_test_epoch", f"the first epoch of the best ({ep})", s.get("best_test_epoch"))
    _need(s.get("full_test_epochs") == len(done), "summary.full_test_epochs", f"the epochs that evaluated it ({len(done)})",
          s.get("full_test_epochs"))


def _check_val(s: dict, h: dict, cfg: RunConfig, C: int) -> None:
    """The validation summary: the last epoch's validation numbers and which images the final model gets right,
    in agreement with each other; absent without a validation split."""
    keys = ("val_error", "val_acc_per_class", "val_correct", "val_images")
    if not cfg.val_per_class:
        _need(not any(k in s for k in keys), "summary.val_error", "absent (the run has no validation split)", s.get("val_error"))
        return
    _need(_num(s.get("val_error"), 0, 100) and _near(s["val_error"], 100 * (1 - h["val_top1"][-1])), "summary.val_error",
          "100 x (1 - history.val_top1 at the last epoch)", s.get("val_error"))
    per = s.get("val_acc_per_class")
    _need(per == h["val_acc"][-1], "summary.val_acc_per_class", "history.val_acc at the last epoch", per)
    n, bits = s.get("val_images"), s.get("val_correct")
    _need(n == cfg.val_per_class * C, "summary.val_images", f"val_per_class x classes ({cfg.val_per_class * C})", n)
    _need(isinstance(bits, str) and len(bits) == n and set(bits) <= {"0", "1"}, "summary.val_correct",
          f"a string of {n} 0s and 1s")
    _need(_near(bits.count("1") / n, h["val_top1"][-1], 1.0 / n + TOL), "summary.val_correct",
          "the last epoch's validation accuracy")
    _need(_near(h["val_top1"][-1], sum(per) / C, 1e-5), "history.val_top1", "the mean of val_acc (a balanced split)")


def _check_groups(s: dict, cfg: RunConfig, counts: list[int], C: int) -> None:
    """The reporting groups are those of the counts (counts.report_groups), each group's accuracy the mean of its
    classes' accuracies, the class names plain text, and the schedule the config's."""
    from ..method.counts import class_groups, group_definition, group_scale, report_group_definition, report_groups

    scale = group_scale(cfg.dataset, cfg.max_per_class)
    groups, gacc, per = s.get("groups"), s.get("group_test_acc"), s["test_acc_per_class"]
    # the writer's groups (report_groups), or the shot groups every group of (class_groups) that it wrote before
    forms = {json.dumps(report_groups(counts, cfg.imbalance, scale)): report_group_definition(counts, cfg.imbalance, scale),
             json.dumps(class_groups(counts, cfg.imbalance, scale)): group_definition(cfg.imbalance, scale)}
    _need(json.dumps(groups) in forms, "summary.groups", "the reporting groups of its counts", groups)
    _need(s.get("group_definition") == forms[json.dumps(groups)], "summary.group_definition",
          "the definition of its groups", s.get("group_definition"))
    _need(isinstance(gacc, dict) and set(gacc) == set(groups), "summary.group_test_acc", "one number a group", gacc)
    for g, members in groups.items():
        want = sum(per[c] for c in members) / len(members) if members else None
        ok = gacc[g] is None if want is None else _num(gacc[g], 0, 1) and _near(gacc[g], want)
        _need(ok, f"summary.group_test_acc[{g!r}]", "the mean of its classes' test accuracies", gacc[g])
    classes = s.get("classes")
    _need(isinstance(classes, list) and len(classes) == C and all(plain_text(c) and c for c in classes)
          and len(set(classes)) == C, "summary.classes", f"a list of {C} distinct plain-text class names", classes)
    warm, miles, factors, drw = cfg.schedule()
    want = {"warmup_epochs": warm, "lr_milestones": list(miles), "lr_factors": list(factors), "drw_epoch": drw}
    _need(s.get("schedule") == want, "summary.schedule", f"its config's schedule {want}", s.get("schedule"))


def check_counts(s: dict, cfg: RunConfig) -> list[int]:
    """summary.train_counts: positive class counts, those of its config's benchmark where that names them."""
    counts = s.get("train_counts")
    _need(isinstance(counts, list) and len(counts) >= 2 and all(_int(c, 1) for c in counts), "summary.train_counts",
          "a list of positive class counts", counts)
    if cfg.dataset != "imagefolder" and cfg.imbalance != "none":
        from ..training.data import benchmark_counts

        _need(counts == benchmark_counts(cfg.dataset, cfg.imbalance, cfg.ratio, cfg.max_per_class), "summary.train_counts",
              "the counts its config asks for", counts)
    return counts


def check_summary(s: dict, h: dict, cfg: RunConfig) -> None:
    """ValueError naming the first field of a result's summary that has the wrong type or an impossible value, or
    that disagrees with the history, its other fields or its config (the history is checked first)."""
    counts = check_counts(s, cfg)
    C = len(counts)
    _check_test(s, h, C)
    _check_best(s, h, cfg)
    _check_val(s, h, cfg, C)
    _check_groups(s, cfg, counts, C)


# ---------------------------------------------------------------- provenance, data, the whole result


def check_provenance(p: Any) -> None:
    """Its strings plain text (they reach tables and claims.md), its commits commit hashes, its numbers in range."""
    if not isinstance(p, dict):
        raise ValueError("no provenance")
    for k in ("git_commit", "device", "torch", "precision"):
        _need(isinstance(p.get(k), str), f"provenance.{k}", "a string", p.get(k))
    for k, v in p.items():
        for x in (v if isinstance(v, list) else [v]):
            _need(not isinstance(x, str) or plain_text(x), f"provenance.{k}", "plain text (no control, direction or "
                  "markup characters)", x)
    _need(COMMIT.fullmatch(p["git_commit"]) is not None, "provenance.git_commit", "commit hashes", p["git_commit"])
    if "git_commits" in p:
        _need(isinstance(p["git_commits"], list) and ", ".join(p["git_commits"]) == p["git_commit"],
              "provenance.git_commits", "the commits of git_commit", p["git_commits"])
    _need(p["precision"] in ("bf16", "fp32"), "provenance.precision", "bf16 or fp32", p["precision"])
    for k in ("wall_s", "train_images_per_s"):
        _need(_num(p.get(k), 0), f"provenance.{k}", "a number >= 0", p.get(k))
    for k in ("eval_s", "eval_batch"):
        _need(p.get(k) is None or _num(p[k], 0), f"provenance.{k}", "null or a number >= 0", p.get(k))


def check_result(result: Any, profile: str, folder: str) -> RunConfig:
    """ValueError saying why `result` (parsed from <profile>/<folder>/result.json) is not a finished, consistent
    result that may enter the store (see the module docstring); its config otherwise."""
    if not isinstance(result, dict) or not isinstance(result.get("summary"), dict):
        raise ValueError("not a finished result (no summary)")
    data = result.get("data")
    if not (isinstance(data, dict) and isinstance(data.get("id"), str) and len(data["id"]) >= 8
            and all(ch in "0123456789abcdef" for ch in data["id"])):
        raise ValueError("its data record has no content id")
    for k, v in data.items():
        _need(not isinstance(v, str) or plain_text(v), f"data.{k}", "plain text", v)
    cfg = check_config(result.get("config"), profile)
    key = expected_key(result)
    if result.get("key") != key:
        raise ValueError(f"key {result.get('key')!r} does not match its config and data ({key})")
    if folder != key:
        raise ValueError(f"folder {folder!r} does not match its key ({key})")
    s = result["summary"]
    counts = check_counts(s, cfg)
    check_history(result.get("history"), cfg, len(counts))
    check_summary(s, result["history"], cfg)
    check_lr(result["history"], cfg, sum(counts))
    check_provenance(result.get("provenance"))
    return cfg


__all__ = ["check_result", "check_config", "check_history", "check_summary", "check_provenance", "expected_key",
           "parse_json", "json_depth", "plain_text", "HISTORY_KEYS", "MAX_JSON_DEPTH"]
