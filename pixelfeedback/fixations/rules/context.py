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

from pixelfeedback.fixations.kstrategy import KNeededCollector, KStrategy, select_top
from python_layers import ToolkitError

SHIFTS = ("none", "partial", "full")
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

    def choose(self, values, spec):
        """(rows, cols) of the chosen candidates of ``values`` (see ``select_top``); the
        values also go to the collector."""
        self.record(values)
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
