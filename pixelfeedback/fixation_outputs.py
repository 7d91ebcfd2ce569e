"""Writing one image's fixation results (``pipeline.run_fixations``): per class its overlay,
heat map and points CSV with the fixation figure (``write_outputs``), the thesis's Figure
2.4 (``write_figure_2_4``), the flow through the layers (``write_flow``), and the printed
summary line and JSON record of a class. Used by tools/seg_fixations.py
(``image_fixations``) and the demo.
"""
import os

import numpy as np

from pixelfeedback import fixation_figures, heatmap, pipeline
from python_layers import ToolkitError


def safe_name(name):
    """``name`` usable in a file name (other characters become _)."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def write_outputs(out_dir, stem, image, results, alpha=heatmap.OVERLAY_ALPHA):
    """Write the figure, per-class overlays, heat maps and point CSVs; returns results with
    their ``files`` filled, and the figure's path."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for result in results:
        base = os.path.join(out_dir, f"{safe_name(stem)}_{safe_name(result.name)}")
        files = {
            "overlay": heatmap.write_png(base + "_overlay.png",
                                         heatmap.overlay_heatmap(image, result.heat.heat, alpha)),
            "heat": heatmap.write_heatmap_png(base + "_heat.png", result.heat.heat),
            "points": heatmap.write_points_csv(base + "_points.csv", result.points,
                                               result.counts),
        }
        written.append(result._replace(files=files))
    rows = [heatmap.FigureRow(r.name, r.points, r.heat.inliers, r.heat.heat) for r in written]
    figure = heatmap.save_fixation_figure(os.path.join(out_dir, f"{safe_name(stem)}_fixations.png"),
                                          image, rows, alpha)
    return written, figure


def write_figure_2_4(out_dir, stem, image, results, net, score_blob, names, kind,
                     alpha=heatmap.OVERLAY_ALPHA):
    """Figure 2.4 of the image (``fixation_figures.save_figure_2_4``) from the net's last
    forward pass: the prediction (scores zoomed to the input, cropped to the image), the
    arg-max at the score blob as the tracker seeded it, and per class its seeds, fixations
    and heat map. Returns the path. A classifier has no segmentation: nothing is written
    (None)."""
    if kind == "classification":
        return None
    scores = net.blobs[score_blob].data
    data_hw = net.blobs["data"].data.shape[2:]
    prediction, _ = pipeline.prediction_from_scores(scores[0], data_hw, image.shape[:2])
    label = pipeline.seed_label(scores, kind, pipeline.image_region(scores.shape, data_hw, image.shape[:2]))
    rows = [fixation_figures.Figure24Row(f"{r.name} ({r.class_id})", r.seeds, r.points,
                                         r.heat.inliers, r.heat.heat, dead_note(r))
            for r in results]
    return fixation_figures.save_figure_2_4(
        os.path.join(out_dir, f"{safe_name(stem)}_figure_2_4.png"), image, prediction, label,
        rows, names, score_blob, alpha)


def write_flow(out_dir, stem, image, results, graph, net, gif=True):
    """Per class the flow of its fixations from the score blob to the image
    (``fixation_figures``): ``<stem>_<class>_flow.png``, the units it draws per blob as
    ``<stem>_<class>_flow_units.csv`` and, with ``gif``, ``<stem>_<class>_flow.gif``.
    ``results`` must come from ``run_fixations(..., keep_layers=True)``. Returns the
    results with the files added."""
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    written = []
    for result in results:
        if result.layers is None:
            raise ToolkitError("the flow needs the traced blobs: call run_fixations with "
                               "keep_layers=True")
        stages = fixation_figures.flow_stages(result.layers, graph, shapes)
        base = os.path.join(out_dir, f"{safe_name(stem)}_{safe_name(result.name)}")
        title = f"{result.name} ({result.class_id})"
        files = dict(result.files)
        files["flow"] = fixation_figures.save_flow_strip(base + "_flow.png", image, stages,
                                                         f"flow of {title}: score blob to image")
        files["flow_units"] = fixation_figures.save_flow_units_csv(
            base + "_flow_units.csv", result.layers, graph, shapes, result.name,
            result.class_id)
        if gif:
            files["flow_gif"] = fixation_figures.save_flow_gif(base + "_flow.gif", image,
                                                               stages, title)
        written.append(result._replace(files=files))
    return written


def dead_note(result):
    """A short line on the units of a class that stopped because no input contributed,
    or "" when none did."""
    if not result.dead_units:
        return ""
    total = sum(result.dead_units.values())
    return (f"{total} dead units ({result.dead_seeds} of {result.score_units} seeds)")


def dead_text(result):
    """Where the class's dead units stopped, for the printed summary."""
    if not result.dead_units:
        return "no dead units"
    where = ", ".join(f"{layer} {count}" for layer, count in result.dead_units.items())
    return (f"dead units (no input contributes; the trace stops there): {where}; "
            f"{result.dead_seeds} of {result.score_units} seeds dead")


def kept_points(result):
    """Image points (distinct pixels) that survived outlier removal."""
    return int(np.count_nonzero(result.heat.inliers))


def summary_line(result):
    """One line per class: name, seeds, image points, heat-map peak, files."""
    peak = ("none" if result.heat.peak is None
            else f"(y={result.heat.peak[0]}, x={result.heat.peak[1]})")
    return (f"{result.name} ({result.class_id}): {result.score_units} score units -> "
            f"{len(result.points)} image points ({kept_points(result)} kept after outlier "
            f"removal); heat peak {peak}; {dead_text(result)}; files: "
            f"{', '.join(result.files.values())}")


def summary_record(result):
    """The JSON record of one class (file names relative to the output folder)."""
    return {
        "class_id": int(result.class_id), "class": result.name,
        "score_units": int(result.score_units), "image_points": int(len(result.points)),
        "data_units": int(result.counts.sum()), "kept_points": kept_points(result),
        "heat_peak_yx": list(result.heat.peak) if result.heat.peak is not None else None,
        "dead_seeds": int(result.dead_seeds),
        "dead_units_by_layer": {layer: int(n) for layer, n in
                                (result.dead_units or {}).items()},
        "files": {k: os.path.basename(v) for k, v in result.files.items()},
    }
