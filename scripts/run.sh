#!/usr/bin/env bash
# The main job from a fresh clone: set up .venv, build, run the quick start.
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python examples/quickstart.py "$@"
