"""``cfcam-fast bench``'s options (``cli.bench``): registered, checked in one line, and
parsed without a checkout (the runner is imported from the package, not from ``bench/``).
The runner itself is tested in tests/benchmark/."""
import subprocess
import sys

import pytest

from cfcam_fast import cli


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["bench", "--models", " , ", "--out", str(tmp_path)]) == 1
    assert "--models" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--batches", "0"])


def test_cli_registers_bench():
    parser = cli.build_parser("bench")
    args = parser.parse_args(["bench", "--quick", "--out", "x"])
    assert args.quick and args.out == "x" and args.run is not None


def test_bench_command_needs_no_checkout(tmp_path):
    """``cfcam-fast bench`` imports the runner from the package: run from a folder with no
    ``bench/`` in reach, its options parse and no top-level ``bench`` module is loaded."""
    code = ("import sys\nfrom cfcam_fast.cli import build_parser\n"
            "args = build_parser('bench').parse_args(['bench', '--quick'])\n"
            "assert args.quick and 'bench' not in sys.modules, sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
