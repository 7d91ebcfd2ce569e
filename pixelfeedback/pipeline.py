"""The shared fixation pipeline: which model (a ``ModelSpec``), one deploy net loaded with
its weights, its score blob found from the net, the image prepared as the net's input,
class names, one image's classes traced to points and heat maps, and the image's predicted
segmentation from the score blob. Used by tools/seg_fixations.py, the experiments and the
demo; writing the results is ``pixelfeedback.fixation_outputs``.
"""
import collections
import json
import os

import cv2
import numpy as np

from pixelfeedback import heatmap, synthetic
from pixelfeedback.paths import WEIGHTS_DIR
from pixelfeedback.fixations import (PYTHON_RULES, SHIFTS, BackTracker, KStrategy, NetGraph,
                                     check_finite_scores, run_forward)
from pixelfeedback.nets import registry
from pixelfeedback.nets.loading import load_net
from python_layers import ToolkitError, voc_io

DEFAULT_SCORE_BLOB = "fc8_voc12"
DEFAULT_SHIFT = "partial"
DEFAULT_K = "resolution"
# The committed demo model (pixelfeedback.demo.model writes it; its classes are the
# synthetic data set's).
DEMO_WEIGHTS = os.path.join(WEIGHTS_DIR, "demo", "largefov_synthetic.caffemodel")


ModelSpec = collections.namedtuple("ModelSpec", [
    "name",          # registry name, "demo" or the prototxt path
    "prototxt",      # deploy prototxt path
    "weights",       # caffemodel path
    "score_blob",    # blob the fixations start from (None: found from the net)
    "mean",          # BGR mean subtracted from the image
    "kind",          # "segmentation" or "classification"
    "class_names",   # sequence of names, or None (VOC names for 21 classes, else class_<i>)
    "note",          # a line printed before the summary, or None
])


ClassResult = collections.namedtuple("ClassResult", [
    "class_id", "name",
    "score_units",   # seeds at the score blob (units whose argmax is the class)
    "points",        # (M, 2) int image-plane points (y, x) inside the image
    "counts",        # (M,) image channels fixated at each point (weights in the heat map)
    "heat",          # heatmap.HeatMap
    "files",         # {kind: path} once written
    "dead_seeds",    # seeds that stopped at once: none of their inputs contributes
    "dead_units",    # {layer: units of the class that stopped there}, score side first
                     # (None: not traced by run_fixations)
    "seeds",         # (S, 2) int (y, x) of the seed units at the score blob
    "layers",        # {blob: (U, 3) units} with keep_layers (the flow), else None
], defaults=(0, None, None, None))

# Layers that only present the scores (zoom them, normalise them, take the arg-max): the
# score blob is the one that feeds them.
PRESENTATION_TYPES = ("Interp", "Softmax", "ArgMax")


def resolve_model(model, weights=None, score_blob=None, mean=None):
    """A ``ModelSpec`` from a registry name (pixelfeedback.nets.registry) or a deploy prototxt path."""
    if model in registry.MODELS:
        info = registry.MODELS[model]
        prototxt = registry.deploy_path(model)
        if weights is None:
            weights = registry.weights_path(model)
            if not os.path.isfile(weights):
                raise ToolkitError(f"weights of model {model!r} not found at {weights}; fetch "
                                   f"them with `python weights/fetch.py {model}` or pass --weights")
        note = None
        if info.trained_on:
            note = (f"note: {model} weights were trained on {', '.join(info.trained_on)} "
                    "(fine for fixation pictures, not for scores on those splits)")
        return ModelSpec(model, prototxt, weights, score_blob or info.score_blob,
                         tuple(mean or info.mean), info.kind, None, note)
    if not model.endswith(".prototxt") and not os.path.isfile(model):
        raise ToolkitError(f"unknown model {model!r}: give a deploy .prototxt path or one of "
                           f"{', '.join(registry.MODELS)}")
    if not os.path.isfile(model):
        raise ToolkitError(f"deploy prototxt not found: {model}")
    if weights is None:
        raise ToolkitError(f"--weights is required with a prototxt ({model})")
    return ModelSpec(model, model, weights, score_blob or find_score_blob(model),
                     tuple(mean or registry.DEEPLAB_MEAN), None, None, None)


def find_score_blob(prototxt):
    """The blob the fixations start from, found from the net: its single output, or the blob
    that feeds the output's zoom / Softmax / arg-max layers (DeepLab's Interp or the Zoom
    Python layer). Several candidates are an error listing them."""
    graph = NetGraph.from_prototxt(prototxt)
    producer = {}
    consumed = set()
    for layer in graph.layers:
        consumed.update(b for b in layer.bottoms if b not in layer.tops)
        for top in layer.tops:
            producer[top] = layer
    outputs = [blob for blob in producer if blob not in consumed and blob not in graph.inputs]
    found = []
    for blob in outputs:
        layer = producer[blob]
        while (layer is not None and len(layer.bottoms) == 1 and not layer.in_place
               and (layer.type in PRESENTATION_TYPES
                    or PYTHON_RULES.get(layer.python_key) == "interp")):
            blob = layer.bottoms[0]
            layer = producer.get(blob)
        if blob not in found:
            found.append(blob)
    if len(found) != 1:
        listed = ", ".join(found) or "none"
        raise ToolkitError(f"cannot tell the score blob of {prototxt} (candidates: {listed}); "
                           "pass --score-blob (the class scores before any zoom)")
    return found[0]


def load_model(spec, gpu=None):
    """The deploy net of ``spec`` with its weights (checked before Caffe could abort on
    them), with an input blob 'data' and the spec's score blob."""
    net = load_net(spec.prototxt, spec.weights, gpu=gpu)
    if "data" not in net.blobs:
        raise ToolkitError(f"{spec.prototxt} has no input blob named 'data'")
    if spec.score_blob not in net.blobs:
        raise ToolkitError(f"score blob {spec.score_blob!r} is not in {spec.prototxt}; pass "
                           "--score-blob (the scores before any zoom), or leave it out to "
                           f"use the net's own ({find_score_blob(spec.prototxt)})")
    return net


def net_kind(net, spec):
    """'classification' when the score blob has no spatial axes, else 'segmentation'."""
    if spec.kind:
        return spec.kind
    return "classification" if net.blobs[spec.score_blob].data.ndim == 2 else "segmentation"


def prepare_input(image, size, mean, kind="segmentation"):
    """(data (3, H', W') float32, image as used (uint8 BGR), note or None).

    Segmentation: minus the mean, padded bottom/right to ``size`` (0 = no padding: the net
    takes the image's size); an image larger than ``size`` is first resized down to fit.
    Classification: warped to ``size`` x ``size``.
    """
    from python_layers import seg_data   # a Caffe layer module: it imports caffe

    height, width = image.shape[:2]
    note = None
    if kind == "classification":
        if (height, width) != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            note = f"image resized from {width}x{height} to {size}x{size} (classification input)"
    elif size and max(height, width) > size:
        scale = size / max(height, width)
        new_size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        image = cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
        note = (f"image resized from {width}x{height} to {new_size[0]}x{new_size[1]} to fit "
                f"the input size {size} (outputs are in the resized image's pixels; pass a "
                "larger --size to keep the resolution)")
    if not size:
        data = (image.astype(np.float32) - np.asarray(mean, np.float32)).transpose(2, 0, 1)
        return np.ascontiguousarray(data), image, note
    data, _ = seg_data.preprocess(image, crop=size, mean=mean)
    return data, image, note


def is_demo_weights(path):
    """Whether ``path`` is the committed demo model's caffemodel (weights/demo/)."""
    try:
        return os.path.isfile(DEMO_WEIGHTS) and os.path.samefile(path, DEMO_WEIGHTS)
    except (OSError, TypeError):
        return False


def model_class_names(weights=None, data_root=None, num_classes=None):
    """The class names the model or its data give, or None (``class_names_for`` then
    gives VOC's for 21 classes, else class_<i>): the synthetic classes for the demo
    weights, else a synthetic data set's own (``data_root``/dataset.json); names whose
    number is not ``num_classes`` (when given) are not used. The one place the evaluation,
    the experiments and tools/seg_fixations.py find them."""
    names = synthetic.CLASS_NAMES if weights and is_demo_weights(weights) else None
    if names is None and data_root:
        try:
            with open(os.path.join(data_root, "dataset.json")) as f:
                names = json.load(f).get("class_names")
        except (OSError, ValueError, AttributeError):
            names = None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return None
    if num_classes is not None and len(names) != num_classes:
        return None
    return tuple(names)


def class_names_for(num_classes, names=None):
    """Names of the net's classes: given ones, VOC's for 21 classes, else class_<i>."""
    if names is not None and len(names) == num_classes:
        return tuple(names)
    if names is not None:
        raise ToolkitError(f"{len(names)} class names given for a net with {num_classes} classes")
    if num_classes == len(voc_io.VOC_CLASSES):
        return voc_io.VOC_CLASSES
    return tuple(f"class_{index}" for index in range(num_classes))


def parse_class_names(text, flag="--class-names"):
    """The names of comma-separated ``text`` (the command line's ``flag``); an empty or
    repeated name is an error (tables, figures and --classes go by name)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ToolkitError(f"{flag} has an empty name in {text!r}; give one name per class, "
                           "comma-separated")
    repeated = [name for index, name in enumerate(names) if name in names[:index]]
    if repeated:
        raise ToolkitError(f"{flag} names {repeated[0]!r} twice; give each class its own name")
    return names


def parse_classes(text, names, flag="--classes"):
    """Class ids from 'cat,dog' or '8,12' (names or indices); a class given twice (by
    number or name) is an error naming the command line's ``flag``."""
    if text is None:
        return None
    chosen = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < len(names):
            class_id = int(item)
        elif item in names:
            class_id = names.index(item)
        else:
            raise ToolkitError(f"unknown class {item!r}; classes are 0..{len(names) - 1} or "
                               f"names such as {', '.join(names[:6])} ...")
        if class_id in chosen:
            raise ToolkitError(f"{flag} gives class {names[class_id]} ({class_id}) twice "
                               f"(in {text!r}); name each class once")
        chosen.append(class_id)
    return chosen


def image_region(score_shape, input_hw, image_hw):
    """Bool (h, w) map of the score units that lie over the image, not over its padding.

    Score unit (y, x) sits at input pixel (y * f, x * f) with f = (input - 1) / (score - 1)
    per axis: DeepLab's align-corners zoom (65 -> 513: f = 8); f = 1 when the score blob
    has the input's size (FCN's cropped 'score').
    """
    axes = []
    for score_size, input_size, image_size in zip(score_shape[-2:], input_hw, image_hw):
        factor = (input_size - 1) / (score_size - 1) if score_size > 1 else 0.0
        axes.append(np.rint(np.arange(score_size) * factor) < image_size)
    return axes[0][:, None] & axes[1][None, :]


def seed_label(scores, kind, region=None):
    """The class of every score unit of item 0 as the tracker seeds them: the argmax over
    channels, units outside ``region`` counted as background (0). (1, 1) for a classifier."""
    if kind == "classification":
        return np.full((1, 1), int(np.argmax(scores[0])))
    label = scores[0].argmax(axis=0)
    return label if region is None else np.where(region, label, 0)


def predicted_classes(scores, kind, region=None):
    """{class: number of seed units} of item 0 at the score blob (argmax over channels),
    counting only units inside ``region`` when given."""
    if kind == "classification":
        return {int(np.argmax(scores[0])): 1}
    argmax = scores[0].argmax(axis=0)
    if region is not None:
        argmax = argmax[region]
    classes, counts = np.unique(argmax, return_counts=True)
    return dict(zip(classes.tolist(), counts.tolist()))


def make_tracker(net, prototxt, shift=DEFAULT_SHIFT, k=DEFAULT_K, max_units=None):
    """The back-tracker (pixelfeedback.fixations) for this net."""
    if shift not in SHIFTS:
        raise ToolkitError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")
    options = dict(shift=shift, k=KStrategy.parse(k))
    if max_units is not None:
        options["max_units"] = max_units
    return BackTracker(net, NetGraph.from_prototxt(prototxt), **options)


def trace_inside(tracker, score_blob, classes, region=None, keep_layers=False):
    """``tracker.trace`` seeded only by the score units over the image (``region``); the
    units over the padding count as background (so background, when traced, gets them)."""
    return tracker.trace(score_blob, item=0, classes=list(classes), skip_background=False,
                         seed_region=region, keep_layers=keep_layers)


def run_fixations(net, tracker, data, image, score_blob, kind="segmentation", classes=None,
                  skip_background=True, names=None, sigma=None, remove_outliers=True,
                  radius_fraction=heatmap.RADIUS_FRACTION, min_fraction=heatmap.MIN_FRACTION,
                  keep_layers=False):
    """Forward ``data``, back-track the chosen classes and build their heat maps.

    Returns a list of ``ClassResult`` (files empty), in class order. ``classes`` None: all
    classes predicted over the image (background skipped when ``skip_background``); a class
    not predicted there is an error naming the predicted ones. Seeds are the score units
    over the image (``image_region``), never those over the padding; points in the padding
    are dropped. NaN or inf in the scores (or in what the tracker reads) is an error naming
    the blob. ``keep_layers``: keep every traced blob's units (for the flow figures).
    """
    heatmap.check_heatmap_options(sigma, radius_fraction, min_fraction)
    run_forward(net, data[None], "data")
    scores = check_finite_scores(net, score_blob)
    names = class_names_for(scores.shape[1], names)
    region = None
    if kind == "segmentation":
        region = image_region(scores.shape, data.shape[1:], image.shape[:2])
    seeds = predicted_classes(scores, kind, region)
    if classes is None:
        classes = [c for c in sorted(seeds) if not (skip_background and c == 0 and
                                                     kind == "segmentation")]
    missing = [c for c in classes if c not in seeds]
    if missing:
        found = ", ".join(f"{names[c]} ({c})" for c in sorted(seeds))
        raise ToolkitError(f"class {', '.join(names[c] for c in missing)} is not in the "
                           f"prediction over the image; predicted: {found}")
    if not classes:
        return []
    traced = trace_inside(tracker, score_blob, classes, region, keep_layers)
    label = seed_label(scores, kind, region)
    results = []
    for class_id in classes:
        points = np.asarray(traced[class_id].points).reshape(-1, 2)
        counts = np.asarray(traced[class_id].counts).reshape(-1)
        inside = heatmap.inside_image(points, image.shape)  # drop the padding's points
        points, counts = heatmap.merge_points(points[inside], counts[inside])
        heat = heatmap.fixation_heatmap(points, image.shape, counts, sigma=sigma,
                                        remove_outliers=remove_outliers,
                                        radius_fraction=radius_fraction,
                                        min_fraction=min_fraction)
        fixations = traced[class_id]
        results.append(ClassResult(
            class_id, names[class_id], fixations.n_seeds, points, counts, heat, {},
            fixations.dead_seeds, dict(fixations.dead), np.argwhere(label == class_id),
            fixations.layers))
    return results


def zoom_scores(scores, input_hw):
    """Class scores (C, h, w) zoomed to the input (C, H, W) on DeepLab's align-corners
    bilinear grid: exactly the x8 ``Zoom`` of the test net when H = 8(h-1)+1."""
    from python_layers import interp   # a Caffe layer module: it imports caffe

    scores = np.asarray(scores, np.float32)
    height, width = scores.shape[-2:]
    size_h, size_w = (int(s) for s in input_hw)
    if (height, width) == (size_h, size_w):
        return scores.copy()
    if height > 1 and (size_h - 1) % (height - 1) == 0:
        factor = (size_h - 1) // (height - 1)
        if factor >= 1 and interp.zoomed_size(width, factor) == size_w:
            return interp.zoom_bilinear(scores, factor)
    rows = interp.bilinear_matrix(height, size_h).astype(np.float32)
    cols = interp.bilinear_matrix(width, size_w).astype(np.float32)
    return rows @ scores @ cols.T


def prediction_from_scores(scores, input_hw, image_hw):
    """(prediction (H, W) uint8, zoomed scores (C, H, W) float32) of one image's score blob:
    the scores zoomed to the input, cropped to the image, argmax over classes (the test
    protocol, as ``evaluation.predict_image`` does with the test net)."""
    zoomed = zoom_scores(scores, input_hw)[:, :image_hw[0], :image_hw[1]]
    return zoomed.argmax(axis=0).astype(np.uint8), np.ascontiguousarray(zoomed)
