"""``cfcam-fast bench``: the benchmark runner (``cfcam_fast.benchmark.runner``).

Each path gets ``--warmup`` untimed calls, then ``--repeats`` timed ones, taken round-robin
over the paths (the device is synchronised before and after each); the median is
reported. Outputs go to ``--out``: ``results.md`` (the printed tables), ``results.json``
and ``results.png``.
"""
from __future__ import annotations

import argparse

from ..benchmark.runner import MODELS, Settings
from ..benchmark.runner import run as run_benchmarks
from . import argtypes

HELP = "time every CF-CAM path beside the floor, Grad-CAM, the grad-cam package and the authors' algorithm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The runner's options."""
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated model names (default: %(default)s)")
    parser.add_argument("--batches", type=argtypes.integers(1),
                        help="comma-separated batch sizes (default: 1,8, and 64 on CUDA)")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--repeats", type=argtypes.integer(1), default=3,
                        help="timed runs per path; the median is reported (default: 3)")
    parser.add_argument("--warmup", type=argtypes.integer(0), default=1,
                        help="untimed runs per path before timing (default: 1)")
    parser.add_argument("--threads", type=argtypes.integer(1),
                        help="torch CPU threads (default: torch's own choice); 1 avoids the collapse "
                        "of multi-threaded kernels on a CPU shared with other busy processes")
    parser.add_argument("--paths", default="",
                        help="comma-separated parts of path names: time only the paths whose name holds one "
                             "(case-insensitive), and the floor; the others are listed as not selected "
                             "(default: every path)")
    parser.add_argument("--out", default="bench/out", help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="smallest model, batch 1, one repeat (a smoke test of the runner)")


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks; see ``cfcam_fast.benchmark.runner.run``."""
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    return run_benchmarks(Settings(argtypes.device(args.device), models, None if args.batches is None
                                   else tuple(args.batches), args.warmup, args.repeats, args.threads,
                                   args.paths, args.out, args.quick))
