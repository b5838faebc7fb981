#!/usr/bin/env bash
# A standalone check of a GPU machine without internet (`make gpu-check`, or `bash scripts/gpu_check.sh`), about 4
# minutes at most ($GPU_CHECK_BUDGET_S, default 240), every step eager and short enough to end in it:
#   1. CIFAR-10: extracts cifar10-jpeg.tar.gz ($CIFAR10_TAR, else ../shared/data/, shared/data/ or data/) into
#      data/cifar10 ($PROCRUSTES_DATA/cifar10) when that holds no train/ folder yet;
#   2. python -m procrustes bench on CUDA (at most 100 s): images/s of our trainer against the reference pipeline,
#      the augmentation check and a short accuracy comparison;
#   3. a 3-epoch paper-profile CIFAR-10 exp-100 ERM run, eager, into a throw-away store ($GPU_CHECK_RESULTS,
#      default /tmp/procrustes-gpu-check) (at most 60 s): its training images/s, epoch times, test accuracy;
#   4. bench --packed 3 --packed-epochs 2 with the time left (at least 40 s).
# A harvest lease needs none of this: `make gpu-harvest` runs its own short check (a few eager epochs) first.
# Outputs: bench.log, train.log, packing.log, result.json and summary.txt in $OUT when it is set (else in a
# temporary folder, printed at the end).
#   --smoke (or GPU_CHECK_SMOKE=1): the same steps on the CPU at smoke size (a few steps), to check the script.
#   --data-only: step 1 alone.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

SMOKE=${GPU_CHECK_SMOKE:-0}
DATA_ONLY=0
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    --data-only) DATA_ONLY=1 ;;
    *) echo "usage: bash scripts/gpu_check.sh [--smoke] [--data-only]" >&2; exit 2 ;;
  esac
done

START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-240}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# a timeout of at most $1 seconds, at least $2, within the budget (timeout 0 would mean none)
limit() { local l; l=$(left); l=$(( l < $1 ? l : $1 )); echo $(( l < $2 ? $2 : l )); }

if [ -n "${PY:-}" ]; then :; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
OUTDIR=${OUT:-$(mktemp -d -t procrustes-gpu-check-XXXXXX)}
mkdir -p "$OUTDIR"

# ---- 1. data
DATA_DIR=${PROCRUSTES_DATA:-data}
if [ ! -d "$DATA_DIR/cifar10/train" ]; then
  tarball=""
  for t in "${CIFAR10_TAR:-}" ../shared/data/cifar10-jpeg.tar.gz shared/data/cifar10-jpeg.tar.gz data/cifar10-jpeg.tar.gz; do
    if [ -n "$t" ] && [ -f "$t" ]; then tarball=$t; break; fi
  done
  if [ -z "$tarball" ]; then
    echo "gpu-check: no CIFAR-10 in $DATA_DIR/cifar10 and no cifar10-jpeg.tar.gz (set CIFAR10_TAR)" >&2
    exit 1
  fi
  echo "== extracting $tarball into $DATA_DIR/cifar10"
  mkdir -p "$DATA_DIR/cifar10.partial"
  tar -xzf "$tarball" -C "$DATA_DIR/cifar10.partial"
  mkdir -p "$DATA_DIR/cifar10"
  mv "$DATA_DIR/cifar10.partial"/* "$DATA_DIR/cifar10"/ && rmdir "$DATA_DIR/cifar10.partial"
fi
echo "== data: $(ls "$DATA_DIR/cifar10/train" | wc -l) classes in $DATA_DIR/cifar10/train"
[ "$DATA_ONLY" = 1 ] && exit 0

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  BENCH_ARGS=(--steps 1 --rounds 1 --workers 0 --aug-samples 500)
  TRAIN_ARGS=(--profile smoke --ratio 10 --max-per-class 20 --epochs 1)
  PACKED=0
  RESULTS=${GPU_CHECK_RESULTS:-$(mktemp -d -t procrustes-gpu-check-store-XXXXXX)}
  [ -n "${GPU_CHECK_RESULTS:-}" ] || trap 'rm -rf "$RESULTS"' EXIT
else
  DEVICE=cuda
  BENCH_ARGS=(--steps 50 --rounds 3 --workers 4 --accuracy-steps 300)
  TRAIN_ARGS=(--profile paper --ratio 100 --epochs 3)
  PACKED=3
  RESULTS=${GPU_CHECK_RESULTS:-/tmp/procrustes-gpu-check}
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
echo "== python: $($PY -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available())')"

# ---- 2. bench (the reference pipeline's DataLoader workers use 4 processes, LDAM-DRW's default)
echo "== bench ($(left) s of the budget left)"
set +e
timeout $(limit 100 10) $PY -m procrustes bench --device $DEVICE "${BENCH_ARGS[@]}" 2>&1 | tee "$OUTDIR/bench.log"
bench_rc=${PIPESTATUS[0]}
set -e

# ---- 3. one paper run
echo "== train: cifar10 exp-100 ERM (${TRAIN_ARGS[*]}, eager) into $RESULTS ($(left) s of the budget left)"
set +e
PROCRUSTES_COMPILE=off timeout $(limit 60 20) $PY -m procrustes train --dataset cifar10 --imbalance exp --method erm \
  "${TRAIN_ARGS[@]}" --device $DEVICE --results "$RESULTS" 2>&1 | tee "$OUTDIR/train.log"
train_rc=${PIPESTATUS[0]}
set -e
set +e
$PY - "$RESULTS" "$OUTDIR" "${TRAIN_ARGS[@]}" <<'EOF' | tee "$OUTDIR/summary.txt"
import json, shutil, sys
from pathlib import Path
from procrustes.training.config import make_config
from procrustes.training.store import read_result_quiet, run_dir

results, out, argv = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
kw = dict(zip([a[2:].replace("-", "_") for a in argv[::2]], argv[1::2]))
profile = kw.pop("profile")
cfg = make_config(profile, dataset="cifar10", imbalance="exp", method="erm", **{k: (float(v) if k == "ratio" else int(v)) for k, v in kw.items()})
r = read_result_quiet(cfg, results)
if r is None:
    ck = run_dir(cfg, results) / "checkpoint.pt"
    print(f"train: no finished result for {cfg.label()} [{cfg.key()}]" + (f"; a checkpoint is in {ck}: run again to resume" if ck.exists() else ""))
    sys.exit(0)
shutil.copy(run_dir(cfg, results) / "result.json", out / "result.json")
p, s = r["provenance"], r["summary"]
print(f"train: {cfg.label()} [{cfg.key()}] on {p['device_name']} ({p['precision']}, torch {p['torch']})")
print(f"train: {p['train_images_per_s']:.0f} training images/s, wall {p['wall_s']:.1f} s for {len(r['history']['epoch'])} epochs "
      f"(epochs {', '.join(f'{s:.1f}' for s in r['history']['seconds'])} s, compiled {p['compiled']}) "
      f"({p['started_utc']} .. {p['finished_utc']})")
print(f"train: final test accuracy {100 * s['test_acc']:.2f}% (top-1 error {s['test_error']:.2f}%) on {s['test_images']} test images; "
      f"groups " + ", ".join(f"{g} {100 * a:.1f}%" for g, a in s["group_test_acc"].items() if a is not None))
EOF
[ "${PIPESTATUS[0]}" = 0 ] || echo "gpu-check: reading the result back failed"
set -e

# ---- 4. packing, with the time left
pack_rc=0
if [ "$PACKED" -gt 0 ] && [ "$(left)" -ge 40 ]; then
  echo "== bench --packed $PACKED ($(left) s of the budget left)"
  set +e
  timeout $(limit $(( $(left) - 5 )) 10) $PY -m procrustes bench --device $DEVICE --packed $PACKED --packed-epochs 2 2>&1 | tee "$OUTDIR/packing.log"
  pack_rc=${PIPESTATUS[0]}
  set -e
elif [ "$PACKED" -gt 0 ]; then
  echo "== bench --packed skipped: $(left) s of the budget left" | tee "$OUTDIR/packing.log"
fi

echo "== gpu-check: bench rc=$bench_rc, train rc=$train_rc, packing rc=$pack_rc, $(( $(date +%s) - START )) s; outputs in $OUTDIR"
ls -la "$OUTDIR"
[ "$bench_rc" = 0 ] && [ "$train_rc" = 0 ] && [ "$pack_rc" = 0 ]
