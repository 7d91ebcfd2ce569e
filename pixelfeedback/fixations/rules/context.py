"""What a fixation rule may read about one layer: ``TraceContext``.

A rule is ``rule(ctx, layer, t, units) -> [(bottom index, Units)]``: it maps the fixations
``units`` of top ``t`` of ``layer`` (a ``LayerSpec``) to fixations of the layer's bottoms.
The context holds the arrays the layer consumed in the last forward pass and the tracker's
options, so a rule runs as well on a context built by hand from NumPy arrays as on one the
``BackTracker`` builds from a ``caffe.Net``.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from pixelfeedback.fixations.kstrategy import (CONTRIBUTIONS, KNeededCollector, KStrategy,
                                              dead_rows, select_top)
from python_layers import ToolkitError

SHIFTS = ("none", "partial", "full")
NON_FINITE_ADVICE = ("check the input image and the mean, and that the weights are not "
                     "broken (a diverged training run gives NaN)")
IP_RULES = ("topk", "positive")


@dataclass
class TraceContext:
    """One layer's data and the trace options its rule needs.

    ``bottoms``: the data each bottom held, (N, C, H, W) or (N, D), in the layer's bottom
    order; ``top_shapes``: the shape of each top; ``params``: the layer's parameter arrays
    (weights first); ``layer_name``: the name K strategies and the collector key on;
    ``item_of_tag``: int array, the batch item of each tag (None: tag = item);
    ``shift``, ``k`` (a KStrategy or its string), ``ip_rule``: as for ``BackTracker``;
    ``collector``: an optional ``KNeededCollector`` fed every ranking;
    ``chunk_elements``: the size of the work arrays; ``pool_map``: ``map(function, chunks)``
    over worker threads (None: in order on this thread); ``float32_ranking``: let fixed-K
    Convolution rank float32 sums first (same result, faster).

    ``dead``: the ``Units`` the rule stopped (no input carries evidence, ``kstrategy.
    dead_rows``), appended by ``stop``; the tracker counts them per layer and class.
    ``bottom_names``: the bottoms' blob names, for messages (``check_finite``).
    """
    bottoms: Sequence[np.ndarray]
    top_shapes: Sequence[Tuple[int, ...]] = ()
    params: Sequence[np.ndarray] = ()
    layer_name: str = ""
    item_of_tag: Optional[np.ndarray] = None
    shift: str = "partial"
    k: KStrategy = field(default_factory=lambda: KStrategy.fixed(1))
    ip_rule: str = "topk"
    collector: Optional[KNeededCollector] = None
    chunk_elements: int = 2 ** 21
    pool_map: Optional[Callable] = None
    float32_ranking: bool = True
    dead: list = field(default_factory=list)
    bottom_names: Sequence[str] = ()

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ToolkitError(f"shift must be one of {', '.join(SHIFTS)}, got {self.shift!r}")
        if self.ip_rule not in IP_RULES:
            raise ToolkitError(f"ip_rule must be one of {', '.join(IP_RULES)}, got "
                               f"{self.ip_rule!r}")
        self.k = KStrategy.parse(self.k)

    def items(self, tags):
        """The batch item of each tag in ``tags``."""
        return tags if self.item_of_tag is None else self.item_of_tag[tags]

    def k_spec(self, resolution_k=1):
        """("fixed", K) or ("fraction", x) for this layer (``resolution_k``: the K of the
        resolution strategy here)."""
        return self.k.spec(self.layer_name, resolution_k)

    def record(self, values):
        """Feed the K-needed collector (if any) the candidate values (U, n) ranked here."""
        if self.collector is not None:
            self.collector.add(self.layer_name, values)

    def check_finite(self, values, bottom=0, weights=None):
        """NaN or inf among the ``values`` a rule read from ``bottom`` (or computed from them
        and ``weights``) is an error naming the weights when they are not finite, else the
        blob, and this layer (never a ranking of NaN). Only what the trace reads is
        checked, so the check costs next to nothing."""
        if np.isfinite(values).all():
            return
        if weights is not None and not np.isfinite(weights).all():
            raise ToolkitError(f"layer '{self.layer_name}' has NaN or inf in its weights "
                               f"(broken or diverged weights); use other weights")
        name = (self.bottom_names[bottom] if bottom < len(self.bottom_names)
                else f"bottom {bottom}")
        raise ToolkitError(f"blob '{name}' read by layer '{self.layer_name}' holds NaN or "
                           f"inf after the forward pass; {NON_FINITE_ADVICE}")

    def stop(self, units):
        """Record ``units`` as dead here: their trace ends at this layer."""
        if len(units):
            self.dead.append(units)

    def choose(self, values, spec, units=None, ranks=CONTRIBUTIONS):
        """(rows, cols) of the chosen candidates of ``values`` (see ``select_top``); the
        values also go to the collector. With ``units`` (the rows' units), the dead rows
        (``dead_rows(values, ranks)``) are stopped and get no candidate."""
        self.record(values)
        if units is not None:
            dead = dead_rows(values, ranks)
            if dead.any():
                self.stop(units.take(dead))
                values = np.where(dead[:, None], -np.inf, values)
        return select_top(values, *spec)

    def chunks(self, n, per_unit):
        """Slices of ``n`` units whose work arrays (``per_unit`` elements each) stay within
        ``chunk_elements``."""
        step = max(1, self.chunk_elements // max(1, per_unit))
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def map_chunks(self, function, chunks):
        """[function(chunk)] in order: over ``pool_map`` when there is more than one chunk
        and no collector (whose records must stay in order), else on this thread."""
        chunks = list(chunks)
        if self.pool_map is None or len(chunks) < 2 or self.collector is not None:
            return [function(chunk) for chunk in chunks]
        return list(self.pool_map(function, chunks))
