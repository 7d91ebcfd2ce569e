"""Evaluation (pixelfeedback/evaluation.py, tools/evaluate.py) on a reduced-width DeepLab test net (real Caffe) and tiny VOC data."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from python_layers import ToolkitError, voc_io
from tests.conftest import REPO, write_tiny_voc
from pixelfeedback import evaluation, files, metrics
from pixelfeedback.nets import largefov

NUM_CLASSES = 4
SIZE = 65  # 8k+1; the tiny images are 53x45


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, caffe):
    """(test prototxt, caffemodel) of test_net(width_div=32, 4 classes, 65) with random
    weights large enough that every class gets predicted somewhere."""
    folder = tmp_path_factory.mktemp("model")
    prototxt = str(folder / "test.prototxt")
    with open(prototxt, "w") as f:
        f.write(str(largefov.test_net(width_div=32, num_classes=NUM_CLASSES, size=SIZE)))
    net = caffe.Net(prototxt, caffe.TEST)
    rng = np.random.RandomState(1)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.randn(*blob.data.shape) * 0.3
    weights = str(folder / "tiny.caffemodel")
    net.save(weights)
    return prototxt, weights


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    return root, write_tiny_voc(root, n_images=5, num_classes=NUM_CLASSES, list_name="val.txt")


def run(tiny_model, voc, out, **kwargs):
    root, list_path = voc
    options = dict(num_classes=NUM_CLASSES, size=SIZE, progress=False)
    options.update(kwargs)
    return evaluation.evaluate(tiny_model, list_path, root, str(out), **options)


def confusion_from_pngs(out, voc):
    """The confusion matrix recomputed from the written prediction PNGs and the labels."""
    root, list_path = voc
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for image_path, label_path in voc_io.read_list(list_path, root=root):
        stem = os.path.splitext(os.path.basename(image_path))[0]
        pred = voc_io.read_label(os.path.join(out, "predictions", stem + ".png"))
        confusion += metrics.confusion_matrix(pred, voc_io.read_label(label_path), NUM_CLASSES)
    return confusion


def test_outputs_and_numbers_match_the_written_pngs(tiny_model, voc, tmp_path):
    out = tmp_path / "eval"
    result = run(tiny_model, voc, out)
    for name in ("metrics.json", "class_iou.csv", "summary.md", "settings.json"):
        assert (out / name).is_file(), name
    with open(out / "metrics.json") as f:
        saved = json.load(f)
    assert saved["mean_iou"] == pytest.approx(result["mean_iou"])
    assert saved["num_images"] == 5 and saved["images_run"] == 5
    assert saved["warnings"] == []  # a tiny unknown model: nothing to warn about

    pngs = sorted(os.listdir(out / "predictions"))
    assert pngs == [f"img_{i:04d}.png" for i in range(5)]
    with Image.open(out / "predictions" / pngs[0]) as img:
        assert img.mode == "P"
        assert np.array(img.getpalette()[:12]).reshape(4, 3).tolist() == \
            voc_io.voc_palette(4).tolist()
        assert img.size == (53, 45)  # cropped back to the image size

    confusion = confusion_from_pngs(out, voc)
    np.testing.assert_array_equal(confusion, np.array(saved["confusion"]))
    expected = metrics.scores(confusion)
    assert saved["mean_iou"] == pytest.approx(expected["mean_iou"])
    assert saved["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    np.testing.assert_allclose(list(saved["class_iou"].values()), expected["class_iou"])
    assert len(set(np.flatnonzero(confusion.sum(axis=0)))) > 1  # not a constant prediction

    lines = (out / "class_iou.csv").read_text().splitlines()
    assert lines[0] == "class,iou" and len(lines) == 1 + NUM_CLASSES
    assert lines[1].startswith("class_0,")
    assert "mean IoU" in (out / "summary.md").read_text()


def test_prediction_follows_deeplab_test_protocol(tiny_model, voc, tmp_path, caffe):
    """Pad with the mean at the bottom/right, forward, crop the zoomed scores, argmax."""
    out = tmp_path / "eval"
    run(tiny_model, voc, out)
    root, list_path = voc
    image_path, _ = voc_io.read_list(list_path, root=root)[0]
    image = voc_io.read_image(image_path).astype(np.float32)
    h, w = image.shape[:2]
    padded = np.zeros((SIZE, SIZE, 3), np.float32)  # mean-subtracted pad = 0
    padded[:h, :w] = image - np.array([104.008, 116.669, 122.675], np.float32)
    net = caffe.Net(tiny_model[0], tiny_model[1], caffe.TEST)
    net.blobs["data"].data[0] = padded.transpose(2, 0, 1)
    net.forward()
    expected = net.blobs["fc8_interp"].data[0][:, :h, :w].argmax(axis=0)
    got = voc_io.read_label(out / "predictions" / "img_0000.png")
    np.testing.assert_array_equal(got, expected)


def test_resume_after_deleting_and_after_an_interruption(tiny_model, voc, tmp_path):
    full = run(tiny_model, voc, tmp_path / "full")

    # Delete two predictions: only those two run again, the numbers stay.
    os.unlink(tmp_path / "full" / "predictions" / "img_0001.png")
    os.unlink(tmp_path / "full" / "predictions" / "img_0003.png")
    seen = []
    again = run(tiny_model, voc, tmp_path / "full",
                on_image=lambda i, image_id, reused: seen.append((image_id, reused)))
    assert [s for s, reused in seen if not reused] == ["img_0001", "img_0003"]
    assert (again["images_run"], again["images_reused"]) == (2, 3)
    assert again["confusion"] == full["confusion"]

    # Interrupt after the second image: no metrics yet, two predictions kept.
    def stop_after_two(index, image_id, reused):
        if index == 1:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model, voc, out, on_image=stop_after_two)
    assert not (out / "metrics.json").exists()
    assert sorted(os.listdir(out / "predictions")) == ["img_0000.png", "img_0001.png"]
    resumed = run(tiny_model, voc, out)
    assert (resumed["images_run"], resumed["images_reused"]) == (3, 2)
    assert resumed["confusion"] == full["confusion"]
    assert resumed["mean_iou"] == pytest.approx(full["mean_iou"])


def test_resume_refuses_predictions_of_another_run(tiny_model, voc, tmp_path, caffe):
    out = tmp_path / "eval"
    run(tiny_model, voc, out)
    # The same weights under another name resume; other weights do not.
    renamed = str(tmp_path / "renamed.caffemodel")
    shutil.copyfile(tiny_model[1], renamed)
    assert run((tiny_model[0], renamed), voc, out)["images_run"] == 0
    net = caffe.Net(tiny_model[0], tiny_model[1], caffe.TEST)
    net.params["fc8_voc12"][1].data[0] += 1.0
    other = str(tmp_path / "other.caffemodel")
    net.save(other)
    with pytest.raises(ToolkitError, match=r"holds an evaluation of other settings "
                       r"\(parameters_sha256: '[0-9a-f]+' there"):
        run((tiny_model[0], other), voc, out)
    with pytest.raises(ToolkitError, match=r"\(size: 65 there, 73 now\); pass another --out, or --restart"):
        run(tiny_model, voc, out, size=73)
    result = run((tiny_model[0], other), voc, out, restart=True)
    assert result["images_run"] == 5


def test_warns_when_weights_were_trained_on_the_split(tiny_model, voc, tmp_path, capsys):
    # The list is val.txt -> voc2012_val; 'largefov' (train2_iter_8000) has seen it.
    result = run(tiny_model, voc, tmp_path / "eval", model_name="largefov")
    assert len(result["warnings"]) == 1 and "voc2012_val" in result["warnings"][0]
    assert "WARNING" in capsys.readouterr().err
    with open(tmp_path / "eval" / "metrics.json") as f:
        assert json.load(f)["warnings"] == result["warnings"]
    assert "Warning" in (tmp_path / "eval" / "summary.md").read_text()
    # The ImageNet initialisation has seen no VOC split; a train list is no val split.
    assert run(tiny_model, voc, tmp_path / "e2", model_name="largefov-init")["warnings"] == []
    assert evaluation.contamination_warning("largefov", "voc2012_train") is not None
    assert evaluation.contamination_warning("fcn8s", "voc2012_val") is not None  # SBD train
    assert evaluation.contamination_warning("deeplabv2-resnet101", "voc2012_val") is None


def test_clear_errors(tiny_model, voc, tmp_path, caffe):
    root, list_path = voc
    with pytest.raises(ToolkitError, match="list file not found"):
        evaluation.evaluate(tiny_model, str(tmp_path / "nope.txt"), root, str(tmp_path / "o"),
                          num_classes=NUM_CLASSES, size=SIZE, progress=False)
    with pytest.raises(ToolkitError, match=r"img_0000\.jpg is 53x45, larger than .*--size"):
        run(tiny_model, voc, tmp_path / "o", size=33)
    with pytest.raises(ToolkitError, match="weights not found.*weights/fetch.py"):
        run((tiny_model[0], str(tmp_path / "missing.caffemodel")), voc, tmp_path / "o")
    with pytest.raises(ToolkitError, match="net prototxt not found"):
        run((str(tmp_path / "missing.prototxt"), tiny_model[1]), voc, tmp_path / "o")
    with pytest.raises(ToolkitError, match="4 channels but --num-classes is 5"):
        run(tiny_model, voc, tmp_path / "o", num_classes=5)
    # Weights of another width: netweights.load_weights names the layer before Caffe aborts.
    wide = str(tmp_path / "wide.prototxt")
    with open(wide, "w") as f:
        f.write(str(largefov.test_net(width_div=16, num_classes=NUM_CLASSES, size=SIZE)))
    with pytest.raises(ToolkitError, match="conv1_1"):
        run((wide, tiny_model[1]), voc, tmp_path / "o")
    # Missing image file named up front.
    os.rename(os.path.join(root, "JPEGImages", "img_0004.jpg"), str(tmp_path / "moved.jpg"))
    try:
        with pytest.raises(ToolkitError, match="img_0004.jpg"):
            run(tiny_model, voc, tmp_path / "o2")
    finally:
        os.rename(str(tmp_path / "moved.jpg"), os.path.join(root, "JPEGImages", "img_0004.jpg"))


def test_list_without_labels_writes_predictions_only(tiny_model, voc, tmp_path):
    root, list_path = voc
    test_list = str(tmp_path / "test.txt")
    with open(list_path) as src, open(test_list, "w") as dst:
        dst.writelines(line.split()[0] + "\n" for line in src)
    result = evaluation.evaluate(tiny_model, test_list, root, str(tmp_path / "eval"),
                               num_classes=NUM_CLASSES, size=SIZE, progress=False)
    assert "mean_iou" not in result and result["num_images"] == 5
    assert len(os.listdir(tmp_path / "eval" / "predictions")) == 5
    assert not (tmp_path / "eval" / "class_iou.csv").exists()


def test_command_line(tiny_model, voc, tmp_path):
    """The thin CLI: infers 'largefov' from the file name, warns, prints the table."""
    root, list_path = voc
    weights = str(tmp_path / "train2_iter_8000.caffemodel")
    shutil.copyfile(tiny_model[1], weights)
    command = [sys.executable, os.path.join(REPO, "tools", "evaluate.py"),
               "--model", tiny_model[0], "--weights", weights, "--data-root", root,
               "--list", list_path, "--out", str(tmp_path / "eval"), "--size", str(SIZE),
               "--num-classes", str(NUM_CLASSES), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "mean IoU:" in done.stdout and "pixel accuracy:" in done.stdout
    assert "class_3" in done.stdout
    assert "WARNING" in done.stderr and "largefov" in done.stderr

    done = subprocess.run(command[:-1] + ["--size", "33"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith("error: image ") and "--size" in done.stderr
    assert "Traceback" not in done.stderr

    helped = subprocess.run([sys.executable, os.path.join(REPO, "tools", "evaluate.py"),
                             "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--data-root" in helped.stdout and "--restart" in helped.stdout


def test_duplicate_image_names_are_an_error(tiny_model, voc, tmp_path):
    root, list_path = voc
    doubled = str(tmp_path / "doubled.txt")
    with open(list_path) as src, open(doubled, "w") as dst:
        lines = src.readlines()
        dst.writelines(lines + lines[:1])
    with pytest.raises(ToolkitError, match="'img_0000' more than once"):
        evaluation.evaluate(tiny_model, doubled, root, str(tmp_path / "eval"),
                          num_classes=NUM_CLASSES, size=SIZE, progress=False)


def test_prediction_pngs_show_the_absolute_voc_colours(tiny_model, voc, tmp_path):
    """The written predictions against VOC's colours written by hand (tests/python_layers/test_voc_io.py),
    not against voc_io.voc_palette itself, so a wrong palette fails instead of agreeing
    with itself."""
    from tests.python_layers.test_voc_io import VOC_COLOURS

    out = tmp_path / "eval"
    run(tiny_model, voc, out)
    shown = set()
    for name in sorted(os.listdir(out / "predictions")):
        with Image.open(out / "predictions" / name) as img:
            assert img.mode == "P"
            palette = np.array(img.getpalette()[:768]).reshape(-1, 3)
            rgb = np.array(img.convert("RGB"))
            indices = np.array(img)
        for index, colour in VOC_COLOURS.items():
            assert tuple(palette[index]) == colour, (name, index)
        for index in np.unique(indices):
            assert np.all(rgb[indices == index] == VOC_COLOURS[int(index)]), (name, index)
            shown.add(int(index))
    assert len(shown) >= 2, shown  # more than the background's black is checked


def truncated_copy(voc, tmp_path, index=2):
    """A copy of the tiny VOC set whose image ``index`` keeps only the first half of its
    bytes (a partial download: OpenCV would decode it, the missing part grey)."""
    root, list_path = voc
    copy = str(tmp_path / "voc_copy")
    shutil.copytree(root, copy)
    name = os.path.join(copy, "JPEGImages", f"img_{index:04d}.jpg")
    with open(name, "rb") as f:
        data = f.read()
    with open(name, "wb") as f:
        f.write(data[:len(data) // 2])
    return copy, os.path.join(copy, os.path.basename(list_path)), name


def test_truncated_image_is_an_error_naming_it_or_skipped_and_counted(tiny_model, voc,
                                                                        tmp_path):
    root, list_path, broken = truncated_copy(voc, tmp_path)
    with pytest.raises(ToolkitError, match="img_0002.jpg.*truncated.*--skip-bad-images"):
        evaluation.evaluate(tiny_model, list_path, root, str(tmp_path / "eval"),
                            num_classes=NUM_CLASSES, size=SIZE, progress=False)
    result = evaluation.evaluate(tiny_model, list_path, root, str(tmp_path / "skip"),
                                 num_classes=NUM_CLASSES, size=SIZE, progress=False,
                                 skip_bad_images=True)
    assert result["images_skipped"] == 1 and result["skipped_images"] == [broken]
    assert result["images_run"] == 4
    assert not (tmp_path / "skip" / "predictions" / "img_0002.png").exists()
    # The scores are those of the four readable images alone.
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for image_path, label_path in voc_io.read_list(list_path, root=root):
        if image_path == broken:
            continue
        stem = os.path.splitext(os.path.basename(image_path))[0]
        pred = voc_io.read_label(str(tmp_path / "skip" / "predictions" / (stem + ".png")))
        confusion += metrics.confusion_matrix(pred, voc_io.read_label(label_path), NUM_CLASSES)
    assert result["mean_iou"] == pytest.approx(metrics.scores(confusion)["mean_iou"])


def test_command_line_skips_bad_images(tiny_model, voc, tmp_path):
    root, list_path, _ = truncated_copy(voc, tmp_path)
    prototxt, weights = tiny_model
    base = [sys.executable, os.path.join(REPO, "tools", "evaluate.py"), "--model", prototxt,
            "--weights", weights, "--data-root", root, "--list", list_path,
            "--num-classes", str(NUM_CLASSES), "--size", str(SIZE), "--no-progress"]
    env = dict(os.environ, GLOG_minloglevel="2")
    done = subprocess.run(base + ["--out", str(tmp_path / "a")], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "img_0002.jpg" in done.stderr
    assert "--skip-bad-images" in done.stderr
    done = subprocess.run(base + ["--out", str(tmp_path / "b"), "--skip-bad-images"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "1 skipped as unreadable" in done.stdout
    with open(tmp_path / "b" / "metrics.json") as f:
        assert json.load(f)["images_skipped"] == 1


def test_non_finite_scores_are_refused_naming_the_blob_and_the_image(tiny_model, voc,
                                                                      tmp_path, caffe):
    """NaN weights in fc8 (a diverged training run): no mean IoU of an arg-max of NaN."""
    prototxt, weights = tiny_model
    net = caffe.Net(prototxt, weights, caffe.TEST)
    net.params["fc8_voc12"][0].data[0, 0, 0, 0] = np.nan
    broken = str(tmp_path / "nan.caffemodel")
    net.save(broken)
    root, list_path = voc
    with pytest.raises(ToolkitError) as error:
        evaluation.evaluate((prototxt, broken), list_path, root, str(tmp_path / "eval"),
                            num_classes=NUM_CLASSES, size=SIZE, progress=False)
    message = str(error.value)
    assert "blob 'fc8_interp' holds NaN or inf" in message
    assert os.path.join(root, "JPEGImages", "img_0000.jpg") in message
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_the_bars_miou_is_the_final_one_when_it_closes(tiny_model, voc, tmp_path, capsys):
    result = run(tiny_model, voc, tmp_path / "eval", progress=True)
    shown = re.findall(r"mIoU=([0-9.]+)", capsys.readouterr().err)
    assert shown and float(shown[-1]) == pytest.approx(result["mean_iou"], abs=5e-5)


def test_summary_counts_the_skipped_image(tiny_model, voc, tmp_path):
    root, list_path, broken = truncated_copy(voc, tmp_path)
    evaluation.evaluate(tiny_model, list_path, root, str(tmp_path / "skip"),
                        num_classes=NUM_CLASSES, size=SIZE, progress=False,
                        skip_bad_images=True)
    summary = (tmp_path / "skip" / "summary.md").read_text()
    assert f"(4 of 5 images scored; 1 skipped as unreadable: `{broken}`)" in summary


def test_the_demo_models_classes_have_their_names(tmp_path, capsys):
    """The committed demo model on two synthetic val images in a folder without the data
    set's dataset.json: the names come from the model, as tools/seg_fixations.py has them."""
    from pixelfeedback import synthetic
    from pixelfeedback.demo import model as demo

    data = synthetic.generate(str(tmp_path / "data"), n_train=1, n_val=2, size=129)
    os.unlink(os.path.join(data["root"], "dataset.json"))
    _, test = demo.demo_model_files(str(tmp_path))
    result = evaluation.evaluate_and_report(test, demo.DEMO_WEIGHTS, data["val_list"],
                                            data["root"], str(tmp_path / "eval"),
                                            num_classes=5, size=129, progress=False)
    assert result["class_names"] == list(synthetic.CLASS_NAMES)
    assert list(result["class_iou"]) == list(synthetic.CLASS_NAMES)
    assert "  sofa " in capsys.readouterr().out


# ------------------------------------------------------------------ a hand-worked evaluation

# Two images whose predictions are planted by colour (a 1x1 convolution copies the B, G, R
# channels to the scores of classes 0, 1, 2; the mean is 0), and their labels (255: void).
HAND_PRED = [np.array([[0, 0, 1, 1], [0, 2, 1, 1], [2, 2, 2, 0]]),
             np.array([[1, 1, 0], [2, 0, 0]])]
HAND_LABEL = [np.array([[0, 0, 1, 1], [0, 0, 1, 255], [2, 2, 1, 0]]),
              np.array([[1, 2, 0], [2, 255, 0]])]
# Worked out by hand: rows ground truth, columns prediction, void pixels left out.
#   image 1: (0,0) x4, (0,2) x1, (1,1) x3, (1,2) x1, (2,2) x2
#   image 2: (1,1) x1, (2,1) x1, (0,0) x2, (2,2) x1
HAND_CONFUSION = [[6, 0, 1],
                  [0, 4, 1],
                  [0, 1, 3]]
HAND_CLASS_IOU = [6 / 7, 4 / 6, 3 / 6]     # TP / (row + column - TP)


@pytest.fixture
def hand_worked(tmp_path, caffe):
    import cv2

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    lines = []
    for index, (pred, label) in enumerate(zip(HAND_PRED, HAND_LABEL)):
        image = np.zeros(pred.shape + (3,), np.uint8)
        for channel in range(3):
            image[..., channel][pred == channel] = 200
        cv2.imwrite(str(root / "images" / f"h{index}.png"), image)   # lossless
        files.write_label(str(root / "labels" / f"h{index}.png"), label.astype(np.uint8))
        lines.append(f"/images/h{index}.png /labels/h{index}.png\n")
    (root / "list.txt").write_text("".join(lines))
    prototxt = tmp_path / "copy.prototxt"
    prototxt.write_text(
        'layer { name: "data" type: "Input" top: "data" '
        'input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }\n'
        'layer { name: "scores" type: "Convolution" bottom: "data" top: "scores" '
        'convolution_param { num_output: 3 kernel_size: 1 } }\n')
    net = caffe.Net(str(prototxt), caffe.TEST)
    net.params["scores"][0].data[...] = np.eye(3).reshape(3, 3, 1, 1)
    net.params["scores"][1].data[...] = 0
    weights = str(tmp_path / "copy.caffemodel")
    net.save(weights)
    return str(prototxt), weights, str(root)


def test_numbers_match_a_hand_worked_confusion_matrix(hand_worked, tmp_path):
    prototxt, weights, root = hand_worked
    result = evaluation.evaluate((prototxt, weights), os.path.join(root, "list.txt"), root,
                                 str(tmp_path / "eval"), num_classes=3, size=9, mean=(0, 0, 0),
                                 class_names=["a", "b", "c"], progress=False)
    assert result["confusion"] == HAND_CONFUSION
    assert result["num_pixels"] == 16
    assert list(result["class_iou"]) == ["a", "b", "c"]
    assert list(result["class_iou"].values()) == pytest.approx(HAND_CLASS_IOU)
    assert result["mean_iou"] == pytest.approx((6 / 7 + 2 / 3 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == pytest.approx(13 / 16)
    assert result["mean_class_accuracy"] == pytest.approx((6 / 7 + 4 / 5 + 3 / 4) / 3)
    assert result["freq_weighted_iou"] == pytest.approx((7 * 6 / 7 + 5 * 4 / 6 + 4 * 3 / 6) / 16)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["confusion"] == HAND_CONFUSION
    assert saved["mean_iou"] == pytest.approx((6 / 7 + 2 / 3 + 1 / 2) / 3)
    csv_lines = (tmp_path / "eval" / "class_iou.csv").read_text().splitlines()
    assert csv_lines == ["class,iou", "a,0.8571", "b,0.6667", "c,0.5000"]
    assert "mean IoU: **67.46 %**" in (tmp_path / "eval" / "summary.md").read_text()
