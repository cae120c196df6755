#!/usr/bin/env bash
# The old recipe against this checkout's, two full `dvc repro` runs one after the
# other on this machine (forced: both train from scratch), then the table (reports/recipe-comparison.md).
# Usage: bench/recipe.sh [OLD_COMMIT]   (default c8f5a6a, the 20-epoch recipe)
# The old commit runs in a git worktree beside this checkout, sharing .venv; each
# run has its own checkout on PYTHONPATH, so it imports its own pipeline, not the
# venv's editable install of this one.
set -euo pipefail
old=${1:-c8f5a6a}
root=$(git rev-parse --show-toplevel)
wt=${RECIPE_WORKTREE:-$root/../recipe-$old}
export PATH="$root/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2 GX_ANALYTICS_ENABLED=false
if [ -z "${DATA_MIRROR_DIR:-}" ] && [ -d "$root/../shared/data/mnist" ]; then
  export DATA_MIRROR_DIR="$root/../shared/data/mnist"
fi
[ -d "$wt" ] || git -C "$root" worktree add --detach "$wt" "$old"
[ -e "$wt/.venv" ] || ln -s "$root/.venv" "$wt/.venv"
echo "old recipe ($old) in $wt: log $wt/recipe.log"
(cd "$wt" && PYTHONPATH="$wt" dvc repro -f > recipe.log 2>&1)
echo "this checkout: log reports/real-run.log"
(cd "$root" && PYTHONPATH="$root" dvc repro -f > reports/real-run.log 2>&1)
(cd "$root" && PYTHONPATH="$root" python bench/compare_runs.py "$wt" "$root" \
   --out reports/recipe-comparison.md)
