"""Every flag of tools/fetch_voc.py, through the script's own main(), reaches the argument of
voc_data.fetch it names (issue 20 item 9)."""
import inspect
import io
import os
import sys

import pytest

from tests.conftest import load_script
from pixelfeedback import voc_data
from pixelfeedback.paths import REPO_ROOT

SCRIPT = "tools/fetch_voc.py"

FLAGS = [  # (flag, value, voc_data.fetch argument, expected)
    ("--dest", "elsewhere/data", "dest", "elsewhere/data"),
    ("--sbd", None, "sbd", True),
    ("--from-archive", "dl/VOCtrainval_11-May-2012.tar", "from_archive",
     "dl/VOCtrainval_11-May-2012.tar"),
    ("--sbd-archive", "dl/benchmark.tgz", "sbd_archive", "dl/benchmark.tgz"),
    ("--base-url", "http://mirror.example/voc", "base_url", "http://mirror.example/voc"),
    ("--no-verify", None, "verify", False),
    ("--keep-archives", None, "keep_archives", True),
    ("--lists-only", "mnt/VOC2012", "lists_only", "mnt/VOC2012"),
    ("--lists-dir", "elsewhere/lists", "lists_dir", "elsewhere/lists"),
    ("--no-progress", None, "progress", False),   # stderr is a terminal in these tests
]


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments voc_data.fetch received,
    by the real function's parameter names (defaults filled)."""
    script = load_script(SCRIPT)
    signature = inspect.signature(voc_data.fetch)
    seen = []

    def fake(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(dict(bound.arguments))
        return {}

    monkeypatch.setattr(voc_data, "fetch", fake)
    monkeypatch.delenv(voc_data.BASE_URL_ENV, raising=False)

    def run(*argv, terminal=True):
        # set here, not at fixture setup: pytest's capture replaces stderr for the test call
        stderr = Terminal() if terminal else io.StringIO()
        monkeypatch.setattr(sys, "stderr", stderr)
        assert script.main(list(argv)) == 0, stderr.getvalue()
        return seen.pop()
    return run


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    default = captured()
    given = captured(*([flag] if value is None else [flag, value]))
    assert given[keyword] == expected and default[keyword] != expected
    assert {key for key in given if given[key] != default[key]} == {keyword}


def test_the_defaults(captured):
    assert captured() == dict(dest=os.path.join(REPO_ROOT, "data"), sbd=False, from_archive=None,
                              sbd_archive=None, base_url=None, verify=True, keep_archives=False,
                              lists_only=None, lists_dir=None, progress=True)


def test_the_mirror_comes_from_the_environment_unless_the_flag_gives_one(captured, monkeypatch):
    monkeypatch.setenv(voc_data.BASE_URL_ENV, "http://env.example/voc")
    assert captured()["base_url"] == "http://env.example/voc"
    assert captured("--base-url", "http://flag.example")["base_url"] == "http://flag.example"


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    parser = load_script(SCRIPT).build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert load_script(SCRIPT).main(["--from-archive"]) == 2
    assert "argument --from-archive" in capsys.readouterr().err
