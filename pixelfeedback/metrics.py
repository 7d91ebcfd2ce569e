"""Segmentation scores as the thesis computes them (Algorithm 2, SPEC section 5), a
Student-t confidence interval for repeated runs, and the paired difference of two sets of
runs with its interval and minimum detectable effect, and Welch's unpaired interval (the
Table 3.1 sweep).

One confusion matrix is accumulated over the whole split (never a mean of per-image
scores): rows are ground-truth classes, columns predicted classes, pixels labelled 255
are ignored. From it, per class c:

    IoU_c = TP_c / (TP_c + FP_c + FN_c)

where TP_c = confusion[c, c], FP_c = column sum - TP_c, FN_c = row sum - TP_c.

Classes that never occur, neither in the ground truth nor in the predictions, have
0 / 0 = undefined IoU: they are reported as NaN and left out of the mean. Algorithm 2
divides by count(Labels), the labels *in the data set*; on VOC 2012 val every one of
the 21 classes occurs, so this is the same as dividing by 21, and on a subset (or the
tiny test sets) it avoids counting a class that cannot be scored as a 0. This is the
convention of FCN's and DeepLab's evaluation scripts (``nanmean``). A class present in
the ground truth but never predicted, or predicted but absent from the ground truth,
has IoU 0 and does count.
"""
import collections

import numpy as np

from python_layers import ToolkitError
from python_layers.voc_io import IGNORE_LABEL


def confusion_matrix(pred, label, num_classes, ignore_label=IGNORE_LABEL):
    """The (num_classes, num_classes) int64 confusion matrix of one prediction.

    ``confusion[g, p]`` counts pixels of ground-truth class g predicted as p. Pixels whose
    label is ``ignore_label`` are skipped. Any other label or prediction outside
    0..num_classes-1 is an error (it would otherwise be silently dropped).
    """
    pred = np.asarray(pred)
    label = np.asarray(label)
    if pred.shape != label.shape:
        raise ToolkitError(f"prediction shape {pred.shape} differs from label shape "
                           f"{label.shape}; predictions must be cropped to the image size")
    valid = label != ignore_label
    gt = label[valid].astype(np.int64)
    pr = pred[valid].astype(np.int64)
    for name, values in (("label", gt), ("prediction", pr)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            bad = np.unique(values[(values < 0) | (values >= num_classes)])
            raise ToolkitError(
                f"{name} has values {bad.tolist()[:5]} outside the classes 0..{num_classes - 1} "
                f"(and {ignore_label} = ignore); check the number of classes")
    counts = np.bincount(gt * num_classes + pr, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion):
    """Scores of a confusion matrix (rows = ground truth, columns = prediction).

    Returns a dict:
      mean_iou            mean of class_iou over the classes that occur (see module doc)
      pixel_accuracy      correctly labelled pixels / all scored pixels
      mean_class_accuracy mean over ground-truth classes of TP / pixels of that class
      freq_weighted_iou   class_iou weighted by ground-truth pixel frequency
      class_iou           (C,) float array, NaN for classes absent from both
      class_accuracy      (C,) float array, NaN for classes absent from the ground truth
      intersection, union (C,) int arrays (Algorithm 2's l_i-Intersection, l_i-Union)
      num_pixels          pixels scored (label != ignore)
      num_classes_scored  classes that entered the mean
    With no scored pixels every score is NaN.
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {confusion.shape}")
    true_positive = np.diag(confusion)
    gt_pixels = confusion.sum(axis=1)
    pred_pixels = confusion.sum(axis=0)
    union = gt_pixels + pred_pixels - true_positive
    total = int(confusion.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        class_iou = np.where(union > 0, true_positive / np.maximum(union, 1), np.nan)
        class_accuracy = np.where(gt_pixels > 0, true_positive / np.maximum(gt_pixels, 1), np.nan)
    scored = union > 0
    mean_iou = float(class_iou[scored].mean()) if scored.any() else float("nan")
    present = gt_pixels > 0
    return {
        "mean_iou": mean_iou,
        "pixel_accuracy": float(true_positive.sum() / total) if total else float("nan"),
        "mean_class_accuracy": float(class_accuracy[present].mean()) if present.any()
        else float("nan"),
        "freq_weighted_iou": float((gt_pixels[scored] * class_iou[scored]).sum() / total)
        if total else float("nan"),
        "class_iou": class_iou,
        "class_accuracy": class_accuracy,
        "intersection": true_positive,
        "union": union,
        "num_pixels": total,
        "num_classes_scored": int(scored.sum()),
    }


def pair_confusion(confusion, class_names, pairs):
    """{"cat/dog": share, ...}: for each pair of classes (by name), the share of the two
    classes' ground-truth pixels predicted as the other one, (C[a, b] + C[b, a]) /
    (row a + row b) of the confusion matrix (rows = ground truth); None for a pair the
    names lack or whose classes have no pixel."""
    confusion = np.asarray(confusion, dtype=np.float64)
    names = list(class_names)
    shares = {}
    for a, b in pairs:
        key = f"{a}/{b}"
        if a not in names or b not in names:
            shares[key] = None
            continue
        i, j = names.index(a), names.index(b)
        pixels = confusion[i].sum() + confusion[j].sum()
        shares[key] = float((confusion[i, j] + confusion[j, i]) / pixels) if pixels else None
    return shares


ConfidenceInterval = collections.namedtuple(
    "ConfidenceInterval", ["mean", "low", "high", "half_width", "std", "n", "level"])


def mean_ci(values, level=0.95):
    """Mean and two-sided Student-t confidence interval of repeated measurements.

    half_width = t_{(1+level)/2, n-1} * s / sqrt(n) with s the sample standard deviation
    (ddof=1). With a single value the interval is undefined: half_width, low, high and
    std are NaN. NaN values are an error (a failed run must be fixed or dropped).
    """
    from scipy import stats

    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if np.isnan(values).any():
        raise ValueError("mean_ci got NaN values; drop or rerun the failed runs first")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = values.size
    mean = float(values.mean())
    if n < 2:
        nan = float("nan")
        return ConfidenceInterval(mean, nan, nan, nan, nan, 1, level)
    std = float(values.std(ddof=1))
    half_width = float(stats.t.ppf((1 + level) / 2, n - 1) * std / np.sqrt(n))
    return ConfidenceInterval(mean, mean - half_width, mean + half_width, half_width, std, n, level)


def welch_ci(a, b, level=0.95):
    """Mean of a - b and the half width of its Welch-t confidence interval (NaN if either
    has fewer than two values; 0 when both spreads are 0): the unpaired comparison."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, float("nan")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    if se == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return diff, float(stats.t.ppf((1 + level) / 2, dof) * se)


PairedDifference = collections.namedtuple(
    "PairedDifference",
    ["mean", "low", "high", "half_width", "std", "n", "mde", "level", "power"])


def paired_difference(a, b, level=0.95, power=0.80):
    """The paired comparison of ``a`` and ``b`` (``a[i]`` and ``b[i]`` one pair, e.g. a loss
    run and the control run of the same seed): the mean of d = a - b, its Student-t
    confidence interval, and the minimum detectable effect that interval implies.

    With s the sample standard deviation of d (ddof=1) and n the number of pairs:

        half_width = t_{(1+level)/2, n-1} * s / sqrt(n)
        mde        = (t_{(1+level)/2, n-1} + t_{power, n-1}) * s / sqrt(n)

    ``mde`` is the smallest true mean difference the two-sided paired t test at this level
    would find (its interval clearing zero) with probability ``power``, taking s as the true
    standard deviation (the usual normal-shift approximation of the noncentral t). A
    difference well below it going undetected says little. With one pair the interval and
    the mde are undefined: NaN (as std). Pairing removes what the two runs share (initial
    weights, data order), so the paired interval is narrower than Welch's unpaired one
    whenever the runs of a seed are correlated.
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"paired_difference needs pairs: got {a.size} and {b.size} values")
    if a.size == 0:
        raise ValueError("paired_difference needs at least one pair")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("paired_difference got NaN values; drop or rerun the failed runs first")
    if not 0 < level < 1 or not 0 < power < 1:
        raise ValueError(f"level and power must be in (0, 1), got {level} and {power}")
    d = a - b
    n = d.size
    mean = float(d.mean())
    if n < 2:
        nan = float("nan")
        return PairedDifference(mean, nan, nan, nan, nan, 1, nan, level, power)
    std = float(d.std(ddof=1))
    se = std / np.sqrt(n)
    t_level = float(stats.t.ppf((1 + level) / 2, n - 1))
    half_width = t_level * se
    mde = (t_level + float(stats.t.ppf(power, n - 1))) * se
    return PairedDifference(mean, mean - half_width, mean + half_width, float(half_width), std,
                            n, float(mde), level, power)


def paired_verdict(difference):
    """What a paired interval says: "yes" (a gain: the interval lies above zero), "worse"
    (below zero), "no" (it holds zero) or "n/a" (undefined, fewer than two pairs)."""
    if difference is None or not np.isfinite(difference.half_width):
        return "n/a"
    if difference.low > 0:
        return "yes"
    if difference.high < 0:
        return "worse"
    return "no"
