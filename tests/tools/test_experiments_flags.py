"""Every flag of tools/experiments.py, through the script's own main(), reaches the argument
of experiments.run_and_report it names, and from there the run_all argument or
ExperimentOptions field it sets (comma-separated --fractions and --class-names parsed,
--mask parts turned into the synthetic data set's mask hook) (issue 20 item 9); numbers
and choices are checked by argparse."""
import dataclasses
import inspect

import pytest

from tests.flag_harness import (assert_flag_reaches, assert_usage_error, capture_call,
                                flag_ids, parser_flags, table_flags)
from pixelfeedback import experiments
from pixelfeedback.experiments import runner

SCRIPT = "tools/experiments.py"
# the required arguments; a test giving one again (argparse keeps the last) shows where it goes
NEEDED = ["all", "--model", "m.prototxt", "--data-root", "d", "--list", "l.txt", "--out", "o"]

FLAGS = [  # (flag, value, run_and_report argument, expected, run_all setting, expected)
    ("--model", "largefov", "model", "largefov", "model", "largefov"),
    ("--weights", "w/x.caffemodel", "weights", "w/x.caffemodel", "weights", "w/x.caffemodel"),
    ("--data-root", "other/VOC", "data_root", "other/VOC", "data_root", "other/VOC"),
    ("--list", "other/val.txt", "list_file", "other/val.txt", "list_file", "other/val.txt"),
    ("--out", "other/exp", "out_dir", "other/exp", "out_dir", "other/exp"),
    ("--limit", "3", "limit", 3, "limit", 3),
    ("--num-classes", "5", "num_classes", 5, "num_classes", 5),
    ("--class-names", "bg, cat,dog", "class_names", "bg, cat,dog",
     "class_names", ["bg", "cat", "dog"]),
    ("--size", "0", "size", 0, "size", 0),
    ("--mean", "1,2.5,3", "mean", (1.0, 2.5, 3.0), "mean", (1.0, 2.5, 3.0)),
    ("--score-blob", "fc8", "score_blob", "fc8", "score_blob", "fc8"),
    ("--k", "fraction:0.1", "k", "fraction:0.1", "k", "fraction:0.1"),
    ("--shift", "full", "shift", "full", "shift", "full"),
    ("--max-units", "9", "max_units", 9, "max_units", 9),
    ("--void", "outside", "void", "outside", "void", "outside"),
    ("--fractions", "0.2,0.4", "fractions", "0.2,0.4", "fractions", (0.2, 0.4)),
    ("--mask", "disc", "mask", "disc", "mask_mode", "disc"),
    ("--mask-threshold", "0.3", "mask_threshold", 0.3, "mask_threshold", 0.3),
    ("--mask-radius", "0.2", "mask_radius", 0.2, "mask_radius", 0.2),
    ("--figures", "0", "figures", 0, "figures", 0),
    ("--gpu", "1", "gpu", 1, "gpu", 1),
    ("--restart", None, "restart", True, "restart", True),
    ("--no-progress", None, "progress", False, "progress", False),   # stderr: a terminal
    ("--skip-bad-images", None, "skip_bad_images", True, "skip_bad_images", True),
]
IDS = flag_ids(FLAGS)
RUN_ALL_SIGNATURE = inspect.signature(runner.run_all)


@pytest.fixture
def captured(monkeypatch):
    """main() with NEEDED plus the given arguments -> what run_and_report received."""
    return capture_call(monkeypatch, SCRIPT, experiments, "run_and_report", needed=NEEDED)


@pytest.fixture
def settings(monkeypatch):
    """main() with NEEDED plus the given arguments, through the real run_and_report, ->
    run_all's arguments and the ExperimentOptions made from its options (as run_all makes
    them: an unknown option or a bad value fails there)."""
    run_all = capture_call(monkeypatch, SCRIPT, runner, "run_all", result={}, needed=NEEDED)

    def run(*argv, **kwargs):
        call = run_all(*argv, **kwargs)
        options = runner.ExperimentOptions(**{key: call.pop(key) for key in list(call)
                                              if key not in RUN_ALL_SIGNATURE.parameters})
        call.update({f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
        return call
    return run


@pytest.mark.parametrize("flag, value, keyword, expected, setting, final", FLAGS, ids=IDS)
def test_each_flag_reaches_its_argument(captured, flag, value, keyword, expected, setting,
                                        final):
    assert_flag_reaches(captured, flag, value, keyword, expected)


@pytest.mark.parametrize("flag, value, keyword, expected, setting, final", FLAGS, ids=IDS)
def test_each_flag_reaches_its_setting(settings, flag, value, keyword, expected, setting,
                                       final):
    assert_flag_reaches(settings, flag, value, setting, final)


def test_the_experiment_reaches_its_argument(captured):
    assert captured()["experiment"] == "all"
    assert captured(needed=["location"] + NEEDED[1:])["experiment"] == "location"


def test_the_experiment_reaches_run_all(settings):
    assert settings()["experiments"] == "all"
    assert settings(needed=["k-needed"] + NEEDED[1:])["experiments"] == "k-needed"


def test_the_defaults(settings):
    call = settings()
    assert call["fractions"] == experiments.FRACTIONS and call["mask_mode"] == "heat"
    assert call["mask_fn"] is None and call["class_names"] is None
    assert call["progress"] is True and call["restart"] is False


def test_mask_parts_hides_the_synthetic_data_sets_true_parts(settings, tmp_path):
    (tmp_path / "Objects").mkdir()
    call = settings("--data-root", str(tmp_path), "--mask", "parts")
    assert call["mask_mode"] == "heat" and call["mask_fn"] is not None
    assert call["mask_fn"].settings_key.startswith("synthetic_parts(")


def test_mask_parts_on_other_data_names_the_flag(capsys):
    assert_usage_error(SCRIPT, NEEDED + ["--mask", "parts"], "--mask", capsys)


def test_no_bars_when_stderr_is_not_a_terminal(captured):
    assert captured(terminal=False)["progress"] is False


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)


@pytest.mark.parametrize("flag, value", [
    ("--limit", "0"), ("--num-classes", "0"), ("--size", "-1"), ("--mean", "1,2"),
    ("--shift", "diagonal"), ("--max-units", "0"), ("--void", "inside"), ("--mask", "box"),
    ("--mask-threshold", "0"), ("--mask-threshold", "1.5"), ("--mask-radius", "0"),
    ("--mask-radius", "nan"), ("--figures", "-1"), ("--gpu", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


def test_an_unknown_experiment_is_a_usage_error(capsys):
    assert_usage_error(SCRIPT, ["everything"] + NEEDED[1:], "argument experiment", capsys)


@pytest.mark.parametrize("value", ["0,0.5", "0.5,0.2", "0.2,x"])
def test_bad_fractions_are_errors_naming_the_flag(value, capsys):
    # parsed by the library (comma-separated text), so exit 2 with error: naming the flag
    assert_usage_error(SCRIPT, NEEDED + ["--fractions", value], "--fractions", capsys)
