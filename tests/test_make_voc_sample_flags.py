"""Every flag of tools/make_voc_sample.py, through the script's own main(), reaches the
argument of voc_sample.make_voc_sample it names, and from there the folder writer and the
weights surgery (--out made absolute for both; --no-weights skips the surgery) (issue 20
item 9); numbers are checked by argparse."""
import inspect
import os

import pytest

from tests.conftest import load_script
from pixelfeedback.demo import voc_sample

SCRIPT = "tools/make_voc_sample.py"
NEEDED = ["--out", "sample"]   # required; given again (argparse keeps the last) it must move
SIGNATURE = inspect.signature(voc_sample.make_voc_sample)   # the real one, before patching

FLAGS = [  # (flag, value, make_voc_sample argument, expected)
    ("--out", "other/sample", "out", "other/sample"),
    ("--train", "3", "n_train", 3),
    ("--val", "2", "n_val", 2),
    ("--size", "65", "size", 65),
    ("--seed", "5", "seed", 5),
    ("--no-weights", None, "weights", False),
]


def step_changes(root):
    """(flag, value, {what the writer and the surgery received that it changes: expected})
    for a run in ``root``."""
    return [
        ("--out", "other/sample", {
            "voc_root": os.path.join(root, "other", "sample", "VOCdevkit", "VOC2012"),
            "weights_path": os.path.join(root, "other", "sample", "weights",
                                         voc_sample.WEIGHTS_NAME)}),
        ("--train", "3", {"n_train": 3}),
        ("--val", "2", {"n_val": 2}),
        ("--size", "65", {"size": 65}),
        ("--seed", "5", {"seed": 5}),
        ("--no-weights", None, {"weights_path": None}),
    ]


@pytest.fixture
def captured(monkeypatch):
    """main() with NEEDED plus the given arguments -> what make_voc_sample received."""
    script = load_script(SCRIPT)
    seen = []

    def fake(*args, **kwargs):
        bound = SIGNATURE.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.append(dict(bound.arguments))
        return {}

    monkeypatch.setattr(voc_sample, "make_voc_sample", fake)

    def run(*argv):
        assert script.main(NEEDED + list(argv)) == 0
        return seen.pop()
    return run


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """main() with NEEDED plus the given arguments (in tmp_path), through the real
    make_voc_sample with the folder writer and the surgery replaced by recorders."""
    script = load_script(SCRIPT)
    monkeypatch.chdir(tmp_path)
    seen = {}
    writer = inspect.signature(voc_sample.write_voc_folder)

    def write_voc_folder(*args, **kwargs):
        bound = writer.bind(*args, **kwargs)
        bound.apply_defaults()
        seen.update(bound.arguments)
        return {"train": ["t"], "val": ["v"]}

    def voc21_weights(path):
        seen["weights_path"] = path
        return path

    monkeypatch.setattr(voc_sample, "write_voc_folder", write_voc_folder)
    monkeypatch.setattr(voc_sample, "voc21_weights", voc21_weights)

    def run(*argv):
        seen.clear()
        seen["weights_path"] = None
        assert script.main(NEEDED + list(argv)) == 0
        return dict(seen)
    return run


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    default = captured()
    given = captured(*([flag] if value is None else [flag, value]))
    assert given[keyword] == expected and default[keyword] != expected
    assert {key for key in given if given[key] != default[key]} == {keyword}


@pytest.mark.parametrize("index", range(len(FLAGS)), ids=[f[0] for f in FLAGS])
def test_each_flag_reaches_the_writer_or_the_surgery(steps, tmp_path, index):
    flag, value, changes = step_changes(str(tmp_path))[index]
    default = steps()
    given = steps(*([flag] if value is None else [flag, value]))
    assert {key: given[key] for key in given if given[key] != default.get(key)} == changes


def test_the_defaults(captured):
    assert captured() == dict(out="sample", n_train=8, n_val=4, size=129, seed=0, weights=True)


def test_every_flag_is_in_this_test():
    parser = load_script(SCRIPT).build_parser()
    flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    assert flags - {"--help"} == {flag for flag, *_ in FLAGS}
    assert [flag for flag, *_ in step_changes("/")] == [flag for flag, *_ in FLAGS]


@pytest.mark.parametrize("flag, value", [
    ("--train", "0"), ("--val", "0"), ("--val", "x"), ("--size", "64"), ("--seed", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert load_script(SCRIPT).main(NEEDED + [flag, value]) == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_a_size_that_is_not_8k_plus_1_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "sample"
    assert load_script(SCRIPT).main(["--out", str(out), "--size", "66", "--no-weights"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--size" in err and not out.exists()


def test_out_is_required(capsys):
    assert load_script(SCRIPT).main([]) == 2
    assert "--out" in capsys.readouterr().err
