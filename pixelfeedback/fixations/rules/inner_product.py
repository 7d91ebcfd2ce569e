"""The InnerProduct rule: the strongest inputs of ``W[row] * x`` over the flattened input."""
import numpy as np

from pixelfeedback.fixations.kstrategy import dead_rows
from pixelfeedback.fixations.units import Units, concat_units, shape3, unravel
from python_layers import ToolkitError


def inner_product(ctx, layer, t, units):
    """InnerProduct: the top-K of ``W[row] * x`` over the flat (C*H*W) input, or with
    ``ip_rule="positive"`` all positive contributors (a unit with none keeps its single
    largest). A unit whose contributions are all exactly 0 is dead. Inputs go down as
    (c, y, x) of the bottom."""
    param = layer.proto.inner_product_param
    X = ctx.bottoms[0]
    axis = param.axis if param.axis >= 0 else param.axis + X.ndim
    if axis != 1:
        raise ToolkitError(f"layer '{layer.name}': InnerProduct axis {param.axis} is not "
                           "supported (only axis 1)")
    if X.ndim not in (2, 4):
        raise ToolkitError(f"layer '{layer.name}': input of shape {X.shape} is not "
                           "N x C x H x W or N x D")
    shape = shape3(X.shape)
    flat = X.reshape(X.shape[0], -1)
    weights = ctx.params[0]
    rows_of_w = weights.T if param.transpose else weights     # (outputs, D)
    spec = ctx.k_spec(1)
    D = flat.shape[1]
    positive = ctx.ip_rule == "positive"
    tags = np.unique(units.tag)
    hits = np.zeros((len(tags), D), bool) if positive else None
    out = []
    for part in ctx.chunks(len(units), D * 2):
        u = units.take(part)
        values = rows_of_w[u.c].astype(np.float64) * flat[ctx.items(u.tag)]
        ctx.check_finite(values, weights=rows_of_w)
        if positive:
            ctx.record(values)
            dead = dead_rows(values)
            ctx.stop(u.take(dead))
            _merge_positive(hits, np.searchsorted(tags, u.tag[~dead]), values[~dead])
            continue
        rows, cols = ctx.choose(values, spec, u)
        out.append(Units(u.tag[rows], *unravel(cols, shape)))
    if positive:
        slot, cols = np.nonzero(hits)
        out.append(Units(tags[slot], *unravel(cols, shape)))
    return [(0, concat_units(out))]


def _merge_positive(hits, slot, values):
    """OR into ``hits[slot]`` each unit's positive contributors (or its largest one).

    All positive contributors can be most of the input for every unit, so they are merged
    per tag (a set) rather than listed as (unit, input) pairs."""
    chosen = values > 0
    none = np.flatnonzero(~chosen.any(axis=1))
    chosen[none, np.argmax(values[none], axis=1)] = True
    for s in np.unique(slot):
        hits[s] |= chosen[slot == s].any(axis=0)
