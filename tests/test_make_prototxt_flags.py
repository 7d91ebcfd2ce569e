"""Every flag of tools/make_prototxt.py, through the script's main(), reaches the generator
option it names; numbers are checked by argparse where they are parsed."""
import pytest

from tests.conftest import load_script
from pixelfeedback.nets import prototxt

FLAGS = [  # (flag, value, write_or_check keyword, expected)
    ("--out-dir", "somewhere", "out_dir", "somewhere"),
    ("--lam", "0.5", "lam", 0.5),
    ("--normalize", "valid", "normalize", "valid"),
    ("--data-root", "d/VOC", "data_root", "d/VOC"),
    ("--list", "l/x.txt", "list_file", "l/x.txt"),
    ("--batch-size", "3", "batch_size", 3),
    ("--crop", "129", "crop", 129),
    ("--iterations", "40", "iterations", 40),
    ("--baseline-iterations", "90", "baseline_iterations", 90),
    ("--seed", "-1", "seed", None),
    ("--width-div", "8", "width_div", 8),
    ("--num-classes", "5", "num_classes", 5),
    ("--check", None, "check", True),
]


@pytest.fixture
def captured(monkeypatch):
    script = load_script("tools/make_prototxt.py")
    seen = []

    def fake(out_dir=None, check=False, **options):
        seen.append(dict(options, out_dir=out_dir, check=check))
        return 0

    monkeypatch.setattr(prototxt, "write_or_check", fake)

    def run(*argv):
        assert script.main(list(argv)) == 0
        return seen.pop()
    return run


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_its_option(captured, flag, value, keyword, expected):
    default = captured()
    given = captured(*([flag] if value is None else [flag, value]))
    assert given[keyword] == expected and default[keyword] != expected


def test_every_flag_is_in_this_test():
    parser = load_script("tools/make_prototxt.py").build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}


@pytest.mark.parametrize("flag, value", [("--lam", "-1"), ("--lam", "nan"), ("--batch-size", "0"),
                                         ("--iterations", "0"), ("--seed", "-2"),
                                         ("--num-classes", "1"), ("--width-div", "0")])
def test_bad_numbers_are_usage_errors(flag, value, capsys):
    script = load_script("tools/make_prototxt.py")
    assert script.main([flag, value]) == 2
    assert f"argument {flag}" in capsys.readouterr().err
