"""bench_ops.py's cases as pytest-benchmark tests: one group per op, mode and shape (the case's label,
e.g. 'local fwd+bwd B4 16x7x7 w2x7x7 8x64 fp32'), holding the op on each backend and its peers.

    pytest benchmarks --benchmark-only                                  # time; CPU: bench_ops.py's CPU preset
    pytest benchmarks --benchmark-only --benchmark-autosave             # ... and save the run under .benchmarks/
    pytest benchmarks --benchmark-only --benchmark-compare              # ... against the last saved run
    pytest benchmarks --benchmark-disable -q                            # smoke: every callable once, checked

Every test first checks its implementation against the float64 reference, as bench_ops.py does, and
fails where it differs. Timing is pytest-benchmark's own (on CUDA each timed call ends with a
synchronize), one implementation after the other; the ratios a README quotes come from bench_ops.py,
which times the implementations of a case in alternating rounds so that load changes cancel out.
`extra_info` holds the FLOPs and bytes of the call, the check's relative error and the peak memory.
"""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_ops
from benchmarks.timing import peak_memory


def synchronized(fn, device: torch.device):
    """`fn` followed by waiting for the device, so that a wall-clock timer sees the kernels' time."""
    if device.type != "cuda":
        return fn

    def call():
        result = fn()
        torch.cuda.synchronize(device)
        return result

    return call


def test_op(benchmark, bench_item, bench_args):
    case, mode, impl = bench_item
    if impl.unsupported:
        pytest.skip(impl.unsupported)  # what this PyTorch lacks (e.g. a bf16 CPU kernel), not ours
    device = torch.device(bench_args.device)
    error = bench_ops.check(impl, case)  # raises where the implementation differs from the reference
    fn = synchronized(bench_ops.mode_fn(impl, mode, case.expected[2].to(case.dtype)), device)
    benchmark.group = case.label(mode)
    benchmark.extra_info.update(impl=impl.name, flops=case.flops[mode], bytes=case.bytes[mode], check_rel_err=error)
    if not benchmark.disabled:
        benchmark.extra_info["peak_mib"] = peak_memory(fn, device) / 2**20
    benchmark(fn)
