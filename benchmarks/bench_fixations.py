"""Speed of segmentation fixations (pixelfeedback.fixations) on full-size DeepLab-LargeFOV.

Builds the deploy net of pixelfeedback.nets.largefov (VGG-16 LargeFOV, 513 x 513 input, 21 classes) in
real Caffe with random He-normal weights and a random smooth image, then measures in one
run (each figure the best of --repeats):

  * the forward pass (net.forward());
  * back-tracking every class of the prediction (background included) from fc8_voc12 to
    the image with K = 1 and with the thesis's choice, partial shift + resolution K, as
    ratios to the forward pass (goals: <= 0.1 and <= 1);
  * the speed-up per fixation unit over a per-point implementation: a plain NumPy loop
    that back-tracks one unit at a time (same rules, dead units included, float64), timed
    on a sample of the units the engine visited in every Convolution and Pooling layer; its
    total is estimated as sum over layers of (units in the layer x mean time per unit
    there) and compared with the engine's whole trace time (goal >= 50x). The loop's
    outputs are checked against the engine's fixations.

Each configuration runs with the engine's worker threads limited to each of --threads
(default 1 and 2; the forward pass uses Caffe's OpenBLAS threads throughout), so the gain on
a bigger machine can be read off. The header says which gather the Convolution rule used:
the compiled one (numba, optional) or NumPy's (PIXELFEEDBACK_NO_NUMBA=1 forces it).

Random weights: the classes that appear depend on the seed; the amount of work does not
much (every fc8 position seeds one class). Timings are of one machine at one time; other
processes on the machine inflate them, so compare the ratios.
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np

from pixelfeedback import fixations
from python_layers import ToolkitError

SCORE_BLOB = "fc8_voc12"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Prints a table of times and ratios; takes about half a minute on 2 CPU cores.")
    parser.add_argument("--size", type=int, default=513, help="input side (default 513)")
    parser.add_argument("--width-div", type=int, default=1,
                        help="divide channel counts (default 1: the full net)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each timing; the best is reported (default 3)")
    parser.add_argument("--sample", type=int, default=60,
                        help="units per layer timed with the per-point loop (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="weights, image and sample seed")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="the engine's worker threads, each timed (default 1 and 2; the "
                             "per-point loop runs on one)")
    return parser.parse_args(argv)


def build_net(size, width_div, seed):
    """The LargeFOV deploy net with random He-normal weights and a smooth random image."""
    import caffe
    import cv2

    from pixelfeedback.nets import largefov

    caffe.set_mode_cpu()
    text = str(largefov.deploy_net(width_div=width_div, num_classes=21, size=size))
    handle, path = tempfile.mkstemp(suffix=".prototxt")
    with os.fdopen(handle, "w") as f:
        f.write(text)
    net = caffe.Net(path, caffe.TEST)
    rs = np.random.RandomState(seed)
    for params in net.params.values():
        weights = params[0].data
        fan_in = int(np.prod(weights.shape[1:]))
        weights[...] = rs.normal(0, np.sqrt(2.0 / fan_in), weights.shape)
        if len(params) > 1:
            params[1].data[...] = 0
    low = rs.uniform(-80, 80, (9, 9, 3)).astype(np.float32)
    image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    image += rs.normal(0, 10, image.shape).astype(np.float32)
    net.blobs["data"].data[0] = image.transpose(2, 0, 1)
    return net, path


def best_time(function, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


# ----------------------------------------------------------------------------- per point

def point_conv(X, weights, geo, og, unit, k, full):
    """One Convolution unit back-tracked on its own (NumPy on its window, float64); a unit
    whose channel contributions are all 0 is dead and stops (no candidates)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo.kernel, geo.stride, geo.pad, geo.dilation
    cg = weights.shape[1]
    z, y, x = unit
    g = z // og
    rows = y * sh - ph + np.arange(kh) * dh
    cols = x * sw - pw + np.arange(kw) * dw
    keep_r = (rows >= 0) & (rows < X.shape[1])
    keep_c = (cols >= 0) & (cols < X.shape[2])
    rows, cols = rows[keep_r], cols[keep_c]
    patch = X[g * cg:(g + 1) * cg][:, rows][:, :, cols]
    products = weights[z][:, keep_r][:, :, keep_c].astype(np.float64) * patch
    contributions = products.sum(axis=(1, 2))
    if not contributions.any():
        return []
    out = []
    for c in np.argsort(-contributions, kind="stable")[:k]:
        if full:
            i, j = np.unravel_index(np.argmax(products[c]), products[c].shape)
        else:
            centre_r, centre_c = np.flatnonzero(keep_r), np.flatnonzero(keep_c)
            i = np.argmin(np.abs(centre_r - (kh - 1) // 2))
            j = np.argmin(np.abs(centre_c - (kw - 1) // 2))
        out.append((g * cg + int(c), int(rows[i]), int(cols[j])))
    return out


def point_pool(X, geo, unit, k):
    """One Pooling unit: the top-K cells of its window inside the image; a window with no
    positive cell is dead and stops (no candidates)."""
    (kh, kw), (sh, sw), (ph, pw) = geo.kernel, geo.stride, geo.pad
    c, y, x = unit
    r0, c0 = y * sh - ph, x * sw - pw
    r1, c1 = min(r0 + kh, X.shape[1]), min(c0 + kw, X.shape[2])
    r0, c0 = max(r0, 0), max(c0, 0)
    window = X[c, r0:r1, c0:c1]
    width = c1 - c0
    if not (window > 0).any():
        return []
    return [(c, r0 + int(f) // width, c0 + int(f) % width)
            for f in np.argsort(-window.ravel(), kind="stable")[:k]]


def per_point_estimate(net, graph, tracker, traced, sample, rs):
    """(estimated per-point seconds, units, all outputs inside the engine's sets)."""
    total, units_total, agree = 0.0, 0, True
    for layer in graph.layers:
        if layer.type not in ("Convolution", "Pooling"):
            continue
        blob_top, blob_bottom = layer.tops[0], layer.bottoms[0]
        per_class = [(cls, result.layers.get(blob_top)) for cls, result in traced.items()]
        per_class = [(cls, u) for cls, u in per_class if u is not None and len(u)]
        count = sum(len(u) for _, u in per_class)
        if not count:
            continue
        X = net.blobs[net.bottom_names[layer.name][0]].data[0]
        k = tracker.k.spec(layer.name, _resolution(layer, X))[1]
        picks = []
        for cls, units in per_class:
            take = rs.choice(len(units), min(len(units), max(1, sample * len(units) // count)),
                             replace=False)
            picks.extend((cls, tuple(int(v) for v in units[i])) for i in take)
        if layer.type == "Convolution":
            geo = fixations.conv_geometry(layer)
            weights = net.params[layer.name][0].data
            og = net.blobs[blob_top].data.shape[1] // geo.group
            full = tracker.shift == "full" or (tracker.shift == "partial" and
                                               geo.dilation == (1, 1))
            def step(unit, X=X, weights=weights, geo=geo, og=og, k=k, full=full):
                return point_conv(X, weights, geo, og, unit, k, full)
        else:
            geo = fixations.pool_geometry(layer, X.shape[1:])

            def step(unit, X=X, geo=geo, k=k):
                return point_pool(X, geo, unit, k)
        start = time.perf_counter()
        outputs = [(cls, step(unit)) for cls, unit in picks]
        per_unit = (time.perf_counter() - start) / len(picks)
        total += per_unit * count
        units_total += count
        for cls, below in outputs:
            engine = traced[cls].layers.get(blob_bottom)
            engine_set = set(map(tuple, engine.tolist())) if engine is not None else set()
            agree &= set(below) <= engine_set
    return total, units_total, agree


def _resolution(layer, X):
    if layer.type == "Convolution":
        geo = fixations.conv_geometry(layer)
    else:
        geo = fixations.pool_geometry(layer, X.shape[1:])
    return geo.stride[0] * geo.stride[1]


# ----------------------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    rs = np.random.RandomState(args.seed)
    print(f"building DeepLab-LargeFOV deploy net, {args.size}x{args.size}, width_div "
          f"{args.width_div}, random weights ...", flush=True)
    net, path = build_net(args.size, args.width_div, args.seed)
    try:
        graph = fixations.NetGraph.from_prototxt(path)
    finally:
        os.unlink(path)
    net.forward()   # warm-up
    forward_s, _ = best_time(net.forward, args.repeats)
    predicted = np.unique(net.blobs[SCORE_BLOB].data[0].argmax(axis=0))
    print(f"forward pass: {forward_s:.3f} s; classes in the prediction: {len(predicted)} "
          f"({', '.join(map(str, predicted))})", flush=True)

    print(f"convolution gather: {gather_name()}", flush=True)

    rows = []
    for label, shift, k in (("K=1, partial shift", "partial", "1"),
                            ("resolution K, partial shift", "partial", "resolution")):
        point_s = units = agree = None
        for threads in args.threads:
            tracker = fixations.BackTracker(net, graph, shift=shift, k=k, threads=threads)
            trace_s, _ = best_time(lambda t=tracker: t.trace(SCORE_BLOB, skip_background=False),
                                   args.repeats)
            if point_s is None:
                traced = tracker.trace(SCORE_BLOB, skip_background=False, keep_layers=True)
                points = sum(len(r.points) for r in traced.values())
                point_s, units, agree = per_point_estimate(net, graph, tracker, traced,
                                                           args.sample, rs)
                print(f"  {label}: {units} conv/pool units, {points} image points", flush=True)
            rows.append((label, threads, trace_s, units, point_s, agree))
            print(f"  {label}, {threads} thread(s): {trace_s:.3f} s", flush=True)

    print()
    print(f"{'configuration':<30}{'threads':>8}{'trace s':>9}{'/ forward':>11}{'goal':>7}"
          f"{'units':>9}{'engine us/unit':>16}{'per-point us/unit':>19}{'speed-up':>10}")
    goals = {"K=1, partial shift": 0.1, "resolution K, partial shift": 1.0}
    for label, threads, trace_s, units, point_s, agree in rows:
        ratio = trace_s / forward_s
        goal = goals[label]
        speedup = point_s / trace_s
        print(f"{label:<30}{threads:>8d}{trace_s:>9.3f}{ratio:>11.3f}{'<=' + str(goal):>7}"
              f"{units:>9d}{1e6 * trace_s / units:>16.2f}{1e6 * point_s / units:>19.2f}"
              f"{speedup:>9.1f}x")
    print()
    for label, threads, trace_s, units, point_s, agree in rows:
        ratio_ok = trace_s / forward_s <= goals[label]
        print(f"{label}, {threads} thread(s): ratio goal {'met' if ratio_ok else 'NOT met'}; "
              f"speed-up goal (>= 50x) {'met' if point_s / trace_s >= 50 else 'NOT met'}; "
              f"per-point outputs {'agree with' if agree else 'DIFFER from'} the engine")
    return 0


def gather_name():
    """Which gather the Convolution rule uses here (the compiled one is optional)."""
    import importlib
    convolution = importlib.import_module("pixelfeedback.fixations.rules.convolution")
    if convolution.compiled_kernels() is None:
        return "NumPy (numba absent or PIXELFEEDBACK_NO_NUMBA set)"
    import numba
    return f"compiled (numba {numba.__version__})"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
