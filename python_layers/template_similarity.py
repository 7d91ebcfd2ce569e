"""Per-pixel template-similarity losses (thesis ch. 3, Algorithm 3; SPEC section 3).

For every class present in the batch's labels, the template is the fc7 vector of the
pixel (over the whole batch) labelled with that class whose fc8 score for it is highest.
Every valid pixel p then adds, for every class c, ``-sim(fc7[p], template_c)`` when p is
labelled c and ``+sim(...)`` otherwise; the sum is divided by the number of classes
(``normalize: none``, Algorithm 3 literally, the default: the term grows with the valid
pixels per batch) or also by the number of valid pixels (``normalize: valid``, an option:
lambda then weighs an average like Caffe's softmax, about valid-pixels-per-batch times
weaker than Algorithm 3's at the same lambda).
``sim`` is the cosine or the Pearson correlation over the channels. The ``selective``
variants keep only the pixels that fc8 misclassifies. The gradient goes to fc7 only;
templates are constants unless ``template_grad`` is true. A zero vector (cosine) or a
constant one (correlation) has similarity 0 to everything and gets no gradient.
The similarities are matrix products (templates x channels) @ (channels x pixels), one
batch item at a time, so memory stays at a few copies of one item's fc7.

This module is the NumPy maths and the loss names and options, free of Caffe (the toolkit's
library imports it without loading Caffe); ``python_layers.template_loss`` is the Caffe
Python layer around it, configured by JSON in ``param_str``::

    layer { name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12"
            bottom: "label_shrink" top: "template_loss" loss_weight: 0.1
            python_param { module: "python_layers.template_loss"
                           layer: "TemplateSimilarityLoss"
                           param_str: '{"similarity": "cosine", "selective": true}' } }
"""
import json
import numbers

import numpy as np

from python_layers import ToolkitError

SIMILARITIES = ("cosine", "correlation")
NORMALIZATIONS = ("none", "valid")  # the first is the default: Algorithm 3 literally
LOSS_NAMES = ("correlation", "cosine", "selective_correlation", "selective_cosine")  # Table 3.1 order
DEFAULT_PARAMS = {
    "similarity": "cosine",
    "selective": False,
    "normalize": NORMALIZATIONS[0],
    "template_grad": False,
    "ignore_label": 255,
    "eps": 1e-8,
}


# ----------------------------------------------------------------------------- names & params

def parse_loss_name(name):
    """``"selective_cosine"`` -> ``("cosine", True)``: the project's loss names as options."""
    if name not in LOSS_NAMES:
        raise ToolkitError(f"unknown template loss {name!r}; use one of {', '.join(LOSS_NAMES)}")
    selective = name.startswith("selective_")
    return name[len("selective_"):] if selective else name, selective


def loss_name(similarity, selective):
    """The inverse of ``parse_loss_name``: ``("cosine", True)`` -> ``"selective_cosine"``."""
    _check_choice("similarity", similarity, SIMILARITIES)
    return ("selective_" if selective else "") + similarity


def loss_param_str(similarity, selective, normalize=NORMALIZATIONS[0], template_grad=False):
    """The layer's ``param_str`` JSON, so that net generators build it in one place."""
    params = {"similarity": similarity, "selective": bool(selective),
              "normalize": normalize, "template_grad": bool(template_grad)}
    validate_params(params)
    return json.dumps(params, sort_keys=True)


def parse_param_str(param_str):
    """The layer's options from its JSON ``param_str`` (empty = defaults), validated."""
    params = dict(DEFAULT_PARAMS)
    if param_str is not None and param_str.strip():
        try:
            given = json.loads(param_str)
        except ValueError as err:
            raise ToolkitError(
                f"TemplateSimilarityLoss param_str is not valid JSON ({err}): {param_str!r}; "
                'write e.g. \'{"similarity": "cosine", "selective": true}\'') from None
        if not isinstance(given, dict):
            raise ToolkitError(f"TemplateSimilarityLoss param_str must be a JSON object, "
                               f"got {param_str!r}")
        params.update(validate_params(given))
    return params


def validate_params(params):
    """Check option names and values; returns ``params``. Errors name the key."""
    for key, value in params.items():
        if key not in DEFAULT_PARAMS:
            raise ToolkitError(f"TemplateSimilarityLoss: unknown param_str key {key!r}; "
                               f"allowed keys: {', '.join(DEFAULT_PARAMS)}")
        if key == "similarity":
            _check_choice(key, value, SIMILARITIES)
        elif key == "normalize":
            _check_choice(key, value, NORMALIZATIONS)
        elif key in ("selective", "template_grad"):
            if not isinstance(value, (bool, np.bool_)):
                raise ToolkitError(f"TemplateSimilarityLoss: {key!r} must be true or false, "
                                   f"got {value!r}")
        elif key == "ignore_label":
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ToolkitError(f"TemplateSimilarityLoss: 'ignore_label' must be an integer "
                                   f"(255 for VOC), got {value!r}")
        elif key == "eps":
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not 0 < value < 1e-2):
                raise ToolkitError(f"TemplateSimilarityLoss: 'eps' must be a small positive "
                                   f"number (e.g. 1e-8), got {value!r}")
    return params


def _check_choice(key, value, allowed):
    if value not in allowed:
        raise ToolkitError(f"TemplateSimilarityLoss: {key!r} must be one of "
                           f"{', '.join(map(repr, allowed))}, got {value!r}")


# ----------------------------------------------------------------------------- the maths

def template_similarity_loss(fc7, fc8, label, similarity="cosine", selective=False,
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


def check_shapes(fc7_shape, fc8_shape, label_shape):
    """fc7 (N,D,h,w), fc8 (N,C,h,w), label (N,1,h,w) must agree; errors name the blobs."""
    names = ("fc7 (bottom[0])", "fc8 (bottom[1])", "label (bottom[2])")
    for name, shape in zip(names, (fc7_shape, fc8_shape, label_shape)):
        if len(shape) != 4:
            raise ToolkitError(f"TemplateSimilarityLoss: {name} must be 4-D (N, channels, h, w), "
                               f"got shape {tuple(shape)}")
    for name, shape in zip(names[1:], (fc8_shape, label_shape)):
        if (shape[0], shape[2], shape[3]) != (fc7_shape[0], fc7_shape[2], fc7_shape[3]):
            raise ToolkitError(
                f"TemplateSimilarityLoss: {name} has shape {tuple(shape)} but fc7 (bottom[0]) "
                f"has {tuple(fc7_shape)}; N, h and w must match (shrink the label to the "
                f"score size, e.g. with label_shrink)")
    if label_shape[1] != 1:
        raise ToolkitError(f"TemplateSimilarityLoss: label (bottom[2]) must have 1 channel, "
                           f"got shape {tuple(label_shape)}")


def class_ids(label, ignore_label, n_scores):
    """Integer class ids (Caffe's truncating cast), ``-1`` for ignored pixels; bad ids raise."""
    ids = label.astype(np.int64)
    ignored = ids == ignore_label
    bad = ~ignored & ((ids < 0) | (ids >= n_scores))
    if bad.any():
        raise ToolkitError(
            f"TemplateSimilarityLoss: label (bottom[2]) holds {sorted(set(ids[bad].tolist()))[:5]}"
            f", neither a class of fc8's {n_scores} channels nor ignore_label {ignore_label}; "
            f"fix the label data or the layer's ignore_label")
    return np.where(ignored, -1, ids)


def pick_templates(scores, labels, classes):
    """(item, position) of each class's template: among its pixels, the highest score for it.

    scores (N, C, HW), labels (N, HW) with -1 = ignore. Ties go to the first pixel in
    (n, y, x) order, like ``np.argmax`` over the flattened batch.
    """
    n_items, _, n_pos = scores.shape
    own = labels[None, :, :] == classes[:, None, None]                      # (K, N, HW)
    class_scores = np.moveaxis(scores[:, classes, :], 1, 0)                   # (K, N, HW)
    masked = np.where(own, class_scores, -np.inf).reshape(classes.size, -1)
    own = own.reshape(classes.size, -1)
    best = masked.argmax(axis=1)
    best = np.where(own[np.arange(classes.size), best], best, own.argmax(axis=1))  # all -inf
    return best // n_pos, best % n_pos


def _inverse_norms(norms, eps):
    return np.where(norms > eps, 1.0 / np.maximum(norms, eps), 0.0)


def _unit_rows(vectors, centre, eps):
    """Rows scaled to unit length (centred first for correlation); degenerate rows -> 0."""
    if centre:
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
    inv_norm = _inverse_norms(np.sqrt(np.einsum("kd,kd->k", vectors, vectors)), eps)
    return vectors * inv_norm[:, None], inv_norm
