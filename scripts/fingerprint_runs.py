"""Bit-for-bit fingerprints of a handful of smoke runs (issue 26): the history without timings and a sha256 of the
final state dict, for ERM, MFW at two points, LDAM-DRW and mixup (and MFW with a validation split). Run it before
and after a change that must not alter results, and compare the two outputs:

    python scripts/fingerprint_runs.py > before.json   # ... change ...
    python scripts/fingerprint_runs.py > after.json && cmp before.json after.json
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from procrustes.training.config import make_config
from procrustes.training.train import run

RUNS = [
    {"method": "erm"},
    {"method": "mfw", "mfw_point": "stage1"},
    {"method": "mfw", "mfw_point": "stage2", "mfw_select": "power"},
    {"method": "ldam-drw"},
    {"method": "mixup"},
    {"method": "mfw", "val_per_class": 10, "eval_per_class": 0},
]


def fingerprint(over: dict, root: Path) -> dict:
    cfg = make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, epochs=2, drw_epoch=1, **over)
    res = run(cfg, results=root, device="cpu", progress=False, compile="off")
    weights = torch.load(next((root / cfg.profile).glob(f"{cfg.key()}-*")) / "model.pt", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].cpu().numpy().tobytes())
    history = {k: v for k, v in res["history"].items() if k != "seconds"}
    summary = {k: v for k, v in res["summary"].items() if k not in ("groups", "group_test_acc", "group_definition")}
    return {"key": res["key"], "weights_sha256": h.hexdigest(), "history": history, "summary": summary}


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = {json.dumps(o, sort_keys=True): fingerprint(o, Path(tmp)) for o in RUNS}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
