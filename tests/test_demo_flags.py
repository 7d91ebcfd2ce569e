"""Every flag of tools/demo.py, through the script's own main(), reaches the argument of
demo.run.run_demo it names (issue 20 item 9); --quick and --table31-small also move the
default data and output folders, and only the defaults."""
import inspect
import io
import sys

import pytest

from tests.conftest import load_script
from pixelfeedback.demo import run as demo_run

SCRIPT = "tools/demo.py"
SIGNATURE = inspect.signature(demo_run.run_demo)   # the real one, before any test patches it

FLAGS = [  # (flag, value, {run_demo argument: expected} = everything it changes)
    ("--out", "elsewhere/demo", {"out": "elsewhere/demo"}),
    ("--data", "elsewhere/synthetic", {"data_dir": "elsewhere/synthetic"}),
    ("--quick", None, {"quick": True, "data_dir": "data/synthetic-quick"}),
    ("--table31-small", None, {"table31": True, "out": "runs/table31-small"}),
    ("--retrain", None, {"retrain": True}),
    ("--export", None, {"export": True}),
    ("--restart", None, {"restart": True}),
    ("--no-progress", None, {"progress": False}),   # stderr is a terminal in these tests
]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments run_demo received, by the
    real function's parameter names (defaults filled)."""
    script = load_script(SCRIPT)
    seen = []

    def fake(*args, **kwargs):
        bound = SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(dict(bound.arguments))
        return {}

    monkeypatch.setattr(demo_run, "run_demo", fake)

    def run(*argv, terminal=True):
        # set here, not at fixture setup: pytest's capture replaces stderr for the test call
        stderr = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert script.main(list(argv)) == 0, stderr.getvalue()
        return seen.pop()
    return run


@pytest.mark.parametrize("flag, value, changes", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_changes_what_it_names(captured, flag, value, changes):
    default = captured()
    given = captured(*([flag] if value is None else [flag, value]))
    assert {key: given[key] for key in given if given[key] != default[key]} == changes


def test_the_defaults(captured):
    call = captured()
    assert (call["out"], call["data_dir"]) == ("runs/demo", "data/synthetic")
    assert not any((call["quick"], call["retrain"], call["export"], call["restart"],
                    call["table31"]))
    assert call["progress"] is True
    # the committed model and its recipe: the script never overrides them
    assert call["recipe"] is SIGNATURE.parameters["recipe"].default
    assert call["weights_dir"] == SIGNATURE.parameters["weights_dir"].default


def test_given_folders_win_over_the_defaults_of_quick_and_table31(captured):
    call = captured("--quick", "--table31-small", "--out", "o", "--data", "d")
    assert (call["out"], call["data_dir"], call["quick"], call["table31"]) == ("o", "d", True, True)
    call = captured("--quick", "--table31-small")
    assert (call["out"], call["data_dir"]) == ("runs/table31-small", "data/synthetic-quick")


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    parser = load_script(SCRIPT).build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert load_script(SCRIPT).main(["--out"]) == 2
    assert "argument --out" in capsys.readouterr().err
