"""The Interp rule (DeepLab's Interp type and the Zoom Python layer): bilinear sources."""
import json

import numpy as np

from pixelfeedback.fixations.units import Units


def interp(ctx, layer, t, units):
    """Interp / Zoom: of each unit's align-corners bilinear source cells (up to 4, those of
    non-zero weight, in the order top-left, top-right, bottom-left, bottom-right), the top-K
    by ``weight * value``. Resolution K: the rounded input/output size ratio per axis.
    Dead: every ``weight * value`` exactly 0."""
    X = ctx.bottoms[0]
    H, W = X.shape[2:]
    top_h, top_w = ctx.top_shapes[t][2:]
    virtual_h, virtual_w = top_h, top_w
    if layer.type == "Python":
        factor = zoom_factor(layer)
        if factor is not None:
            virtual_h, virtual_w = H + (H - 1) * (factor - 1), W + (W - 1) * (factor - 1)
    spec = ctx.k_spec(max(1, round(H / top_h)) * max(1, round(W / top_w)))
    y0, y1, wy0, wy1 = bilinear_sources(units.y, H, virtual_h)
    x0, x1, wx0, wx1 = bilinear_sources(units.x, W, virtual_w)
    cand_y = np.stack([y0, y0, y1, y1], axis=1)
    cand_x = np.stack([x0, x1, x0, x1], axis=1)
    weight = np.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], axis=1)
    item = ctx.items(units.tag)
    values = weight * X[item[:, None], units.c[:, None], cand_y, cand_x].astype(np.float64)
    ctx.check_finite(values)
    values[weight == 0] = -np.inf
    rows, cols = ctx.choose(values, spec, units)
    return [(0, Units(units.tag[rows], units.c[rows], cand_y[rows, cols],
                      cand_x[rows, cols]))]


def zoom_factor(layer):
    """``factor`` from a Zoom layer's JSON param_str (None when absent)."""
    text = layer.proto.python_param.param_str
    try:
        params = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return None
    factor = params.get("factor") if isinstance(params, dict) else None
    return int(factor) if isinstance(factor, int) and factor >= 1 else None


def bilinear_sources(out_coord, size_in, size_virtual):
    """Align-corners bilinear sources of output coordinates: (low, high, w_low, w_high)
    with exact rational weights (``src = out * (in-1) / (virtual-1)``)."""
    if size_virtual <= 1 or size_in <= 1:
        low = np.zeros_like(out_coord)
        return low, low, np.ones(out_coord.shape), np.zeros(out_coord.shape)
    numerator = out_coord * (size_in - 1)
    low, rest = np.divmod(numerator, size_virtual - 1)
    low = np.minimum(low, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    w_high = rest / (size_virtual - 1)
    return low, high, 1.0 - w_high, w_high
