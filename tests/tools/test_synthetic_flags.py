"""Every flag of tools/synthetic.py, through the script's own main(), reaches the argument of
synthetic.generate_and_report it names (issue 20 item 9); numbers are checked by argparse."""
import pytest

from tests.conftest import load_script
from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback import synthetic

SCRIPT = "tools/synthetic.py"
NEEDED = ["--out", "o"]   # required; given again (argparse keeps the last) it must move

FLAGS = [  # (flag, value, generate_and_report argument, expected)
    ("--out", "other/synthetic", "out", "other/synthetic"),
    ("--train", "7", "n_train", 7),
    ("--val", "3", "n_val", 3),
    ("--size", "65", "size", 65),
    ("--seed", "4", "seed", 4),
    ("--no-progress", None, "progress", False),   # stderr is a terminal in these tests
    ("--quiet", None, "progress", False),         # the alias
]


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with NEEDED plus the given arguments; returns the arguments
    generate_and_report received, by the real function's parameter names (defaults filled)."""
    return capture_call(monkeypatch, SCRIPT, synthetic, "generate_and_report", needed=NEEDED)


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected)


def test_the_defaults(captured):
    assert captured() == dict(out="o", n_train=200, n_val=50, size=129, seed=0, progress=True)


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


@pytest.mark.parametrize("flag, value", [
    ("--train", "0"), ("--val", "0"), ("--val", "1.5"), ("--size", "64"), ("--size", "x"),
    ("--seed", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


def test_out_is_required(capsys):
    assert_usage_error(SCRIPT, [], "--out", capsys)


@pytest.mark.parametrize("flag, value, named", [("--size", "66", "8k+1"),
                                                ("--train", "100000", "from 1 to 99999")])
def test_the_librarys_limits_are_checked_by_argparse_naming_the_flag(
        flag, value, named, tmp_path, capsys):
    # 8k+1 and the five-digit ids: usage errors naming the flag, nothing written
    out = tmp_path / "synthetic"
    assert load_script(SCRIPT).main(["--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and named in err and not out.exists()
