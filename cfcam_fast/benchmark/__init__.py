"""The benchmark runner behind ``cfcam-fast bench``: the timed paths, the timing loop and the reports.

``paths`` names every timed path (the floor, Grad-CAM, the grad-cam package, the authors'
algorithm and each cfcam_fast backend), ``runner`` times them per model and batch size,
``report`` writes the markdown table, the JSON document and the plot. The pytest-benchmark
suites and the GPU session scripts of a source checkout (``bench/``) build on these.

May import ``core``, ``cams`` and ``data``; never ``cli``.
"""
