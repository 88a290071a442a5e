"""``python -m bench``: the same as ``cfcam-fast bench`` (``cfcam_fast.cli.bench``)."""
import sys

from cfcam_fast.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
