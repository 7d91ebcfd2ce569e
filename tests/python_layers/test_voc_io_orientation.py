"""Issue 28, case 1: a JPEG with an EXIF Orientation tag is read in stored orientation by
every reader (voc_io.read_image, the data layer, the list pre-check), so its pixels stay
on its label's pixels. OpenCV's plain imread rotates such an image; Pillow's header size
(the pre-check) and the labels never do."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from pixelfeedback.data_lists import check_list
from python_layers import voc_io
from python_layers.seg_data import load_pair

ORIENTATION_TAG = 0x0112
HEIGHT, WIDTH = 24, 40   # stored size (rows, columns): wider than high


def stored_pixels():
    """An RGB image whose left half is white and right half black, as stored."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[:, :WIDTH // 2] = 255
    return rgb


def write_pair(root, orientation):
    """JPEGImages/x.jpg (with an EXIF Orientation tag unless None) and its grey label
    SegmentationClassAug/x.png (class 1 on the white half); returns the list file."""
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
    picture = Image.fromarray(stored_pixels())
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION_TAG] = orientation
    picture.save(os.path.join(root, "JPEGImages", "x.jpg"), exif=exif, quality=95)
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[:, :WIDTH // 2] = 1
    Image.fromarray(label, mode="L").save(os.path.join(root, "SegmentationClassAug", "x.png"))
    list_path = os.path.join(root, "list.txt")
    with open(list_path, "w") as f:
        f.write("/JPEGImages/x.jpg /SegmentationClassAug/x.png\n")
    return list_path


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_ignores_the_orientation_tag(tmp_path, orientation):
    write_pair(str(tmp_path), orientation)
    path = str(tmp_path / "JPEGImages" / "x.jpg")
    with Image.open(path) as img:   # the tag is really there
        assert img.getexif()[ORIENTATION_TAG] == orientation
    image = voc_io.read_image(path)
    assert image.shape == (HEIGHT, WIDTH, 3)
    # white on the left half, black on the right, as stored (JPEG is lossy: thresholds)
    assert image[:, :WIDTH // 2 - 2].min() > 200 and image[:, WIDTH // 2 + 2:].max() < 55


@pytest.mark.parametrize("orientation", [6, 8])
def test_pair_and_pre_check_agree_with_the_label(tmp_path, orientation):
    root = str(tmp_path)
    list_path = write_pair(root, orientation)
    check_list(list_path, root, "--list")  # the header's size: 40x24, as the label's
    image, label = load_pair(str(tmp_path / "JPEGImages" / "x.jpg"),
                             str(tmp_path / "SegmentationClassAug" / "x.png"))
    assert image.shape[:2] == label.shape == (HEIGHT, WIDTH)
    white = image[..., 0] > 128
    assert np.array_equal(white, label == 1)


def test_data_layer_serves_the_stored_orientation(caffe, tmp_path):
    from caffe import layers as L

    root = str(tmp_path / "voc")
    list_path = write_pair(root, 6)
    n = caffe.NetSpec()
    n.data, n.label = L.Python(ntop=2, python_param=dict(
        module="python_layers.seg_data", layer="ImageSegData", param_str=json.dumps(dict(
            root=root, list=list_path, batch_size=1, crop_size=WIDTH, shuffle=False,
            mirror=False, seed=0, prefetch=0, mean=[0, 0, 0]))))
    prototxt = tmp_path / "data.prototxt"
    prototxt.write_text(str(n.to_proto()))
    net = caffe.Net(str(prototxt), caffe.TEST)
    net.forward()
    data, label = net.blobs["data"].data[0], net.blobs["label"].data[0, 0]
    assert np.all(label[HEIGHT:] == 255)          # padding below the 24 stored rows
    np.testing.assert_array_equal(data[0, :HEIGHT] > 128, label[:HEIGHT] == 1)
