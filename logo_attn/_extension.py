"""Whether the C++ extension `logo_attn._C` can serve the "cpu" and "cuda" backends, and one warning
per process when it cannot.

The build (setup.py) writes `_build.json` next to this file: the torch it compiled against, or why it
compiled nothing and how to fix that. Without the extension every op still runs, on the pure-PyTorch
`torch` backend, only slower, so a missing extension must never go unnoticed: importing logo_attn
warns with the reason and the fix. A build without the extension on purpose (LOGO_ATTN_SKIP_CPP=1)
does not warn; `python -m logo_attn.info` still says why the backends are missing.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch  # before logo_attn._C: the extension links against libtorch

RECORD_PATH = Path(__file__).with_name("_build.json")
REINSTALL = "reinstall from the logo_attn source with `pip install --force-reinstall --no-deps .`"
REBUILD = f"rebuild it against this torch: {REINSTALL}"
FALLBACK = "until then the ops fall back to the pure-PyTorch `torch` backend where they would run C++ kernels (slower)"


class ExtensionWarning(UserWarning):
    """logo_attn._C is missing, cannot load, or was built against another torch."""


@dataclass(frozen=True)
class ExtensionStatus:
    loaded: bool  # logo_attn._C imported
    problem: str | None  # what is wrong and how to fix it; None when nothing is
    deliberate: bool = False  # left out on purpose: reported by logo_attn.info, not warned about


def read_record(path: Path = RECORD_PATH) -> dict | None:
    """What the build recorded, or None for a source tree that was never built (or is older than the record)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def release(version: str) -> tuple[int, ...]:
    """(2, 13, 0) from "2.13.0+cpu": the part of torch's version that decides its C++ ABI."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def diagnose(record: dict | None, load_error: ImportError | None, running_torch: str) -> ExtensionStatus:
    """The status of the extension from the build record and the outcome of importing it."""
    if record is not None and record.get("extension") == "skipped":
        return ExtensionStatus(
            False,
            f"the C++ extension logo_attn._C was not built: {record.get('reason')}. Fix: {record.get('fix')}",
            bool(record.get("deliberate")),
        )
    built_with = record.get("torch") if record else None
    if load_error is not None:
        if record is None:
            problem = (f"the C++ extension logo_attn._C is missing ({load_error}): this copy of logo_attn was "
                       "never built. Fix: install it with `pip install .`")
        elif built_with and release(built_with) != release(running_torch):
            problem = (f"logo_attn._C was built against torch {built_with} and cannot load into torch "
                       f"{running_torch} ({load_error}). Fix: {REBUILD}")
        else:
            problem = f"logo_attn._C failed to load ({load_error}). Fix: {REBUILD}"
        return ExtensionStatus(False, problem)
    if built_with and release(built_with) != release(running_torch):
        # It loaded, but torch keeps no C++ ABI promise across releases: what it calls may have changed.
        return ExtensionStatus(
            True,
            f"logo_attn._C was built against torch {built_with} but torch {running_torch} is running; "
            f"torch's C++ ABI may differ between releases. Fix: {REBUILD}",
        )
    return ExtensionStatus(True, None)


@functools.cache
def status() -> ExtensionStatus:
    """This install's extension status (imports logo_attn._C, which registers its ops)."""
    try:
        importlib.import_module("logo_attn._C")
        load_error = None
    except ImportError as error:
        load_error = error
    return diagnose(read_record(), load_error, torch.__version__)


def cuda_kernels_problem(record: dict | None = None) -> str:
    """Why logo_attn._C, which loaded, lacks its CUDA kernels, as the build recorded it (this install's
    record by default)."""
    record = read_record() if record is None else record
    reason = (record or {}).get("cuda_reason") or "the build recorded no reason"
    return (f"logo_attn._C was built without its CUDA kernels ({reason}). Fix: {REINSTALL}, with "
            "LOGO_ATTN_FORCE_CUDA=1 to see why they fail")


@functools.cache
def warn_once_if_unusable() -> None:
    """Warn (ExtensionWarning, once per process) when the extension is missing, broken or mismatched."""
    current = status()
    if current.problem and not current.deliberate:
        suffix = "" if current.loaded else f"; {FALLBACK}"
        warnings.warn(f"logo_attn: {current.problem}{suffix}", ExtensionWarning, stacklevel=3)


def cuda_archs(record: dict | None = None) -> dict | None:
    """The architectures the CUDA kernels were compiled for, as the build recorded them
    ({"sass": ["8.0", ...], "ptx": ["9.0"]}), or None when the record does not say (an older build)."""
    record = read_record() if record is None else record
    return (record or {}).get("cuda_archs")


def describe_archs(archs: dict | None) -> str:
    """"sm_80, sm_90 and PTX compute_90" for the archs of `cuda_archs`."""
    if archs is None:
        return "architectures not recorded (built by an older logo_attn)"
    names = [f"sm_{a.replace('.', '')}" for a in archs["sass"]]
    names += [f"PTX compute_{a.replace('.', '')}" for a in archs["ptx"]]
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1] if names else "no architecture"


def _runs_on(arch: str, capability: tuple[int, int], ptx: bool) -> bool:
    """CUDA's compatibility rules: SASS for X.Y runs on X.Z for Z >= Y; PTX for X.Y is compiled by
    the driver for any GPU of capability >= X.Y; an arch-specific "X.Ya" build runs on X.Y only."""
    major, minor = (int(part) for part in arch.rstrip("abcdefghijklmnopqrstuvwxyz").split("."))
    if arch[-1].isalpha():
        return (major, minor) == tuple(capability)
    if ptx:
        return tuple(capability) >= (major, minor)
    return capability[0] == major and capability[1] >= minor


def arch_problem(capability: tuple[int, int], archs: dict | None) -> str | None:
    """Why the CUDA kernels compiled for `archs` cannot run on a GPU of this compute capability, or
    None when one of them can (or the build did not record them)."""
    if archs is None:
        return None
    if any(_runs_on(a, capability, False) for a in archs["sass"]) or any(_runs_on(a, capability, True)
                                                                        for a in archs["ptx"]):
        return None
    major, minor = capability
    return (f"logo_attn._C holds CUDA kernels for {describe_archs(archs)}, none of which runs on this GPU "
            f"(compute capability {major}.{minor}). Fix: {REINSTALL} on a machine with this GPU visible, or "
            f"with LOGO_ATTN_CUDA_ARCHS={major}.{minor}")
