#!/usr/bin/env bash
# The main job from a fresh clone: set up .venv, build, then the cost-scaling benchmark of LOGO
# attention against full and divided (TimeSformer) attention. Quick mode unless other arguments
# are given (e.g. `bash scripts/run.sh --device cuda` for the whole sweep on a GPU).
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python benchmarks/flops_vs_timesformer.py "${@:---quick}"
