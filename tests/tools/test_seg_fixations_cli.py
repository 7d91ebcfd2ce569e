"""tools/seg_fixations.py: the default run, --help, the outputs, and every user error
(exit 2, ``error: ...`` naming what to fix). Subprocesses run the real script; the
pipeline functions are also called in-process on small zoo nets."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pixelfeedback.nets import architectures, largefov, netspec, registry
from pixelfeedback.nets import weights as netweights

from pixelfeedback import heatmap
from pixelfeedback import pipeline as sf
from tests.conftest import load_script

from tests.conftest import REPO  # noqa: E402
SCRIPT = os.path.join(REPO, "tools", "seg_fixations.py")


def run_cli(args, cwd):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(done, *phrases):
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, caffe):
    """A reduced LargeFOV deploy net (21 classes, input 65) with random weights, a
    mismatched caffemodel (20 classes), and an image; plus the classes it predicts."""
    root = tmp_path_factory.mktemp("model")
    prototxt = str(root / "deploy.prototxt")
    netspec.write_net(largefov.deploy_net(width_div=16, num_classes=21, size=65), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    netweights.fill_random_weights(net, seed=0)
    weights = str(root / "random.caffemodel")
    net.save(weights)
    other = str(root / "other.prototxt")
    netspec.write_net(largefov.deploy_net(width_div=16, num_classes=20, size=65), other)
    other_net = caffe.Net(other, caffe.TEST)
    netweights.fill_random_weights(other_net, seed=0)
    mismatched = str(root / "mismatched.caffemodel")
    other_net.save(mismatched)
    image = (np.random.RandomState(0).rand(50, 60, 3) * 255).astype(np.uint8)
    image_path = str(root / "photo.jpg")
    cv2.imwrite(image_path, image)
    data, _, _ = sf.prepare_input(image, 65, registry.DEEPLAB_MEAN)
    net.blobs["data"].data[0] = data
    net.forward()
    predicted = sorted(set(np.unique(net.blobs["fc8_voc12"].data[0].argmax(0)).tolist()))
    return dict(prototxt=prototxt, weights=weights, mismatched=mismatched, image=image_path,
                predicted=predicted)


def test_default_run_needs_no_arguments(tmp_path):
    done = run_cli([], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    out = tmp_path / "runs" / "fixations" / "demo"
    summary = json.loads((out / "summary.json").read_text())
    classes = summary["classes"]
    assert classes, "the demo must show at least one class"
    lines = done.stdout.strip().splitlines()
    class_lines = [line for line in lines if "score units" in line]
    assert len(class_lines) == len(classes)
    folder = os.path.join('runs', 'fixations', 'demo')
    assert lines[-2:] == [f"figure: {os.path.join(folder, 'demo_fixations.png')}",
                          f"Figure 2.4: {os.path.join(folder, 'demo_figure_2_4.png')}"]
    assert cv2.imread(str(out / "demo_fixations.png")) is not None
    assert summary["figure_2_4"] == "demo_figure_2_4.png"
    assert cv2.imread(str(out / "demo_figure_2_4.png")) is not None
    for record, line in zip(classes, class_lines):
        assert line.startswith(f"{record['class']} ({record['class_id']}): "
                               f"{record['score_units']} score units")
        assert record["class"] != "background" and record["image_points"] > 0
        overlay = cv2.imread(str(out / record["files"]["overlay"]))
        assert overlay is not None and overlay.shape[:2] == tuple(summary["image_size_hw"])
        heat = cv2.imread(str(out / record["files"]["heat"]), cv2.IMREAD_UNCHANGED)
        assert heat.max() == 255 and heat.shape == overlay.shape[:2]
        points, counts = heatmap.read_points_csv(str(out / record["files"]["points"]))
        assert len(points) == record["image_points"] and counts.sum() == record["data_units"]
        assert (points >= 0).all() and (points < summary["image_size_hw"]).all()
        y, x = record["heat_peak_yx"]
        assert heat[y, x] == 255
        # the flow of every class, as a strip and an animation (on by default)
        assert cv2.imread(str(out / record["files"]["flow"])) is not None
        assert (out / record["files"]["flow_gif"]).read_bytes()[:6] == b"GIF89a"
        assert record["dead_units_by_layer"] == {} or sum(
            record["dead_units_by_layer"].values()) > 0


def test_help_explains_every_option(tmp_path):
    done = run_cli(["--help"], cwd=str(tmp_path))
    assert done.returncode == 0
    for option in ("--model", "--weights", "--image", "--score-blob", "--shift", "--k",
                   "--classes", "--size", "--mean", "--sigma", "--radius-fraction",
                   "--min-fraction", "--alpha", "--gpu", "--out"):
        assert option in done.stdout
    for default in ("default partial", "default resolution", "default 0.1", "default 0.05",
                    "runs/fixations/<image stem>", "weights/fetch.py"):
        assert default in " ".join(done.stdout.split()), default


def test_missing_image(tmp_path, small_model):
    done = run_cli(["--model", small_model["prototxt"], "--weights", small_model["weights"],
                    "--image", str(tmp_path / "nope.jpg")], cwd=str(tmp_path))
    assert_user_error(done, "image not found", "nope.jpg")


def test_corrupt_image(tmp_path, small_model):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not a jpeg")
    done = run_cli(["--model", small_model["prototxt"], "--weights", small_model["weights"],
                    "--image", str(broken)], cwd=str(tmp_path))
    assert_user_error(done, "cannot read image", "broken.jpg")


def test_unknown_model_lists_the_known_ones(tmp_path, small_model):
    done = run_cli(["--model", "resnet-9000", "--image", small_model["image"]], cwd=str(tmp_path))
    assert_user_error(done, "unknown model 'resnet-9000'", *registry.MODELS)


def test_missing_published_weights_say_how_to_fetch(tmp_path, small_model, monkeypatch, capsys):
    monkeypatch.setattr(registry, "weights_path", lambda name: str(tmp_path / f"{name}.caffemodel"))
    code = load_script(os.path.join("tools", "seg_fixations.py")).main(["--model", "fcn8s", "--image", small_model["image"]])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "python weights/fetch.py fcn8s" in err


def test_mismatched_weights_are_caught_before_caffe(tmp_path, small_model):
    done = run_cli(["--model", small_model["prototxt"], "--weights", small_model["mismatched"],
                    "--image", small_model["image"]], cwd=str(tmp_path))
    assert_user_error(done, "fc8_voc12", "mismatched.caffemodel")


def test_class_not_in_prediction(tmp_path, small_model):
    from python_layers.voc_io import VOC_CLASSES

    absent = [c for c in range(1, 21) if c not in small_model["predicted"]]
    done = run_cli(["--model", small_model["prototxt"], "--weights", small_model["weights"],
                    "--image", small_model["image"], "--classes", VOC_CLASSES[absent[0]]],
                   cwd=str(tmp_path))
    assert_user_error(done, f"class {VOC_CLASSES[absent[0]]} is not in the prediction",
                      "predicted:")


def test_options_are_checked(tmp_path, small_model):
    base = ["--model", small_model["prototxt"], "--weights", small_model["weights"],
            "--image", small_model["image"]]
    assert_user_error(run_cli(base + ["--k", "many"], cwd=str(tmp_path)), "K strategy")
    done = run_cli(base + ["--min-fraction", "1.5"], cwd=str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr   # argparse's usage error
    assert "--min-fraction: must be a finite number >= 0 and < 1, got '1.5'" in done.stderr
    assert_user_error(run_cli(base + ["--classes", "unicorn"], cwd=str(tmp_path)),
                      "unknown class 'unicorn'")
    assert_user_error(run_cli(["--model", small_model["prototxt"], "--image",
                               small_model["image"]], cwd=str(tmp_path)), "--weights")


EXPLICIT = dict(shift="full", k="2", sigma=2.0, radius_fraction=0.2, min_fraction=0.2)
DEFAULTS = dict(shift="partial", k="resolution", sigma=None, radius_fraction=0.1,
                min_fraction=0.05)


def expected_fixations(small_model, class_id, shift, k, sigma, radius_fraction, min_fraction):
    """(points, counts, heat map) of one class worked out with a net, a BackTracker and a
    heat map of our own (not the tool's pipeline)."""
    import caffe
    from pixelfeedback.fixations import BackTracker, NetGraph, run_forward
    from python_layers import voc_io

    net = caffe.Net(small_model["prototxt"], small_model["weights"], caffe.TEST)
    image = voc_io.read_image(small_model["image"])
    data, _, _ = sf.prepare_input(image, 65, registry.DEEPLAB_MEAN)
    run_forward(net, data[None])
    region = sf.image_region(net.blobs["fc8_voc12"].data.shape, (65, 65), image.shape[:2])
    tracker = BackTracker(net, NetGraph.from_prototxt(small_model["prototxt"]), shift=shift,
                          k=k)
    traced = tracker.trace("fc8_voc12", classes=[class_id], skip_background=False,
                           seed_region=region)[class_id]
    inside = (traced.points[:, 0] < 50) & (traced.points[:, 1] < 60)
    points, counts = traced.points[inside], traced.counts[inside]
    heat = heatmap.fixation_heatmap(points, image.shape, counts, sigma=sigma,
                                    radius_fraction=radius_fraction, min_fraction=min_fraction)
    return points, counts, heat


def test_explicit_model_run_in_process(tmp_path, small_model, capsys):
    """A prototxt + weights run with chosen classes and tracker and heat-map options,
    in-process: the points and heat map are those of a tracker and heat map made here with
    exactly these options, and each option changes them (so none can be dropped on the
    way)."""
    chosen = [c for c in small_model["predicted"] if c][:1]
    out = tmp_path / "out"
    code = load_script(os.path.join("tools", "seg_fixations.py")).main([
        "--model", small_model["prototxt"], "--weights", small_model["weights"],
        "--image", small_model["image"], "--classes", str(chosen[0]),
        "--shift", EXPLICIT["shift"], "--k", EXPLICIT["k"], "--sigma", "2",
        "--radius-fraction", "0.2", "--min-fraction", "0.2", "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len([line for line in lines if "score units" in line]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert [c["class_id"] for c in summary["classes"]] == chosen
    assert summary["image_size_hw"] == [50, 60] and summary["input_size"] == 65
    assert (summary["shift"], summary["k"]) == ("full", "2")
    assert summary["heatmap"] == dict(sigma=2.0, radius_fraction=0.2, min_fraction=0.2,
                                      outlier_removal=True)
    record = summary["classes"][0]
    points, counts, heat = expected_fixations(small_model, chosen[0], **EXPLICIT)
    got_points, got_counts = heatmap.read_points_csv(str(out / record["files"]["points"]))
    np.testing.assert_array_equal(got_points, points)
    np.testing.assert_array_equal(got_counts, counts)
    got_heat = cv2.imread(str(out / record["files"]["heat"]), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(got_heat, np.rint(heat.heat * 255).astype(np.uint8))
    assert record["kept_points"] == int(heat.inliers.sum()) > 0
    assert not heat.inliers.all()      # the outlier removal removed some, kept some
    # Each option on its own changes what it controls (the rest at these values).
    for option, default in DEFAULTS.items():
        other_points, _, other_heat = expected_fixations(
            small_model, chosen[0], **dict(EXPLICIT, **{option: default}))
        if option in ("shift", "k"):
            assert not np.array_equal(other_points, points), option
        elif option == "sigma":
            assert not np.array_equal(other_heat.heat, heat.heat), option
        else:
            assert not np.array_equal(other_heat.inliers, heat.inliers), option


def test_prepare_input_pads_resizes_and_reshapes():
    image = np.full((40, 30, 3), 200, np.uint8)
    data, used, note = sf.prepare_input(image, 65, (100, 110, 120))
    assert data.shape == (3, 65, 65) and note is None and used.shape == image.shape
    assert data[0, 0, 0] == 100 and data[2, 0, 0] == 80 and (data[:, 40:, :] == 0).all()
    big = np.zeros((200, 100, 3), np.uint8)
    data, used, note = sf.prepare_input(big, 65, (0, 0, 0))
    assert used.shape[:2] == (65, 32) and "resized" in note
    data, used, _ = sf.prepare_input(image, 0, (0, 0, 0))
    assert data.shape == (3, 40, 30)
    data, used, note = sf.prepare_input(image, 32, (0, 0, 0), kind="classification")
    assert data.shape == (3, 32, 32) and used.shape[:2] == (32, 32) and "resized" in note


def test_image_region_of_the_score_blob():
    region = sf.image_region((1, 21, 65, 65), (513, 513), (377, 500))
    assert region.shape == (65, 65)
    assert region[:, 0].sum() == 48 and region[0].sum() == 63  # 47 * 8 < 377, 62 * 8 < 500
    assert sf.image_region((1, 21, 64, 64), (64, 64), (40, 50)).sum() == 40 * 50


def test_padding_points_are_dropped(tmp_path, caffe):
    """FCN-AlexNet (Deconvolution, Crop) through the pipeline: seeds only over the image,
    which is smaller than the padded input, all points inside it, scores left unchanged."""
    prototxt = str(tmp_path / "fcn_alexnet.prototxt")
    netspec.write_net(architectures.fcn_alexnet(width_div=16, size=64), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    netweights.fill_random_weights(net, seed=4)
    image = (np.random.RandomState(1).rand(40, 50, 3) * 255).astype(np.uint8)
    data, image, _ = sf.prepare_input(image, 64, registry.FCN_MEAN)
    tracker = sf.make_tracker(net, prototxt, "partial", "1")
    results = sf.run_fixations(net, tracker, data, image, "score")
    after = net.blobs["score"].data.copy()
    net.forward()
    np.testing.assert_array_equal(net.blobs["score"].data, after)  # padding scores restored
    argmax = after[0].argmax(0)
    assert [r.class_id for r in results] == sorted(set(np.unique(argmax[:40, :50])) - {0})
    for result in results:
        assert result.score_units == (argmax[:40, :50] == result.class_id).sum()
        assert (result.points[:, 0] < 40).all() and (result.points[:, 1] < 50).all()
        assert result.heat.heat.shape == (40, 50)


def test_classifier_traces_its_top_class(tmp_path, caffe):
    prototxt = str(tmp_path / "vgg16.prototxt")
    netspec.write_net(architectures.vgg16(width_div=16, size=32), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    netweights.fill_random_weights(net, seed=5)
    image = (np.random.RandomState(2).rand(48, 40, 3) * 255).astype(np.uint8)
    data, image, _ = sf.prepare_input(image, 32, registry.DEEPLAB_MEAN, "classification")
    tracker = sf.make_tracker(net, prototxt, "partial", "resolution")
    results = sf.run_fixations(net, tracker, data, image, "fc8", kind="classification")
    assert [r.class_id for r in results] == [int(net.blobs["fc8"].data[0].argmax())]
    assert results[0].name == f"class_{results[0].class_id}" and len(results[0].points)
