"""The vectorised fixation engine against a slow reference back-tracker.

The reference below is written for clarity from SPEC section 4's rules: plain Python loops
per unit, per candidate and per tap, its own reading of the layer parameters, one class at
a time, never calling the engine. On random small nets (random conv/pool geometry with
stride, padding, dilation and groups, separate height/width kernels, strides and pads,
global pooling, Eltwise SUM/MAX/PROD, Concat, Deconvolution + Crop, the Zoom Python layer
and a down-sampling bilinear layer, Flatten + InnerProduct with and without ``transpose``)
and on DeepLab-LargeFOV at reduced width, the engine must give exactly the same unit set in
every blob and the same dead units per layer, for every K strategy and shift variant, also
when the unit budget makes it compact its pending units.

Dead units (SPEC section 4): a unit none of whose inputs contributes stops there and is
counted: every contribution exactly 0 where the rule ranks contributions (Convolution,
InnerProduct, Eltwise SUM, bilinear), no positive value where it ranks values (Pooling,
Eltwise PROD and MAX). The reference checks that every other unit continues, so every traced
path ends at a dead unit or at the data blob.

Random float weights make ties between non-zero contributions measure-zero; exact ties
(zeros after ReLU, zero-weight candidates) are broken the same way in both: descending value,
then ascending candidate index.
"""
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest

from pixelfeedback.fixations import BackTracker, NetGraph, k_needed_per_layer

CLASSES = 4


# ----------------------------------------------------------------------------- reference

def pair(repeated, h_field, w_field, default):
    """(height, width) of a Caffe geometry field: ``*_h``/``*_w`` when set, else the repeated
    field's one value for both axes (or its two values), else ``default``."""
    if h_field is not None:
        return int(h_field), int(w_field)
    values = [int(v) for v in repeated]
    if not values:
        return default, default
    return (values[0], values[-1])


def conv_params(proto):
    """((kh, kw), (sh, sw), (ph, pw), dilation, group) of a convolution."""
    p = proto.convolution_param
    has = p.HasField
    kernel = pair(p.kernel_size, p.kernel_h if has("kernel_h") else None, p.kernel_w, None)
    stride = pair(p.stride, p.stride_h if has("stride_h") else None, p.stride_w, 1)
    pad = pair(p.pad, p.pad_h if has("pad_h") else None, p.pad_w, 0)
    dilation = int(p.dilation[0]) if len(p.dilation) else 1
    return kernel, stride, pad, dilation, int(p.group)


def pool_params(proto, height, width):
    """((kh, kw), (sh, sw), (ph, pw)) of a pooling over a (height, width) map."""
    p = proto.pooling_param
    if p.global_pooling:
        return (height, width), (1, 1), (0, 0)
    has = p.HasField
    kernel = ((p.kernel_h, p.kernel_w) if has("kernel_h") else (p.kernel_size, p.kernel_size))
    stride = ((p.stride_h, p.stride_w) if has("stride_h") else (p.stride, p.stride))
    pad = (p.pad_h, p.pad_w) if has("pad_h") else (p.pad, p.pad)
    return tuple(map(int, kernel)), tuple(map(int, stride)), tuple(map(int, pad))


def is_dead(candidates, ranks):
    """SPEC section 4's dead unit: no candidate, or ``ranks`` "contributions": every
    contribution exactly 0; "values": no positive value."""
    if ranks == "values":
        return not any(value > 0 for value, *_ in candidates)
    return all(value == 0 for value, *_ in candidates)


def rank(candidates, mode, value):
    """The chosen candidates: sort by (-value, index), then keep K or reach the fraction."""
    order = sorted(candidates, key=lambda cand: (-cand[0], cand[1]))
    if not order:
        return []
    if mode == "fixed":
        return order[:min(value, len(order))]
    total = 0.0
    for cand in order:
        if cand[0] > 0:
            total += cand[0]
    running = 0.0
    for count, cand in enumerate(order, start=1):
        running += max(cand[0], 0.0)
        if running >= value * total:
            return order[:count]
    return order


def nearest_valid(valid, centre):
    """Index of the valid entry nearest ``centre`` (ties: the lower index)."""
    best = None
    for index, ok in enumerate(valid):
        if ok and (best is None or abs(index - centre) < abs(best - centre)):
            best = index
    return best


class Reference:
    """One-class-at-a-time back-tracker with explicit loops (see the module docstring).

    After ``trace``: ``dead[cls]`` = {layer: units stopped there}, ``dead_seeds[cls]``."""

    def __init__(self, net, graph, shift, k_text, ip_rule="topk"):
        self.net, self.graph, self.shift, self.ip_rule = net, graph, shift, ip_rule
        self.k_text = k_text
        self.dead, self.dead_seeds = {}, {}

    def k_for(self, layer, resolution):
        """("fixed", K) or ("fraction", x) from the K text (its own small parser)."""
        text = self.k_text
        if "=" in text:
            table = dict(part.split("=") for part in text.split(","))
            text = table.get(layer.name, table.get("default", "1"))
        if text == "resolution":
            return ("fixed", resolution)
        if text.startswith("fraction:"):
            return ("fraction", float(text.split(":")[1]))
        return ("fixed", int(text))

    def bottom(self, layer, b, item):
        return self.net.blobs[self.net.bottom_names[layer.name][b]].data[item]

    def trace(self, score, item, skip_background=True):
        """{class: {blob name: set of (c, y, x)}} for every predicted class (but 0)."""
        scores = self.net.blobs[score].data[item]
        if scores.ndim == 1:
            scores = scores[:, None, None]
        result = {}
        predicted = set(np.argmax(scores, axis=0).ravel().tolist())
        for cls in sorted(predicted - {0} if skip_background else predicted):
            fix = defaultdict(set)
            dead = defaultdict(int)
            self.dead_seeds[cls] = 0
            node = (score, self.graph.versions[score] - 1)
            for y in range(scores.shape[1]):
                for x in range(scores.shape[2]):
                    if int(np.argmax(scores[:, y, x])) == cls:
                        fix[node].add((cls, y, x))
            walked = set()
            for layer in reversed(self.graph.layers):
                if not layer.bottoms:
                    continue
                for t, top in enumerate(layer.top_nodes):
                    walked.add(top)
                    for unit in sorted(fix.get(top, ())):
                        targets = self.step(layer, unit, item)
                        if targets is None:     # dead: stops here, counted
                            dead[layer.name] += 1
                            self.dead_seeds[cls] += layer.tops[t] == score
                            continue
                        assert targets, (layer.name, unit)   # a live unit always continues
                        for b, target in targets:
                            fix[layer.bottom_nodes[b]].add(target)
            # Every path ends at a dead unit or at the data blob, the only blob not walked.
            assert {node for node, units in fix.items() if units} - walked <= {("data", 0)}
            blobs = defaultdict(set)
            for (name, _), units in fix.items():
                blobs[name] |= units
            result[cls] = {name: units for name, units in blobs.items() if units}
            self.dead[cls] = dict(dead)
        return result

    def step(self, layer, unit, item):
        """[(bottom index, unit below)] for one unit of the layer's top; None: dead."""
        kind = layer.type
        if kind == "Python":
            kind = "Bilinear"
        if kind in ("ReLU", "Dropout", "Split", "LRN", "BatchNorm", "Scale") or (
                layer.tops == layer.bottoms and len(layer.bottoms) == 1):
            return [(0, unit)]
        if kind in ("Convolution", "Deconvolution"):
            return self.conv(layer, unit, item, kind == "Deconvolution")
        return getattr(self, kind.lower())(layer, unit, item)

    def choose(self, layer, candidates, resolution, ranks="contributions"):
        """The chosen candidates' targets, or None when the unit is dead."""
        if not candidates or is_dead(candidates, ranks):
            return None
        return rank(candidates, *self.k_for(layer, resolution))

    def conv(self, layer, unit, item, deconv):
        X = self.bottom(layer, 0, item)
        W = self.net.params[layer.name][0].data
        (kh, kw), (sh, sw), (ph, pw), d, group = conv_params(layer.proto)
        c_in, height, width = X.shape
        c_out = self.net.blobs[layer.tops[0]].data.shape[1]
        in_group, out_group = c_in // group, c_out // group
        z, y, x = unit
        g = z // out_group

        def source(out, tap, size, s, p):   # input index of a tap, or None when outside
            if deconv:
                num = out + p - tap * d
                return num // s if num % s == 0 and 0 <= num // s < size else None
            pos = out * s - p + tap * d
            return pos if 0 <= pos < size else None

        rows = [source(y, i, height, sh, ph) for i in range(kh)]
        cols = [source(x, j, width, sw, pw) for j in range(kw)]
        if all(r is None for r in rows) or all(c is None for c in cols):
            return None    # the window lies wholly in the padding: no input contributes
        taps_i = [i for i in range(kh) if rows[i] is not None]   # taps inside the input,
        taps_j = [j for j in range(kw) if cols[j] is not None]   # in row-major order
        candidates = []
        for local in range(in_group):
            channel = g * in_group + local
            total, best_tap, best_value = 0.0, None, None
            for i in taps_i:
                for j in taps_j:
                    w = W[channel, z - g * out_group, i, j] if deconv else W[z, local, i, j]
                    value = float(w) * float(X[channel, rows[i], cols[j]])
                    total += value
                    if best_value is None or value > best_value:
                        best_tap, best_value = (i, j), value
            candidates.append((total, local, (channel, best_tap)))
        resolution = 1 if deconv else sh * sw
        full = self.shift == "full" or (self.shift == "partial" and d == 1)
        chosen = self.choose(layer, candidates, resolution)
        if chosen is None:
            return None
        out = []
        for _, _, (channel, tap) in chosen:
            if full:
                i, j = tap
            else:
                i = nearest_valid([r is not None for r in rows], (kh - 1) // 2)
                j = nearest_valid([c is not None for c in cols], (kw - 1) // 2)
            out.append((0, (channel, rows[i], cols[j])))
        return out

    def pooling(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        (kh, kw), (sh, sw), (ph, pw) = pool_params(layer.proto, *X.shape[1:])
        c, y, x = unit
        candidates = []
        for i in range(kh):
            for j in range(kw):
                row, col = y * sh - ph + i, x * sw - pw + j
                if 0 <= row < X.shape[1] and 0 <= col < X.shape[2]:
                    candidates.append((float(X[c, row, col]), i * kw + j, (c, row, col)))
        chosen = self.choose(layer, candidates, kh * kw if layer.proto.pooling_param
                             .global_pooling else sh * sw, "values")
        return None if chosen is None else [(0, target) for _, _, target in chosen]

    def innerproduct(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        shape = X.shape if X.ndim == 3 else (X.shape[0], 1, 1)
        flat = X.reshape(-1)
        W = self.net.params[layer.name][0].data
        transpose = layer.proto.inner_product_param.transpose   # W is (inputs, outputs)
        candidates = []
        for f in range(flat.size):
            c, rest = divmod(f, shape[1] * shape[2])
            weight = W[f, unit[0]] if transpose else W[unit[0], f]
            candidates.append((float(weight) * float(flat[f]), f,
                               (c, rest // shape[2], rest % shape[2])))
        if is_dead(candidates, "contributions"):
            return None
        if self.ip_rule == "positive":
            chosen = [cand for cand in candidates if cand[0] > 0] or rank(candidates, "fixed", 1)
        else:
            chosen = rank(candidates, *self.k_for(layer, 1))
        return [(0, target) for _, _, target in chosen]

    def flatten(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        c, rest = divmod(unit[0], X.shape[1] * X.shape[2])
        return [(0, (c, rest // X.shape[2], rest % X.shape[2]))]

    def eltwise(self, layer, unit, item):
        p = layer.proto.eltwise_param
        coeffs = list(p.coeff) or [1.0] * len(layer.bottoms)
        ranks = "contributions"
        if p.operation != 1:    # PROD (0) and MAX (2) rank the plain values
            coeffs, ranks = [1.0] * len(layer.bottoms), "values"
        candidates = [(float(coeffs[b]) * float(self.bottom(layer, b, item)[unit]), b, b)
                      for b in range(len(layer.bottoms))]
        chosen = self.choose(layer, candidates, 1, ranks)
        return None if chosen is None else [(b, unit) for _, _, b in chosen]

    def concat(self, layer, unit, item):
        c, y, x = unit
        for b in range(len(layer.bottoms)):
            channels = self.bottom(layer, b, item).shape[0]
            if c < channels:
                return [(b, (c, y, x))]
            c -= channels

    def crop(self, layer, unit, item):
        offset = int(layer.proto.crop_param.offset[0])
        c, y, x = unit
        return [(0, (c, y + offset, x + offset))]

    def bilinear(self, layer, unit, item):
        """The Zoom layer and the test's down-sampling layer: align-corners bilinear from the
        bottom's size to the top's; resolution K = the rounded size ratio per axis."""
        X = self.bottom(layer, 0, item)
        top = self.net.blobs[layer.tops[0]].data.shape[2:]
        c, y, x = unit

        def sources(out, size, out_size):   # [(index, weight)] of align-corners interpolation
            if out_size == 1 or size == 1:
                return [(0, 1.0), (0, 0.0)]
            position = Fraction(out * (size - 1), out_size - 1)
            low = int(position)
            frac = float(position - low)
            return [(low, 1.0 - frac), (min(low + 1, size - 1), frac)]

        candidates = []
        for a, (row, wy) in enumerate(sources(y, X.shape[1], top[0])):
            for b, (col, wx) in enumerate(sources(x, X.shape[2], top[1])):
                weight = wy * wx
                if weight != 0:
                    candidates.append((weight * float(X[c, row, col]), 2 * a + b, (c, row, col)))
        resolution = (max(1, round(X.shape[1] / top[0])) * max(1, round(X.shape[2] / top[1])))
        chosen = self.choose(layer, candidates, resolution)
        return None if chosen is None else [(0, target) for _, _, target in chosen]


# ----------------------------------------------------------------------------- random nets

def conv_out(size, k, s, p, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def pool_out(size, k, s, p):
    pooled = -(-(size + 2 * p - k) // s) + 1
    if p and (pooled - 1) * s >= size + p:
        pooled -= 1
    return pooled


def L(name, kind, bottoms, tops=None, params=""):
    bottoms = "".join(f' bottom: "{b}"' for b in bottoms)
    tops = "".join(f' top: "{t}"' for t in (tops or [name]))
    return f'layer {{ name: "{name}" type: "{kind}"{bottoms}{tops} {params} }}\n'


def conv(name, bottom, out, k, s=1, p=0, d=1, g=1, kind="Convolution"):
    return L(name, kind, [bottom], params=f"convolution_param {{ num_output: {out} "
             f"kernel_size: {k} stride: {s} pad: {p} dilation: {d} group: {g} }}")


def relu(name, blob):
    return L(name, "ReLU", [blob], [blob])


def pool(name, bottom, method, k, s, p):
    return L(name, "Pooling", [bottom], params=f"pooling_param {{ pool: {method} "
             f"kernel_size: {k} stride: {s} pad: {p} }}")


def data_layer(size, channels=3, batch=2):
    """Input 'data' of (batch, channels, size[0], size[1]) (an int: square)."""
    height, width = (size, size) if np.isscalar(size) else size
    return (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ '
            f"dim: {batch} dim: {channels} dim: {height} dim: {width} }} }} }}\n")


def chain_net(rs):
    """conv (random stride/pad/dilation) -> pool -> grouped dilated conv -> pool -> score."""
    while True:
        size = rs.randint(11, 18, size=2)
        k1, s1, d1 = rs.choice([1, 2, 3]), rs.choice([1, 2]), rs.choice([1, 2])
        p1 = rs.randint(0, d1 * (k1 - 1) // 2 + 2)
        pk, ps = rs.choice([2, 3]), rs.choice([1, 2])
        pp = rs.randint(0, pk)
        k2, d2, g2 = 3, rs.choice([1, 2, 3]), rs.choice([1, 2, 3])
        p2 = rs.randint(0, d2 + 1)
        h = conv_out(min(size), k1, s1, p1, d1)
        h = pool_out(h, pk, ps, pp) if h >= 1 else 0
        h = conv_out(h, k2, 1, p2, d2) if h >= 1 else 0
        if h >= 3:
            break
    text = (data_layer(size) + conv("conv1", "data", 6, k1, s1, p1, d1) + relu("relu1", "conv1")
            + pool("pool1", "conv1", rs.choice(["MAX", "AVE"]), pk, ps, pp)
            + conv("conv2", "pool1", 6, k2, 1, p2, d2, g2) + relu("relu2", "conv2")
            + pool("pool2", "conv2", "AVE", 3, 1, 1)
            + conv("score", "pool2", CLASSES, 3, p=1))
    return text, "score"


def branch_net(rs):
    """Two convolutions summed (random coeffs), a conv/pool pair concatenated, an Eltwise
    MAX of a grouped and a 1x1 convolution."""
    size = rs.randint(9, 14, size=2)
    coeffs = rs.uniform(-1.5, 1.5, size=2).round(2)
    text = (data_layer(size) + conv("conv1", "data", 6, 3, p=1) + relu("relu1", "conv1")
            + conv("a", "conv1", 6, 3, p=1) + conv("b", "conv1", 6, 3, p=2, d=2)
            + L("sum", "Eltwise", ["a", "b"], params=f"eltwise_param {{ operation: SUM "
                f"coeff: {coeffs[0]} coeff: {coeffs[1]} }}")
            + relu("relu_sum", "sum")
            + conv("c", "sum", 3, 1) + pool("d", "sum", "MAX", 3, 1, 1)
            + L("cat", "Concat", ["c", "d"])
            + conv("e", "cat", 6, 3, p=1, g=3) + conv("f", "cat", 6, 1)
            + L("max", "Eltwise", ["e", "f"], params="eltwise_param { operation: MAX }")
            + conv("score", "max", CLASSES, 3, p=1))
    return text, "score"


def upsample_net(rs):
    """Strided conv and pool, Deconvolution (grouped or not) + Crop, Zoom x2, score."""
    size = rs.randint(12, 20, size=2)
    h1 = conv_out(size, 3, 2, 1, 1)
    h2 = np.array([pool_out(h, 3, 2, 1) for h in h1])
    group = rs.choice([1, 4])
    up = (h2 - 1) * 2 + 4
    offset = rs.randint(0, min(up - h1) + 1)
    text = (data_layer(size) + conv("conv1", "data", 4, 3, 2, 1) + relu("relu1", "conv1")
            + pool("pool1", "conv1", "MAX", 3, 2, 1)
            + conv("small", "pool1", 4, 3, p=1) + relu("relu_small", "small")
            + conv("up", "small", 4, 4, 2, 0, 1, group, kind="Deconvolution")
            + L("crop", "Crop", ["up", "conv1"],
                params=f"crop_param {{ axis: 2 offset: {offset} }}")
            + L("zoom", "Python", ["crop"], params='python_param { module: "python_layers.interp" '
                'layer: "Zoom" param_str: "{\\"factor\\": 2}" }')
            + conv("score", "zoom", CLASSES, 3, p=1))
    return text, "score"


def classifier_net(rs):
    """conv -> pool -> Flatten -> InnerProduct -> ReLU -> InnerProduct scores (N, classes)."""
    size = rs.randint(8, 12, size=2)
    text = (data_layer(size) + conv("conv1", "data", 4, 3, 2, 1) + relu("relu1", "conv1")
            + pool("pool1", "conv1", "MAX", 2, 2, 0) + L("flat", "Flatten", ["pool1"])
            + L("fc1", "InnerProduct", ["flat"], params="inner_product_param { num_output: 8 }")
            + relu("relu_fc1", "fc1")
            + L("score", "InnerProduct", ["fc1"],
                params=f"inner_product_param {{ num_output: {CLASSES} }}"))
    return text, "score"


SHRINK_RULES = {("tests.shrink_layer", "Shrink"): "interp"}


def rect_net(rs):
    """Separate height/width kernels, strides and pads in a convolution and a pooling, an
    Eltwise PROD, and a bilinear down-sampling (tests/shrink_layer.py) before the score."""
    while True:
        size = rs.randint(12, 19, size=2)
        h = conv_out(size[0], 3, 2, 1, 1), conv_out(size[1], 2, 1, 0, 1)
        h = pool_out(h[0], 2, 1, 0), pool_out(h[1], 3, 2, 1)
        if min(h) >= 4:
            break
    small = [max(2, v // 2 + rs.randint(0, 2)) for v in h]
    text = (data_layer(size)
            + L("conv1", "Convolution", ["data"], params="convolution_param { num_output: 6 "
                "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }")
            + relu("relu1", "conv1")
            + L("pool1", "Pooling", ["conv1"], params="pooling_param { pool: MAX kernel_h: 2 "
                "kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 0 pad_w: 1 }")
            + conv("a", "pool1", 4, 3, p=1) + conv("b", "pool1", 4, 1)
            + L("prod", "Eltwise", ["a", "b"], params="eltwise_param { operation: PROD }")
            + L("shrink", "Python", ["prod"], params='python_param { module: '
                '"tests.shrink_layer" layer: "Shrink" param_str: '
                f'"{{\\"height\\": {small[0]}, \\"width\\": {small[1]}}}" }}')
            + conv("score", "shrink", CLASSES, 3, p=1))
    return text, "score"


def global_net(rs):
    """conv -> global pooling (MAX or AVE) -> InnerProduct with ``transpose`` -> ReLU ->
    transposed InnerProduct scores (N, classes)."""
    size = rs.randint(6, 10, size=2)
    method = rs.choice(["MAX", "AVE"])
    text = (data_layer(size) + conv("conv1", "data", 8, 3, 1, 1) + relu("relu1", "conv1")
            + L("gpool", "Pooling", ["conv1"],
                params=f"pooling_param {{ pool: {method} global_pooling: true }}")
            + L("fc1", "InnerProduct", ["gpool"],
                params="inner_product_param { num_output: 6 transpose: true }")
            + relu("relu_fc1", "fc1")
            + L("score", "InnerProduct", ["fc1"],
                params=f"inner_product_param {{ num_output: {CLASSES} transpose: true }}"))
    return text, "score"


def fan_net(rs):
    """A two-channel map read by six 1x1 convolutions, summed: with K = 6 at the sum every
    unit goes down all six branches, so the map's pending units come from six layers at
    once and overlap (what the budget compacts)."""
    size = rs.randint(8, 12, size=2)
    branches = "".join(conv(f"b{i}", "conv1", 2, 1) for i in range(6))
    text = (data_layer(size) + conv("conv1", "data", 2, 3, p=1) + relu("relu1", "conv1")
            + branches + L("sum", "Eltwise", [f"b{i}" for i in range(6)],
                           params="eltwise_param { operation: SUM }")
            + conv("score", "sum", CLASSES, 3, p=1))
    return text, "score"


NETS = {"chain": chain_net, "branch": branch_net, "upsample": upsample_net,
        "classifier": classifier_net, "rect": rect_net, "global": global_net,
        "fan": fan_net}


def make_net(caffe, tmp_dir, kind, seed):
    """A random net of ``kind`` with random weights and input, forwarded. Item 1's input is
    zero in its top-left quarter, so windows there have only zero contributions (dead)."""
    rs = np.random.RandomState(seed)
    text, score = NETS[kind](rs)
    path = tmp_dir / f"{kind}_{seed}.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    for params in net.params.values():
        for param in params:
            param.data[...] = rs.normal(0, 1, param.data.shape)
    data = net.blobs["data"].data
    data[...] = rs.normal(0, 1, data.shape)
    data[1, :, :data.shape[2] // 2, :data.shape[3] // 2] = 0
    net.forward()
    return net, NetGraph.from_prototxt(str(path)), score


@pytest.fixture(scope="module")
def nets(caffe, tmp_path_factory):
    cache = {}

    def get(kind, seed):
        if (kind, seed) not in cache:
            cache[kind, seed] = make_net(caffe, tmp_path_factory.mktemp("nets"), kind, seed)
        return cache[kind, seed]
    return get


def engine_trace(net, graph, score, shift, k, skip_background=True, tracker=None,
                 **options):
    """{item: {class: ClassFixations}} from the vectorised engine (all blobs kept)."""
    tracker = tracker or BackTracker(net, graph, shift=shift, k=k, **options)
    return tracker.trace_items(score, keep_layers=True, skip_background=skip_background)


def engine_sets(net, graph, score, shift, k, skip_background=True, **options):
    """{item: {class: {blob: set}}} from the vectorised engine."""
    traced = engine_trace(net, graph, score, shift, k, skip_background, **options)
    return {item: {cls: unit_sets(result) for cls, result in classes.items()}
            for item, classes in traced.items()}


def unit_sets(result):
    """{blob: set of (c, y, x)} of one ClassFixations (empty blobs left out)."""
    return {blob: set(map(tuple, units.tolist())) for blob, units in result.layers.items()
            if len(units)}


def assert_same(net, graph, score, shift, k, skip_background=True, tracker=None, **options):
    """Engine == reference in every blob and in the dead units per layer, for every item
    and class; every class not wholly dead reaches the data blob. Returns (units compared
    below the seeds, dead units)."""
    traced = engine_trace(net, graph, score, shift, k, skip_background, tracker, **options)
    reference = Reference(net, graph, shift, k, options.get("ip_rule", "topk"))
    compared = dead = 0
    for item in range(net.blobs["data"].data.shape[0]):
        expected = reference.trace(score, item, skip_background)
        assert sorted(traced[item]) == sorted(expected)
        for cls, blobs in expected.items():
            result = traced[item][cls]
            engine = unit_sets(result)
            assert sorted(engine) == sorted(blobs), (item, cls)
            for blob, units in blobs.items():
                assert engine[blob] == units, (item, cls, blob)
                if blob != score:      # the seeds are given, not traced
                    compared += len(units)
            assert result.dead == reference.dead[cls], (item, cls)
            assert result.dead_seeds == reference.dead_seeds[cls], (item, cls)
            # every traced path reaches the image unless it stopped at a dead unit
            assert "data" in engine or result.dead, (item, cls)
            assert result.dead or len(result.points), (item, cls)
            dead += sum(result.dead.values())
    assert compared > 0
    return compared, dead


K_TEXTS = ["1", "2", "fraction:0.4", "resolution"]
PER_LAYER_K = {"chain": "conv1=2,pool1=3,default=1", "branch": "sum=2,d=3,default=1",
               "upsample": "pool1=3,zoom=2,default=resolution",
               "rect": "conv1=2,prod=2,shrink=resolution,default=1"}


@pytest.mark.parametrize("kind", ["chain", "branch", "upsample", "rect"])
@pytest.mark.parametrize("shift", ["none", "partial", "full"])
def test_engine_matches_reference_for_every_k(nets, kind, shift):
    dead = 0
    for seed in range(1, 7):
        net, graph, score = nets(kind, seed)
        for k in K_TEXTS + [PER_LAYER_K[kind]]:
            dead += assert_same(net, graph, score, shift, k, python_rules=SHRINK_RULES)[1]
    assert dead > 0     # the dead-unit rule was exercised, not only the ranking


def test_down_sampling_bilinear_takes_resolution_k(nets):
    # The rect net's shrink roughly halves each axis: resolution K = 4 bilinear sources
    # (fewer where weights are 0), so its bottom gets more units than under K = 1.
    net, graph, score = nets("rect", 2)
    sizes = {}
    for k in ("1", "shrink=resolution,default=1"):
        traced = engine_trace(net, graph, score, "full", k, python_rules=SHRINK_RULES)
        sizes[k] = sum(len(r.layers["prod"]) for r in traced[0].values())
    assert sizes["shrink=resolution,default=1"] > sizes["1"]


@pytest.mark.parametrize("ip_rule", ["topk", "positive"])
def test_engine_matches_reference_on_classifier(nets, ip_rule):
    for kind in ("classifier", "global"):
        for seed in (1, 2, 3):
            net, graph, score = nets(kind, seed)
            for k in ("1", "3", "fraction:0.3", "resolution"):
                assert_same(net, graph, score, "partial", k, skip_background=False,
                            ip_rule=ip_rule)


def test_dead_units_of_every_rule_kind_are_compared(nets):
    # Over the random nets, the reference and the engine agree on dead units at
    # convolutions (every contribution 0), poolings (no positive value) and more.
    layers = defaultdict(int)
    for kind in ("chain", "branch", "upsample", "rect"):
        for seed in range(1, 7):
            net, graph, score = nets(kind, seed)
            for result in engine_trace(net, graph, score, "full", "2",
                                       python_rules=SHRINK_RULES)[1].values():
                for name, count in result.dead.items():
                    layers[graph.by_name[name].type] += count
    assert layers["Convolution"] > 0 and layers["Pooling"] > 0


def test_unit_budget_compaction_matches_reference(nets):
    # With max_units at the largest per-class blob, pending units are compacted on the way
    # (their sum over the 2 items x 4 classes passes 4 x max_units), also when several
    # layers' units wait for the same blob (the fan net's six readers of conv1), and the
    # result stays the reference's.
    merged = False
    for kind, seed, k in (("upsample", 1, "resolution"), ("fan", 1, "sum=6,default=1"),
                          ("fan", 2, "sum=6,default=1")):
        net, graph, score = nets(kind, seed)
        traced = engine_trace(net, graph, score, "full", k, False, python_rules=SHRINK_RULES)
        largest = max(len(units) for classes in traced.values() for r in classes.values()
                      for units in r.layers.values())
        tracker = BackTracker(net, graph, shift="full", k=k, max_units=largest,
                              python_rules=SHRINK_RULES)
        compactions = []
        collect = tracker._collect

        def spy(pending, feeders, node, n_tags, keep=False):
            compactions.append((keep, len(pending.get(node, ()))))
            return collect(pending, feeders, node, n_tags, keep)
        tracker._collect = spy
        assert_same(net, graph, score, "full", k, False, tracker=tracker)
        assert any(keep for keep, _ in compactions)
        merged |= any(keep and arrays > 1 for keep, arrays in compactions)
    assert merged      # some compaction merged the units of several layers


def test_engine_matches_reference_on_largefov(caffe, tmp_path):
    # The full DeepLab-LargeFOV topology (SPEC section 2) at 1/16 width: padded max pools,
    # the AVE pool5a, dilation-12 fc6, 1x1 fc7/fc8, in-place ReLU and Dropout.
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    from pixelfeedback.nets.weights import fill_random_weights

    path = tmp_path / "largefov.prototxt"
    write_net(largefov.deploy_net(width_div=16, num_classes=CLASSES, size=49), str(path))
    net = caffe.Net(str(path), caffe.TEST)
    fill_random_weights(net, seed=5)
    net.blobs["data"].data[...] = np.random.RandomState(5).normal(0, 40, (1, 3, 49, 49))
    net.forward()
    graph = NetGraph.from_prototxt(str(path))
    for shift, k in (("none", "1"), ("partial", "1"), ("full", "resolution"),
                     ("partial", "fraction:0.3")):
        assert_same(net, graph, "fc8_voc12", shift, k)


def test_chunking_does_not_change_the_result(nets):
    net, graph, score = nets("chain", 1)
    whole = engine_sets(net, graph, score, "full", "2")
    assert engine_sets(net, graph, score, "full", "2", chunk_elements=1) == whole


def test_k_needed_matches_reference_counts(nets):
    # The K needed per unit, recomputed with loops over the units the K=1 walk visits.
    net, graph, score = nets("chain", 1)
    fractions = [0.25, 0.5, 0.9]
    means, counts = k_needed_per_layer(BackTracker(net, graph, shift="partial", k=1), score,
                                       items=(0, 1), fractions=fractions, return_counts=True)
    reference = Reference(net, graph, "partial", "1")
    sums, visits = defaultdict(lambda: np.zeros(3)), defaultdict(int)
    for item in (0, 1):
        for blobs in reference.trace(score, item).values():
            for layer in graph.layers:
                if layer.type not in ("Convolution", "Pooling"):
                    continue
                for unit in blobs.get(layer.tops[0], ()):
                    values = needed_values(reference, layer, unit, item)
                    if not any(v > 0 for v in values):
                        continue
                    visits[layer.name] += 1
                    for f, x in enumerate(fractions):
                        sums[layer.name][f] += len(rank([(v, i, i) for i, v in enumerate(values)],
                                                        "fraction", x))
    assert set(means) == set(visits)
    for name in visits:
        assert counts[name] == visits[name]
        np.testing.assert_allclose(means[name], sums[name] / visits[name])


def needed_values(reference, layer, unit, item):
    """The candidate contributions of one unit, as the reference ranks them."""
    saved = reference.k_text
    reference.k_text = "fraction:1.0"   # keeps every positive candidate, in order
    try:
        if layer.type == "Pooling":
            X = reference.bottom(layer, 0, item)
            (k, _), (s, _), (p, _) = pool_params(layer.proto, *X.shape[1:])
            c, y, x = unit
            return [float(X[c, y * s - p + i, x * s - p + j]) for i in range(k) for j in range(k)
                    if 0 <= y * s - p + i < X.shape[1] and 0 <= x * s - p + j < X.shape[2]]
        X = reference.bottom(layer, 0, item)
        W = reference.net.params[layer.name][0].data
        (k, _), (s, _), (p, _), d, group = conv_params(layer.proto)
        z, y, x = unit
        c_out = reference.net.blobs[layer.tops[0]].data.shape[1]
        in_group = X.shape[0] // group
        g = z // (c_out // group)
        values = []
        for local in range(in_group):
            total = 0.0
            for i in range(k):
                for j in range(k):
                    row, col = y * s - p + i * d, x * s - p + j * d
                    if 0 <= row < X.shape[1] and 0 <= col < X.shape[2]:
                        total += float(W[z, local, i, j]) * float(X[g * in_group + local, row, col])
            values.append(total)
        return values
    finally:
        reference.k_text = saved


def test_float32_ranking_and_threads_change_nothing(nets):
    # The float32 pre-ranking (with its float64 fallback) and worker threads are speed-ups
    # only: the unit sets equal the plain float64, single-thread ones.
    for kind in ("chain", "branch", "upsample"):
        net, graph, score = nets(kind, 1)
        for k in ("1", "2", "resolution"):
            plain = BackTracker(net, graph, shift="full", k=k)
            plain.float32_ranking = False
            expected = plain.trace_items(score, keep_layers=True)
            threaded = BackTracker(net, graph, shift="full", k=k, threads=2, chunk_elements=500)
            got = threaded.trace_items(score, keep_layers=True)
            for item, classes in expected.items():
                for cls, result in classes.items():
                    for blob, units in result.layers.items():
                        np.testing.assert_array_equal(got[item][cls].layers[blob], units)


ZOO = [("fcn8s", {"width_div": 16, "size": 40}, "score"),
       ("fcn_alexnet", {"width_div": 16, "size": 40}, "score"),
       ("deeplabv2_resnet101", {"width_div": 16, "size": 33}, "fc1_voc12"),
       ("vgg16", {"width_div": 16, "size": 40, "num_classes": 10}, "fc8")]


@pytest.mark.parametrize("name,options,score", ZOO, ids=[z[0] for z in ZOO])
def test_engine_matches_reference_on_zoo_nets(caffe, tmp_path, name, options, score):
    # The published architectures the tools support (SPEC section 4), reduced in width and
    # size: FCN (Deconvolution, Crop, Eltwise, LRN), DeepLab v2 ResNet-101 (BatchNorm,
    # Scale, Eltwise, dilated ASPP branches summed) and VGG-16 (InnerProduct, Dropout).
    from pixelfeedback.nets import architectures
    from pixelfeedback.nets.netspec import write_net
    from pixelfeedback.nets.weights import fill_random_weights

    path = tmp_path / f"{name}.prototxt"
    write_net(getattr(architectures, name)(**options), str(path))
    net = caffe.Net(str(path), caffe.TEST)
    fill_random_weights(net, seed=3)
    shape = net.blobs["data"].data.shape
    net.blobs["data"].data[...] = np.random.RandomState(3).normal(0, 40, shape)
    net.forward()
    graph = NetGraph.from_prototxt(str(path))
    background = name != "vgg16"
    for shift, k in (("none", "1"), ("partial", "1"), ("full", "resolution"),
                     ("partial", "fraction:0.3"), ("full", "2")):
        assert_same(net, graph, score, shift, k, skip_background=background)
