"""Sizes that can be zero, on the C++ CPU kernels: empty batches, zero heads, zero queries (global
attention), zero channels (window pooling), through the public ops and the raw
torch.ops.logo_attn_C ops, forward and backward, against the "torch" backend / the reference.

A zero size that reaches an integer division kills the process (SIGFPE), which would take pytest
with it. So every case runs in one child process (this file run as a script), which reports each
case as it starts and ends; a case the child never finished fails here with the child's exit
status, and the cases after it fail as not run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dense_reference import dense_local_attention
from logo_attn import global_attention, local_attention, reference, window_pool

ROOT = Path(__file__).resolve().parents[1]
DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
GRID, WINDOW, N = (2, 3, 5), (2, 2, 2), 30  # border windows on two axes
SHIFT = (0, 1, 1)  # and leading partial windows on two (the raw local op takes a shift and a bias)
HEAD_DIM, KEYS = 8, 5

CASES: dict[str, Callable[[], None]] = {}


def case(name: str):
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        CASES[name] = fn
        return fn

    return register


def assert_same(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    """Shape, dtype and values (exactly for empty or zero tensors, else within float32's rounding)."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}"
    torch.testing.assert_close(got, want, msg=lambda m: f"{name}: {m}")


def public_results(op: Callable, inputs: tuple[torch.Tensor, ...], backend: str) -> list[torch.Tensor]:
    """op's output on `backend` followed by the gradients of every input, from a fixed dout."""
    leaves = tuple(t.detach().requires_grad_(True) for t in inputs)
    out = op(*leaves, backend=backend)
    dout = torch.ones_like(out)
    return [out, *torch.autograd.grad(out, leaves, dout)]


def compare_public(op: Callable, inputs: tuple[torch.Tensor, ...], names: tuple[str, ...]) -> None:
    for name, got, want in zip(names, public_results(op, inputs, "cpu"), public_results(op, inputs, "torch")):
        assert_same(name, got, want)


def attention_shapes(B: int, heads: int, q_tokens: int, k_tokens: int, dtype: torch.dtype):
    return (torch.randn(B, q_tokens, heads, HEAD_DIM, dtype=dtype),
            torch.randn(B, k_tokens, heads, HEAD_DIM, dtype=dtype),
            torch.randn(B, k_tokens, heads, HEAD_DIM, dtype=dtype))


# (B, heads) of the attention cases and (B, C) of the pooling cases: each has a zero.
EMPTY_ATTENTION = {"batch0": (0, 2), "heads0": (2, 0), "batch0-heads0": (0, 0)}
EMPTY_POOL = {"batch0": (0, 6), "channels0": (2, 0)}

for dtype in DTYPES:
    dt = str(dtype).removeprefix("torch.")
    for label, (B, heads) in EMPTY_ATTENTION.items():

        @case(f"public-local-{label}-{dt}")
        def _(B=B, heads=heads, dtype=dtype):
            op = lambda q, k, v, backend: local_attention(q, k, v, GRID, WINDOW, backend=backend)  # noqa: E731
            compare_public(op, attention_shapes(B, heads, N, N, dtype), ("out", "dq", "dk", "dv"))

        @case(f"public-global-{label}-{dt}")
        def _(B=B, heads=heads, dtype=dtype):
            compare_public(global_attention, attention_shapes(B, heads, N, KEYS, dtype), ("out", "dq", "dk", "dv"))

        @case(f"raw-local-{label}-{dt}")
        def _(B=B, heads=heads, dtype=dtype):
            q, k, v = attention_shapes(B, heads, N, N, dtype)
            ops = torch.ops.logo_attn_C
            bias = torch.randn(heads, 3, 3, 3, dtype=dtype)
            got = ops.local_attn_fwd(q, k, v, GRID, WINDOW, SHIFT, bias, 0.5)
            want = dense_with_lse(q, k, v, bias)
            for name, g, w in zip(("out", "lse"), got, want):
                assert_same(name, g, w)
            dout = torch.ones_like(q)
            got = ops.local_attn_bwd(dout, q, k, v, *got, GRID, WINDOW, SHIFT, bias, 0.5, True)
            # Every gradient is empty but dbias, which is zero: no pair reaches it.
            for name, g, w in zip(("dq", "dk", "dv", "dbias"), got, (q, k, v, torch.zeros_like(bias))):
                assert_same(name, g, w)

        @case(f"raw-global-{label}-{dt}")
        def _(B=B, heads=heads, dtype=dtype):
            raw_global(attention_shapes(B, heads, N, KEYS, dtype))

    @case(f"public-global-0-queries-{dt}")
    def _(dtype=dtype):
        # dK and dV have elements but no query reaches them: zeros, not whatever memory held.
        inputs = attention_shapes(2, 3, 0, KEYS, dtype)
        compare_public(global_attention, inputs, ("out", "dq", "dk", "dv"))
        _, _, dk, dv = public_results(global_attention, inputs, "cpu")
        assert dk.numel() > 0 and not dk.any() and not dv.any(), "dk/dv of zero queries must be zeros"

    @case(f"raw-global-0-queries-{dt}")
    def _(dtype=dtype):
        raw_global(attention_shapes(2, 3, 0, KEYS, dtype))

    for label, (B, C) in EMPTY_POOL.items():

        @case(f"public-pool-{label}-{dt}")
        def _(B=B, C=C, dtype=dtype):
            op = lambda x, backend: window_pool(x, GRID, WINDOW, backend=backend)  # noqa: E731
            compare_public(op, (torch.randn(B, N, C, dtype=dtype),), ("out", "dx"))

        @case(f"raw-pool-{label}-{dt}")
        def _(B=B, C=C, dtype=dtype):
            x = torch.randn(B, N, C, dtype=dtype)
            out = torch.ops.logo_attn_C.window_pool_fwd(x, GRID, WINDOW)
            assert_same("out", out, reference.window_pool_fwd(x, GRID, WINDOW))
            dout = torch.ones_like(out)
            assert_same("dx", torch.ops.logo_attn_C.window_pool_bwd(dout, GRID, WINDOW),
                        reference.window_pool_bwd(dout, GRID, WINDOW))


def dense_with_lse(q, k, v, bias):
    """The shifted, biased local attention of empty inputs: an empty output and lse like q's."""
    out = dense_local_attention(q, k, v, GRID, WINDOW, SHIFT, bias, 0.5)
    return out, torch.empty(q.shape[0], q.shape[2], q.shape[1], dtype=reference.accumulation_dtype(q.dtype))


def raw_global(inputs) -> None:
    q, k, v = inputs
    ops = torch.ops.logo_attn_C
    want = reference.global_attn_fwd(q, k, v, 0.5)
    for name, g, w in zip(("out", "lse"), ops.global_attn_fwd(q, k, v, 0.5), want):
        assert_same(name, g, w)
    dout = torch.ones_like(q)
    got = ops.global_attn_bwd(dout, q, k, v, *want, 0.5)
    for name, g, w in zip(("dq", "dk", "dv"), got, reference.global_attn_bwd(dout, q, k, v, *want, 0.5)):
        assert_same(name, g, w)


def expect_error(match: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except RuntimeError as error:
        assert match in str(error), f"expected an error saying {match!r}, got: {error}"
    else:
        raise AssertionError(f"expected a RuntimeError saying {match!r}, the call returned")


# Sizes the public ops reject before any kernel: the raw ops must reject them too, not crash.
@case("raw-rejects-head-dim-0-and-no-keys")
def _():
    ops = torch.ops.logo_attn_C
    empty_d = torch.randn(2, N, 3, 0)
    no_keys = torch.randn(2, 0, 3, HEAD_DIM)
    q = torch.randn(2, N, 3, HEAD_DIM)
    what = "head_dim and the number of keys must be >= 1"
    expect_error(what, lambda: ops.local_attn_fwd(empty_d, empty_d, empty_d, GRID, WINDOW, SHIFT, None, 1.0))
    expect_error(what, lambda: ops.global_attn_fwd(empty_d, empty_d, empty_d, 1.0))
    expect_error(what, lambda: ops.global_attn_fwd(q, no_keys, no_keys, 1.0))
    lse = torch.zeros(2, 3, N)
    expect_error(what, lambda: ops.local_attn_bwd(empty_d, empty_d, empty_d, empty_d, empty_d, lse, GRID, WINDOW, SHIFT,
                                                  None, 1.0, False))
    expect_error(what, lambda: ops.global_attn_bwd(q, q, no_keys, no_keys, q, lse, 1.0))


@case("raw-rejects-zero-grid-or-window")
def _():
    ops = torch.ops.logo_attn_C
    q, x = torch.randn(1, 0, 2, HEAD_DIM), torch.randn(1, 0, 4)
    what = "grid and window entries must be >= 1"
    expect_error(what, lambda: ops.local_attn_fwd(q, q, q, [2, 0, 3], WINDOW, SHIFT, None, 1.0))
    expect_error(what, lambda: ops.window_pool_fwd(x, [0, 3, 5], WINDOW))
    expect_error(what, lambda: ops.window_pool_bwd(x, GRID, [2, 0, 2]))
    expect_error(what, lambda: ops.window_pool_fwd(torch.randn(1, N, 4), GRID, [2, 2, 0]))


# --------------------------------------------------------------------------------------------------
# The child process and the tests that read its report
# --------------------------------------------------------------------------------------------------


def run_cases(names: list[str]) -> None:
    """Child: one JSON line when each case starts and when it ends (flushed, so a crash leaves them)."""
    import logo_attn._cpp  # noqa: F401  (registers torch.ops.logo_attn_C)

    torch.manual_seed(0)
    for name in names:
        print(json.dumps({"case": name, "status": "start"}), flush=True)
        try:
            CASES[name]()
            print(json.dumps({"case": name, "status": "ok"}), flush=True)
        except Exception:  # a failed check: report it and go on with the next case
            print(json.dumps({"case": name, "status": "fail", "error": traceback.format_exc()}), flush=True)


@pytest.fixture(scope="module")
def report() -> dict:
    run = subprocess.run([sys.executable, __file__], capture_output=True, text=True, cwd=ROOT, timeout=600)
    status: dict[str, dict] = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            status[entry["case"]] = entry
    if run.returncode < 0:
        how = f"killed by {signal.Signals(-run.returncode).name}"
    else:
        how = f"exited with status {run.returncode}"
    return {"status": status, "how": how, "stderr": run.stderr[-3000:]}


@pytest.mark.parametrize("name", list(CASES))
def test_zero_size_case(report, name):
    entry = report["status"].get(name)
    if entry is None:
        pytest.fail(f"not run: the child process {report['how']} before this case\n{report['stderr']}")
    if entry["status"] == "start":
        pytest.fail(f"the child process {report['how']} during this case\n{report['stderr']}")
    assert entry["status"] == "ok", entry.get("error")


if __name__ == "__main__":
    run_cases(sys.argv[1:] or list(CASES))
