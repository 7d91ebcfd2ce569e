"""The CUDA compile check (`make cuda-check`; CI runs it): the CUDA 13 Caffe for compute
capability 9.0 that `make cuda-build` compiled from PyPI's pinned wheels (or found in the cache under the
recipe's hash) is a real CUDA build, and kept what Caffe's own tests need. No GPU needed."""
import os
import re
import subprocess
import sys

import pytest

from pixelfeedback import gpu_check
from tests.conftest import REPO

pytestmark = pytest.mark.cuda_build  # make cuda-check runs these (CI too); make test does not


@pytest.fixture(scope="module")
def prefix():
    """The cached prefix `make cuda-build` built (make cuda-check runs it first)."""
    path = subprocess.run(["make", "-s", "--no-print-directory", "cuda-prefix"], cwd=REPO,
                          capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.isfile(os.path.join(path, ".build-stamp")):
        pytest.fail(f"no CUDA Caffe at {path}: run `make cuda-check`")
    return path


def needed(path):
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out)


def test_the_stamp_names_the_cuda_13_wheels_sm90_and_the_tests(prefix):
    stamp = dict(item.split("=", 1) for item in open(os.path.join(prefix, ".build-stamp")).read().split())
    assert stamp["cuda"] == "1" and stamp["arch"] == "90" and stamp["tests"] == "1"
    assert stamp["toolkit"].startswith("wheels-")
    assert os.path.basename(prefix).startswith("caffe-cuda-sm90-")  # named by the recipe hash


def test_libcaffe_links_cuda_runtime_cublas_and_curand(prefix):
    libraries = needed(os.path.join(prefix, "lib", "libcaffe.so"))
    for name in ("libcudart.so.13", "libcublas.so.13", "libcurand.so.10"):
        assert name in libraries, libraries


def test_cmake_detected_cuda_13_for_sm90(prefix):
    log = open(os.path.join(prefix + ".work", "caffe-build", "cmake.log")).read()
    assert re.search(r"CUDA +: +Yes \(ver\. 13\.0\)", log)
    assert re.search(r"GPU arch\(s\) +: +sm_90", log)
    assert "CUDA is not detected" not in log


def test_the_cuda_patch_is_in_the_kept_source_tree(prefix):
    """The source and build trees stay, so Caffe's own tests can be rebuilt later."""
    src = os.path.join(prefix + ".work", "caffe-src", "src", "caffe")
    common = open(os.path.join(src, "common.cpp")).read()
    assert "cudaDevAttrClockRate" in common and "prop.clockRate" not in common
    assert "cudaDevAttrKernelExecTimeout" in open(os.path.join(src, "test", "test_platform.cpp")).read()
    assert os.path.isfile(os.path.join(prefix + ".work", "caffe-build", "Makefile"))


def test_tool_and_pycaffe_load_without_a_gpu(prefix):
    result = subprocess.run([os.path.join(prefix, "bin", "caffe"), "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "1.0.0" in result.stdout + result.stderr
    code = ("import caffe; assert 'Python' in caffe.layer_type_list(); "
            "print(caffe.set_mode_gpu.__name__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=os.path.join(
                                prefix, "lib", "python3", "dist-packages")))
    assert result.returncode == 0, result.stderr
    assert needed(os.path.join(prefix, "lib", "python3", "dist-packages", "caffe", "_caffe.so"))


def test_caffes_own_test_binary_holds_the_gpu_tests(prefix):
    result = subprocess.run([os.path.join(prefix, "bin", "caffe-tests"), "--gtest_list_tests",
                             "--gtest_filter=" + gpu_check.TESTS_FILTER], capture_output=True,
                            text=True, cwd=os.path.join(prefix, "share", "caffe-tests"), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    cases = [line for line in result.stdout.splitlines() if line.startswith("  ")]
    assert len(cases) > 400 and "LSTMLayerTest" not in result.stdout
    assert "ConvolutionLayerTest/2." in result.stdout and "GPUMathFunctionsTest" in result.stdout
    assert os.path.isfile(os.path.join(prefix, "share", "caffe-tests", "src", "caffe", "test",
                                       "test_data", "sample_data.h5"))
