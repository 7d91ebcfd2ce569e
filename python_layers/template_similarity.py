"""Per-pixel template-similarity losses (thesis ch. 3, Algorithm 3; SPEC section 3).

For every class present in the batch's labels, the template is the fc7 vector of the
pixel (over the whole batch) labelled with that class whose fc8 score for it is highest.
Every valid pixel p then adds, for every class c, ``-sim(fc7[p], template_c)`` when p is
labelled c and ``+sim(...)`` otherwise; the sum is divided by the number of classes
(``normalize: none``, Algorithm 3 literally, the default: the term grows with the valid
pixels per batch) or also by the number of valid pixels (``normalize: valid``, an option:
lambda then weighs an average like Caffe's softmax, about valid-pixels-per-batch times
weaker than Algorithm 3's at the same lambda).
``sim`` is the cosine or the Pearson correlation over the channels (Table 3.1's losses,
``LOSS_NAMES``), or Eq. 3.1 as printed, ``correlation_printed`` = (<x, t> - mu_x mu_t) /
(sigma_x sigma_t) with <.,.> the plain sum over the D channels, i.e. D r + (D - 1) mu_x mu_t
/ (sigma_x sigma_t) (``EXTRA_LOSS_NAMES``, issue #27). The ``selective`` variants keep only
the pixels that fc8 misclassifies. The gradient goes to fc7 only; templates are constants
unless ``template_grad`` is true. A zero vector (cosine) or a constant one (the
correlations) has similarity 0 to everything and gets no gradient.
The work (``python_layers.similarity_blocks``) reads fc7 once in the forward pass and once
in the backward pass, an item at a time over ``python_layers.thread_pool``'s threads.
``LossStats`` is the layer's running diagnostics line (``format_stats_line`` /
``parse_stats_line``).

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
import re

import numpy as np

from python_layers import ToolkitError
from python_layers.similarity_blocks import (BlockPass, Templates, item_similarities,
                                             run_backward, run_forward)

SIMILARITIES = ("cosine", "correlation", "correlation_printed")
NORMALIZATIONS = ("none", "valid")  # the first is the default: Algorithm 3 literally
LOSS_NAMES = ("correlation", "cosine", "selective_correlation", "selective_cosine")  # Table 3.1 order
# Eq. 3.1 as printed (issue #27): not in Table 3.1, so not in LOSS_NAMES (the sweep's losses)
EXTRA_LOSS_NAMES = ("correlation_printed", "selective_correlation_printed")
ALL_LOSS_NAMES = LOSS_NAMES + EXTRA_LOSS_NAMES
LABEL_VALUES = 256  # labels are 8-bit PNGs: ignore_label must be one of 0..255
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
    """``"selective_cosine"`` -> ``("cosine", True)``: the project's loss names as options
    (``ALL_LOSS_NAMES``: Table 3.1's four, then the printed Eq. 3.1's two)."""
    if name not in ALL_LOSS_NAMES:
        raise ToolkitError(f"unknown template loss {name!r}; use one of "
                           f"{', '.join(ALL_LOSS_NAMES)}")
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
            if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                    or not 0 <= value < LABEL_VALUES):
                raise ToolkitError(f"TemplateSimilarityLoss: 'ignore_label' must be an integer "
                                   f"from 0 to {LABEL_VALUES - 1} (labels are 8-bit PNGs; VOC "
                                   f"uses 255), got {value!r}")
        elif key == "eps":
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not 0 < value < 1e-2):
                raise ToolkitError(f"TemplateSimilarityLoss: 'eps' must be a small positive "
                                   f"number (e.g. 1e-8), got {value!r}")
    return params


def check_ignore_label(ignore_label, n_scores):
    """``ignore_label`` must not be a class id of fc8's ``n_scores`` channels (a label pixel
    holding it would count as that class and as ignored at once)."""
    if ignore_label < n_scores:
        raise ToolkitError(
            f"TemplateSimilarityLoss: 'ignore_label' {ignore_label} is a class id of fc8 "
            f"(bottom[1] has {n_scores} channels, classes 0..{n_scores - 1}); use a label "
            f"value from {n_scores} to {LABEL_VALUES - 1} (VOC uses 255)")


# ----------------------------------------------------------------------------- diagnostics

STATS_EVERY = 20   # the layer writes its diagnostics line on the first forward and every 20th
STATS_PREFIX = "TemplateSimilarityLoss stats:"
STATS_LINE = re.compile(re.escape(STATS_PREFIX) + r" forwards=(\d+) valid_vectors=(\d+) "
                        r"zero_vectors=(\d+) zero_share=(\S+) min_norm=(\S+) norm=(\w+)")


class LossStats:
    """A running tally over a layer's forward passes: the valid fc7 vectors seen, how many
    were all zero, and the smallest norm (cosine) or centred norm (the correlations)."""

    def __init__(self, similarity):
        self.norm = "plain" if similarity == "cosine" else "centred"
        self.forwards = self.valid_vectors = self.zero_vectors = 0
        self.min_norm = float("inf")

    def add(self, state):
        """Count one forward pass (a ``loss_forward`` result)."""
        self.forwards += 1
        self.valid_vectors += state.valid_vectors
        self.zero_vectors += state.zero_vectors
        self.min_norm = min(self.min_norm, state.min_norm)

    def due(self):
        """Whether this forward pass writes the line (the first, then every 20th)."""
        return self.forwards == 1 or self.forwards % STATS_EVERY == 0

    def line(self):
        return format_stats_line(self.forwards, self.valid_vectors, self.zero_vectors,
                                 self.min_norm, self.norm)


def format_stats_line(forwards, valid_vectors, zero_vectors, min_norm, norm):
    """The one diagnostics line (``parse_stats_line`` reads it back)."""
    share = zero_vectors / valid_vectors if valid_vectors else 0.0
    return (f"{STATS_PREFIX} forwards={forwards} valid_vectors={valid_vectors} "
            f"zero_vectors={zero_vectors} zero_share={share:.6f} min_norm={min_norm:.6g} "
            f"norm={norm}")


def parse_stats_line(text):
    """The values of the last diagnostics line in ``text`` (e.g. a training log), or None:
    {forwards, valid_vectors, zero_vectors: int; zero_share, min_norm: float; norm:
    "plain" (cosine) or "centred" (the correlations)}."""
    found = STATS_LINE.findall(text)
    if not found:
        return None
    forwards, valid, zero, share, min_norm, norm = found[-1]
    return {"forwards": int(forwards), "valid_vectors": int(valid), "zero_vectors": int(zero),
            "zero_share": float(share), "min_norm": float(min_norm), "norm": norm}


def _check_choice(key, value, allowed):
    if value not in allowed:
        raise ToolkitError(f"TemplateSimilarityLoss: {key!r} must be one of "
                           f"{', '.join(map(repr, allowed))}, got {value!r}")


# ----------------------------------------------------------------------------- the maths

def template_similarity_loss(fc7, fc8, label, similarity="cosine", selective=False,
                             normalize=NORMALIZATIONS[0], template_grad=False, ignore_label=255,
                             eps=1e-8, out=None, threads=None):
    """Algorithm 3's loss and its gradient with respect to fc7: ``(loss, grad_fc7)``.

    fc7 (N, D, h, w) features, fc8 (N, C, h, w) scores, label (N, 1, h, w) class ids
    (``ignore_label`` = ignore). The gradient is in fc7's float dtype, or written into
    ``out`` (a C-contiguous float array of fc7's shape). A vector whose norm (cosine) or
    centred norm (the correlations) is at most ``eps`` is degenerate: its similarity to
    anything is 0 and it gets no gradient, so the result is never NaN. Float64 input is
    computed in float64, anything else in float32 (Caffe's precision) with per-pixel
    factors, sums and templates in float64. ``threads``: worker threads (None: the
    ``thread_pool`` setting). ``loss_forward`` and ``loss_backward`` are the two halves.
    """
    state = loss_forward(fc7, fc8, label, similarity, selective, normalize, ignore_label,
                         eps, threads)
    return state.loss, loss_backward(state, out, 1.0, template_grad, threads)


def loss_forward(fc7, fc8, label, similarity="cosine", selective=False,
                 normalize=NORMALIZATIONS[0], ignore_label=255, eps=1e-8, threads=None):
    """The forward half: a ``similarity_blocks.BlockPass`` holding ``loss`` and what
    ``loss_backward`` needs (fc7 is kept by reference: leave it unchanged until then)."""
    validate_params({"similarity": similarity, "selective": selective, "normalize": normalize,
                     "ignore_label": ignore_label, "eps": eps})
    fc7, fc8, label = np.asarray(fc7), np.asarray(fc8), np.asarray(label)
    check_shapes(fc7.shape, fc8.shape, label.shape)
    n_items, depth = fc7.shape[:2]
    n_scores = fc8.shape[1]
    check_ignore_label(ignore_label, n_scores)
    work = np.float64 if fc7.dtype == np.float64 else np.float32

    labels = class_ids(label, ignore_label, n_scores).reshape(n_items, -1)  # -1 = ignore
    valid = labels >= 0
    classes = np.unique(labels[valid])
    scores = fc8.reshape(n_items, n_scores, -1)
    active = valid & (scores.argmax(axis=1) != labels) if selective else valid
    features = fc7.reshape(n_items, depth, -1)
    denominator = classes.size * (int(valid.sum()) if normalize == "valid" else 1)
    items = [] if classes.size == 0 else np.flatnonzero(valid.any(axis=1)).tolist()
    state = BlockPass(None, features, labels, active, classes, float(max(denominator, 1)),
                      eps, work, items, fc7.shape)
    if not items:
        return state
    state.template_item, state.template_pos = pick_templates(scores, labels, classes)
    vectors = features[state.template_item, :, state.template_pos].astype(np.float64)
    state.templates = Templates.of(vectors, similarity, eps)
    return run_forward(state, threads)


def loss_backward(state, out=None, scale=1.0, template_grad=False, threads=None):
    """The backward half: ``scale`` x the gradient of ``state.loss`` (``loss_forward``)
    with respect to fc7, written into ``out`` (see ``template_similarity_loss``)."""
    fc7 = state.features
    shape = fc7.shape[:2] + (-1,)
    grad = _gradient_buffer(out, fc7, state.work, state.shape)
    if not state.items or not state.active.any():
        grad[...] = 0
        return grad
    run_backward(state, grad.reshape(shape), float(scale), template_grad, threads)
    return grad


def similarity_to_templates(vectors, templates, similarity="cosine", eps=1e-8):
    """(K, P) float64: the similarity of each of P vectors (P, D) to each of K templates
    (K, D), by the loss's own arithmetic (float32 unless both are float64)."""
    _check_choice("similarity", similarity, SIMILARITIES)
    vectors, templates = np.atleast_2d(vectors), np.atleast_2d(templates)
    work = np.float64 if vectors.dtype == templates.dtype == np.float64 else np.float32
    features = np.ascontiguousarray(vectors.T[None], work)
    n_pos = features.shape[2]
    state = BlockPass(Templates.of(templates.astype(np.float64), similarity, eps),
                      features, np.zeros((1, n_pos), np.int64), np.zeros((1, n_pos), bool),
                      np.arange(len(templates)), 1.0, eps, work, [0])
    state.inv_norm, state.mean = np.zeros((1, n_pos)), np.zeros((1, n_pos))
    return item_similarities(state, 0)[0]


def _gradient_buffer(out, fc7, work, shape):
    """``out`` checked for use as the gradient, or a new array in fc7's float dtype."""
    if out is None:
        return np.empty(shape, fc7.dtype if fc7.dtype.kind == "f" else work)
    if out.shape != shape or out.dtype.kind != "f" or not out.flags.c_contiguous:
        raise ToolkitError(f"template_similarity_loss: out must be a C-contiguous float array "
                           f"of fc7's shape {shape}, got {out.dtype} {out.shape}")
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
