"""Every flag of tools/evaluate.py, through the script's own main(), reaches the argument of
evaluation.evaluate_and_report it names (issue 20 item 9); numbers are checked by argparse."""
import pytest

from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback import evaluation

SCRIPT = "tools/evaluate.py"
# the required flags; a test giving one again (argparse keeps the last) shows where it goes
NEEDED = ["--model", "m.prototxt", "--weights", "w.caffemodel", "--data-root", "d",
          "--list", "l.txt", "--out", "o"]

FLAGS = [  # (flag, value, evaluate_and_report argument, expected)
    ("--model", "other/test.prototxt", "model", "other/test.prototxt"),
    ("--weights", "other/x.caffemodel", "weights", "other/x.caffemodel"),
    ("--data-root", "other/VOC", "data_root", "other/VOC"),
    ("--list", "other/val.txt", "list_file", "other/val.txt"),
    ("--out", "other/eval", "out", "other/eval"),
    ("--gpu", "1", "gpu", 1),
    ("--num-classes", "5", "num_classes", 5),
    ("--size", "257", "size", 257),
    ("--mean", "1,2.5,3", "mean", (1.0, 2.5, 3.0)),
    ("--output-blob", "fc8_zoom", "output_blob", "fc8_zoom"),
    ("--model-name", "largefov", "model_name", "largefov"),
    ("--split-name", "voc2012_val", "split_name", "voc2012_val"),
    ("--restart", None, "restart", True),
    ("--no-progress", None, "progress", False),   # stderr is a terminal in these tests
    ("--skip-bad-images", None, "skip_bad_images", True),
]


@pytest.fixture
def captured(monkeypatch):
    """main() with NEEDED plus the given arguments -> what evaluate_and_report received, by
    the real function's parameter names."""
    return capture_call(monkeypatch, SCRIPT, evaluation, "evaluate_and_report", result={},
                        needed=NEEDED)


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected)


def test_the_defaults(captured):
    call = captured()
    assert (call["model"], call["weights"], call["list_file"], call["data_root"],
            call["out"]) == ("m.prototxt", "w.caffemodel", "l.txt", "d", "o")
    assert call["gpu"] is None and call["mean"] is None and call["size"] == 513
    assert call["num_classes"] == 21 and call["progress"] is True


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


@pytest.mark.parametrize("flag, value", [
    ("--num-classes", "0"), ("--num-classes", "x"), ("--size", "0"), ("--gpu", "-1"),
    ("--mean", "1,2"), ("--mean", "nan,1,2"), ("--mean", "1,2,inf")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


@pytest.mark.parametrize("missing", ["--model", "--weights", "--data-root", "--list", "--out"])
def test_required_flags_are_usage_errors_when_missing(missing, capsys):
    at = NEEDED.index(missing)
    assert_usage_error(SCRIPT, NEEDED[:at] + NEEDED[at + 2:], missing, capsys)
