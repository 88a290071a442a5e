"""``cfcam-fast`` with one rank SIGKILLed once it has written some records, for the tests of
resuming and of a dead rank: ``KILL_AFTER="RANK:IMAGES"`` kills rank ``RANK`` (torchrun's
``RANK``, 0 without it) right after its part file holds ``IMAGES`` records. The tests start
this file where they would start ``python -m cfcam_fast``."""
import os
import signal
import sys

from cfcam_fast.cli import main
from cfcam_fast.cli.outputs import PartWriter

KILL_AFTER = "KILL_AFTER"


def _install() -> None:
    rank, images = (int(v) for v in os.environ[KILL_AFTER].split(":"))
    write = PartWriter.write
    written = 0

    def write_then_maybe_die(self, records):
        nonlocal written
        records = list(records)
        write(self, records)
        written += len(records)
        if int(os.environ.get("RANK", 0)) == rank and written >= images:
            os.kill(os.getpid(), signal.SIGKILL)

    PartWriter.write = write_then_maybe_die


if __name__ == "__main__":
    _install()
    sys.exit(main())
