"""Resizing between label/score resolutions, as DeepLab's ``Interp`` layer did it.

DeepLab's Caffe fork had one C++ ``Interp`` layer for two jobs; BVLC Caffe has none, so
both are NumPy functions here plus thin Python layers:

- ``shrink_label``: training labels 321 -> 41 (``shrink_factor`` 8: ``out = (in-1)/8 + 1``),
  on Interp's bilinear align-corners grid but sampled nearest, so class indices and the
  ignore value 255 are never blended (for 321 it is exactly ``label[::8, ::8]``).
- ``zoom_bilinear``: scores 65 -> 513 (``zoom_factor`` 8: ``out = in + (in-1)*(8-1)``),
  bilinear with aligned corners. Its adjoint, ``zoom_bilinear_adjoint``, is the
  backward pass, so the ``Zoom`` layer can also sit inside a train net.

Both work on the last two axes of arrays with any leading dimensions.
"""
import json

import numpy as np

from python_layers import ToolkitError, one_line_errors

try:
    import caffe
    _LayerBase = caffe.Layer
except ImportError:  # the NumPy functions stay usable without pycaffe
    caffe = None
    _LayerBase = object


def shrunk_size(size, factor):
    """Interp's size for ``shrink_factor``: ``(size - 1) // factor + 1``."""
    return (size - 1) // factor + 1


def zoomed_size(size, factor):
    """Interp's size for ``zoom_factor``: ``size + (size - 1) * (factor - 1)``."""
    return size + (size - 1) * (factor - 1)


def _source_coords(size_in, size_out):
    """Align-corners source coordinate of every output index (Interp's ``rheight * i``)."""
    ratio = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    return np.arange(size_out) * ratio


def bilinear_matrix(size_in, size_out):
    """The (size_out, size_in) matrix of 1-D align-corners linear interpolation.

    Applying it along both spatial axes is Interp's bilinear resize; its transpose is
    the backward pass.
    """
    coords = _source_coords(size_in, size_out)
    low = np.minimum(np.floor(coords).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = coords - low
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _check_factor(factor):
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ToolkitError(f"interpolation factor must be a positive integer, got {factor!r}")


def shrink_label(label, factor=8):
    """Shrink label maps by ``factor`` on Interp's grid, sampling the nearest cell.

    ``label``: array (..., H, W); returns (..., (H-1)//factor+1, (W-1)//factor+1) of the
    same dtype. Values are copied, never blended: 255 (ignore) stays 255.
    """
    _check_factor(factor)
    label = np.asarray(label)
    if label.ndim < 2:
        raise ValueError(f"label must have at least 2 dimensions, got shape {label.shape}")
    height, width = label.shape[-2:]
    rows = np.floor(_source_coords(height, shrunk_size(height, factor)) + 0.5).astype(np.int64)
    cols = np.floor(_source_coords(width, shrunk_size(width, factor)) + 0.5).astype(np.int64)
    rows = np.minimum(rows, height - 1)
    cols = np.minimum(cols, width - 1)
    return label[..., rows[:, None], cols[None, :]]


def zoom_bilinear(scores, factor=8):
    """Zoom score maps by ``factor`` with align-corners bilinear interpolation.

    ``scores``: array (..., H, W); returns (..., H + (H-1)(factor-1), W + (W-1)(factor-1))
    in float32 (float64 input stays float64).
    """
    _check_factor(factor)
    scores = np.asarray(scores)
    if scores.ndim < 2:
        raise ValueError(f"scores must have at least 2 dimensions, got shape {scores.shape}")
    dtype = np.float64 if scores.dtype == np.float64 else np.float32
    height, width = scores.shape[-2:]
    rows = bilinear_matrix(height, zoomed_size(height, factor)).astype(dtype)
    cols = bilinear_matrix(width, zoomed_size(width, factor)).astype(dtype)
    return rows @ scores.astype(dtype, copy=False) @ cols.T


def zoom_bilinear_adjoint(grad, factor=8):
    """The adjoint (transpose) of ``zoom_bilinear``: maps a gradient w.r.t. the zoomed
    scores (..., h, w) back to the input resolution (..., (h-1)//factor+1, ...).
    """
    _check_factor(factor)
    grad = np.asarray(grad)
    height, width = grad.shape[-2:]
    in_height, in_width = shrunk_size(height, factor), shrunk_size(width, factor)
    if zoomed_size(in_height, factor) != height or zoomed_size(in_width, factor) != width:
        raise ValueError(f"gradient of shape {grad.shape} is not the zoom of any input "
                         f"by factor {factor}")
    dtype = np.float64 if grad.dtype == np.float64 else np.float32
    rows = bilinear_matrix(in_height, height).astype(dtype)
    cols = bilinear_matrix(in_width, width).astype(dtype)
    return rows.T @ grad.astype(dtype, copy=False) @ cols


BLOB_LIMIT = 2 ** 31 - 1   # values of one Caffe blob (Blob::Reshape aborts beyond)


def check_top_size(shape, layer_name, factor):
    """Raise ToolkitError when a top of ``shape`` is larger than a Caffe blob can be (Caffe
    would abort in Reshape), naming the layer's factor."""
    values = int(np.prod(shape, dtype=object))
    if values > BLOB_LIMIT:
        raise ToolkitError(f"{layer_name}: param_str key 'factor' {factor} makes a top of "
                           f"shape {tuple(shape)} ({values} values), more than a Caffe blob "
                           f"holds ({BLOB_LIMIT}); use a smaller factor")


def parse_factor_param(param_str, layer_name):
    """The ``factor`` of a layer's JSON ``param_str`` (default 8); other keys are an error."""
    try:
        params = json.loads(param_str) if param_str.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{layer_name}: param_str is not valid JSON ({exc}); "
                           'write e.g. {"factor": 8}') from None
    if not isinstance(params, dict):
        raise ToolkitError(f'{layer_name}: param_str must be a JSON object such as {{"factor": 8}}')
    unknown = sorted(set(params) - {"factor"})
    if unknown:
        raise ToolkitError(f"{layer_name}: unknown param_str key {unknown[0]!r}; "
                           "the only key is 'factor'")
    factor = params.get("factor", 8)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ToolkitError(f"{layer_name}: 'factor' must be a positive integer, got {factor!r}")
    return factor


class LabelShrink(_LayerBase):
    """Caffe layer: label (N,1,H,W) -> shrunk label (N,1,h,w) (``shrink_label``).

    param_str: ``{"factor": 8}``. Labels get no gradient.
    """

    @one_line_errors
    def setup(self, bottom, top):
        self.factor = parse_factor_param(self.param_str, "LabelShrink")
        if len(bottom) != 1 or len(top) != 1:
            raise ToolkitError("LabelShrink takes one bottom (the label) and gives one top")

    @one_line_errors
    def reshape(self, bottom, top):
        shape = bottom[0].data.shape
        if len(shape) < 2:
            raise ToolkitError(f"LabelShrink: label blob has shape {shape}; expected (N,1,H,W)")
        top[0].reshape(*shape[:-2], shrunk_size(shape[-2], self.factor),
                       shrunk_size(shape[-1], self.factor))

    def forward(self, bottom, top):
        top[0].data[...] = shrink_label(bottom[0].data, self.factor)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0


class Zoom(_LayerBase):
    """Caffe layer: scores (N,C,H,W) -> bilinear zoom (N,C,H+(H-1)(f-1),W+(W-1)(f-1)).

    param_str: ``{"factor": 8}``. Backward is the exact adjoint of the zoom.
    """

    @one_line_errors
    def setup(self, bottom, top):
        self.factor = parse_factor_param(self.param_str, "Zoom")
        if len(bottom) != 1 or len(top) != 1:
            raise ToolkitError("Zoom takes one bottom (the scores) and gives one top")

    @one_line_errors
    def reshape(self, bottom, top):
        shape = bottom[0].data.shape
        if len(shape) < 2:
            raise ToolkitError(f"Zoom: score blob has shape {shape}; expected (N,C,H,W)")
        zoomed = (*shape[:-2], zoomed_size(shape[-2], self.factor),
                  zoomed_size(shape[-1], self.factor))
        check_top_size(zoomed, "Zoom", self.factor)
        top[0].reshape(*zoomed)

    def forward(self, bottom, top):
        top[0].data[...] = zoom_bilinear(bottom[0].data, self.factor)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = zoom_bilinear_adjoint(top[0].diff, self.factor)
