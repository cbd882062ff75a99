"""Build hooks for the C++/CUDA extension `logo_attn._C`; the metadata lives in pyproject.toml.

`pip install .` runs this through build_backend/backend.py, which makes the torch of the environment
being installed into importable here even under build isolation. The CPU kernels are built when
torch (with its C++ headers) and a C++ compiler are found; the CUDA kernels are added when torch has
CUDA and an nvcc of the same major CUDA version is found. When the extension cannot be built the
install still succeeds, with the pure-PyTorch backend only, and `logo_attn/_build.json` records why
and how to fix it: importing logo_attn warns with that text (logo_attn/_extension.py).

Environment flags (1 = on):
  LOGO_ATTN_FORCE_CPP   fail instead of installing without the C++ extension
  LOGO_ATTN_SKIP_CPP    build no extension at all (on purpose: importing logo_attn does not warn)
  LOGO_ATTN_FORCE_CUDA  fail instead of building without the CUDA kernels
  LOGO_ATTN_SKIP_CUDA   never build the CUDA kernels
  LOGO_ATTN_CUDA_ARCHS  the CUDA architectures to compile for, e.g. "8.0;9.0+PTX" (default: as PyTorch's
                        extensions choose them, see build_backend/cuda_archs.py); recorded in _build.json
"""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from setuptools import Command, setup
from setuptools.command.build import build

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "build_backend"))  # already there under pip; not under `python setup.py`
import cuda_archs  # noqa: E402
RECORD_PATH = os.path.join("logo_attn", "_build.json")
REINSTALL = "reinstall logo_attn from its source with `pip install .`"


def flag(name: str) -> bool:
    return os.environ.get(name, "0").strip().lower() not in ("", "0", "false", "no")


def sources(*patterns: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern)))


def note(message: str) -> None:
    print(f"logo_attn setup: {message}", file=sys.stderr)


# What this build does and why: written to logo_attn/_build.json by the build_record command, read
# at import time by logo_attn/_extension.py.
RECORD = {
    "extension": "skipped",  # "built" or "skipped"
    "reason": "",  # why it was skipped, or what was built
    "fix": "",  # how to get the extension when it was skipped
    "deliberate": False,  # skipped because the user asked for it (LOGO_ATTN_SKIP_CPP=1)
    "torch": None,  # the torch compiled against: version, CUDA version, C++ ABI flag
    "torch_cuda": None,
    "cxx11_abi": None,
    "cuda_kernels": False,
    "cuda_reason": "",
    "cuda_archs": None,  # {"sass": ["8.0", ...], "ptx": ["9.0"]}: what the CUDA kernels were compiled for
}


def skip(reason: str, fix: str, deliberate: bool = False) -> dict:
    RECORD.update(extension="skipped", reason=reason, fix=fix, deliberate=deliberate, cuda_kernels=False,
                  cuda_archs=None)
    # The deliberate case keeps the note tests/test_csrc.py looks for.
    note("LOGO_ATTN_SKIP_CPP=1: building a pure-Python package" if deliberate
         else f"building a pure-Python package: {reason}")
    return {}


def enforce_flags() -> None:
    """LOGO_ATTN_FORCE_CPP / FORCE_CUDA: a build that left out what they ask for fails."""
    if flag("LOGO_ATTN_FORCE_CPP") and RECORD["extension"] != "built":
        raise RuntimeError(f"LOGO_ATTN_FORCE_CPP=1 but logo_attn._C cannot be built: {RECORD['reason']}")
    if flag("LOGO_ATTN_FORCE_CUDA") and not RECORD["cuda_kernels"]:
        why = RECORD["cuda_reason"] or RECORD["reason"]
        raise RuntimeError(f"LOGO_ATTN_FORCE_CUDA=1 but the CUDA kernels cannot be built: {why}")


def missing_compiler() -> str | None:
    """Why the C++ compiler torch will call (CXX, else c++) cannot run, or None."""
    compiler = os.environ.get("CXX", "c++")
    words = shlex.split(compiler)
    if not words or shutil.which(words[0]) is None:
        return f"no C++ compiler: `{compiler}` (the CXX environment variable, else c++) was not found"
    return None


def nvcc_release(cuda_home: str) -> str | None:
    try:
        nvcc = os.path.join(cuda_home, "bin", "nvcc")
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def cuda_plan(torch, cuda_home: str | None, cuda_sources: list[str]) -> tuple[bool, str]:
    """Whether to compile the CUDA kernels, and why (not)."""
    if flag("LOGO_ATTN_SKIP_CUDA"):
        return False, "LOGO_ATTN_SKIP_CUDA=1"
    if torch.version.cuda is None:
        return False, "this torch has no CUDA"
    if cuda_home is None:
        return False, "nvcc was not found (set CUDA_HOME)"
    if not cuda_sources:
        return False, "csrc/cuda/ holds no sources"
    nvcc = nvcc_release(cuda_home)
    if nvcc is None:
        return False, f"{cuda_home}/bin/nvcc did not report its version"
    # torch takes the CUDA toolkit to be two levels above nvcc, which is wrong for an nvcc wrapper.
    if not os.path.exists(os.path.join(cuda_home, "include", "cuda_runtime.h")):
        return False, f"the CUDA headers are not in {cuda_home}/include; set CUDA_HOME to the CUDA toolkit"
    # torch refuses to compile with an nvcc of another major version than its own CUDA.
    if nvcc.split(".")[0] != torch.version.cuda.split(".")[0]:
        return False, f"nvcc {nvcc} ({cuda_home}) cannot build for this torch's CUDA {torch.version.cuda}"
    return True, f"torch has CUDA {torch.version.cuda} and nvcc {nvcc} is at {cuda_home}"


def choose_archs(torch, why: str) -> tuple[bool, str, dict | None]:
    """Set TORCH_CUDA_ARCH_LIST for torch's BuildExtension (build_backend/cuda_archs.py's choice) and
    read back the -gencode flags torch derives from it: (still building CUDA, why, the archs)."""
    from torch.utils.cpp_extension import _get_cuda_arch_flags

    visible = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    # torch.cuda.get_arch_list() is empty when no GPU is visible; the flags it reads are not
    arch_flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)() or ""
    value, source = cuda_archs.choose_arch_list(os.environ, visible, arch_flags.split())
    if value is None:
        return False, source, None
    os.environ["TORCH_CUDA_ARCH_LIST"] = value
    try:
        archs = cuda_archs.compiled_archs(_get_cuda_arch_flags())
    except ValueError as error:  # torch names the entry it does not know
        return False, f"architectures {value!r} ({source}): {error}", None
    return True, f"{why}; architectures {value}, {source}", archs


def extension_args() -> dict:
    if flag("LOGO_ATTN_SKIP_CPP"):
        return skip("LOGO_ATTN_SKIP_CPP=1 was set when logo_attn was built",
                    f"{REINSTALL} without LOGO_ATTN_SKIP_CPP", deliberate=True)
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension, include_paths
    except ImportError as error:
        # Under build isolation the backend asks the frontend for torch when the target has none; a
        # metadata or sdist step may still run without it, so LOGO_ATTN_FORCE_CPP waits for the build.
        return skip(f"torch was not importable when logo_attn was built ({error})",
                    f"install torch first, then {REINSTALL}")
    RECORD.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cxx11_abi=torch._C._GLIBCXX_USE_CXX11_ABI)

    cpp = sources("csrc/*.cpp", "csrc/cpu/*.cpp")
    cuda = sources("csrc/cuda/*.cu", "csrc/cuda/*.cpp")
    if not cpp:
        return skip("csrc/ holds no C++ sources", "build from a complete source tree")
    headers = os.path.join(include_paths()[0], "torch", "extension.h")
    if not os.path.exists(headers):
        return skip(f"this torch ({os.path.dirname(torch.__file__)}) ships without its C++ headers ({headers})",
                    f"install a torch that has them (the PyPI wheels do), then {REINSTALL}")
    compiler_problem = missing_compiler()
    if compiler_problem:
        return skip(compiler_problem, f"install a C++ compiler (e.g. `apt install g++`, or set CXX), then {REINSTALL}")

    with_cuda, why = cuda_plan(torch, CUDA_HOME, cuda)
    if with_cuda:
        with_cuda, why, archs = choose_archs(torch, why)
        RECORD.update(cuda_archs=archs)
    RECORD.update(extension="built", cuda_kernels=with_cuda, cuda_reason=why,
                  reason=f"CPU kernels{' and CUDA kernels' if with_cuda else ''}, against torch {torch.__version__}")
    note(f"building logo_attn._C with{'' if with_cuda else 'out'} CUDA kernels: {why} "
         f"(torch {torch.__version__} at {os.path.dirname(torch.__file__)})")

    # -fopenmp: at::parallel_for is header-inline, so its `omp parallel` is compiled here; without
    # the flag every op would run on one thread. No -march: csrc/cpu/isa.h picks AVX-512/AVX2/SSE
    # at run time, so the wheel runs on any x86-64. No -std: torch's BuildExtension passes the
    # standard its headers need (C++17 for torch 2.11, C++20 for 2.13).
    # -Wno-psabi: the ABI notes about vector arguments concern always-inline helpers only.
    # -O3: the kernels need it (at -O2 they ran 3x slower on an AVX2 EPYC). -g0 overrides the -g of
    # Python's CFLAGS: debug info of the unrolled kernels was a fifth of the compile time and 85 % of
    # the library's size (13.9 -> 2.1 MB), like PyTorch's own wheels ship without it.
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    cxx_args = ["-O3", "-g0", "-Wno-psabi", *openmp]
    cpu_only = CppExtension("logo_attn._C", cpp, extra_compile_args={"cxx": list(cxx_args)}, extra_link_args=openmp)
    attempts = [cpu_only]
    if with_cuda:
        args = {"cxx": list(cxx_args), "nvcc": ["-O3", "-lineinfo"]}
        full = CUDAExtension("logo_attn._C", cpp + cuda, extra_compile_args=args, extra_link_args=openmp)
        # A CUDA compile failure falls back to the CPU kernels unless LOGO_ATTN_FORCE_CUDA asks otherwise.
        attempts = [full] if flag("LOGO_ATTN_FORCE_CUDA") else [full, cpu_only]
    enforce_flags()
    return {"ext_modules": attempts[:1], "cmdclass": {"build_ext": build_ext_with_fallback(BuildExtension, attempts)}}


def build_ext_with_fallback(torch_build_ext, attempts):
    """torch's BuildExtension (ninja), trying `attempts` in turn; when none compiles the package is
    still installed, without the extension, and the record says why (LOGO_ATTN_FORCE_CPP: fail)."""

    class BuildExt(torch_build_ext):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, use_ninja=True, **kwargs)

        def run(self):
            compiler = self.compiler  # a name; each run replaces it with a compiler object
            for index, extension in enumerate(attempts):
                self.extensions = self.distribution.ext_modules = [extension]
                self.compiler = compiler
                try:
                    super().run()
                    return
                except Exception as error:  # noqa: BLE001  (compiler errors come as several types)
                    failure = f"compiling logo_attn._C failed ({type(error).__name__}: {error})"
                    if flag("LOGO_ATTN_FORCE_CPP") or flag("LOGO_ATTN_FORCE_CUDA"):
                        raise
                    if index + 1 < len(attempts):
                        note(f"the CUDA kernels failed to compile; building the CPU kernels alone: {failure}")
                        RECORD.update(cuda_kernels=False, cuda_archs=None,
                                      reason=f"CPU kernels only, against torch {RECORD['torch']}", cuda_reason=f"{failure}; `pip install -v .` shows the compiler's errors")
                    else:
                        self.extensions = self.distribution.ext_modules = []
                        skip(failure, f"`pip install -v .` shows the compiler's errors; fix them, then {REINSTALL}")

    return BuildExt


class BuildRecord(Command):
    """Writes logo_attn/_build.json, after build_ext: into the wheel, or into the source tree for an
    editable install (setuptools' SubCommand protocol)."""

    description = "record what was built into logo_attn/_build.json"
    user_options = []
    editable_mode = False

    def initialize_options(self):
        self.build_lib = None

    def finalize_options(self):
        self.set_undefined_options("build_py", ("build_lib", "build_lib"))

    def run(self):
        enforce_flags()
        path = os.path.join(ROOT if self.editable_mode else self.build_lib, RECORD_PATH)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(RECORD, f, indent=1)

    def get_outputs(self):
        return [] if self.editable_mode else [os.path.join(self.build_lib, RECORD_PATH)]

    def get_output_mapping(self):
        return {}

    def get_source_files(self):
        return []


class Build(build):
    sub_commands = [*build.sub_commands, ("build_record", None)]


def main() -> None:
    args = extension_args()
    commands = {**args.pop("cmdclass", {}), "build": Build, "build_record": BuildRecord}
    setup(**args, cmdclass=commands)


if __name__ == "__main__":  # also under setuptools' PEP 517 backend, which runs this file as __main__
    main()
