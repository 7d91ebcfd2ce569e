"""Every flag of tools/fetch_voc.py, through the script's own main(), reaches the argument of
voc_data.fetch it names (issue 20 item 9)."""
import os

import pytest

from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
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


@pytest.fixture
def captured(monkeypatch):
    """Runs main() with the given arguments; returns the arguments voc_data.fetch received,
    by the real function's parameter names (defaults filled)."""
    monkeypatch.delenv(voc_data.BASE_URL_ENV, raising=False)
    return capture_call(monkeypatch, SCRIPT, voc_data, "fetch", result={})


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected)


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
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


def test_a_flag_without_its_value_is_a_usage_error(capsys):
    assert_usage_error(SCRIPT, ["--from-archive"], "argument --from-archive", capsys)
