"""Reading a file that a user names (a checkpoint, backbone weights) as ``torch.save`` data, trusting
nothing in it.

``torch.load(weights_only=True)`` builds only tensors and plain containers, so nothing in the file
runs. A file it cannot read makes the zip reader or the restricted unpickler fail with whatever
exception the bytes lead it to (``RuntimeError``, ``EOFError``, but also ``KeyError``, ``IndexError``,
``UnicodeDecodeError``, ``struct.error``...): every one of them means the file is bad, so every
``Exception`` from the load becomes one `UsageError` naming the file.

The path is opened without blocking and its type checked on the open descriptor (no race with a
rename), so a FIFO, socket or device is refused instead of waiting for a writer that never comes; so
is a file whose mode lets no one read it, for root too.
"""

from __future__ import annotations

import os
import pickle
import stat
import warnings
from pathlib import Path

import torch

from .errors import UsageError

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
          stat.S_IFBLK: "a block device"}


def load_torch_file(path: str | Path, what: str) -> object:
    """What ``torch.save`` wrote to `path` (onto the CPU, weights only); `what` names the file in errors.

    A missing file is a FileNotFoundError, anything else wrong (not a regular file, unreadable, not
    PyTorch data, Python objects beyond tensors and plain values) a UsageError.
    """
    path = Path(path)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as error:  # permission denied, a loop of links, a directory on some systems...
        raise UsageError(f"{what} {path} cannot be opened: {error.strerror or error}") from None
    try:
        _check_type(os.fstat(fd).st_mode, path, what)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as file, warnings.catch_warnings():
        # torch's notes on odd pickles (e.g. "Detected pickle protocol 5") would only precede the error line
        warnings.simplefilter("ignore")
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "global" in str(error).lower():  # the weights-only unpickler met a class or function to import
                raise UsageError(f"{what} {path} holds Python objects other than tensors and plain values; "
                                 "refusing to unpickle it (that could run arbitrary code)") from None
            raise UsageError(f"{what} {path} is not a readable PyTorch file ({_unpickling_problem(error)})") from None
        except Exception as error:  # noqa: BLE001 - see the module's docstring: the bytes decide the type
            raise UsageError(f"{what} {path} is not a readable PyTorch file ({_describe(error)})") from None


def _check_type(mode: int, path: Path, what: str) -> None:
    if stat.S_ISDIR(mode):
        raise UsageError(f"{what} {path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{what} {path} is {_KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, "
                         "not a file written by torch.save")
    if not mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
        # Refused even for root, who could read it anyway: a file nobody may read is not meant to be.
        raise UsageError(f"{what} {path} has no read permission ({stat.filemode(mode)})")


def _unpickling_problem(error: BaseException) -> str:
    """The weights-only unpickler's own complaint, without PyTorch's advice to load unsafely."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            return " ".join(lines[i + 1:i + 2]) or line
    return lines[0] if lines else type(error).__name__


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
