"""How many candidates each transition keeps (K strategies), and the top-K choice itself.

``select_top`` is the one ranking every rule uses: descending value, ties by ascending
candidate index (the lowest index wins an exact tie), ``-inf`` never chosen. ``dead_rows``
says which units carry no evidence (SPEC section 4: their trace stops there).
``KNeededCollector`` records, per layer, the K that fraction x of each unit's positive
contribution needs (Figure 2.8).
"""
import re
from collections import OrderedDict, defaultdict

import numpy as np

from python_layers import ToolkitError

DEFAULT_FRACTIONS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 10))   # 0.1 ... 0.9

# What a rule ranks, which decides when a unit is dead (``dead_rows``).
CONTRIBUTIONS = "contributions"   # weight x input (Convolution, InnerProduct, Eltwise SUM, Interp)
VALUES = "values"                 # the inputs' own values (Pooling, Eltwise PROD and MAX)


class KStrategy:
    """How many candidates each transition keeps: ``fixed`` K, ``fraction`` x of the unit's
    positive contribution, ``resolution`` (the layer's up-sampling), or ``per_layer``."""

    def __init__(self, kind, value=None, mapping=None, default=None):
        self.kind = kind
        self.value = value
        self.mapping = mapping or {}
        self.default = default

    @classmethod
    def fixed(cls, k):
        """K candidates at every transition."""
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ToolkitError(f"K must be a positive integer, got {k!r}")
        return cls("fixed", int(k))

    @classmethod
    def fraction(cls, x):
        """Per unit, the fewest candidates that reach ``x`` of its positive contribution."""
        x = float(x)
        if not 0.0 < x <= 1.0:
            raise ToolkitError(f"fraction K needs 0 < x <= 1, got {x}")
        return cls("fraction", x)

    @classmethod
    def resolution(cls):
        """K = the layer's spatial up-sampling from output to input (the thesis's choice)."""
        return cls("resolution")

    @classmethod
    def per_layer(cls, mapping, default=1):
        """``mapping``: layer name -> int or KStrategy; ``default`` for other layers."""
        def as_strategy(value):
            if isinstance(value, KStrategy):
                if value.kind == "per_layer":
                    raise ToolkitError("per-layer K strategies cannot nest")
                return value
            return cls.fixed(value)
        return cls("per_layer", mapping={str(k): as_strategy(v) for k, v in mapping.items()},
                   default=as_strategy(default))

    @classmethod
    def parse(cls, text):
        """From a CLI string: "1", "fraction:0.1", "resolution", or per layer
        "conv5_1=2,pool1=fraction:0.2,default=resolution" (default 1 when omitted)."""
        if isinstance(text, KStrategy):
            return text
        text = str(text).strip()
        if "=" in text:
            mapping, default = {}, cls.fixed(1)
            for part in text.split(","):
                if "=" not in part:
                    raise ToolkitError(f"K strategy {text!r}: '{part}' is not layer=K; write "
                                       "e.g. 'conv5_1=2,default=1'")
                name, value = (s.strip() for s in part.split("=", 1))
                strategy = cls._parse_single(value, text)
                if name == "default":
                    default = strategy
                else:
                    mapping[name] = strategy
            return cls.per_layer(mapping, default)
        return cls._parse_single(text, text)

    @classmethod
    def _parse_single(cls, value, whole):
        if value == "resolution":
            return cls.resolution()
        if value.startswith("fraction:"):
            try:
                return cls.fraction(float(value.split(":", 1)[1]))
            except ValueError:
                pass
        elif re.fullmatch(r"\d+", value):
            return cls.fixed(int(value))
        raise ToolkitError(f"K strategy {whole!r}: cannot read {value!r}; use an integer, "
                           "'fraction:X' (0 < X <= 1), 'resolution', or 'layer=K,...,default=K'")

    def for_layer(self, layer_name):
        """The single (non per-layer) strategy that applies to ``layer_name``."""
        if self.kind == "per_layer":
            return self.mapping.get(layer_name, self.default)
        return self

    def spec(self, layer_name, resolution_k=1):
        """("fixed", K) or ("fraction", x) for ``layer_name``; ``resolution_k`` is the K of
        the resolution strategy for that layer (its spatial up-sampling, at least 1)."""
        strategy = self.for_layer(layer_name)
        if strategy.kind == "fixed":
            return ("fixed", strategy.value)
        if strategy.kind == "fraction":
            return ("fraction", strategy.value)
        return ("fixed", max(1, int(resolution_k)))

    def __repr__(self):
        if self.kind == "fixed":
            return f"KStrategy.fixed({self.value})"
        if self.kind == "fraction":
            return f"KStrategy.fraction({self.value})"
        if self.kind == "resolution":
            return "KStrategy.resolution()"
        return f"KStrategy.per_layer({self.mapping!r}, default={self.default!r})"


def select_top(values, mode, param):
    """(rows, cols) of the chosen candidates, sorted by row then column.

    ``values``: float64 (U, n), invalid candidates ``-inf`` (never chosen). ``mode`` "fixed"
    keeps ``param`` candidates per row (or all valid ones), "fraction" the smallest number
    whose contributions reach ``param`` of the row's positive total (at least 1). Ranking:
    descending value, ties by ascending column.
    """
    rows, n = values.shape
    if rows == 0 or n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    if mode == "fixed":
        k = min(int(param), n)
        if k == 1:
            cols = np.argmax(values, axis=1)
            keep = values[np.arange(rows), cols] > -np.inf
            return np.flatnonzero(keep), cols[keep]
        if k == n:
            return np.nonzero(values > -np.inf)
        kth = np.partition(values, n - k, axis=1)[:, n - k]
        need = np.full(rows, k)
    elif mode == "fraction":
        need = k_for_fraction(values, param)
        ordered = -np.sort(-values, axis=1)
        kth = ordered[np.arange(rows), need - 1]
    else:
        raise ValueError(mode)
    greater = values > kth[:, None]
    equal = values == kth[:, None]
    need_equal = need - greater.sum(axis=1)
    chosen = greater | (equal & (np.cumsum(equal, axis=1) <= need_equal[:, None]))
    chosen &= values > -np.inf
    return np.nonzero(chosen)


def dead_rows(values, ranks=CONTRIBUTIONS):
    """bool (U,): the units of ``values`` (U, n) that carry no evidence and stop there.

    ``ranks`` CONTRIBUTIONS: every valid candidate (not ``-inf``) is exactly 0 (a unit with
    no valid candidate at all, e.g. a window wholly in the padding, is dead too); VALUES:
    no valid candidate is positive. A live unit whose contributions are all <= 0 still
    keeps its top K (the least negative), as the ranking says.
    """
    if ranks == VALUES:
        return ~(values > 0).any(axis=1)
    if ranks != CONTRIBUTIONS:
        raise ValueError(ranks)
    return ((values == 0) | (values == -np.inf)).all(axis=1)


def k_for_fraction(values, fractions):
    """Smallest K whose largest contributions reach ``fraction`` of the positive total.

    ``values`` (U, n) float64 (``-inf`` = invalid); ``fractions`` a scalar (returns (U,)) or
    an array (returns (U, F)). K = 1 where nothing is positive. Sums run in descending order.
    """
    ordered = -np.sort(-values, axis=1)
    cumulative = np.cumsum(np.maximum(ordered, 0.0), axis=1)
    total = cumulative[:, -1]
    fractions_arr = np.atleast_1d(np.asarray(fractions, np.float64))
    ks = np.empty((values.shape[0], fractions_arr.size), np.int64)
    for f, x in enumerate(fractions_arr):
        ks[:, f] = 1 + (cumulative < x * total[:, None]).sum(axis=1)
    np.minimum(ks, values.shape[1], out=ks)
    return ks[:, 0] if np.ndim(fractions) == 0 else ks


class KNeededCollector:
    """Accumulates, per layer, the K needed to reach each fraction of every visited unit's
    positive contribution (units with no positive contribution are left out)."""

    def __init__(self, fractions):
        self.fractions = np.asarray(fractions, np.float64)
        self.sums = OrderedDict()
        self.counts = OrderedDict()
        self.no_positive = defaultdict(int)

    def add(self, layer_name, values):
        """Record the candidate values (U, n) one layer ranked (``-inf`` = no candidate)."""
        positive = (values > 0).any(axis=1)
        self.no_positive[layer_name] += int((~positive).sum())
        if layer_name not in self.sums:
            self.sums[layer_name] = np.zeros(self.fractions.size)
            self.counts[layer_name] = 0
        if positive.any():
            ks = k_for_fraction(values[positive], self.fractions)
            self.sums[layer_name] += ks.sum(axis=0)
            self.counts[layer_name] += int(positive.sum())

    def means(self):
        """{layer: mean K per fraction}, layers in the order they were first recorded."""
        return OrderedDict((name, self.sums[name] / max(self.counts[name], 1))
                           for name in self.sums)

