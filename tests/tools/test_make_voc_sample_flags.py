"""Every flag of tools/make_voc_sample.py, through the script's own main(), reaches the
argument of voc_sample.make_voc_sample it names, and from there the folder writer and the
weights surgery (--out made absolute for both; --no-weights skips the surgery) (issue 20
item 9); numbers are checked by argparse."""
import inspect
import os

import pytest

from tests.conftest import load_script
from tests.flag_harness import (assert_flag_changes, assert_flag_reaches, assert_usage_error,
                                bound_call, capture_call, flag_ids, parser_flags, record_steps,
                                table_flags)
from pixelfeedback.demo import voc_sample

SCRIPT = "tools/make_voc_sample.py"
NEEDED = ["--out", "sample"]   # required; given again (argparse keeps the last) it must move

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
    return capture_call(monkeypatch, SCRIPT, voc_sample, "make_voc_sample", result={},
                        needed=NEEDED)


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """main() with NEEDED plus the given arguments (in tmp_path), through the real
    make_voc_sample with the folder writer and the surgery replaced by recorders."""
    monkeypatch.chdir(tmp_path)
    seen = {}
    writer = inspect.signature(voc_sample.write_voc_folder)

    def write_voc_folder(*args, **kwargs):
        seen.update(bound_call(writer, args, kwargs))
        return {"train": ["t"], "val": ["v"]}

    def voc21_weights(path):
        seen["weights_path"] = path
        return path

    monkeypatch.setattr(voc_sample, "write_voc_folder", write_voc_folder)
    monkeypatch.setattr(voc_sample, "voc21_weights", voc21_weights)

    return record_steps(monkeypatch, SCRIPT, seen, {"weights_path": None}, NEEDED)


@pytest.mark.parametrize("flag, value, keyword, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected):
    assert_flag_reaches(captured, flag, value, keyword, expected)


@pytest.mark.parametrize("index", range(len(FLAGS)), ids=flag_ids(FLAGS))
def test_each_flag_reaches_the_writer_or_the_surgery(steps, tmp_path, index):
    assert_flag_changes(steps, *step_changes(str(tmp_path))[index])


def test_the_defaults(captured):
    assert captured() == dict(out="sample", n_train=8, n_val=4, size=129, seed=0, weights=True)


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)
    assert flag_ids(step_changes("/")) == flag_ids(FLAGS)


@pytest.mark.parametrize("flag, value", [
    ("--train", "0"), ("--val", "0"), ("--val", "x"), ("--size", "64"), ("--seed", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


def test_a_size_that_is_not_8k_plus_1_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "sample"
    assert load_script(SCRIPT).main(["--out", str(out), "--size", "66", "--no-weights"]) == 2
    err = capsys.readouterr().err
    assert "argument --size: must be an integer 8k+1" in err and not out.exists()


def test_out_is_required(capsys):
    assert_usage_error(SCRIPT, [], "--out", capsys)
