"""Every argparse type of the command line, and the ``--device`` option: one place.

Each type turns the text of one option into its value or raises
``argparse.ArgumentTypeError`` with a message saying what is expected.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch


def integer(low: int) -> Callable[[str], int]:
    """An integer ``>= low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value
    return parse


def number(low: float, *, strict: bool = False) -> Callable[[str], float]:
    """A number ``>= low`` (``> low`` with ``strict``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > low if strict else value >= low):
            raise argparse.ArgumentTypeError(f"must be a number {'>' if strict else '>='} {low:g}, got {text!r}")
        return value
    return parse


def integers(low: int) -> Callable[[str], list[int]]:
    """Comma-separated integers, each ``>= low``."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            values = []
        if not values or min(values) < low:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers >= {low}, got {text!r}")
        return values
    return parse


def numbers(what: str, low: float, high: float | None = None) -> Callable[[str], list[float]]:
    """Comma-separated numbers, each ``>= low`` (``> low`` when ``high`` is given, and then
    ``< high``)."""
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated numbers, got {text!r}") from None
        if high is None:
            ok = values and all(v >= low for v in values)
            rule = f">= {low:g}"
        else:
            ok = values and all(low < v < high for v in values)
            rule = f"in ({low:g}, {high:g})"
        if not ok:
            raise argparse.ArgumentTypeError(f"{what} must be numbers {rule}, got {text!r}")
        return values
    return parse


def device(name: str | None) -> torch.device:
    """The ``--device`` option as a device (default: CUDA when present); ``ValueError`` if unusable."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        found = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {name!r}: {exc}") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
    return found
