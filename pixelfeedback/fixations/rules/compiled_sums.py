"""The optional compiled gather of the Convolution rule (numba, a PyPI wheel): the float32
channel sums ``sum_t W[z, t, c] * X[cell_t, c]`` of each unit, read straight from the
pixel-major map and the tap-major weights (``channel_sums``), or from Caffe's channel-major
map and weights (``plane_sums``, where the map is larger than the windows cover), so that
the patches and weights under every window are never copied out. The NumPy path (``convolution.channel_sums_float32``) computes
the same sums with ``einsum``; both feed the float32 ranking, whose rounding bound holds
for any order of summation, so the fixations are the same either way.

Imported only by ``convolution.compiled_channel_sums`` (numba is loaded on first use, never
when the toolkit is imported); absent numba, or with ``PIXELFEEDBACK_NO_NUMBA=1``, the NumPy
path runs.
"""
import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _channel_sums(pixels, cells, taps_w, z, out):
    n_units, n_taps = cells.shape
    channels = pixels.shape[1]
    for u in range(n_units):
        row = out[u]
        for c in range(channels):
            row[c] = 0.0
        weights = taps_w[z[u]]
        for t in range(n_taps):
            values = pixels[cells[u, t]]
            tap = weights[t]
            for c in range(channels):
                row[c] += values[c] * tap[c]
    return out


def channel_sums(pixels, cells, taps_w, z):
    """float32 (U, C): ``pixels`` (cells + 1, C) float32 with a zero last row, ``cells``
    (U, T) int64 rows of ``pixels`` (the last for taps outside the input), ``taps_w``
    (C_out, T, C) float32, ``z`` (U,) int64 output channels."""
    out = np.empty((len(cells), pixels.shape[1]), np.float32)
    return _channel_sums(pixels, np.ascontiguousarray(cells, np.int64), taps_w,
                         np.ascontiguousarray(z, np.int64), out)


@numba.njit(cache=True, nogil=True)
def _plane_sums(maps, cells, weights, z, out, patch_max):
    n_units, n_taps = cells.shape
    channels, n_cells = maps.shape
    for u in range(n_units):
        patch_max[u] = 0.0
    for c in range(channels):
        plane = maps[c]
        for u in range(n_units):
            w = weights[z[u], c]
            total = np.float32(0.0)
            largest = np.float32(0.0)
            for t in range(n_taps):
                cell = cells[u, t]
                if cell < n_cells:
                    value = plane[cell]
                    total += value * w[t]
                    largest = max(largest, abs(value))
            out[u, c] = total
            if largest > patch_max[u]:
                patch_max[u] = largest
    return out


def plane_sums(maps, cells, weights, z):
    """(float32 (U, C) sums, float64 (U,) max |value| under each unit's taps) read from the
    channel-major ``maps`` (C, cells) float32: ``cells`` (U, T) int64 (``cells`` count = a
    tap outside the input), ``weights`` (C_out, C, T) float32 (Caffe's own layout)."""
    out = np.empty((len(cells), maps.shape[0]), np.float32)
    patch_max = np.empty(len(cells), np.float64)
    _plane_sums(maps, np.ascontiguousarray(cells, np.int64), weights,
                np.ascontiguousarray(z, np.int64), out, patch_max)
    return out, patch_max
