#!/usr/bin/env bash
# Harvest on a GPU machine without internet (`make gpu-harvest`): within $HARVEST_BUDGET_S seconds (default 540,
# counted from this script's start), extract CIFAR-10 when data/cifar10/train is missing (gpu_check.sh
# --data-only: $CIFAR10_TAR, ../shared/data/, shared/data/ or data/cifar10-jpeg.tar.gz), measure the training
# speed (one bench line), train the most valuable paper-profile runs that results/paper lacks and that the
# estimate says will finish, packed on the GPU, and write ONE archive harvest-paper-<stamp>.tar.gz of their
# result.json files (plus harvest.log and harvest-summary.json) into $OUT (else a temporary folder, printed).
# Bring it back and run `make harvest-import FILE=...`.
#   --smoke (or HARVEST_SMOKE=1): the same path on the CPU at smoke-profile size, budget 90 s.
# Other knobs: HARVEST_RESULTS (a work store to keep, e.g. to resume), HARVEST_COMPILE_CAP_S (seconds allowed to
# measure torch.compile, default 45; 0 skips it), HARVEST_DEVICE.
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

bash scripts/gpu_check.sh --data-only
if [ -n "${PY:-}" ]; then :; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
[ "${ARGS[*]:-}" = "" ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec $PY -m procrustes.harvest run ${ARGS[@]+"${ARGS[@]}"}
