#!/usr/bin/env python
"""The four experiments of thesis chapter 2 (sections 2.3 and 2.4, Figures 2.6 to 2.11).

    python tools/experiments.py location --model largefov --data-root data/VOCdevkit/VOC2012 \\
        --list data/lists/val.txt --out runs/experiments
    python tools/experiments.py {location,shift,k-needed,salient,all} --model deploy.prototxt \\
        --weights my.caffemodel --data-root ROOT --list LIST --out OUT [--limit N] [--gpu]

1. location (Figure 2.6): per image and per class detected at the score blob (background
   skipped), the % of the class's image-plane fixation points (weighted by the data channels
   fixated there, inside the image) that lie on the class's ground-truth mask; averaged per
   class over the images, beside the class IoU over the same images (one confusion matrix
   from the same forward passes: scores zoomed bilinearly to the input as DeepLab's x8
   Interp, cropped to the image, argmax). Points on void (255) pixels are left out of both
   counts (``void="skip"``) or count as outside (``void="outside"``).
   -> location.csv (class, images, mean_pct_inside, iou; a last 'mean' row averages the class
   rows above it) and location.png.
2. shift (Figure 2.7): experiment 1's % inside under the no / partial / full shift variants.
   -> shift.csv (class, images, none, partial, full; + 'mean' row) and shift.png.
3. k-needed (Figure 2.8): at every fixation unit of every layer with a choice, the K that
   captures x of its positive contribution (x = 0.1 ... 0.9), averaged over all units of all
   classes of all images. -> k_needed.csv (layer, units, k_at_10 ... k_at_90, input side
   first) and k_needed.png (curves and a layer x x heat map).
4. salient (Figures 2.9 to 2.11): per image and detected class present in the ground truth,
   mask the densest fixation region (the connected part of heat >= --mask-threshold around
   the heat map's peak, or a disc of --mask-radius x the image diagonal around it) with the
   mean colour (exactly 0 after mean subtraction), or the synthetic data set's true part
   (--mask parts), segment again, and compare the class's score map (zoomed to the image)
   over the object's ground-truth pixels outside the mask. -> salient.csv (image, class,
   mean_before, mean_after, drop, drop_pct, acc_before, acc_after, object_pixels,
   mask_pixels), salient.png (per-class means) and salient/<image>.png for the first
   --figures images: original | masked | prediction before | after | activation before |
   after | difference (before - after).

Per-image results are cached atomically in OUT/cache/<experiment>/<image id>.json with the
settings in OUT/cache/<experiment>.settings.json: a rerun skips cached images, refuses a
cache written with other settings (--no-resume clears it) and rebuilds the tables from the
cache. ``all`` runs the four in one pass: one forward per image, one trace per shift variant,
and one more forward per masked object.
"""
import argparse
import collections
import csv
import io
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("GLOG_minloglevel", "2")  # before Caffe loads: no glog net dumps

import numpy as np  # noqa: E402

from python_layers import ToolkitError, interp, seg_data, voc_io  # noqa: E402
from tools import heatmap, metrics  # noqa: E402
from tools import seg_fixations as sf  # noqa: E402

EXPERIMENTS = ("location", "shift", "k-needed", "salient")
SHIFTS = ("none", "partial", "full")
VOID_RULES = ("skip", "outside")
MASK_MODES = ("heat", "disc")
FRACTIONS = tuple(round(x / 10, 1) for x in range(1, 10))
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_MASK_RADIUS = 0.1
DEFAULT_FIGURES = 10
CACHE_VERSION = 1
FILE_STEMS = {"location": "location", "shift": "shift", "k-needed": "k_needed",
              "salient": "salient"}

SALIENT_COLUMNS = ("image", "class", "mean_before", "mean_after", "drop", "drop_pct",
                   "acc_before", "acc_after", "object_pixels", "mask_pixels")


# --- pure functions (checked directly by the tests) ----------------------------------------

def percent_inside(points, counts, label, class_id, void="skip",
                   ignore_label=voc_io.IGNORE_LABEL):
    """(% inside, weight inside, weight counted) of one class's image fixation points.

    A point weighs its ``counts`` (data channels fixated there). Inside = the label there is
    ``class_id``. Points on ``ignore_label`` are left out (``void="skip"``) or count as
    outside (``"outside"``). The % is NaN when no point is counted.
    """
    if void not in VOID_RULES:
        raise ToolkitError(f"void must be one of {', '.join(VOID_RULES)}, got {void!r}")
    points = np.asarray(points, np.int64).reshape(-1, 2)
    counts = np.asarray(counts, np.float64).reshape(-1)
    if len(points) != len(counts):
        raise ValueError(f"{len(points)} points but {len(counts)} counts")
    label = np.asarray(label)
    keep = heatmap.inside_image(points, label.shape)
    points, counts = points[keep], counts[keep]
    values = label[points[:, 0], points[:, 1]]
    counted = np.ones(len(points), bool) if void == "outside" else values != ignore_label
    total = float(counts[counted].sum())
    inside = float(counts[counted & (values == class_id)].sum())
    return (100.0 * inside / total if total > 0 else float("nan")), inside, total


def zoom_scores(scores, input_hw):
    """Class scores (C, h, w) zoomed to the input (C, H, W) on DeepLab's align-corners
    bilinear grid: exactly the x8 ``Zoom`` of the test net when H = 8(h-1)+1."""
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


def predict(scores, input_hw, image_hw):
    """(prediction (H, W) uint8, zoomed scores (C, H, W) float32) of one image: the scores
    zoomed to the input, cropped to the image, argmax over classes (the test protocol)."""
    zoomed = zoom_scores(scores, input_hw)[:, :image_hw[0], :image_hw[1]]
    return zoomed.argmax(axis=0).astype(np.uint8), np.ascontiguousarray(zoomed)


def check_mask_options(mode, threshold, radius_fraction):
    """Reject densest-region options outside their ranges, naming the option."""
    if mode not in MASK_MODES:
        raise ToolkitError(f"mask mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    if not 0 < threshold <= 1:
        raise ToolkitError(f"--mask-threshold must lie in (0, 1], got {threshold}")
    if radius_fraction <= 0:
        raise ToolkitError(f"--mask-radius must be > 0, got {radius_fraction}")


def densest_region(heat, mode="heat", threshold=DEFAULT_MASK_THRESHOLD,
                   radius_fraction=DEFAULT_MASK_RADIUS):
    """Bool (H, W) mask of the densest fixations of a [0, 1] heat map.

    ``"heat"``: the 8-connected region of ``heat >= threshold`` that holds the peak;
    ``"disc"``: the pixels within ``radius_fraction`` x the image diagonal of the peak.
    All False when the heat map is empty (no fixations).
    """
    from scipy import ndimage

    check_mask_options(mode, threshold, radius_fraction)
    heat = np.asarray(heat, np.float64)
    if heat.size == 0 or heat.max(initial=0.0) <= 0:
        return np.zeros(heat.shape, bool)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    if mode == "disc":
        radius = radius_fraction * float(np.hypot(*heat.shape))
        yy, xx = np.ogrid[:heat.shape[0], :heat.shape[1]]
        return (yy - peak[0]) ** 2 + (xx - peak[1]) ** 2 <= radius ** 2
    components, _ = ndimage.label(heat >= threshold, structure=np.ones((3, 3), bool))
    return components == components[peak]


def mask_with_mean(image, mask, mean):
    """The BGR image with ``mask`` painted in the (rounded) mean colour."""
    out = np.array(image, copy=True)
    out[np.asarray(mask, bool)] = np.clip(np.rint(np.asarray(mean, np.float64)), 0, 255)
    return out


def masked_input(image, mask, size, mean):
    """(masked image, net input): ``mask`` painted in the mean colour, and the input
    prepared as any other (``seg_fixations.prepare_input``) with the masked pixels exactly
    0, the mean after subtraction (the rounded colour alone would leave up to 0.5)."""
    mask = np.asarray(mask, bool)
    masked_image = mask_with_mean(image, mask, mean)
    data, _, _ = sf.prepare_input(masked_image, size, mean)
    data[:, :mask.shape[0], :mask.shape[1]][:, mask] = 0
    return masked_image, data


def activation_change(before, after, region):
    """Mean of two activation maps over ``region``, their drop (before - after) and the drop
    in % of |before| (NaN when the region is empty or before is 0)."""
    region = np.asarray(region, bool)
    if not region.any():
        nan = float("nan")
        return dict(mean_before=nan, mean_after=nan, drop=nan, drop_pct=nan)
    mean_before = float(np.asarray(before, np.float64)[region].mean())
    mean_after = float(np.asarray(after, np.float64)[region].mean())
    drop = mean_before - mean_after
    drop_pct = 100.0 * drop / abs(mean_before) if mean_before != 0 else float("nan")
    return dict(mean_before=mean_before, mean_after=mean_after, drop=drop, drop_pct=drop_pct)


def class_accuracy(prediction, region, class_id):
    """Fraction of the ``region`` pixels predicted as ``class_id`` (NaN for an empty region)."""
    region = np.asarray(region, bool)
    if not region.any():
        return float("nan")
    return float((np.asarray(prediction)[region] == class_id).mean())


# --- tables from the per-image records ------------------------------------------------------

def _mean(values):
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def location_table(records, names):
    """Rows {class, images, mean_pct_inside, iou} per object class, then a 'mean' row
    (mean of the rows above), and the scores of the summed confusion matrix."""
    num_classes = len(names)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    per_class = collections.defaultdict(list)
    for record in records:
        confusion += np.asarray(record["confusion"], np.int64)
        for class_id, entry in record["classes"].items():
            if entry["pct_inside"] is not None:
                per_class[int(class_id)].append(entry["pct_inside"])
    scores = metrics.scores(confusion)
    rows = [dict(**{"class": names[c]}, images=len(per_class[c]),
                 mean_pct_inside=_mean(per_class[c]), iou=float(scores["class_iou"][c]))
            for c in range(1, num_classes)]
    rows.append({"class": "mean", "images": len(records),
                 "mean_pct_inside": _mean([r["mean_pct_inside"] for r in rows]),
                 "iou": _mean([r["iou"] for r in rows])})
    return rows, scores


def shift_table(records, names):
    """Rows {class, images, none, partial, full} (mean % inside per variant), then 'mean'."""
    values = collections.defaultdict(list)
    images = collections.Counter()
    for record in records:
        detected = set()
        for variant in SHIFTS:
            for class_id, entry in record["variants"][variant].items():
                detected.add(int(class_id))
                if entry["pct_inside"] is not None:
                    values[(int(class_id), variant)].append(entry["pct_inside"])
        images.update(detected)
    rows = []
    for c in range(1, len(names)):
        row = {"class": names[c], "images": images[c]}
        row.update({variant: _mean(values[(c, variant)]) for variant in SHIFTS})
        rows.append(row)
    mean_row = {"class": "mean", "images": len(records)}
    mean_row.update({variant: _mean([r[variant] for r in rows]) for variant in SHIFTS})
    return rows + [mean_row]


def k_needed_table(records, fractions, layer_order=()):
    """Rows {layer, units, k_at_<x>...}: the mean K over every unit of every image, layers
    in ``layer_order`` (the net's order) and then any others in the order first seen."""
    sums, counts, seen = {}, collections.Counter(), []
    for record in records:
        for name, units, layer_sums in record["layers"]:
            if name not in sums:
                sums[name] = np.zeros(len(fractions))
                seen.append(name)
            sums[name] += np.asarray(layer_sums, np.float64)
            counts[name] += int(units)
    order = [name for name in layer_order if name in sums]
    order += [name for name in seen if name not in order]
    rows = []
    for name in order:
        means = sums[name] / counts[name] if counts[name] else np.full(len(fractions), np.nan)
        row = {"layer": name, "units": counts[name]}
        row.update({fraction_column(x): float(m) for x, m in zip(fractions, means)})
        rows.append(row)
    return rows


def fraction_column(fraction):
    """CSV column of a fraction: 0.1 -> 'k_at_10'."""
    return f"k_at_{round(100 * float(fraction), 6):g}"


def salient_table(records):
    """The rows of every record, in list order."""
    return [row for record in records for row in record["rows"]]


# --- files -------------------------------------------------------------------------------

def _cell(value):
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{float(value):.4f}"
    return str(value)


def write_csv(path, rows, columns):
    """Write dict rows as CSV (NaN and None as empty cells, floats with 4 decimals)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    voc_io.write_text(path, out.getvalue())
    return path


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path, dpi=100):
    figure.tight_layout()
    with voc_io.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path


def _grouped_bars(ax, labels, series, ylabel):
    """Grouped bars: ``series`` is [(legend, values)] over ``labels``; NaN bars are left out."""
    positions = np.arange(len(labels))
    width = 0.8 / max(len(series), 1)
    for index, (legend, values) in enumerate(series):
        values = np.asarray(values, np.float64)
        ax.bar(positions + (index - (len(series) - 1) / 2) * width,
               np.nan_to_num(values, nan=0.0), width, label=legend)
    ax.set_xticks(positions)
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def location_figure(path, rows):
    """Figure 2.6: per class, % of fixations inside the object beside the IoU x 100."""
    figure = _new_figure(max(6.0, 0.45 * len(rows) + 2), 4.0)
    ax = figure.subplots()
    _grouped_bars(ax, [r["class"] for r in rows],
                  [("% fixations inside the object", [r["mean_pct_inside"] for r in rows]),
                   ("IoU x 100", [100 * r["iou"] for r in rows])], "%")
    ax.set_ylim(0, 100)
    ax.set_title("Fixation location (thesis Figure 2.6)")
    return _save_figure(figure, path)


def shift_figure(path, rows):
    """Figure 2.7: per class, % of fixations inside the object for each shift variant."""
    figure = _new_figure(max(6.0, 0.55 * len(rows) + 2), 4.0)
    ax = figure.subplots()
    _grouped_bars(ax, [r["class"] for r in rows],
                  [(f"{variant} shift", [r[variant] for r in rows]) for variant in SHIFTS],
                  "% fixations inside the object")
    ax.set_ylim(0, 100)
    ax.set_title("Spatial shift variants (thesis Figure 2.7)")
    return _save_figure(figure, path)


def k_needed_figure(path, rows, fractions):
    """Figure 2.8: K needed per layer to capture x of a unit's activation: one curve per
    layer (log K) and the same numbers as a layer x x heat map."""
    figure = _new_figure(12.0, max(4.5, 0.25 * len(rows) + 1.5))
    curves, grid = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    percents = [100 * float(x) for x in fractions]
    table = np.array([[r[fraction_column(x)] for x in fractions] for r in rows], np.float64)
    table = table.reshape(len(rows), len(fractions))
    for row, values in zip(rows, table):
        curves.plot(percents, values, marker="o", markersize=3, label=row["layer"])
    if rows and np.nanmax(table, initial=0) > 0:
        curves.set_yscale("log")
    curves.set_xlabel("x: % of the unit's positive contribution captured")
    curves.set_ylabel("mean K needed")
    curves.set_title("K needed per layer (thesis Figure 2.8)")
    curves.grid(alpha=0.3)
    if rows:
        curves.legend(fontsize=6, ncol=2)
    shown = grid.imshow(np.log10(np.where(table > 0, table, np.nan)) if rows else
                        np.zeros((1, len(fractions))), aspect="auto", cmap="viridis")
    grid.set_xticks(range(len(fractions)))
    grid.set_xticklabels([f"{p:g}" for p in percents], fontsize=8)
    grid.set_yticks(range(len(rows)))
    grid.set_yticklabels([r["layer"] for r in rows], fontsize=7)
    grid.set_xlabel("x (%)")
    figure.colorbar(shown, ax=grid, label="log10 mean K")
    return _save_figure(figure, path)


def salient_summary_figure(path, rows, names=()):
    """Per class (in ``names`` order): mean activation over the unmasked object pixels
    before / after masking, and the class pixel accuracy there before / after."""
    present = {r["class"] for r in rows}
    classes = [n for n in names if n in present] + sorted(present - set(names))
    by_class = {c: [r for r in rows if r["class"] == c] for c in classes}

    def means(key):
        return [_mean([r[key] for r in by_class[c]]) for c in classes]

    figure = _new_figure(max(8.0, 1.2 * len(classes) + 4), 4.0)
    activation, accuracy = figure.subplots(1, 2)
    _grouped_bars(activation, classes, [("before masking", means("mean_before")),
                                        ("after masking", means("mean_after"))],
                  "mean class score (unmasked object pixels)")
    activation.axhline(0, color="black", linewidth=0.5)
    activation.set_title("Salient parts: activation (thesis Figures 2.10, 2.11)")
    _grouped_bars(accuracy, classes, [("before masking", means("acc_before")),
                                      ("after masking", means("acc_after"))],
                  "class pixel accuracy (unmasked object pixels)")
    accuracy.set_ylim(0, 1)
    accuracy.set_title("Still segmented? (thesis Figure 2.9)")
    return _save_figure(figure, path)


SalientPanel = collections.namedtuple("SalientPanel", [
    "class_name", "object_mask", "masked_image", "mask", "prediction_before",
    "prediction_after", "activation_before", "activation_after"])


def salient_image_figure(path, image, panels, dpi=100):
    """Figures 2.10/2.11 for one image, a row per class: original (ground-truth object
    outlined) | masked (mask outlined) | prediction before | after (VOC palette) | class
    activation before | after (one colour scale) | difference (before - after)."""
    palette = voc_io.voc_palette()
    image = np.asarray(image)
    height, width = image.shape[:2]
    panel = 2.0
    figure = _new_figure(7 * panel, max(1, len(panels)) * panel * height / max(width, 1) + 0.6)
    axes = figure.subplots(max(1, len(panels)), 7, squeeze=False)
    for row_axes, p in zip(axes, panels):
        low = min(p.activation_before.min(), p.activation_after.min())
        high = max(p.activation_before.max(), p.activation_after.max())
        difference = p.activation_before - p.activation_after
        reach = max(float(np.abs(difference).max()), 1e-12)
        shown = [
            (image[..., ::-1], {}, "original"),
            (p.masked_image[..., ::-1], {}, f"masked ({int(p.mask.sum())} px)"),
            (palette[p.prediction_before], {}, "prediction before"),
            (palette[p.prediction_after], {}, "prediction after"),
            (p.activation_before, dict(cmap="jet", vmin=low, vmax=high),
             f"{p.class_name} before"),
            (p.activation_after, dict(cmap="jet", vmin=low, vmax=high), f"{p.class_name} after"),
            (difference, dict(cmap="RdBu_r", vmin=-reach, vmax=reach), "before - after"),
        ]
        for ax, (picture, style, title) in zip(row_axes, shown):
            ax.imshow(picture, **style)
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
        if p.object_mask.any():   # the ground-truth object on the original
            row_axes[0].contour(p.object_mask.astype(float), levels=[0.5], colors="white",
                                linewidths=0.7)
        if p.mask.any():
            row_axes[1].contour(p.mask.astype(float), levels=[0.5], colors="red",
                                linewidths=0.7)
    for ax in axes.ravel()[7 * len(panels):]:
        ax.set_axis_off()
    return _save_figure(figure, path, dpi)


# --- caching -------------------------------------------------------------------------------

def _json_safe(value):
    """NaN -> None, NumPy scalars and arrays -> Python, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return value


def _from_json(value):
    """None -> NaN for the float fields of a salient row."""
    return float("nan") if value is None else value


class ResultCache:
    """Per-image records of one experiment in ``<out>/cache/<experiment>/<image id>.json``,
    valid for the settings in ``<out>/cache/<experiment>.settings.json`` (outside the
    records' folder, so that no image id can clash with it)."""

    def __init__(self, out_dir, experiment, settings, resume=True):
        self.folder = os.path.join(out_dir, "cache", experiment)
        self.experiment = experiment
        settings = _json_safe(settings)
        settings_path = self.folder + ".settings.json"
        if resume:
            differ = voc_io.settings_differ(settings_path, settings)
            if differ:
                raise ToolkitError(
                    f"{self.folder} holds {experiment} results of other settings (differ in: "
                    f"{', '.join(differ)}); pass another --out, or --no-resume to discard them")
        if not resume and os.path.isdir(self.folder):
            for name in os.listdir(self.folder):
                if name.endswith(".json"):
                    os.unlink(os.path.join(self.folder, name))
        voc_io.write_json(settings_path, settings)

    def path(self, image_id):
        return os.path.join(self.folder, image_id + ".json")

    def has(self, image_id):
        return os.path.isfile(self.path(image_id))

    def read(self, image_id):
        with open(self.path(image_id)) as f:
            return json.load(f)

    def write(self, image_id, record):
        voc_io.write_json(self.path(image_id), _json_safe(record))


# --- the per-image work ---------------------------------------------------------------------

def _image_points(class_fixations, image_shape):
    """(points, counts) of one traced class inside the image, duplicates merged."""
    points = np.asarray(class_fixations.points).reshape(-1, 2)
    counts = np.asarray(class_fixations.counts).reshape(-1)
    inside = heatmap.inside_image(points, image_shape)
    return heatmap.merge_points(points[inside], counts[inside])


class _Image:
    """One image of the list once forwarded: input, label, fixations of the main shift,
    scores, prediction and the seed region."""

    def __init__(self, run, image_path, label_path):
        self.run = run
        self.id = _image_id(image_path)
        image, self.label = seg_data.load_pair(image_path, label_path, run.num_classes)
        self.data, self.image, _ = sf.prepare_input(image, run.size, run.spec.mean)
        blob = run.spec.score_blob
        self.results = sf.run_fixations(run.net, run.tracker(run.shift), self.data, self.image,
                                        blob, names=run.names)
        self.scores = run.net.blobs[blob].data[0].copy()
        self.region = sf.image_region(run.net.blobs[blob].data.shape, self.data.shape[1:],
                                      self.image.shape[:2])
        self.classes = [r.class_id for r in self.results]
        self.prediction, self.zoomed = predict(self.scores, self.data.shape[1:],
                                               self.image.shape[:2])

    def points(self, shift):
        """{class: (points, counts)} of the detected classes under ``shift``."""
        if shift == self.run.shift:
            return {r.class_id: (r.points, r.counts) for r in self.results}
        if not self.classes:
            return {}
        traced = sf.trace_inside(self.run.tracker(shift), self.run.spec.score_blob,
                                 self.classes, self.region)
        return {c: _image_points(traced[c], self.image.shape) for c in self.classes}


def _location_entries(image, points_by_class, void):
    entries = {}
    for class_id, (points, counts) in points_by_class.items():
        pct, inside, total = percent_inside(points, counts, image.label, class_id, void)
        entries[str(class_id)] = dict(pct_inside=pct, weight_inside=inside,
                                      weight_counted=total, points=len(points))
    return entries


def location_record(image, run):
    return dict(image=image.id, classes=_location_entries(image, image.points(run.shift),
                                                           run.void),
                confusion=metrics.confusion_matrix(image.prediction, image.label,
                                                   run.num_classes))


def shift_record(image, run):
    return dict(image=image.id, variants={
        variant: _location_entries(image, image.points(variant), run.void)
        for variant in SHIFTS})


def k_needed_record(image, run):
    from tools import fixations

    if not image.classes:
        return dict(image=image.id, layers=[])
    blob = run.spec.score_blob
    means, counts = fixations.k_needed_per_layer(
        run.tracker(run.shift), blob, items=(0,), classes=image.classes,
        skip_background=False, fractions=np.asarray(run.fractions), return_counts=True,
        seed_region=image.region)
    return dict(image=image.id, layers=[[name, int(counts[name]),
                                         (np.asarray(means[name]) * counts[name]).tolist()]
                                        for name in means])


def salient_record(image, run, index):
    """Mask each detected class present in the ground truth, forward again, compare.
    The net's blobs then hold the last masked input: run it after the other experiments."""
    from tools import fixations

    rows, panels, skipped = [], [], []
    height, width = image.image.shape[:2]
    for result in image.results:
        class_id = result.class_id
        in_truth = image.label == class_id
        if not in_truth.any():
            continue   # a false detection: no object to mask
        if run.mask_fn is not None:
            masked_image, mask = run.mask_fn(image.image, image.id, class_id, result.heat.heat)
            masked_image, mask = np.asarray(masked_image), np.asarray(mask, bool)
            if masked_image.shape != image.image.shape or mask.shape != (height, width):
                raise ToolkitError(
                    f"mask_fn returned an image of shape {masked_image.shape} and a mask of "
                    f"shape {mask.shape} for image {image.id}; expected {image.image.shape} "
                    f"and {(height, width)}")
            data, _, _ = sf.prepare_input(masked_image, run.size, run.spec.mean)
        else:
            if result.heat.peak is None:
                skipped.append(run.names[class_id])
                continue   # every point an outlier: no densest region
            mask = densest_region(result.heat.heat, run.mask_mode, run.mask_threshold,
                                  run.mask_radius)
            masked_image, data = masked_input(image.image, mask, run.size, run.spec.mean)
        fixations.run_forward(run.net, data[None], "data")
        prediction, zoomed = predict(run.net.blobs[run.spec.score_blob].data[0],
                                     data.shape[1:], (height, width))
        region = in_truth & ~mask
        row = {"image": image.id, "class": run.names[class_id]}
        row.update(activation_change(image.zoomed[class_id], zoomed[class_id], region))
        row.update(acc_before=class_accuracy(image.prediction, region, class_id),
                   acc_after=class_accuracy(prediction, region, class_id),
                   object_pixels=int(region.sum()), mask_pixels=int(mask.sum()))
        rows.append(row)
        if index < run.figures:
            panels.append(SalientPanel(run.names[class_id], in_truth, masked_image, mask,
                                       image.prediction, prediction,
                                       image.zoomed[class_id], zoomed[class_id]))
    if panels:
        folder = os.path.join(run.out_dir, "salient")
        salient_image_figure(os.path.join(folder, image.id + ".png"), image.image, panels)
    return dict(image=image.id, rows=rows, skipped=skipped)


RECORD_BUILDERS = {"location": location_record, "shift": shift_record,
                   "k-needed": k_needed_record}


# --- the run -------------------------------------------------------------------------------

def _image_id(path):
    return os.path.splitext(os.path.basename(path))[0]


def _dataset_class_names(data_root, num_classes):
    """Class names from a synthetic data set's dataset.json, when they fit the net."""
    path = os.path.join(data_root, "dataset.json")
    try:
        with open(path) as f:
            names = json.load(f).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    return names if isinstance(names, list) and len(names) == num_classes else None


def _check_fractions(fractions):
    values = [float(x) for x in fractions]
    if not values or any(not 0 < x <= 1 for x in values) or values != sorted(set(values)):
        raise ToolkitError(f"fractions must be increasing values in (0, 1], got {fractions!r}")
    return tuple(values)


class _Run:
    """What every experiment of one call shares: the net, its trackers, the list, options."""

    def __init__(self, model, weights, data_root, list_file, out_dir, num_classes, class_names,
                 size, mean, score_blob, k, shift, max_units, limit, gpu, void, fractions,
                 mask_mode, mask_threshold, mask_radius, mask_fn, figures):
        from tools import evaluate

        if shift not in SHIFTS:
            raise ToolkitError(f"unknown shift {shift!r}; use one of {', '.join(SHIFTS)}")
        if void not in VOID_RULES:
            raise ToolkitError(f"void must be one of {', '.join(VOID_RULES)}, got {void!r}")
        check_mask_options(mask_mode, mask_threshold, mask_radius)
        if limit is not None and limit < 1:
            raise ToolkitError(f"--limit must be at least 1, got {limit}")
        if figures < 0:
            raise ToolkitError(f"--figures must be >= 0, got {figures}")
        self.fractions = _check_fractions(fractions)
        self.pairs = voc_io.read_list(list_file, root=data_root)[:limit]
        self.spec = sf.resolve_model(model, weights, score_blob, mean)
        self.net = sf.load_net(self.spec, gpu)
        score_shape = self.net.blobs[self.spec.score_blob].data.shape
        if len(score_shape) != 4:
            raise ToolkitError(f"score blob {self.spec.score_blob!r} has shape {score_shape}: "
                               "the experiments need a segmentation net (C x h x w scores)")
        self.num_classes = score_shape[1]
        if num_classes is not None and num_classes != self.num_classes:
            raise ToolkitError(f"--num-classes is {num_classes} but blob "
                               f"{self.spec.score_blob!r} has {self.num_classes} channels; "
                               "set --num-classes to match the net")
        names = class_names or self.spec.class_names or _dataset_class_names(
            data_root, self.num_classes)
        self.names = sf.class_names_for(self.num_classes, names)
        self.size = self.net.blobs["data"].data.shape[2] if size is None else int(size)
        if self.size < 0:
            raise ToolkitError(f"--size must be positive (0: the net takes each image's "
                               f"size), got {self.size}")
        if not evaluate.check_inputs(self.pairs, self.size or sys.maxsize):
            raise ToolkitError(f"the list {list_file} has no labels: the experiments compare "
                               "fixations with the ground truth ('image label' lines)")
        self.out_dir, self.data_root, self.list_file = out_dir, data_root, list_file
        self.k, self.shift, self.max_units, self.void = k, shift, max_units, void
        self.mask_mode, self.mask_threshold, self.mask_radius = mask_mode, mask_threshold, \
            mask_radius
        self.mask_fn, self.figures = mask_fn, int(figures)
        self._trackers = {}
        self._digest = evaluate.parameters_digest(self.net)
        self.layer_order = [layer.name for layer in self.tracker(shift).graph.layers]

    def tracker(self, shift):
        if shift not in self._trackers:
            self._trackers[shift] = sf.make_tracker(self.net, self.spec.prototxt, shift,
                                                    self.k, self.max_units)
        return self._trackers[shift]

    def settings(self, experiment):
        """What must not change for an experiment's cached records to stay valid."""
        common = dict(cache_version=CACHE_VERSION, experiment=experiment,
                      prototxt=os.path.abspath(self.spec.prototxt),
                      parameters_sha256=self._digest, data_root=os.path.abspath(self.data_root),
                      size=self.size, mean=[float(m) for m in self.spec.mean],
                      score_blob=self.spec.score_blob, num_classes=self.num_classes,
                      k=str(self.k))
        if experiment in ("location", "k-needed", "salient"):
            common["shift"] = self.shift
        if experiment in ("location", "shift"):
            common["void"] = self.void
        if experiment == "k-needed":
            common["fractions"] = list(self.fractions)
        if experiment == "salient":
            common["heatmap"] = [heatmap.SIGMA_FRACTION, heatmap.RADIUS_FRACTION,
                                 heatmap.MIN_FRACTION]
            if self.mask_fn is not None:
                common["mask"] = "mask_fn:" + getattr(self.mask_fn, "cache_key", getattr(
                    self.mask_fn, "__qualname__", type(self.mask_fn).__name__))
            else:
                common["mask"] = [self.mask_mode, self.mask_threshold if self.mask_mode ==
                                  "heat" else self.mask_radius]
        return common


def run_all(model, weights, data_root, list_file, out_dir, experiments=EXPERIMENTS, *,
            num_classes=None, class_names=None, size=None, mean=None, score_blob=None,
            k=sf.DEFAULT_K, shift=sf.DEFAULT_SHIFT, max_units=None, limit=None, gpu=None,
            void="skip", fractions=FRACTIONS, mask_mode="heat",
            mask_threshold=DEFAULT_MASK_THRESHOLD, mask_radius=DEFAULT_MASK_RADIUS,
            mask_fn=None, figures=DEFAULT_FIGURES, resume=True, progress=True, on_image=None):
    """Run ``experiments`` in one pass over the list; returns {experiment: result dict}.

    Per image: one forward and one trace per shift variant needed, then (salient) one more
    forward per masked object; images cached for every requested experiment are skipped.
    ``model``: a deploy prototxt or a tools/zoo.py name; ``weights``: its caffemodel (default
    for a zoo name: weights/<file>). ``mask_fn(image, image_id, class_id, heat) ->
    (masked_image, mask)`` replaces the densest-region mask of the salient experiment (give
    it a ``cache_key`` attribute to tell two hooks apart in the cache settings).
    ``on_image(index, image_id, cached)`` is called after each image (tests interrupt there).
    Each result: {experiment, csv, png, rows, images, images_run, images_cached} (+ scores
    for location, figures and skipped for salient).
    """
    from tqdm import tqdm

    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise ToolkitError(f"unknown experiment {unknown[0] if unknown else '(none)'!r}; "
                           f"use {', '.join(EXPERIMENTS)}")
    experiments = [e for e in EXPERIMENTS if e in experiments]
    run = _Run(model, weights, data_root, list_file, out_dir, num_classes, class_names, size,
               mean, score_blob, k, shift, max_units, limit, gpu, void, fractions, mask_mode,
               mask_threshold, mask_radius, mask_fn, figures)
    os.makedirs(out_dir, exist_ok=True)
    caches = {e: ResultCache(out_dir, e, run.settings(e), resume) for e in experiments}
    figures_dir = os.path.join(out_dir, "salient")
    if not resume and "salient" in experiments and os.path.isdir(figures_dir):
        for name in os.listdir(figures_dir):
            if name.endswith(".png"):
                os.unlink(os.path.join(figures_dir, name))
    ran = collections.Counter()
    with tqdm(run.pairs, desc="experiments: " + ",".join(experiments), unit="img",
              disable=not progress) as bar:
        for index, (image_path, label_path) in enumerate(bar):
            image_id = _image_id(image_path)
            needed = [e for e in experiments if not caches[e].has(image_id)]
            if needed:
                image = _Image(run, image_path, label_path)
                for experiment in needed:   # salient last: its forwards replace the blobs
                    if experiment == "salient":
                        record = salient_record(image, run, index)
                    else:
                        record = RECORD_BUILDERS[experiment](image, run)
                    caches[experiment].write(image_id, record)
                    ran[experiment] += 1
            if on_image is not None:
                on_image(index, image_id, not needed)
    return {e: _finish(e, run, caches[e], ran[e]) for e in experiments}


def _finish(experiment, run, cache, images_run):
    """Rebuild the experiment's table and figure from the cache."""
    records = [cache.read(_image_id(image_path)) for image_path, _ in run.pairs]
    stem = os.path.join(run.out_dir, FILE_STEMS[experiment])
    result = dict(experiment=experiment, csv=stem + ".csv", png=stem + ".png",
                  images=len(records), images_run=images_run,
                  images_cached=len(records) - images_run)
    if experiment == "location":
        rows, scores = location_table(records, run.names)
        write_csv(result["csv"], rows, ("class", "images", "mean_pct_inside", "iou"))
        location_figure(result["png"], rows[:-1])
        result.update(rows=rows, mean_iou=scores["mean_iou"],
                      pixel_accuracy=scores["pixel_accuracy"])
    elif experiment == "shift":
        rows = shift_table(records, run.names)
        write_csv(result["csv"], rows, ("class", "images") + SHIFTS)
        shift_figure(result["png"], rows)
        result["rows"] = rows
    elif experiment == "k-needed":
        rows = k_needed_table(records, run.fractions, run.layer_order)
        write_csv(result["csv"], rows,
                  ["layer", "units"] + [fraction_column(x) for x in run.fractions])
        k_needed_figure(result["png"], rows, run.fractions)
        result["rows"] = rows
    else:
        rows = [{key: _from_json(value) for key, value in row.items()}
                for row in salient_table(records)]
        write_csv(result["csv"], rows, SALIENT_COLUMNS)
        salient_summary_figure(result["png"], rows, run.names)
        folder = os.path.join(run.out_dir, "salient")
        skipped = [(r["image"], name) for r in records for name in r.get("skipped", ())]
        result.update(rows=rows, skipped=skipped, figures=sorted(
            os.path.join(folder, name) for name in
            (os.listdir(folder) if os.path.isdir(folder) else ()) if name.endswith(".png")))
    return result


def fixation_location(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 1 (Figure 2.6); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("location",),
                   **options)["location"]


def shift_variants(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 2 (Figure 2.7); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("shift",), **options)["shift"]


def k_needed(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 3 (Figure 2.8); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("k-needed",),
                   **options)["k-needed"]


def salient_parts(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 4 (Figures 2.9 to 2.11); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("salient",),
                   **options)["salient"]


def synthetic_part_mask_fn(data_root, fill="body", grow=1):
    """A ``mask_fn`` for tools/synthetic.py data: hide the true discriminative part of every
    object of the class (``synthetic.mask_part``); the mask is the painted region."""
    import cv2
    from tools import synthetic

    if not os.path.isdir(os.path.join(data_root, "Objects")):
        raise ToolkitError(f"{data_root} has no Objects/ annotations: masking the true parts "
                           "needs a data set made by tools/synthetic.py (use --mask heat or "
                           "disc for other data)")

    def mask_fn(image, image_id, class_id, heat):
        annotation = synthetic.load_annotation(data_root, image_id)
        masked, mask = np.asarray(image), np.zeros(np.shape(image)[:2], bool)
        for index, obj in enumerate(annotation["objects"]):
            if obj["class_id"] != class_id or not obj["part_mask"].any():
                continue
            masked = synthetic.mask_part(masked, annotation, index, fill=fill, grow=grow)
            part = obj["part_mask"].astype(np.uint8)
            if grow > 0:
                part = cv2.dilate(part, np.ones((2 * grow + 1,) * 2, np.uint8))
            mask |= part.astype(bool) & obj["body_mask"]
        return masked, mask

    mask_fn.cache_key = f"synthetic_parts(fill={fill!r}, grow={grow})"
    return mask_fn


# --- command line --------------------------------------------------------------------------

def _parse_fractions(text):
    try:
        return _check_fractions([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise ToolkitError(f"--fractions must be comma-separated numbers in (0, 1], got "
                           f"{text!r}") from None


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True, help="deploy prototxt or a tools/zoo.py "
                        "name (largefov, ...): the net whose score blob the fixations start at")
    common.add_argument("--weights", help="caffemodel (default for a zoo name: weights/<file>)")
    common.add_argument("--data-root", required=True, help="folder the list's paths are "
                        "relative to (data/VOCdevkit/VOC2012)")
    common.add_argument("--list", required=True, help="list file with labels: "
                        "'/JPEGImages/x.jpg /SegmentationClass/x.png' lines")
    common.add_argument("--out", required=True, help="output folder (tables, figures, cache/)")
    common.add_argument("--num-classes", type=int, help="check the net has this many classes")
    common.add_argument("--class-names", help="comma-separated class names (default: VOC's "
                        "for 21 classes, a synthetic data set's, else class_<i>)")
    common.add_argument("--size", type=int, help="net input side; images are padded to it "
                        "(default: the deploy prototxt's; 0: the net takes each image's size)")
    common.add_argument("--mean", help="BGR mean 'B,G,R' (default: the model's)")
    common.add_argument("--score-blob", help="scores the fixations start at (default: the "
                        "model's, fc8_voc12 for a prototxt)")
    common.add_argument("--k", default=sf.DEFAULT_K, help="K strategy of the back-tracker: "
                        "'1', 'fraction:0.1', 'resolution' or 'conv5_1=2,default=1' "
                        f"(default {sf.DEFAULT_K})")
    common.add_argument("--shift", choices=SHIFTS, default=sf.DEFAULT_SHIFT,
                        help="shift variant of location, k-needed and salient (the shift "
                        f"experiment runs all three) (default {sf.DEFAULT_SHIFT})")
    common.add_argument("--max-units", type=int, help="fixation budget per blob and class")
    common.add_argument("--limit", type=int, help="only the first N images of the list")
    common.add_argument("--void", choices=VOID_RULES, default="skip", help="fixation points "
                        "on void (255) pixels: left out (skip) or counted outside the object")
    common.add_argument("--fractions", default=",".join(f"{x:g}" for x in FRACTIONS),
                        help="k-needed: the x values (default 0.1,...,0.9)")
    common.add_argument("--mask", choices=MASK_MODES + ("parts",), default="heat",
                        help="salient: what to hide: 'heat' (the region of heat >= "
                        "--mask-threshold around the peak), 'disc' (--mask-radius around the "
                        "peak) or 'parts' (the true parts of a tools/synthetic.py data set)")
    common.add_argument("--mask-threshold", type=float, default=DEFAULT_MASK_THRESHOLD,
                        help=f"salient: heat threshold (default {DEFAULT_MASK_THRESHOLD})")
    common.add_argument("--mask-radius", type=float, default=DEFAULT_MASK_RADIUS,
                        help="salient: disc radius as a fraction of the image diagonal "
                        f"(default {DEFAULT_MASK_RADIUS})")
    common.add_argument("--figures", type=int, default=DEFAULT_FIGURES,
                        help=f"salient: per-image figures for the first N images "
                        f"(default {DEFAULT_FIGURES})")
    common.add_argument("--gpu", type=int, nargs="?", const=0, default=None, metavar="ID",
                        help="run Caffe on this GPU (default: CPU; --gpu alone means GPU 0)")
    common.add_argument("--no-resume", action="store_true",
                        help="discard cached per-image results and run every image again")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="experiment", metavar="experiment")
    commands.required = True
    helps = {"location": "experiment 1: % of fixations inside the object, and IoU (Fig 2.6)",
             "shift": "experiment 2: experiment 1 under no/partial/full shift (Fig 2.7)",
             "k-needed": "experiment 3: K capturing x % of a unit's activation (Fig 2.8)",
             "salient": "experiment 4: mask the densest fixations, segment again "
                        "(Figs 2.9-2.11)",
             "all": "the four experiments in one pass over the images"}
    for name, text in helps.items():
        commands.add_parser(name, parents=[common], help=text.replace("%", "%%"),
                            description=text)
    return parser


def _summary_lines(result):
    lines = [(f"{result['experiment']}: {result['images']} images ({result['images_run']} run, "
              f"{result['images_cached']} from the cache); table {result['csv']}; "
              f"figure {result['png']}")]
    if result["experiment"] == "location":
        lines.append(f"  mean % inside: {_cell(result['rows'][-1]['mean_pct_inside'])}; "
                     f"mean IoU (all classes): {_cell(result['mean_iou'])}")
    elif result["experiment"] == "shift":
        mean = result["rows"][-1]
        lines.append("  mean % inside: " + ", ".join(f"{v} {_cell(mean[v])}" for v in SHIFTS))
    elif result["experiment"] == "salient":
        rows = result["rows"]
        lines.append(f"  {len(rows)} masked objects; mean drop "
                     f"{_cell(_mean([r['drop'] for r in rows]))} "
                     f"({_cell(_mean([r['drop_pct'] for r in rows]))} %); per-image figures "
                     f"in {os.path.join(os.path.dirname(result['csv']), 'salient')}")
        if result["skipped"]:
            lines.append(f"  {len(result['skipped'])} class(es) skipped: no fixation left "
                         "after outlier removal")
    return lines


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        mask_fn = synthetic_part_mask_fn(args.data_root) if args.mask == "parts" else None
        experiments = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
        results = run_all(
            args.model, args.weights, args.data_root, args.list, args.out, experiments,
            num_classes=args.num_classes,
            class_names=args.class_names.split(",") if args.class_names else None,
            size=args.size, mean=sf.parse_mean(args.mean), score_blob=args.score_blob,
            k=args.k, shift=args.shift, max_units=args.max_units, limit=args.limit,
            gpu=args.gpu, void=args.void, fractions=_parse_fractions(args.fractions),
            mask_mode="heat" if args.mask == "parts" else args.mask,
            mask_threshold=args.mask_threshold, mask_radius=args.mask_radius, mask_fn=mask_fn,
            figures=args.figures, resume=not args.no_resume, progress=not args.no_progress)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for result in results.values():
        for line in _summary_lines(result):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
