"""Every flag of tools/demo.py, through the script's own main(), reaches the argument of
demo.run.run_demo it names (issue 20 item 9); --quick, --table31-small and --table31-hard
also move the default data and output folders, and only the defaults."""
import inspect

import pytest

from tests.flag_harness import (assert_flag_changes, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback.demo import run as demo_run

SCRIPT = "tools/demo.py"
SIGNATURE = inspect.signature(demo_run.run_demo)   # the real one, before any test patches it

FLAGS = [  # (flag, value, {run_demo argument: expected} = everything it changes)
    ("--out", "elsewhere/demo", {"out": "elsewhere/demo"}),
    ("--data", "elsewhere/synthetic", {"data_dir": "elsewhere/synthetic"}),
    ("--quick", None, {"quick": True, "data_dir": "data/synthetic-quick"}),
    ("--table31-small", None, {"table31": True, "out": "runs/table31-small"}),
    ("--table31-hard", None, {"hard": True, "out": "runs/table31-hard",
                              "data_dir": "data/synthetic-hard"}),
    ("--retrain", None, {"retrain": True}),
    ("--export", None, {"export": True}),
    ("--restart", None, {"restart": True}),
    ("--no-progress", None, {"progress": False}),   # stderr is a terminal in these tests
]


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments run_demo received, by the
    real function's parameter names (defaults filled)."""
    return capture_call(monkeypatch, SCRIPT, demo_run, "run_demo", result={})


@pytest.mark.parametrize("flag, value, changes", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_changes_what_it_names(captured, flag, value, changes):
    assert_flag_changes(captured, flag, value, changes)


def test_the_defaults(captured):
    call = captured()
    assert (call["out"], call["data_dir"]) == ("runs/demo", "data/synthetic")
    assert not any((call["quick"], call["retrain"], call["export"], call["restart"],
                    call["table31"], call["hard"]))
    assert call["progress"] is True
    # the committed model and its recipe: the script never overrides them
    assert call["recipe"] is SIGNATURE.parameters["recipe"].default
    assert call["weights_dir"] == SIGNATURE.parameters["weights_dir"].default


def test_given_folders_win_over_the_defaults_of_quick_and_table31(captured):
    call = captured("--quick", "--table31-small", "--out", "o", "--data", "d")
    assert (call["out"], call["data_dir"], call["quick"], call["table31"]) == ("o", "d", True, True)
    call = captured("--quick", "--table31-small")
    assert (call["out"], call["data_dir"]) == ("runs/table31-small", "data/synthetic-quick")
    call = captured("--quick", "--table31-hard")
    assert (call["out"], call["data_dir"], call["quick"], call["hard"]) == (
        "runs/table31-hard", "data/synthetic-hard-quick", True, True)
    call = captured("--table31-hard", "--out", "o", "--data", "d")
    assert (call["out"], call["data_dir"], call["hard"]) == ("o", "d", True)


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert_usage_error(SCRIPT, ["--out"], "argument --out", capsys)
