"""Build hooks for the C++/CUDA extension `logo_attn._C`; the metadata lives in pyproject.toml.

The CPU extension is built whenever torch is importable at build time (it is, with
`pip install --no-build-isolation .`); the CUDA kernels are added when torch has CUDA and nvcc is
found. Environment flags (1 = on):
  LOGO_ATTN_FORCE_CPP   fail instead of falling back to a pure-Python package when the C++ build is impossible
  LOGO_ATTN_SKIP_CPP    build no extension at all
  LOGO_ATTN_FORCE_CUDA  fail instead of building without the CUDA kernels when torch has no CUDA or nvcc is missing
  LOGO_ATTN_SKIP_CUDA   never build the CUDA kernels
  LOGO_ATTN_CUDA_ARCHS  TORCH_CUDA_ARCH_LIST to compile for when it is not set (default "9.0")
"""

import glob
import os
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def sources(*patterns: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern)))


def note(message: str) -> None:
    print(f"logo_attn setup: {message}", file=sys.stderr)


def extension_args() -> dict:
    if flag("LOGO_ATTN_SKIP_CPP"):
        note("LOGO_ATTN_SKIP_CPP=1: building a pure-Python package")
        return {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as error:
        if flag("LOGO_ATTN_FORCE_CPP"):
            raise RuntimeError(
                "LOGO_ATTN_FORCE_CPP=1 but torch cannot be imported by the build; install torch first and "
                "build with `pip install --no-build-isolation .`"
            ) from error
        note(f"torch is not importable at build time ({error}); building a pure-Python package. "
             "Use `pip install --no-build-isolation .` to get the C++ kernels.")
        return {}

    cpp = sources("csrc/*.cpp", "csrc/cpu/*.cpp")
    cuda = sources("csrc/cuda/*.cu", "csrc/cuda/*.cpp")
    if not cpp:
        if flag("LOGO_ATTN_FORCE_CPP"):
            raise RuntimeError("LOGO_ATTN_FORCE_CPP=1 but csrc/ holds no C++ sources")
        note("csrc/ holds no C++ sources yet; building a pure-Python package")
        return {}

    if flag("LOGO_ATTN_SKIP_CUDA"):
        with_cuda, why = False, "LOGO_ATTN_SKIP_CUDA=1"
    elif torch.version.cuda is None:
        with_cuda, why = False, "this torch has no CUDA"
    elif CUDA_HOME is None:
        with_cuda, why = False, "nvcc was not found (set CUDA_HOME)"
    else:
        with_cuda, why = bool(cuda), "torch has CUDA and nvcc is present"
    if flag("LOGO_ATTN_FORCE_CUDA") and not with_cuda:
        raise RuntimeError(f"LOGO_ATTN_FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}")
    note(f"building logo_attn._C with{'' if with_cuda else 'out'} CUDA kernels: {why}")

    # -fopenmp: at::parallel_for is header-inline, so its `omp parallel` is compiled here; without
    # the flag every op would run on one thread. No -march: csrc/cpu/isa.h picks AVX-512/AVX2/SSE
    # at run time, so the wheel runs on any x86-64. No -std: torch's BuildExtension passes the
    # standard its headers need (C++17 for torch 2.11, C++20 for 2.13).
    # -Wno-psabi: the ABI notes about vector arguments concern always-inline helpers only.
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    compile_args = {"cxx": ["-O3", "-Wno-psabi", *openmp]}
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", os.environ.get("LOGO_ATTN_CUDA_ARCHS", "9.0"))
        compile_args["nvcc"] = ["-O3", "-lineinfo"]
        ext = CUDAExtension("logo_attn._C", cpp + cuda, extra_compile_args=compile_args, extra_link_args=openmp)
    else:
        ext = CppExtension("logo_attn._C", cpp, extra_compile_args=compile_args, extra_link_args=openmp)
    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension.with_options(use_ninja=True)}}


setup(**extension_args())
