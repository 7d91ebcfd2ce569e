"""Speed of the template-similarity loss layer against the fc8 layer it sits beside.

Builds a real caffe.Net at the thesis's training shapes (batch 10, fc7 1024 x 41 x 41,
21 classes): Input fc7 and label, fc8_voc12 (1x1 Convolution, 21 outputs), the
TemplateSimilarityLoss Python layer and a SoftmaxWithLoss, with force_backward so that
fc8 also computes its bottom diff as it does in training. For each loss variant it runs
one full forward/backward to warm up, then times, `--repeats` times each and interleaved,

  * fc8:  net.forward(start='fc8_voc12', end='fc8_voc12') + net.backward(same layer)
  * loss: net.forward(start='template_loss', end='template_loss') + net.backward(same)

and prints the medians and their ratio loss / fc8 (the goal is at most 3). The labels hold
all 21 classes (the worst case for the loss); fc7 is ReLU-then-dropout-like noise and fc8
has random weights, so most pixels are misclassified (the worst case for selective).
Both timings include pycaffe's call overhead. Ratios are measured in one run on one
machine; compare them, not the absolute times, across machines.
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

from python_layers.template_similarity import LOSS_NAMES, loss_param_str, parse_loss_name  # noqa: E402

NET_TEMPLATE = """name: "bench_template_loss"
force_backward: true
layer {{ name: "fc7" type: "Input" top: "fc7"
  input_param {{ shape {{ dim: {n} dim: {d} dim: {h} dim: {w} }} }} }}
layer {{ name: "label" type: "Input" top: "label"
  input_param {{ shape {{ dim: {n} dim: 1 dim: {h} dim: {w} }} }} }}
layer {{ name: "fc8_voc12" type: "Convolution" bottom: "fc7" top: "fc8_voc12"
  convolution_param {{ num_output: {c} kernel_size: 1
    weight_filler {{ type: "gaussian" std: 0.01 }} bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12" bottom: "label"
  top: "template_loss" loss_weight: 0.1
  python_param {{ module: "python_layers.template_loss" layer: "TemplateSimilarityLoss"
    param_str: '{param_str}' }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc8_voc12" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} }}
"""


def make_inputs(n, d, h, w, c, seed=0):
    """fc7-like features and labels with every class present (rectangles, 255 borders)."""
    rs = np.random.RandomState(seed)
    fc7 = np.maximum(rs.randn(n, d, h, w), 0) * 2 * (rs.rand(n, d, h, w) < 0.5)
    label = np.zeros((n, 1, h, w), np.float32)
    objects = np.arange(1, c)
    for item in range(n):
        for cls in objects[item::n]:
            y0, x0 = rs.randint(0, h // 2), rs.randint(0, w // 2)
            y1, x1 = y0 + rs.randint(4, h // 2), x0 + rs.randint(4, w // 2)
            label[item, 0, max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = 255
            label[item, 0, y0:y1, x0:x1] = cls
    return fc7.astype(np.float32), label


def time_layer(net, layer):
    start = time.perf_counter()
    net.forward(start=layer, end=layer)
    net.backward(start=layer, end=layer)
    return time.perf_counter() - start


def bench_variant(caffe, name, fc7, label, classes, repeats, workdir):
    similarity, selective = parse_loss_name(name)
    n, d, h, w = fc7.shape
    path = os.path.join(workdir, f"{name}.prototxt")
    with open(path, "w") as f:
        f.write(NET_TEMPLATE.format(n=n, d=d, h=h, w=w, c=classes,
                                    param_str=loss_param_str(similarity, selective)))
    net = caffe.Net(path, caffe.TRAIN)
    net.blobs["fc7"].data[...] = fc7
    net.blobs["label"].data[...] = label
    net.forward()
    net.backward()
    fc8_times, loss_times = [], []
    for _ in range(repeats):
        fc8_times.append(time_layer(net, "fc8_voc12"))
        loss_times.append(time_layer(net, "template_loss"))
    fc8_s, loss_s = statistics.median(fc8_times), statistics.median(loss_times)
    print(f"{name:24s} fc8 {fc8_s * 1e3:8.1f} ms   loss {loss_s * 1e3:8.1f} ms   "
          f"loss/fc8 {loss_s / fc8_s:5.2f}", flush=True)
    return loss_s / fc8_s


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per layer (median)")
    parser.add_argument("--variants", nargs="+", default=list(LOSS_NAMES), choices=LOSS_NAMES,
                        help="loss variants to time (default: all four)")
    parser.add_argument("--batch", type=int, default=10, help="batch size (thesis: 10)")
    parser.add_argument("--size", type=int, default=41, help="score map side (thesis: 41)")
    args = parser.parse_args(argv)

    import caffe
    caffe.set_mode_cpu()
    classes = 21
    fc7, label = make_inputs(args.batch, 1024, args.size, args.size, classes)
    print(f"fc7 {fc7.shape}, {classes} classes, {len(np.unique(label[label != 255]))} present, "
          f"median of {args.repeats}")
    with tempfile.TemporaryDirectory() as workdir:
        ratios = [bench_variant(caffe, name, fc7, label, classes, args.repeats, workdir)
                  for name in args.variants]
    print(f"worst loss/fc8 ratio: {max(ratios):.2f} (goal: at most 3)")


if __name__ == "__main__":
    main()
