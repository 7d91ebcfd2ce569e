"""Issue 28, case 3: the venv's `caffe` wrapper guards `caffe train -solver S [-weights W]
[-gpu N]` (tools/caffe_guard.py): what Caffe trained through silently or aborted on with a
C++ stack (exit 134) is one line `error: ...` and exit 2, a non-finite loss stops the
training, and every other command passes through unchanged. Run as a user runs it: the
wrapper in a subprocess, from the repository root."""
import os
import subprocess
import sys

import numpy as np
import pytest

from pixelfeedback import caffe_guard
from pixelfeedback.nets import largefov
from pixelfeedback.nets import weights as netweights
from tests.conftest import REPO, random_largefov_weights, write_tiny_voc

CAFFE = os.path.join(sys.prefix, "bin", "caffe")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, caffe):
    """A tiny fine-tune (4 classes, width/16) and weights that fit it, of 5 classes, and
    without fc8_voc12."""
    folder = tmp_path_factory.mktemp("guard")
    root = str(folder / "voc")
    list_file = write_tiny_voc(root, n_images=4)
    solver = largefov.write_experiment(str(folder / "run"), "softmax", data_root=root,
                                       list_file=list_file, batch_size=2, crop=33,
                                       width_div=16, num_classes=4, seed=3, iterations=4,
                                       snapshot=0)
    os.makedirs(folder / "w4")
    os.makedirs(folder / "w5")
    good = random_largefov_weights(str(folder / "w4"), caffe, width_div=16, num_classes=4)
    five = random_largefov_weights(str(folder / "w5"), caffe, width_div=16, num_classes=5)
    model = netweights.read_caffemodel(good)
    kept = [layer for layer in model.layer if layer.name != "fc8_voc12"]
    del model.layer[:]
    model.layer.extend(kept)
    no_fc8 = str(folder / "no_fc8.caffemodel")
    with open(no_fc8, "wb") as f:
        f.write(model.SerializeToString())
    return {"folder": folder, "solver": solver, "good": good, "five": five, "no_fc8": no_fc8}


def run_caffe(*arguments, env=None):
    return subprocess.run([CAFFE, *arguments], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, GLOG_minloglevel="0",
                                                GLOG_logtostderr="1", **(env or {})))


def assert_one_line_error(done, *words):
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert "@ 0x" not in done.stderr and "Check failed" not in done.stderr
    assert "Iteration 0" not in done.stderr   # nothing trained


def broken_copy(setup, name, transform):
    data = open(setup["good"], "rb").read()
    path = setup["folder"] / name
    path.write_bytes(transform(data))
    return str(path)


def test_a_zero_byte_weights_file_is_refused(setup):
    empty = broken_copy(setup, "empty.caffemodel", lambda data: b"")
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], "-weights", empty),
                          empty, "empty (0 bytes")


def test_a_truncated_weights_file_is_refused(setup):
    cut = broken_copy(setup, "cut.caffemodel", lambda data: data[:len(data) // 2])
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], f"-weights={cut}"),
                          cut, "truncated")


def test_a_web_page_for_weights_is_refused(setup):
    page = broken_copy(setup, "page.caffemodel", lambda data: b"<html>Not Found</html>\n")
    assert_one_line_error(run_caffe("train", "--solver", setup["solver"], "--weights", page),
                          page, "not a Caffe model", "web page")


def test_nan_weights_are_refused_naming_the_layer(setup, caffe):
    net = caffe.Net(str(setup["folder"] / "w4" / "deploy.prototxt"), setup["good"], caffe.TEST)
    net.params["fc7"][0].data[0, 0, 0, 0] = np.nan
    nan_path = str(setup["folder"] / "nan.caffemodel")
    net.save(nan_path)
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], "-weights", nan_path),
                          nan_path, "'fc7'", "1 NaN or inf")


def test_weights_of_another_class_count_are_refused_naming_the_layer(setup):
    assert_one_line_error(
        run_caffe("train", "-solver", setup["solver"], "-weights", setup["five"]),
        setup["five"], setup["solver"], "fc8_voc12 blob 0: caffemodel (5, 64, 1, 1), "
        "prototxt (4, 64, 1, 1)")


def test_gpu_on_the_cpu_build_is_refused(setup):
    from pixelfeedback.nets.loading import check_gpu
    from python_layers import ToolkitError
    try:
        check_gpu(0)
        pytest.skip("this Caffe can use GPU 0")
    except ToolkitError:
        pass
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], "-gpu", "0"),
                          "CPU-only", "without -gpu")
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], "-gpu", "x"),
                          "-gpu takes GPU ids")


def test_weights_and_snapshot_together_are_refused(setup):
    assert_one_line_error(run_caffe("train", "-solver", setup["solver"], "-weights",
                                    setup["good"], "-snapshot", "s.solverstate"),
                          "-snapshot", "-weights", "not both")


def test_fitting_weights_train_and_a_missing_layer_is_one_warning(setup):
    done = run_caffe("train", "-solver", setup["solver"], "-weights", setup["good"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WARNING: -weights" not in done.stderr and "Optimization Done" in done.stderr
    done = run_caffe("train", "-solver", setup["solver"], "-weights", setup["no_fc8"])
    assert done.returncode == 0, done.stderr[-2000:]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 1 and "fc8_voc12" in warnings[0] and setup["no_fc8"] in warnings[0]
    assert "conv1_1" not in warnings[0]
    # two files: a layer only the second sets is no longer missing
    done = run_caffe("train", "-solver", setup["solver"], "-weights",
                     f"{setup['no_fc8']},{setup['good']}")
    assert done.returncode == 0 and "WARNING: -weights" not in done.stderr


def test_a_non_finite_loss_stops_training(setup, tmp_path):
    root = str(setup["folder"] / "voc")
    solver = largefov.write_experiment(
        str(tmp_path), "softmax", data_root=root, list_file=os.path.join(root, "train.txt"),
        batch_size=2, crop=33, width_div=16, num_classes=4, seed=3, iterations=4000,
        snapshot=0, base_lr=1e-3, solver_overrides={"display": 1, "lr_policy": "step",
                                                    "gamma": 10.0, "stepsize": 20})
    done = run_caffe("train", "-solver", solver)
    assert done.returncode == caffe_guard.EXIT_DIVERGED, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the training loss is ") and "nan at iteration" in last
    assert "Iteration 3999" not in done.stderr and "Optimization Done" not in done.stderr
    assert "@ 0x" not in done.stderr   # killed without glog's stack dump


def test_other_commands_and_flags_pass_through(setup):
    assert run_caffe("--version").stdout == subprocess.run(
        [os.path.join(REPO, "build", "caffe", "bin", "caffe"), "--version"],
        capture_output=True, text=True).stdout
    deploy = str(setup["folder"] / "w4" / "deploy.prototxt")
    done = run_caffe("time", "-model", deploy, "-iterations", "1")
    assert done.returncode == 0 and "Average Forward pass" in done.stderr
    assert "error:" not in done.stderr
    # a flag value spelled "train" does not make it a training
    done = run_caffe("time", "-model", deploy, "-iterations", "1", "-stage", "train")
    assert done.returncode == 0 and "Average Forward pass" in done.stderr


def test_parse_command_reads_gflags_forms():
    assert caffe_guard.parse_command(["train", "-solver", "s", "--weights=a,b", "-gpu=0"]) == \
        ("train", {"solver": "s", "weights": "a,b", "gpu": "0"})
    assert caffe_guard.parse_command(["-logtostderr", "train", "--solver", "s"]) == \
        ("train", {"logtostderr": "", "solver": "s"})
    assert caffe_guard.parse_command(["time", "-model", "train"])[0] == "time"
    assert caffe_guard.parse_command(["-stage", "train", "test"])[0] == "test"


def test_scan_counts_values_and_non_finite_ones_per_blob(tmp_path):
    from caffe.proto import caffe_pb2

    model = caffe_pb2.NetParameter()
    layer = model.layer.add()
    layer.name = "a"
    blob = layer.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1, float("nan"), 2, float("inf"), 3, 4])
    blob = layer.blobs.add()
    blob.shape.dim.extend([2])
    blob.double_data.extend([float("-inf"), 5])
    legacy = model.layers.add()
    legacy.name = "b"
    blob = legacy.blobs.add()
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, 3
    blob.data.extend([0, 0, 0])
    path = tmp_path / "m.caffemodel"
    path.write_bytes(model.SerializeToString())
    scanned = netweights.scan_caffemodel(str(path))
    assert scanned["a"] == [netweights.BlobSummary((2, 3), False, 6, 2),
                            netweights.BlobSummary((2,), False, 2, 1)]
    assert scanned["b"] == [netweights.BlobSummary((1, 1, 1, 3), True, 3, 0)]
    mismatches, missing, non_finite = netweights.fit_report(
        str(path), {"a": [(2, 3), (2,)], "b": [(3,)], "c": [(1,)], "relu": []})
    assert mismatches == [] and missing == ["c"]
    assert non_finite == ["layer 'a' holds 3 NaN or inf value(s) of 8"]
    blob.data.extend([0])   # 4 values for a shape of 3
    path.write_bytes(model.SerializeToString())
    with pytest.raises(Exception, match="blob 0 holds 4 values but its shape"):
        netweights.scan_caffemodel(str(path))
