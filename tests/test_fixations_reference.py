"""The vectorised fixation engine against a slow reference back-tracker.

The reference below is written for clarity: plain Python loops per unit, per candidate and
per tap, its own reading of the layer parameters, one class at a time. On random small nets
(random conv/pool geometry with stride, padding, dilation and groups, an Eltwise branch,
Concat, Deconvolution + Crop, the Zoom Python layer, Flatten + InnerProduct) the engine must
give exactly the same unit set in every blob, for every K strategy and shift variant.

Random float weights make ties between non-zero contributions measure-zero; exact ties
(zeros after ReLU, zero-weight candidates) are broken the same way in both: descending value,
then ascending candidate index.
"""
import json
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest

from pixelfeedback.fixations import BackTracker, NetGraph, k_needed_per_layer

CLASSES = 4


# ----------------------------------------------------------------------------- reference

def conv_params(proto):
    """(kernel, stride, pad, dilation, group) of the single-valued fields the nets use."""
    p = proto.convolution_param
    def first(values, default):
        return int(values[0]) if len(values) else default
    return (first(p.kernel_size, None), first(p.stride, 1), first(p.pad, 0),
            first(p.dilation, 1), int(p.group))


def pool_params(proto):
    p = proto.pooling_param
    return int(p.kernel_size), int(p.stride), int(p.pad)


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
    """One-class-at-a-time back-tracker with explicit loops (see the module docstring)."""

    def __init__(self, net, graph, shift, k_text, ip_rule="topk"):
        self.net, self.graph, self.shift, self.ip_rule = net, graph, shift, ip_rule
        self.k_text = k_text

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
            node = (score, self.graph.versions[score] - 1)
            for y in range(scores.shape[1]):
                for x in range(scores.shape[2]):
                    if int(np.argmax(scores[:, y, x])) == cls:
                        fix[node].add((cls, y, x))
            for layer in reversed(self.graph.layers):
                if not layer.bottoms:
                    continue
                for t, top in enumerate(layer.top_nodes):
                    for unit in sorted(fix.get(top, ())):
                        for b, target in self.step(layer, unit, item):
                            fix[layer.bottom_nodes[b]].add(target)
            blobs = defaultdict(set)
            for (name, _), units in fix.items():
                blobs[name] |= units
            result[cls] = {name: units for name, units in blobs.items() if units}
        return result

    def step(self, layer, unit, item):
        """[(bottom index, unit below)] for one unit of the layer's top."""
        kind = layer.type
        if kind == "Python":
            kind = "Zoom"
        if kind in ("ReLU", "Dropout", "Split", "LRN", "BatchNorm", "Scale") or (
                layer.tops == layer.bottoms and len(layer.bottoms) == 1):
            return [(0, unit)]
        if kind in ("Convolution", "Deconvolution"):
            return self.conv(layer, unit, item, kind == "Deconvolution")
        return getattr(self, kind.lower())(layer, unit, item)

    def conv(self, layer, unit, item, deconv):
        X = self.bottom(layer, 0, item)
        W = self.net.params[layer.name][0].data
        k, s, p, d, group = conv_params(layer.proto)
        c_in, height, width = X.shape
        c_out = self.net.blobs[layer.tops[0]].data.shape[1]
        in_group, out_group = c_in // group, c_out // group
        z, y, x = unit
        g = z // out_group

        def source(out, tap, size):   # input index of a tap, or None when outside
            if deconv:
                num = out + p - tap * d
                return num // s if num % s == 0 and 0 <= num // s < size else None
            pos = out * s - p + tap * d
            return pos if 0 <= pos < size else None

        rows = [source(y, i, height) for i in range(k)]
        cols = [source(x, j, width) for j in range(k)]
        if all(r is None for r in rows) or all(c is None for c in cols):
            return []
        taps_i = [i for i in range(k) if rows[i] is not None]   # taps inside the input,
        taps_j = [j for j in range(k) if cols[j] is not None]   # in row-major order
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
        resolution = 1 if deconv else s * s
        full = self.shift == "full" or (self.shift == "partial" and d == 1)
        out = []
        for _, _, (channel, tap) in rank(candidates, *self.k_for(layer, resolution)):
            if full:
                i, j = tap
            else:
                i = nearest_valid([r is not None for r in rows], (k - 1) // 2)
                j = nearest_valid([c is not None for c in cols], (k - 1) // 2)
            out.append((0, (channel, rows[i], cols[j])))
        return out

    def pooling(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        k, s, p = pool_params(layer.proto)
        c, y, x = unit
        candidates = []
        for i in range(k):
            for j in range(k):
                row, col = y * s - p + i, x * s - p + j
                if 0 <= row < X.shape[1] and 0 <= col < X.shape[2]:
                    candidates.append((float(X[c, row, col]), i * k + j, (c, row, col)))
        return [(0, target) for _, _, target in rank(candidates, *self.k_for(layer, s * s))]

    def innerproduct(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        shape = X.shape if X.ndim == 3 else (X.shape[0], 1, 1)
        flat = X.reshape(-1)
        W = self.net.params[layer.name][0].data
        candidates = []
        for f in range(flat.size):
            c, rest = divmod(f, shape[1] * shape[2])
            candidates.append((float(W[unit[0], f]) * float(flat[f]), f,
                               (c, rest // shape[2], rest % shape[2])))
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
        if p.operation != 1:    # PROD (0) and MAX (2) rank the plain values
            coeffs = [1.0] * len(layer.bottoms)
        candidates = [(float(coeffs[b]) * float(self.bottom(layer, b, item)[unit]), b, b)
                      for b in range(len(layer.bottoms))]
        return [(b, unit) for _, _, b in rank(candidates, *self.k_for(layer, 1))]

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

    def zoom(self, layer, unit, item):
        X = self.bottom(layer, 0, item)
        factor = json.loads(layer.proto.python_param.param_str)["factor"]
        c, y, x = unit

        def sources(out, size):   # [(index, weight)] of align-corners linear interpolation
            position = Fraction(out * (size - 1), (size - 1) * factor)
            low = int(position)
            frac = float(position - low)
            return [(low, 1.0 - frac), (min(low + 1, size - 1), frac)]

        candidates = []
        for a, (row, wy) in enumerate(sources(y, X.shape[1])):
            for b, (col, wx) in enumerate(sources(x, X.shape[2])):
                weight = wy * wx
                if weight != 0:
                    candidates.append((weight * float(X[c, row, col]), 2 * a + b, (c, row, col)))
        return [(0, target) for _, _, target in rank(candidates, *self.k_for(layer, 1))]


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


NETS = {"chain": chain_net, "branch": branch_net, "upsample": upsample_net,
        "classifier": classifier_net}


def make_net(caffe, tmp_dir, kind, seed):
    """A random net of ``kind`` with random weights and input, forwarded."""
    rs = np.random.RandomState(seed)
    text, score = NETS[kind](rs)
    path = tmp_dir / f"{kind}_{seed}.prototxt"
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    for params in net.params.values():
        for param in params:
            param.data[...] = rs.normal(0, 1, param.data.shape)
    net.blobs["data"].data[...] = rs.normal(0, 1, net.blobs["data"].data.shape)
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


def engine_sets(net, graph, score, shift, k, skip_background=True, **options):
    """{item: {class: {blob: set}}} from the vectorised engine."""
    tracker = BackTracker(net, graph, shift=shift, k=k, **options)
    traced = tracker.trace_items(score, keep_layers=True, skip_background=skip_background)
    return {item: {cls: {blob: set(map(tuple, units.tolist()))
                         for blob, units in result.layers.items() if len(units)}
                   for cls, result in classes.items()}
            for item, classes in traced.items()}


def assert_same(net, graph, score, shift, k, skip_background=True, **options):
    engine = engine_sets(net, graph, score, shift, k, skip_background, **options)
    reference = Reference(net, graph, shift, k, options.get("ip_rule", "topk"))
    compared = 0
    for item in range(net.blobs["data"].data.shape[0]):
        expected = reference.trace(score, item, skip_background)
        assert sorted(engine[item]) == sorted(expected)
        for cls, blobs in expected.items():
            assert sorted(engine[item][cls]) == sorted(blobs), (item, cls)
            for blob, units in blobs.items():
                assert engine[item][cls][blob] == units, (item, cls, blob)
                compared += len(units)
    assert compared > 0


K_TEXTS = ["1", "2", "fraction:0.4", "resolution"]
PER_LAYER_K = {"chain": "conv1=2,pool1=3,default=1", "branch": "sum=2,d=3,default=1",
               "upsample": "pool1=3,zoom=2,default=resolution"}


@pytest.mark.parametrize("kind", ["chain", "branch", "upsample"])
@pytest.mark.parametrize("shift", ["none", "partial", "full"])
def test_engine_matches_reference_for_every_k(nets, kind, shift):
    for seed in range(1, 7):
        net, graph, score = nets(kind, seed)
        for k in K_TEXTS + [PER_LAYER_K[kind]]:
            assert_same(net, graph, score, shift, k)


@pytest.mark.parametrize("ip_rule", ["topk", "positive"])
def test_engine_matches_reference_on_classifier(nets, ip_rule):
    for seed in (1, 2, 3):
        net, graph, score = nets("classifier", seed)
        for k in ("1", "3", "fraction:0.3"):
            assert_same(net, graph, score, "partial", k, skip_background=False,
                        ip_rule=ip_rule)


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
            k, s, p = pool_params(layer.proto)
            c, y, x = unit
            return [float(X[c, y * s - p + i, x * s - p + j]) for i in range(k) for j in range(k)
                    if 0 <= y * s - p + i < X.shape[1] and 0 <= x * s - p + j < X.shape[2]]
        X = reference.bottom(layer, 0, item)
        W = reference.net.params[layer.name][0].data
        k, s, p, d, group = conv_params(layer.proto)
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
