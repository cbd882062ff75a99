"""The dispatcher: available_backends(), `python -m logo_attn.info`, what backend="auto" picks, and
that each backend declares what the tests expect it to compute."""

import os
import subprocess
import sys

import pytest
import torch

from logo_attn import available_backends, backends
from oracle import EXPECTED_DTYPES


def test_every_backend_is_reported_with_a_reason():
    status = available_backends()
    assert set(status) == {"triton", "cuda", "cpu", "torch"}
    assert status["torch"].available
    for name, entry in status.items():
        assert isinstance(entry.reason, str) and entry.reason, f"{name} has no reason"


def test_cuda_backend_reports_why_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status = available_backends()["cuda"]
    assert not status.available
    assert any(word in status.reason for word in ("CPU-only", "no CUDA device", "not available", "without its CUDA kernels"))


def test_info_module_prints_the_table():
    result = subprocess.run([sys.executable, "-m", "logo_attn.info"], capture_output=True, text=True, check=True)
    for name in ("triton", "cuda", "cpu", "torch"):
        assert f"  {name}" in result.stdout
    assert f"torch {torch.__version__}" in result.stdout


@pytest.mark.parametrize("name", ["torch", "cpu", "triton"])
def test_declared_capabilities_are_the_expected_ones(name):
    capability = backends.capability(name)
    if capability is None:
        pytest.fail(f"backend {name!r} declares nothing here: {available_backends()[name].reason}")
    assert set(capability.dtypes) == set(EXPECTED_DTYPES[name])
    assert capability.device == {"torch": None, "cpu": "cpu", "triton": "cuda"}[name]


def test_auto_on_cpu_tensors():
    """C++ kernels for what they compute, the reference for the rest; never the Triton interpreter,
    although it is enabled here and could run float16."""
    if torch.cuda.is_available():
        pytest.skip("the interpreter is only enabled on machines without a GPU")
    assert backends.triton_interpreted(), "conftest runs the suite under the Triton interpreter on this machine"
    for dtype, expected in ((torch.float32, "cpu"), (torch.float64, "cpu"), (torch.bfloat16, "cpu"),
                            (torch.float16, "cpu")):
        assert backends.choose("auto", "cpu", dtype, 64, backends.triton_interpreted()) == expected


@pytest.mark.skipif(os.environ.get("LOGO_ATTN_FORCE_CPP", "0") in ("", "0"), reason="only a forced C++ build must have it")
def test_forced_cpp_build_loaded_the_extension():
    """CI builds with LOGO_ATTN_FORCE_CPP=1: the C++ extension must have been built and must load."""
    import logo_attn._C  # noqa: F401

    assert available_backends()["cpu"].available, available_backends()["cpu"].reason


def _every_op_forward_and_backward():
    """Pooling, local and global attention (torch backend) and their gradients; the pooling
    gradient checked against the reference's."""
    import logo_attn

    torch.manual_seed(0)
    x = torch.randn(2, 24, 8, requires_grad=True)
    q, k, v = (torch.randn(2, 24, 2, 8, requires_grad=True) for _ in range(3))
    want = torch.autograd.grad(logo_attn.reference.window_pool(x, (2, 3, 4), (2, 3, 2)).square().sum(), x)[0]
    pooled = logo_attn.window_pool(x, (2, 3, 4), (2, 3, 2), backend="torch")
    out = logo_attn.local_attention(q, k, v, (2, 3, 4), (2, 3, 2), backend="torch")
    out = out + logo_attn.global_attention(q, k[:, :5], v[:, :5], backend="torch")
    got = torch.autograd.grad(pooled.square().sum(), x)[0]
    torch.testing.assert_close(got, want)
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(g is not None for g in grads)


OPS = ("local_attn_fwd", "local_attn_bwd", "global_attn_fwd", "global_attn_bwd", "window_pool_fwd", "window_pool_bwd")


def test_eager_calls_skip_the_per_call_signature_binding(monkeypatch):
    """torch's public Function.apply binds the arguments with inspect.signature on every call of a
    Function with setup_context (~60 us on a 2-core EPYC, more than the pooling kernel); the ops go
    around it in eager mode, forward and backward, and still give autograd's gradients."""
    import inspect

    _every_op_forward_and_backward()  # the first call imports torch._dynamo, whose dataclasses use inspect.signature

    def refuse(*args, **kwargs):
        raise AssertionError("inspect.signature was called")

    monkeypatch.setattr(inspect, "signature", refuse)
    _every_op_forward_and_backward()


def test_eager_calls_run_the_kernel_without_the_dispatcher(monkeypatch):
    """In plain eager mode the ops call their backend directly (the dispatcher's way to a Python
    kernel costs ~130 us a call on a 2-core EPYC); whatever intercepts ops still sees every one of
    them: a dispatch mode (FakeTensorMode, FlopCounterMode, ...) and the profiler."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils._python_dispatch import TorchDispatchMode

    for name in OPS:
        def refuse(*args, name=name, **kwargs):
            raise AssertionError(f"torch.ops.logo_attn.{name} was called in plain eager mode")

        getattr(torch.ops.logo_attn, name)  # resolved once, so that monkeypatch has an attribute to replace
        monkeypatch.setattr(torch.ops.logo_attn, name, refuse)
    _every_op_forward_and_backward()
    monkeypatch.undo()

    class Seen(TorchDispatchMode):
        names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.name())
            return func(*args, **(kwargs or {}))

    with Seen():
        _every_op_forward_and_backward()
    assert {f"logo_attn::{name}" for name in OPS} <= Seen.names
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _every_op_forward_and_backward()
    assert {f"logo_attn::{name}" for name in OPS} <= {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_torch_export_records_the_registered_ops(strict):
    """torch.export (dynamo, or non-strict's tracing modes) must see the registered ops, not what
    the eager direct call runs, so that the exported program is portable and has the ops' meta."""
    import logo_attn

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            local = logo_attn.local_attention(q, k, v, (2, 3, 4), (2, 3, 2))
            return local + logo_attn.global_attention(q, k[:, :4], v[:, :4])

    q, k, v = (torch.randn(2, 24, 2, 8) for _ in range(3))
    program = torch.export.export(Attention(), (q, k, v), strict=strict)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"logo_attn.local_attn_fwd.default", "logo_attn.global_attn_fwd.default"} <= targets, targets
    torch.testing.assert_close(program.module()(q, k, v), Attention()(q, k, v))
