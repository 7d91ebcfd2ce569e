"""The measures of the experiments, as pure NumPy functions of arrays (checked directly by
the tests): % of fixations inside an object, the densest fixation region and the masked
input, and the changes masking makes. DeepLab's score zoom and the prediction made from it
live in ``pipeline`` (Figure 2.4 draws the prediction too) and are re-exported here.
"""
import numpy as np

from pixelfeedback import heatmap
from pixelfeedback.fixations import DEFAULT_FRACTIONS
from pixelfeedback.pipeline import prepare_input
from python_layers import ToolkitError, voc_io

VOID_RULES = ("skip", "outside")
MASK_MODES = ("heat", "disc")
FRACTIONS = tuple(float(x) for x in DEFAULT_FRACTIONS)   # 0.1 ... 0.9
DEFAULT_MASK_THRESHOLD = 0.5
DEFAULT_MASK_RADIUS = 0.1


def nan_mean(values):
    """Mean of the defined values (None and NaN left out); NaN when none is left."""
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def check_void(void):
    if void not in VOID_RULES:
        raise ToolkitError(f"void must be one of {', '.join(VOID_RULES)}, got {void!r}")


def percent_inside(points, counts, label, class_id, void="skip",
                   ignore_label=voc_io.IGNORE_LABEL):
    """(% inside, weight inside, weight counted) of one class's image fixation points.

    A point weighs its ``counts`` (data channels fixated there). Inside = the label there is
    ``class_id``. Points on ``ignore_label`` are left out (``void="skip"``) or count as
    outside (``"outside"``). The % is NaN when no point is counted.
    """
    check_void(void)
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
    prepared as any other (``pipeline.prepare_input``) with the masked pixels exactly 0,
    the mean after subtraction (the rounded colour alone would leave up to 0.5)."""
    mask = np.asarray(mask, bool)
    masked_image = mask_with_mean(image, mask, mean)
    data, _, _ = prepare_input(masked_image, size, mean)
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


def check_fractions(fractions):
    """The k-needed x values as a tuple of floats: increasing, in (0, 1]."""
    try:
        values = [float(x) for x in fractions]
    except (TypeError, ValueError):
        values = []
    if not values or any(not 0 < x <= 1 for x in values) or values != sorted(set(values)):
        raise ToolkitError(f"--fractions must be increasing numbers in (0, 1], got "
                           f"{fractions!r}")
    return tuple(values)


def parse_fractions(text):
    """'0.1,0.5,0.9' -> (0.1, 0.5, 0.9), checked as ``check_fractions``."""
    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ToolkitError(f"--fractions must be comma-separated numbers in (0, 1], got "
                           f"{text!r}") from None
    return check_fractions(values)
