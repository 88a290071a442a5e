"""Benchmarks of a source checkout: the pytest-benchmark suites and the GPU session scripts.

The runner itself ships with the package (``cfcam_fast.benchmark``, ``cfcam-fast bench``);
``python -m bench`` is the same command.
"""
