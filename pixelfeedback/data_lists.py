"""A data list (DeepLab's list file: ``/JPEGImages/x.jpg /SegmentationClassAug/x.png`` per
line, the label optional where only predictions are wanted) checked in one quick pass
before a long run reads it: the evaluation, the experiments and every list of the Table 3.1
sweep. A bad line then costs seconds, not the hours of the runs before it.

Each check names the list, the flag that gave it and what to do, and names only flags the
calling tool has (it passes them). Sizes and label modes come from the file headers
(Pillow reads no pixels), so the pass is fast; a JPEG cut short is found too (its end
marker is missing), which OpenCV would decode grey without a word. With the number of
classes, every label is also decoded once and its values checked.
"""
import collections
import os
import sys

import numpy as np

from python_layers import ToolkitError, voc_io

LONG_LIST = 200  # lists longer than this get a progress bar while they are checked

REQUIRED, ALL_OR_NONE = "required", "all or none"  # what ``labels`` may ask


def check_list(list_file, data_root, flag, **options):
    """Read ``list_file`` (given by the command-line option ``flag``) and check it with
    ``check_pairs(..., **options)``; returns its (image, label) pairs."""
    if not os.path.isfile(list_file):
        raise ToolkitError(f"list file ({flag}) not found: {list_file}; make it with "
                           f"tools/fetch_voc.py or pass {flag}")
    pairs = voc_io.read_list(list_file, root=data_root)
    check_pairs(pairs, list_file, flag, **options)
    return pairs


def check_pairs(pairs, list_file, flag, labels=REQUIRED, max_size=None,
                max_size_name="the net input", size_flag="--size", unique_names=False,
                sizes=None, progress=False, skip_bad_images=False, skip_flag=None,
                num_classes=None, classes_flag=None, ignore_label=voc_io.IGNORE_LABEL):
    """Check the (image, label) pairs of a list; returns whether they have labels.

    labels: ``REQUIRED`` (every line names its label: training, the sweep's val) or
    ``ALL_OR_NONE`` (evaluation: all, or none to only predict). Every file must exist and
    open, a label must have its image's size and be a palette or grey PNG of class
    indices (an RGB label is refused, saying how to convert it), a JPEG must be whole.
    ``num_classes``: every label value must also be a class (0..num_classes-1) or
    ``ignore_label`` (each label decoded once, about a millisecond); the advice names
    ``classes_flag`` when the caller has one. ``max_size``: no image may be larger (the
    net's input, set by ``size_flag``). ``unique_names``: an image name twice is an error
    (predictions are saved by name); otherwise a warning naming it (a training list that
    repeats an image trains on it more often). ``skip_flag``: the caller's flag that skips
    unreadable images, named in their errors (None: the caller has none). ``sizes``: a dict
    shared between lists, so a pair named by two lists is read once. A bar shows on lists
    longer than LONG_LIST.
    """
    from PIL import Image
    from tqdm import tqdm

    where = f"{list_file} ({flag})"
    with_label = [label is not None for _, label in pairs]
    if labels == REQUIRED and not all(with_label):
        first = pairs[with_label.index(False)][0]
        raise ToolkitError(f"{with_label.count(False)} line(s) of {where} name no label, "
                           f"first: {first}; every image needs its label "
                           "('/JPEGImages/x.jpg /SegmentationClassAug/x.png')")
    if labels == ALL_OR_NONE and any(with_label) and not all(with_label):
        raise ToolkitError(f"{where} mixes lines with and without a label; give every image "
                           "a label (or none, to only write predictions)")
    names = collections.Counter(os.path.splitext(os.path.basename(image))[0]
                                for image, _ in pairs)
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice and unique_names:
        raise ToolkitError(f"{where} names image {twice[0]!r} more than once; predictions "
                           "are saved by image name, so give each once")
    if twice:
        more = f" (and {len(twice) - 1} other name(s))" if len(twice) > 1 else ""
        print(f"WARNING: {where} names image {twice[0]!r} more than once{more}; those "
              "images are trained on more often than the others (remove the repeated lines "
              "unless that is meant)", file=sys.stderr, flush=True)
    missing = [path for pair in pairs for path in pair if path is not None
               and not os.path.isfile(path)]
    if missing:
        raise ToolkitError(f"{len(missing)} file(s) named by {where} not found, first: "
                           f"{missing[0]} (check --data-root and {flag})")
    sizes = {} if sizes is None else sizes
    bar = tqdm(pairs, desc=f"check {os.path.basename(list_file)}", unit="img", leave=False,
               disable=not progress or len(pairs) <= LONG_LIST)
    label_check = (num_classes, ignore_label, classes_flag)
    for image, label in bar:
        key = (image, label, num_classes, ignore_label)
        if key not in sizes:
            try:
                sizes[key] = _pair_size(Image, image, label, where, label_check)
            except _BadImage as exc:
                if skip_bad_images:
                    continue
                if skip_flag:
                    raise ToolkitError(f"{exc}, or pass {skip_flag} to leave such images "
                                       "out (they are counted)") from None
                raise
        width, height = sizes[key]
        if max_size is not None and max(width, height) > max_size:
            raise ToolkitError(
                f"image {image} is {width}x{height}, larger than {max_size_name} "
                f"{max_size}x{max_size}; pass a larger {size_flag} (8k+1: VOC's images are at "
                f"most 500x500, 513 fits them) or remove its line from {where}")
    return all(with_label) and bool(pairs)


class _BadImage(ToolkitError):
    """An image that does not open (what --skip-bad-images skips)."""


LABEL_MODES = ("P", "L", "I", "I;16")   # what voc_io.read_label reads as class indices


def _pair_size(image_module, image, label, where, label_check=(None, None, None)):
    """(width, height) of an image whose label (if any) has the same size, is a map of
    class indices and, with ``label_check`` (num_classes, ignore_label, classes_flag),
    holds only classes and the ignore label."""
    image_size, _ = _header(image_module, image, "image", where, _BadImage)
    problem = voc_io.jpeg_truncation(image)
    if problem:
        raise _BadImage(f"cannot read image {image}: the file is truncated or corrupt "
                        f"({problem}; a partial download or copy?); replace it or remove its "
                        f"line from {where}")
    if label is not None:
        label_size, mode = _header(image_module, label, "label", where)
        if mode not in LABEL_MODES:
            raise ToolkitError(
                f"label {label} is a {mode} image, not a map of class indices; a label must "
                "be a palette (P) or grey (L) PNG whose values are class ids, as VOC's "
                "SegmentationClass: convert it (each colour to its class id, e.g. by the VOC "
                f"palette of python_layers.voc_io.voc_palette) or remove its line from {where}")
        if image_size != label_size:
            raise ToolkitError(
                f"image {image} is {image_size[0]}x{image_size[1]} but its label {label} is "
                f"{label_size[0]}x{label_size[1]}; fix the label or remove the line from "
                f"{where}")
        if label_check[0] is not None:
            _check_label_values(image_module, label, where, *label_check)
    return image_size


def _check_label_values(image_module, label, where, num_classes, ignore_label, classes_flag):
    """Every value of the label is a class id (< num_classes) or ``ignore_label``."""
    try:
        with image_module.open(label) as img:
            values = np.asarray(img)
    except Exception as exc:  # PIL raises many kinds on a broken file
        raise ToolkitError(f"cannot read label {label} ({exc}); replace it or remove its line "
                           f"from {where}") from None
    present = (np.flatnonzero(np.bincount(values.ravel(), minlength=256))
               if values.dtype == np.uint8 else np.unique(values))   # 'I' labels: rare
    bad = [int(v) for v in present if not 0 <= v < num_classes and v != ignore_label]
    if bad:
        fix = (f"set {classes_flag} to the net's number of classes, fix the label"
               if classes_flag else "fix the label")
        raise ToolkitError(
            f"label {label} has values {bad[:5]} that are neither a class "
            f"(0..{num_classes - 1}) nor the ignore label {ignore_label}; {fix} or remove its "
            f"line from {where}")


def _header(image_module, path, what, where, error=ToolkitError):
    """(size, mode) of an image file from its header (no pixels decoded)."""
    try:
        with image_module.open(path) as img:
            return img.size, img.mode
    except Exception as exc:  # PIL raises many kinds on a broken file
        raise error(f"cannot read {what} {path} ({exc}); replace it or remove its line "
                    f"from {where}") from None
