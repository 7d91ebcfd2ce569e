"""Every flag of weights/fetch.py, through the script's own main(), reaches the argument of
published_weights.fetch_models it names (issue 20 item 9)."""
import pytest

from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback.nets import published_weights
from pixelfeedback.paths import WEIGHTS_DIR

SCRIPT = "weights/fetch.py"

FLAGS = [  # (flag, value, fetch_models argument, expected)
    ("--all", None, "fetch_all", True),
    ("--list", None, "list_only", True),
    ("--verify", None, "verify", True),
    ("--force", None, "force", True),
    ("--replace-checksum", None, "replace_checksum", True),
    ("--dest", "elsewhere/weights", "dest", "elsewhere/weights"),
    ("--base-url", "http://mirror.example/w", "base_url", "http://mirror.example/w"),
    ("--no-shape-check", None, "shapes", False),
    ("--width-div", "32", "width_div", 32),
    ("--no-progress", None, "progress", False),   # stderr is a terminal in these tests
]


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments fetch_models received,
    by the real function's parameter names (defaults filled)."""
    monkeypatch.delenv(published_weights.BASE_URL_ENV, raising=False)
    return capture_call(monkeypatch, SCRIPT, published_weights, "fetch_models")


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected, "largefov")


def test_the_names_and_the_defaults(captured):
    assert captured() == dict(names=[], fetch_all=False, list_only=False, verify=False,
                              dest=WEIGHTS_DIR, base_url=None, force=False, progress=True,
                              shapes=True, replace_checksum=False, width_div=1)
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
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert_usage_error(SCRIPT, ["--dest"], "argument --dest", capsys)
