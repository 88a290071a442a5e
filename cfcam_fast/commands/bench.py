"""``cfcam-fast bench``: the benchmark runner of the source checkout (``bench/runner.py``).

The runner lives beside the package in ``bench/`` (with its pytest-benchmark suites), so
this command works from an editable install or a checkout, where it is the same as
``python -m bench``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

HELP = "time every CF-CAM path beside the floor, Grad-CAM, the grad-cam package and the authors' algorithm"


def _runner():
    try:
        return importlib.import_module("bench.runner")
    except ImportError:
        checkout = Path(__file__).resolve().parents[2]
        if not (checkout / "bench" / "runner.py").is_file():
            raise ValueError("the benchmark runner ships with the source checkout of cfcam-fast: "
                             "install it editable (pip install -e .) or run `python -m bench` there") from None
        sys.path.insert(0, str(checkout))
        return importlib.import_module("bench.runner")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options."""
    _runner().add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks; see ``bench.runner.run``."""
    return _runner().run(args)
