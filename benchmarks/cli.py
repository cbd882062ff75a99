"""Argument types and checks the benchmark scripts share, so a mistake on their command line ends in
argparse's one-line ``error: ...`` and exit status 2 instead of a traceback."""

from __future__ import annotations

import argparse

import torch


def triple(text: str) -> tuple[int, int, int]:
    """'16x7x7' -> (16, 7, 7): three positive ints joined by x."""
    try:
        parts = tuple(int(p) for p in str(text).lower().split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive ints joined by x, e.g. 16x7x7, got {text!r}")
    return parts


def _positive(kind: type, what: str):
    """An argparse type: `kind` of `text`, refused unless it is > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = kind(0)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _positive(int, "a positive int")
positive_float = _positive(float, "a positive number")


def convert(parser: argparse.ArgumentParser, option: str, parse, value):
    """`parse(value)` for a value that came from a preset or a default string; a bad one is the
    parser's error, naming the option."""
    try:
        return parse(value)
    except argparse.ArgumentTypeError as error:
        parser.error(f"{option}: {error}")


def check_device(parser: argparse.ArgumentParser, device: str | None) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible on this machine")
