"""The Pooling rule (MAX and AVE): the top-K input cells of each window, same channel."""
import numpy as np

from pixelfeedback.fixations.graph import pool_geometry
from pixelfeedback.fixations.kstrategy import VALUES
from pixelfeedback.fixations.units import Units, concat_units
from python_layers import ToolkitError


def pooling(ctx, layer, t, units):
    """Pooling: the top-K cells of each window inside the input (padding is never a
    candidate), ranked by value, ties to the first cell in row-major order. Caffe's ceil
    rounding and window clipping; global pooling uses the whole map. Resolution K: the
    stride's area (H * W for global pooling). A unit whose window has no positive cell
    is dead (the rule ranks values)."""
    X = ctx.bottoms[0]
    H, W = X.shape[2:]
    geo = pool_geometry(layer, (H, W))
    if geo.method not in ("MAX", "AVE"):
        raise ToolkitError(f"layer '{layer.name}': {geo.method} pooling has no fixation "
                           "rule (only MAX and AVE)")
    (kh, kw), (sh, sw), (ph, pw) = geo.kernel, geo.stride, geo.pad
    spec = ctx.k_spec(H * W if geo.global_pooling else sh * sw)
    T = kh * kw
    out = []
    for part in ctx.chunks(len(units), T * 2):
        u = units.take(part)
        item = ctx.items(u.tag)
        ty = u.y[:, None] * sh - ph + np.arange(kh)
        tx = u.x[:, None] * sw - pw + np.arange(kw)
        inside = ((ty >= 0) & (ty < H))[:, :, None] & ((tx >= 0) & (tx < W))[:, None, :]
        values = X[item[:, None, None], u.c[:, None, None], np.clip(ty, 0, H - 1)[:, :, None],
                   np.clip(tx, 0, W - 1)[:, None, :]].astype(np.float64)
        ctx.check_finite(values)
        values[~inside] = -np.inf
        rows, cells = ctx.choose(values.reshape(len(u), T), spec, u, VALUES)
        out.append(Units(u.tag[rows], u.c[rows], ty[rows, cells // kw], tx[rows, cells % kw]))
    return [(0, concat_units(out))]
