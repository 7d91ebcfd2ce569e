"""Every flag of weights/fetch.py, through the script's own main(), reaches the argument of
published_weights.fetch_models it names (issue 20 item 9)."""
import inspect
import io
import sys

import pytest

from tests.conftest import load_script
from pixelfeedback.nets import published_weights
from pixelfeedback.paths import WEIGHTS_DIR

SCRIPT = "weights/fetch.py"

FLAGS = [  # (flag, value, fetch_models argument, expected)
    ("--all", None, "fetch_all", True),
    ("--list", None, "list_only", True),
    ("--verify", None, "verify", True),
    ("--force", None, "force", True),
    ("--dest", "elsewhere/weights", "dest", "elsewhere/weights"),
    ("--base-url", "http://mirror.example/w", "base_url", "http://mirror.example/w"),
    ("--no-shape-check", None, "shapes", False),
    ("--no-progress", None, "progress", False),   # stderr is a terminal in these tests
]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments fetch_models received,
    by the real function's parameter names (defaults filled)."""
    script = load_script(SCRIPT)
    signature = inspect.signature(published_weights.fetch_models)
    seen = []

    def fake(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(dict(bound.arguments))

    monkeypatch.setattr(published_weights, "fetch_models", fake)
    monkeypatch.delenv(published_weights.BASE_URL_ENV, raising=False)

    def run(*argv, terminal=True):
        # set here, not at fixture setup: pytest's capture replaces stderr for the test call
        stderr = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert script.main(list(argv)) == 0, stderr.getvalue()
        return seen.pop()
    return run


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    default = captured("largefov")
    given = captured("largefov", *([flag] if value is None else [flag, value]))
    assert given[keyword] == expected and default[keyword] != expected
    assert {key for key in given if given[key] != default[key]} == {keyword}


def test_the_names_and_the_defaults(captured):
    assert captured() == dict(names=[], fetch_all=False, list_only=False, verify=False,
                              dest=WEIGHTS_DIR, base_url=None, force=False, progress=True,
                              shapes=True)
    assert captured("largefov", "fcn8s")["names"] == ["largefov", "fcn8s"]
    assert captured("--verify", "fcn8s")["names"] == ["fcn8s"]


def test_the_mirror_comes_from_the_environment_unless_the_flag_gives_one(captured, monkeypatch):
    monkeypatch.setenv(published_weights.BASE_URL_ENV, "http://env.example/w")
    assert captured("largefov")["base_url"] == "http://env.example/w"
    assert captured("largefov", "--base-url", "http://flag.example")["base_url"] == \
        "http://flag.example"


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured("largefov", terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    parser = load_script(SCRIPT).build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert load_script(SCRIPT).main(["--dest"]) == 2
    assert "argument --dest" in capsys.readouterr().err
