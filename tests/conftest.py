"""Test configuration shared by every suite.

- Without a GPU, Triton kernels run under the interpreter: TRITON_INTERPRET must be set before any
  kernel is defined, i.e. before logo_attn.kernels is imported, so it is set here.
- `poison_empty` fills every tensor from torch.empty* with NaN (flash-linear-attention does this),
  so an output element a kernel forgets to write fails the comparison instead of passing as zero.
- Hypothesis profiles (tests/test_properties.py): `ci`, loaded when the CI environment variable is
  set, has a fixed example budget and a derandomized seed, so a CI failure reproduces and the run's
  length is known; `dev`, the default, draws fresh examples each run. HYPOTHESIS_PROFILE picks one.
  No deadline in either: the machines are shared and Triton's interpreter is slow, so a time per
  example says nothing about the code.
- Under pytest-xdist each worker gets its share of the cores as torch threads (1 each for `-n 2` on
  2 cores): every worker's OpenMP pool spanning all cores oversubscribed them, and the two training
  tests took 177 s each instead of 51 s. Subprocesses keep torch's default; tests/test_csrc*.py run
  the C++ kernels on 2 threads whatever the worker count, so their parallel splits stay tested.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402


def pytest_configure(config):
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // int(workers)))

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # tests/test_properties.py skips, saying so
    pass
else:
    settings.register_profile("ci", max_examples=12, derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("dev", max_examples=40, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


def _nan_fill(t):
    if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.device.type != "meta":
        t.fill_(float("nan"))
    return t


@pytest.fixture
def poison_empty(monkeypatch):
    """torch.empty, empty_like, empty_strided and Tensor.new_empty return NaN-filled tensors."""
    for name in ("empty", "empty_like", "empty_strided"):
        original = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _f=original, **k: _nan_fill(_f(*a, **k)))
    new_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty", lambda self, *a, **k: _nan_fill(new_empty(self, *a, **k)))
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def kernel_threads():
    """Two torch threads for the test, whatever the worker's share: the C++ kernels' parallel splits
    (tests/test_csrc*.py) must run on more than one thread to be tested."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
