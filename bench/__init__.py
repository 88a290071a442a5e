"""Benchmarks of cfcam_fast: the runner (``python -m bench``) and pytest-benchmark suites."""
