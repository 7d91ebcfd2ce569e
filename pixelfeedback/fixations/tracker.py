"""The back-tracker: the seeds at the score blob, the walk over the layers in reverse
prototxt order, the unit budget, and the results (the package docstring gives the
semantics).

For each layer the walk builds a ``TraceContext`` from the ``caffe.Net`` (what the layer
consumed in the last forward pass, its parameters, the tracker's options) and hands the
units of each top to the layer's rule (``rules.rule_for``).
"""
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from pixelfeedback.fixations.graph import NetGraph
from pixelfeedback.fixations.kstrategy import DEFAULT_FRACTIONS, KNeededCollector, KStrategy
from pixelfeedback.fixations.rules import (
    IP_RULES,
    NON_FINITE_ADVICE,
    PYTHON_RULE_TYPES,
    PYTHON_RULES,
    SHIFTS,
    TraceContext,
    rule_for,
)
from pixelfeedback.fixations.units import Units, decode, encode, shape3
from python_layers import ToolkitError


@dataclass
class ClassFixations:
    """Fixations of one class in one image.

    ``points``: int64 (P, 2) distinct (y, x) at the data blob, row-major order; ``counts``:
    int64 (P,) distinct data channels fixated at each point; ``units``: int64 (U, 3)
    (c, y, x) at the data blob; ``n_seeds``: seed units at the score blob; ``layers``: with
    ``keep_layers``, {blob name: int64 (U, 3) units}, else None; ``dead``: {layer name:
    units that stopped there because no input carried evidence}, score side first;
    ``dead_seeds``: how many of those were seed units (stopped at the layer that made the
    score blob).
    """
    class_id: int
    item: int
    points: np.ndarray
    counts: np.ndarray
    units: np.ndarray
    n_seeds: int
    layers: Optional[Dict[str, np.ndarray]] = None
    dead: Dict[str, int] = field(default_factory=dict)
    dead_seeds: int = 0


def check_finite_scores(net, score_blob):
    """The data of ``score_blob`` after the forward pass; NaN or inf there is an error
    naming the blob (no class can be read from such scores)."""
    scores = net.blobs[score_blob].data
    if not np.isfinite(scores).all():
        raise ToolkitError(f"score blob '{score_blob}' holds NaN or inf after the forward "
                           f"pass, so no class can be traced; {NON_FINITE_ADVICE}")
    return scores


def run_forward(net, data, blob=None):
    """Reshape the input ``blob`` (default the net's first input) to ``data`` (N, C, H, W),
    copy it in and run the forward pass. Returns the net."""
    blob = blob or (net.inputs[0] if net.inputs else "data")
    if blob not in net.blobs:
        raise ToolkitError(f"the net has no input blob '{blob}'")
    data = np.asarray(data, np.float32)
    if data.ndim == 3:
        data = data[None]
    net.blobs[blob].reshape(*data.shape)
    net.blobs[blob].data[...] = data
    net.reshape()
    net.forward()
    return net


class BackTracker:
    """Back-tracks fixations through a forward-passed ``caffe.Net`` built from ``graph``.

    ``shift``: "partial" (default), "full" or "none"; ``k``: a KStrategy or its string;
    ``max_units``: the per-blob, per-class point budget; ``ip_rule``: "topk" or "positive";
    ``python_rules``: extra {(module, class): "interp" | "identity"}; ``data_blob``: the
    image blob (default the graph's first input); ``chunk_elements``: the size of the
    work arrays (bounds memory); ``threads``: worker threads for the convolution chunks
    (default 1; NumPy releases the GIL in the gathers and sums, so more can help on idle
    cores).

    ``float32_ranking`` (attribute, default True): fixed-K Convolution ranks float32 sums
    first and redoes near ties in float64; False ranks float64 only. Same result, slower.
    """

    def __init__(self, net, graph, shift="partial", k=None, max_units=2_000_000,
                 ip_rule="topk", python_rules=None, data_blob=None, chunk_elements=2 ** 21,
                 threads=1):
        if isinstance(graph, str):
            graph = NetGraph.from_prototxt(graph)
        if shift not in SHIFTS:
            raise ToolkitError(f"shift must be one of {', '.join(SHIFTS)}, got {shift!r}")
        if ip_rule not in IP_RULES:
            raise ToolkitError(f"ip_rule must be one of {', '.join(IP_RULES)}, got {ip_rule!r}")
        self.net = net
        self.graph = graph
        self.shift = shift
        self.k = KStrategy.parse(k) if k is not None else KStrategy.fixed(1)
        self.max_units = int(max_units)
        self.ip_rule = ip_rule
        self.python_rules = dict(PYTHON_RULES)
        self.python_rules.update(python_rules or {})
        for key, rule in self.python_rules.items():
            if rule not in PYTHON_RULE_TYPES:
                raise ToolkitError(f"python_rules[{key!r}] is {rule!r}; use 'interp' or "
                                   "'identity'")
        self.chunk_elements = int(chunk_elements)
        if self.k.kind == "per_layer":
            unknown = sorted(set(self.k.mapping) - set(graph.by_name))
            if unknown:
                raise ToolkitError(f"K strategy names layer '{unknown[0]}', which the net "
                                   f"{graph.source} does not have")
        net_layers = set(net._layer_names)
        for layer in graph.layers:
            if layer.name not in net_layers:
                raise ToolkitError(f"layer '{layer.name}' of {graph.source} is not in the "
                                   "caffe.Net; build the net from the same prototxt and phase")
        if data_blob is None:
            data_blob = graph.inputs[0] if graph.inputs else "data"
        if data_blob not in graph.versions:
            raise ToolkitError(f"data blob '{data_blob}' is not in {graph.source}; pass "
                               "data_blob= the image blob's name")
        self.data_blob = data_blob
        self.float32_ranking = True
        self.threads = max(1, int(threads))
        self._executor = None

    # -- public ------------------------------------------------------------------------

    def trace(self, score_blob, item=0, classes=None, skip_background=True,
              keep_layers=False, seed_region=None):
        """Fixations of every predicted class of batch ``item``: {class_id: ClassFixations}.

        ``classes``: only these (each must be predicted; they override ``skip_background``).
        ``seed_region``: bool (h, w) map of the score units that may seed an object class;
        the others count as background (class 0), e.g. the units over an image's padding.
        """
        return self.trace_items(score_blob, [item], classes, skip_background,
                                keep_layers, seed_region)[item]

    def trace_items(self, score_blob, items=None, classes=None, skip_background=True,
                    keep_layers=False, seed_region=None, collector=None):
        """``trace`` for several batch items at once: {item: {class_id: ClassFixations}}.

        ``collector``: a ``KNeededCollector`` that records every ranking of the walk (the
        walk then runs on one thread, in float64)."""
        if score_blob not in self.net.blobs:
            raise ToolkitError(f"score blob '{score_blob}' is not in the net")
        scores = check_finite_scores(self.net, score_blob)
        items = list(range(scores.shape[0])) if items is None else list(dict.fromkeys(items))
        if classes is not None:
            classes = list(dict.fromkeys(int(c) for c in classes))
        tags, seeds = [], []
        for item in items:
            if not 0 <= item < scores.shape[0]:
                raise ToolkitError(f"item {item} is outside the batch of {scores.shape[0]}")
            for class_id, units in self._seeds(score_blob, scores[item], classes,
                                               skip_background, item, seed_region):
                tags.append((item, class_id))
                seeds.append(units)
        per_tag = self._run(score_blob, tags, seeds, keep_layers, collector)
        results = OrderedDict((item, OrderedDict()) for item in items)
        for tag_id, (item, class_id) in enumerate(tags):
            results[item][class_id] = per_tag[tag_id]
        return results

    # -- seeds -------------------------------------------------------------------------

    def _seeds(self, score_blob, scores, classes, skip_background, item, seed_region=None):
        """[(class_id, (c, y, x) arrays)] of the argmax map of one item's scores."""
        scores3 = scores.reshape(shape3((1,) + scores.shape))
        label = np.argmax(scores3, axis=0)
        if seed_region is not None:
            label = np.where(seed_region, label, 0)
        present = np.unique(label)
        if classes is None:
            wanted = [int(c) for c in present if not (skip_background and c == 0)]
        else:
            wanted = []
            for c in classes:
                if int(c) not in present:
                    raise ToolkitError(
                        f"class {c} is not in the prediction of item {item} at "
                        f"'{score_blob}' (predicted: {', '.join(map(str, present))}); "
                        "ask for a predicted class")
                wanted.append(int(c))
        out = []
        for c in wanted:
            ys, xs = np.nonzero(label == c)
            out.append((c, (np.full(ys.size, c, np.int64), ys.astype(np.int64),
                            xs.astype(np.int64))))
        return out

    # -- the walk ----------------------------------------------------------------------

    def _blob_shape(self, name):
        return shape3(self.net.blobs[name].data.shape)

    def _run(self, score_blob, tags, seeds, keep_layers, collector=None):
        item_of_tag = np.array([item for item, _ in tags] or [0], np.int64)
        n_tags = len(tags)
        pending = defaultdict(list)       # node -> list of key arrays
        feeders = defaultdict(set)        # node -> layer names that fed it
        kept = defaultdict(list)          # blob name -> key arrays (keep_layers)
        score_node = self.graph.final_node(score_blob)
        score_shape = self._blob_shape(score_blob)
        for tag_id, (c, y, x) in enumerate(seeds):
            units = Units(np.full(c.size, tag_id, np.int64), c, y, x)
            pending[score_node].append(encode(units, score_shape))
        dead = OrderedDict()              # layer name -> dead units per tag
        dead_seeds = np.zeros(n_tags, np.int64)

        for layer in reversed(self.graph.layers):
            if not layer.bottoms:   # Input and data layers end the trace
                continue
            top_units = []
            for t, node in enumerate(layer.top_nodes):
                keys = self._collect(pending, feeders, node, n_tags)
                if keys is not None and keep_layers:
                    kept[node[0]].append(keys)
                top_units.append(None if keys is None or keys.size == 0
                                 else decode(keys, self._blob_shape(node[0])))
            if all(u is None for u in top_units):
                continue
            rule = rule_for(layer, self.python_rules)
            ctx = self._context(layer, item_of_tag, collector)
            for t, units in enumerate(top_units):
                if units is None:
                    continue
                outputs = rule(ctx, layer, t, units)
                if ctx.dead:
                    per_tag = np.bincount(np.concatenate([u.tag for u in ctx.dead]),
                                          minlength=n_tags)
                    ctx.dead.clear()
                    dead[layer.name] = dead.get(layer.name, 0) + per_tag
                    if layer.tops[t] == score_blob:
                        dead_seeds += per_tag
                for b, out in outputs:
                    if len(out) == 0:
                        continue
                    node = layer.bottom_nodes[b]
                    keys = np.unique(encode(out, self._blob_shape(node[0])))
                    pending[node].append(keys)
                    feeders[node].add(layer.name)
                    if sum(k.size for k in pending[node]) > 4 * self.max_units:
                        pending[node] = [self._collect(pending, feeders, node, n_tags,
                                                       keep=True)]

        data_node = (self.data_blob, 0)
        data_keys = np.zeros(0, np.int64)
        for node in list(pending):   # blobs no layer produces: inputs and data-layer tops
            keys = self._collect(pending, feeders, node, n_tags)
            if keep_layers:
                kept[node[0]].append(keys)
            if node == data_node:
                data_keys = keys
        return self._results(tags, seeds, data_keys, kept if keep_layers else None, dead,
                             dead_seeds)

    def _results(self, tags, seeds, data_keys, kept, dead, dead_seeds):
        """[ClassFixations] per tag from the data blob's keys (and ``kept`` blob keys)."""
        data_shape = self._blob_shape(self.data_blob)
        data_units = decode(data_keys, data_shape)
        layer_units = {}
        if kept is not None:
            for name, arrays in kept.items():
                keys = np.unique(np.concatenate(arrays))
                layer_units[name] = decode(keys, self._blob_shape(name))

        results = []
        for tag_id, (item, class_id) in enumerate(tags):
            mine = data_units.tag == tag_id
            units = np.stack([data_units.c[mine], data_units.y[mine], data_units.x[mine]],
                             axis=1)
            flat = units[:, 1] * data_shape[2] + units[:, 2]
            pixels, counts = np.unique(flat, return_counts=True)
            points = np.stack([pixels // data_shape[2], pixels % data_shape[2]], axis=1)
            layers = None
            if kept is not None:
                layers = OrderedDict()
                for name, u in layer_units.items():
                    sel = u.tag == tag_id
                    layers[name] = np.stack([u.c[sel], u.y[sel], u.x[sel]], axis=1)
            dead_here = OrderedDict((name, int(per_tag[tag_id])) for name, per_tag in
                                    dead.items() if per_tag[tag_id])
            results.append(ClassFixations(class_id, item, points.astype(np.int64),
                                          counts.astype(np.int64), units.astype(np.int64),
                                          int(seeds[tag_id][0].size), layers, dead_here,
                                          int(dead_seeds[tag_id])))
        return results

    def _collect(self, pending, feeders, node, n_tags, keep=False):
        """The unique keys pending for ``node`` (checked against the budget), or None."""
        arrays = pending.get(node)
        if not arrays:
            return None
        if not keep:
            del pending[node]
        keys = np.unique(np.concatenate(arrays)) if len(arrays) > 1 else arrays[0]
        if keys.size > self.max_units:
            shape = self._blob_shape(node[0])
            per_tag = np.bincount(keys // int(np.prod(shape)), minlength=n_tags)
            worst = int(np.argmax(per_tag))
            if per_tag[worst] > self.max_units:
                raise ToolkitError(self._budget_message(node[0], int(per_tag[worst]),
                                                        sorted(feeders[node])))
        return keys

    def _budget_message(self, blob, units, layers):
        """What to do when one class's fixations in ``blob`` exceed the budget: a lower K
        for the ``layers`` that fed it, or a larger budget (the seeds have no K)."""
        raise_it = (f"raise max_units (--max-units on the command line) above {units}")
        if not layers:
            return (f"the seeds of one class at score blob '{blob}' are {units} units, more "
                    f"than max_units {self.max_units}; {raise_it}")
        sources = ", ".join(f"'{s}'" for s in layers)
        return (f"fixations of one class in blob '{blob}' reached {units} units (max_units "
                f"{self.max_units}), fed by layer {sources}; use a lower K there (k="
                f"'{layers[0]}=1,default=...', --k on the command line) or {raise_it}")

    # -- the rules' view of the net ----------------------------------------------------

    def _context(self, layer, item_of_tag, collector):
        """The ``TraceContext`` of ``layer``: the data it consumed (through
        ``net.bottom_names``, Caffe's split blobs included), its top shapes and params."""
        blobs, params = self.net.blobs, self.net.params
        return TraceContext(
            bottoms=[blobs[name].data for name in self.net.bottom_names[layer.name]],
            bottom_names=list(self.net.bottom_names[layer.name]),
            top_shapes=[blobs[name].data.shape for name in self.net.top_names[layer.name]],
            params=[p.data for p in params[layer.name]] if layer.name in params else [],
            layer_name=layer.name, item_of_tag=item_of_tag, shift=self.shift, k=self.k,
            ip_rule=self.ip_rule, collector=collector, chunk_elements=self.chunk_elements,
            pool_map=self._pool_map if self.threads > 1 else None,
            float32_ranking=self.float32_ranking)

    def _pool_map(self, function, chunks):
        """[function(chunk)] over the tracker's worker threads (started on first use)."""
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(self.threads)
        return self._executor.map(function, chunks)


def k_needed_per_layer(tracker, score_blob, items=(0,), classes=None, skip_background=True,
                       fractions=DEFAULT_FRACTIONS, return_counts=False, seed_region=None):
    """Figure 2.8: for every fixation unit visited at every layer with a choice (Convolution,
    Deconvolution, Pooling, InnerProduct, Eltwise, Interp), the K needed to capture x of its
    total positive contribution, averaged per layer: {layer: array (len(fractions),)}.

    The walk follows ``tracker``'s own K and shift; units whose contributions are all <= 0
    are left out of the means. With ``return_counts`` also {layer: units averaged}.
    ``seed_region`` as in ``BackTracker.trace``.
    Layers appear top (score side) first.
    """
    collector = KNeededCollector(fractions)
    tracker.trace_items(score_blob, list(items), classes, skip_background,
                        seed_region=seed_region, collector=collector)
    means = collector.means()
    if return_counts:
        return means, OrderedDict(collector.counts)
    return means
