"""pixelfeedback.gpu_check: the parts of the GPU self-check that need no GPU (the passes
on the CPU, the comparison, the timing parser, the extrapolation, the report writer) and
the GPU bundle's stand-in modules (docker/gpu_bundle/shims)."""
import importlib
import json
import os
import sys

import cv2 as real_cv2
import numpy as np
import pytest
from PIL import Image as RealImage

from pixelfeedback import gpu_check
from tests.conftest import REPO

SHIMS = os.path.join(REPO, "docker", "gpu_bundle", "shims")

DISPLAY_LOG = """I1130 02:00:00 solver.cpp:218] Iteration 0 (0 iter/s, 4.2s/5 iters), loss = 3.1
I1130 02:00:01 solver.cpp:218] Iteration 5 (2.5 iter/s, 2s/5 iters), loss = 3.0
I1130 02:00:03 solver.cpp:218] Iteration 10 (2 iter/s, 2.5s/5 iters), loss = 2.9
"""


def test_seconds_per_iteration_leaves_out_the_start_up():
    assert gpu_check.seconds_per_iteration(DISPLAY_LOG) == pytest.approx(4.5 / 10)
    with pytest.raises(gpu_check.ToolkitError, match="no 'Iteration N"):
        gpu_check.seconds_per_iteration("I1130 nothing here\n")


def test_sweep_wall_time_adds_training_and_evaluation_per_run():
    timings = {"train_seconds_per_iteration": {"softmax": 0.5, "cosine": 1.0},
               "test_forward_seconds_513": 0.1}
    runs = [("control", 0.0, 0), ("cosine", 0.01, 0), ("cosine", 0.1, 0)]
    result = gpu_check.sweep_wall_time(timings, runs, iterations=100, val_images=10)
    assert result["runs"] == 3
    assert [row["train_seconds"] for row in result["per_run"]] == [50.0, 100.0, 100.0]
    assert result["total_seconds"] == pytest.approx(250 + 3 * 10 * 0.1)


def test_compare_passes_applies_the_stated_tolerances():
    rng = np.random.RandomState(0)
    data, fc7, grad = rng.rand(2, 3, 9, 9), rng.rand(2, 8, 5, 5), rng.rand(8, 8, 3, 3)
    cpu = ({"data": data, "fc7": fc7}, {"fc6": grad})
    close = ({"data": data.copy(), "fc7": fc7 * (1 + 1e-5)}, {"fc6": grad * (1 + 5e-3)})
    rows = gpu_check.compare_passes(cpu, close)
    assert [row["status"] for row in rows] == ["pass"] * 3
    far = ({"data": data + 1e-6, "fc7": fc7 + 0.01}, {"fc6": grad * 1.05})
    rows = {row["what"]: row for row in gpu_check.compare_passes(cpu, far)}
    assert rows["blob data"]["status"] == "fail"            # the data must be identical
    assert rows["blob fc7"]["status"] == "fail"
    assert rows["blob fc7"]["tolerance"] == gpu_check.TOLERANCES["forward"]
    assert rows["gradient fc6"]["status"] == "fail"


def sample_report(status="pass"):
    return {
        "status": status, "machine": "gpu-host", "gpu": 0, "seconds": 301.0,
        "gpu_label": "NVIDIA H200 (compute capability 9.0)",
        "bundle": {"recipe_hash": "abc", "cuda": "13.0 (PyPI wheels)", "cuda_arch": "90"},
        "steps": {
            "libraries": {"status": "pass", "seconds": 1.0, "missing": {}, "outside": {}},
            "device_query": {"status": "pass", "seconds": 1.0, "name": "NVIDIA H200"},
            "cpu_gpu_passes": {"status": status, "seconds": 40.0, "batch": 2, "width_div": 1,
                               "lambda": 1.0, "tolerances": gpu_check.TOLERANCES,
                               "nets": {"softmax": {"status": status, "cpu_seconds": 5.0,
                                                    "gpu_seconds": 0.3, "comparisons": [
                                   {"what": "blob fc7", "difference": 2e-6,
                                    "tolerance": 1e-3, "status": status}]}}},
            "caffe_tests": {"status": "pass", "seconds": 90.0, "filter": "*/2.*",
                            "passed": 800, "failed": []},
            "timings": {"status": "pass", "seconds": 120.0, "device": "gpu 0", "batch": 10,
                        "crop": 321, "width_div": 1,
                        "train_seconds_per_iteration": {"softmax": 0.4, "cosine": 0.9},
                        "test_forward_seconds_513": 0.05},
            "extrapolation": {"status": "pass", "seconds": 0.0, "runs": 75, "seeds": [0, 1, 2],
                              "iterations_per_run": 2000, "val_images": 1449,
                              "total_seconds": 7.5 * 3600, "device": "gpu 0"},
        }}


def test_report_writer_writes_json_and_markdown(tmp_path):
    json_path, md_path = gpu_check.write_reports(sample_report(), str(tmp_path))
    data = json.load(open(json_path))
    assert data["status"] == "pass" and data["steps"]["caffe_tests"]["passed"] == 800
    text = open(md_path).read()
    assert text.startswith("# GPU check: PASS")
    assert "NVIDIA H200 (compute capability 9.0)" in text
    assert "| caffe train iteration, control | 0.400 |" in text
    assert "| test-net forward at 513 | 0.050 |" in text
    assert "75 runs (seeds 0, 1, 2) x 2000 iterations" in text and "about **7.5 h** on gpu 0" in text
    assert "800 passed" in text


def test_report_of_a_failure_shows_the_failing_output(tmp_path):
    report = sample_report("fail")
    report["steps"]["caffe_tests"] = {"status": "fail", "seconds": 3.0, "filter": "*/2.*",
                                      "passed": 0, "failed": ["ReLULayerTest/2.TestReLU"],
                                      "output_tail": "Check failed: error == cudaSuccess"}
    report["steps"]["timings"] = {"status": "fail", "seconds": 1.0,
                                  "error": "ToolkitError: caffe train failed"}
    report["status"] = gpu_check.overall_status(report["steps"])
    assert report["status"] == "fail"
    text = open(gpu_check.write_reports(report, str(tmp_path))[1]).read()
    assert text.startswith("# GPU check: FAIL")
    assert "ReLULayerTest/2.TestReLU" in text and "Check failed: error == cudaSuccess" in text
    assert "ToolkitError: caffe train failed" in text
    # JSON has no infinity: an undefined difference is written as null
    report["steps"]["cpu_gpu_passes"]["nets"]["softmax"]["comparisons"][0]["difference"] = \
        float("inf")
    data = json.load(open(gpu_check.write_reports(report, str(tmp_path))[0]))
    assert data["steps"]["cpu_gpu_passes"]["nets"]["softmax"]["comparisons"][0]["difference"] \
        is None


def test_library_report_names_what_is_missing_and_what_comes_from_outside(tmp_path):
    caffe_tool = os.path.join(REPO, "build", "caffe", "bin", "caffe")
    found = gpu_check.library_report([caffe_tool], str(tmp_path))
    assert found["missing"] == {}
    # the CPU build takes glog from the system: outside this (empty) "bundle"
    assert "libglog.so.1" in found["outside"] and "libc.so.6" not in found["outside"]
    assert gpu_check.machine_library("libcudart.so.13") and gpu_check.machine_library("libc.so.6")
    assert not gpu_check.machine_library("libprotobuf.so.32")
    names = dict(gpu_check.libraries_to_bundle([caffe_tool]))
    assert "libopenblas.so.0" in names and "libc.so.6" not in names


def test_cpu_passes_of_the_train_nets_run_here(tmp_path):
    """The CPU half of the comparison on reduced-width nets with the check's own data."""
    root, list_file = gpu_check.write_data(str(tmp_path / "data"), count=3)
    result = gpu_check.step_cpu_gpu_passes(str(tmp_path), root, list_file,
                                           ("softmax", "selective_cosine"), None, 16)
    assert result["status"] == "skipped"
    for entry in result["nets"].values():
        assert entry["reason"] == gpu_check.NO_GPU and np.isfinite(entry["losses_cpu"]["loss"])
    assert "loss_template" in result["nets"]["selective_cosine"]["losses_cpu"]
    net = open(tmp_path / "compare_selective_cosine.prototxt").read()
    assert "Dropout" not in net and "TemplateSimilarityLoss" in net and "ImageSegData" in net


# --- the bundle's stand-ins -------------------------------------------------------------

@pytest.fixture
def shims(monkeypatch):
    """Import the stand-ins instead of the real packages, then restore the real ones."""
    names = ("cv2", "PIL", "PIL.Image", "_png", "_missing", "skimage", "skimage.io",
             "skimage.transform", "scipy", "scipy.ndimage")
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.syspath_prepend(SHIMS)
    yield lambda name: importlib.import_module(name)
    for name in names:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def test_png_stand_ins_read_and_write_what_voc_io_needs(tmp_path, shims):
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (23, 31, 3)).astype(np.uint8)
    label = rng.randint(0, 21, (23, 31)).astype(np.uint8)
    real_cv2.imwrite(str(tmp_path / "real.png"), image)           # Pillow and OpenCV filter
    real_label = RealImage.fromarray(label, mode="P")  # as files.write_label: 8 bits
    real_label.putpalette([v % 256 for v in range(768)])
    real_label.save(tmp_path / "real_label.png")                   # their rows
    cv2, image_module = shims("cv2"), shims("PIL.Image")
    assert cv2.__file__.startswith(SHIMS) and image_module.__file__.startswith(SHIMS)
    assert np.array_equal(cv2.imread(str(tmp_path / "real.png")), image)
    with image_module.open(str(tmp_path / "real_label.png")) as img:
        assert img.mode == "P" and np.array_equal(np.array(img), label)
    written = image_module.fromarray(label, mode="P")
    written.putpalette([v % 256 for v in range(768)])
    written.save(str(tmp_path / "shim_label.png"), format="PNG")
    with RealImage.open(tmp_path / "shim_label.png") as img:
        assert img.mode == "P" and np.array_equal(np.array(img), label)
    assert cv2.imread(str(tmp_path / "missing.png")) is None


def test_stand_ins_for_pycaffe_imports_fail_only_when_called(shims):
    io = shims("skimage.io")
    zoom = shims("scipy.ndimage").zoom
    with pytest.raises(NotImplementedError, match="not in the GPU bundle"):
        io.imread("x.png")
    with pytest.raises(NotImplementedError, match="scipy.ndimage.zoom"):
        zoom(np.zeros(3), 2)
