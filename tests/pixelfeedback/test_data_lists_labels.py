"""Issue 28, case 6: the list pre-check (pixelfeedback/data_lists.py) reads the labels'
mode and values before any run: an RGB label is refused naming the file and how to convert
it, a value that is no class nor 255 is refused with the number of classes; found before
the evaluation predicts (or a sweep trains), and every message names only flags the
calling tool has (it passes them)."""
import os

import numpy as np
import pytest
from PIL import Image

from pixelfeedback import evaluation
from pixelfeedback.data_lists import check_list
from python_layers import ToolkitError
from tests.conftest import write_tiny_voc
from tests.pixelfeedback.test_evaluation import NUM_CLASSES, SIZE, tiny_model  # noqa: F401 (fixture)


@pytest.fixture
def voc(tmp_path):
    root = str(tmp_path / "voc")
    return root, write_tiny_voc(root, n_images=3, num_classes=NUM_CLASSES)


def label_path(root, index):
    return os.path.join(root, "SegmentationClassAug", f"img_{index:04d}.png")


def make_rgb(root, index):
    """The label saved as VOC-coloured RGB (what a colour-map export gives)."""
    path = label_path(root, index)
    with Image.open(path) as img:
        img.convert("RGB").save(path)
    return path


def set_value(root, index, value):
    path = label_path(root, index)
    with Image.open(path) as img:
        palette = img.getpalette()
        label = np.array(img)
    label[0, 0] = value
    out = Image.fromarray(label, mode="P")
    out.putpalette(palette)
    out.save(path)
    return path


def test_an_rgb_label_is_refused_naming_it_and_how_to_convert(voc):
    root, list_file = voc
    rgb = make_rgb(root, 1)
    with pytest.raises(ToolkitError) as error:
        check_list(list_file, root, "--val-list")
    message = str(error.value)
    assert f"label {rgb} is a RGB image" in message and "convert it" in message
    assert "voc_palette" in message and f"{list_file} (--val-list)" in message
    assert "--skip-bad-images" not in message


def test_label_values_are_checked_against_the_number_of_classes(voc):
    root, list_file = voc
    check_list(list_file, root, "--list", num_classes=NUM_CLASSES)   # 0..3 and 255 pass
    bad = set_value(root, 2, NUM_CLASSES)          # class 4 of a 4-class net
    check_list(list_file, root, "--list")          # without the count: not decoded
    with pytest.raises(ToolkitError) as error:
        check_list(list_file, root, "--val-list", num_classes=NUM_CLASSES,
                   classes_flag="--num-classes")
    message = str(error.value)
    assert f"label {bad} has values [4]" in message and "(0..3)" in message
    assert "set --num-classes" in message
    with pytest.raises(ToolkitError) as error:
        check_list(list_file, root, "--list", num_classes=NUM_CLASSES)
    assert "--num-classes" not in str(error.value)   # a caller without that flag
    assert "fix the label" in str(error.value)


def test_the_evaluation_refuses_an_rgb_label_before_predicting(tiny_model, voc, tmp_path):
    root, list_file = voc
    make_rgb(root, 2)   # the last image: the old code predicted two before finding it
    out = tmp_path / "eval"
    with pytest.raises(ToolkitError) as error:
        evaluation.evaluate(tiny_model, list_file, root, str(out), num_classes=NUM_CLASSES,
                            size=SIZE, progress=False, skip_flag=None)
    assert "is a RGB image" in str(error.value)
    assert "--skip-bad-images" not in str(error.value)
    assert not (out / "predictions").exists() or not os.listdir(out / "predictions")


def test_the_evaluation_names_the_skip_flag_only_when_the_caller_has_one(tiny_model, voc,
                                                                         tmp_path):
    """An image that passes the pre-check but does not decode (its data are garbage)."""
    root, list_file = voc
    image = os.path.join(root, "JPEGImages", "img_0001.jpg")
    data = open(image, "rb").read()
    start = data.find(b"\xff\xda")   # keep the header and markers, break the scan data
    with open(image, "wb") as f:
        f.write(data[:start + 2] + b"\x00\x00" + data[start + 4:start + 40] + b"\xff\xd9")
    for flag, expected in (("--skip-bad-images", True), (None, False)):
        with pytest.raises(ToolkitError) as error:
            evaluation.evaluate(tiny_model, list_file, root, str(tmp_path / str(flag)),
                                num_classes=NUM_CLASSES, size=SIZE, progress=False,
                                skip_flag=flag)
        assert "img_0001.jpg" in str(error.value)
        assert ("--skip-bad-images" in str(error.value)) == expected


def test_a_shared_sizes_dict_decodes_each_label_once(voc, monkeypatch):
    root, list_file = voc
    opened = []
    real_open = Image.open

    def counting_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    sizes = {}
    check_list(list_file, root, "--train-list", sizes=sizes, num_classes=NUM_CLASSES)
    first = len(opened)
    check_list(list_file, root, "--val-list", sizes=sizes, num_classes=NUM_CLASSES)
    assert first > 0 and len(opened) == first   # the second list reads nothing again
