"""The CUDA architectures of logo_attn._C: which ones the build chooses (build_backend/cuda_archs.py,
against torch's own -gencode flags), what the build records, which GPUs the recorded ones run on,
the dispatcher's refusal of a GPU they do not cover, and an nvcc compile for an arch other than 9.0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from logo_attn import _extension, backends
from test_install import load_setup

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build_backend"))
import cuda_archs  # noqa: E402

TORCH_213_CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # a CUDA wheel's get_arch_list()


def torch_gencode(arch_list: str) -> list[str]:
    """The -gencode flags torch's extension builder derives from TORCH_CUDA_ARCH_LIST (the independent
    reference: it also rejects entries torch does not know)."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    saved = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    try:
        return _get_cuda_arch_flags()
    finally:
        if saved is None:
            del os.environ["TORCH_CUDA_ARCH_LIST"]
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved


# --------------------------------------------------------------------------------------------------
# The build's choice (pure function, every branch)
# --------------------------------------------------------------------------------------------------


def test_override_wins_over_torch_variable_gpus_and_torch_list():
    env = {"LOGO_ATTN_CUDA_ARCHS": "8.0;8.6", "TORCH_CUDA_ARCH_LIST": "9.0"}
    assert cuda_archs.choose_arch_list(env, [(9, 0)], TORCH_213_CU130) == ("8.0;8.6", "LOGO_ATTN_CUDA_ARCHS=8.0;8.6")


def test_torch_variable_is_taken_verbatim():
    value, source = cuda_archs.choose_arch_list({"TORCH_CUDA_ARCH_LIST": "Ampere", "LOGO_ATTN_CUDA_ARCHS": " "},
                                                [(9, 0)], TORCH_213_CU130)
    assert (value, source) == ("Ampere", "TORCH_CUDA_ARCH_LIST=Ampere")


def test_visible_gpus_each_once_newest_with_ptx():
    value, source = cuda_archs.choose_arch_list({}, [(9, 0), (8, 0), (9, 0), (10, 0)], TORCH_213_CU130)
    assert value == "8.0;9.0;10.0+PTX"  # in numeric order: a string sort would put 10.0 first
    assert "visible GPUs" in source and "8.0, 9.0, 10.0" in source
    assert cuda_archs.compiled_archs(torch_gencode(value)) == {"sass": ["8.0", "9.0", "10.0"], "ptx": ["10.0"]}


def test_a_gpu_newer_than_torch_is_clamped_to_torchs_newest():
    value, _ = cuda_archs.choose_arch_list({}, [(13, 0)], ["sm_80", "sm_90"])
    assert value == "9.0+PTX"  # what torch's builder does: its nvcc may not know 13.0; the PTX JITs there


def test_no_gpu_takes_every_arch_torch_was_built_for():
    value, source = cuda_archs.choose_arch_list({}, [], TORCH_213_CU130)
    assert value == "7.5;8.0;8.6;9.0;10.0;12.0+PTX" and "installed torch" in source
    assert cuda_archs.compiled_archs(torch_gencode(value)) == {
        "sass": ["7.5", "8.0", "8.6", "9.0", "10.0", "12.0"], "ptx": ["12.0"]}


def test_torchs_own_ptx_and_arch_specific_entries_are_kept():
    # a PTX as new as the newest SASS: no second one; "9.0a" is not portable, so 9.0 gets the PTX
    assert cuda_archs.choose_arch_list({}, [], ["sm_80", "sm_90", "compute_90"])[0] == "8.0;9.0+PTX"
    assert cuda_archs.choose_arch_list({}, [], ["sm_80", "sm_90a", "sm_90"])[0] == "8.0;9.0+PTX;9.0a"
    assert cuda_archs.choose_arch_list({}, [], ["sm_80", "compute_70", "gfx90a"])[0] == "7.0+PTX;8.0+PTX"


def test_nothing_to_go_by_builds_no_cuda_kernels():
    value, reason = cuda_archs.choose_arch_list({}, [], [])
    assert value is None and "set LOGO_ATTN_CUDA_ARCHS" in reason


def test_compiled_archs_reads_every_gencode_form():
    flags = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=[sm_90,compute_90]",
             "-gencode=arch=compute_90a,code=sm_90a", "-O3"]
    assert cuda_archs.compiled_archs(flags) == {"sass": ["8.0", "9.0", "9.0a"], "ptx": ["9.0"]}


def test_setup_records_the_archs_torch_will_compile(monkeypatch):
    """setup.py's glue on a stand-in CUDA torch without a visible GPU: TORCH_CUDA_ARCH_LIST is set for
    torch's builder and the record holds what its flags say."""
    setup = load_setup()
    for name in ("TORCH_CUDA_ARCH_LIST", "LOGO_ATTN_CUDA_ARCHS"):
        monkeypatch.setenv(name, "")  # undone after the test, whatever choose_archs sets
        monkeypatch.delenv(name)
    fake = SimpleNamespace(cuda=SimpleNamespace(device_count=lambda: 0),
                           _C=SimpleNamespace(_cuda_getArchFlags=lambda: "sm_80 sm_86 sm_90"))
    built, why, archs = setup.choose_archs(fake, "torch has CUDA")
    assert built and os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;8.6;9.0+PTX"
    assert archs == {"sass": ["8.0", "8.6", "9.0"], "ptx": ["9.0"]} and "architectures 8.0;8.6;9.0+PTX" in why
    monkeypatch.setenv("LOGO_ATTN_CUDA_ARCHS", "7.7")  # torch knows no 7.7: no CUDA kernels, and why
    built, why, archs = setup.choose_archs(fake, "torch has CUDA")
    assert not built and archs is None and "Unknown CUDA arch (7.7)" in why


# --------------------------------------------------------------------------------------------------
# Which GPUs the recorded archs run on
# --------------------------------------------------------------------------------------------------

H100_ONLY = {"sass": ["9.0"], "ptx": ["9.0"]}


@pytest.mark.parametrize("archs,capability,runs", [
    ({"sass": ["8.0"], "ptx": []}, (8, 6), True),  # SASS runs on a later minor of its major
    ({"sass": ["8.0"], "ptx": []}, (8, 9), True),
    ({"sass": ["8.6"], "ptx": []}, (8, 0), False),
    ({"sass": ["8.0"], "ptx": []}, (9, 0), False),  # ... never on another major
    (H100_ONLY, (12, 0), True),  # PTX is compiled by the driver for newer GPUs
    (H100_ONLY, (8, 0), False),  # ... never for older ones
    ({"sass": ["9.0a"], "ptx": []}, (9, 0), True),  # arch-specific: that capability only
    ({"sass": ["10.0a"], "ptx": []}, (10, 3), False),
    ({"sass": [], "ptx": ["9.0a"]}, (10, 0), False),
])
def test_arch_coverage_follows_cudas_compatibility_rules(archs, capability, runs):
    problem = _extension.arch_problem(capability, archs)
    assert (problem is None) == runs
    if not runs:
        assert f"compute capability {capability[0]}.{capability[1]}" in problem
        assert f"LOGO_ATTN_CUDA_ARCHS={capability[0]}.{capability[1]}" in problem


def test_unrecorded_archs_refuse_nothing():
    assert _extension.arch_problem((7, 5), None) is None
    assert "not recorded" in _extension.describe_archs(None)
    assert _extension.describe_archs({"sass": ["8.0", "9.0"], "ptx": ["9.0"]}) == "sm_80, sm_90 and PTX compute_90"


def test_info_says_which_archs_the_extension_holds(monkeypatch):
    from logo_attn import info

    record = {"cuda_kernels": True, "cuda_archs": {"sass": ["8.0", "9.0"], "ptx": ["9.0"]}}
    monkeypatch.setattr(info, "read_record", lambda: record)
    assert "CUDA kernels: compiled for sm_80, sm_90 and PTX compute_90" in info.report()
    monkeypatch.setattr(info, "read_record", lambda: {"cuda_kernels": False, "cuda_reason": "this torch has no CUDA"})
    assert "CUDA kernels: not built (this torch has no CUDA)" in info.report()


@pytest.fixture
def cuda_extension_for_h100(monkeypatch):
    """This install as if logo_attn._C had CUDA kernels for 9.0 (SASS + PTX) only and Triton were missing."""
    real_install, real_capability = backends._install_problem, backends.capability
    monkeypatch.setattr(backends, "_install_problem", lambda name: (
        "Triton is not installed" if name == "triton" else None if name == "cuda" else real_install(name)))
    monkeypatch.setattr(backends, "capability", lambda name: (
        backends.Capability("cuda", (torch.float32,), 256) if name == "cuda" else real_capability(name)))
    monkeypatch.setattr(_extension, "cuda_archs", lambda record=None: H100_ONLY)
    backends.choose.cache_clear()
    yield
    backends.choose.cache_clear()


def test_dispatcher_refuses_a_gpu_without_a_kernel_image(cuda_extension_for_h100):
    with pytest.raises(ValueError, match=r"backend 'cuda' cannot run here: logo_attn._C holds CUDA kernels for "
                                         r"sm_90 and PTX compute_90, none of which runs on this GPU "
                                         r"\(compute capability 8.0\)"):
        backends.choose("cuda", "cuda", torch.float32, 64, False, (8, 0))
    assert backends.choose("cuda", "cuda", torch.float32, 64, False, (12, 0)) == "cuda"  # the PTX JITs there
    assert backends.choose("cuda", "cuda", torch.float32, 64, False, (9, 0)) == "cuda"
    # "auto" does not fail: it falls back to the reference on the A100
    assert backends.choose("auto", "cuda", torch.float32, 64, False, (8, 0)) == "torch"


# --------------------------------------------------------------------------------------------------
# nvcc for an architecture other than 9.0
# --------------------------------------------------------------------------------------------------


def test_a_cuda_source_compiles_for_ampere_and_ptx_for_blackwell(tmp_path):
    """tests/test_csrc.py compiles every .cu for sm_90; one (the smallest, to keep CI short) is
    compiled here for the A100's sm_80 and as compute_120 PTX, what a default no-GPU build adds."""
    nvcc = shutil.which("nvcc") or (Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc")
    if not Path(nvcc).exists():
        pytest.skip("nvcc is not installed on this machine")
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    gencode = torch_gencode("8.0;12.0+PTX")
    gencode = [f for f in gencode if "sm_120" not in f]  # the PTX alone: the SASS adds nothing to check
    cmd = [str(nvcc), "-c", str(ROOT / "csrc" / "cuda" / "window_pool.cu"), "-o", str(tmp_path / "out.o"),
           *COMMON_NVCC_FLAGS, "-std=c++17", *gencode, "-Werror", "all-warnings"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout}\n{run.stderr}"
    cuobjdump = shutil.which("cuobjdump")
    if cuobjdump:  # not in every toolkit install (this machine's has none): check what the object holds
        listed = subprocess.run([cuobjdump, "--list-elf", "--list-ptx", str(tmp_path / "out.o")],
                                capture_output=True, text=True)
        assert "sm_80" in listed.stdout and "sm_120" in listed.stdout, listed.stdout
