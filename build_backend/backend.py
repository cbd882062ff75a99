"""The PEP 517 build backend of logo_attn: setuptools' own, plus the torch of the environment being installed into.

`logo_attn._C` must be compiled against the very torch it will be loaded into (same version, same
C++ ABI, same CUDA). With build isolation, pip's default, a backend runs where that torch is hidden:

- pip's default isolation runs the hooks with the target environment's own interpreter, but a
  sitecustomize on PYTHONPATH strips the target's site-packages from sys.path;
- `python -m build`, uv and pip's `venv-isolation` feature run them in a fresh venv.

So before setuptools runs setup.py, this backend looks for torch where the package is going:

1. torch importable here (`--no-build-isolation`, or the fallback below installed it): use it.
2. Otherwise ask the interpreter running the hooks, then the frontend's (the parent process's, on
   Linux), then the activated environment's (VIRTUAL_ENV, CONDA_PREFIX), each started with `-E` so
   pip's PYTHONPATH overlay is ignored, where its torch lives. The first one with this Python's ABI
   and a torch this package supports wins, and its sys.path is *appended* to this process's: the
   build requirements keep precedence, torch and its dependencies come from the target. Nothing is
   downloaded and nothing is copied.
3. No such torch (a fresh environment, `python -m build` outside any environment with torch):
   `get_requires_for_build_wheel` adds `TORCH_REQUIREMENT`, so the frontend installs a torch into the
   build environment; the runtime compares the torch it was built against with the one it runs
   under and warns when they differ (logo_attn/_extension.py).

Everything else (sdist, metadata, the build itself) is setuptools.build_meta, driven by setup.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (  # noqa: F401  (the hooks this backend leaves to setuptools)
    build_editable,
    build_sdist,
    build_wheel,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

# The oldest torch the package supports: the same bound as [project].dependencies in pyproject.toml.
MIN_TORCH = (2, 11)
TORCH_REQUIREMENT = "torch>=" + ".".join(map(str, MIN_TORCH))

# Run by a candidate interpreter: where its torch is, without importing it (that takes seconds).
_PROBE = r"""
import importlib.metadata, importlib.util, json, os, sys
spec = importlib.util.find_spec("torch")
try:
    version = importlib.metadata.version("torch") if spec else None
except importlib.metadata.PackageNotFoundError:
    version = None
print(json.dumps({
    "python": sys.executable,
    "cache_tag": sys.implementation.cache_tag,
    "sys_path": sys.path,
    "torch_version": version,
    "torch_parent": os.path.dirname(spec.submodule_search_locations[0]) if spec else None,
}))
"""


def _note(message: str) -> None:
    print(f"logo_attn build backend: {message}", file=sys.stderr)


def _skipping_cpp() -> bool:
    return os.environ.get("LOGO_ATTN_SKIP_CPP", "0").strip().lower() not in ("", "0", "false", "no")


def _release(version: str) -> tuple[int, ...]:
    """(2, 13, 0) from "2.13.0+cpu" or "2.14.0a0+git1234". logo_attn/_extension.py parses versions the
    same way; a backend cannot import the package it is building, so the three lines live in both."""
    match = re.match(r"\d+(\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def _parent_python() -> str | None:
    """The interpreter of the process that runs this hook (pip, build: the frontend), read from Linux's
    /proc; the target environment when the frontend builds in a venv of its own."""
    proc = f"/proc/{os.getppid()}"
    try:
        with open(f"{proc}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode()
        if not re.fullmatch(r"(python|pypy)[0-9.]*", os.path.basename(argv0)):
            return None  # not a Python frontend (uv, a shell): nothing to ask
        if os.sep not in argv0:  # found on the frontend's PATH
            with open(f"{proc}/environ", "rb") as f:
                entries = (entry.decode(errors="replace").partition("=") for entry in f.read().split(b"\0"))
                path = {name: value for name, _, value in entries}.get("PATH")
            return shutil.which(argv0, path=path)
        return os.path.join(os.readlink(f"{proc}/cwd"), argv0)  # unchanged when argv0 is absolute
    except (OSError, UnicodeDecodeError):
        return None


def _candidate_pythons() -> list[str]:
    """The interpreter running the hooks (the target itself under pip's default isolation), then the
    frontend's and the activated environment's, for frontends that build in a venv of their own."""
    candidates = [sys.executable, _parent_python()]
    for variable in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        prefix = os.environ.get(variable)
        if prefix and os.path.realpath(prefix) != os.path.realpath(sys.prefix):
            candidates.append(os.path.join(prefix, "Scripts" if os.name == "nt" else "bin", "python"))
    return [c for i, c in enumerate(candidates) if c and c not in candidates[:i] and os.path.exists(c)]


def _probe(python: str) -> dict | None:
    try:
        run = subprocess.run([python, "-E", "-c", _PROBE], capture_output=True, text=True, timeout=120)
        return json.loads(run.stdout) if run.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def find_target_torch() -> dict | None:
    """The probe of the first candidate interpreter whose torch this build can compile against, or None."""
    for python in _candidate_pythons():
        found = _probe(python)
        if not found or not found["torch_version"]:
            continue
        if found["cache_tag"] != sys.implementation.cache_tag:
            _note(f"not using the torch of {python}: it is for {found['cache_tag']}, "
                  f"this build for {sys.implementation.cache_tag}")
        elif _release(found["torch_version"]) < MIN_TORCH:
            _note(f"not using torch {found['torch_version']} of {python}: logo_attn needs {TORCH_REQUIREMENT}")
        else:
            return found
    return None


def _use_target_torch() -> None:
    """Make the target environment's torch importable here when the build environment has none."""
    if _skipping_cpp() or importlib.util.find_spec("torch") is not None:
        return
    found = find_target_torch()
    if found is None:
        return
    # "" (the probe's working directory) is skipped: only the target's installed packages are wanted.
    sys.path.extend(p for p in (found["torch_parent"], *found["sys_path"]) if p and p not in sys.path)
    importlib.invalidate_caches()
    _note(f"compiling against torch {found['torch_version']} from {found['torch_parent']} "
          f"(the environment of {found['python']})")


def _torch_requirement() -> list[str]:
    if _skipping_cpp() or importlib.util.find_spec("torch") is not None:
        return []
    _note(f"no torch found in the target environment: asking the frontend for {TORCH_REQUIREMENT} "
          "to compile against")
    return [TORCH_REQUIREMENT]


def get_requires_for_build_wheel(config_settings=None):
    return [*_setuptools.get_requires_for_build_wheel(config_settings), *_torch_requirement()]


def get_requires_for_build_editable(config_settings=None):
    return [*_setuptools.get_requires_for_build_editable(config_settings), *_torch_requirement()]


# Every hook runs in a fresh process that imports this module: this is the one place to do it.
_use_target_torch()
