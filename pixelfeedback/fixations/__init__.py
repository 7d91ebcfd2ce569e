"""Segmentation fixations (thesis chapter 2, SPEC section 4): back-track each predicted class
from the score blob to image-plane points through the strongest contributions.

The public names below are the subpackage's API; the modules behind them are its rooms:
``graph`` (the net's layers and Caffe's layer geometry), ``kstrategy`` (K strategies and the
top-K choice), ``units`` (tagged units), ``rules`` (one rule per layer type on a small
``TraceContext``) and ``tracker`` (the seeds, the walk, the budget and the results).

Public API
----------
- ``NetGraph.from_prototxt(path, phase="TEST")`` / ``NetGraph.from_text(text, phase="TEST")``:
  the net's layers in prototxt order (V2 ``layer`` or V1 ``layers``; ``input:`` fields and
  Input layers become input blobs), with every in-place layer giving its blob a new version.
- ``KStrategy.fixed(k)``, ``.fraction(x)``, ``.resolution()``, ``.per_layer(mapping, default)``
  and ``KStrategy.parse(text)`` for strings such as ``"1"``, ``"fraction:0.1"``,
  ``"resolution"``, ``"conv5_1=2,pool1=fraction:0.2,default=1"``; ``strategy.spec(layer,
  resolution_k)`` is what one layer gets.
- ``BackTracker(net, graph, shift="partial", k=None, max_units=2_000_000, ip_rule="topk",
  python_rules=None, data_blob=None, chunk_elements=2**21, threads=1)`` (``k``: a
  KStrategy or its string, default K = 1; ``graph``: a NetGraph or a prototxt path), then
  ``tracker.trace(score_blob, item=0, classes=None, skip_background=True, keep_layers=False)``
  -> ``{class_id: ClassFixations}`` and ``tracker.trace_items(score_blob, items=None, ...,
  collector=None)`` -> ``{item: {class_id: ClassFixations}}``. The tracker reads the blobs of
  the last forward pass (``run_forward(net, data)`` runs one).
- Dead units: ``ClassFixations.dead`` ({layer: units stopped there}) and ``dead_seeds``.
- ``k_needed_per_layer(tracker, score_blob, items=(0,), classes=None, skip_background=True,
  fractions=(0.1, 0.2, ..., 0.9), return_counts=False)`` -> ``{layer: mean K per
  fraction}`` (Figure 2.8), plus ``{layer: units averaged}`` with ``return_counts``; it
  passes a ``KNeededCollector`` to ``trace_items``.
- A single rule: ``rules.rule_for(layer)(ctx, layer, t, units)`` -> ``[(bottom index,
  Units)]`` with ``ctx`` a ``TraceContext`` of NumPy arrays (no ``caffe.Net`` needed).

Semantics
---------
Seeds: for item n of the score blob (N, C, h, w) (or (N, C) for classifiers), every class c of
the argmax map (ties: the lower class) seeds the units (c, y, x) whose argmax is c. Classes
and items are traced together but never mix: every unit carries a tag (item, class), and a
blob's fixations are a *set* of tagged units (duplicates merge).

Blobs are visited in reverse prototxt order (a topological order), so a blob is processed
once all its consumers have added their fixations. Each layer maps the fixations of its tops
to fixations of its bottoms (one rule per layer type, ``rules.RULES``):

- Convolution: the contribution of input channel c' to unit (z, y, x) is
  ``sum_ij W[z, c', i, j] * X[c', y*s - p + i*d, x*s - p + j*d]`` over the taps inside the
  input (padding contributes nothing and is never chosen). The top-K channels are kept;
  position: ``full`` shift = the tap of that channel with the largest single contribution;
  ``none`` = the window's centre tap ``((kh-1)//2, (kw-1)//2)``; ``partial`` (default) = full
  where the layer's dilation is 1, centre where it is > 1. When the centre tap lies in the
  padding, each axis moves to the nearest tap inside the input (ties: the lower tap index).
  A unit whose window lies wholly in the padding (only its bias) has no fixations below.
- Deconvolution: the exact transpose. Input unit (c', y', x') reaches output (z, y, x) through
  ``W[c', z, i, j]`` when ``y = y'*s - p + i*d`` (and likewise for x); channels and shift
  variants as for Convolution, over the taps that land on an input cell.
- Pooling (MAX, AVE; Caffe's ceil rounding and window clipping): the top-K input cells of
  the window in the same channel, padding excluded. Global pooling uses the whole map.
- InnerProduct: the top-K of ``W[row] * x`` over the flattened (C*H*W) input, or with
  ``ip_rule="positive"`` all positive contributors (original CNN-Fixations; a unit with no
  positive contributor keeps its single largest one).
- Eltwise: SUM ranks the bottoms by ``coeff * value`` at the unit, PROD and MAX by the value;
  the top-K bottoms receive the unit. Concat: the bottom owning the coordinate along the
  concat axis. Crop: the exact offset map into bottom 0 (bottom 1 only gives the shape).
- Interp (DeepLab's type) and the Zoom Python layer (``python_layers.interp``): bilinear
  align-corners source cells (up to 4, those with non-zero weight), ranked by
  ``weight * value``; the top-K are kept.
- Identity: ReLU, Dropout, BatchNorm, Scale and Bias (one bottom), LRN, Split, Flatten (index
  map), and every in-place layer. Layers without bottoms (Input, data layers) end the trace.
- Any other type, Softmax included (seed at the scores before it), is a ``ToolkitError``
  naming the layer and its type. Python layers need an entry in ``PYTHON_RULES`` or in the
  tracker's ``python_rules``.

Top-K ranking and ties: candidates are ordered by descending value, ties by ascending index
(channel, window cell in row-major order, bottom index, bilinear corner: top-left, top-right,
bottom-left, bottom-right): an exact tie always goes to the lowest index.

Dead units (SPEC section 4): a unit none of whose inputs contributes carries no evidence; its
trace stops there and is counted, never continued through an arbitrary (lowest-index)
candidate. Rules that rank contributions (Convolution and Deconvolution, InnerProduct,
Eltwise SUM, Interp/Zoom) stop a unit whose every contribution is exactly 0 (float64), or
that has no candidate at all (a convolution window wholly in the padding); rules that rank
values (Pooling, Eltwise PROD and MAX) stop a unit with no positive value. A live unit whose
contributions are all <= 0 keeps its top K (the least negative). ``ClassFixations.dead``
gives, per layer, how many units of the class stopped there and ``dead_seeds`` how many of
them were seeds; a class whose every path died has no points.

Inputs: NaN or inf in the score blob, or in any value a rule reads for the traced units (the
cells of their windows, their weights), is a ``ToolkitError`` naming the blob (or the
weights) and the layer (never a ranking of NaN); values no trace reads are not checked, so
the check costs next to nothing (``TraceContext.check_finite``).

Rankings are those of float64 contributions: products of the float32 blob and weight
values are exact in float64 and a channel's taps are summed in row-major tap order. (For
speed, Convolution with a fixed K first ranks float32 sums and redoes in float64 every unit
whose K-th/(K+1)-th gap is within the float32 rounding bound, so the result is the same.)

K strategies: ``fixed`` K; ``fraction`` x: the smallest K whose largest contributions reach
x of the unit's total positive contribution (K = 1 when nothing is positive); ``resolution``:
K = stride_h * stride_w for Convolution and Pooling (H_in * W_in for global pooling), the
rounded input/output size ratio per axis (at least 1) for Interp and Zoom, and 1 for every
other layer (the thesis's choice); ``per_layer``: any of these per layer name, with a default.

The point budget: if the fixations of one tag (item, class) in one blob exceed ``max_units``
the trace stops with a ``ToolkitError`` naming the blob and the layers that fed it (or, at
the score blob, saying the seeds alone exceed it).

Output: per class a ``ClassFixations`` whose ``points`` are the distinct (y, x) at the data
blob with ``counts`` = the number of distinct data channels fixated there (1..3 for an RGB
image); ``units`` are the data-blob units (c, y, x); ``layers`` (with ``keep_layers``) maps
every blob name reached to its units (union over the blob's in-place versions).

Vectorisation: a layer processes all units of all tags together with NumPy gathers and
reductions in bounded chunks (``chunk_elements``); Python loops run only over layers,
(item, group) partitions and chunks, never over fixation units.

In-place layers and the data they saw: the tracker reads what each layer consumed through
``net.bottom_names`` (Caffe's split blobs included). This is exact for the usual Caffe
pattern where an in-place layer is the only reader of the blob version it overwrites.
"""
from pixelfeedback.fixations.graph import (
    LayerSpec,
    NetGraph,
    conv_geometry,
    pool_geometry,
    pooled_size,
)
from pixelfeedback.fixations.kstrategy import (
    DEFAULT_FRACTIONS,
    KNeededCollector,
    KStrategy,
    k_for_fraction,
    select_top,
)
from pixelfeedback.fixations.rules import (
    IP_RULES,
    PYTHON_RULES,
    RULES,
    SHIFTS,
    TraceContext,
    rule_for,
)
from pixelfeedback.fixations.tracker import (
    BackTracker,
    ClassFixations,
    check_finite_scores,
    k_needed_per_layer,
    run_forward,
)
from pixelfeedback.fixations.units import Units

__all__ = [
    "BackTracker", "ClassFixations", "DEFAULT_FRACTIONS", "IP_RULES", "KNeededCollector",
    "KStrategy", "LayerSpec", "NetGraph", "PYTHON_RULES", "RULES", "SHIFTS", "TraceContext",
    "Units", "check_finite_scores", "conv_geometry", "k_for_fraction", "k_needed_per_layer",
    "pool_geometry", "pooled_size", "rule_for", "run_forward", "select_top",
]
