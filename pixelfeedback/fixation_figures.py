"""Pictures of one image's fixations beyond the heat map: the thesis's Figure 2.4 and the
flow of the fixations through the layers.

- **Figure 2.4** (``save_figure_2_4``): per traced class one row: the input, the predicted
  segmentation (VOC palette, legend), the arg-max at the score blob where the fixations
  start with the class's seed units marked, the image-plane fixations and the heat map.
- **The flow** (``flow_stages``, ``save_flow_strip``, ``save_flow_gif``): the fixations of
  every traced blob drawn at image scale, each unit at the centre of its receptive field
  (``receptive_field_centres``), coloured by depth, from the score blob down to the image:
  a PNG strip of panels (every colour kept) and an animated GIF (what the original fixation
  code animated); the units themselves as CSV (``save_flow_units_csv``).

A unit's receptive-field centre follows Caffe's geometry layer by layer: a convolution or
pooling output y sits over input ``y * stride - pad + (kernel - 1) * dilation / 2``, a
deconvolution inverts that, bilinear zooms scale by ``(in - 1) / (out - 1)``, Crop adds its
offset, and element-wise, concatenating and in-place layers keep the position. Blobs
without a spatial map (after InnerProduct, Flatten or global pooling) are left out of the
flow. The flow is drawn with OpenCV (tens of frames per class stay fast), Figure 2.4 with
matplotlib's Agg canvas (no display needed); every file is written atomically.
"""
import collections
import os

import cv2
import numpy as np

from pixelfeedback import files, heatmap, reports
from pixelfeedback.fixations import conv_geometry, pool_geometry
from pixelfeedback.fixations.rules import PYTHON_RULES
from pixelfeedback.fixations.rules.index_maps import crop_offsets
from python_layers import voc_io

FLOW_COLORMAP = cv2.COLORMAP_PLASMA   # depth: score blob (dark) ... image (bright)
STRIP_COLUMNS = 8                # panels per row of the flow strip
GIF_FRAME_MS = 600

# Layers that keep every unit where it is (one bottom's position is the top's).
POSITION_KEEPING = ("ReLU", "Dropout", "BatchNorm", "Scale", "Bias", "LRN", "Split",
                    "Eltwise", "Concat", "Power", "Sigmoid", "TanH", "AbsVal")

FlowStage = collections.namedtuple("FlowStage", [
    "blob",      # blob name
    "points",    # (P, 2) float (y, x) receptive-field centres in image pixels, distinct
    "units",     # number of fixation units in the blob
])


# ----------------------------------------------------------------------------- geometry

def _axis_maps(layer, bottom_shape, top_shape):
    """((a_y, b_y), (a_x, b_x)): input coordinate = a * output coordinate + b per axis, or
    None when the layer has no spatial map (InnerProduct, Flatten, global pooling)."""
    kind = layer.type
    if layer.in_place or kind in POSITION_KEEPING:
        return (1.0, 0.0), (1.0, 0.0)
    if kind == "Python" and PYTHON_RULES.get(layer.python_key) == "identity":
        return (1.0, 0.0), (1.0, 0.0)
    if kind in ("Convolution", "Deconvolution"):
        geo = conv_geometry(layer)
        maps = []
        for k, s, p, d in zip(geo.kernel, geo.stride, geo.pad, geo.dilation):
            centre = (k - 1) * d / 2.0
            maps.append((1.0 / s, (p - centre) / s) if kind == "Deconvolution"
                        else (float(s), centre - p))
        return tuple(maps)
    if kind == "Pooling":
        geo = pool_geometry(layer, bottom_shape[2:])
        if geo.global_pooling:
            return None
        return tuple((float(s), (k - 1) / 2.0 - p)
                     for k, s, p in zip(geo.kernel, geo.stride, geo.pad))
    if kind == "Interp" or (kind == "Python" and PYTHON_RULES.get(layer.python_key) == "interp"):
        return tuple(((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0, 0.0)
                     for n_in, n_out in zip(bottom_shape[2:], top_shape[2:]))
    if kind == "Crop":
        offsets = crop_offsets(layer, len(bottom_shape))
        return (1.0, float(offsets[2])), (1.0, float(offsets[3]))
    return None


def receptive_field_centres(graph, shapes, data_blob="data"):
    """{blob: ((a_y, b_y), (a_x, b_x))}: a unit (y, x) of the blob has its receptive-field
    centre at image (a_y * y + b_y, a_x * x + b_x). ``shapes``: {blob: shape} of the
    forward-passed net (N, C, H, W); blobs with no spatial map are left out."""
    centres = {data_blob: ((1.0, 0.0), (1.0, 0.0))}
    for layer in graph.layers:
        if not layer.bottoms or layer.in_place or layer.bottoms[0] not in centres:
            continue
        below = centres[layer.bottoms[0]]
        for top in layer.tops:
            if top in centres or len(shapes.get(top, ())) != 4:
                continue
            maps = _axis_maps(layer, shapes[layer.bottoms[0]], shapes[top])
            if maps is not None:
                centres[top] = tuple((a_below * a, a_below * b + b_below)
                                     for (a_below, b_below), (a, b) in zip(below, maps))
    return centres


def flow_stages(layers, graph, shapes, data_blob="data"):
    """The flow of one class: [FlowStage] from the score side down to the image, one per
    traced blob with a spatial map. ``layers``: {blob: (U, 3) units} (``ClassResult.layers``
    or ``ClassFixations.layers``)."""
    centres = receptive_field_centres(graph, shapes, data_blob)
    stages = []
    for blob, units in _traced_blobs(layers, graph):
        if blob not in centres:
            continue
        cells = np.unique(units[:, 1:], axis=0).astype(np.float64)
        stages.append(FlowStage(blob, _centres_of(centres[blob], cells), len(units)))
    return stages


def _traced_blobs(layers, graph):
    """(blob, (U, 3) int64 units) of every blob with traced units, score side first."""
    order = []
    for layer in graph.layers:
        order.extend(top for top in layer.tops if top not in order)
    order = [blob for blob in graph.inputs if blob not in order] + order
    for blob in reversed(order):
        units = np.asarray(layers.get(blob, np.zeros((0, 3))), np.int64).reshape(-1, 3)
        if len(units):
            yield blob, units


def _centres_of(centre, cells):
    """(P, 2) float image (y, x) of (P, 2) unit cells (y, x) under ``centre``'s maps."""
    (a_y, b_y), (a_x, b_x) = centre
    return np.stack([a_y * cells[:, 0] + b_y, a_x * cells[:, 1] + b_x], axis=1)


FLOW_UNIT_COLUMNS = ("class", "class_id", "blob", "channel", "y", "x", "image_y", "image_x")


def flow_unit_rows(layers, graph, shapes, class_name, class_id, data_blob="data"):
    """The units the flow draws, one dict row per unit (``FLOW_UNIT_COLUMNS``): its class,
    blob (score side first), unit coordinates (channel, y, x) in the blob, and its
    receptive-field centre in image pixels (empty for a blob without a spatial map, which
    the strip leaves out)."""
    centres = receptive_field_centres(graph, shapes, data_blob)
    rows = []
    for blob, units in _traced_blobs(layers, graph):
        image_yx = (_centres_of(centres[blob], units[:, 1:].astype(np.float64))
                    if blob in centres else [(None, None)] * len(units))
        for (channel, y, x), (image_y, image_x) in zip(units.tolist(), image_yx):
            rows.append({"class": class_name, "class_id": int(class_id), "blob": blob,
                         "channel": channel, "y": y, "x": x,
                         "image_y": None if image_y is None else f"{image_y:g}",
                         "image_x": None if image_x is None else f"{image_x:g}"})
    return rows


def save_flow_units_csv(path, layers, graph, shapes, class_name, class_id, data_blob="data"):
    """The flow's units as CSV (``flow_unit_rows``), so the flow can be analysed without
    Python; written atomically. Returns ``path``."""
    reports.write_csv(path, flow_unit_rows(layers, graph, shapes, class_name, class_id,
                                           data_blob), FLOW_UNIT_COLUMNS)
    return path


def depth_colours(count):
    """(count, 3) uint8 BGR colours of the flow's stages, score side (dark) first."""
    ramp = np.linspace(20, 230, max(count, 1)).astype(np.uint8)[:count].reshape(-1, 1)
    return cv2.applyColorMap(ramp, FLOW_COLORMAP).reshape(-1, 3)


# ----------------------------------------------------------------------------- the flow

def _faded(image, side):
    """The image as a grey, lightened BGR tile whose longer side is ``side`` pixels, and
    the scale from image to tile pixels."""
    image = np.asarray(image)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    scale = side / max(grey.shape)
    size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
    grey = cv2.resize(grey, size, interpolation=cv2.INTER_NEAREST if scale >= 1
                      else cv2.INTER_AREA)
    light = (115 + 0.4 * grey.astype(np.float32)).astype(np.uint8)
    return cv2.cvtColor(light, cv2.COLOR_GRAY2BGR), scale


def _dots(tile, points, scale, colour, radius):
    """Draw (y, x) image points as filled discs of ``colour`` on ``tile`` (in place)."""
    for y, x in np.asarray(points).reshape(-1, 2):
        centre = (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5)))
        cv2.circle(tile, centre, radius, tuple(int(v) for v in colour), -1, cv2.LINE_AA)


def _caption(width, lines, line_height=15, scale=0.42):
    """A white band of ``width`` with ``lines`` of black text."""
    band = np.full((line_height * len(lines) + 4, width, 3), 255, np.uint8)
    for row, text in enumerate(lines):
        cv2.putText(band, text, (3, line_height * (row + 1) - 2), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def counted(number, noun):
    """'1 unit', '2 units': a count with its noun in the right number."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def flow_panel(image, stages, index, side=160, faint_earlier=False):
    """One stage as a BGR picture: its caption over the faded image with the blob's
    receptive-field centres in its depth colour (and, with ``faint_earlier``, the stages
    above it as small dots)."""
    tile, scale = _faded(image, side)
    colours = depth_colours(len(stages))
    radius = max(1, round(side / 90))
    if faint_earlier:
        for earlier in range(index):
            _dots(tile, stages[earlier].points, scale, 0.55 * colours[earlier] + 0.45 * 200,
                  max(1, radius - 1))
    stage = stages[index]
    _dots(tile, stage.points, scale, colours[index], radius)
    caption = _caption(tile.shape[1], [f"{index + 1}. {stage.blob}",
                                       counted(stage.units, "unit")])
    return np.concatenate([caption, tile], axis=0)


def save_flow_strip(path, image, stages, title="", columns=STRIP_COLUMNS, side=140):
    """The flow as a PNG strip: one panel per stage (score side first, ``columns`` per row),
    each the faded image with that blob's receptive-field centres in its depth colour.
    Returns ``path``."""
    stages = list(stages)
    if not stages:
        tile, _ = _faded(image, side)
        panels = [np.concatenate([_caption(tile.shape[1], ["no fixations", ""]), tile])]
    else:
        panels = [flow_panel(image, stages, index, side) for index in range(len(stages))]
    columns = min(columns, len(panels))
    gap = 6
    height, width = panels[0].shape[:2]
    rows = -(-len(panels) // columns)
    sheet = np.full((rows * (height + gap), columns * (width + gap) - gap, 3), 255, np.uint8)
    for index, panel in enumerate(panels):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        sheet[top:top + height, left:left + width] = panel
    if title:
        sheet = np.concatenate([_caption(sheet.shape[1], [title], 20, 0.55), sheet])
    return _write_exact_png(path, sheet)


def _write_exact_png(path, bgr):
    """Write a BGR picture as a PNG that keeps every colour: a palette PNG when it has at
    most 256 colours (exact, small), else RGB. The flow's dots are few pixels of their
    depth colour; a reduced palette mapped a sparse stage's colour to grey. Atomic."""
    from PIL import Image

    rgb = np.ascontiguousarray(bgr[..., ::-1])
    colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    if len(colours) <= 256:
        picture = Image.fromarray(index.reshape(rgb.shape[:2]).astype(np.uint8), mode="P")
        picture.putpalette(colours.astype(np.uint8).tobytes())
    else:
        picture = Image.fromarray(rgb)
    _save_png(path, picture)
    return path


def _write_palette_png(path, bgr, colours=64):
    """Write a BGR picture as a PNG of ``colours`` palette entries (fine for Figure 2.4's
    large areas of few colours: a fraction of the size of a full-colour PNG), atomically."""
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1])).quantize(colors=colours)
    _save_png(path, picture)
    return path


def _save_png(path, picture):
    """Save a Pillow picture as an optimised PNG, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_path(path) as tmp:
        picture.save(tmp, format="PNG", optimize=True)


def flow_frames(image, stages, title="", side=320):
    """The GIF's frames as uint8 RGB arrays: stage by stage, the current blob's centres in
    its depth colour over the faded image, the stages above it as faint dots."""
    frames = []
    for index in range(len(stages)):
        panel = flow_panel(image, stages, index, side, faint_earlier=True)
        if title:
            panel = np.concatenate([_caption(panel.shape[1], [title]), panel])
        frames.append(np.ascontiguousarray(panel[..., ::-1]))
    return frames


def save_flow_gif(path, image, stages, title="", frame_ms=GIF_FRAME_MS):
    """The flow as an animated GIF (Pillow), one frame per stage from the score blob down to
    the image, the last frame held three times as long; looping. Returns ``path``."""
    from PIL import Image

    frames = flow_frames(image, list(stages), title)
    if not frames:
        tile, _ = _faded(image, 320)
        frames = [np.concatenate([_caption(tile.shape[1], [title, "no fixations"]),
                                  tile])[..., ::-1].copy()]
    pictures = [Image.fromarray(frame).convert("P", palette=Image.ADAPTIVE)
                for frame in frames]
    durations = [frame_ms] * (len(pictures) - 1) + [frame_ms * 3]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with files.atomic_path(path) as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=durations, loop=0)
    return path


# ----------------------------------------------------------------------------- Figure 2.4

def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _show_image(ax, image):
    """A BGR (or grey) image on ``ax``, pixel-exact limits, no axes."""
    image = np.asarray(image)
    ax.imshow(image[..., ::-1] if image.ndim == 3 else image, cmap="gray",
              interpolation="nearest")
    height, width = image.shape[:2]
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()


def palette_image(label):
    """An (H, W) class map as (H, W, 3) RGB floats in the VOC palette."""
    return voc_io.voc_palette()[np.asarray(label, np.int64)] / 255.0


Figure24Row = collections.namedtuple("Figure24Row", [
    "title",     # the class's name (and id)
    "seeds",     # (S, 2) int (y, x) seed units at the score blob
    "points",    # (M, 2) image-plane fixations
    "inliers",   # (M,) bool: kept by the outlier removal
    "heat",      # (H, W) [0, 1] heat map
    "note",      # a line under the title (e.g. dead units), or ""
])


def save_figure_2_4(path, image, prediction, score_label, rows, names, score_blob,
                    alpha=heatmap.OVERLAY_ALPHA, panel=2.0, dpi=80, dot_size=6.0):
    """Figure 2.4 of the thesis for one image: the input and the predicted segmentation (VOC
    palette, legend of the classes present; drawn once, in the first row), then per class
    (``rows``: ``Figure24Row``) the arg-max at ``score_blob`` (``score_label`` (h, w)) with
    the class's seed units ringed, the fixations (red; removed outliers grey) and the heat
    map over the image. ``prediction``: (H, W) class map at image size; ``names``: the
    net's class names."""
    from matplotlib.patches import Patch

    rows = list(rows) or [Figure24Row("no class traced", np.zeros((0, 2)), np.zeros((0, 2)),
                                      np.zeros(0, bool), np.zeros(image.shape[:2]), "")]
    height, width = image.shape[:2]
    figure = _figure(5 * panel, len(rows) * (panel * height / max(width, 1) + 0.55) + 0.5)
    axes = figure.subplots(len(rows), 5, squeeze=False)
    score_label = np.asarray(score_label)
    present = [int(c) for c in np.unique(prediction)]
    for number, (row_axes, row) in enumerate(zip(axes, rows)):
        if number == 0:
            _show_image(row_axes[0], image)
            row_axes[0].set_title("input", fontsize=8)
            row_axes[1].imshow(palette_image(prediction), interpolation="nearest")
            row_axes[1].set_title("predicted segmentation", fontsize=8)
        row_axes[2].imshow(palette_image(score_label), interpolation="nearest")
        seeds = np.asarray(row.seeds).reshape(-1, 2)
        if len(seeds):
            row_axes[2].scatter(seeds[:, 1], seeds[:, 0], s=dot_size * 2, facecolors="none",
                                edgecolors="white", linewidths=0.8)
        row_axes[2].set_title(f"arg-max at {score_blob}\n{row.title}: {len(seeds)} seeds",
                              fontsize=8)
        _show_image(row_axes[3], image)
        points = np.asarray(row.points).reshape(-1, 2)
        inliers = np.asarray(row.inliers, bool).reshape(-1)
        if len(points):
            outliers = points[~inliers]
            row_axes[3].scatter(outliers[:, 1], outliers[:, 0], s=dot_size, c="0.6",
                                marker="x", linewidths=0.5)
            row_axes[3].scatter(points[inliers, 1], points[inliers, 0], s=dot_size, c="red",
                                linewidths=0)
        row_axes[3].set_title(f"fixations: {row.title}" + (f"\n{row.note}" if row.note
                                                             else ""), fontsize=8)
        row_axes[4].imshow(heatmap.overlay_heatmap(image, row.heat, alpha)[..., ::-1])
        row_axes[4].set_title(f"heat map: {row.title}", fontsize=8)
        for ax in row_axes:
            ax.set_axis_off()
    legend = [Patch(facecolor=voc_io.voc_palette()[c] / 255.0, edgecolor="0.3",
                    label=names[c] if c < len(names) else str(c)) for c in present]
    figure.legend(handles=legend, loc="lower center", ncol=min(len(legend), 7), fontsize=7,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.45 / figure.get_figheight(), 1, 1))
    figure.set_dpi(dpi)
    figure.canvas.draw()
    rgb = np.asarray(figure.canvas.buffer_rgba())[..., :3]
    return _write_palette_png(path, np.ascontiguousarray(rgb[..., ::-1]), colours=256)
