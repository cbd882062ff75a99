#!/usr/bin/env bash
# GPU validation in one command: build the CUDA extension, run the whole test suite on
# CUDA, the large-shape and deterministic-mode tests, compute-sanitizer over the CUDA-extension
# tests, and the op / layer / model benchmarks; logs and JSON/CSV/PNG results go to <outdir>.
#
#   benchmarks/gpu_check.sh <outdir> [phase ...]
#
# Phases, in order (default: all): env build test large determinism bench bench_pytest sanitize
#   env          nvidia-smi, driver, nvcc, torch/triton versions, commit, measured copy/matmul ceilings
#   build        pip install --no-build-isolation -e . with LOGO_ATTN_FORCE_CPP=1 LOGO_ATTN_FORCE_CUDA=1,
#                then asserts that logo_attn._C loaded with its CUDA kernels
#   test         the whole suite (its CUDA, fp16 and bf16 cases run because a GPU is present),
#                without the large-shape tests, in parallel with pytest-xdist when it is installed
#   large        tests whose offsets exceed 2^31 elements, one process; selected by $LARGE_K, by default
#                tests whose names contain "large_shape" or "int64_offset" (exit 5 when none exist)
#   determinism  deterministic-mode tests (selected by $DETERMINISM_K): bit-identical gradients twice
#   bench        = bench_ops bench_sweep bench_model, which can also be given one by one:
#   bench_ops    bench_ops.py --preset gpu: ops and layer against their peers, bf16, B=32, 16x7x7 and 16x14x14
#   bench_sweep  flops_vs_timesformer.py on CUDA, bf16, batch 8, the whole sweep
#   bench_model  bench_model.py: LOGOFormer vs divided/full/spatial training steps, batch 32, 112 and 224 px
#   bench_pytest the pytest-benchmark suite on the GPU preset with --benchmark-disable: every op, peer and
#                mode runs once on CUDA and is checked against float64 (a smoke run; bench_ops times them)
#   sanitize     compute-sanitizer memcheck over the CUDA-extension tests (ids "cuda-cuda"),
#                racecheck over its local/global attention tests
# Every step has a time limit (seconds; override with the variables below), and GPU_CHECK_DEADLINE
# (default 570 s, 0 = none) caps the whole run: later steps get what is left and are skipped, marked
# as such, when too little is, so the summary and archive are written inside one 10-minute device
# call. A full run does not fit one call; split the phases over two, e.g.
#   benchmarks/gpu_check.sh /tmp/gc env build test large determinism
#   benchmarks/gpu_check.sh /tmp/gc build bench sanitize      (build is skipped when the extension
#                                                             with CUDA kernels already imports)
# At the end <outdir>/summary.md lists each step's exit code and time, and <outdir>/gpu_check.tar.gz
# holds everything (copy those two back). A step failing does not stop the others; the script's
# exit code is the number of failed steps.
#
# Environment: PYTHON (default python3), LOGO_ATTN_COMMIT (commit to record when .git is absent),
# GPU_CHECK_DEADLINE (seconds for the whole run, see above),
# GPU_CHECK_REBUILD=1 (build even if the extension imports), XDIST_WORKERS (default 8),
# HYPOTHESIS_PROFILE (default ci, see tests/conftest.py),
# LARGE_K, DETERMINISM_K (pytest -k expressions), and the per-step limits below.
set -uo pipefail

OUTDIR=${1:?usage: benchmarks/gpu_check.sh <outdir> [env build test large determinism bench bench_pytest sanitize]}
shift
PHASES=${*:-env build test large determinism bench bench_pytest sanitize}
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 99
ROOT=$(pwd)

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# tests/test_properties.py: the fixed, derandomized example budget, so the test step's length is known
export HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci}
export LOGO_ATTN_COMMIT=${LOGO_ATTN_COMMIT:-$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
LARGE_K=${LARGE_K:-"large_shape or int64_offset"}
DETERMINISM_K=${DETERMINISM_K:-"determinis or reproducib"}
XDIST_WORKERS=${XDIST_WORKERS:-8}
DEADLINE=${GPU_CHECK_DEADLINE:-570}
RESERVE=15  # seconds kept for the summary and the archive
T_BUILD=${T_BUILD:-300} T_TEST=${T_TEST:-420} T_LARGE=${T_LARGE:-180} T_DET=${T_DET:-120}
T_MEMCHECK=${T_MEMCHECK:-300} T_RACECHECK=${T_RACECHECK:-150}
T_BENCH_OPS=${T_BENCH_OPS:-300} T_BENCH_SWEEP=${T_BENCH_SWEEP:-240} T_BENCH_MODEL=${T_BENCH_MODEL:-150}
T_BENCH_PYTEST=${T_BENCH_PYTEST:-240}

SUMMARY=$OUTDIR/summary.md
[ -f "$SUMMARY" ] || printf '| step | exit | seconds | log |\n|---|---:|---:|---|\n' >"$SUMMARY"
FAILED=0

# step NAME LIMIT COMMAND...: run with a time limit, log to NAME.log, record the exit code (124: timed out)
step() {
    local name=$1 limit=$2
    shift 2
    if [ "$DEADLINE" -gt 0 ]; then
        local left=$((DEADLINE - RESERVE - SECONDS))
        if [ "$left" -lt 30 ]; then
            echo "== $name: skipped, ${left}s left before GPU_CHECK_DEADLINE=${DEADLINE}s"
            printf '| %s | skipped (out of time) | 0 | - |\n' "$name" >>"$SUMMARY"
            FAILED=$((FAILED + 1))
            return 125
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    local log="$OUTDIR/$name.log" start=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=20 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    local took=$((SECONDS - start))
    printf '| %s | %s | %s | %s.log |\n' "$name" "$rc" "$took" "$name" >>"$SUMMARY"
    tail -n 4 "$log"
    echo "== $name: exit $rc after ${took}s"
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    return "$rc"
}

has_xdist() { "$PY" -c "import xdist" 2>/dev/null; }
has_cuda_ext() { "$PY" -c "import torch, logo_attn._cpp as c; assert c.has_cuda_kernels()" 2>/dev/null; }

phase_env() {
    {
        echo "commit: $LOGO_ATTN_COMMIT"
        echo "date: $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
        nvcc --version | tail -n 2
        "$PY" -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
        "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|triton|pytest|pytest-xdist|numpy|matplotlib|tqdm) '
    } >"$OUTDIR/env.txt" 2>&1
    cat "$OUTDIR/env.txt"
    # The two ceilings METHOD.md asks for, measured here rather than taken from a datasheet.
    step ceilings 120 "$PY" - "$OUTDIR/ceilings.json" <<'EOF'
import json, sys, torch
from triton.testing import do_bench
src = torch.randn(2**30 // 2, device="cuda", dtype=torch.bfloat16)  # 1 GiB
dst = torch.empty_like(src)
ms = do_bench(lambda: dst.copy_(src), warmup=50, rep=300, return_mode="median")
copy = 2 * src.numel() * src.element_size() / ms / 1e9
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
ms = do_bench(lambda: a @ b, warmup=50, rep=300, return_mode="median")
out = {"device": torch.cuda.get_device_name(), "copy_TBps": copy / 1e3, "bf16_matmul_TFLOPs": 2 * 8192**3 / ms / 1e9}
print(out)
json.dump(out, open(sys.argv[1], "w"), indent=1)
EOF
}

phase_build() {
    if [ "${GPU_CHECK_REBUILD:-0}" = 0 ] && has_cuda_ext; then
        echo "== build: logo_attn._C with CUDA kernels already imports; skipped (GPU_CHECK_REBUILD=1 forces it)"
        printf '| build | skipped (already built) | 0 | - |\n' >>"$SUMMARY"
        return 0
    fi
    step build "$T_BUILD" env LOGO_ATTN_FORCE_CPP=1 LOGO_ATTN_FORCE_CUDA=1 MAX_JOBS="$(nproc)" \
        "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e "$ROOT"
    step build_check 60 "$PY" -c "
import torch, logo_attn, logo_attn._cpp as c
assert c.has_cuda_kernels(), 'logo_attn._C has no CUDA kernels'
print(logo_attn.available_backends())"
    "$PY" -m logo_attn.info >>"$OUTDIR/build_check.log" 2>&1
}

phase_test() {
    local parallel=()
    has_xdist && parallel=(-n "$XDIST_WORKERS" --dist loadgroup)
    step test "$T_TEST" "$PY" -m pytest -q -ra -p no:cacheprovider "${parallel[@]}" tests -k "not ($LARGE_K)" \
        --junitxml="$OUTDIR/test.xml"
}

phase_large() {
    step large "$T_LARGE" "$PY" -m pytest -q -ra -p no:cacheprovider tests -k "$LARGE_K" --junitxml="$OUTDIR/large.xml"
}

phase_determinism() {
    step determinism "$T_DET" "$PY" -m pytest -q -ra -p no:cacheprovider tests -k "$DETERMINISM_K" \
        --junitxml="$OUTDIR/determinism.xml"
}

phase_sanitize() {
    if ! command -v compute-sanitizer >/dev/null; then
        echo "== sanitize: compute-sanitizer not found"
        printf '| sanitize | missing compute-sanitizer | 0 | - |\n' >>"$SUMMARY"
        FAILED=$((FAILED + 1))
        return 1
    fi
    # --error-exitcode makes any reported error fail the step even when pytest itself passes; the
    # property tests' dozens of shapes would outlast the step under memcheck (the test step runs them)
    step memcheck "$T_MEMCHECK" compute-sanitizer --tool memcheck --error-exitcode 86 --target-processes all \
        "$PY" -m pytest -q -x -p no:cacheprovider -p no:xdist tests -k "cuda-cuda and not ($LARGE_K) and not test_properties"
    step racecheck "$T_RACECHECK" compute-sanitizer --tool racecheck --error-exitcode 86 --target-processes all \
        "$PY" -m pytest -q -x -p no:cacheprovider -p no:xdist tests/test_local_attn.py tests/test_global_attn.py \
        -k "cuda-cuda and not ($LARGE_K)"
}

phase_bench_ops() {
    step bench_ops "$T_BENCH_OPS" "$PY" benchmarks/bench_ops.py --preset gpu --out "$OUTDIR/bench_ops"
}

phase_bench_sweep() {
    step bench_sweep "$T_BENCH_SWEEP" "$PY" benchmarks/flops_vs_timesformer.py --device cuda --dtype bfloat16 \
        --batch 8 --out "$OUTDIR/flops_vs_timesformer"
}

phase_bench_model() {
    step bench_model "$T_BENCH_MODEL" "$PY" benchmarks/bench_model.py --device cuda --dtype bfloat16 --batch 32 \
        --sizes 112 224 --out "$OUTDIR/bench_model"
}

phase_bench_pytest() {
    step bench_pytest "$T_BENCH_PYTEST" "$PY" -m pytest benchmarks --benchmark-disable -q -ra -p no:cacheprovider \
        --bench-ops-args="--preset gpu" --junitxml="$OUTDIR/bench_pytest.xml"
}

phase_bench() {
    phase_bench_ops
    phase_bench_sweep
    phase_bench_model
}

for phase in $PHASES; do
    case $phase in
        env | build | test | large | determinism | bench | bench_ops | bench_sweep | bench_model | bench_pytest | sanitize)
            "phase_$phase" ;;
        *) echo "unknown phase '$phase' (env build test large determinism bench bench_ops bench_sweep bench_model" \
               "bench_pytest sanitize)"; FAILED=$((FAILED + 1)) ;;
    esac
done

echo "exit codes: 124 timed out, 5 no test matched the selection (pytest), 86 compute-sanitizer reported errors" \
    >>"$SUMMARY"
tar -czf "$OUTDIR/gpu_check.tar.gz" -C "$OUTDIR" --exclude gpu_check.tar.gz . 2>/dev/null
echo
cat "$SUMMARY"
echo "failed steps: $FAILED; everything is in $OUTDIR/gpu_check.tar.gz"
exit "$FAILED"
