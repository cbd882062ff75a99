#!/usr/bin/env bash
# CI's compatibility stage, in a fresh venv outside the checkout:
#  (a) what a new user does: the pinned torch, then exactly `pip install .` (no flags, no LOGO_ATTN_*
#      variables); the `cpu` backend must be available and importing logo_attn must not warn;
#  (b) the Triton suites under the interpreter, and the sm_90 compile test, on the newest Triton and
#      NumPy (unpinned on purpose: a new release that breaks the kernels fails CI), against (a)'s install.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
while read -r name; do unset "$name"; done < <(compgen -e | grep '^LOGO_ATTN_' || true)

python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
# The torch of requirements-dev.txt: an unpinned torch is a multi-GB CUDA build.
python -m pip install --quiet "$(grep -E '^torch==' requirements-dev.txt)"

start=$SECONDS
pip install .
echo "compat: pip install . took $((SECONDS - start)) s"
cd "$work"  # from here on, logo_attn is the installed package, not the checkout
python -c '
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import logo_attn
from logo_attn._extension import ExtensionWarning
warned = [str(w.message) for w in caught if issubclass(w.category, ExtensionWarning)]
assert not warned, f"importing the plain install warned: {warned}"
cpu = logo_attn.available_backends()["cpu"]
assert cpu.available, f"plain pip install . gave no cpu backend: {cpu.reason}"
'
echo "compat: the plain install has the cpu backend and imports without a warning"

grep -v -E '^(torch|triton|numpy)\b' "$repo/requirements-dev.txt" > "$work/test-requirements.txt"
python -m pip install --quiet -r "$work/test-requirements.txt"
python -m pip install --quiet --upgrade triton numpy
python -m logo_attn.info
# -k triton selects every Triton test of every suite, test_triton_kernels.py whole (its name matches),
# the sm_90 compile test included.
TRITON_INTERPRET=1 python -m pytest -c "$repo/pyproject.toml" --rootdir "$repo" -n 2 --dist loadgroup \
    -p no:cacheprovider -k triton "$repo/tests"
