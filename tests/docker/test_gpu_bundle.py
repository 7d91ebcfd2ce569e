"""The GPU bundle (`make gpu-bundle`; make cuda-check packs it first): at most 45 MiB, holding
what docker/gpu_check.sh needs, its libraries resolved inside it from a bare environment
(only glibc and CUDA's libraries come from the machine), and its check passing its CPU
parts here (no GPU on this machine)."""
import json
import os
import subprocess
import tarfile

import pytest

from pixelfeedback import gpu_check
from tests.conftest import REPO

pytestmark = pytest.mark.cuda_build  # make cuda-check runs these (CI too); make test does not

ARCHIVE = os.path.join(REPO, "build", "pixelfeedback-gpu.tar.xz")
MAX_BYTES = 45 * 1024 * 1024


@pytest.fixture(scope="module")
def archive():
    if not os.path.isfile(ARCHIVE):
        pytest.fail(f"no GPU bundle at {ARCHIVE}: run `make cuda-check`")
    return ARCHIVE


@pytest.fixture(scope="module")
def members(archive):
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


@pytest.fixture(scope="module")
def bundle(archive, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    subprocess.run(["tar", "-C", str(folder), "-xJf", archive], check=True)
    return str(folder / "pixelfeedback-gpu")


@pytest.fixture(scope="module")
def cuda_lib_dir():
    """The CUDA 13 libraries a GPU machine has: here, the lib folder of the toolkit the
    CUDA build used (its wheels)."""
    prefix = subprocess.run(["make", "-s", "--no-print-directory", "cuda-prefix"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    libcaffe = os.path.join(prefix, "lib", "libcaffe.so")
    for line in subprocess.run(["ldd", libcaffe], capture_output=True, text=True).stdout.splitlines():
        if "libcudart.so" in line and "=>" in line:
            return os.path.dirname(line.split("=>")[1].split()[0])
    pytest.fail(f"libcudart of {libcaffe} not found")


def test_the_archive_weighs_at_most_45_mib(archive):
    assert os.path.getsize(archive) <= MAX_BYTES


def test_the_archive_holds_what_the_check_needs_and_nothing_of_the_machine(members):
    top = "pixelfeedback-gpu/"
    for path in ("gpu_check.sh", "MANIFEST.json", "caffe/bin/caffe", "caffe/bin/caffe-tests",
                 "caffe/lib/libcaffe.so.1.0.0", "caffe/lib/python3/dist-packages/caffe/_caffe.so",
                 "caffe/share/caffe-tests/src/caffe/test/test_data/sample_data.h5",
                 "python/bin/python3.11", "python/bin/caffe", "lib/libpython3.11.so.1.0",
                 "python/lib/python3.11/site-packages/numpy/__init__.py",
                 "python/lib/python3.11/site-packages/google/protobuf/__init__.py",
                 "python/lib/python3.11/site-packages/six.py", "shims/cv2.py", "shims/PIL/Image.py",
                 "shims/skimage/io.py", "shims/scipy/ndimage.py",
                 "toolkit/pixelfeedback/gpu_check.py", "toolkit/pixelfeedback/gpu_timings.py",
                 "toolkit/pixelfeedback/gpu_report.py", "toolkit/tools/gpu_check.py",
                 "toolkit/python_layers/seg_data.py",
                 "toolkit/python_layers/template_loss.py"):
        assert top + path in members, path
    libraries = [os.path.basename(name) for name in members if name.startswith(top + "lib/")]
    assert not [name for name in libraries if gpu_check.machine_library(name)]
    assert len(libraries) > 30  # glog, protobuf, boost, HDF5, OpenBLAS, Python ...
    site = top + "python/lib/python3.11/site-packages/"
    for package in ("cv2", "PIL", "skimage", "scipy", "matplotlib"):
        assert site + package not in members  # only the stand-ins in shims/


def test_the_manifest_names_the_current_cuda_recipe(bundle):
    manifest = json.load(open(os.path.join(bundle, "MANIFEST.json")))
    prefix = subprocess.run(["make", "-s", "--no-print-directory", "cuda-prefix"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert prefix.endswith("-" + manifest["recipe_hash"])
    assert manifest["cuda_arch"] == "90" and manifest["cuda"].startswith("13.0")
    assert manifest["numpy"].startswith("1.26") and manifest["python"].startswith("3.11")


@pytest.fixture(scope="module")
def cpu_report(bundle, cuda_lib_dir, tmp_path_factory):
    """`gpu_check.sh --cpu` under `env -i`, the way a bare machine runs it: no variable but
    PATH, HOME and where CUDA's libraries are. Every import then comes from the bundle (its
    Python has no other path); Python layers run inside the bundle's `caffe train`."""
    out = tmp_path_factory.mktemp("report")
    result = subprocess.run(
        ["env", "-i", "PATH=/usr/bin:/bin", f"HOME={out}", f"CUDA_LIB_DIRS={cuda_lib_dir}",
         "bash", os.path.join(bundle, "gpu_check.sh"), "--cpu", "--out", str(out),
         "--width-div", "16", "--iterations", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.load(open(out / "gpu_check.json")), open(out / "gpu_check.md").read()


def test_every_library_resolves_inside_the_bundle_from_a_bare_environment(cpu_report):
    libraries = cpu_report[0]["steps"]["libraries"]
    assert libraries["status"] == "pass" and libraries["missing"] == {}
    assert libraries["outside"] == {}  # nothing but glibc and CUDA comes from the machine
    assert libraries["files_checked"] > 50


def test_the_check_passes_its_cpu_parts_in_a_bare_environment(cpu_report):
    report, text = cpu_report
    steps = report["steps"]
    assert report["status"] == "pass"
    assert steps["device_query"]["status"] == "skipped"
    assert steps["cpu_gpu_passes"]["status"] == "skipped"  # CPU halves ran; no GPU half
    assert len(steps["cpu_gpu_passes"]["nets"]) == 5
    assert steps["caffe_tests"]["status"] == "skipped" and steps["caffe_tests"]["tests_selected"] > 400
    assert set(steps["timings"]["train_seconds_per_iteration"]) == {
        "softmax", "correlation", "cosine", "selective_correlation", "selective_cosine",
        "stage1"}
    assert set(steps["timings"]["python_layers"]) == set(
        steps["timings"]["train_seconds_per_iteration"])   # caffe time runs in the bundle
    # the default sweep of tools/reproduce_table.py: stage 1, then (control + step control
    # + 4 losses x 6 lambdas) x seeds 0,1,2
    assert steps["extrapolation"]["runs"] == 1 + 3 + 3 + 72
    assert steps["extrapolation"]["total_seconds"] > 0
    assert text.startswith("# GPU check: PASS") and "Table 3.1 sweep" in text


def test_the_check_fails_fast_naming_missing_cuda_libraries(bundle, tmp_path):
    result = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "CUDA_LIB_DIRS=/nonexistent",
                             "bash", os.path.join(bundle, "gpu_check.sh"), "--out",
                             str(tmp_path / "report")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    # this machine has no GPU driver: libcuda.so.1 at least is missing, and named
    assert "CUDA libraries not found on this machine" in result.stderr
    assert "libcuda.so.1" in result.stderr and "CUDA_LIB_DIRS" in result.stderr
