"""Bit-for-bit fingerprints of a handful of smoke runs (procrustes.tooling.fingerprint): the history without
timings and a sha256 of the final state dict, for ERM, MFW at two points, LDAM-DRW and mixup (and MFW with a
validation split). Run it before and after a change that must not alter results, and compare the two outputs:

    python scripts/fingerprint_runs.py > before.json   # ... change ...
    python scripts/fingerprint_runs.py > after.json && cmp before.json after.json

`make test` checks three of them against tests/numerics/<cpu kind>.json (tests/test_numerics_fingerprint.py).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from procrustes.tooling.fingerprint import RUNS, fingerprint


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = {json.dumps(o, sort_keys=True): fingerprint(o, Path(tmp)) for o in RUNS}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
