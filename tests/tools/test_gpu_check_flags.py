"""Every flag of tools/gpu_check.py, through the script's own main(), reaches run_check's
arguments and from there the step it names: --gpu every GPU step, --cpu none (the device
query skipped), --iterations the timings, --width-div the passes and the timings,
--tests-timeout Caffe's tests, --bundle (made absolute) and --out (its work folder made
absolute) where they are read (issue 20 item 9), and without --bundle the installed
toolkit's Caffe; numbers are checked by argparse."""
import os

import pytest

from tests.flag_harness import (assert_flag_changes, assert_flag_reaches, assert_usage_error,
                                capture_call, flag_ids, parser_flags, record_steps,
                                table_flags)
from pixelfeedback import gpu_check

SCRIPT = "tools/gpu_check.py"
NEEDED = ["--bundle", "bundle", "--out", "out"]   # required; given again the last one counts

FLAGS = [  # (flag, value, run_check's args attribute, expected)
    ("--bundle", "other/bundle", "bundle", "other/bundle"),
    ("--out", "other/out", "out", "other/out"),
    ("--gpu", "1", "gpu", 1),
    ("--cpu", None, "cpu", True),
    ("--iterations", "5", "iterations", 5),
    ("--width-div", "8", "width_div", 8),
    ("--tests-timeout", "30", "tests_timeout", 30),
]

NOT_RUN = "not run"
GPU_STEPS = ("device_query_gpu", "passes_gpu", "timings_gpu", "tests_gpu", "report_gpu")


def step_changes(root):
    """(flag, value, {what the steps received that it changes: expected}); ``root``: the
    working directory the relative paths are made absolute against."""
    bundle = os.path.join(root, "other", "bundle")
    return [
        ("--bundle", "other/bundle", {
            "bundle": bundle, "caffe_tool": os.path.join(bundle, "caffe", "bin", "caffe"),
            "tests_binary": os.path.join(bundle, "caffe", "bin", "caffe-tests"),
            "tests_dir": os.path.join(bundle, "caffe", "share", "caffe-tests")}),
        ("--out", "other/out", {"passes_work": os.path.join(root, "other", "out", "work"),
                                "timings_work": os.path.join(root, "other", "out", "work"),
                                "report_out": "other/out"}),
        ("--gpu", "1", dict.fromkeys(GPU_STEPS, 1)),
        ("--cpu", None, dict(dict.fromkeys(GPU_STEPS, None), device_query_gpu=NOT_RUN)),
        ("--iterations", "5", {"iterations": 5}),
        ("--width-div", "8", {"passes_width_div": 8, "timings_width_div": 8}),
        ("--tests-timeout", "30", {"tests_timeout": 30}),
    ]


@pytest.fixture
def captured(monkeypatch):
    """main() with NEEDED plus the given arguments -> the namespace run_check received (the
    script imports it: patched before the script is loaded)."""
    return capture_call(monkeypatch, SCRIPT, gpu_check, "run_check", bind=False, needed=NEEDED)


@pytest.fixture
def steps(monkeypatch, tmp_path):
    """main() with NEEDED plus the given arguments, through the real run_check with every
    step replaced by a recorder (run in tmp_path) -> what the steps received."""
    monkeypatch.chdir(tmp_path)
    seen = {}
    passed = {"status": gpu_check.PASS}

    def libraries(bundle):
        seen["bundle"] = bundle
        return dict(passed)

    def device_query(caffe, gpu):
        seen.update(caffe_tool=caffe, device_query_gpu=gpu)
        return dict(passed)

    def passes(work, data_root, list_file, losses, gpu, width_div):
        seen.update(passes_work=work, passes_gpu=gpu, passes_width_div=width_div)
        return dict(passed)

    def timings(work, data_root, list_file, losses, gpu, iterations, width_div):
        seen.update(timings_work=work, timings_gpu=gpu, iterations=iterations,
                    timings_width_div=width_div)
        return dict(passed)

    def caffe_tests(tests_binary, tests_dir, gpu, timeout):
        seen.update(tests_binary=tests_binary, tests_dir=tests_dir, tests_gpu=gpu,
                    tests_timeout=timeout)
        return dict(passed)

    def reports(report, out):
        seen.update(report_gpu=report["gpu"], report_out=out)
        return "r.json", "r.md"

    for name, fake in [("step_libraries", libraries), ("step_device_query", device_query),
                       ("step_cpu_gpu_passes", passes), ("step_timings", timings),
                       ("step_caffe_tests", caffe_tests), ("write_reports", reports),
                       ("write_data", lambda root: ("data_root", "list.txt")),
                       ("sweep_plan", lambda: {}),
                       ("step_extrapolation", lambda timings, plan: dict(passed))]:
        monkeypatch.setattr(gpu_check, name, fake)

    # stdout: the step lines; the status is 0 only when every (recorded) step passed
    return record_steps(monkeypatch, SCRIPT, seen, {"device_query_gpu": NOT_RUN}, NEEDED)


@pytest.mark.parametrize("flag, value, attribute, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_run_check(captured, flag, value, attribute, expected):
    assert_flag_reaches(captured, flag, value, attribute, expected)


@pytest.mark.parametrize("index", range(len(FLAGS)), ids=flag_ids(FLAGS))
def test_each_flag_reaches_the_steps_it_names(steps, tmp_path, index):
    assert_flag_changes(steps, *step_changes(str(tmp_path))[index])


def test_the_defaults_reach_the_steps(steps, tmp_path):
    call = steps()
    assert call["bundle"] == str(tmp_path / "bundle")
    assert all(call[key] == 0 for key in GPU_STEPS)          # GPU 0
    assert (call["iterations"], call["passes_width_div"], call["tests_timeout"]) == (20, 1, 240)


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS)
    assert flag_ids(step_changes("/")) == flag_ids(FLAGS)


@pytest.mark.parametrize("flag, value", [
    ("--gpu", "-1"), ("--gpu", "x"), ("--iterations", "1"), ("--width-div", "0"),
    ("--tests-timeout", "0"), ("--tests-timeout", "2.5")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


def test_out_is_required(capsys):
    assert_usage_error(SCRIPT, NEEDED[:2], "--out", capsys)


def test_without_a_bundle_the_installed_toolkit_is_checked(steps, tmp_path):
    """The CUDA image's gpu-check (issue 26 item 5): no GPU bundle to build; its own Caffe's
    libraries, its `caffe` tool, and no test binary (the image's Caffe has none)."""
    from pixelfeedback.training import caffe_binary
    call = steps(needed=["--out", "out"])
    assert call["bundle"] == gpu_check.installed_caffe()
    assert os.path.isfile(os.path.join(call["bundle"], "bin", "caffe"))  # build/caffe
    assert call["caffe_tool"] == caffe_binary()
    assert call["tests_binary"] is None
    assert call["tests_dir"] == os.path.join(call["bundle"], "share", "caffe-tests")
