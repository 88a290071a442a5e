"""``python -m cfcam_fast``: the ``cfcam-fast`` command line (also what torchrun's ``-m`` runs)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
