"""Which CUDA architectures logo_attn._C is compiled for. Torch-free pure functions, so that setup.py
and the tests import this file alone (it sits on the build backend's path, next to backend.py).

The default is what PyTorch's own extensions do (torch.utils.cpp_extension's `_get_cuda_arch_flags`):
TORCH_CUDA_ARCH_LIST when it is set; else the compute capabilities of the GPUs visible at build time,
each clamped to the newest one the installed torch was built for (its nvcc may know no newer one);
else every architecture the installed torch was built for (`torch.cuda.get_arch_list()`), so that
the wheel runs wherever that torch runs. The newest gets PTX as well, which the driver compiles
just in time for GPUs newer than any of them. LOGO_ATTN_CUDA_ARCHS overrides all of these for this
package alone (TORCH_CUDA_ARCH_LIST may be set for other builds).

Entries use TORCH_CUDA_ARCH_LIST's syntax: "8.0", "9.0a" (arch-specific), "12.0+PTX".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

OVERRIDE = "LOGO_ATTN_CUDA_ARCHS"
TORCH_VARIABLE = "TORCH_CUDA_ARCH_LIST"


def _key(arch: str) -> tuple[int, int, str]:
    """Numeric order of "9.0" < "10.0" < "10.0a" (a string sort puts "10.0" first)."""
    major, minor, suffix = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)", arch).groups()
    return int(major), int(minor), suffix


def from_torch_name(name: str) -> tuple[str, bool] | None:
    """("9.0", False) for "sm_90", ("12.0", True) for "compute_120" (PTX), ("9.0a", False) for
    "sm_90a"; None for anything else (torch.cuda.get_arch_list() may list non-NVIDIA targets on ROCm)."""
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([a-z]?)", name)
    if not match:
        return None
    kind, major, minor, suffix = match.groups()
    return f"{int(major)}.{minor}{suffix}", kind == "compute"


def with_newest_ptx(sass: Sequence[str], ptx: Sequence[str] = ()) -> str:
    """A TORCH_CUDA_ARCH_LIST value: the archs in numeric order, "+PTX" on those in `ptx` and on the
    newest portable one (an arch-specific "9.0a" PTX runs on 9.0 only) unless a PTX at least as new
    is there already."""
    ptx = set(ptx)
    # TORCH_CUDA_ARCH_LIST cannot ask for PTX without SASS: "7.0+PTX" is both
    archs = sorted(set(sass) | ptx, key=_key)
    portable = [a for a in archs if not a[-1].isalpha()]
    if portable and not any(_key(p)[:2] >= _key(portable[-1])[:2] for p in ptx if not p[-1].isalpha()):
        ptx.add(portable[-1])
    return ";".join(f"{a}+PTX" if a in ptx else a for a in archs)


def choose_arch_list(environ: Mapping[str, str], visible: Sequence[tuple[int, int]],
                     torch_archs: Sequence[str]) -> tuple[str | None, str]:
    """(TORCH_CUDA_ARCH_LIST to compile for, where it comes from). None: no way to tell (no variable,
    no visible GPU, a torch that lists no architecture), and the CUDA kernels are not built.

    `visible`: the compute capabilities of the GPUs visible now; `torch_archs`: the installed torch's
    `torch.cuda.get_arch_list()` ("sm_80", "compute_90", ...).
    """
    for variable in (OVERRIDE, TORCH_VARIABLE):
        value = environ.get(variable, "").strip()
        if value:
            return value, f"{variable}={value}"
    built = [arch for arch in map(from_torch_name, torch_archs) if arch is not None]
    sass = [arch for arch, is_ptx in built if not is_ptx]
    newest = max((_key(a)[:2] for a in sass), default=None)
    if visible:
        # torch's rule: a GPU newer than the torch build is compiled for that torch's newest arch
        clamped = [min(tuple(c), newest) if newest else tuple(c) for c in visible]
        value = with_newest_ptx([f"{major}.{minor}" for major, minor in clamped])
        gpus = ", ".join(sorted({f"{major}.{minor}" for major, minor in visible}, key=_key))
        return value, f"the visible GPUs' (compute capability {gpus})"
    if sass:
        value = with_newest_ptx(sass, [arch for arch, is_ptx in built if is_ptx])
        return value, "the architectures the installed torch was built for (no GPU visible)"
    return None, (f"no GPU is visible and this torch lists no CUDA architecture; set {OVERRIDE} "
                  "(e.g. 8.0;9.0+PTX)")


def compiled_archs(gencode_flags: Sequence[str]) -> dict[str, list[str]]:
    """What nvcc was asked to emit, from its -gencode flags: {"sass": [...], "ptx": [...]}, e.g.
    "-gencode=arch=compute_90,code=sm_90" is SASS 9.0, "...,code=compute_90" PTX 9.0."""
    sass, ptx = set(), set()
    for flag in gencode_flags:
        for code in re.findall(r",code=\[?([^\]\s]+)\]?", flag):
            for name in code.split(","):
                arch = from_torch_name(name)
                if arch is not None:
                    (ptx if arch[1] else sass).add(arch[0])
    return {"sass": sorted(sass, key=_key), "ptx": sorted(ptx, key=_key)}
