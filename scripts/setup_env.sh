# Sourced by scripts/test.sh and scripts/run.sh: a .venv with the pinned requirements and logo_attn
# built in place (C++ extension included), reused when it is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt
# Editable, so the tests run the working tree. A plain `pip install -e .` would also compile against
# the torch above (build_backend/backend.py finds it); --no-build-isolation skips creating a build
# environment (setuptools, ninja: here already) on every run, and lets ninja rebuild only what changed.
python -m pip install --quiet --no-build-isolation -e .
