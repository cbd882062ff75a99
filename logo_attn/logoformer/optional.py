"""The application's optional dependencies: what each one is for, and what happens without it.

A plain ``pip install logo-attn`` brings torch and NumPy only. Reading a YAML config file, frame
images and video files needs a package from an extra (`require`: a `UsageError` naming the package
and the pip command that installs it, so the commands end in one ``error:`` line, exit status 2).
The progress bar and the confusion-matrix PNG are only nice to have (`optional`: one warning per
process, then the run goes on without them).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import UsageError

# The distribution's name as pyproject.toml spells it ([project] name), for the install commands.
DISTRIBUTION = "logo-attn"

# import name -> (package name on PyPI, the extra of logo-attn that installs it)
PACKAGES = {
    "yaml": ("PyYAML", "train"),
    "PIL": ("Pillow", "train"),
    "tqdm": ("tqdm", "train"),
    "matplotlib": ("matplotlib", "train"),
    "av": ("PyAV", "video"),
}

_warned: set[str] = set()


def install_command(module: str) -> str:
    """The pip command that installs `module`'s package through its extra."""
    return f'pip install "{DISTRIBUTION}[{PACKAGES[module][1]}]"'


def _import(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def require(module: str, what: str) -> ModuleType:
    """`module` imported, or a UsageError ``<what> needs <package>: pip install "logo-attn[<extra>]"``."""
    imported = _import(module)
    if imported is None:
        raise UsageError(f"{what} needs {PACKAGES[module][0]}: {install_command(module)}")
    return imported


def optional(module: str, lost: str) -> ModuleType | None:
    """`module` imported, or None after one warning per process on stderr saying what is `lost`."""
    imported = _import(module)
    if imported is None and module not in _warned:
        _warned.add(module)
        print(f"warning: {PACKAGES[module][0]} is not installed, so {lost} ({install_command(module)})",
              file=sys.stderr)
    return imported
