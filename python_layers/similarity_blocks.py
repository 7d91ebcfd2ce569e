"""The template-similarity loss's NumPy work, one batch item at a time, reading fc7 in
blocks of channel rows (``template_similarity`` holds the loss's definition, options and
entry points).

Every similarity is ``s[k, p] = (V x_p) / |x_p|'`` up to a rank-one term, with ``x_p`` the
raw fc7 vector of pixel p and ``|x_p|'`` its norm (cosine) or centred norm (correlation,
correlation_printed). The forward pass reads an item's fc7 once, a block of channel rows at
a time (contiguous in Caffe's (D, h*w) layout, so the block stays in cache for its second
use): one matrix product with the template rows plus a row of ones (which gives the channel
sums) and one sum of squares, both accumulated over the blocks. The backward pass reads it
once more and writes the gradient straight into Caffe's diff, ``g = [V^T | 1] @ [a ; r] -
x * b`` (per-pixel coefficients ``a``, ``r``, ``b``).

The centred norm is ``|x|^2 - D mean^2``; where that cancels more than 4 bits (a nearly
constant vector) the pixel is centred exactly in float64 instead, so a constant vector is
degenerate (similarity 0, no gradient) as the definition says. Items run over
``thread_pool.pool_map``; sums are reduced in item order, so every thread count gives the
same result bit for bit. NumPy's OpenBLAS runs one thread inside (the pool's threads share
the cores instead).
"""
import threading
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from python_layers.thread_pool import pool_map, single_threaded_numpy_blas

ROW_BYTES = 2 ** 17       # fc7 bytes per block of channel rows (about 128 kB: stays in cache)
EXACT_CENTRING = 16.0     # centre exactly where |x|^2 > EXACT_CENTRING * centred |x|^2


def inverse_norms(norms, eps):
    """``1 / norm``, 0 where ``norm <= eps`` (a degenerate vector)."""
    return np.where(norms > eps, 1.0 / np.maximum(norms, eps), 0.0)


@dataclass
class Templates:
    """The class templates as the block passes use them.

    ``unit``: float64 (K, D) rows scaled to unit (centred) norm, degenerate rows 0;
    ``inv_norm``: (K,) their inverse (centred) norms; ``forward``: work dtype (K+1, D), the
    rows ``V`` of the similarity's product and a last row of ones (channel sums);
    ``backward``: work dtype (D, K+1), ``[V^T | 1]``; ``offset``: correlation_printed's
    ``mean(t) / |t - mean(t)|`` per template (else None); ``scale``: 1, or D for
    correlation_printed (its product is D times Pearson's).
    """
    similarity: str
    unit: np.ndarray
    inv_norm: np.ndarray
    forward: np.ndarray
    backward: np.ndarray
    offset: Optional[np.ndarray]
    scale: float

    @classmethod
    def of(cls, vectors, similarity, eps, work):
        """From the template vectors (K, D) float64."""
        centre = similarity != "cosine"
        means = vectors.mean(axis=1) if centre else np.zeros(len(vectors))
        centred = vectors - means[:, None]
        inv_norm = inverse_norms(np.sqrt(np.einsum("kd,kd->k", centred, centred)), eps)
        unit = centred * inv_norm[:, None]
        printed = similarity == "correlation_printed"
        scale = float(vectors.shape[1]) if printed else 1.0
        rows = np.vstack([unit, np.ones((1, vectors.shape[1]))])
        return cls(similarity, unit, inv_norm, np.ascontiguousarray(rows, work),
                   np.ascontiguousarray((rows * np.append(np.full(len(unit), scale), 1.0)
                                         [:, None]).T, work),
                   means * inv_norm if printed else None, scale)


@dataclass
class BlockPass:
    """One forward pass's per-pixel results, kept for the backward pass.

    ``features``: (N, D, HW) fc7; ``labels``: (N, HW) class ids, -1 = ignore; ``active``:
    (N, HW) the pixels that add terms; ``classes``: (K,); ``denominator``: the loss's;
    ``items``: the items with valid pixels (the others add nothing); ``shape``: fc7's own
    shape; ``template_item``, ``template_pos``: where each template's pixel is.
    ``inv_norm``, ``mean``, ``weighted_sim`` (sum over classes of weight x similarity):
    float64 (N, HW); ``class_sums``: (K,) sum over pixels of weight x similarity.
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
    class_sums: np.ndarray = None
    valid_vectors: int = 0
    zero_vectors: int = 0
    min_norm: float = float("inf")
    inexact: dict = field(default_factory=dict)
    _scratch: dict = field(default_factory=dict)

    def weights(self, item):
        """(K, HW) float64: -1 for the pixel's own class, +1 for the others, times its
        activity over the denominator (so that the loss is sum(weights * similarity))."""
        own = self.labels[item][None, :] == self.classes[:, None]
        return np.where(own, -1.0, 1.0) * (self.active[item] / self.denominator)

    def row_blocks(self):
        """Slices of the D channel rows, about ``ROW_BYTES`` of fc7 each."""
        depth, n_pos = self.features.shape[1:]
        rows = max(8, ROW_BYTES // max(1, n_pos * np.dtype(self.work).itemsize))
        return [slice(r, min(r + rows, depth)) for r in range(0, depth, rows)]

    def scratch(self, name, shape):
        """A work-dtype buffer of this thread, kept for the pass."""
        key = (threading.get_ident(), name, shape)
        buffer = self._scratch.get(key)
        if buffer is None:
            buffer = self._scratch[key] = np.empty(shape, self.work)
        return buffer


def run_forward(state, threads):
    """Fill ``state``'s per-pixel arrays, loss, class sums and diagnostics."""
    n_items, _, n_pos = state.features.shape
    state.inv_norm = np.zeros((n_items, n_pos))
    state.mean = np.zeros((n_items, n_pos))
    state.weighted_sim = np.zeros((n_items, n_pos))
    with single_threaded_numpy_blas():
        results = pool_map(lambda item: _forward_item(state, item), state.items, threads)
    state.loss = float(sum(r[0] for r in results))
    state.class_sums = np.sum([r[1] for r in results], axis=0)
    state.valid_vectors = int(sum(r[2] for r in results))
    state.zero_vectors = int(sum(r[3] for r in results))
    state.min_norm = float(min((r[4] for r in results), default=float("inf")))
    return state


def _channel_sums(state, item):
    """(products (K+1, HW): V x_p and sum(x_p); squares (HW,) |x_p|^2), float64, read
    in blocks of channel rows."""
    tpl, x = state.templates, state.features[item]
    products = np.zeros((tpl.forward.shape[0], x.shape[1]), state.work)
    squares = np.zeros(x.shape[1], state.work)
    for rows in state.row_blocks():
        block = x[rows]
        if block.dtype != state.work:
            block = block.astype(state.work)
        products += tpl.forward[:, rows] @ block
        squares += np.einsum("dp,dp->p", block, block)
    return products.astype(np.float64), squares.astype(np.float64)


def item_similarities(state, item):
    """(sim (K, HW) float64, norms (HW,), squares (HW,)) of one item's pixels to the
    templates; also fills the item's ``inv_norm`` and ``mean`` in ``state``."""
    tpl, depth = state.templates, state.features.shape[1]
    products, squares = _channel_sums(state, item)
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
            numerators[:, inexact] = tpl.unit @ exact
            state.inexact[item] = inexact
        norms = np.sqrt(np.maximum(centred_sq, 0.0))
        state.mean[item] = mean
    else:
        norms = np.sqrt(squares)
    inv = inverse_norms(norms, state.eps)
    state.inv_norm[item] = inv
    sim = numerators * inv
    if tpl.offset is not None:   # correlation_printed: D r + (D-1) D a b
        sim = tpl.scale * sim + tpl.scale * (depth - 1) * np.outer(tpl.offset, mean * inv)
    return sim, norms, squares


def _forward_item(state, item):
    """(loss part, class sums part, valid, zero vectors, smallest norm) of one item."""
    sim, norms, squares = item_similarities(state, item)
    valid = state.labels[item] >= 0
    n_valid = int(valid.sum())
    zero = int(np.count_nonzero(valid & (squares == 0)))
    min_norm = float(norms[valid].min()) if n_valid else float("inf")
    if not state.active[item].any():
        return 0.0, np.zeros(len(state.classes)), n_valid, zero, min_norm
    w_sim = state.weights(item) * sim
    state.weighted_sim[item] = w_sim.sum(axis=0)
    return float(w_sim.sum()), w_sim.sum(axis=1), n_valid, zero, min_norm


def run_backward(state, grad, scale, template_grad, threads):
    """Write ``scale`` x the loss's gradient into ``grad`` (N, D, HW), C-contiguous."""
    done = np.zeros(len(grad), bool)
    done[state.items] = True
    grad[~done] = 0
    with single_threaded_numpy_blas():
        results = pool_map(lambda item: _backward_item(state, grad, scale, template_grad,
                                                       item), state.items, threads)
    pulls = [r for r in results if r is not None]
    if not template_grad or not pulls:
        return grad
    tpl = state.templates
    pull = np.sum([p for p, _ in pulls], axis=0).T        # (K, D): sum_p a[k, p] x_p, centred
    weighted_mean = np.sum([m for _, m in pulls], axis=0)  # (K,): sum_p a[k, p] mean_p
    # d s[k,p] / d t_k = (u_p - s u_k) / |t_k| (u_p centred for correlation), summed over
    # the pixels with their weights; correlation_printed: D u_p + (D-1) mean_p / |x_p|' 1
    part = (tpl.scale * pull + (tpl.scale - 1) * weighted_mean[:, None]
            - (scale * state.class_sums)[:, None] * tpl.unit)
    part *= tpl.inv_norm[:, None]
    grad[state.template_item, :, state.template_pos] += part.astype(grad.dtype)
    return grad


def _backward_item(state, grad, scale, template_grad, item):
    """Write one item's gradient; returns (x @ a^T, a @ mean) for the template gradient."""
    out = grad[item]
    if not state.active[item].any():
        out[...] = 0
        return None
    tpl, x = state.templates, state.features[item]
    depth, n_classes = x.shape[0], len(state.classes)
    inv = state.inv_norm[item]
    a = state.weights(item) * (inv * scale)                 # (K, HW)
    b = state.weighted_sim[item] * inv * inv * scale        # (HW,)
    mean = state.mean[item]
    coeffs = np.empty((n_classes + 1, x.shape[1]), state.work)
    coeffs[:-1] = a
    if tpl.similarity == "cosine":
        coeffs[-1] = 0
    elif tpl.offset is None:
        coeffs[-1] = mean * b
    else:
        coeffs[-1] = mean * b + (depth - 1) * (tpl.offset @ a)
    minus_b = (-b).astype(state.work)
    direct = out.dtype == state.work
    for rows in state.row_blocks():
        # g = [V^T | 1] @ coeffs - x * b, a block of rows at a time (in cache for the sum)
        shape = (rows.stop - rows.start, x.shape[1])
        target = out[rows] if direct else state.scratch("gradient", shape)
        np.matmul(tpl.backward[rows], coeffs, out=target)
        scaled = np.multiply(x[rows], minus_b, out=state.scratch("scaled", shape),
                             casting="unsafe")
        np.add(target, scaled, out=target)
        if not direct:
            out[rows] = target
    exact = state.inexact.get(item)
    if exact is not None:   # the exactly centred pixels, again in float64
        centred = x[:, exact].astype(np.float64) - mean[exact]
        columns = (tpl.scale * tpl.unit.T) @ a[:, exact] - centred * b[exact]
        if tpl.offset is not None:
            columns += (depth - 1) * (tpl.offset @ a[:, exact])
        out[:, exact] = columns
    if not template_grad:
        return None
    # sum_p a[k, p] (x_p - mean_p): in the work dtype, the exactly centred pixels in float64
    pulled = a.copy()
    if exact is not None:
        pulled[:, exact] = 0
    features = x if x.dtype == state.work else x.astype(state.work)
    pull = (features @ pulled.T.astype(state.work)).astype(np.float64) - pulled @ mean
    if exact is not None:
        pull += centred @ a[:, exact].T
    return pull, a @ mean
