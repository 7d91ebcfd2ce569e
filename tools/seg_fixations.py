#!/usr/bin/env python
"""Segmentation fixations of one image (thesis chapter 2, SPEC section 4).

Back-tracks every predicted class from the score blob (before any zoom) to image-plane
points through the strongest contributions, then draws per class: the fixation points,
a heat map after CNN-Fixations' outlier removal, and the overlay on the image.

    python tools/seg_fixations.py                        demo: no download needed
    python tools/seg_fixations.py --model largefov --image photo.jpg
    python tools/seg_fixations.py --model my_deploy.prototxt --weights my.caffemodel \\
        --image photo.jpg --score-blob fc8_voc12 --shift full --k fraction:0.1

Input protocol (DeepLab's test protocol): BGR, minus the mean, padded at the bottom/right
to --size with the mean (0 after subtraction). An image larger than --size is resized
down (aspect kept) to fit, and every output is then in the resized image's pixels (the
summary says so); --size 0 reshapes the net to the image instead (no padding, FCN's
protocol). Classification nets (VGG-16) take the image warped to --size x --size, as
CNN-Fixations did. Fixation points in the padding are dropped.

Outputs in --out (default runs/fixations/<image stem>): <stem>_fixations.png (the figure:
image, fixations, heat-map overlay; one row per class), and per class
<stem>_<class>_overlay.png, <stem>_<class>_heat.png (grey, 0..255), <stem>_<class>_points.csv
(y,x,count: every image point inside the image, before outlier removal; count = the image
channels fixated there, which also weighs the point in the heat map), and summary.json.
"""
import argparse
import collections
import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: no glog net dumps

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from python_layers import ToolkitError, voc_io  # noqa: E402
from tools import heatmap, zoo  # noqa: E402

DEFAULT_SCORE_BLOB = "fc8_voc12"
DEFAULT_SHIFT = "partial"
DEFAULT_K = "resolution"
SHIFTS = ("none", "partial", "full")

ModelSpec = collections.namedtuple("ModelSpec", [
    "name",          # registry name, "demo" or the prototxt path
    "prototxt",      # deploy prototxt path
    "weights",       # caffemodel path
    "score_blob",    # blob the fixations start from
    "mean",          # BGR mean subtracted from the image
    "kind",          # "segmentation" or "classification"
    "class_names",   # sequence of names, or None (VOC names for 21 classes, else class_<i>)
    "note",          # a line printed before the summary, or None
])

Demo = collections.namedtuple("Demo", ["model", "image", "stem"])

ClassResult = collections.namedtuple("ClassResult", [
    "class_id", "name",
    "score_units",   # seeds at the score blob (units whose argmax is the class)
    "points",        # (M, 2) int image-plane points (y, x) inside the image
    "counts",        # (M,) image channels fixated at each point (weights in the heat map)
    "heat",          # heatmap.HeatMap
    "files",         # {kind: path} once written
])


# --- the model used when no --model is given ---------------------------------------------

DEMO_SIZE = 129
DEMO_WIDTH_DIV = 8
DEMO_SEED = 0


def random_largefov_demo(work_dir):
    """A reduced-width DeepLab-LargeFOV with fixed-seed random weights and a synthetic image.

    Needs nothing downloaded: the net comes from tools/netdef.py, the weights from
    ``zoo_nets.fill_random_weights`` (saved into ``work_dir``), the image from
    tools/synthetic.py. Random weights show the mechanics, not what a trained net attends to.
    """
    import caffe
    from tools import netdef, synthetic, zoo_nets

    prototxt = os.path.join(work_dir, "demo_deploy.prototxt")
    weights = os.path.join(work_dir, "demo_random.caffemodel")
    zoo_nets.write_net(netdef.deploy_net(width_div=DEMO_WIDTH_DIV,
                                         num_classes=synthetic.NUM_CLASSES, size=DEMO_SIZE),
                       prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    zoo_nets.fill_random_weights(net, seed=DEMO_SEED)
    net.save(weights)
    image = synthetic.render_example(np.random.RandomState(DEMO_SEED), DEMO_SIZE)[0]
    model = ModelSpec("demo", prototxt, weights, DEFAULT_SCORE_BLOB, zoo.DEEPLAB_MEAN,
                      "segmentation", synthetic.CLASS_NAMES,
                      "demo: reduced-width DeepLab-LargeFOV with random weights on a synthetic "
                      "image (pass --model and --image for real fixations)")
    return Demo(model, image, "demo")


DEMO_IMAGE = ("val", 5)  # a synthetic val image with a sofa, a chair and a dog


def trained_demo(work_dir):
    """The committed demo model (weights/demo/, trained by tools/demo.py on the synthetic
    discriminative-parts data) on one of that data set's val images, rendered on the fly.
    Falls back to random weights when the committed model is missing."""
    from tools import demo, synthetic

    if not os.path.isfile(demo.DEMO_WEIGHTS):
        return random_largefov_demo(work_dir)
    prototxt, _ = demo.demo_model_files(work_dir)
    split, index = DEMO_IMAGE
    seed = demo.RECIPE["data"]["seed"]
    image = synthetic.render_example(synthetic._example_rng(seed, split, index),
                                     demo.RECIPE["data"]["size"])[0]
    model = ModelSpec("demo", prototxt, demo.DEMO_WEIGHTS, DEFAULT_SCORE_BLOB, zoo.DEEPLAB_MEAN,
                      "segmentation", synthetic.CLASS_NAMES,
                      "demo: the committed reduced-width DeepLab-LargeFOV trained on synthetic "
                      "data (weights/demo/), on a synthetic val image; pass --model and "
                      "--image for your own")
    return Demo(model, image, "demo")


def default_demo(work_dir):
    """What runs with no --model."""
    return trained_demo(work_dir)


# --- model, weights and input ------------------------------------------------------------

def resolve_model(model, weights=None, score_blob=None, mean=None):
    """A ``ModelSpec`` from a registry name (tools/zoo.py) or a deploy prototxt path."""
    if model in zoo.MODELS:
        info = zoo.MODELS[model]
        prototxt = zoo.deploy_path(model)
        if weights is None:
            weights = zoo.weights_path(model)
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
                           f"{', '.join(zoo.MODELS)}")
    if not os.path.isfile(model):
        raise ToolkitError(f"deploy prototxt not found: {model}")
    if weights is None:
        raise ToolkitError(f"--weights is required with a prototxt ({model})")
    return ModelSpec(model, model, weights, score_blob or DEFAULT_SCORE_BLOB,
                     tuple(mean or zoo.DEEPLAB_MEAN), None, None, None)


def check_gpu(device):
    """Fail cleanly (not with Caffe's abort) when this Caffe cannot use GPU ``device``."""
    probe = "import caffe, sys; caffe.set_device(int(sys.argv[1])); caffe.set_mode_gpu()"
    done = subprocess.run([sys.executable, "-c", probe, str(device)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ToolkitError(f"cannot use GPU {device}: this Caffe is a CPU-only build or the "
                           "device does not exist; run without --gpu")


def read_graph(prototxt):
    """The net's layer graph (tools/fixations.py), read before Caffe sees the file: a
    prototxt Caffe cannot parse, or a layer type this Caffe lacks, would abort the process."""
    import caffe
    from tools import fixations

    if not os.path.isfile(prototxt):
        raise ToolkitError(f"deploy prototxt not found: {prototxt}; regenerate prototxt/ "
                           "with `make prototxt`")
    graph = fixations.NetGraph.from_prototxt(prototxt)
    known = set(caffe.layer_type_list())
    for layer in graph.layers:
        if layer.type not in known:
            raise ToolkitError(f"{prototxt}: layer {layer.name!r} has type {layer.type!r}, "
                               "which this Caffe lacks (DeepLab-only layers such as Interp "
                               "must be replaced; see python_layers/)")
    return graph


def load_net(spec, gpu=None):
    """The deploy net with its weights, shapes checked before Caffe could abort on them."""
    import caffe
    from tools import netdef

    if gpu is not None:
        check_gpu(gpu)
        caffe.set_device(gpu)
        caffe.set_mode_gpu()
    else:
        caffe.set_mode_cpu()
    read_graph(spec.prototxt)
    if not os.path.isfile(spec.weights):
        raise ToolkitError(f"weights not found: {spec.weights}")
    net = caffe.Net(spec.prototxt, caffe.TEST)
    netdef.load_weights(net, spec.weights)
    if "data" not in net.blobs:
        raise ToolkitError(f"{spec.prototxt} has no input blob named 'data'")
    if spec.score_blob not in net.blobs:
        raise ToolkitError(f"score blob {spec.score_blob!r} is not in {spec.prototxt}; pass "
                           "--score-blob (the scores before any zoom, e.g. fc8_voc12)")
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
    from python_layers import seg_data

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


def class_names_for(num_classes, names=None):
    """Names of the net's classes: given ones, VOC's for 21 classes, else class_<i>."""
    if names is not None and len(names) == num_classes:
        return tuple(names)
    if names is not None:
        raise ToolkitError(f"{len(names)} class names given for a net with {num_classes} classes")
    if num_classes == len(voc_io.VOC_CLASSES):
        return voc_io.VOC_CLASSES
    return tuple(f"class_{index}" for index in range(num_classes))


def parse_classes(text, names):
    """Class ids from 'cat,dog' or '8,12' (names or indices)."""
    if text is None:
        return None
    chosen = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < len(names):
            chosen.append(int(item))
        elif item in names:
            chosen.append(names.index(item))
        else:
            raise ToolkitError(f"unknown class {item!r}; classes are 0..{len(names) - 1} or "
                               f"names such as {', '.join(names[:6])} ...")
    return chosen


def parse_mean(text):
    """A BGR mean from 'B,G,R'."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise ToolkitError(f"--mean must be three comma-separated numbers B,G,R, got {text!r}")
    return values


# --- the fixations -----------------------------------------------------------------------

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
    """The back-tracker of tools/fixations.py for this net."""
    from tools import fixations

    if shift not in SHIFTS:
        raise ToolkitError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")
    options = dict(shift=shift, k=fixations.KStrategy.parse(k))
    if max_units is not None:
        options["max_units"] = max_units
    return fixations.BackTracker(net, fixations.NetGraph.from_prototxt(prototxt), **options)


def trace_inside(tracker, score_blob, classes, region=None):
    """``tracker.trace`` seeded only by the score units over the image (``region``); the
    units over the padding count as background (so background, when traced, gets them)."""
    return tracker.trace(score_blob, item=0, classes=list(classes), skip_background=False,
                         seed_region=region)


def run_fixations(net, tracker, data, image, score_blob, kind="segmentation", classes=None,
                  skip_background=True, names=None, sigma=None, remove_outliers=True,
                  radius_fraction=heatmap.RADIUS_FRACTION, min_fraction=heatmap.MIN_FRACTION):
    """Forward ``data``, back-track the chosen classes and build their heat maps.

    Returns a list of ``ClassResult`` (files empty), in class order. ``classes`` None: all
    classes predicted over the image (background skipped when ``skip_background``); a class
    not predicted there is an error naming the predicted ones. Seeds are the score units
    over the image (``image_region``), never those over the padding; points in the padding
    are dropped.
    """
    from tools import fixations

    fixations.run_forward(net, data[None], "data")
    scores = net.blobs[score_blob].data
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
    traced = trace_inside(tracker, score_blob, classes, region)
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
        results.append(ClassResult(class_id, names[class_id], traced[class_id].n_seeds,
                                   points, counts, heat, {}))
    return results


def _safe(name):
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def write_outputs(out_dir, stem, image, results, alpha=heatmap.OVERLAY_ALPHA):
    """Write the figure, per-class overlays, heat maps and point CSVs; returns results with
    their ``files`` filled, and the figure's path."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for result in results:
        base = os.path.join(out_dir, f"{_safe(stem)}_{_safe(result.name)}")
        files = {
            "overlay": heatmap.write_png(base + "_overlay.png",
                                         heatmap.overlay_heatmap(image, result.heat.heat, alpha)),
            "heat": heatmap.write_heatmap_png(base + "_heat.png", result.heat.heat),
            "points": heatmap.write_points_csv(base + "_points.csv", result.points,
                                               result.counts),
        }
        written.append(result._replace(files=files))
    rows = [heatmap.FigureRow(r.name, r.points, r.heat.inliers, r.heat.heat) for r in written]
    figure = heatmap.save_fixation_figure(os.path.join(out_dir, f"{_safe(stem)}_fixations.png"),
                                          image, rows, alpha)
    return written, figure


def kept_points(result):
    """Image points (distinct pixels) that survived outlier removal."""
    return int(np.count_nonzero(result.heat.inliers))


def summary_line(result):
    """One line per class: name, seeds, image points, heat-map peak, files."""
    peak = ("none" if result.heat.peak is None
            else f"(y={result.heat.peak[0]}, x={result.heat.peak[1]})")
    return (f"{result.name} ({result.class_id}): {result.score_units} score units -> "
            f"{len(result.points)} image points ({kept_points(result)} kept after outlier "
            f"removal); heat peak {peak}; files: {', '.join(result.files.values())}")


def summary_record(result):
    """The JSON record of one class (file names relative to the output folder)."""
    return {
        "class_id": int(result.class_id), "class": result.name,
        "score_units": int(result.score_units), "image_points": int(len(result.points)),
        "data_units": int(result.counts.sum()), "kept_points": kept_points(result),
        "heat_peak_yx": list(result.heat.peak) if result.heat.peak is not None else None,
        "files": {k: os.path.basename(v) for k, v in result.files.items()},
    }


# --- command line ------------------------------------------------------------------------

def default_max_units():
    """The back-tracker's own point budget (shown in --help)."""
    import inspect
    from tools import fixations

    return inspect.signature(fixations.BackTracker).parameters["max_units"].default


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    known = ", ".join(zoo.MODELS)
    parser.add_argument("--model", help="deploy prototxt path or a known model name "
                        f"({known}); default: a demo that needs nothing downloaded (reduced-"
                        "width DeepLab-LargeFOV with random weights on a synthetic image)")
    parser.add_argument("--weights", help="caffemodel (default for a known model: weights/"
                        "<its file>, fetched by `python weights/fetch.py <name>`)")
    parser.add_argument("--image", help="image file (JPEG, PNG, ...); required with --model")
    parser.add_argument("--score-blob", help="blob the fixations start from: class scores "
                        "before any zoom (default: the model's from tools/zoo.py, else "
                        f"{DEFAULT_SCORE_BLOB})")
    parser.add_argument("--shift", choices=SHIFTS, default=DEFAULT_SHIFT,
                        help="spatial shift at convolutions: none (window centre), full "
                        "(strongest tap), partial (full where dilation is 1, centre where it "
                        f"is larger; the thesis's choice) (default {DEFAULT_SHIFT})")
    parser.add_argument("--k", default=DEFAULT_K,
                        help="K strategy: a number ('1'), 'fraction:0.1' (smallest K reaching "
                        "that share of a unit's positive contribution), 'resolution' (K = "
                        "the layer's spatial up-sampling factor), or per layer "
                        f"'conv5_1=2,default=1' (default {DEFAULT_K})")
    parser.add_argument("--max-units", type=int, help="budget of fixation units per blob and "
                        "class; the trace stops with an error beyond it (default: "
                        f"{default_max_units()}, tools/fixations.py's)")
    parser.add_argument("--classes", help="comma-separated class names or indices to trace "
                        "(default: every predicted class but background; for a classifier "
                        "the top-1 class)")
    parser.add_argument("--include-background", action="store_true",
                        help="also trace the background class (class 0) by default")
    parser.add_argument("--class-names", help="comma-separated names of the net's classes "
                        "(default: VOC's 21 names for 21 classes, else class_<i>)")
    parser.add_argument("--size", type=int, help="input side: images are padded bottom/right "
                        "to it (larger ones resized down to fit); 0 reshapes the net to the "
                        "image (default: the deploy prototxt's input size)")
    parser.add_argument("--mean", help="BGR mean subtracted, 'B,G,R' (default: the model's; "
                        "DeepLab's 104.008,116.669,122.675 for a prototxt)")
    parser.add_argument("--sigma", type=float, help="Gaussian blur of the heat map in pixels "
                        f"(default {heatmap.SIGMA_FRACTION} x the image diagonal)")
    parser.add_argument("--radius-fraction", type=float, default=heatmap.RADIUS_FRACTION,
                        help="outlier removal radius as a fraction of the image diagonal "
                        f"(default {heatmap.RADIUS_FRACTION})")
    parser.add_argument("--min-fraction", type=float, default=heatmap.MIN_FRACTION,
                        help="a point is kept when more than this fraction of all points lie "
                        f"within the radius (default {heatmap.MIN_FRACTION})")
    parser.add_argument("--no-outlier-removal", action="store_true",
                        help="build heat maps from all points")
    parser.add_argument("--alpha", type=float, default=heatmap.OVERLAY_ALPHA,
                        help=f"opacity of the heat map over the image (default "
                        f"{heatmap.OVERLAY_ALPHA})")
    parser.add_argument("--gpu", type=int, nargs="?", const=0, default=None, metavar="ID",
                        help="run Caffe on this GPU (default: CPU; --gpu alone means GPU 0)")
    parser.add_argument("--out", help="output folder (default runs/fixations/<image stem>)")
    return parser


def check_heatmap_options(args):
    """Reject heat-map options outside their ranges, naming the option."""
    if args.radius_fraction <= 0:
        raise ToolkitError(f"--radius-fraction must be > 0, got {args.radius_fraction}")
    if not 0 <= args.min_fraction < 1:
        raise ToolkitError(f"--min-fraction must lie in [0, 1), got {args.min_fraction}")
    if not 0 <= args.alpha <= 1:
        raise ToolkitError(f"--alpha must lie in [0, 1], got {args.alpha}")
    if args.sigma is not None and args.sigma < 0:
        raise ToolkitError(f"--sigma must be >= 0, got {args.sigma}")


def run(args, work_dir):
    """Everything but argument parsing; returns the printed lines."""
    if args.model is None:
        if args.image is not None or args.weights is not None:
            raise ToolkitError("--image and --weights need --model (a prototxt or one of "
                               f"{', '.join(zoo.MODELS)})")
        demo = default_demo(work_dir)
        spec, image, stem = demo.model, demo.image, demo.stem
        if args.score_blob:
            spec = spec._replace(score_blob=args.score_blob)
        if args.mean:
            spec = spec._replace(mean=parse_mean(args.mean))
    else:
        if args.image is None:
            raise ToolkitError("--image is required with --model")
        spec = resolve_model(args.model, args.weights, args.score_blob, parse_mean(args.mean))
        image = voc_io.read_image(args.image)
        stem = os.path.splitext(os.path.basename(args.image))[0]
    check_heatmap_options(args)

    net = load_net(spec, args.gpu)
    kind = net_kind(net, spec)
    size = net.blobs["data"].data.shape[2] if args.size is None else args.size
    if size < 0 or (kind == "classification" and size == 0):
        raise ToolkitError(f"--size must be positive (0 only for segmentation nets), got {size}")
    data, image, note = prepare_input(image, size, spec.mean, kind)
    names = args.class_names.split(",") if args.class_names else spec.class_names
    names = class_names_for(net.blobs[spec.score_blob].data.shape[1], names)
    tracker = make_tracker(net, spec.prototxt, args.shift, args.k, args.max_units)
    results = run_fixations(
        net, tracker, data, image, spec.score_blob, kind, parse_classes(args.classes, names),
        skip_background=not args.include_background, names=names, sigma=args.sigma,
        remove_outliers=not args.no_outlier_removal, radius_fraction=args.radius_fraction,
        min_fraction=args.min_fraction)
    out_dir = args.out or os.path.join("runs", "fixations", _safe(stem))
    results, figure = write_outputs(out_dir, stem, image, results, args.alpha)
    def kept(path):  # the demo's generated files live in work_dir and are deleted
        return "(generated, not kept)" if path.startswith(work_dir) else path

    voc_io.write_json(os.path.join(out_dir, "summary.json"), {
        "model": spec.name, "prototxt": kept(spec.prototxt), "weights": kept(spec.weights),
        "score_blob": spec.score_blob, "shift": args.shift, "k": args.k,
        "image_size_hw": list(image.shape[:2]), "input_size": int(size),
        "figure": os.path.basename(figure), "classes": [summary_record(r) for r in results]})
    lines = [line for line in (spec.note, note) if line]
    if not results:
        lines.append("no class to trace: the net predicts only background "
                     "(pass --include-background or --classes)")
    lines += [summary_line(result) for result in results]
    lines.append(f"figure: {figure}")
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="seg_fixations_") as work_dir:
            for line in run(args, work_dir):
                print(line)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
