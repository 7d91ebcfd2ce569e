"""Every flag of tools/make_prototxt.py, through the script's main(), reaches the generator
option it names; numbers are checked by argparse where they are parsed."""
import pytest

from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback.nets import prototxt

SCRIPT = "tools/make_prototxt.py"
FLAGS = [  # (flag, value, write_or_check keyword, expected)
    ("--out-dir", "somewhere", "out_dir", "somewhere"),
    ("--lam", "0.5", "lam", 0.5),
    ("--normalize", "valid", "normalize", "valid"),
    ("--data-root", "d/VOC", "data_root", "d/VOC"),
    ("--list", "l/x.txt", "list_file", "l/x.txt"),
    ("--batch-size", "3", "batch_size", 3),
    ("--crop", "129", "crop", 129),
    ("--iterations", "40", "iterations", 40),
    ("--baseline-list", "l/aug.txt", "baseline_list", "l/aug.txt"),
    ("--baseline-batch-size", "30", "baseline_batch_size", 30),
    ("--baseline-iterations", "90", "baseline_iterations", 90),
    ("--seed", "-1", "seed", None),
    ("--width-div", "8", "width_div", 8),
    ("--num-classes", "5", "num_classes", 5),
    ("--check", None, "check", True),
]


@pytest.fixture
def captured(monkeypatch):
    """Runs the script's main() -> the options write_or_check received (**options spread)."""
    return capture_call(monkeypatch, SCRIPT, prototxt, "write_or_check", result=0)


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_option(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected, only=False)


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


@pytest.mark.parametrize("flag, value", [("--lam", "-1"), ("--lam", "nan"), ("--batch-size", "0"),
                                         ("--iterations", "0"), ("--seed", "-2"),
                                         ("--num-classes", "1"), ("--width-div", "0")])
def test_bad_numbers_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, [flag, value], f"argument {flag}", capsys)
