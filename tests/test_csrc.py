"""What is specific to the C++ extension (csrc/): the shared suites test the "cpu" backend like every
other; these tests reach the C++ kernels' own machinery and the build.

- shapes aimed at the kernels' internals (several query blocks per window, several backward query
  ranges summed, several channel blocks, head dims that are not a multiple of the vector width),
  with the log-sum-exp checked too, against the float64 reference;
- every instruction-set path of this CPU (AVX-512, AVX2, baseline SSE/NEON), each in a subprocess
  because the choice is made once per process;
- bitwise determinism across runs and across thread counts; that the OpenMP threads really work;
- the raw ops' own argument checks; the setup.py build flags; `nvcc -c` of every csrc/cuda/*.cu
  and a syntax check of the CUDA glue (CUDA code cannot run here, but it must compile).
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from logo_attn import global_attention, local_attention, reference, window_pool
from oracle import as_leaves, assert_matches, attention_inputs

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("kernel_threads")
DTYPES = [pytest.param(d, id=str(d).removeprefix("torch."))
          for d in (torch.float64, torch.float32, torch.bfloat16, torch.float16)]


@pytest.fixture(scope="module")
def cpp():
    """The adapter over logo_attn._C; a missing extension is a failed build, not a skip."""
    try:
        from logo_attn import _cpp
    except ImportError as error:
        pytest.fail(f"logo_attn._C is not built ({error}); build with `pip install --no-build-isolation -e .`")
    return _cpp


def reference_results(reference_fn, inputs, dout, **kwargs):
    """reference_fn's outputs (the first one differentiated) followed by the inputs' gradients."""
    outs = reference_fn(*inputs, **kwargs)
    return (*outs, *torch.autograd.grad(outs[0], inputs, dout))


def compare(got: dict, reference_fn, inputs, dout, dtype):
    """The kernel's results (name -> tensor, in reference_fn's order: outputs, then gradients) against
    reference_fn in float64; in bf16 and fp16, with PyTorch's own error in that dtype as the bound
    (oracle's 2x rule)."""
    want = reference_results(reference_fn, as_leaves(*inputs, dtype=torch.float64), dout.double())
    lowp = [None] * len(want)
    if dtype in (torch.bfloat16, torch.float16):
        lowp = reference_results(reference_fn, as_leaves(*inputs), dout, compute_dtype=dtype)
    for (name, actual), expected, low in zip(got.items(), want, lowp):
        if name == "lse":  # fp32 (fp64) whatever the inputs, from the same rounded inputs as the reference
            assert_matches(name, actual, expected, actual.dtype)
        else:
            assert_matches(name, actual, expected, dtype, low)


# --------------------------------------------------------------------------------------------------
# Against the reference, on shapes that reach the kernels' internals
# --------------------------------------------------------------------------------------------------

# B, grid, window, heads, head_dim, layout
LOCAL_CASES = [
    pytest.param(1, (3, 13, 12), (3, 13, 12), 1, 8, "contiguous", id="468-token-window-several-query-blocks"),
    pytest.param(2, (5, 6, 7), (2, 4, 3), 3, 1, "packed", id="head-dim-1-border-windows"),
    pytest.param(1, (4, 5, 6), (3, 2, 4), 2, 70, "heads_first", id="head-dim-70-padded-panels"),
    pytest.param(3, (1, 1, 5), (1, 1, 5), 5, 16, "packed", id="one-window-many-heads"),
]


@pytest.mark.parametrize("B,grid,window,heads,head_dim,layout", LOCAL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_local_attn_matches_reference(cpp, dtype, B, grid, window, heads, head_dim, layout):
    N = math.prod(grid)
    q, k, v = attention_inputs(B, N, N, heads, head_dim, dtype, "cpu", layout)
    # A gradient broadcast over the tokens: token stride 0, read in place by the kernels.
    dout = torch.randn(B, 1, heads, head_dim, dtype=dtype).expand(B, N, heads, head_dim)
    scale = 0.7
    out, lse = cpp.local_attn_fwd(q.detach(), k.detach(), v.detach(), list(grid), list(window), [0, 0, 0], None, scale)
    grads = cpp.local_attn_bwd(dout, q.detach(), k.detach(), v.detach(), out, lse, list(grid), list(window), [0, 0, 0],
                               None, scale, False)
    assert grads[3] is None
    compare(
        dict(out=out, lse=lse, dq=grads[0], dk=grads[1], dv=grads[2]),
        lambda q, k, v, **kw: reference.local_attention_with_lse(q, k, v, grid, window, scale, **kw),
        (q, k, v), dout, dtype,
    )


# B, Nq, Nk, heads, head_dim, layout
GLOBAL_CASES = [
    pytest.param(1, 1100, 9, 2, 64, "packed", id="backward-sums-several-query-ranges"),
    pytest.param(2, 40, 300, 3, 24, "heads_first", id="300-keys-short-query-blocks"),
    pytest.param(1, 7, 1, 1, 3, "contiguous", id="one-key"),
    # the few-keys row kernels: 3 and 4 chunks of 8 keys, a group of rows cut by the end of a range
    pytest.param(2, 301, 17, 3, 40, "heads_first", id="17-keys-three-chunks"),
    pytest.param(1, 29, 32, 2, 16, "packed", id="32-keys-four-chunks"),
    pytest.param(1, 50, 33, 2, 16, "contiguous", id="33-keys-tile-path"),
]


@pytest.mark.parametrize("B,Nq,Nk,heads,head_dim,layout", GLOBAL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_global_attn_matches_reference(cpp, dtype, B, Nq, Nk, heads, head_dim, layout):
    q, k, v = attention_inputs(B, Nq, Nk, heads, head_dim, dtype, "cpu", layout)
    dout = torch.randn(B, Nq, heads, head_dim, dtype=dtype)
    scale = 0.3
    out, lse = cpp.global_attn_fwd(q.detach(), k.detach(), v.detach(), scale)
    grads = cpp.global_attn_bwd(dout, q.detach(), k.detach(), v.detach(), out, lse, scale)
    compare(
        dict(out=out, lse=lse, dq=grads[0], dk=grads[1], dv=grads[2]),
        lambda q, k, v, **kw: reference.global_attention_with_lse(q, k, v, scale, **kw),
        (q, k, v), dout, dtype,
    )


# B, grid, window, C, strided
POOL_CASES = [
    pytest.param(2, (5, 6, 7), (2, 4, 3), 1100, False, id="three-channel-blocks-border-windows"),
    pytest.param(1, (3, 4, 5), (3, 4, 5), 5, True, id="one-window-strided-channels"),
]


@pytest.mark.parametrize("B,grid,window,C,strided", POOL_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_pool_matches_reference(cpp, dtype, B, grid, window, C, strided):
    N = math.prod(grid)
    x = torch.randn(B, N, 3 * C if strided else C, dtype=dtype)[..., :C]
    out = cpp.window_pool_fwd(x, list(grid), list(window))
    dout = torch.randn_like(out)
    dx = cpp.window_pool_bwd(dout, list(grid), list(window))
    # The reference always sums in fp32 (fp64): its bf16 run differs from ours only in summation order.
    compare(dict(out=out, dx=dx), lambda x, **kw: (reference.window_pool(x, grid, window),), (x,), dout, dtype)


@pytest.mark.parametrize("dtype", DTYPES[2:])  # bfloat16, float16
def test_window_pool_matches_reference_on_every_16bit_value(cpp, dtype):
    """All 65536 bit patterns (subnormals, infinities and NaNs included) through one-token windows:
    the forward widens 16-bit rows to fp32 a vector at a time, and a window of one token must give
    the token back, as torch's own conversion reads it."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).reshape(1, 512, 128)
    out = cpp.window_pool_fwd(x, [1, 16, 32], [1, 1, 1])
    torch.testing.assert_close(out.float(), x.float(), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES[2:])  # bfloat16, float16
def test_window_pool_matches_reference_rounding_every_16bit_pair(cpp, dtype):
    """Two-token windows over random bit patterns (every class: subnormals, infinities, NaNs, ties):
    the kernel's fp32 mean is (a + b) * 0.5, as below, so its output must be torch's own rounding of
    that value to 16 bits, exactly; the forward rounds a vector of channels at a time."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**15), 2**15, (2, 2 * 64, 136), generator=g, dtype=torch.int32).to(torch.int16).view(dtype)
    out = cpp.window_pool_fwd(x, [2, 8, 8], [2, 1, 1])
    pairs = x.float().view(2, 2, 64, 136)
    expected = ((pairs[:, 0] + pairs[:, 1]) * 0.5).to(dtype)
    torch.testing.assert_close(out.float(), expected.float(), rtol=0, atol=0, equal_nan=True)


def pass_in_fresh_process(variable: str, value: str, selection: str, probe: str, expected: str,
                          files=("test_csrc.py", "test_csrc_shift_bias.py")):
    """Runs the tests of `files` matching `selection` with the environment variable set, after
    checking that the extension took it (`probe` prints `expected`)."""
    env = {**os.environ, variable: value}
    check = subprocess.run([sys.executable, "-c", f"import torch; from logo_attn import _C; print({probe})"],
                           env=env, capture_output=True, text=True, cwd=ROOT)
    assert check.stdout.strip() == expected, check.stderr
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(str(Path(__file__).with_name(name)) for name in files), "-k", selection],
        env=env, capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode == 0, f"{variable}={value}:\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    assert " passed" in run.stdout, run.stdout[-2000:]


def test_every_isa_of_this_cpu_matches_reference(cpp):
    """The AVX2 and baseline (SSE2/NEON) code paths, forced with LOGO_ATTN_CPU_ISA in a fresh process
    (the comparisons of this file and of test_csrc_shift_bias.py)."""
    from logo_attn import _C

    best = _C.cpu_isa()
    lower = {"avx512": ["avx2", "baseline"], "avx2": ["baseline"], "baseline": []}[best]
    if not lower:
        pytest.skip(f"this CPU runs the baseline path only ({best}); the main process tested it")
    for isa in lower:
        pass_in_fresh_process("LOGO_ATTN_CPU_ISA", isa, "matches_reference and (float32 or bfloat16 or float16 or float64)",
                              "_C.cpu_isa()", isa)


@pytest.mark.parametrize("mode", ["brgemm", "emulated"])
def test_half_gemm_test_modes_match_reference(cpp, mode):
    """bf16/fp16 local attention on its 16-bit tiles (csrc/cpu/half_attention_tile.h), which run by
    default only where PyTorch's brgemm packs for AMX: LOGO_ATTN_CPU_HALF_GEMM=brgemm runs them on
    PyTorch's brgemm with row-major operands (its fallback gemm without AMX), =emulated on the
    VNNI-packed operands AMX takes, through a scalar product. In a fresh process: the bf16/fp16
    local comparisons against the reference (no bias, offset tables with shifts, dense biases), and
    the bias gradient's determinism."""
    pass_in_fresh_process("LOGO_ATTN_CPU_HALF_GEMM", mode,
                          "(local_attn or dense_bias_matches) and (bfloat16 or float16) and not torch and not triton "
                          "or dbias_bitwise and bfloat16",
                          "*(_C.cpu_features()[f'{t}_gemm'] for t in ('bf16', 'fp16'))", f"{mode} {mode}",
                          files=("test_csrc.py", "test_csrc_shift_bias.py", "test_local_attn.py"))


def test_half_gemm_mode_switches_for_the_next_calls_and_rejects_unknown_modes(cpp):
    from logo_attn import _C

    start = _C.set_cpu_half_gemm("emulated")
    try:
        assert _C.cpu_features()["bf16_gemm"] == "emulated" and _C.set_cpu_half_gemm("off") == "emulated"
        assert _C.cpu_features()["bf16_gemm"] == "none"
        with pytest.raises(ValueError, match="expected auto, off, brgemm or emulated"):
            _C.set_cpu_half_gemm("amx")
        assert _C.cpu_features()["bf16_gemm"] == "none"  # a rejected mode changes nothing
    finally:
        _C.set_cpu_half_gemm(start)


def test_cpu_features_match_the_cpu_flags_and_info_names_every_dtype(cpp):
    """The extension's view of the CPU against the kernel's own list (/proc/cpuinfo), and the path
    logo_attn.info prints for each dtype the CPU backend computes."""
    from logo_attn import _C
    from logo_attn.info import cpu_paths

    features = _C.cpu_features()
    assert features["isa"] == _C.cpu_isa()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pytest.skip("no /proc/cpuinfo flags line on this system to compare with")
    assert features["avx512_bf16"] == ("avx512_bf16" in flags.split())
    if "amx_bf16" not in flags.split():  # PyTorch's brgemm cannot run bf16 on AMX without the AMX units
        assert not features["amx_bf16"]
    paths = cpu_paths(features)
    assert set(paths) == set(cpp.CAPABILITIES["cpu"]["dtypes"])
    # The bf16 line names the bf16 units this CPU has, or says it has none.
    has_none = "has neither AMX-BF16 nor AVX512-BF16" in paths["bfloat16"]
    assert has_none == (not features["avx512_bf16"] and not features["amx_bf16"]), paths["bfloat16"]
    if features["avx512_bf16"]:
        assert "AVX512-BF16" in paths["bfloat16"]
    # By default, bf16 (fp16) local attention runs on AMX exactly where PyTorch's brgemm packs for it.
    if not os.environ.get("LOGO_ATTN_CPU_HALF_GEMM"):
        assert features["bf16_gemm"] == ("amx" if features["amx_bf16"] else "none")
        assert features["fp16_gemm"] == ("amx" if features["amx_fp16"] else "none")


# --------------------------------------------------------------------------------------------------
# Determinism and threads
# --------------------------------------------------------------------------------------------------


def run_all_ops():
    """Forward and backward of the three ops on the "cpu" backend, all results."""
    gen = torch.Generator().manual_seed(1)
    grid, window = (4, 6, 5), (2, 4, 3)
    q, k, v = (torch.randn(2, 120, 3, 32, generator=gen, requires_grad=True) for _ in range(3))
    kg, vg = (torch.randn(2, 9, 3, 32, generator=gen, requires_grad=True) for _ in range(2))
    x = torch.randn(2, 120, 600, generator=gen, requires_grad=True)
    local = local_attention(q, k, v, grid, window, backend="cpu")
    glob = global_attention(torch.randn(2, 1100, 3, 32, generator=gen, requires_grad=True), kg, vg, backend="cpu")
    pooled = window_pool(x, grid, window, backend="cpu")
    results = [local, glob, pooled]
    results += torch.autograd.grad(local, (q, k, v), torch.randn(local.shape, generator=gen))
    results += torch.autograd.grad(glob, (kg, vg), torch.randn(glob.shape, generator=gen))
    results += torch.autograd.grad(pooled, (x,), torch.randn(pooled.shape, generator=gen))
    return results


def test_bitwise_deterministic_across_runs_and_thread_counts(cpp):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_all_ops()
        torch.set_num_threads(max(2, threads))
        many, again = run_all_ops(), run_all_ops()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(one, many, again):
        assert torch.equal(a, b) and torch.equal(b, c)


def thread_cpu_ticks() -> dict[str, int]:
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks[tid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to read per-thread CPU time")
def test_parallel_for_runs_on_every_thread(cpp):
    """at::parallel_for is header-inline: without -fopenmp in the extension's build it runs serially.

    With 2 threads, the second thread must do a share of the work comparable to the main thread's.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        q, k, v = (torch.randn(4, 16 * 49, 8, 64) for _ in range(3))
        main = str(os.getpid())
        before = thread_cpu_ticks()
        for _ in range(100):  # a few seconds; stops early once both threads have a clear share
            cpp.local_attn_fwd(q, k, v, [16, 7, 7], [2, 7, 7], [0, 0, 0], None, 0.125)
            used = {t: n - before.get(t, 0) for t, n in thread_cpu_ticks().items()}
            if used.get(main, 0) >= 50:
                break
        helpers = max((n for t, n in used.items() if t != main), default=0)
    finally:
        torch.set_num_threads(threads)
    assert helpers >= 0.3 * used[main], f"per-thread CPU ticks {used}: the op ran on one thread"


# --------------------------------------------------------------------------------------------------
# The raw ops' argument checks (the public ops check first; these guard direct calls)
# --------------------------------------------------------------------------------------------------


def test_raw_ops_reject_bad_arguments(cpp):
    ops = torch.ops.logo_attn_C
    q = torch.randn(1, 12, 2, 8)
    with pytest.raises(RuntimeError, match="grid must hold 3 ints"):
        ops.local_attn_fwd(q, q, q, [3, 4], [1, 1, 1], [0, 0, 0], None, 1.0)
    with pytest.raises(RuntimeError, match="has F\\*H\\*W = 24 tokens but q has 12"):
        ops.local_attn_fwd(q, q, q, [2, 3, 4], [1, 1, 1], [0, 0, 0], None, 1.0)
    with pytest.raises(RuntimeError, match="the CPU kernels do not compute ComplexFloat"):
        ops.global_attn_fwd(q.cfloat(), q.cfloat(), q.cfloat(), 1.0)
    with pytest.raises(RuntimeError, match="k has dtype"):
        ops.global_attn_fwd(q, q.double(), q, 1.0)
    out, lse = ops.global_attn_fwd(q, q, q, 1.0)
    with pytest.raises(RuntimeError, match="lse must be \\(B, heads, N\\)"):
        ops.global_attn_bwd(q, q, q, q, out, lse[:, :1], 1.0)
    with pytest.raises(RuntimeError, match="dout must have one row per window"):
        ops.window_pool_bwd(torch.randn(1, 5, 3), [2, 2, 2], [1, 2, 2])


def test_declared_capabilities_are_what_the_kernels_check(cpp):
    """_C.capabilities() comes from the constants of the argument checks: every dtype the CPU entry
    lists runs, every other floating dtype is refused; "cuda" is listed iff the CUDA kernels exist."""
    assert set(cpp.CAPABILITIES) == ({"cpu", "cuda"} if cpp.has_cuda_kernels() else {"cpu"})
    cpu = cpp.CAPABILITIES["cpu"]
    assert cpu["device"] == "cpu" and cpu["max_head_dim"] is None
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        q = torch.randn(1, 4, 1, 300, dtype=dtype)
        name = str(dtype).removeprefix("torch.")
        if name in cpu["dtypes"]:
            cpp.global_attn_fwd(q, q, q, 1.0)
        else:
            with pytest.raises(RuntimeError, match="the CPU kernels do not compute"):
                cpp.global_attn_fwd(q, q, q, 1.0)
    if cpp.has_cuda_kernels():
        assert cpp.CAPABILITIES["cuda"]["max_head_dim"] == 256


# --------------------------------------------------------------------------------------------------
# Build: setup.py flags and the CUDA sources
# --------------------------------------------------------------------------------------------------


def setup_run(**flags: str) -> subprocess.CompletedProcess:
    """setup.py's choice under these environment flags (no compilation: --name only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGO_ATTN_")}
    return subprocess.run([sys.executable, "setup.py", "--name"], env={**env, **flags}, capture_output=True,
                          text=True, cwd=ROOT)


def test_setup_flags_choose_what_is_built():
    assert "LOGO_ATTN_SKIP_CPP=1: building a pure-Python package" in setup_run(LOGO_ATTN_SKIP_CPP="1").stderr
    assert "without CUDA kernels: LOGO_ATTN_SKIP_CUDA=1" in setup_run(LOGO_ATTN_SKIP_CUDA="1").stderr
    default, forced = setup_run(), setup_run(LOGO_ATTN_FORCE_CUDA="1")
    if torch.version.cuda is None:
        assert "without CUDA kernels: this torch has no CUDA" in default.stderr
        assert forced.returncode != 0 and "LOGO_ATTN_FORCE_CUDA=1 but the CUDA kernels cannot be built" in forced.stderr
    else:
        assert "logo_attn._C with" in default.stderr


CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.parametrize("source", [pytest.param(s, id=s.name) for s in CUDA_SOURCES])
def test_cuda_source_compiles_with_nvcc(source, tmp_path):
    """The .cu files include CUDA headers only (no torch header), so plain nvcc compiles them anywhere."""
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        pytest.skip("nvcc is not installed on this machine")
    # torch's own nvcc flags (no implicit half/bf16 conversions), as the real build passes them.
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    cmd = [str(nvcc), "-c", str(source), "-o", str(tmp_path / "out.o"), *COMMON_NVCC_FLAGS, "-std=c++17",
           "-arch=sm_90", "-Werror", "all-warnings"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout}\n{run.stderr}"


def test_cuda_glue_compiles_against_torch_headers(tmp_path):
    """csrc/cuda/ops.cpp (argument checks, scratch tensors, registration) is built only where torch
    has CUDA; here the host compiler checks its syntax and types against this torch's c10/cuda
    headers and the CUDA toolkit's, with a stand-in for the one header a CUDA build of torch
    generates (cuda_cmake_macros.h, build options only)."""
    import sysconfig

    from torch.utils.cpp_extension import include_paths

    nvcc = shutil.which("nvcc")
    homes = [os.environ.get("CUDA_HOME"), "/usr/local/cuda", nvcc and Path(nvcc).resolve().parents[1]]
    found = [Path(h) / "include" for h in homes if h and (Path(h) / "include" / "cuda_runtime.h").exists()]
    if not found:
        pytest.skip("the CUDA toolkit is not installed on this machine")
    cuda_include = found[0]
    torch_includes = [Path(p) for p in include_paths()]
    if not any((p / "c10" / "cuda" / "CUDAGuard.h").exists() for p in torch_includes):
        pytest.skip("this torch ships no c10/cuda headers")
    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n")
    cxx = os.environ.get("CXX", "c++")
    cmd = [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Werror", f"-I{tmp_path}",
           *(f"-I{p}" for p in torch_includes), f"-I{cuda_include}", f"-I{sysconfig.get_paths()['include']}",
           str(ROOT / "csrc" / "cuda" / "ops.cpp")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stderr[-4000:]}"


def test_there_are_cuda_sources():
    assert CUDA_SOURCES, "csrc/cuda/ holds no .cu file"
