"""Inputs checked and nothing to guess (issue 12): truncated images, NaN/inf in the blobs
the tracer reads, numeric options with their ranges, the score blob found from the net,
class names by default, and hints that name real flags."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pixelfeedback import heatmap, pipeline, synthetic
from pixelfeedback import experiments as ex
from pixelfeedback.fixations import BackTracker, NetGraph
from pixelfeedback.nets import architectures, largefov, netspec
from pixelfeedback.nets.weights import fill_random_weights
from python_layers import ToolkitError, voc_io
from tests.conftest import random_largefov_weights

from tests.conftest import REPO  # noqa: E402
SCRIPT = os.path.join(REPO, "tools", "seg_fixations.py")


def run_cli(args, cwd, script=SCRIPT):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, script] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(done, *phrases):
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def photo(path, height=160, width=200, seed=0):
    """A JPEG written by OpenCV (smooth noise; the default size is well over 6 kB)."""
    rs = np.random.RandomState(seed)
    image = cv2.GaussianBlur((rs.rand(height, width, 3) * 255).astype(np.uint8), (5, 5), 2)
    cv2.imwrite(str(path), image)
    return str(path)


def first_bytes(source, target, count=6000):
    with open(source, "rb") as f:
        data = f.read(count)
    with open(target, "wb") as f:
        f.write(data)
    return str(target)


# ----------------------------------------------------------------------------- images

def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    whole = photo(tmp_path / "whole.jpg")
    assert os.path.getsize(whole) > 12_000
    cut = first_bytes(whole, tmp_path / "cut.jpg")
    assert cv2.imread(cut) is not None          # OpenCV alone would take it, partly grey
    assert voc_io.read_image(whole).shape == (160, 200, 3)
    with pytest.raises(ToolkitError, match="cut.jpg.*truncated"):
        voc_io.read_image(cut)
    png = tmp_path / "whole.png"
    cv2.imwrite(str(png), cv2.imread(whole))
    with pytest.raises(ToolkitError, match="cut.png"):
        voc_io.read_image(first_bytes(png, tmp_path / "cut.png", 3000))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, caffe):
    """A reduced LargeFOV deploy net (21 classes, input 65) with random weights."""
    root = tmp_path_factory.mktemp("model")
    weights = random_largefov_weights(str(root), caffe, width_div=16, num_classes=21, size=65)
    return dict(prototxt=str(root / "deploy.prototxt"), weights=weights, root=root)


def test_seg_fixations_refuses_a_truncated_image(tmp_path, small_model):
    whole = photo(tmp_path / "photo.jpg", 60, 64)
    cut = first_bytes(whole, tmp_path / "cut.jpg", os.path.getsize(whole) // 2)
    done = run_cli(["--model", small_model["prototxt"], "--weights", small_model["weights"],
                    "--image", cut, "--out", str(tmp_path / "out")], cwd=str(tmp_path))
    assert_user_error(done, "cut.jpg", "truncated")


@pytest.fixture(scope="module")
def experiment_data(tmp_path_factory):
    """A synthetic data set of three 65 px val images, the second one truncated."""
    info = synthetic.generate(str(tmp_path_factory.mktemp("synthetic")), n_train=1, n_val=3,
                              size=65)
    pairs = voc_io.read_list(info["val_list"], root=info["root"])
    broken = pairs[1][0]
    with open(broken, "rb") as f:
        data = f.read()
    with open(broken, "wb") as f:
        f.write(data[:len(data) // 2])
    return info["root"], info["val_list"], broken


def test_experiments_refuse_or_skip_and_count_a_truncated_image(caffe, tmp_path,
                                                                experiment_data):
    root, list_file, broken = experiment_data
    weights = random_largefov_weights(str(tmp_path), caffe, width_div=32, num_classes=5,
                                      size=65, seed=1)
    deploy = str(tmp_path / "deploy.prototxt")
    with pytest.raises(ToolkitError, match=f"{os.path.basename(broken)}.*--skip-bad-images"):
        ex.fixation_location(deploy, weights, root, list_file, str(tmp_path / "a"),
                             progress=False)
    result = ex.fixation_location(deploy, weights, root, list_file, str(tmp_path / "b"),
                                  progress=False, skip_bad_images=True)
    assert result["images"] == 2 and result["images_skipped"] == 1
    assert result["skipped_images"] == [broken]
    lines = ex.summary_lines(result)
    assert any("1 image(s) skipped as unreadable" in line for line in lines)


# ----------------------------------------------------------------------------- NaN and inf

NAN_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "mid" type: "Convolution" bottom: "data" top: "mid"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "score" type: "Convolution" bottom: "mid" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 } }
"""


@pytest.fixture()
def nan_net(caffe, tmp_path):
    path = tmp_path / "nan.prototxt"
    path.write_text(NAN_NET)
    net = caffe.Net(str(path), caffe.TEST)
    fill_random_weights(net, seed=2)
    net.blobs["data"].data[...] = np.random.RandomState(0).rand(1, 2, 3, 3)
    net.forward()
    return net, NetGraph.from_prototxt(str(path))


def test_nan_or_inf_in_the_scores_is_an_error_naming_the_blob(nan_net):
    net, graph = nan_net
    data = net.blobs["data"].data[0].copy()
    data[0, 1, 1] = np.nan
    image = np.zeros((3, 3, 3), np.uint8)
    tracker = BackTracker(net, graph)
    with pytest.raises(ToolkitError, match="score blob 'score' holds NaN or inf"):
        pipeline.run_fixations(net, tracker, data, image, "score")
    data[0, 1, 1] = np.inf
    with pytest.raises(ToolkitError, match="score blob 'score' holds NaN or inf"):
        pipeline.run_fixations(net, tracker, data, image, "score")


def test_nan_in_a_blob_or_weights_the_tracer_reads_names_blob_and_layer(nan_net):
    # Every score position seeds a class (background included), so the tracer reads every
    # position of 'mid' and every traced 'mid' unit reads its weights.
    net, graph = nan_net
    net.blobs["mid"].data[0, 1, 2, 2] = np.inf      # scores stay finite: only 'mid' is bad
    with pytest.raises(ToolkitError, match="blob 'mid' read by layer 'score' holds NaN"):
        BackTracker(net, graph).trace("score", skip_background=False)
    net.forward()
    net.params["mid"][0].data[:, 0] = np.nan         # after the forward: scores finite
    for ranking in (True, False):                     # float32 first, or float64 only
        tracker = BackTracker(net, graph)
        tracker.float32_ranking = ranking
        with pytest.raises(ToolkitError, match="layer 'mid' has NaN or inf in its weights"):
            tracker.trace("score", skip_background=False)


# ----------------------------------------------------------------------------- options

@pytest.mark.parametrize("flag,value,phrase", [
    ("--sigma", "nan", ">= 0"), ("--sigma", "-1", ">= 0"),
    ("--radius-fraction", "inf", "> 0"), ("--radius-fraction", "0", "> 0"),
    ("--min-fraction", "1", "< 1"), ("--min-fraction", "nan", "< 1"),
    ("--alpha", "1.5", "<= 1"), ("--max-units", "0", ">= 1")])
def test_numeric_options_say_their_range(tmp_path, flag, value, phrase):
    done = run_cli([flag, value], cwd=str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert flag in done.stderr and phrase in done.stderr and "finite" in done.stderr or \
        flag == "--max-units" and "integer >= 1" in done.stderr, done.stderr


def test_heatmap_api_checks_its_options_too():
    points = np.array([[1, 1], [2, 2]])
    for options, flag in ((dict(sigma=float("nan")), "--sigma"),
                          (dict(radius_fraction=float("inf")), "--radius-fraction"),
                          (dict(min_fraction=1.0), "--min-fraction")):
        with pytest.raises(ToolkitError, match=flag):
            heatmap.fixation_heatmap(points, (5, 5), **options)


def test_budget_error_for_the_seeds_names_the_flag_not_a_layer(nan_net):
    net, graph = nan_net
    scores = net.blobs["score"].data[0]
    most = int(np.bincount(scores.argmax(0).ravel()).max())
    with pytest.raises(ToolkitError) as caught:
        BackTracker(net, graph, max_units=most - 1).trace("score", skip_background=False)
    assert "--max-units" in str(caught.value) and "(seeds)" not in str(caught.value)
    assert "seeds" in str(caught.value)


# ----------------------------------------------------------------------------- defaults

def test_score_blob_is_found_from_the_net(tmp_path):
    prototxt = os.path.join(REPO, "prototxt")
    assert pipeline.find_score_blob(os.path.join(prototxt,
                                                 "deploy_deeplabv2_resnet101.prototxt")) == \
        "fc1_voc12"
    assert pipeline.find_score_blob(os.path.join(prototxt, "deploy.prototxt")) == "fc8_voc12"
    assert pipeline.find_score_blob(os.path.join(prototxt, "deploy_fcn8s.prototxt")) == "score"
    assert pipeline.find_score_blob(os.path.join(prototxt, "deploy_vgg16.prototxt")) == "fc8"
    # the test net ends with the x8 Zoom and an arg-max-free output: the zoom's input
    test = tmp_path / "test.prototxt"
    netspec.write_net(largefov.test_net(width_div=32, num_classes=5, size=65), str(test))
    assert pipeline.find_score_blob(str(test)) == "fc8_voc12"
    two = tmp_path / "two.prototxt"
    two.write_text(NAN_NET + 'layer { name: "other" type: "Convolution" bottom: "mid" '
                   'top: "other" convolution_param { num_output: 3 kernel_size: 1 } }\n')
    with pytest.raises(ToolkitError, match="candidates: score, other.*--score-blob"):
        pipeline.find_score_blob(str(two))


def test_resnet_prototxt_with_no_other_flags_writes_every_figure(caffe, tmp_path):
    # The "done when" of issue 12 on a reduced DeepLab v2 ResNet-101 (21 outputs): no
    # --score-blob, no --class-names: VOC's names, Figure 2.4, and the flow per class.
    prototxt = str(tmp_path / "resnet.prototxt")
    netspec.write_net(architectures.deeplabv2_resnet101(width_div=16, size=33), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    fill_random_weights(net, seed=3)
    weights = str(tmp_path / "resnet.caffemodel")
    net.save(weights)
    image = photo(tmp_path / "photo.jpg", 30, 32)
    done = run_cli(["--model", prototxt, "--weights", weights, "--image", image],
                   cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "fixations" / "photo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score_blob"] == "fc1_voc12" and summary["classes"]
    assert cv2.imread(str(out / summary["figure_2_4"])) is not None
    for record in summary["classes"]:
        assert record["class"] == voc_io.VOC_CLASSES[record["class_id"]]
        assert (out / record["files"]["flow"]).is_file()
        assert (out / record["files"]["flow_gif"]).is_file()
    assert "class_" not in done.stdout


def test_demo_weights_get_the_demo_class_names(tmp_path):
    from pixelfeedback.demo.model import DEMO_WEIGHTS, demo_model_files

    if not os.path.isfile(DEMO_WEIGHTS):
        pytest.skip("the committed demo model (weights/demo/) is missing")
    prototxt, _ = demo_model_files(str(tmp_path))
    image = photo(tmp_path / "photo.jpg", 120, 129)
    done = run_cli(["--model", prototxt, "--weights", DEMO_WEIGHTS, "--image", image,
                    "--include-background", "--no-flow", "--out", str(tmp_path / "out")],
                   cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["classes"]
    for record in summary["classes"]:
        assert record["class"] == synthetic.CLASS_NAMES[record["class_id"]]


def test_help_says_what_the_defaults_are(tmp_path):
    done = run_cli(["--help"], cwd=str(tmp_path))
    text = " ".join(done.stdout.split())
    assert "random weights" not in text
    assert "found from the net" in text and "--no-flow" in text
    assert "the demo's for the demo model's weights" in text
