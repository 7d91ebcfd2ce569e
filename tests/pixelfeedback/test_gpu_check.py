"""pixelfeedback.gpu_check: the parts of the GPU self-check that need no GPU (the passes
on the CPU, the comparison, the libraries) and the GPU bundle's stand-in modules
(docker/gpu_bundle/shims); the timings, the extrapolation and the report writer are
tests/pixelfeedback/test_gpu_timings.py's."""
import importlib
import os
import sys

import cv2 as real_cv2
import numpy as np
import pytest
from PIL import Image as RealImage

from pixelfeedback import gpu_check
from tests.conftest import REPO

SHIMS = os.path.join(REPO, "docker", "gpu_bundle", "shims")


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
