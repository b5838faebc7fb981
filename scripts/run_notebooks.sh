#!/usr/bin/env bash
# Execute notebooks headlessly from the stored results, for one profile (`make figures`):
#   bash scripts/run_notebooks.sh PROFILE NOTEBOOK...
# The cpu profile's executed notebooks replace the committed ones: their outputs are what a reader sees. Another
# profile's executed notebooks go to <figures>/<profile>/notebooks/ ($PROCRUSTES_FIGURES, else figures/), beside
# that profile's figures, so that the committed notebooks keep the cpu profile's outputs. Nothing trains here
# (PROCRUSTES_TRAIN_MISSING=0); $PY is the python with procrustes and papermill (default .venv/bin/python),
# $DEVICE the device a notebook would use (default auto).
set -euo pipefail
py=${PY:-.venv/bin/python}
papermill=$(dirname "$py")/papermill
profile=${1:?usage: run_notebooks.sh PROFILE NOTEBOOK...}
shift
"$py" -m procrustes.results.notebook check-profile "$profile"
for v in PROCRUSTES_FIGURES PROCRUSTES_RESULTS; do  # the kernels run in notebooks/: relative paths mean the same there
  if [ -n "${!v:-}" ]; then export "$v=$(realpath -m -- "${!v}")"; fi
done
figures=${PROCRUSTES_FIGURES:-figures}
for nb in "$@"; do
  if [ "$profile" = cpu ]; then
    out=$nb
  else
    out=$figures/$profile/notebooks/$(basename -- "$nb")
    mkdir -p -- "$(dirname -- "$out")"
  fi
  echo "== $nb ($profile) -> $out"
  PROCRUSTES_PROFILE=$profile PROCRUSTES_DEVICE=${DEVICE:-auto} PROCRUSTES_TRAIN_MISSING=0 \
    "$papermill" --cwd notebooks -k python3 --no-progress-bar -- "$nb" "$out"
  "$py" -m procrustes.results.notebook strip "$out"
done
