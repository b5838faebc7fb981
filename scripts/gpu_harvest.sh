#!/usr/bin/env bash
# Harvest on a lent GPU machine without internet (`make gpu-harvest`), one command a lease: within
# $HARVEST_BUDGET_S seconds (default 540, counted from this script's start), extract CIFAR-10 when
# data/cifar10/train is missing (gpu_check.sh --data-only: $CIFAR10_TAR, ../shared/data/, shared/data/ or
# data/cifar10-jpeg.tar.gz), then `python -m procrustes.tooling.harvest run`: take back the checkpoints that earlier
# leases carried (data/harvest-carry/*.tar, $HARVEST_CARRY), a GPU check (a few eager epochs, seconds), one bench
# line, the plan (printed), the runs packed on the GPU. Into $OUT (else a temporary folder, printed):
#   harvest-console.log                          everything this command printed, from its first second
#   harvest-paper-<stamp>.tar.gz                 the finished runs' result.json (+ harvest.log, harvest-summary.json),
#                                                rewritten each time a run finishes
#   harvest-carry-paper-<stamp>.tar              checkpoints of the runs to finish in the next lease
# A kill at any moment leaves the last complete version of each. Back here: `make harvest-import FILE=...` for the
# archive; the carry file goes into data/harvest-carry/ for the next lease (README: "Harvesting ...").
#   --smoke (or HARVEST_SMOKE=1): the same path on the CPU at smoke size, 90 s x how busy the CPU is.
# Other knobs: HARVEST_RESULTS (a work store to keep), HARVEST_DEVICE, HARVEST_COMPILE_CAP_S (a compile probe
# only makes sense with PROCRUSTES_COMPILE=on: the harvest trains eager), PROCRUSTES_DECODE_WORKERS.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HARVEST_T0=${HARVEST_T0:-$(date +%s)}

ARGS=()
for a in "$@"; do
  case "$a" in
    --smoke) ARGS+=(--smoke) ;;
    *) echo "usage: bash scripts/gpu_harvest.sh [--smoke]" >&2; exit 2 ;;
  esac
done
[ "${HARVEST_SMOKE:-0}" = 1 ] && ARGS+=(--smoke)

# the console log, in $OUT from the first second: whatever kills this command, it comes back
export OUT=${OUT:-$(mktemp -d -t procrustes-harvest-out-XXXXXX)}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/harvest-console.log") 2>&1
echo "== gpu-harvest $(date -u +%FT%TZ): output in $OUT; commit $(git rev-parse HEAD 2>/dev/null || head -1 .procrustes-commit 2>/dev/null || echo unknown)"
ls -la data/harvest-carry 2>/dev/null | sed 's/^/   carry: /' || true

bash scripts/gpu_check.sh --data-only
if [ -n "${PY:-}" ]; then :; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
[ "${ARGS[*]:-}" = "" ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
set +e
$PY -m procrustes.tooling.harvest run ${ARGS[@]+"${ARGS[@]}"}
rc=$?
set -e
echo "== gpu-harvest: rc $rc, $(( $(date +%s) - HARVEST_T0 )) s; files in $OUT:"
ls -la "$OUT"
exit $rc
