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
# --no-build-isolation: compile the extension against the torch installed above (DESIGN §5)
python -m pip install --quiet --no-build-isolation -e .
