"""python_layers/voc_io.py: the VOC palette against colours written out by hand, palette
label PNGs read (as indices, RGB refused), and DeepLab list files. Writing (atomic files,
label PNGs) is pixelfeedback/files.py: tests/pixelfeedback/test_files.py."""
import os

import numpy as np
import pytest
from PIL import Image

from pixelfeedback import files
from python_layers import ToolkitError, voc_io

# PASCAL VOC's colour of each class (RGB), copied from the VOC devkit's colour map, not
# computed: index -> colour of SegmentationClass PNGs.
VOC_COLOURS = {
    0: (0, 0, 0),          # background
    1: (128, 0, 0),        # aeroplane
    2: (0, 128, 0),        # bicycle
    3: (128, 128, 0),      # bird
    4: (0, 0, 128),        # boat
    5: (128, 0, 128),      # bottle
    6: (0, 128, 128),      # bus
    7: (128, 128, 128),    # car
    8: (64, 0, 0),         # cat
    9: (192, 0, 0),        # chair
    10: (64, 128, 0),      # cow
    11: (192, 128, 0),     # diningtable
    12: (64, 0, 128),      # dog
    13: (192, 0, 128),     # horse
    14: (64, 128, 128),    # motorbike
    15: (192, 128, 128),   # person
    16: (0, 64, 0),        # pottedplant
    17: (128, 64, 0),      # sheep
    18: (0, 192, 0),       # sofa
    19: (128, 192, 0),     # train
    20: (0, 64, 128),      # tvmonitor
    255: (224, 224, 192),  # void / ignore (the cream border)
}


# --- the palette ---------------------------------------------------------------------------

def test_palette_has_the_voc_colours():
    palette = voc_io.voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    for index, colour in VOC_COLOURS.items():
        assert tuple(int(v) for v in palette[index]) == colour, index
    assert voc_io.voc_palette(21).tolist() == palette[:21].tolist()
    assert voc_io.VOC_CLASSES[15] == "person" and len(voc_io.VOC_CLASSES) == 21


# --- reading labels --------------------------------------------------------------------------

def test_grey_label_png_reads_as_indices(tmp_path):
    label = np.array([[0, 1, 20], [255, 3, 0]], np.uint8)
    Image.fromarray(label, mode="L").save(tmp_path / "grey.png")
    assert voc_io.read_label(tmp_path / "grey.png", num_classes=21).tolist() == label.tolist()


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_label_png_is_refused_naming_the_file(tmp_path, mode):
    # A label saved as colours (e.g. converted to RGB by an image editor) would otherwise
    # be read as three channels of colour values, not class indices.
    colours = np.zeros((4, 5, len(mode)), np.uint8)
    colours[..., :3] = VOC_COLOURS[15]
    path = tmp_path / "person_rgb.png"
    Image.fromarray(colours, mode=mode).save(path)
    with pytest.raises(ToolkitError, match=rf"person_rgb\.png is an {mode} image; a label must "
                                           r"be a palette \(P\) or grey \(L\) PNG"):
        voc_io.read_label(path)


def test_label_values_outside_the_classes_are_named(tmp_path):
    label = np.array([[0, 1, 21], [255, 30, 2]], np.uint8)
    files.write_label(tmp_path / "bad.png", label)
    with pytest.raises(ToolkitError, match=r"bad\.png has values \[21, 30\] .* \(0\.\.20\) "
                                           r"nor the ignore label 255"):
        voc_io.read_label(tmp_path / "bad.png", num_classes=21)
    assert voc_io.read_label(tmp_path / "bad.png").max() == 255  # no num_classes: no check


def test_missing_and_corrupt_labels_are_named(tmp_path):
    with pytest.raises(ToolkitError, match=r"label not found: .*nothere\.png"):
        voc_io.read_label(tmp_path / "nothere.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ToolkitError, match=r"cannot read label .*broken\.png"):
        voc_io.read_label(tmp_path / "broken.png")


# --- list files ------------------------------------------------------------------------------

def write_list(tmp_path, text):
    path = tmp_path / "list.txt"
    path.write_text(text)
    return path


def test_list_with_labels_images_only_and_blank_lines(tmp_path):
    path = write_list(tmp_path, "/JPEGImages/a.jpg /SegmentationClassAug/a.png\n"
                                "\n"
                                "   \t \n"
                                "/JPEGImages/b.jpg\n"
                                "  /JPEGImages/c.jpg\t/SegmentationClassAug/c.png  \r\n"
                                "/JPEGImages/d.jpg")  # no final newline
    assert voc_io.read_list(path) == [
        ("/JPEGImages/a.jpg", "/SegmentationClassAug/a.png"),
        ("/JPEGImages/b.jpg", None),
        ("/JPEGImages/c.jpg", "/SegmentationClassAug/c.png"),
        ("/JPEGImages/d.jpg", None)]
    root = str(tmp_path / "VOC2012")
    assert voc_io.read_list(path, root=root)[:2] == [
        (os.path.join(root, "JPEGImages", "a.jpg"),
         os.path.join(root, "SegmentationClassAug", "a.png")),
        (os.path.join(root, "JPEGImages", "b.jpg"), None)]


def test_a_line_with_more_than_two_fields_is_named_by_number(tmp_path):
    path = write_list(tmp_path, "/JPEGImages/a.jpg /S/a.png\n\n/JPEGImages/b.jpg /S/b.png extra\n")
    with pytest.raises(ToolkitError, match=r"list\.txt:3: expected 'image \[label\]', got "
                                           r"'/JPEGImages/b.jpg /S/b.png extra'"):
        voc_io.read_list(path)


def test_empty_and_missing_lists_are_refused(tmp_path):
    with pytest.raises(ToolkitError, match=r"list file .*list\.txt is empty"):
        voc_io.read_list(write_list(tmp_path, "\n  \n"))
    with pytest.raises(ToolkitError, match=r"list file not found: .*nolist\.txt"):
        voc_io.read_list(tmp_path / "nolist.txt")
