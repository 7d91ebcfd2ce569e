"""Reading VOC-style data, what the Caffe layers need: images, palette label PNGs,
DeepLab list files, the VOC palette and constants. The library writes files (labels
included) through ``pixelfeedback/files.py``.
"""
import os

import cv2
import numpy as np
from PIL import Image

from python_layers import ToolkitError

IGNORE_LABEL = 255
DEEPLAB_MEAN = (104.008, 116.669, 122.675)  # BGR, subtracted by DeepLab; no scaling

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
    "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# The images of DeepLab's lists made from the published archives: VOC 2012 train and val,
# and SBD's augmentation train_aug ((SBD train + SBD val + VOC train) minus VOC val).
SPLIT_IMAGES = {"train": 1464, "val": 1449, "train_aug": 10582}


def voc_palette(n=256):
    """The PASCAL VOC colour map: a (n, 3) uint8 array, index -> RGB (255 is cream)."""
    palette = np.zeros((n, 3), np.uint8)
    for index in range(n):
        c, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette[index] = (r, g, b)
    return palette


def read_image(path):
    """An image as an (H, W, 3) uint8 BGR array (Caffe's channel order), its pixels in
    stored orientation: an EXIF Orientation tag is ignored, as Pillow's header size (the
    list pre-check) and VOC's labels ignore it, so an image never turns against its label.

    A missing, unreadable or truncated file is a ``ToolkitError`` naming it. OpenCV decodes
    a truncated JPEG without an error (the missing part grey), so a JPEG must hold an end
    marker (FF D9) after its last start-of-scan marker (FF DA), as a complete one does;
    other formats are decoded once more by Pillow, which refuses truncated data.
    """
    stored_orientation = getattr(cv2, "IMREAD_IGNORE_ORIENTATION", 0)  # 0: the GPU bundle's cv2
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"image not found: {path} (check the data root and the list file)")
    problem = _truncation(path)
    if problem:
        raise ToolkitError(f"cannot read image {path}: the file is truncated or corrupt "
                           f"({problem}; a partial download or copy?); replace it or remove "
                           "it from the list")
    image = cv2.imread(path, stored_orientation | cv2.IMREAD_COLOR)
    if image is None:
        raise ToolkitError(f"cannot read image {path}: the file is corrupt or not an image; "
                           "replace it or remove it from the list")
    return image


def jpeg_truncation(path, data=None):
    """Why the JPEG file at ``path`` is cut short (its data stop before the end-of-image
    marker), or None when it is whole or no JPEG. Reads the bytes, decodes nothing."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    if data[:2] != b"\xff\xd8":
        return None
    last_scan = data.rfind(b"\xff\xda")  # entropy-coded data never holds FF DA or FF D9
    if last_scan < 0 or data.find(b"\xff\xd9", last_scan) < 0:
        return "its JPEG data stops before the end-of-image marker"
    return None


def _truncation(path):
    """Why the image file at ``path`` is incomplete, or None when it is whole."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\xff\xd8":
        return jpeg_truncation(path, data)
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as exc:  # PIL raises many kinds on a broken file
        return f"Pillow: {exc}"
    return None


def read_label(path, num_classes=None, ignore_label=IGNORE_LABEL):
    """A label map as an (H, W) uint8 array of class indices (255 = ignore).

    Palette PNGs (VOC's SegmentationClass) are read as indices, not colours. With
    ``num_classes``, values that are neither a class nor ``ignore_label`` are an error.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"label not found: {path} (check the data root and the list file)")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "I", "I;16"):
                raise ToolkitError(
                    f"label {path} is an {img.mode} image; a label must be a palette (P) or "
                    "grey (L) PNG of class indices, as VOC's SegmentationClass[Aug]")
            label = np.array(img)
    except ToolkitError:
        raise
    except Exception as exc:  # PIL raises many kinds on a broken file
        raise ToolkitError(f"cannot read label {path}: {exc}; replace the file") from None
    if label.ndim != 2:
        raise ToolkitError(f"label {path} has shape {label.shape}; expected a 2-D map")
    if label.max(initial=0) > 255:
        raise ToolkitError(f"label {path} has values above 255; expected 8-bit class indices")
    label = label.astype(np.uint8)
    if num_classes is not None:
        bad = np.unique(label[(label >= num_classes) & (label != ignore_label)])
        if bad.size:
            raise ToolkitError(
                f"label {path} has values {bad.tolist()[:5]} that are neither a class "
                f"(0..{num_classes - 1}) nor the ignore label {ignore_label}; fix the label "
                "or set the number of classes")
    return label


def read_list(path, root=None):
    """Parse a DeepLab list file (``/JPEGImages/x.jpg /SegmentationClassAug/x.png``).

    Returns a list of (image_path, label_path or None) joined onto ``root`` when given.
    A line with one entry (test lists) has no label.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"list file not found: {path} (make one with tools/fetch_voc.py "
                           "or pass --list)")
    pairs = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 2:
                raise ToolkitError(f"{path}:{number}: expected 'image [label]', got {line.strip()!r}")
            if root is not None:
                fields = [os.path.join(root, p.lstrip("/")) for p in fields]
            pairs.append((fields[0], fields[1] if len(fields) == 2 else None))
    if not pairs:
        raise ToolkitError(f"list file {path} is empty")
    return pairs
