"""Segmentation fixations (thesis chapter 2, SPEC section 4): back-track each predicted class
from the score blob to image-plane points through the strongest contributions.

Public API
----------
- ``NetGraph.from_prototxt(path, phase="TEST")`` / ``NetGraph.from_text(text, phase="TEST")``:
  the net's layers in prototxt order (V2 ``layer`` or V1 ``layers``; ``input:`` fields and
  Input layers become input blobs), with every in-place layer giving its blob a new version.
- ``KStrategy.fixed(k)``, ``.fraction(x)``, ``.resolution()``, ``.per_layer(mapping, default)``
  and ``KStrategy.parse(text)`` for strings such as ``"1"``, ``"fraction:0.1"``,
  ``"resolution"``, ``"conv5_1=2,pool1=fraction:0.2,default=1"``.
- ``BackTracker(net, graph, shift="partial", k=None, max_units=2_000_000, ip_rule="topk",
  python_rules=None, data_blob=None, chunk_elements=2**21, threads=1)`` (``k``: a
  KStrategy or its string, default K = 1; ``graph``: a NetGraph or a prototxt path), then
  ``tracker.trace(score_blob, item=0, classes=None, skip_background=True, keep_layers=False)``
  -> ``{class_id: ClassFixations}`` and ``tracker.trace_items(score_blob, items=None, ...)``
  -> ``{item: {class_id: ClassFixations}}``. The tracker reads the blobs of the last forward
  pass (``run_forward(net, data)`` runs one).
- ``k_needed_per_layer(tracker, score_blob, items=(0,), classes=None, skip_background=True,
  fractions=(0.1, 0.2, ..., 0.9), return_counts=False)`` -> ``{layer: mean K per
  fraction}`` (Figure 2.8), plus ``{layer: units averaged}`` with ``return_counts``.

Semantics
---------
Seeds: for item n of the score blob (N, C, h, w) (or (N, C) for classifiers), every class c of
the argmax map (ties: the lower class) seeds the units (c, y, x) whose argmax is c. Classes
and items are traced together but never mix: every unit carries a tag (item, class), and a
blob's fixations are a *set* of tagged units (duplicates merge).

Blobs are visited in reverse prototxt order (a topological order), so a blob is processed
once all its consumers have added their fixations. Each layer maps the fixations of its tops
to fixations of its bottoms:

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
bottom-left, bottom-right). When every contribution is <= 0 the top-K by value are still
kept. Rankings are those of float64 contributions: products of the float32 blob and weight
values are exact in float64 and a channel's taps are summed in row-major tap order. (For
speed, Convolution with a fixed K first ranks float32 sums and redoes in float64 every unit
whose K-th/(K+1)-th gap is within the float32 rounding bound, so the result is the same.)

K strategies: ``fixed`` K; ``fraction`` x: the smallest K whose largest contributions reach
x of the unit's total positive contribution (K = 1 when nothing is positive); ``resolution``:
K = stride_h * stride_w for Convolution and Pooling (H_in * W_in for global pooling), the
rounded input/output size ratio per axis (at least 1) for Interp and Zoom, and 1 for every
other layer (the thesis's choice); ``per_layer``: any of these per layer name, with a default.

The point budget: if the fixations of one tag (item, class) in one blob exceed ``max_units``
the trace stops with a ``ToolkitError`` naming the blob and the layers that fed it.

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
import json
import os
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from python_layers import ToolkitError

try:
    import cv2  # only for fast transposes
except ImportError:  # pragma: no cover
    cv2 = None

SHIFTS = ("none", "partial", "full")
IP_RULES = ("topk", "positive")

# V1 ``layers { type: ENUM }`` -> V2 type strings (Caffe's UpgradeV1LayerType).
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

IDENTITY_TYPES = {"ReLU", "Dropout", "BatchNorm", "LRN", "Split"}
SINGLE_BOTTOM_IDENTITY_TYPES = {"Scale", "Bias"}  # with a second bottom they are not identities
# Python layers the tracker knows: (module, class) -> rule name ("interp" or "identity").
PYTHON_RULES = {("python_layers.interp", "Zoom"): "interp"}


# ----------------------------------------------------------------------------- the graph

@dataclass
class LayerSpec:
    """One layer of the graph: V2 type name, blob names, versioned nodes and its proto."""
    name: str
    type: str
    bottoms: List[str]
    tops: List[str]
    proto: object
    bottom_nodes: List[Tuple[str, int]] = field(default_factory=list)
    top_nodes: List[Tuple[str, int]] = field(default_factory=list)

    @property
    def in_place(self):
        """One bottom, written in place (top == bottom)."""
        return len(self.bottoms) == 1 and self.tops == self.bottoms

    @property
    def python_key(self):
        """(module, class) of a Python layer, else None."""
        if self.type != "Python":
            return None
        param = self.proto.python_param
        return (param.module, param.layer)


def _rule_meets_state(rule, phase):
    """Caffe's StateMeetsRule for a net state with ``phase``, level 0 and no stages."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and 0 < rule.min_level:
        return False
    if rule.HasField("max_level") and 0 > rule.max_level:
        return False
    return len(rule.stage) == 0  # the net state has no stages


def _layer_included(layer, phase):
    if len(layer.include) > 0:
        return any(_rule_meets_state(rule, phase) for rule in layer.include)
    return not any(_rule_meets_state(rule, phase) for rule in layer.exclude)


class NetGraph:
    """The net's layers from its prototxt, in order, filtered by phase.

    ``layers``: list of ``LayerSpec``; ``inputs``: names of the input blobs (``input:`` fields
    and Input layers, in order); ``versions[name]``: how many versions the blob has (1 + the
    number of in-place layers writing it). Nodes are ``(blob name, version)``.
    """

    def __init__(self, layers, inputs, name="", source="<text>"):
        self.layers = layers
        self.inputs = list(inputs)
        self.name = name
        self.source = source
        self.by_name = OrderedDict((layer.name, layer) for layer in layers)
        self.versions = {}
        made_by_input_layers = {blob for layer in layers if layer.type == "Input"
                                for blob in layer.tops}
        for blob in self.inputs:   # ``input:`` fields exist before the first layer
            if blob not in made_by_input_layers:
                self.versions[blob] = 1
        for layer in layers:
            layer.bottom_nodes = []
            for blob in layer.bottoms:
                if blob not in self.versions:
                    raise ToolkitError(
                        f"{source}: layer '{layer.name}' reads blob '{blob}' that no earlier "
                        "layer produces; put the layers in prototxt order")
                layer.bottom_nodes.append((blob, self.versions[blob] - 1))
            layer.top_nodes = []
            for blob in layer.tops:
                version = self.versions.get(blob, 0)
                self.versions[blob] = version + 1
                layer.top_nodes.append((blob, version))

    @classmethod
    def from_prototxt(cls, path, phase="TEST"):
        """Parse a prototxt file (V2 ``layer`` or V1 ``layers``)."""
        if not os.path.isfile(path):
            raise ToolkitError(f"prototxt '{path}' does not exist; give the deploy/test net")
        with open(path) as f:
            return cls.from_text(f.read(), phase=phase, source=path)

    @classmethod
    def from_text(cls, text, phase="TEST", source="<text>"):
        """Parse prototxt text; ``phase`` is "TEST" or "TRAIN" (include/exclude rules)."""
        from caffe.proto import caffe_pb2
        from google.protobuf import text_format

        net_param = caffe_pb2.NetParameter()
        try:
            text_format.Merge(text, net_param)
        except text_format.ParseError as exc:
            raise ToolkitError(f"{source}: not a prototxt BVLC Caffe can read ({exc}); "
                               "DeepLab-only fields such as interp_param must be removed") \
                from None
        if phase not in ("TEST", "TRAIN"):
            raise ToolkitError(f"phase must be 'TEST' or 'TRAIN', got {phase!r}")
        phase_value = caffe_pb2.TEST if phase == "TEST" else caffe_pb2.TRAIN
        if len(net_param.layer) and len(net_param.layers):
            raise ToolkitError(f"{source}: mixes V1 'layers' and V2 'layer' fields; "
                               "upgrade it with upgrade_net_proto_text")
        inputs = list(net_param.input)
        layers = []
        if len(net_param.layers):
            enum = caffe_pb2.V1LayerParameter.LayerType
            for proto in net_param.layers:
                if not _layer_included(proto, phase_value):
                    continue
                enum_name = enum.Name(proto.type)
                if enum_name not in V1_TYPES:
                    raise ToolkitError(f"{source}: V1 layer '{proto.name}' has type "
                                       f"{enum_name}, which has no V2 name")
                layers.append(LayerSpec(proto.name, V1_TYPES[enum_name], list(proto.bottom),
                                        list(proto.top), proto))
        else:
            for proto in net_param.layer:
                if not _layer_included(proto, phase_value):
                    continue
                layers.append(LayerSpec(proto.name, proto.type, list(proto.bottom),
                                        list(proto.top), proto))
        for layer in layers:
            if layer.type == "Input":
                inputs.extend(blob for blob in layer.tops if blob not in inputs)
        return cls(layers, inputs, net_param.name, source)

    def final_node(self, blob):
        """The last version of ``blob`` (what a reader after all layers sees)."""
        if blob not in self.versions:
            raise ToolkitError(f"{self.source}: no blob named '{blob}'; blobs are "
                               f"{', '.join(list(self.versions)[:30])}")
        return (blob, self.versions[blob] - 1)


# ----------------------------------------------------------------------------- layer geometry

def _pair(values, name_h, name_w, param, default, layer, what):
    """(h, w) of a repeated Caffe spatial field with its _h/_w overrides."""
    has_h = param.HasField(name_h) if name_h else False
    has_w = param.HasField(name_w) if name_w else False
    if has_h != has_w:
        raise ToolkitError(f"layer '{layer}': give both {name_h} and {name_w}")
    if has_h:
        if len(values):
            raise ToolkitError(f"layer '{layer}': give {what} either as {what} or as "
                               f"{name_h}/{name_w}, not both")
        return int(getattr(param, name_h)), int(getattr(param, name_w))
    values = list(values)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ToolkitError(f"layer '{layer}': {what} has {len(values)} values; only 2-D "
                       "spatial layers are supported")


@dataclass
class ConvGeometry:
    """Kernel, stride, pad, dilation (each (h, w)) and group of a (de)convolution."""
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    pad: Tuple[int, int]
    dilation: Tuple[int, int]
    group: int


def conv_geometry(layer):
    """Caffe's reading of ``convolution_param`` (defaults: stride 1, pad 0, dilation 1)."""
    param = layer.proto.convolution_param
    if param.axis != 1:
        raise ToolkitError(f"layer '{layer.name}': convolution axis {param.axis} is not "
                           "supported (only axis 1, N x C x H x W blobs)")
    kernel = _pair(param.kernel_size, "kernel_h", "kernel_w", param, None, layer.name,
                   "kernel_size")
    if kernel[0] is None:
        raise ToolkitError(f"layer '{layer.name}': convolution without kernel_size")
    stride = _pair(param.stride, "stride_h", "stride_w", param, 1, layer.name, "stride")
    pad = _pair(param.pad, "pad_h", "pad_w", param, 0, layer.name, "pad")
    dilation = _pair(param.dilation, None, None, param, 1, layer.name, "dilation")
    return ConvGeometry(kernel, stride, pad, dilation, int(param.group))


@dataclass
class PoolGeometry:
    """Kernel, stride, pad (each (h, w)), method name and global flag of a Pooling layer."""
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    pad: Tuple[int, int]
    method: str
    global_pooling: bool


def pool_geometry(layer, input_hw=None):
    """Caffe's reading of ``pooling_param``; ``input_hw`` sets the kernel of global pooling."""
    from caffe.proto import caffe_pb2
    param = layer.proto.pooling_param
    method = caffe_pb2.PoolingParameter.PoolMethod.Name(param.pool)
    if param.global_pooling:
        if input_hw is None:
            raise ToolkitError(f"layer '{layer.name}': global pooling needs the input size")
        return PoolGeometry(tuple(input_hw), (1, 1), (0, 0), method, True)

    def one(name, name_h, name_w, default):
        if param.HasField(name_h) or param.HasField(name_w):
            return int(getattr(param, name_h)), int(getattr(param, name_w))
        if param.HasField(name):
            return int(getattr(param, name)), int(getattr(param, name))
        return default, default

    kernel = one("kernel_size", "kernel_h", "kernel_w", None)
    if kernel[0] is None:
        raise ToolkitError(f"layer '{layer.name}': pooling without kernel_size")
    return PoolGeometry(kernel, one("stride", "stride_h", "stride_w", 1),
                        one("pad", "pad_h", "pad_w", 0), method, False)


def pooled_size(size, kernel, stride, pad, ceil_mode=True, other_pad=0):
    """Caffe's pooled output size along one axis: ceil (or floor) rounding, then, when
    either axis is padded (``pad`` or ``other_pad``), the last window must start inside the
    image + pad (``if ((pooled-1)*stride >= size+pad) --pooled``)."""
    span = size + 2 * pad - kernel
    pooled = (-(-span // stride) if ceil_mode else span // stride) + 1
    if (pad or other_pad) and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def _shape3(shape):
    """A blob's per-item shape as (C, H, W): 2-D blobs are (C, 1, 1)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        return shape[1:]
    if len(shape) == 2:
        return (shape[1], 1, 1)
    raise ToolkitError(f"blob of shape {shape}: fixations handle N x C x H x W and N x C blobs")


# ----------------------------------------------------------------------------- K strategies

class KStrategy:
    """How many candidates each transition keeps (see the module docstring)."""

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


# ----------------------------------------------------------------------------- results

@dataclass
class ClassFixations:
    """Fixations of one class in one image.

    ``points``: int64 (P, 2) distinct (y, x) at the data blob, row-major order; ``counts``:
    int64 (P,) distinct data channels fixated at each point; ``units``: int64 (U, 3)
    (c, y, x) at the data blob; ``n_seeds``: seed units at the score blob; ``layers``: with
    ``keep_layers``, {blob name: int64 (U, 3) units}, else None.
    """
    class_id: int
    item: int
    points: np.ndarray
    counts: np.ndarray
    units: np.ndarray
    n_seeds: int
    layers: Optional[Dict[str, np.ndarray]] = None


class KNeededCollector:
    """Accumulates, per layer, the K needed to reach each fraction of every visited unit's
    positive contribution (units with no positive contribution are left out)."""

    def __init__(self, fractions):
        self.fractions = np.asarray(fractions, np.float64)
        self.sums = OrderedDict()
        self.counts = OrderedDict()
        self.no_positive = defaultdict(int)

    def add(self, layer_name, values):
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
        return OrderedDict((name, self.sums[name] / max(self.counts[name], 1))
                           for name in self.sums)


# ----------------------------------------------------------------------------- the engine

@dataclass
class _Units:
    """A batch of tagged units: int64 arrays of equal length."""
    tag: np.ndarray
    c: np.ndarray
    y: np.ndarray
    x: np.ndarray

    def __len__(self):
        return len(self.tag)

    def take(self, index):
        return _Units(self.tag[index], self.c[index], self.y[index], self.x[index])


def _encode(units, shape):
    C, H, W = shape
    return ((units.tag * C + units.c) * H + units.y) * W + units.x


def _decode(keys, shape):
    C, H, W = shape
    x = keys % W
    rest = keys // W
    y = rest % H
    rest //= H
    return _Units(rest // C, rest % C, y, x)


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
            if rule not in ("interp", "identity"):
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
        self._collector = None
        self._float32_ranking = True   # False: always rank float64 sums (tests compare)
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
                    keep_layers=False, seed_region=None):
        """``trace`` for several batch items at once: {item: {class_id: ClassFixations}}."""
        if score_blob not in self.net.blobs:
            raise ToolkitError(f"score blob '{score_blob}' is not in the net")
        scores = self.net.blobs[score_blob].data
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
        per_tag = self._run(score_blob, tags, seeds, keep_layers)
        results = OrderedDict((item, OrderedDict()) for item in items)
        for tag_id, (item, class_id) in enumerate(tags):
            results[item][class_id] = per_tag[tag_id]
        return results

    # -- seeds -------------------------------------------------------------------------

    def _seeds(self, score_blob, scores, classes, skip_background, item, seed_region=None):
        """[(class_id, (c, y, x) arrays)] of the argmax map of one item's scores."""
        scores3 = scores.reshape(_shape3((1,) + scores.shape))
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
        return _shape3(self.net.blobs[name].data.shape)

    def _run(self, score_blob, tags, seeds, keep_layers):
        item_of_tag = np.array([item for item, _ in tags] or [0], np.int64)
        self._item_of_tag = item_of_tag
        n_tags = len(tags)
        pending = defaultdict(list)       # node -> list of key arrays
        feeders = defaultdict(set)        # node -> layer names that fed it
        kept = defaultdict(list)          # blob name -> key arrays (keep_layers)
        score_node = self.graph.final_node(score_blob)
        score_shape = self._blob_shape(score_blob)
        for tag_id, (c, y, x) in enumerate(seeds):
            units = _Units(np.full(c.size, tag_id, np.int64), c, y, x)
            pending[score_node].append(_encode(units, score_shape))
        feeders[score_node].add("(seeds)")

        for layer in reversed(self.graph.layers):
            if not layer.bottoms:   # Input and data layers end the trace
                continue
            top_units = []
            for t, node in enumerate(layer.top_nodes):
                keys = self._collect(pending, feeders, node, n_tags)
                if keys is not None and keep_layers:
                    kept[node[0]].append(keys)
                top_units.append(None if keys is None or keys.size == 0
                                 else _decode(keys, self._blob_shape(node[0])))
            if all(u is None for u in top_units):
                continue
            for t, units in enumerate(top_units):
                if units is None:
                    continue
                for b, out in self._transition(layer, t, units):
                    if len(out) == 0:
                        continue
                    node = layer.bottom_nodes[b]
                    keys = np.unique(_encode(out, self._blob_shape(node[0])))
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
        data_shape = self._blob_shape(self.data_blob)
        data_units = _decode(data_keys, data_shape)
        layer_units = {}
        if keep_layers:
            for name, arrays in kept.items():
                keys = np.unique(np.concatenate(arrays))
                layer_units[name] = _decode(keys, self._blob_shape(name))

        results = []
        for tag_id, (item, class_id) in enumerate(tags):
            mine = data_units.tag == tag_id
            units = np.stack([data_units.c[mine], data_units.y[mine], data_units.x[mine]],
                             axis=1)
            flat = units[:, 1] * data_shape[2] + units[:, 2]
            pixels, counts = np.unique(flat, return_counts=True)
            points = np.stack([pixels // data_shape[2], pixels % data_shape[2]], axis=1)
            layers = None
            if keep_layers:
                layers = OrderedDict()
                for name, u in layer_units.items():
                    sel = u.tag == tag_id
                    layers[name] = np.stack([u.c[sel], u.y[sel], u.x[sel]], axis=1)
            results.append(ClassFixations(class_id, item, points.astype(np.int64),
                                          counts.astype(np.int64), units.astype(np.int64),
                                          int(seeds[tag_id][0].size), layers))
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
                sources = ", ".join(f"'{s}'" for s in sorted(feeders[node]))
                raise ToolkitError(
                    f"fixations of one class in blob '{node[0]}' reached {per_tag[worst]} "
                    f"units (max_units {self.max_units}), fed by layer {sources}; use a lower "
                    f"K for {sources} (e.g. k='{min(feeders[node])}=1,default=...') "
                    "or raise max_units")
        return keys

    # -- transitions -------------------------------------------------------------------

    def _bottom_data(self, layer, b):
        return self.net.blobs[self.net.bottom_names[layer.name][b]].data

    def _top_shape(self, layer, t):
        return self.net.blobs[self.net.top_names[layer.name][t]].data.shape

    def _transition(self, layer, t, units):
        """[(bottom index, _Units)] the fixations ``units`` of top ``t`` send down."""
        kind = layer.type
        if kind == "Python":
            rule = self.python_rules.get(layer.python_key)
            if rule is None and not layer.in_place:
                module, cls = layer.python_key
                raise ToolkitError(
                    f"Python layer '{layer.name}' ({module}.{cls}) has no back-tracking "
                    "rule; pass python_rules={('%s', '%s'): 'identity' or 'interp'} if it "
                    "is one of those" % (module, cls))
            kind = {"interp": "Interp", "identity": "ReLU", None: "ReLU"}[rule]
        if kind in IDENTITY_TYPES or layer.in_place or (
                kind in SINGLE_BOTTOM_IDENTITY_TYPES and len(layer.bottoms) == 1):
            return [(0, units)]
        handler = {
            "Convolution": self._conv, "Deconvolution": self._conv, "Pooling": self._pool,
            "InnerProduct": self._inner_product, "Eltwise": self._eltwise,
            "Concat": self._concat, "Crop": self._crop, "Interp": self._interp,
            "Flatten": self._flatten,
        }.get(kind)
        if handler is None:
            raise ToolkitError(
                f"layer '{layer.name}' has type '{layer.type}', which has no fixation "
                "back-tracking rule" + ("; seed at the scores before the Softmax"
                                        if layer.type == "Softmax" else ""))
        return handler(layer, t, units)

    def _k_spec(self, layer, resolution_k):
        """("fixed", k) or ("fraction", x) for ``layer``."""
        strategy = self.k.for_layer(layer.name)
        if strategy.kind == "fixed":
            return ("fixed", strategy.value)
        if strategy.kind == "fraction":
            return ("fraction", strategy.value)
        return ("fixed", max(1, int(resolution_k)))

    def _choose(self, layer, values, spec):
        """(rows, cols) of the chosen candidates; also feeds the K-needed collector."""
        if self._collector is not None:
            self._collector.add(layer.name, values)
        return select_top(values, *spec)

    def _chunks(self, n, per_unit):
        step = max(1, self.chunk_elements // max(1, per_unit))
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def _conv(self, layer, t, units):
        """Convolution and Deconvolution: top-K input channels, each at its tap (shift)."""
        deconv = layer.type == "Deconvolution"
        geo = conv_geometry(layer)
        X = self._bottom_data(layer, 0)
        _, C_in, H, W = X.shape
        C_out = self._top_shape(layer, 0)[1]
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo.kernel, geo.stride, geo.pad, geo.dilation
        G = geo.group
        cg, og = C_in // G, C_out // G
        full = self.shift == "full" or (self.shift == "partial" and dh == 1 and dw == 1)
        spec = self._k_spec(layer, 1 if deconv else sh * sw)
        taps_w = _tap_major_weights(self.net.params[layer.name][0].data, deconv, G)

        # Candidate taps of every unit along each axis: kernel tap index, input coordinate,
        # validity. A strided deconvolution with dilation 1 reaches an output row only
        # through the taps i = (y + p) mod s + s*m, so only those are candidates.
        z, y, x = units.c, units.y, units.x
        shared_taps = not (deconv and dh == 1 and dw == 1 and (sh > 1 or sw > 1))
        tap_i, ty, vy = _axis_taps(y, kh, sh, ph, dh, H, deconv)
        tap_j, tx, vx = _axis_taps(x, kw, sw, pw, dw, W, deconv)
        mh, mw = tap_i.shape[1], tap_j.shape[1]
        T = mh * mw
        live = vy.any(axis=1) & vx.any(axis=1)   # a window wholly in the padding: bias only
        if not live.all():
            units, tap_i, tap_j = units.take(live), tap_i[live], tap_j[live]
            ty, tx, vy, vx = ty[live], tx[live], vy[live], vx[live]
        if len(units) == 0:
            return [(0, _concat_units([]))]
        z = units.c
        item = self._item_of_tag[units.tag]
        group = z // og
        centre_i = _nearest_valid(tap_i, vy, (kh - 1) // 2)
        centre_j = _nearest_valid(tap_j, vx, (kw - 1) // 2)

        # Fixed K may rank float32 contributions (checked against their rounding bound);
        # fraction K and the K-needed statistics always use float64.
        fast = self._float32_ranking and spec[0] == "fixed" and self._collector is None
        if fast:   # T * max|W[z]| bounds sum_t |W[z, t, c]| for every input channel c
            flat_w = taps_w.reshape(C_out, -1)
            weight_bound = kh * kw * np.maximum(flat_w.max(axis=1), -flat_w.min(axis=1))
        else:
            weight_bound = None
        out = []
        for (it, g), index in _partition(item, group):
            channels = slice(g * cg, (g + 1) * cg)
            # Gather layout: rows of a pixel-major (H*W + 1, cg) copy whose last row is zero
            # (taps outside the input read it) when the windows cover more cells than the
            # map has; else straight from the (C, H, W) blob.
            tap_major = 3 * len(index) * T > H * W
            patch_max = None
            if tap_major:
                pixels = _pixel_major(X[it, channels])
                cells = np.where(vy[:, :, None] & vx[:, None, :],
                                 ty[:, :, None] * W + tx[:, None, :], H * W).reshape(-1, T)
                if fast:   # one bound for the whole map: cheaper than per window here
                    patch_max = max(float(pixels.max()), -float(pixels.min()))
            else:
                pixels = cells = None

            def work(sub, it=it, g=g, channels=channels, tap_major=tap_major,
                     patch_max=patch_max, pixels=pixels, cells=cells):
                n = len(sub)
                valid = (vy[sub][:, :, None] & vx[sub][:, None, :]).reshape(n, T)
                if tap_major:
                    patch = pixels[cells[sub]]                        # (n, T, cg)
                    layout = "utc"
                else:
                    patch = X[it, channels][:, np.clip(ty[sub], 0, H - 1)[:, :, None],
                                            np.clip(tx[sub], 0, W - 1)[:, None, :]]
                    patch = patch.reshape(cg, n, T)
                    if not valid.all():
                        patch *= valid
                    layout = "cut"
                if shared_taps:
                    weights = taps_w[z[sub]].reshape(n, T, cg)
                else:
                    rows_i = np.minimum(tap_i[sub], kh - 1)[:, :, None]
                    cols_j = np.minimum(tap_j[sub], kw - 1)[:, None, :]
                    weights = taps_w[z[sub][:, None, None], rows_i, cols_j].reshape(n, T, cg)
                rows, cols = self._conv_choose(layer, spec, patch, layout, weights,
                                               weight_bound[z[sub]] if fast else None,
                                               patch_max)
                if full:   # the tap with the largest single (exact float64) contribution
                    values = patch[rows, :, cols] if tap_major else patch[cols, rows, :]
                    products = values.astype(np.float64) * weights[rows, :, cols]
                    products[~valid[rows]] = -np.inf
                    tap = np.argmax(products, axis=1)
                    i, j = tap // mw, tap % mw
                else:
                    i, j = centre_i[sub][rows], centre_j[sub][rows]
                picked = sub[rows]
                return _Units(units.tag[picked], g * cg + cols, ty[picked, i], tx[picked, j])

            out.extend(self._map(work, [index[part] for part in
                                        self._chunks(len(index), cg * T * 4)]))
        return [(0, _concat_units(out))]

    def _map(self, function, chunks):
        """[function(chunk)] over worker threads (NumPy releases the GIL in the heavy parts);
        in order and on this thread when collecting K statistics or with one thread."""
        if self.threads <= 1 or len(chunks) < 2 or self._collector is not None:
            return [function(chunk) for chunk in chunks]
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor
            self._executor = ThreadPoolExecutor(self.threads)
        return list(self._executor.map(function, chunks))

    def _conv_choose(self, layer, spec, patch, layout, weights, weight_bound, patch_max=None):
        """(rows, cols) of the top channels from patches and per-unit weights (n, T, cg).

        Without ``weight_bound`` the channel contributions are float64 (exact products,
        taps summed in order). With it (fixed K; per row a bound on ``sum_t |w_t|`` over
        any channel), they are first summed in float32; a row whose gap between its K-th
        and (K+1)-th values exceeds twice the rounding bound
        ``2 (T+2) 2^-24 max|patch| weight_bound`` keeps that choice, the others are redone
        in float64, so the result is the float64 ranking either way. ``patch_max``: a bound
        on |patch| for all rows (else taken per row).
        """
        def exact(index=None):
            p = patch if index is None else (patch[index] if layout == "utc" else patch[:, index])
            w = weights if index is None else weights[index]
            if w.shape[1] == 1:   # one tap: the float64 product of two float32s is exact
                return np.multiply(p[:, 0, :] if layout == "utc" else p[:, :, 0].T, w[:, 0, :],
                                   dtype=np.float64)
            return np.einsum(layout + ",utc->uc", p, w, dtype=np.float64)

        if weight_bound is None:
            return self._choose(layer, exact(), spec)
        k, n = spec[1], weights.shape[2]
        if k >= n:
            return np.nonzero(np.ones((weights.shape[0], n), bool))
        if k > 8:
            return self._choose(layer, exact(), spec)
        approx = np.einsum(layout + ",utc->uc", patch, weights)
        if patch_max is None:
            axes = (1, 2) if layout == "utc" else (0, 2)
            patch_max = np.maximum(patch.max(axis=axes), -patch.min(axis=axes)).astype(np.float64)
        bound = 2.0 * (weights.shape[1] + 2) * 2.0 ** -24 * patch_max * weight_bound
        # The K+1 largest per row by repeated argmax (np.partition is far slower per row).
        every = np.arange(len(approx))
        top_cols, top_values = [], []
        for _ in range(k + 1):
            best = np.argmax(approx, axis=1)
            top_cols.append(best)
            top_values.append(approx[every, best].astype(np.float64))
            approx[every, best] = -np.inf
        certain = top_values[k - 1] - top_values[k] > 2.0 * bound
        sure = np.flatnonzero(certain)
        rows = np.repeat(sure, k)
        cols = np.stack([c[sure] for c in top_cols[:k]], axis=1).ravel()
        unsure = np.flatnonzero(~certain)
        if len(unsure):
            r, c = select_top(exact(unsure), "fixed", k)
            rows, cols = np.concatenate([rows, unsure[r]]), np.concatenate([cols, c])
        return rows, cols

    def _pool(self, layer, t, units):
        """Pooling: the top-K cells of each window inside the input, same channel."""
        X = self._bottom_data(layer, 0)
        H, W = X.shape[2:]
        geo = pool_geometry(layer, (H, W))
        if geo.method not in ("MAX", "AVE"):
            raise ToolkitError(f"layer '{layer.name}': {geo.method} pooling has no fixation "
                               "rule (only MAX and AVE)")
        (kh, kw), (sh, sw), (ph, pw) = geo.kernel, geo.stride, geo.pad
        resolution_k = (H * W if geo.global_pooling else sh * sw)
        spec = self._k_spec(layer, resolution_k)
        T = kh * kw
        out = []
        for part in self._chunks(len(units), T * 2):
            u = units.take(part)
            item = self._item_of_tag[u.tag]
            ty = u.y[:, None] * sh - ph + np.arange(kh)
            tx = u.x[:, None] * sw - pw + np.arange(kw)
            vy = (ty >= 0) & (ty < H)
            vx = (tx >= 0) & (tx < W)
            values = X[item[:, None, None], u.c[:, None, None], np.clip(ty, 0, H - 1)[:, :, None],
                       np.clip(tx, 0, W - 1)[:, None, :]].astype(np.float64)
            values[~(vy[:, :, None] & vx[:, None, :])] = -np.inf
            rows, cells = self._choose(layer, values.reshape(len(u), T), spec)
            out.append(_Units(u.tag[rows], u.c[rows], ty[rows, cells // kw],
                              tx[rows, cells % kw]))
        return [(0, _concat_units(out))]

    def _inner_product(self, layer, t, units):
        """InnerProduct: top-K (or all positive) of ``W[row] * x`` over the flat input."""
        param = layer.proto.inner_product_param
        X = self._bottom_data(layer, 0)
        axis = param.axis if param.axis >= 0 else param.axis + X.ndim
        if axis != 1:
            raise ToolkitError(f"layer '{layer.name}': InnerProduct axis {param.axis} is not "
                               "supported (only axis 1)")
        shape = _shape3(X.shape) if X.ndim in (2, 4) else None
        if shape is None:
            raise ToolkitError(f"layer '{layer.name}': input of shape {X.shape} is not "
                               "N x C x H x W or N x D")
        flat = X.reshape(X.shape[0], -1)
        weights = self.net.params[layer.name][0].data
        rows_of_w = weights.T if param.transpose else weights     # (outputs, D)
        spec = self._k_spec(layer, 1)
        D = flat.shape[1]
        out = []
        tags = np.unique(units.tag)
        hits = np.zeros((len(tags), D), bool) if self.ip_rule == "positive" else None
        for part in self._chunks(len(units), D * 2):
            u = units.take(part)
            item = self._item_of_tag[u.tag]
            values = rows_of_w[u.c].astype(np.float64) * flat[item]
            if self.ip_rule == "positive":
                # All positive contributors can be most of the input for every unit: merge
                # them per tag here (a set) rather than listing every (unit, input) pair.
                if self._collector is not None:
                    self._collector.add(layer.name, values)
                chosen = values > 0
                none = np.flatnonzero(~chosen.any(axis=1))
                chosen[none, np.argmax(values[none], axis=1)] = True
                slot = np.searchsorted(tags, u.tag)
                for s in np.unique(slot):
                    hits[s] |= chosen[slot == s].any(axis=0)
                continue
            rows, cols = self._choose(layer, values, spec)
            out.append(_Units(u.tag[rows], *_unravel(cols, shape)))
        if hits is not None:
            slot, cols = np.nonzero(hits)
            out.append(_Units(tags[slot], *_unravel(cols, shape)))
        return [(0, _concat_units(out))]

    def _eltwise(self, layer, t, units):
        """Eltwise: the top-K bottoms by ``coeff * value`` (SUM) or value (PROD, MAX)."""
        from caffe.proto import caffe_pb2
        param = layer.proto.eltwise_param
        operation = caffe_pb2.EltwiseParameter.EltwiseOp.Name(param.operation)
        B = len(layer.bottoms)
        coeffs = np.ones(B)
        if operation == "SUM" and len(param.coeff):
            if len(param.coeff) != B:
                raise ToolkitError(f"layer '{layer.name}': {len(param.coeff)} coeffs for "
                                   f"{B} bottoms")
            coeffs = np.asarray(param.coeff, np.float64)
        spec = self._k_spec(layer, 1)
        item = self._item_of_tag[units.tag]
        values = np.empty((len(units), B))
        for b in range(B):
            X = self._bottom_data(layer, b)
            X = X.reshape((X.shape[0],) + _shape3(X.shape))
            values[:, b] = coeffs[b] * X[item, units.c, units.y, units.x].astype(np.float64)
        rows, cols = self._choose(layer, values, spec)
        return [(b, units.take(rows[cols == b])) for b in range(B)]

    def _concat(self, layer, t, units):
        """Concat: the bottom owning the unit's coordinate along the concat axis."""
        param = layer.proto.concat_param
        ndim = len(self._top_shape(layer, 0))
        axis = param.concat_dim if param.HasField("concat_dim") else param.axis
        axis = axis + ndim if axis < 0 else axis
        if ndim == 2 and axis == 1:
            coord_axis = 1
        elif ndim == 4 and axis in (1, 2, 3):
            coord_axis = axis
        else:
            raise ToolkitError(f"layer '{layer.name}': Concat along axis {axis} of "
                               f"{ndim}-D blobs has no fixation rule (batch items never mix)")
        sizes = [self._bottom_data(layer, b).shape[axis] for b in range(len(layer.bottoms))]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        coords = [units.c, units.y, units.x][coord_axis - 1]
        owner = np.searchsorted(starts, coords, side="right") - 1
        out = []
        for b in range(len(layer.bottoms)):
            mine = owner == b
            part = units.take(mine)
            shifted = [part.c, part.y, part.x]
            shifted[coord_axis - 1] = shifted[coord_axis - 1] - starts[b]
            out.append((b, _Units(part.tag, *shifted)))
        return out

    def _crop(self, layer, t, units):
        """Crop: the unit shifted by the offsets into bottom 0."""
        param = layer.proto.crop_param
        ndim = len(self._bottom_data(layer, 0).shape)
        start = param.axis + ndim if param.axis < 0 else param.axis
        offsets = [0] * ndim
        for axis in range(start, ndim):
            if len(param.offset) == 1:
                offsets[axis] = int(param.offset[0])
            elif len(param.offset) > 1:
                offsets[axis] = int(param.offset[axis - start])
        if offsets[0]:
            raise ToolkitError(f"layer '{layer.name}': Crop with an offset on the batch axis "
                               "has no fixation rule")
        if ndim != 4:
            raise ToolkitError(f"layer '{layer.name}': Crop of {ndim}-D blobs has no fixation "
                               "rule (only N x C x H x W)")
        return [(0, _Units(units.tag, units.c + offsets[1], units.y + offsets[2],
                           units.x + offsets[3]))]

    def _flatten(self, layer, t, units):
        """Flatten: the flat index back to (c, y, x) of the input."""
        shape = _shape3(self._bottom_data(layer, 0).shape)
        return [(0, _Units(units.tag, *_unravel(units.c, shape)))]

    def _interp(self, layer, t, units):
        """Interp / Zoom: the top-K bilinear source cells by ``weight * value``."""
        X = self._bottom_data(layer, 0)
        H, W = X.shape[2:]
        top_h, top_w = self._top_shape(layer, t)[2:]
        virtual_h, virtual_w = top_h, top_w
        if layer.type == "Python":
            factor = _zoom_factor(layer)
            if factor is not None:
                virtual_h, virtual_w = H + (H - 1) * (factor - 1), W + (W - 1) * (factor - 1)
        resolution_k = max(1, round(H / top_h)) * max(1, round(W / top_w))
        spec = self._k_spec(layer, resolution_k)
        y0, y1, wy0, wy1 = _bilinear_sources(units.y, H, virtual_h)
        x0, x1, wx0, wx1 = _bilinear_sources(units.x, W, virtual_w)
        cand_y = np.stack([y0, y0, y1, y1], axis=1)
        cand_x = np.stack([x0, x1, x0, x1], axis=1)
        weight = np.stack([wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1], axis=1)
        item = self._item_of_tag[units.tag]
        values = weight * X[item[:, None], units.c[:, None], cand_y, cand_x].astype(np.float64)
        values[weight == 0] = -np.inf
        rows, cols = self._choose(layer, values, spec)
        return [(0, _Units(units.tag[rows], units.c[rows], cand_y[rows, cols],
                           cand_x[rows, cols]))]


def _zoom_factor(layer):
    """``factor`` from a Zoom layer's JSON param_str (None when absent)."""
    text = layer.proto.python_param.param_str
    try:
        params = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return None
    factor = params.get("factor") if isinstance(params, dict) else None
    return int(factor) if isinstance(factor, int) and factor >= 1 else None


def _bilinear_sources(out_coord, size_in, size_virtual):
    """Align-corners bilinear sources of output coordinates: (low, high, w_low, w_high)
    with exact rational weights (``src = out * (in-1) / (virtual-1)``)."""
    if size_virtual <= 1 or size_in <= 1:
        low = np.zeros_like(out_coord)
        return low, low, np.ones(out_coord.shape), np.zeros(out_coord.shape)
    numerator = out_coord * (size_in - 1)
    low, rest = np.divmod(numerator, size_virtual - 1)
    low = np.minimum(low, size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    w_high = rest / (size_virtual - 1)
    return low, high, 1.0 - w_high, w_high


def _tap_major_weights(weights, deconv, group):
    """(de)convolution weights as (C_out, kh, kw, C_in/group) float32, so that one output
    channel's taps are rows of contiguous input-channel vectors.

    Convolution weights are (C_out, C_in/g, kh, kw); Deconvolution weights are
    (C_in, C_out/g, kh, kw), where output channel z of group g reads input channels
    g*C_in/g ... through W[c', z - g*C_out/g].
    """
    if deconv:
        c_in, og, kh, kw = weights.shape
        cg = c_in // group
        table = weights.reshape(group, cg, og, kh, kw).transpose(0, 2, 3, 4, 1)
        return np.ascontiguousarray(table.reshape(group * og, kh, kw, cg))
    return np.ascontiguousarray(weights.transpose(0, 2, 3, 1))


def _pixel_major(maps):
    """(C, H, W) float32 -> (H*W + 1, C) with a zero last row (the cell for taps outside)."""
    channels = maps.shape[0]
    flat = np.ascontiguousarray(maps, np.float32).reshape(channels, -1)
    out = np.empty((flat.shape[1] + 1, channels), np.float32)
    out[-1] = 0
    if cv2 is not None and flat.shape[1] < 2 ** 31:
        cv2.transpose(flat, dst=out[:-1])    # a blocked transpose, 2-3x faster than NumPy's
    else:
        out[:-1] = flat.T
    return out


def _partition(item, group):
    """[((item, group), row indices)] of the units in each (batch item, conv group)."""
    if len(item) == 0:
        return []
    key = item * (int(group.max()) + 1) + group
    if key.min() == key.max():
        return [((int(item[0]), int(group[0])), np.arange(len(key)))]
    order = np.argsort(key, kind="stable")
    _, starts = np.unique(key[order], return_index=True)
    ends = np.append(starts[1:], len(key))
    return [((int(item[order[a]]), int(group[order[a]])), order[a:b])
            for a, b in zip(starts, ends)]


def _axis_taps(out, kernel, stride, pad, dilation, size, deconv):
    """Candidate taps of output coordinates ``out`` along one axis: (tap index, input
    coordinate, inside the input), each (U, m).

    Convolution: every tap, input ``out*stride - pad + tap*dilation``. Deconvolution: input
    ``(out + pad - tap*dilation) / stride`` where that divides; with dilation 1 only the
    taps ``(out + pad) mod stride + stride*m`` can divide, so only those are listed.
    """
    if not deconv:
        taps = np.broadcast_to(np.arange(kernel), (len(out), kernel))
        coord = out[:, None] * stride - pad + taps * dilation
        return taps, coord, (coord >= 0) & (coord < size)
    if dilation == 1 and stride > 1:
        taps = (out[:, None] + pad) % stride + stride * np.arange(-(-kernel // stride))
    else:
        taps = np.broadcast_to(np.arange(kernel), (len(out), kernel))
    numerator = out[:, None] + pad - taps * dilation
    coord = numerator // stride
    inside = (taps < kernel) & (numerator % stride == 0) & (coord >= 0) & (coord < size)
    return taps, coord, inside


def _nearest_valid(taps, valid, centre):
    """Per row, the candidate (column) whose tap index is nearest to ``centre`` among those
    inside the input (ties: the lower tap index)."""
    distance = np.where(valid, np.abs(taps - centre), np.iinfo(np.int64).max)
    return np.argmin(distance, axis=1)


def _unravel(flat_index, shape):
    """(c, y, x) of flat indices into a (C, H, W) blob."""
    c, rest = np.divmod(flat_index, shape[1] * shape[2])
    y, x = np.divmod(rest, shape[2])
    return c, y, x


def _concat_units(parts):
    if not parts:
        empty = np.zeros(0, np.int64)
        return _Units(empty, empty, empty, empty)
    if len(parts) == 1:
        return parts[0]
    return _Units(*(np.concatenate([getattr(p, f) for p in parts])
                    for f in ("tag", "c", "y", "x")))


# ----------------------------------------------------------------------------- experiment 3

DEFAULT_FRACTIONS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 10))   # 0.1 ... 0.9


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
    tracker._collector = collector
    try:
        tracker.trace_items(score_blob, list(items), classes, skip_background,
                            seed_region=seed_region)
    finally:
        tracker._collector = None
    means = collector.means()
    if return_counts:
        return means, OrderedDict(collector.counts)
    return means
