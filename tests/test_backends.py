"""available_backends(), `python -m logo_attn.info`, and what backend="auto" picks."""

import os
import subprocess
import sys

import pytest
import torch

from logo_attn import available_backends, backends


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
    assert any(word in status.reason for word in ("CPU-only", "no CUDA device", "not built", "without its CUDA kernels"))


def test_info_module_prints_the_table():
    result = subprocess.run([sys.executable, "-m", "logo_attn.info"], capture_output=True, text=True, check=True)
    for name in ("triton", "cuda", "cpu", "torch"):
        assert f"  {name}" in result.stdout
    assert f"torch {torch.__version__}" in result.stdout


def test_auto_prefers_cpp_kernels_on_cpu_and_falls_back_for_other_dtypes():
    interpreted = backends.triton_interpreted()
    assert backends.choose("auto", "cpu", torch.float16, 64, interpreted) == "torch"  # no fp16 C++ CPU kernel
    expected = "cpu" if backends.why_not("cpu", "cpu", torch.float32, 64) is None else "torch"
    assert backends.choose("auto", "cpu", torch.float32, 64, interpreted) == expected


def test_auto_never_picks_the_interpreter():
    assert backends.choose("auto", "cpu", torch.float32, 64, True) in ("cpu", "torch")


@pytest.mark.skipif(os.environ.get("LOGO_ATTN_FORCE_CPP", "0") in ("", "0"), reason="only a forced C++ build must have it")
def test_forced_cpp_build_loaded_the_extension():
    """CI builds with LOGO_ATTN_FORCE_CPP=1: the C++ extension must have been built and must load."""
    import logo_attn._C  # noqa: F401

    assert available_backends()["cpu"].available, available_backends()["cpu"].reason
