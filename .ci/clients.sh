#!/usr/bin/env bash
# CI's clients stage, in a fresh venv outside the checkout: the torch / torchvision / timm of
# .ci/clients-requirements.txt, then exactly `pip install .` (built against that torch), then only
# the suites that need the clients (tests/test_swap_torchvision.py, tests/test_swap_timm.py), which
# skip everywhere else.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while read -r name; do unset "$name"; done < <(compgen -e | grep '^LOGO_ATTN_' || true)

start=$SECONDS
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r .ci/clients-requirements.txt
echo "clients: the clients installed in $((SECONDS - start)) s"
start=$SECONDS
# These suites run on the CPU; the clients' torch is a CUDA build, with which `pip install .` would
# also compile the CUDA kernels for every arch that torch lists (many minutes on 2 cores). The CUDA
# sources are compile-checked by the test stage, so this stage skips them.
LOGO_ATTN_SKIP_CUDA=1 pip install --quiet .
echo "clients: pip install . took $((SECONDS - start)) s"
cd "$work"  # from here on, logo_attn is the installed package, not the checkout
python -c 'import torchvision, timm, logo_attn; print("clients: torchvision", torchvision.__version__, "timm", timm.__version__)'
python -m pytest -c "$repo/pyproject.toml" --rootdir "$repo" -n 2 --dist loadgroup -p no:cacheprovider \
    "$repo/tests/test_swap_torchvision.py" "$repo/tests/test_swap_timm.py"
