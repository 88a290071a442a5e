"""``python -m bench``: the same as ``cfcam-fast bench`` (``cfcam_fast.benchmark.runner``)."""
import sys

from cfcam_fast.benchmark.runner import main

sys.exit(main())
