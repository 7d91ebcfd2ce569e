"""Today's template-similarity loss, frozen (the NumPy maths of python_layers/template_similarity.py
before the pixel-block rewrite of issue #29): the reference the fast path is compared with,
within float32 rounding. Not a test module (no test_ prefix); tests import it."""
import numpy as np

from python_layers import ToolkitError
from python_layers.template_similarity import (NORMALIZATIONS, check_shapes, class_ids,
                                               pick_templates, validate_params)


def frozen_template_similarity_loss(fc7, fc8, label, similarity="cosine", selective=False,
                             normalize=NORMALIZATIONS[0], template_grad=False, ignore_label=255,
                             eps=1e-8, out=None):
    """Algorithm 3's loss and its gradient with respect to fc7.

    fc7 (N, D, h, w) features, fc8 (N, C, h, w) scores, label (N, 1, h, w) class ids
    (``ignore_label`` = ignore). Returns ``(loss, grad_fc7)``, grad in fc7's dtype, or
    written into ``out`` (a C-contiguous float array of fc7's shape, reused to save
    allocations). A vector whose norm (cosine) or centred norm (correlation) is at most
    ``eps`` is degenerate: its similarity to anything is 0 and it gets no gradient, so
    the result is never NaN. Float64 input is computed in float64, anything else in
    float32 (Caffe's precision) with means, loss sums and templates in float64.
    """
    validate_params({"similarity": similarity, "selective": selective, "normalize": normalize,
                     "template_grad": template_grad, "ignore_label": ignore_label, "eps": eps})
    if similarity not in ("cosine", "correlation"):
        raise ValueError(similarity)
    fc7, fc8, label = np.asarray(fc7), np.asarray(fc8), np.asarray(label)
    check_shapes(fc7.shape, fc8.shape, label.shape)
    n_items, depth = fc7.shape[:2]
    n_scores = fc8.shape[1]
    work = np.float64 if fc7.dtype == np.float64 else np.float32
    grad = _gradient_buffer(out, fc7, work)

    labels = class_ids(label, ignore_label, n_scores).reshape(n_items, -1)  # -1 = ignore
    valid = labels >= 0
    classes = np.unique(labels[valid])
    n_valid = int(valid.sum())
    active = valid & (fc8.reshape(n_items, n_scores, -1).argmax(axis=1) != labels) \
        if selective else valid
    if not active.any():  # no class, no valid pixel, or (selective) nothing misclassified
        grad[...] = 0
        return 0.0, grad

    scores = fc8.reshape(n_items, n_scores, -1)
    features = fc7.reshape(n_items, depth, -1)
    template_item, template_pos = pick_templates(scores, labels, classes)
    centre = similarity == "correlation"
    templates = features[template_item, :, template_pos].astype(np.float64)  # (K, D)
    unit_templates, template_inv_norm = _unit_rows(templates, centre, eps)
    unit_templates_t = np.ascontiguousarray(unit_templates.T, dtype=work)     # (D, K)

    denominator = classes.size * (n_valid if normalize == "valid" else 1)
    # weights[k, n, p]: -1 where pixel (n, p) is labelled classes[k], else +1; times the
    # pixel's activity over the denominator, so that loss = sum(weights * similarities)
    own_class = labels[None, :, :] == classes[:, None, None]
    weights = np.where(own_class, -1.0, 1.0) * (active / float(denominator))  # (K, N, HW)

    loss = 0.0
    pull = np.zeros(unit_templates.shape)   # sum_p w[k,p] u_p, for the template gradient
    pull_sim = np.zeros(classes.size)       # sum_p w[k,p] s[k,p]
    grad_items = grad.reshape(n_items, depth, -1)
    scratch = np.empty((depth, features.shape[2]), work)
    direct = grad.dtype == work
    for item in range(n_items):
        if not active[item].any():
            grad_items[item] = 0
            continue
        x = features[item]  # (D, HW)
        if centre or x.dtype != work:
            mean = (np.einsum("dp->p", x, dtype=np.float64) / depth).astype(work) if centre else 0
            x = np.subtract(x, mean, out=scratch, dtype=work)  # centred copy in scratch
        inv_norm = _inverse_norms(np.sqrt(np.einsum("dp,dp->p", x, x).astype(np.float64)), eps)
        sim = (unit_templates_t.T @ x).astype(np.float64) * inv_norm        # (K, HW)
        w = weights[:, item]
        w_sim = w * sim
        loss += float(w_sim.sum())
        if template_grad:
            pull += (x @ (w * inv_norm).T.astype(work)).T
            pull_sim += w_sim.sum(axis=1)
        # d s[k,p] / d x_p = (u_k - s[k,p] u_p) / |x_p|  (centred x and u for correlation;
        # both are zero-mean then, so no extra centring projection is needed)
        g = grad_items[item] if direct else np.empty_like(scratch)
        np.matmul(unit_templates_t, (w * inv_norm).astype(work), out=g)
        np.multiply(x, (w_sim.sum(axis=0) * inv_norm ** 2).astype(work), out=scratch)
        np.subtract(g, scratch, out=g)
        if not direct:
            grad_items[item] = g
    if template_grad:
        # d s[k,p] / d t_k = (u_p - s[k,p] u_k) / |t_k|, summed over the pixels p
        # (zero-mean already for correlation: pull sums centred u_p)
        template_part = (pull - pull_sim[:, None] * unit_templates) * template_inv_norm[:, None]
        grad_items[template_item, :, template_pos] += template_part.astype(grad.dtype)
    return loss, grad


def _gradient_buffer(out, fc7, work):
    """``out`` checked for use as the gradient, or a new array in fc7's float dtype."""
    if out is None:
        return np.empty(fc7.shape, fc7.dtype if fc7.dtype.kind == "f" else work)
    if out.shape != fc7.shape or out.dtype.kind != "f" or not out.flags.c_contiguous:
        raise ToolkitError(f"template_similarity_loss: out must be a C-contiguous float array "
                           f"of fc7's shape {fc7.shape}, got {out.dtype} {out.shape}")
    return out


def _inverse_norms(norms, eps):
    return np.where(norms > eps, 1.0 / np.maximum(norms, eps), 0.0)


def _unit_rows(vectors, centre, eps):
    """Rows scaled to unit length (centred first for correlation); degenerate rows -> 0."""
    if centre:
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
    inv_norm = _inverse_norms(np.sqrt(np.einsum("kd,kd->k", vectors, vectors)), eps)
    return vectors * inv_norm[:, None], inv_norm
