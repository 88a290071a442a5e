"""``python -m bench``: run the benchmark runner (see ``bench.runner``)."""
import sys

from .runner import main

sys.exit(main())
