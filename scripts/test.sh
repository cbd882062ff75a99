#!/usr/bin/env bash
# The whole test suite from a fresh clone: set up .venv, build, run pytest (extra args go to pytest).
set -euo pipefail
source "$(dirname "$0")/setup_env.sh"
python -m logo_attn.info
python -m pytest -n 2 --dist loadgroup "$@"
