"""Timing and peak memory of a callable, the same way in every benchmark script.

- CPU: `torch.utils.benchmark.Timer` with the thread count set explicitly; samples are blocks of
  calls sized to take about a tenth of `min_run_time`, repeated until `min_run_time` has passed and
  at least `min_samples` blocks exist. The callables compared in one table are sampled in
  alternating rounds, which no timing library offers (pytest-benchmark and `Timer` time one
  callable at a time): that is why the scripts' ratios come from here, while the pytest-benchmark
  suite (benchmarks/test_bench_ops.py) uses pytest-benchmark's timer and only `peak_memory` from here.
- CUDA: `triton.testing.do_bench` (CUDA events, L2 flushed between calls), its median and 20/80
  percentiles over `rep` milliseconds.
Both warm up first, so one-time costs (compilation, autotuning, allocator growth) stay out.

Peak memory is the highest amount of memory allocated at once while the callable runs, above what
was allocated before: on CUDA from the caching allocator's statistics, on CPU from the profiler's
allocation events (every allocation made through PyTorch's CPU allocator, kernels' own scratch
buffers included).
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import sys
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.utils.benchmark as torch_benchmark


@dataclass(frozen=True)
class Timing:
    """Seconds per call: median and 20th/80th percentiles over `samples` samples."""

    median: float
    p20: float
    p80: float
    samples: int
    values: tuple[float, ...] = field(default=(), repr=False, compare=False)  # the samples themselves


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    cuts = statistics.quantiles(values, n=10, method="inclusive")  # deciles: cuts[1] = p20, cuts[7] = p80
    return statistics.median(values), cuts[1], cuts[7]


def time_cpu_interleaved(fns: Sequence[Callable[[], object]], threads: int, min_run_time: float = 1.0,
                         min_samples: int = 5, warmup: int = 2) -> list[Timing]:
    """Time several callables in alternating rounds (A, B, C, A, B, C, ...), so that a change in the
    machine's load during the run hits all of them alike; `min_run_time` is per callable."""
    if not fns:
        return []
    timers = [torch_benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads) for fn in fns]
    numbers = [1] * len(fns)  # warmup=0: the caller warmed them up; one call per sample
    if warmup:
        for i, timer in enumerate(timers):
            first = min(timer.timeit(1).median for _ in range(warmup))
            numbers[i] = max(1, int(min_run_time / 10 / max(first, 1e-9)))
    samples: list[list[float]] = [[] for _ in fns]
    spent = 0.0
    while len(samples[0]) < min_samples or spent < min_run_time * len(fns):
        for timer, number, values in zip(timers, numbers, samples):
            values.append(timer.timeit(number).median)
            spent += values[-1] * number
    return [Timing(*_quantiles(values), samples=len(values), values=tuple(values)) for values in samples]


def paired_ratio(timing: Timing, base: Timing) -> float:
    """Median over rounds of this callable's time over `base`'s in the same round (interleaved timings),
    else the ratio of the medians."""
    if timing.values and len(timing.values) == len(base.values):
        return statistics.median(t / b for t, b in zip(timing.values, base.values))
    return timing.median / base.median


def time_cuda(fn: Callable[[], object], warmup_ms: float = 25, rep_ms: float = 100) -> Timing:
    from triton.testing import do_bench

    fn()
    torch.cuda.synchronize()
    median, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    samples = max(1, int(rep_ms / max(median, 1e-6)))
    return Timing(median / 1e3, p20 / 1e3, p80 / 1e3, samples=samples)


def measure_many(fns: Sequence[Callable[[], object]], device: torch.device, *, threads: int,
                 min_run_time: float = 1.0, min_samples: int = 5, warmup: int = 2) -> list[Timing]:
    """Time each callable: on CPU interleaved (`time_cpu_interleaved`), on CUDA one after the other."""
    if device.type == "cuda":
        return [time_cuda(fn, rep_ms=max(100.0, min_run_time * 1e3 / 4)) for fn in fns]
    return time_cpu_interleaved(fns, threads, min_run_time=min_run_time, min_samples=min_samples, warmup=warmup)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2: Kineto logs a line at every profiler start and stop that no setting turns off."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_allocation_peak(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Memory events carry +bytes on allocation and -bytes on free; the running sum's maximum is the peak.
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes: the most memory `fn` holds allocated at once, above what was allocated before it ran."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    # The CPU peak counts only allocations and frees made while fn runs, so what was garbage before
    # does not matter, as long as the cyclic collector does not free it in the middle: paused, rather
    # than a gc.collect() first, which takes ~0.2 s once torch.compile's modules are imported.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _cpu_allocation_peak(fn)
    finally:
        if enabled:
            gc.enable()
