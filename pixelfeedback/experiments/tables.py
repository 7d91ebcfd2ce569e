"""The experiments' tables, rebuilt from the per-image records (as read back from JSON).

Each table is a list of dict rows whose keys are its CSV columns; the files are written by
``pixelfeedback.reports.write_csv`` (NaN as an empty cell, floats with 4 decimals).
"""
import collections

import numpy as np

from pixelfeedback import metrics
from pixelfeedback.experiments.measures import nan_mean
from pixelfeedback.fixations import SHIFTS

LOCATION_COLUMNS = ("class", "images", "mean_pct_inside", "iou")
SHIFT_COLUMNS = ("class", "images") + tuple(SHIFTS)
SALIENT_COLUMNS = ("image", "class", "mean_before", "mean_after", "drop", "drop_pct",
                   "acc_before", "acc_after", "object_pixels", "mask_pixels")
SALIENT_FLOATS = ("mean_before", "mean_after", "drop", "drop_pct", "acc_before", "acc_after")
MEAN_ROW = "mean"   # the last row of the per-class tables: the mean of the class rows


def location_table(records, names):
    """Rows {class, images, mean_pct_inside, iou} per object class, then a 'mean' row
    (mean of the class rows above it, background excluded), and the scores of the summed
    confusion matrix (whose ``mean_iou`` includes background, as evaluation's does)."""
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
                 mean_pct_inside=nan_mean(per_class[c]), iou=float(scores["class_iou"][c]))
            for c in range(1, num_classes)]
    rows.append({"class": MEAN_ROW, "images": len(records),
                 "mean_pct_inside": nan_mean([r["mean_pct_inside"] for r in rows]),
                 "iou": nan_mean([r["iou"] for r in rows])})
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
        row.update({variant: nan_mean(values[(c, variant)]) for variant in SHIFTS})
        rows.append(row)
    mean_row = {"class": MEAN_ROW, "images": len(records)}
    mean_row.update({variant: nan_mean([r[variant] for r in rows]) for variant in SHIFTS})
    return rows + [mean_row]


def fraction_column(fraction):
    """CSV column of a fraction: 0.1 -> 'k_at_10'."""
    return f"k_at_{round(100 * float(fraction), 6):g}"


def k_needed_columns(fractions):
    return ("layer", "units") + tuple(fraction_column(x) for x in fractions)


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


def salient_table(records):
    """The rows of every record, in list order, with undefined numbers (JSON null) as NaN."""
    return [{key: float("nan") if key in SALIENT_FLOATS and value is None else value
             for key, value in row.items()}
            for record in records for row in record["rows"]]
