"""``cli.argtypes``: each type's value, and the message that says what is expected."""
import argparse

import pytest
import torch

from cfcam_fast.cli import argtypes


@pytest.mark.parametrize("parse, text, want", [
    (argtypes.integer(1), "3", 3),
    (argtypes.number(0.0), "0", 0.0),
    (argtypes.number(0.0, strict=True), "1e-3", 1e-3),
    (argtypes.integers(1), "1, 64,", [1, 64]),
    (argtypes.numbers("--scales", 0.0), "0,0.5", [0.0, 0.5]),
    (argtypes.numbers("--percentiles", 0.0, 100.0), "10,90", [10.0, 90.0]),
])
def test_values(parse, text, want):
    assert parse(text) == want


@pytest.mark.parametrize("parse, text, message", [
    (argtypes.integer(1), "0", "must be an integer >= 1, got '0'"),
    (argtypes.integer(1), "two", "must be an integer >= 1, got 'two'"),
    (argtypes.number(0.0), "-1", "must be a number >= 0, got '-1'"),
    (argtypes.number(0.0, strict=True), "0", "must be a number > 0, got '0'"),
    (argtypes.number(0.0), "nan", "must be a number >= 0, got 'nan'"),
    (argtypes.integers(1), "1,0", "expected comma-separated integers >= 1, got '1,0'"),
    (argtypes.integers(1), "", "expected comma-separated integers >= 1, got ''"),
    (argtypes.numbers("--scales", 0.0), "a,b", "--scales must be comma-separated numbers, got 'a,b'"),
    (argtypes.numbers("--scales", 0.0), "-1", "--scales must be numbers >= 0, got '-1'"),
    (argtypes.numbers("--percentiles", 0.0, 100.0), "0,50", "--percentiles must be numbers in (0, 100), got '0,50'"),
])
def test_messages_say_what_is_expected(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        parse(text)
    assert str(err.value) == message


def test_device():
    assert argtypes.device("cpu") == torch.device("cpu")
    assert argtypes.device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        argtypes.device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="use --device cpu"):
            argtypes.device("cuda")

