"""pytest configuration of the benchmark suite, collected only when named: `pytest benchmarks ...`
(the repository's plain `pytest` collects tests/ alone, its testpaths).

`--bench-ops-args` takes bench_ops.py's own options, so the suite and the script select their cases
with one command line and build them with one function (`bench_ops.cases`):

    pytest benchmarks --benchmark-only                                       # bench_ops.py's default preset
    pytest benchmarks --benchmark-only --bench-ops-args="--preset gpu"
    pytest benchmarks --benchmark-only --bench-ops-args="--ops swin --modes fwdbwd"
"""

from __future__ import annotations

import shlex

import pytest
import torch

from benchmarks import bench_ops

ARGS = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-ops-args", default="", metavar="OPTIONS",
                     help="bench_ops.py options selecting the cases (preset, ops, modes, shapes, dtype, backends, "
                          "peers, threads), e.g. '--preset gpu' or '--ops local --grid 16x14x14'")


def pytest_configure(config: pytest.Config) -> None:
    text = config.getoption("--bench-ops-args")
    try:
        args = bench_ops.parse_args(shlex.split(text))
    except SystemExit as stop:  # argparse has printed what is wrong
        raise pytest.UsageError(f"--bench-ops-args {text!r} is not a valid bench_ops.py command line") from stop
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    config.stash[ARGS] = args


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case, mode and implementation; FlexAttention's backward modes on CPU, which
    PyTorch does not have, are left out rather than skipped."""
    if "bench_item" not in metafunc.fixturenames:
        return
    args = metafunc.config.stash[ARGS]
    items = [(case, mode, impl) for case in bench_ops.cases(args) for mode in args.modes for impl in case.impls
             if mode == "fwd" or not impl.no_backward]
    ids = [f"{case.label(mode)} {impl.name}".replace(" ", "-") for case, mode, impl in items]
    metafunc.parametrize("bench_item", items, ids=ids)


@pytest.fixture(scope="session")
def bench_args(request: pytest.FixtureRequest):
    return request.config.stash[ARGS]
