"""Bit-for-bit fingerprints of short eager runs: the history without timings, the summary and a sha256 of the
final weights. `scripts/fingerprint_runs.py` prints them (compare two outputs around a change that must not
alter results); tests/test_numerics_fingerprint.py compares a few of them with the expected file of this CPU
kind in `tests/numerics/`, so that training numerics change only on purpose.

Numerics are reproducible bit for bit on one kind of CPU with one torch build and one thread, not across them:
the same compiled run gave different first epochs on an AVX2 and on an AVX-512 CPU. So the expected file is
keyed by `cpu_kind()`.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import torch

# the runs of scripts/fingerprint_runs.py: the methods and mixing points a change could touch
RUNS = [
    {"method": "erm"},
    {"method": "mfw", "mfw_point": "stage1"},
    {"method": "mfw", "mfw_point": "stage2", "mfw_select": "power"},
    {"method": "ldam-drw"},
    {"method": "mixup"},
    {"method": "mfw", "val_per_class": 10, "eval_per_class": 0},
]
# the runs `make test` checks (ERM, MFW, LDAM-DRW: the methods of every verdict), a few seconds each
TEST_RUNS = [RUNS[0], RUNS[1], RUNS[3]]


def config(over: dict):
    """A fingerprint run: smoke profile, CIFAR-10 step-10, 2 epochs with DRW from the second."""
    from ..training.config import make_config

    return make_config("smoke", dataset="cifar10", imbalance="step", ratio=10, epochs=2, drw_epoch=1, **over)


def fingerprint(over: dict, root: Path, data_root=None) -> dict:
    """Train config(over) eager on the CPU into the store `root` and return its fingerprint: key, sha256 of the
    final weights (in state-dict order of sorted names), history (without the seconds) and summary (without the
    group definitions, which are words)."""
    from ..training.train import run

    cfg = config(over)
    res = run(cfg, results=root, device="cpu", data_root=data_root, progress=False, compile="off")
    weights = torch.load(next((Path(root) / cfg.profile).glob(f"{cfg.key()}-*")) / "model.pt", weights_only=True)
    h = hashlib.sha256()
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].cpu().numpy().tobytes())
    history = {k: v for k, v in res["history"].items() if k != "seconds"}
    summary = {k: v for k, v in res["summary"].items() if k not in ("groups", "group_test_acc", "group_definition")}
    return {"key": res["key"], "weights_sha256": h.hexdigest(), "history": history, "summary": summary}


def digest(fp: dict) -> dict:
    """What the expected file keeps of a fingerprint: the weights' sha256, a sha256 of the history and summary
    (as canonical JSON, floats in full), and a few readable numbers to say how far a change moved them."""
    blob = json.dumps({"history": fp["history"], "summary": fp["summary"]}, sort_keys=True).encode()
    return {"key": fp["key"], "weights_sha256": fp["weights_sha256"], "record_sha256": hashlib.sha256(blob).hexdigest(),
            "train_loss": fp["history"]["train_loss"], "test_error": fp["summary"]["test_error"]}


def cpu_kind() -> str:
    """A file-name-safe name for what decides CPU numerics: the vector ISA torch dispatches to, native bf16,
    the CPU's vendor and model name, and the torch build."""
    from ..training.store import cpu_has_bf16, cpu_model_name

    name = cpu_model_name()
    isa = torch.backends.cpu.get_cpu_capability()
    parts = [isa, "bf16" if cpu_has_bf16() else "", name, f"torch-{torch.__version__}"]
    return re.sub(r"[^a-z0-9.+-]+", "-", "_".join(p for p in parts if p).lower()).strip("-")
