"""One fixation rule per layer type, and the table the walk dispatches on.

Every rule is ``rule(ctx, layer, t, units) -> [(bottom index, Units)]`` on a
``TraceContext`` (see ``context``); ``rule_for(layer)`` picks the one a layer needs.
"""
from pixelfeedback.fixations.rules.context import (IP_RULES, NON_FINITE_ADVICE, SHIFTS,
                                                  TraceContext)
from pixelfeedback.fixations.rules.convolution import convolution
from pixelfeedback.fixations.rules.eltwise import eltwise
from pixelfeedback.fixations.rules.index_maps import concat, crop, flatten, identity
from pixelfeedback.fixations.rules.inner_product import inner_product
from pixelfeedback.fixations.rules.interp import interp
from pixelfeedback.fixations.rules.pooling import pooling
from python_layers import ToolkitError

__all__ = ["IP_RULES", "NON_FINITE_ADVICE", "SHIFTS", "TraceContext", "RULES", "PYTHON_RULES", "rule_for",
           "convolution", "pooling", "inner_product", "eltwise", "concat", "crop",
           "flatten", "interp", "identity"]

IDENTITY_TYPES = ("ReLU", "Dropout", "BatchNorm", "LRN", "Split")
SINGLE_BOTTOM_IDENTITY_TYPES = ("Scale", "Bias")  # with a second bottom they are not identities

# Layer type -> rule. DeepLab's Interp type shares the Zoom layer's rule.
RULES = {
    "Convolution": convolution, "Deconvolution": convolution, "Pooling": pooling,
    "InnerProduct": inner_product, "Eltwise": eltwise, "Concat": concat, "Crop": crop,
    "Flatten": flatten, "Interp": interp,
    **{kind: identity for kind in IDENTITY_TYPES},
}

# Python layers the tracker knows: (module, class) -> rule name ("interp" or "identity").
PYTHON_RULES = {("python_layers.interp", "Zoom"): "interp"}
# What each rule name makes of a Python layer: the layer type whose rule it takes.
PYTHON_RULE_TYPES = {"interp": "Interp", "identity": "ReLU"}


def rule_for(layer, python_rules=None):
    """The rule of ``layer`` (a ``LayerSpec``). In-place layers and one-bottom Scale/Bias
    are identities; Python layers need an entry in ``python_rules`` (default
    ``PYTHON_RULES``). Any other type without a rule is a ``ToolkitError`` naming the layer."""
    python_rules = PYTHON_RULES if python_rules is None else python_rules
    kind = layer.type
    if kind == "Python":
        name = python_rules.get(layer.python_key)
        if name is None and not layer.in_place:
            module, cls = layer.python_key
            raise ToolkitError(
                f"Python layer '{layer.name}' ({module}.{cls}) has no back-tracking "
                "rule; pass python_rules={('%s', '%s'): 'identity' or 'interp'} if it "
                "is one of those" % (module, cls))
        if name is not None and name not in PYTHON_RULE_TYPES:
            raise ToolkitError(f"python_rules[{layer.python_key!r}] is {name!r}; use "
                               "'interp' or 'identity'")
        kind = PYTHON_RULE_TYPES.get(name, "ReLU")   # in place without a rule: an identity
    if layer.in_place or (kind in SINGLE_BOTTOM_IDENTITY_TYPES and len(layer.bottoms) == 1):
        return identity
    rule = RULES.get(kind)
    if rule is None:
        raise ToolkitError(
            f"layer '{layer.name}' has type '{layer.type}', which has no fixation "
            "back-tracking rule" + ("; seed at the scores before the Softmax"
                                    if layer.type == "Softmax" else ""))
    return rule
