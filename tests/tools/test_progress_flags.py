"""Every tool with a progress bar has --no-progress, and its bars switch themselves off when
stderr is not a terminal (a redirected log holds no bar redraws)."""
import io

import pytest

from tests.conftest import load_script
from tests.flag_harness import Terminal, capture_call
from pixelfeedback import cli
from pixelfeedback.sweep import driver

# (script, the arguments its parser needs besides --no-progress)
TOOLS_WITH_BARS = [
    ("tools/demo.py", []),
    ("tools/evaluate.py", ["--model", "m.prototxt", "--weights", "w.caffemodel",
                           "--data-root", "d", "--list", "l.txt", "--out", "o"]),
    ("tools/experiments.py", ["all", "--model", "m.prototxt", "--data-root", "d",
                              "--list", "l.txt", "--out", "o"]),
    ("tools/fetch_voc.py", []),
    ("tools/reproduce_table.py", []),
    ("tools/synthetic.py", ["--out", "o"]),
    ("weights/fetch.py", ["largefov"]),
]


@pytest.mark.parametrize("script, needed", TOOLS_WITH_BARS)
def test_every_tool_with_bars_has_no_progress(script, needed):
    parser = load_script(script).build_parser()
    try:
        args = parser.parse_args(needed + ["--no-progress"])
        plain = parser.parse_args(needed)
    except SystemExit:
        pytest.fail(f"{script} {' '.join(needed)} --no-progress is not accepted")
    assert args.no_progress is True and plain.no_progress is False
    assert cli.show_progress(args, Terminal()) is False
    assert cli.show_progress(plain, Terminal()) is True
    assert cli.show_progress(plain, io.StringIO()) is False   # redirected: no bars


def test_reproduce_tables_bars_follow_the_flag_and_the_terminal(monkeypatch):
    """The sweep's bars used to fill a redirected log with redraws: reproduce had no flag."""
    run = capture_call(monkeypatch, "tools/reproduce_table.py", driver, "run_and_report")
    seen = [run()["cfg"].progress, run("--no-progress")["cfg"].progress,
            run(terminal=False)["cfg"].progress]
    assert seen == [True, False, False]
