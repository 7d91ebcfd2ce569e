"""The Convolution and Deconvolution rule: the top-K input channels of each unit, each at
one tap of its window.

The contribution of input channel c' to unit (z, y, x) is the sum over the window's taps
inside the input of ``W[z, c', i, j] * X[c', tap row, tap column]`` (float64, taps summed in
row-major order). The chosen channels go down at: the channel's strongest single tap (full
shift), or the window's centre tap moved, per axis, to the nearest tap inside the input (no
shift); partial shift is full where the dilation is 1, else no shift. A unit whose
channel contributions are all exactly 0 (or whose window lies wholly in the padding) is
dead: it is stopped (``ctx.stop``) and has no fixation below. Exact ties go to the lowest
channel, then the first tap in row-major order.

The work is split into named steps: ``window_taps`` (which taps each unit has),
``gather_patches`` / ``gather_weights`` (the input values and weights under them),
``choose_channels`` (the top-K channels, optionally ranked in float32 first) and
``strongest_taps`` (the full-shift tap). Where numba is installed, the float32 sums of the
fixed-K ranking come from ``compiled_sums`` without copying the patches out
(``compiled_kernels``); the fixations are the same.
"""
import os
from dataclasses import dataclass

import numpy as np

from pixelfeedback.fixations.graph import conv_geometry
from pixelfeedback.fixations.kstrategy import dead_rows, select_top
from pixelfeedback.fixations.units import Units, concat_units

try:
    import cv2  # only for fast transposes
except ImportError:  # pragma: no cover
    cv2 = None


def convolution(ctx, layer, t, units):
    """Convolution and Deconvolution: top-K input channels, each at its tap (shift)."""
    deconv = layer.type == "Deconvolution"
    geo = conv_geometry(layer)
    X = ctx.bottoms[0]
    _, C_in, H, W = X.shape
    C_out = ctx.top_shapes[0][1]
    (kh, kw), (sh, sw), (dh, dw) = geo.kernel, geo.stride, geo.dilation
    G = geo.group
    cg, og = C_in // G, C_out // G
    full = ctx.shift == "full" or (ctx.shift == "partial" and dh == 1 and dw == 1)
    spec = ctx.k_spec(1 if deconv else sh * sw)
    taps_w = tap_major_weights(ctx.params[0], deconv, G)

    live, taps = window_taps(units.y, units.x, geo, (H, W), deconv)
    if not live.all():   # a window wholly in the padding reaches only the bias: dead
        ctx.stop(units.take(~live))
        units, taps = units.take(live), taps.take(live)
    if len(units) == 0:
        return [(0, concat_units([]))]
    z = units.c
    item = ctx.items(units.tag)
    group = z // og

    # Fixed K may rank float32 contributions (checked against their rounding bound);
    # fraction K and the K-needed statistics always use float64.
    fast = ctx.float32_ranking and spec[0] == "fixed" and ctx.collector is None
    weight_bound = channel_weight_bound(taps_w, kh * kw) if fast else None
    cells = None
    out = []
    for (it, g), index in _partition(item, group):
        maps = X[it, g * cg:(g + 1) * cg]
        # Gather from a pixel-major copy when the windows cover more cells than the map has.
        pixels = patch_max = None
        if 3 * len(index) * taps.count > H * W:
            pixels = _pixel_major(maps)
            if cells is None:
                cells = taps.cells(W, H * W)
            if fast:   # one bound for the whole map: cheaper than per window here
                patch_max = max(float(pixels.max()), -float(pixels.min()))

        compiled = (compiled_kernels() if fast and taps.shared and not deconv
                    and spec[1] < cg and spec[1] <= 8 else None)
        if compiled is not None and cells is None:
            cells = taps.cells(W, H * W)

        def work_compiled(sub, g=g, maps=maps, pixels=pixels, cells=cells,
                          patch_max=patch_max):
            # float32 sums straight from the map; rows gathered only where the float64
            # sums or the strongest tap are needed
            z_sub, n_taps = z[sub], taps.count
            cells_sub = cells[sub]
            if pixels is not None:
                taps_w3 = taps_w.reshape(len(taps_w), n_taps, -1)
                approx = compiled.channel_sums(pixels, cells_sub, taps_w3, z_sub)
                bound_max = patch_max
            else:
                plane_w = ctx.params[0].reshape(len(taps_w), cg, n_taps)
                approx, bound_max = compiled.plane_sums(maps.reshape(cg, -1), cells_sub,
                                                        plane_w, z_sub)

            def exact(rows):
                valid = taps.valid(sub[rows])
                patch, layout = gather_patches(maps, taps, sub[rows], valid, pixels, cells)
                return channel_contributions(patch, layout,
                                             gather_weights(taps_w, z_sub[rows], taps, sub[rows]))

            def check_inputs():
                patch, _ = gather_patches(maps, taps, sub, taps.valid(sub), pixels, cells)
                _check_inputs_finite(ctx, np.full(1, np.inf), patch,
                                     gather_weights(taps_w, z_sub, taps, sub))

            rows, cols = rank_float32(ctx, spec[1], approx, exact, check_inputs,
                                      units.take(sub), float32_bound(n_taps, bound_max,
                                                                     weight_bound[z_sub]))
            if full:
                flat_w = taps_w.reshape(len(taps_w), n_taps, -1)
                if pixels is not None:
                    values = pixels[cells_sub[rows], cols[:, None]]
                else:
                    values = maps.reshape(cg, -1)[cols[:, None],
                                                  np.minimum(cells_sub[rows], H * W - 1)]
                products = values.astype(np.float64) * flat_w[z_sub[rows][:, None],
                                                              np.arange(n_taps), cols[:, None]]
                products[~taps.valid(sub)[rows]] = -np.inf
                i, j = np.divmod(np.argmax(products, axis=1), taps.col_tap.shape[1])
            else:
                i, j = taps.centre_i[sub][rows], taps.centre_j[sub][rows]
            picked = sub[rows]
            return Units(units.tag[picked], g * cg + cols, taps.row[picked, i],
                         taps.col[picked, j])

        def work(sub, g=g, maps=maps, pixels=pixels, cells=cells, patch_max=patch_max):
            valid = taps.valid(sub)
            patch, layout = gather_patches(maps, taps, sub, valid, pixels, cells)
            weights = gather_weights(taps_w, z[sub], taps, sub)
            rows, cols = choose_channels(ctx, spec, patch, layout, weights, units.take(sub),
                                         weight_bound[z[sub]] if fast else None, patch_max)
            if full:
                tap = strongest_taps(patch, layout, weights, valid, rows, cols)
                i, j = np.divmod(tap, taps.col_tap.shape[1])
            else:
                i, j = taps.centre_i[sub][rows], taps.centre_j[sub][rows]
            picked = sub[rows]
            return Units(units.tag[picked], g * cg + cols, taps.row[picked, i],
                         taps.col[picked, j])

        if compiled is not None:
            out.extend(ctx.map_chunks(work_compiled, [index[part] for part in
                                                      ctx.chunks(len(index), cg * 4)]))
        else:
            out.extend(ctx.map_chunks(work, [index[part] for part in
                                             ctx.chunks(len(index), cg * taps.count * 4)]))
    return [(0, concat_units(out))]


NO_NUMBA_ENV = "PIXELFEEDBACK_NO_NUMBA"
_compiled = []


def compiled_kernels():
    """The module ``compiled_sums`` when numba is installed (and ``PIXELFEEDBACK_NO_NUMBA``
    is not set), else None: the NumPy gather and ``einsum`` then do the same work."""
    if os.environ.get(NO_NUMBA_ENV, "").strip() not in ("", "0"):
        return None
    if not _compiled:
        try:
            from pixelfeedback.fixations.rules import compiled_sums
        except ImportError:
            compiled_sums = None
        _compiled.append(compiled_sums)
    return _compiled[0]


# ----------------------------------------------------------------------------- tap geometry

@dataclass
class WindowTaps:
    """The candidate taps of each unit's window, per axis, each (U, m): kernel tap index,
    input coordinate and whether that lies inside the input; ``centre_i``/``centre_j``:
    per unit the candidate column of the centre tap moved inside the input; ``shared``:
    every unit lists all kernel taps in order (so the weights need no per-unit gather)."""
    row_tap: np.ndarray
    row: np.ndarray
    row_valid: np.ndarray
    col_tap: np.ndarray
    col: np.ndarray
    col_valid: np.ndarray
    centre_i: np.ndarray
    centre_j: np.ndarray
    kernel: tuple
    shared: bool

    @property
    def count(self):
        """T: the candidate taps per window."""
        return self.row_tap.shape[1] * self.col_tap.shape[1]

    def take(self, index):
        """The taps of the units at ``index``."""
        return WindowTaps(self.row_tap[index], self.row[index], self.row_valid[index],
                          self.col_tap[index], self.col[index], self.col_valid[index],
                          self.centre_i[index], self.centre_j[index], self.kernel,
                          self.shared)

    def valid(self, sub):
        """bool (n, T): the taps of units ``sub`` inside the input, row-major."""
        return (self.row_valid[sub][:, :, None]
                & self.col_valid[sub][:, None, :]).reshape(len(sub), self.count)

    def cells(self, width, outside):
        """int (U, T): flat input cell of every tap (``y * width + x``), ``outside`` for taps
        outside the input."""
        inside = self.row_valid[:, :, None] & self.col_valid[:, None, :]
        flat = self.row[:, :, None] * width + self.col[:, None, :]
        return np.where(inside, flat, outside).reshape(-1, self.count)


def window_taps(y, x, geo, size_hw, deconv):
    """(live, WindowTaps) of output units at (``y``, ``x``) of a (de)convolution of geometry
    ``geo`` over an input of ``size_hw``; ``live``: bool (U,), the windows with at least
    one tap inside the input (the others see only padding). ``taps`` covers all units."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo.kernel, geo.stride, geo.pad, geo.dilation
    H, W = size_hw
    row_tap, row, row_valid = axis_taps(y, kh, sh, ph, dh, H, deconv)
    col_tap, col, col_valid = axis_taps(x, kw, sw, pw, dw, W, deconv)
    live = row_valid.any(axis=1) & col_valid.any(axis=1)
    shared = not (deconv and ((dh == 1 and sh > 1) or (dw == 1 and sw > 1)))
    taps = WindowTaps(row_tap, row, row_valid, col_tap, col, col_valid,
                      nearest_valid(row_tap, row_valid, (kh - 1) // 2),
                      nearest_valid(col_tap, col_valid, (kw - 1) // 2), (kh, kw), shared)
    return live, taps


def axis_taps(out, kernel, stride, pad, dilation, size, deconv):
    """Candidate taps of output coordinates ``out`` along one axis: (tap index, input
    coordinate, inside the input), each (U, m).

    Convolution: every tap, input ``out*stride - pad + tap*dilation``. Deconvolution: input
    ``(out + pad - tap*dilation) / stride`` where that divides; with dilation 1 only the
    taps ``(out + pad) mod stride + stride*m`` can divide, so only those are listed.
    """
    if not deconv:
        taps = np.broadcast_to(np.arange(kernel), (len(out), kernel))
        coord = out[:, None] * stride - pad + taps * dilation
        return taps, coord, (coord >= 0) & (coord < size)
    if dilation == 1 and stride > 1:
        taps = (out[:, None] + pad) % stride + stride * np.arange(-(-kernel // stride))
    else:
        taps = np.broadcast_to(np.arange(kernel), (len(out), kernel))
    numerator = out[:, None] + pad - taps * dilation
    coord = numerator // stride
    inside = (taps < kernel) & (numerator % stride == 0) & (coord >= 0) & (coord < size)
    return taps, coord, inside


def nearest_valid(taps, valid, centre):
    """Per row, the candidate (column) whose tap index is nearest to ``centre`` among those
    inside the input (ties: the lower tap index)."""
    distance = np.where(valid, np.abs(taps - centre), np.iinfo(np.int64).max)
    return np.argmin(distance, axis=1)


# ----------------------------------------------------------------------------- the gather

def tap_major_weights(weights, deconv, group):
    """(de)convolution weights as (C_out, kh, kw, C_in/group) float32, so that one output
    channel's taps are rows of contiguous input-channel vectors.

    Convolution weights are (C_out, C_in/g, kh, kw); Deconvolution weights are
    (C_in, C_out/g, kh, kw), where output channel z of group g reads input channels
    g*C_in/g ... through W[c', z - g*C_out/g].
    """
    if deconv:
        c_in, og, kh, kw = weights.shape
        cg = c_in // group
        table = weights.reshape(group, cg, og, kh, kw).transpose(0, 2, 3, 4, 1)
        return np.ascontiguousarray(table.reshape(group * og, kh, kw, cg))
    return np.ascontiguousarray(weights.transpose(0, 2, 3, 1))


def gather_patches(maps, taps, sub, valid, pixels=None, cells=None):
    """The input values under the taps of units ``sub``, taps outside the input reading 0:
    (patch, layout). With ``pixels`` (``_pixel_major(maps)``) and ``cells``
    (``taps.cells``): tap-major, layout "utc", (n, T, cg); else straight from ``maps``
    (cg, H, W): channel-major, layout "cut", (cg, n, T)."""
    if pixels is not None:
        return pixels[cells[sub]], "utc"
    cg, H, W = maps.shape
    patch = maps[:, np.clip(taps.row[sub], 0, H - 1)[:, :, None],
                 np.clip(taps.col[sub], 0, W - 1)[:, None, :]]
    patch = patch.reshape(cg, len(sub), taps.count)
    if not valid.all():
        patch *= valid
    return patch, "cut"


def gather_weights(taps_w, z, taps, sub):
    """(n, T, cg) weights of output channels ``z`` at the candidate taps of units ``sub``
    (``taps_w`` from ``tap_major_weights``)."""
    n = len(sub)
    if taps.shared:
        return taps_w[z].reshape(n, taps.count, -1)
    kh, kw = taps.kernel
    rows_i = np.minimum(taps.row_tap[sub], kh - 1)[:, :, None]
    cols_j = np.minimum(taps.col_tap[sub], kw - 1)[:, None, :]
    return taps_w[z[:, None, None], rows_i, cols_j].reshape(n, taps.count, -1)


def _pixel_major(maps):
    """(C, H, W) float32 -> (H*W + 1, C) with a zero last row (the cell for taps outside)."""
    channels = maps.shape[0]
    flat = np.ascontiguousarray(maps, np.float32).reshape(channels, -1)
    out = np.empty((flat.shape[1] + 1, channels), np.float32)
    out[-1] = 0
    if cv2 is not None and flat.shape[1] < 2 ** 31:
        cv2.transpose(flat, dst=out[:-1])    # a blocked transpose, 2-3x faster than NumPy's
    else:
        out[:-1] = flat.T
    return out


def _partition(item, group):
    """[((item, group), row indices)] of the units in each (batch item, conv group)."""
    if len(item) == 0:
        return []
    key = item * (int(group.max()) + 1) + group
    if key.min() == key.max():
        return [((int(item[0]), int(group[0])), np.arange(len(key)))]
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    ends = np.append(starts[1:], len(key))
    return [((int(item[order[a]]), int(group[order[a]])), order[a:b])
            for a, b in zip(starts, ends)]


# ----------------------------------------------------------------------------- the choice

def channel_contributions(patch, layout, weights, index=None):
    """float64 (n, cg): every channel's contribution, taps summed in row-major order (of
    the rows ``index`` only, when given). A product of two float32s is exact in float64."""
    p = patch if index is None else (patch[index] if layout == "utc" else patch[:, index])
    w = weights if index is None else weights[index]
    if w.shape[1] == 1:   # one tap: just the products
        return np.multiply(p[:, 0, :] if layout == "utc" else p[:, :, 0].T, w[:, 0, :],
                           dtype=np.float64)
    return np.einsum(layout + ",utc->uc", p, w, dtype=np.float64)


def channel_weight_bound(taps_w, taps):
    """Per output channel, ``taps * max|W[z]|``: a bound on ``sum_t |W[z, t, c]|`` for every
    input channel c (what the float32 ranking's rounding bound needs)."""
    flat_w = taps_w.reshape(taps_w.shape[0], -1)
    return taps * np.maximum(flat_w.max(axis=1), -flat_w.min(axis=1))


def choose_channels(ctx, spec, patch, layout, weights, units, weight_bound=None,
                    patch_max=None):
    """(rows, cols) of the top channels from patches and per-unit weights (n, T, cg) of
    the rows' ``units``; dead rows (all contributions exactly 0) are stopped.

    Without ``weight_bound`` the channel contributions are float64 (exact products,
    taps summed in order). With it (fixed K; per row a bound on ``sum_t |w_t|`` over
    any channel), they are first summed in float32 (``choose_channels_float32``), which
    gives the float64 ranking and the same dead units either way.
    """
    k, n = spec[1], weights.shape[2]
    if weight_bound is None or k >= n or k > 8:
        values = channel_contributions(patch, layout, weights)
        if not np.isfinite(values).all():
            _check_inputs_finite(ctx, values, patch, weights)
        return ctx.choose(values, spec, units)
    return choose_channels_float32(ctx, k, patch, layout, weights, units, weight_bound,
                                   patch_max)


def choose_channels_float32(ctx, k, patch, layout, weights, units, weight_bound,
                            patch_max=None):
    """The float64 top-``k`` channels, ranked in float32 where that is safe (``rank_float32``
    on the ``einsum`` of the patches and weights). ``patch_max``: a bound on |patch| for
    all rows (else taken per row). NaN or inf in the patches or weights is an error
    (``ctx.check_finite``); float32 sums that overflow finite inputs are ranked in float64.
    """
    approx = np.einsum(layout + ",utc->uc", patch, weights)
    if patch_max is None:
        axes = (1, 2) if layout == "utc" else (0, 2)
        patch_max = np.maximum(patch.max(axis=axes), -patch.min(axis=axes)).astype(np.float64)

    def exact(rows):
        return channel_contributions(patch, layout, weights, rows)

    def check_inputs():
        _check_inputs_finite(ctx, approx, patch, weights)

    return rank_float32(ctx, k, approx, exact, check_inputs, units,
                        float32_bound(weights.shape[1], patch_max, weight_bound))


def float32_bound(taps, patch_max, weight_bound):
    """The rounding bound of a float32 sum of ``taps`` products, in any order:
    ``2 (T+2) 2^-24 max|patch| weight_bound`` (per row)."""
    return 2.0 * (taps + 2) * 2.0 ** -24 * patch_max * weight_bound


def rank_float32(ctx, k, approx, exact, check_inputs, units, bound):
    """The float64 top-``k`` channels from float32 sums ``approx`` (n, C) of rounding bound
    ``bound`` (per row); ``exact(rows)`` gives those rows' float64 sums.

    A row whose gap between its K-th and (K+1)-th float32 sums exceeds twice the bound
    keeps that choice; the others are redone in float64. A row whose float32 sums all lie
    within the bound of 0 may be dead: its float64 sums decide, and dead rows are stopped
    (``ctx.stop``) with no channel. Non-finite sums: ``check_inputs()`` raises when the
    inputs hold NaN or inf, else (an overflow) every row is ranked in float64.
    """
    # The K+1 largest per row by repeated argmax (np.partition is far slower per row).
    every = np.arange(len(approx))
    top_cols, top_values = [], []
    low = approx.min(axis=1).astype(np.float64)
    for _ in range(k + 1):
        best = np.argmax(approx, axis=1)
        top_cols.append(best)
        top_values.append(approx[every, best].astype(np.float64))
        approx[every, best] = -np.inf
    scale = np.maximum(top_values[0], -low)
    if not np.isfinite(scale).all():
        check_inputs()
        return ctx.choose(exact(every), spec=("fixed", k), units=units)
    maybe_dead = np.flatnonzero(scale <= bound)
    certain = top_values[k - 1] - top_values[k] > 2.0 * bound
    sure = np.flatnonzero(certain)
    rows = np.repeat(sure, k)
    cols = np.stack([c[sure] for c in top_cols[:k]], axis=1).ravel()
    unsure = np.flatnonzero(~certain)
    if len(unsure):
        r, c = select_top(exact(unsure), "fixed", k)
        rows, cols = np.concatenate([rows, unsure[r]]), np.concatenate([cols, c])
    if len(maybe_dead):
        dead = maybe_dead[dead_rows(exact(maybe_dead))]
        if len(dead):
            ctx.stop(units.take(dead))
            keep = ~np.isin(rows, dead)
            rows, cols = rows[keep], cols[keep]
    return rows, cols


def _check_inputs_finite(ctx, sums, patch, weights):
    """Non-finite channel ``sums``: an error when the patches or weights hold NaN or inf
    (``ctx.check_finite`` names which); finite inputs mean the sums overflowed, which the
    caller then ranks in float64."""
    if not (np.isfinite(patch).all() and np.isfinite(weights).all()):
        ctx.check_finite(sums, weights=weights)


def strongest_taps(patch, layout, weights, valid, rows, cols):
    """Full shift: for each chosen (row, channel) the candidate tap (column of T) with the
    largest single float64 contribution among the taps inside the input."""
    values = patch[rows, :, cols] if layout == "utc" else patch[cols, rows, :]
    products = values.astype(np.float64) * weights[rows, :, cols]
    products[~valid[rows]] = -np.inf
    return np.argmax(products, axis=1)
