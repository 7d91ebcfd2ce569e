"""Heat maps of segmentation fixations (SPEC section 4, thesis figures 2.3 to 2.5).

Image-plane fixation points of one class become a heat map in four steps:
1. outlier removal as in CNN-Fixations: keep a point when more than ``min_fraction``
   (5 %) of all points lie within ``radius_fraction`` (0.1) x the image diagonal of it
   (the point itself and its multiplicity included; distances are Euclidean, the
   boundary counts as within);
2. count the kept points per pixel (weighted by their multiplicity);
3. Gaussian blur with ``sigma`` pixels (default ``SIGMA_FRACTION`` x the image diagonal:
   the thesis does not give one; this is a choice);
4. scale to [0, 1] by the maximum (an all-zero map stays zero).

Neighbour counts are one FFT convolution of the per-pixel counts with a disc, so the cost
does not grow with the square of the number of points. Points are pixel indices (y, x);
points outside the image are ignored everywhere.
"""
import collections
import math
import os

import cv2
import numpy as np
from scipy import ndimage, signal

from pixelfeedback import files
from python_layers import ToolkitError

RADIUS_FRACTION = 0.1
MIN_FRACTION = 0.05
SIGMA_FRACTION = 0.025
OVERLAY_ALPHA = 0.5

HeatMap = collections.namedtuple("HeatMap", [
    "heat",      # (H, W) float32 in [0, 1]
    "counts",    # (H, W) float64 kept points per pixel (weighted by multiplicity)
    "inliers",   # (M,) bool: the input points that survived outlier removal
    "peak",      # (y, x) of the heat map's maximum, or None when there are no points
])


def _as_points(points, counts=None):
    """Points as an (M, 2) int array of (y, x) and their multiplicities as (M,) floats."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    points = np.rint(points).astype(np.int64)
    if counts is None:
        counts = np.ones(len(points))
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    if counts.shape[0] != points.shape[0]:
        raise ValueError(f"{points.shape[0]} points but {counts.shape[0]} counts")
    return points, counts


def inside_image(points, image_shape):
    """Bool mask of the (y, x) points that lie inside an image of shape (H, W[, C])."""
    points = np.asarray(points).reshape(-1, 2)
    height, width = image_shape[:2]
    return ((points[:, 0] >= 0) & (points[:, 0] < height)
            & (points[:, 1] >= 0) & (points[:, 1] < width))


def count_map(points, image_shape, counts=None):
    """(H, W) float64 number of points per pixel, weighted by ``counts``; outside ones dropped."""
    points, counts = _as_points(points, counts)
    height, width = image_shape[:2]
    inside = inside_image(points, image_shape)
    flat = points[inside, 0] * width + points[inside, 1]
    return np.bincount(flat, weights=counts[inside], minlength=height * width).reshape(height, width)


def _disc(radius):
    """A (2r+1, 2r+1) float mask of the offsets within ``radius`` (inclusive) of the centre."""
    reach = int(np.floor(radius * (1 + 1e-9)))
    offsets = np.arange(-reach, reach + 1)
    squared = offsets[:, None] ** 2 + offsets[None, :] ** 2
    # integer squared distances: a tiny tolerance keeps points exactly on the circle inside
    return (squared <= radius ** 2 * (1 + 1e-9)).astype(np.float64)


def neighbour_counts(points, image_shape, counts=None, radius_fraction=RADIUS_FRACTION):
    """For each point, the (weighted) number of points within radius_fraction x diagonal of it.

    Points outside the image get 0. The point's own multiplicity is included.
    """
    points, counts = _as_points(points, counts)
    height, width = image_shape[:2]
    radius = radius_fraction * np.hypot(height, width)
    per_pixel = count_map(points, image_shape, counts)
    within = signal.fftconvolve(per_pixel, _disc(radius), mode="same")
    if np.all(counts == np.round(counts)):
        within = np.rint(within)  # integer counts: remove the FFT's rounding noise
    inside = inside_image(points, image_shape)
    result = np.zeros(len(points))
    result[inside] = within[points[inside, 0], points[inside, 1]]
    return result


def inlier_mask(points, image_shape, counts=None, radius_fraction=RADIUS_FRACTION,
                min_fraction=MIN_FRACTION):
    """CNN-Fixations outlier removal: True where more than ``min_fraction`` of all points
    (weighted, inside the image) lie within ``radius_fraction`` x the image diagonal."""
    points, counts = _as_points(points, counts)
    inside = inside_image(points, image_shape)
    total = counts[inside].sum()
    if total <= 0:
        return np.zeros(len(points), bool)
    near = neighbour_counts(points, image_shape, counts, radius_fraction)
    return inside & (near > min_fraction * total)


def check_heatmap_options(sigma=None, radius_fraction=RADIUS_FRACTION,
                          min_fraction=MIN_FRACTION, alpha=None):
    """Reject heat-map options that are not finite numbers in their ranges, naming the
    option and its command-line flag and saying the range (None: not given)."""
    def check(name, flag, value, ok, requirement):
        if value is None:
            return
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and ok(number)):
            raise ToolkitError(f"{name} ({flag}) must be a finite number {requirement}, "
                               f"got {value!r}")

    check("sigma", "--sigma", sigma, lambda v: v >= 0, ">= 0 (pixels)")
    check("radius_fraction", "--radius-fraction", radius_fraction, lambda v: v > 0,
          "> 0 (a fraction of the image diagonal)")
    check("min_fraction", "--min-fraction", min_fraction, lambda v: 0 <= v < 1,
          ">= 0 and < 1")
    check("alpha", "--alpha", alpha, lambda v: 0 <= v <= 1, ">= 0 and <= 1")


def default_sigma(image_shape, sigma_fraction=SIGMA_FRACTION):
    """The blur's standard deviation in pixels: a fraction of the image diagonal."""
    return sigma_fraction * float(np.hypot(*image_shape[:2]))


def fixation_heatmap(points, image_shape, counts=None, sigma=None, remove_outliers=True,
                     radius_fraction=RADIUS_FRACTION, min_fraction=MIN_FRACTION):
    """Heat map of one class's image-plane fixations (outliers removed, counted, blurred,
    scaled to [0, 1]); returns a ``HeatMap``. Options outside their ranges (NaN and inf
    included) are a ``ToolkitError`` (``check_heatmap_options``)."""
    check_heatmap_options(sigma, radius_fraction, min_fraction)
    points, counts = _as_points(points, counts)
    if remove_outliers:
        inliers = inlier_mask(points, image_shape, counts, radius_fraction, min_fraction)
    else:
        inliers = inside_image(points, image_shape)
    kept = count_map(points[inliers], image_shape, counts[inliers])
    sigma = default_sigma(image_shape) if sigma is None else float(sigma)
    heat = ndimage.gaussian_filter(kept, sigma, mode="constant") if sigma > 0 else kept.copy()
    peak_value = heat.max(initial=0.0)
    if peak_value > 0:
        heat = heat / peak_value
        peak = tuple(int(v) for v in np.unravel_index(np.argmax(heat), heat.shape))
    else:
        peak = None
    return HeatMap(np.clip(heat, 0, 1).astype(np.float32), kept, inliers, peak)


def colorize(heat, colormap=cv2.COLORMAP_JET):
    """A [0, 1] heat map as a (H, W, 3) uint8 BGR colour image (jet by default)."""
    grey = np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8)
    return cv2.applyColorMap(grey, colormap)


def overlay_heatmap(image, heat, alpha=OVERLAY_ALPHA, colormap=cv2.COLORMAP_JET):
    """Blend the coloured heat map over a BGR image: (1 - alpha) image + alpha colour."""
    image = np.asarray(image)
    if image.shape[:2] != np.shape(heat):
        raise ValueError(f"image {image.shape[:2]} and heat map {np.shape(heat)} differ in size")
    if image.ndim == 2:
        image = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(heat, colormap)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_png(path, image):
    """Write a uint8 image (BGR or grey) as a PNG, atomically."""
    with files.atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, np.asarray(image)):
            raise OSError(f"cannot write {path}")
    return path


def write_heatmap_png(path, heat):
    """Write a [0, 1] heat map as an 8-bit grey PNG (0..255), atomically."""
    return write_png(path, np.clip(np.rint(np.asarray(heat) * 255), 0, 255).astype(np.uint8))


def merge_points(points, counts=None):
    """Merge duplicate (y, x) points, summing multiplicities; sorted by (y, x)."""
    points, counts = _as_points(points, counts)
    if len(points) == 0:
        return points, counts
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    return unique, np.bincount(inverse.reshape(-1), weights=counts, minlength=len(unique))


def write_points_csv(path, points, counts=None):
    """Write fixation points as CSV ``y,x,count`` (duplicates merged), atomically."""
    points, counts = merge_points(points, counts)
    rows = [f"{y},{x},{count:g}" for (y, x), count in zip(points.tolist(), counts.tolist())]
    files.write_text(path, "\n".join(["y,x,count"] + rows) + "\n")
    return path


def read_points_csv(path):
    """Read a ``y,x,count`` CSV back as (points (M, 2) int, counts (M,) float)."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.size == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    return table[:, :2].astype(np.int64), table[:, 2]


FigureRow = collections.namedtuple("FigureRow", ["title", "points", "inliers", "heat"])


def save_fixation_figure(path, image, rows, alpha=OVERLAY_ALPHA, dot_size=4.0, dpi=100):
    """A figure like the thesis's 2.3 to 2.5: per row (one per class) the image, its
    fixations (red dots; removed outliers as grey crosses) and the heat-map overlay.

    ``rows`` is a sequence of ``FigureRow``; ``image`` is BGR uint8. Saved as PNG, atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image)
    rgb = image[..., ::-1] if image.ndim == 3 else image
    rows = list(rows) or [FigureRow("no class", np.zeros((0, 2)), np.zeros(0, bool),
                                    np.zeros(image.shape[:2], np.float32))]
    height, width = image.shape[:2]
    panel = 3.0
    figure = Figure(figsize=(3 * panel, len(rows) * panel * height / max(width, 1) + 0.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row_axes, row in zip(axes, rows):
        points = np.asarray(row.points).reshape(-1, 2)
        inliers = np.asarray(row.inliers, bool).reshape(-1)
        overlay = overlay_heatmap(image, row.heat, alpha)[..., ::-1]
        row_axes[0].imshow(rgb, cmap="gray")
        row_axes[0].set_title("image", fontsize=9)
        row_axes[1].imshow(rgb, cmap="gray")
        if len(points):
            outliers = points[~inliers]
            row_axes[1].scatter(outliers[:, 1], outliers[:, 0], s=dot_size, c="0.6", marker="x",
                                linewidths=0.5)
            row_axes[1].scatter(points[inliers, 1], points[inliers, 0], s=dot_size, c="red",
                                linewidths=0)
        row_axes[1].set_title(f"fixations: {row.title}", fontsize=9)
        row_axes[2].imshow(overlay)
        row_axes[2].set_title("heat map", fontsize=9)
        for ax in row_axes:
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            ax.set_axis_off()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return path
