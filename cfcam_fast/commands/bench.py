"""``cfcam-fast bench``: the benchmark runner (``cfcam_fast.benchmark.runner``)."""
from __future__ import annotations

import argparse

HELP = "time every CF-CAM path beside the floor, Grad-CAM, the grad-cam package and the authors' algorithm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options."""
    from ..benchmark.runner import add_arguments as runner_arguments

    runner_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks; see ``cfcam_fast.benchmark.runner.run``."""
    from ..benchmark.runner import run as run_benchmarks

    return run_benchmarks(args)
