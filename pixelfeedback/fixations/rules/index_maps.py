"""Rules that only move units, with no choice: identity, Concat, Crop and Flatten."""
import numpy as np

from pixelfeedback.fixations.units import Units, shape3, unravel
from python_layers import ToolkitError


def identity(ctx, layer, t, units):
    """ReLU, Dropout, BatchNorm, LRN, Split, one-bottom Scale/Bias, any in-place layer: the
    unit itself, in bottom 0."""
    return [(0, units)]


def concat(ctx, layer, t, units):
    """Concat: the bottom owning the unit's coordinate along the concat axis, the coordinate
    made relative to that bottom."""
    param = layer.proto.concat_param
    ndim = len(ctx.top_shapes[0])
    axis = param.concat_dim if param.HasField("concat_dim") else param.axis
    axis = axis + ndim if axis < 0 else axis
    if ndim == 2 and axis == 1:
        coord_axis = 1
    elif ndim == 4 and axis in (1, 2, 3):
        coord_axis = axis
    else:
        raise ToolkitError(f"layer '{layer.name}': Concat along axis {axis} of "
                           f"{ndim}-D blobs has no fixation rule (batch items never mix)")
    sizes = [bottom.shape[axis] for bottom in ctx.bottoms]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    coords = [units.c, units.y, units.x][coord_axis - 1]
    owner = np.searchsorted(starts, coords, side="right") - 1
    out = []
    for b in range(len(ctx.bottoms)):
        part = units.take(owner == b)
        shifted = [part.c, part.y, part.x]
        shifted[coord_axis - 1] = shifted[coord_axis - 1] - starts[b]
        out.append((b, Units(part.tag, *shifted)))
    return out


def crop_offsets(layer, ndim):
    """The per-axis offsets of a Crop layer over ``ndim``-D blobs (Caffe's crop_param:
    one offset for every axis from ``axis`` on, or one per axis)."""
    param = layer.proto.crop_param
    start = param.axis + ndim if param.axis < 0 else param.axis
    offsets = [0] * ndim
    for axis in range(start, ndim):
        if len(param.offset) == 1:
            offsets[axis] = int(param.offset[0])
        elif len(param.offset) > 1:
            offsets[axis] = int(param.offset[axis - start])
    return offsets


def crop(ctx, layer, t, units):
    """Crop: the unit shifted by the crop offsets into bottom 0 (bottom 1 gives only the
    shape)."""
    ndim = len(ctx.bottoms[0].shape)
    offsets = crop_offsets(layer, ndim)
    if offsets[0]:
        raise ToolkitError(f"layer '{layer.name}': Crop with an offset on the batch axis "
                           "has no fixation rule")
    if ndim != 4:
        raise ToolkitError(f"layer '{layer.name}': Crop of {ndim}-D blobs has no fixation "
                           "rule (only N x C x H x W)")
    return [(0, Units(units.tag, units.c + offsets[1], units.y + offsets[2],
                      units.x + offsets[3]))]


def flatten(ctx, layer, t, units):
    """Flatten: the flat index (the unit's channel) back to (c, y, x) of the input."""
    return [(0, Units(units.tag, *unravel(units.c, shape3(ctx.bottoms[0].shape))))]
