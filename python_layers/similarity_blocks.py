"""The template-similarity loss's NumPy work, one batch item at a time, reading fc7 in
blocks of channel rows (``template_similarity`` holds the loss's definition, options and
entry points).

Every similarity is ``s[k, p] = (V x_p) / |x_p|'`` up to a rank-one term, with ``x_p`` the
raw fc7 vector of pixel p and ``|x_p|'`` its norm (cosine) or centred norm (correlation,
correlation_printed). A pixel's weights are +1 for every class but its own and -1 for its
own, so its weighted sum over the K classes needs only two products: with the sum of all
templates (``Templates.total``) and with its own class's. An item's fc7 is multiplied with
the templates of the classes in its labels, the total and a row of ones (the channel sums),
in blocks of ``PRODUCT_ROW_BYTES`` (thin products run fastest from cache), plus one sum of
squares: the forward pass reads it once. The backward pass reads it once more and writes
the gradient straight into Caffe's diff, ``g = -x * b + [t_local^T | total | 1] @ coeffs``
(per-pixel coefficients), the product added in place by BLAS (``add_product``) in blocks
of ``GRADIENT_ROW_BYTES``. The template gradient (an option) takes the
per-class sums it needs from the pull ``sum_p a[k, p] x_p`` it computes anyway.

The centred norm is ``|x|^2 - D mean^2``; where that cancels more than 4 bits (a nearly
constant vector) the pixel is centred exactly in float64 instead, so a constant vector is
degenerate (similarity 0, no gradient) as the definition says. Items run over
``thread_pool.pool_map``; sums are reduced in item order, so every thread count gives the
same result bit for bit. The OpenBLAS of NumPy's and SciPy's wheels runs one thread
inside (the pool's threads share the cores instead; many small calls would serialise
inside OpenBLAS, hence blocks of a quarter or one MiB, not the 128 kB a cache would want).
"""
import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from python_layers.thread_pool import pool_map, single_threaded_blas

# fc7 bytes per block of channel rows (the fastest of 128 kB to 16 MiB at the thesis's
# scale, 1 and 2 threads, on the development machine: docs/measurements.md)
PRODUCT_ROW_BYTES = 2 ** 18    # the forward's products (256 kB)
GRADIENT_ROW_BYTES = 2 ** 20   # the gradient (1 MiB; a whole item is 6.9 MB)
EXACT_CENTRING = 16.0     # centre exactly where |x|^2 > EXACT_CENTRING * centred |x|^2


def inverse_norms(norms, eps):
    """``1 / norm``, 0 where ``norm <= eps`` (a degenerate vector)."""
    return np.where(norms > eps, 1.0 / np.maximum(norms, eps), 0.0)


def add_product(target, left, right):
    """``target += left @ right`` in place, all C-contiguous and of one float dtype: one
    BLAS gemm with beta 1 (no temporary) through SciPy; without SciPy (the GPU bundle's
    Python), NumPy's product and a sum."""
    gemm = _scipy_gemm(target.dtype)
    if gemm is None:
        target += left @ right
        return target
    # C-contiguous arrays are their transposes in Fortran order: target^T += right^T left^T
    result = gemm(1.0, right.T, left.T, 1.0, target.T, overwrite_c=1)
    if not np.shares_memory(result, target):   # pragma: no cover (a copy was made)
        target[...] = result.T
    return target


def _scipy_gemm(dtype):
    """SciPy's sgemm or dgemm for ``dtype``, or None without SciPy."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return None
    return blas.sgemm if dtype == np.float32 else blas.dgemm


@dataclass
class Templates:
    """The class templates as the block passes use them.

    ``unit``: float64 (K, D) rows scaled to unit (centred) norm, degenerate rows 0;
    ``inv_norm``: (K,) their inverse (centred) norms; ``offset``: correlation_printed's
    ``mean(t) / |t - mean(t)|`` per template (else None); ``scale``: 1, or D for
    correlation_printed (its product is D times Pearson's); ``total``: float64 (D,) the
    sum of the ``unit`` rows (the sum over classes of a pixel's similarities is one product
    with it). The passes build their work-dtype matrices from these per item.
    """
    similarity: str
    unit: np.ndarray
    inv_norm: np.ndarray
    offset: Optional[np.ndarray]
    scale: float
    total: np.ndarray

    @classmethod
    def of(cls, vectors, similarity, eps):
        """From the template vectors (K, D) float64."""
        centre = similarity != "cosine"
        means = vectors.mean(axis=1) if centre else np.zeros(len(vectors))
        centred = vectors - means[:, None]
        inv_norm = inverse_norms(np.sqrt(np.einsum("kd,kd->k", centred, centred)), eps)
        unit = centred * inv_norm[:, None]
        printed = similarity == "correlation_printed"
        scale = float(vectors.shape[1]) if printed else 1.0
        return cls(similarity, unit, inv_norm, means * inv_norm if printed else None, scale,
                   unit.sum(axis=0))


@dataclass
class BlockPass:
    """One forward pass's per-pixel results, kept for the backward pass.

    ``features``: (N, D, HW) fc7; ``labels``: (N, HW) class ids, -1 = ignore; ``active``:
    (N, HW) the pixels that add terms; ``classes``: (K,); ``denominator``: the loss's;
    ``items``: the items with valid pixels (the others add nothing); ``shape``: fc7's own
    shape; ``template_item``, ``template_pos``: where each template's pixel is.
    ``inv_norm``, ``mean``, ``weighted_sim`` (sum over classes of weight x similarity):
    float64 (N, HW).
    ``inexact``: {item: pixels centred exactly} (the backward pass centres them so too).
    ``zero_vectors``, ``min_norm``, ``valid_vectors``: the diagnostics of the valid pixels.
    """
    templates: Templates
    features: np.ndarray
    labels: np.ndarray
    active: np.ndarray
    classes: np.ndarray
    denominator: float
    eps: float
    work: type
    items: list
    shape: tuple = ()
    template_item: np.ndarray = None
    template_pos: np.ndarray = None
    inv_norm: np.ndarray = None
    mean: np.ndarray = None
    weighted_sim: np.ndarray = None
    loss: float = 0.0
    valid_vectors: int = 0
    zero_vectors: int = 0
    min_norm: float = float("inf")
    inexact: dict = field(default_factory=dict)
    _scratch: dict = field(default_factory=dict)

    def weights(self, item, pixels=slice(None)):
        """(K, HW) float64 (or the columns ``pixels``): -1 for the pixel's own class, +1 for
        the others, times its activity over the denominator (so that the loss is
        sum(weights * similarity))."""
        own = self.labels[item][pixels][None, :] == self.classes[:, None]
        return np.where(own, -1.0, 1.0) * (self.active[item][pixels] / self.denominator)

    def item_classes(self, item):
        """(local (J,): the positions in ``classes`` of the classes in the item's labels,
        own (HW,): each pixel's class as a position in ``local``, 0 where ignored)."""
        labels = self.labels[item]
        present = np.unique(labels[labels >= 0])
        own = np.minimum(np.searchsorted(present, labels), max(len(present) - 1, 0))
        return np.searchsorted(self.classes, present), own

    def row_blocks(self, row_bytes):
        """Slices of the D channel rows, about ``row_bytes`` of fc7 each."""
        depth, n_pos = self.features.shape[1:]
        rows = max(8, row_bytes // max(1, n_pos * np.dtype(self.work).itemsize))
        return [slice(r, min(r + rows, depth)) for r in range(0, depth, rows)]

    def scratch(self, name, shape):
        """A work-dtype buffer of this thread, kept for the pass."""
        key = (threading.get_ident(), name, shape)
        buffer = self._scratch.get(key)
        if buffer is None:
            buffer = self._scratch[key] = np.empty(shape, self.work)
        return buffer


def run_forward(state, threads):
    """Fill ``state``'s per-pixel arrays, loss and diagnostics."""
    n_items, _, n_pos = state.features.shape
    state.inv_norm = np.zeros((n_items, n_pos))
    state.mean = np.zeros((n_items, n_pos))
    state.weighted_sim = np.zeros((n_items, n_pos))
    with single_threaded_blas():
        results = pool_map(lambda item: _forward_item(state, item), state.items, threads)
    state.loss = float(sum(r[0] for r in results))
    state.valid_vectors = int(sum(r[1] for r in results))
    state.zero_vectors = int(sum(r[2] for r in results))
    state.min_norm = float(min((r[3] for r in results), default=float("inf")))
    return state


def _channel_sums(state, item, rows):
    """(products (R+1, HW): ``rows`` (R, D) float64 times x_p, and sum(x_p); squares (HW,)
    |x_p|^2), float64: the products in blocks of ``PRODUCT_ROW_BYTES`` (thin products run
    fastest from cache), the squares in one pass over the item."""
    x = state.features[item]
    matrix = np.empty((len(rows) + 1, x.shape[0]), state.work)
    matrix[:-1], matrix[-1] = rows, 1.0
    products = np.zeros((len(matrix), x.shape[1]), state.work)
    for block_rows in state.row_blocks(PRODUCT_ROW_BYTES):
        block = x[block_rows]
        if block.dtype != state.work:
            block = block.astype(state.work)
        products += matrix[:, block_rows] @ block
    features = x if x.dtype == state.work else x.astype(state.work)
    squares = np.einsum("dp,dp->p", features, features)
    return products.astype(np.float64), squares.astype(np.float64)


def _similarities(state, item, rows, offsets):
    """(sim (R, HW) float64, norms (HW,), squares (HW,)): the similarity of the item's
    pixels to ``rows`` (R, D) float64, unit (centred) template rows or sums of them, with
    ``offsets`` (R,) their correlation_printed offsets; also fills the item's ``inv_norm``
    and ``mean`` in ``state``."""
    tpl, depth = state.templates, state.features.shape[1]
    products, squares = _channel_sums(state, item, rows)
    numerators = products[:-1]
    mean = None
    if tpl.similarity != "cosine":
        mean = products[-1] / depth
        centred_sq = squares - depth * mean * mean
        inexact = np.flatnonzero(squares > EXACT_CENTRING * centred_sq)
        if inexact.size:   # exact float64 centring where the subtraction above cancels
            exact = state.features[item][:, inexact].astype(np.float64)
            mean[inexact] = exact.sum(axis=0) / depth
            exact -= mean[inexact]
            centred_sq[inexact] = np.einsum("dp,dp->p", exact, exact)
            numerators[:, inexact] = rows @ exact
            state.inexact[item] = inexact
        norms = np.sqrt(np.maximum(centred_sq, 0.0))
        state.mean[item] = mean
    else:
        norms = np.sqrt(squares)
    inv = inverse_norms(norms, state.eps)
    state.inv_norm[item] = inv
    sim = numerators * inv
    if tpl.offset is not None:   # correlation_printed: D r + (D-1) D a b
        sim = tpl.scale * sim + tpl.scale * (depth - 1) * np.outer(offsets, mean * inv)
    return sim, norms, squares


def item_similarities(state, item):
    """(sim (K, HW) float64, norms (HW,), squares (HW,)) of one item's pixels to every
    template; also fills the item's ``inv_norm`` and ``mean`` in ``state``."""
    return _similarities(state, item, state.templates.unit, state.templates.offset)


def _forward_item(state, item):
    """(loss part, valid, zero vectors, smallest norm) of one item.

    A pixel's weighted sum over the K classes is ``c (sum_k s_k - 2 s_own)`` (``weights``),
    so only the classes in the item's labels and the sum of all templates (``total``) are
    multiplied with its fc7."""
    tpl = state.templates
    local, own = state.item_classes(item)
    rows = np.vstack([tpl.unit[local], tpl.total])
    offsets = None if tpl.offset is None else np.append(tpl.offset[local], tpl.offset.sum())
    sim, norms, squares = _similarities(state, item, rows, offsets)
    valid = state.labels[item] >= 0
    n_valid = int(valid.sum())
    zero = int(np.count_nonzero(valid & (squares == 0)))
    min_norm = float(norms[valid].min()) if n_valid else float("inf")
    if not state.active[item].any():
        return 0.0, n_valid, zero, min_norm
    own_sim = sim[own, np.arange(sim.shape[1])]
    weighted = (state.active[item] / state.denominator) * (sim[-1] - 2.0 * own_sim)
    state.weighted_sim[item] = weighted
    return float(weighted.sum()), n_valid, zero, min_norm


def run_backward(state, grad, scale, template_grad, threads):
    """Write ``scale`` x the loss's gradient into ``grad`` (N, D, HW), C-contiguous."""
    done = np.zeros(len(grad), bool)
    done[state.items] = True
    grad[~done] = 0
    with single_threaded_blas():
        results = pool_map(lambda item: _backward_item(state, grad, scale, template_grad,
                                                       item), state.items, threads)
    pulls = [r for r in results if r is not None]
    if not template_grad or not pulls:
        return grad
    tpl, depth = state.templates, state.features.shape[1]
    pull = np.sum([p for p, _ in pulls], axis=0).T        # (K, D): sum_p a[k, p] x_p, centred
    weighted_mean = np.sum([m for _, m in pulls], axis=0)  # (K,): sum_p a[k, p] mean_p
    # scale x sum_p weight x s[k, p] = sum_p a[k, p] (D' u_k . x_p + D' (D-1) offset mean_p)
    weighted_sim = tpl.scale * np.einsum("kd,kd->k", tpl.unit, pull)
    if tpl.offset is not None:
        weighted_sim += tpl.scale * (depth - 1) * tpl.offset * weighted_mean
    # d s[k,p] / d t_k = (u_p - s u_k) / |t_k| (u_p centred for correlation), summed over
    # the pixels with their weights; correlation_printed: D u_p + (D-1) mean_p / |x_p|' 1
    part = (tpl.scale * pull + (tpl.scale - 1) * weighted_mean[:, None]
            - weighted_sim[:, None] * tpl.unit)
    part *= tpl.inv_norm[:, None]
    grad[state.template_item, :, state.template_pos] += part.astype(grad.dtype)
    return grad


def _backward_item(state, grad, scale, template_grad, item):
    """Write one item's gradient; returns (x @ a^T, a @ mean) for the template gradient.

    ``a[k, p]`` = weight x scale / |x_p|' is ``c_p`` for every class but the own one,
    ``-c_p`` for it, so ``sum_k a[k, p] t_k`` = ``c_p (total - 2 t_own)``: the product has
    a row per class in the item's labels, one for ``total`` and one of ones."""
    out = grad[item]
    if not state.active[item].any():
        out[...] = 0
        return None
    tpl, x = state.templates, state.features[item]
    depth, n_pos = x.shape
    inv, mean = state.inv_norm[item], state.mean[item]
    local, own = state.item_classes(item)
    c = (state.active[item] / state.denominator) * (inv * scale)       # (HW,)
    b = state.weighted_sim[item] * inv * inv * scale                  # (HW,)
    coeffs = np.zeros((len(local) + 2, n_pos), state.work)
    coeffs[own, np.arange(n_pos)] = -2.0 * c
    coeffs[-2] = c
    if tpl.similarity == "cosine":
        coeffs[-1] = 0
    elif tpl.offset is None:
        coeffs[-1] = mean * b
    else:   # (D-1) sum_k a[k, p] offset_k
        offset_sum = c * (tpl.offset.sum() - 2.0 * tpl.offset[local][own])
        coeffs[-1] = mean * b + (depth - 1) * offset_sum
    matrix = np.empty((depth, len(local) + 2), state.work)   # [D' t_local^T | D' total | 1]
    matrix[:, :-2] = tpl.scale * tpl.unit[local].T
    matrix[:, -2] = tpl.scale * tpl.total
    matrix[:, -1] = 1.0
    minus_b = (-b).astype(state.work)
    direct = out.dtype == state.work
    for rows in state.row_blocks(GRADIENT_ROW_BYTES):
        # g = -x * b + matrix @ coeffs, the product added in place by BLAS
        target = out[rows] if direct else state.scratch("gradient", (rows.stop - rows.start,
                                                                      n_pos))
        np.multiply(x[rows], minus_b, out=target, casting="unsafe")
        add_product(target, matrix[rows], coeffs)
        if not direct:
            out[rows] = target
    exact = state.inexact.get(item)
    if exact is not None:   # the exactly centred pixels, again in float64
        a_exact = state.weights(item, exact) * (inv[exact] * scale)
        centred = x[:, exact].astype(np.float64) - mean[exact]
        columns = (tpl.scale * tpl.unit.T) @ a_exact - centred * b[exact]
        if tpl.offset is not None:
            columns += (depth - 1) * (tpl.offset @ a_exact)
        out[:, exact] = columns
    if not template_grad:
        return None
    # sum_p a[k, p] (x_p - mean_p): in the work dtype, the exactly centred pixels in float64
    a = state.weights(item) * (inv * scale)                            # (K, HW)
    pulled = a.copy()
    if exact is not None:
        pulled[:, exact] = 0
    features = x if x.dtype == state.work else x.astype(state.work)
    pull = (features @ pulled.T.astype(state.work)).astype(np.float64) - pulled @ mean
    if exact is not None:
        pull += centred @ a[:, exact].T
    return pull, a @ mean
