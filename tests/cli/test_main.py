"""``cfcam_fast.cli.main``: a missing subcommand or path, and ``--version``."""
import pytest

import cfcam_fast
from cfcam_fast.cli import main

BACKEND = ["--backend", "reference"]  # runs anywhere


def test_missing_path_and_no_subcommand(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.jpg"), *BACKEND]) != 0
    assert "no such file or folder" in capsys.readouterr().err
    assert main([]) == 2
    assert "explain" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"cfcam-fast {cfcam_fast.__version__}\n"
