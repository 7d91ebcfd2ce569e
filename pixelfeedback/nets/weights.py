"""Caffe weights: reading caffemodels, checking them against a net layer by layer before
Caffe would abort on a mismatch, loading them, and filling a net with test weights.

Older caffemodels use the V1 ``layers`` field and legacy 4-D blob shapes; both are read
here as Caffe reads them (``Blob::ShapeEquals``).
"""
import collections
import os

import numpy as np

from pixelfeedback.nets.architectures import bilinear_kernel
from python_layers import ToolkitError


def blob_shape(blob):
    """A BlobProto's shape; legacy (num, channels, height, width) blobs as 4-tuples."""
    if blob.HasField("shape"):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)


def is_legacy(blob):
    return not blob.HasField("shape") and any(
        blob.HasField(f) for f in ("num", "channels", "height", "width"))


def shapes_match(expected, blob):
    """Caffe's Blob::ShapeEquals: legacy blobs compare as 4-D, padded with leading 1s."""
    if is_legacy(blob):
        return len(expected) <= 4 and (1,) * (4 - len(expected)) + tuple(expected) == blob_shape(blob)
    return tuple(expected) == blob_shape(blob)


def read_caffemodel(path):
    """The NetParameter of a binary caffemodel (new ``layer`` or V1 ``layers`` format)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"weights file not found: {path} (fetch it with weights/fetch.py "
                           "or pass the path of a trained .caffemodel)")
    if path.endswith(".h5"):
        raise ToolkitError(f"{path}: HDF5 weights are not supported here; save the net as a "
                           "binary .caffemodel (net.save) and load that")
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError

    model = caffe_pb2.NetParameter()
    try:
        with open(path, "rb") as f:
            model.ParseFromString(f.read())
    except (DecodeError, RuntimeError) as exc:
        raise ToolkitError(f"{path} is not a Caffe model ({exc}); re-download it or pass a "
                           ".caffemodel written by Caffe") from None
    if not model.layer and not model.layers:
        raise ToolkitError(f"{path} holds no layers; it is not a trained .caffemodel")
    return model


def caffemodel_shapes(path):
    """{layer name: [(blob shape, legacy)]} of a caffemodel's layers with blobs, in file order;
    a legacy blob (no ``shape``) gives its (num, channels, height, width) and legacy=True."""
    model = read_caffemodel(path)
    return collections.OrderedDict(
        (layer.name, [(blob_shape(b), is_legacy(b)) for b in layer.blobs])
        for layer in list(model.layer) + list(model.layers) if layer.blobs)


def check_weights(net, caffemodel_path, require_all=True):
    """Check, layer by layer, that ``caffemodel_path`` fits ``net`` as Caffe's
    ``copy_from`` would copy it (by layer name); raise ToolkitError naming the first
    layer that does not. Returns (loaded layer names, ignored file layer names)."""
    model = read_caffemodel(caffemodel_path)
    net_layers = {name: layer for name, layer in zip(net._layer_names, net.layers)}
    loaded, ignored = [], []
    advice = ("the weights belong to another net definition (another width_div, "
              "num_classes or model); use the matching prototxt, or rename the layer so "
              "that it is not copied")
    for layer in (model.layer or model.layers):
        target = net_layers.get(layer.name)
        if target is None:
            ignored.append(layer.name)
            continue
        expected = [tuple(b.data.shape) for b in target.blobs]
        if len(expected) != len(layer.blobs):
            raise ToolkitError(
                f"{caffemodel_path}: layer {layer.name!r} has {len(layer.blobs)} parameter "
                f"blob(s) but the net's layer has {len(expected)}; {advice}")
        for index, (shape, blob) in enumerate(zip(expected, layer.blobs)):
            if not shapes_match(shape, blob):
                what = ("weights", "bias")[index] if index < 2 else f"blob {index}"
                raise ToolkitError(
                    f"{caffemodel_path}: layer {layer.name!r} {what} has shape "
                    f"{blob_shape(blob)} but the net expects {shape}; {advice}")
        if expected:
            loaded.append(layer.name)
    if require_all:
        missing = [name for name, layer in net_layers.items()
                   if len(layer.blobs) and name not in loaded]
        if missing:
            raise ToolkitError(
                f"{caffemodel_path} has no weights for layer(s) {', '.join(missing)} of the "
                "net; they would keep their random initialisation. Use weights trained "
                "for this net (its prototxt and the caffemodel must come from the same model)")
    return loaded, ignored


def check_finite_params(net, caffemodel_path):
    """Raise ToolkitError naming the first layer of ``net`` (loaded from
    ``caffemodel_path``) whose parameters hold NaN or inf: training from them fails at the
    first iteration, and a forward pass gives NaN scores."""
    for name, blobs in net.params.items():
        for index, blob in enumerate(blobs):
            bad = int(np.size(blob.data) - np.isfinite(blob.data).sum())
            if bad:
                what = ("weights", "bias")[index] if index < 2 else f"blob {index}"
                raise ToolkitError(
                    f"{caffemodel_path}: layer {name!r} {what} hold {bad} NaN or inf value(s) "
                    f"of {np.size(blob.data)}; these weights are broken (a diverged training?): "
                    "use an earlier snapshot or other weights")


def load_weights(net, caffemodel_path, require_all=True):
    """Copy a caffemodel into ``net`` by layer name after ``check_weights`` passed.

    Returns the names of the layers loaded. With ``require_all`` (default), every layer
    of the net with parameters must be in the file.
    """
    loaded, _ = check_weights(net, caffemodel_path, require_all)
    net.copy_from(os.fspath(caffemodel_path))
    return loaded


def fill_random_weights(net, seed=0, bias_std=0.1):
    """Fill a ``caffe.Net`` with fixed-seed weights that keep activations in range.

    He-normal convolution / InnerProduct weights with small random biases (so class scores
    differ), bilinear diagonal Deconvolutions (FCN's fixed up-sampling), identity
    BatchNorm (mean 0, variance 1) and Scale (gamma 1, beta 0). For tests and demos only.
    """
    rng = np.random.RandomState(seed)
    for name, blobs in net.params.items():
        layer_type = net.layer_dict[name].type
        if layer_type == "BatchNorm":
            blobs[0].data[...] = 0
            blobs[1].data[...] = 1
            blobs[2].data[...] = 1
        elif layer_type == "Scale":
            blobs[0].data[...] = 1
            if len(blobs) > 1:
                blobs[1].data[...] = 0
        elif layer_type == "Deconvolution":
            weights = blobs[0].data
            weights[...] = 0
            channels = min(weights.shape[0], weights.shape[1])
            weights[np.arange(channels), np.arange(channels)] = bilinear_kernel(weights.shape[2])
        else:
            weights = blobs[0].data
            fan_in = int(np.prod(weights.shape[1:]))
            weights[...] = rng.normal(0, np.sqrt(2.0 / fan_in), weights.shape)
            for blob in blobs[1:]:
                blob.data[...] = rng.normal(0, bias_std, blob.data.shape)
    return net
