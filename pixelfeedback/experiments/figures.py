"""The experiments' figures (thesis Figures 2.6 to 2.11), drawn with Matplotlib's Agg
canvas (no display, no global pyplot state) and saved atomically."""
import collections

import numpy as np

from pixelfeedback import files
from pixelfeedback.experiments.measures import nan_mean
from pixelfeedback.experiments.tables import fraction_column
from pixelfeedback.fixations import SHIFTS
from python_layers import voc_io


def _new_figure(width, height):
    """A Matplotlib figure on its own Agg canvas (pyplot's global state stays untouched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path, dpi=100):
    """Save as PNG through a temporary beside ``path`` (a reader never sees half a file)."""
    figure.tight_layout()
    with files.atomic_path(path) as tmp:
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
        return [nan_mean([r[key] for r in by_class[c]]) for c in classes]

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
