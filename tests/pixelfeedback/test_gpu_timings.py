"""pixelfeedback.gpu_timings and gpu_report: the GPU check's timings (the `caffe train` and
`caffe time` parsers, the Python layers' share), the DEFAULT sweep's wall time with stage 1,
the step controls and the checks (issue 26 item 5: it extrapolated the fine-tunes only),
the report; and the whole check on the CPU through tools/gpu_check.py without a bundle,
as the image's gpu-check runs it."""
import json
import os
import subprocess
import sys

import pytest

from pixelfeedback import gpu_report, gpu_timings
from python_layers import ToolkitError
from tests.conftest import REPO

DISPLAY_LOG = """I1130 02:00:00 solver.cpp:218] Iteration 0 (0 iter/s, 4.2s/5 iters), loss = 3.1
I1130 02:00:01 solver.cpp:218] Iteration 5 (2.5 iter/s, 2s/5 iters), loss = 3.0
I1130 02:00:03 solver.cpp:218] Iteration 10 (2 iter/s, 2.5s/5 iters), loss = 2.9
"""

# what `caffe time` prints (BVLC tools/caffe.cpp), cut to four layers
CAFFE_TIME_LOG = """I20261206 22:26:39.466161 27853 caffe.cpp:397] Average time per layer: 
I20261206 22:26:39.466166 27853 caffe.cpp:400]       data\tforward: 60 ms.
I20261206 22:26:39.466171 27853 caffe.cpp:403]       data\tbackward: 2 ms.
I20261206 22:26:39.466173 27853 caffe.cpp:400]    conv1_1\tforward: 36.5 ms.
I20261206 22:26:39.466176 27853 caffe.cpp:403]    conv1_1\tbackward: 0.5 ms.
I20261206 22:26:34.502431 27819 caffe.cpp:400] label_shrink\tforward: 2.5 ms.
I20261206 22:26:34.502434 27819 caffe.cpp:403] label_shrink\tbackward: 0.5 ms.
I20261206 22:26:34.502452 27819 caffe.cpp:400] loss_template\tforward: 11 ms.
I20261206 22:26:34.502457 27819 caffe.cpp:403] loss_template\tbackward: 7 ms.
I20261206 22:26:34.502465 27819 caffe.cpp:408] Average Forward pass: 110 ms.
I20261206 22:26:34.502468 27819 caffe.cpp:410] Average Backward pass: 10 ms.
I20261206 22:26:34.502470 27819 caffe.cpp:412] Average Forward-Backward: 120 ms.
"""


def test_seconds_per_iteration_leaves_out_the_start_up():
    assert gpu_timings.seconds_per_iteration(DISPLAY_LOG) == pytest.approx(4.5 / 10)
    with pytest.raises(ToolkitError, match="no 'Iteration N"):
        gpu_timings.seconds_per_iteration("I1130 nothing here\n")


def test_caffe_time_is_read_per_layer():
    per_layer, total = gpu_timings.layer_times(CAFFE_TIME_LOG)
    assert per_layer == {"data": 62.0, "conv1_1": 37.0, "label_shrink": 3.0,
                         "loss_template": 18.0}
    assert total == 120.0
    with pytest.raises(ToolkitError, match="caffe time"):
        gpu_timings.layer_times("I1130 Average Forward-Backward: 1 ms.\n")


def test_the_python_layers_of_a_train_net_are_found_by_type(tmp_path):
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    path = write_net(largefov.train_net("cosine", 0.1, width_div=32),
                     str(tmp_path / "train.prototxt"))
    assert gpu_timings.python_layers(path) == ["data", "label_shrink", "loss_template"]
    path = write_net(largefov.train_net("softmax", width_div=32), str(tmp_path / "c.prototxt"))
    assert gpu_timings.python_layers(path) == ["data", "label_shrink"]


TIMINGS = {"device": "gpu 0",
           "train_seconds_per_iteration": {"softmax": 0.5, "cosine": 1.0, "stage1": 2.0},
           "python_layers": {"softmax": {"python_share": 0.2}, "cosine": {"python_share": 0.5},
                             "stage1": {"python_share": 0.1}},
           "test_forward_seconds_513": 0.05, "evaluate_seconds_per_image_513": 0.1,
           "list_check_seconds_per_line": 0.01, "init_check_seconds": 1.0}
PLAN = {"runs": [("baseline", 0.0, 0), ("control", 0.0, 0), ("control_step", 0.0, 0),
                 ("cosine", 0.1, 0)], "iterations": 100, "baseline_iterations": 300,
        "seeds": [0], "list_lines": 50, "val_images": 10}


def test_the_sweep_wall_time_has_stage_1_the_controls_the_evaluations_and_the_checks():
    result = gpu_timings.sweep_wall_time(TIMINGS, PLAN)
    # stage 1: 300 iterations x 2 s; the controls at the softmax fine-tune's 0.5 s; every
    # run evaluates 10 images x 0.1 s; checks: 50 lines x 0.01 s + 1 s
    assert [row["train_seconds"] for row in result["per_run"]] == [600.0, 50.0, 50.0, 100.0]
    assert [row["evaluate_seconds"] for row in result["per_run"]] == [1.0] * 4
    assert result["by_kind"] == {"stage 1": {"runs": 1, "seconds": 601.0},
                                 "control": {"runs": 1, "seconds": 51.0},
                                 "step control": {"runs": 1, "seconds": 51.0},
                                 "loss run": {"runs": 1, "seconds": 101.0}}
    assert result["checks_seconds"] == pytest.approx(1.5)
    assert result["total_seconds"] == pytest.approx(805.5)
    # Python layers: 600 x 0.1 + 50 x 0.2 + 50 x 0.2 + 100 x 0.5 of 800 s of training
    assert result["python_layers_seconds"] == pytest.approx(130.0)
    assert result["python_layers_share"] == pytest.approx(130 / 800)
    # two GPUs: checks and stage 1 first, then the three fine-tunes two at a time
    assert result["on_gpus"]["2"] == pytest.approx(1.5 + 601 + (51 + 51 + 101) / 2)
    assert result["on_gpus"]["1"] == pytest.approx(805.5)


def test_without_the_evaluation_and_checks_the_test_forward_stands_in():
    """The GPU bundle: no evaluation timing (test-net forwards instead), no checks."""
    timings = dict(TIMINGS, evaluate_seconds_per_image_513=None,
                   list_check_seconds_per_line=None, init_check_seconds=None)
    result = gpu_timings.sweep_wall_time(timings, PLAN)
    assert [row["evaluate_seconds"] for row in result["per_run"]] == [0.5] * 4
    assert result["checks_seconds"] is None and not result["evaluation_measured"]
    assert result["total_seconds"] == pytest.approx(600 + 50 + 50 + 100 + 4 * 0.5)


def test_the_plan_is_the_default_sweep():
    plan = gpu_timings.sweep_plan()
    kinds = [gpu_timings.run_kind(run[0]) for run in plan["runs"]]
    # stage 1, a control and a step control per seed, 4 losses x 6 lambdas x 3 seeds
    assert kinds.count("stage 1") == 1 and kinds[0] == "stage 1"
    assert kinds.count("control") == 3 and kinds.count("step control") == 3
    assert kinds.count("loss run") == 4 * 6 * 3
    assert (plan["iterations"], plan["baseline_iterations"], plan["seeds"]) == (2000, 6000,
                                                                                [0, 1, 2])
    assert (plan["val_images"], plan["list_lines"]) == (1449, 1464 + 1449 + 10582)
    assert len(gpu_timings.sweep_plan(seeds=(0,))["runs"]) == 1 + 1 + 1 + 24


def sample_report(status="pass"):
    timings = dict(TIMINGS, status="pass", seconds=120.0, batch=10, stage1_batch=20,
                   crop=321, width_div=1, iterations_timed=20,
                   train_seconds_per_iteration={"softmax": 0.4, "cosine": 0.9, "stage1": 1.5})
    timings["python_layers"] = {"softmax": {"python_layers_ms": {"data": 30.0,
                                                                 "label_shrink": 1.0},
                                            "python_share": 0.0775}}
    return {
        "status": status, "machine": "gpu-host", "gpu": 0, "seconds": 301.0,
        "gpu_label": "NVIDIA H200 (compute capability 9.0)",
        "bundle": {"recipe_hash": "abc", "cuda": "13.0 (PyPI wheels)", "cuda_arch": "90"},
        "steps": {
            "libraries": {"status": "pass", "seconds": 1.0, "missing": {}, "outside": {}},
            "device_query": {"status": "pass", "seconds": 1.0, "name": "NVIDIA H200"},
            "cpu_gpu_passes": {"status": status, "seconds": 40.0, "batch": 2, "width_div": 1,
                               "lambda": 1.0, "tolerances": {"forward": 1e-3, "gradient": 1e-2},
                               "nets": {"softmax": {"status": status, "cpu_seconds": 5.0,
                                                    "gpu_seconds": 0.3, "comparisons": [
                                   {"what": "blob fc7", "difference": 2e-6,
                                    "tolerance": 1e-3, "status": status}]}}},
            "caffe_tests": {"status": "pass", "seconds": 90.0, "filter": "*/2.*",
                            "passed": 800, "failed": []},
            "timings": timings,
            "extrapolation": {"status": "pass", "seconds": 0.0, "runs": 79, "seeds": [0, 1, 2],
                              "iterations_per_run": 2000, "baseline_iterations": 6000,
                              "val_images": 1449, "list_lines": 13495,
                              "by_kind": {"stage 1": {"runs": 1, "seconds": 2.5 * 3600}},
                              "checks_seconds": 90.0, "python_layers_seconds": 3600.0,
                              "python_layers_share": 0.25, "evaluation_measured": True,
                              "on_gpus": {"1": 7.5 * 3600, "4": 4 * 3600},
                              "total_seconds": 7.5 * 3600, "device": "gpu 0"},
        }}


def test_report_writer_writes_json_and_markdown(tmp_path):
    json_path, md_path = gpu_report.write_reports(sample_report(), str(tmp_path))
    data = json.load(open(json_path))
    assert data["status"] == "pass" and data["steps"]["caffe_tests"]["passed"] == 800
    text = open(md_path).read()
    assert text.startswith("# GPU check: PASS")
    assert "NVIDIA H200 (compute capability 9.0)" in text
    assert "| control (softmax only) | 0.400 | data 30.0, label_shrink 1.0 | 7.8 % |" in text
    assert "| stage 1 (DeepLab's baseline) | 1.500 | n/a | n/a |" in text
    assert "| test-net forward at 513 | 0.050 |" in text
    assert "| evaluation per val image at 513 (read, forward, score, write) | 0.100 |" in text
    assert "79 runs (seeds 0, 1, 2): stage 1 for 6000 iterations, then each fine-tune for " \
        "2000" in text and "About **7.5 h** on gpu 0" in text
    assert "| stage 1 (the baseline), trained and evaluated | 1 | 2.5 h |" in text
    assert "| checks before the first run (lists, every image and label, initial weights) " \
        "| | 1.5 min |" in text
    assert "take about 1.0 h, 25.0 % of the training" in text
    assert "1 GPU 7.5 h, 4 GPUs 4.0 h" in text
    assert "800 passed" in text


def test_report_of_a_failure_shows_the_failing_output(tmp_path):
    report = sample_report("fail")
    report["steps"]["caffe_tests"] = {"status": "fail", "seconds": 3.0, "filter": "*/2.*",
                                      "passed": 0, "failed": ["ReLULayerTest/2.TestReLU"],
                                      "output_tail": "Check failed: error == cudaSuccess"}
    report["steps"]["timings"] = {"status": "fail", "seconds": 1.0,
                                  "error": "ToolkitError: caffe train failed"}
    report["status"] = gpu_report.overall_status(report["steps"])
    assert report["status"] == "fail"
    text = open(gpu_report.write_reports(report, str(tmp_path))[1]).read()
    assert text.startswith("# GPU check: FAIL")
    assert "ReLULayerTest/2.TestReLU" in text and "Check failed: error == cudaSuccess" in text
    assert "ToolkitError: caffe train failed" in text
    # JSON has no infinity: an undefined difference is written as null
    report["steps"]["cpu_gpu_passes"]["nets"]["softmax"]["comparisons"][0]["difference"] = \
        float("inf")
    data = json.load(open(gpu_report.write_reports(report, str(tmp_path))[0]))
    assert data["steps"]["cpu_gpu_passes"]["nets"]["softmax"]["comparisons"][0]["difference"] \
        is None


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory):
    """tools/gpu_check.py --cpu without --bundle: the installed toolkit, as the image's
    `gpu-check` runs it (reduced width, two iterations per timing)."""
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "gpu_check.py"), "--cpu",
                           "--out", str(out), "--width-div", "16", "--iterations", "2"],
                          cwd=str(out), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return json.load(open(out / "gpu_check.json")), open(out / "gpu_check.md").read()


def test_the_check_runs_on_the_cpu_without_a_bundle(cpu_check):
    report, text = cpu_check
    steps = report["steps"]
    assert report["status"] == "pass" and report["bundle"] == {}
    assert steps["libraries"]["status"] == "pass" and steps["libraries"]["files_checked"] > 3
    assert steps["caffe_tests"]["status"] == "skipped" and "no test binary" in \
        steps["caffe_tests"]["reason"]
    timings = steps["timings"]
    assert set(timings["train_seconds_per_iteration"]) == {
        "softmax", "correlation", "cosine", "selective_correlation", "selective_cosine",
        "stage1"}
    assert (timings["batch"], timings["stage1_batch"], timings["crop"]) == (10, 20, 321)
    for net, share in timings["python_layers"].items():
        assert 0 < share["python_share"] < 1, net
        assert share["python_ms"] == pytest.approx(sum(share["python_layers_ms"].values()))
        names = set(share["python_layers_ms"])
        assert names == ({"data", "label_shrink"} if net in ("softmax", "stage1") else
                         {"data", "label_shrink", "loss_template"})
    assert timings["evaluate_seconds_per_image_513"] > 0
    assert timings["list_check_seconds_per_line"] > 0 and timings["init_check_seconds"] > 0
    assert "## The default Table 3.1 sweep on this device, extrapolated" in text


def test_the_cpu_check_extrapolates_the_default_sweep_with_stage_1(cpu_check):
    report, _ = cpu_check
    timings, sweep = report["steps"]["timings"], report["steps"]["extrapolation"]
    assert sweep["runs"] == 79 and sweep["by_kind"]["stage 1"]["runs"] == 1
    stage1 = 6000 * timings["train_seconds_per_iteration"]["stage1"] + \
        1449 * timings["evaluate_seconds_per_image_513"]
    assert sweep["by_kind"]["stage 1"]["seconds"] == pytest.approx(stage1)
    assert sweep["by_kind"]["step control"]["runs"] == 3
    assert sweep["checks_seconds"] == pytest.approx(
        13495 * timings["list_check_seconds_per_line"] + timings["init_check_seconds"])
    assert sweep["total_seconds"] == pytest.approx(
        sweep["checks_seconds"] + sum(kind["seconds"] for kind in sweep["by_kind"].values()))
