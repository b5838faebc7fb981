"""What decides a run's training, as opposed to what it measures: two configs with equal signatures train alike,
bit for bit on one machine (`training_signature`). Used to group the runs whose seed spreads are pooled
(`results.claims.config_groups`) and to mark ablation rows that are one training (`results.tables.ablation_table`)."""
from __future__ import annotations

import dataclasses
import json

from .config import RunConfig

# RunConfig fields that change what a run measures, never how it trains (the evaluation sets, the validation split)
MEASURE_ONLY = ("val_per_class", "eval_per_class", "test_per_class", "clean_per_class", "full_test_every",
                "full_test_final_lr")
# the fields of MFW's selection rule: two rules that give the same p(c) on a benchmark's counts train alike there
SELECTION_FIELDS = ("mfw_select", "mfw_gamma", "mfw_prob")


def training_signature(cfg: RunConfig | dict) -> str:
    """What decides a run's training, as canonical JSON: its config without the fields that only measure, and
    with MFW's selection rule replaced by the selection probabilities it gives on the benchmark's class counts
    (`mixing.selection_probs`): on step imbalance the median rule and the power rule (gamma 1) both give 1 to
    the major classes and 0 to the minor ones, so their runs are one training. Equal signatures, equal training
    (the seed included)."""
    from ..method.mixing import selection_probs
    from .data import benchmark_counts

    d = cfg.to_dict() if isinstance(cfg, RunConfig) else dict(cfg)
    c = RunConfig.from_dict(d)
    out = {k: v for k, v in dataclasses.asdict(c).items() if k not in MEASURE_ONLY + SELECTION_FIELDS}
    if c.mixer == "mfw":
        try:
            counts = benchmark_counts(c.dataset, c.imbalance, c.ratio, c.max_per_class)
            out["mfw_selection_probs"] = selection_probs(counts, c.mfw_select, c.mfw_prob, c.mfw_gamma).tolist()
        except Exception:  # counts that depend on files (an image folder): the rule's own fields then
            out.update({k: getattr(c, k) for k in SELECTION_FIELDS})
    return json.dumps(out, sort_keys=True, default=list)
