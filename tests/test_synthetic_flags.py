"""Every flag of tools/synthetic.py, through the script's own main(), reaches the argument of
synthetic.generate_and_report it names (issue 20 item 9); numbers are checked by argparse."""
import inspect
import io
import sys

import pytest

from tests.conftest import load_script
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


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with NEEDED plus the given arguments; returns the arguments
    generate_and_report received, by the real function's parameter names (defaults filled)."""
    script = load_script(SCRIPT)
    signature = inspect.signature(synthetic.generate_and_report)
    seen = []

    def fake(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(dict(bound.arguments))

    monkeypatch.setattr(synthetic, "generate_and_report", fake)

    def run(*argv, terminal=True):
        # set here, not at fixture setup: pytest's capture replaces stderr for the test call
        stderr = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert script.main(NEEDED + list(argv)) == 0, stderr.getvalue()
        return seen.pop()
    return run


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    default = captured()
    given = captured(*([flag] if value is None else [flag, value]))
    assert given[keyword] == expected and default[keyword] != expected
    assert {key for key in given if given[key] != default[key]} == {keyword}


def test_the_defaults(captured):
    assert captured() == dict(out="o", n_train=200, n_val=50, size=129, seed=0, progress=True)


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    parser = load_script(SCRIPT).build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}


@pytest.mark.parametrize("flag, value", [
    ("--train", "0"), ("--val", "0"), ("--val", "1.5"), ("--size", "64"), ("--size", "x"),
    ("--seed", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert load_script(SCRIPT).main(NEEDED + [flag, value]) == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_out_is_required(capsys):
    assert load_script(SCRIPT).main([]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, named", [("--size", "66", "8k+1"),
                                                ("--train", "100000", "99999")])
def test_values_argparse_lets_through_are_refused_before_anything_is_written(
        flag, value, named, tmp_path, capsys):
    # 8k+1 and the five-digit ids are the library's checks: exit 2 with one error line
    out = tmp_path / "synthetic"
    assert load_script(SCRIPT).main(["--out", str(out), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and not out.exists()
