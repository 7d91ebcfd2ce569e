"""Caffe weights: reading caffemodels, checking them against a net layer by layer before
Caffe would abort on a mismatch, loading them, and filling a net with test weights.

Older caffemodels use the V1 ``layers`` field and legacy 4-D blob shapes; both are read
here as Caffe reads them (``Blob::ShapeEquals``).
"""
import collections
import hashlib
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


# --- one streaming pass over a binary caffemodel -------------------------------------------
# Field numbers of caffe.proto (NetParameter, LayerParameter, V1/V0 layers, BlobProto): the
# file is walked as protobuf wire data, so a 500 MB VGG-16 model is read once, in chunks,
# without a NetParameter in memory, and its values are checked for NaN/inf on the way.

BlobSummary = collections.namedtuple("BlobSummary", "shape legacy count non_finite")
_LAYER_FIELDS = {100: (1, 7, None), 2: (4, 6, 1)}    # net field: (name, blobs, V0 layer)
_V0_FIELDS = (1, 50, None)
SCAN_CHUNK = 4 << 20                                  # bytes of values read at a time


class _Wire:
    """Reads protobuf wire data from a file, keeping the byte position."""

    def __init__(self, f, path, size):
        self.f, self.path, self.size, self.pos = f, path, size, 0

    def cut(self):
        return ToolkitError(
            f"{self.path} is not a whole Caffe model: its data stop at byte {self.size} in "
            "the middle of a field (a truncated download or copy?); re-download it or pass a "
            ".caffemodel written by Caffe")

    def bad(self, what):
        start = ""
        if self.pos <= 1:
            with open(self.path, "rb") as f:
                head = f.read(64).lstrip().lower()
            if head.startswith((b"<", b"{")):
                start = ", it starts like a web page or a text file"
        return ToolkitError(f"{self.path} is not a Caffe model ({what} at byte {self.pos}"
                            f"{start}); re-download it or pass a .caffemodel written by Caffe")

    def read(self, count, end):
        if self.pos + count > end:
            raise self.cut()
        data = self.f.read(count)
        if len(data) < count:
            raise self.cut()
        self.pos += count
        return data

    def varint(self, end):
        value = shift = 0
        while True:
            byte = self.read(1, end)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.bad("a number longer than 10 bytes")

    def fields(self, end):
        """(field number, wire type, value) until ``end``; a length-delimited field yields
        its length and is skipped unless the caller read it."""
        while self.pos < end:
            key = self.varint(end)
            number, wire = key >> 3, key & 7
            if number == 0 or wire not in (0, 1, 2, 5):
                raise self.bad(f"no protobuf field (key {key})")
            if wire == 0:
                yield number, wire, self.varint(end)
            elif wire in (1, 5):
                yield number, wire, self.read(8 if wire == 1 else 4, end)
            else:
                length = self.varint(end)
                stop = self.pos + length
                if stop > end:
                    raise self.cut()
                yield number, wire, length
                if self.pos != stop:
                    self.f.seek(stop)
                    self.pos = stop

    def values(self, length, dtype):
        """(count, non-finite count) of ``length`` bytes of packed ``dtype`` values."""
        if length % dtype.itemsize:
            raise self.bad(f"{length} bytes of {dtype.itemsize}-byte values")
        count = bad = 0
        left = length
        while left:
            chunk = np.frombuffer(self.read(min(left, SCAN_CHUNK), self.pos + left), dtype)
            count += chunk.size
            bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
            left -= chunk.nbytes
        return count, bad


def _scan_blob(wire, end):
    dims, legacy, shaped = {}, False, False
    counts = {np.dtype("<f4"): [0, 0], np.dtype("<f8"): [0, 0]}
    for number, kind, value in wire.fields(end):
        if number == 7 and kind == 2:
            shaped, shape = True, []
            for dim_number, dim_kind, dim in wire.fields(wire.pos + value):
                if dim_number == 1 and dim_kind == 2:
                    stop = wire.pos + dim
                    while wire.pos < stop:
                        shape.append(wire.varint(stop))
                elif dim_number == 1 and dim_kind == 0:
                    shape.append(dim)
            dims["shape"] = tuple(shape)
        elif number in (5, 8):
            dtype = np.dtype("<f4" if number == 5 else "<f8")
            if kind == 2:
                count, bad = wire.values(value, dtype)
            else:
                count, bad = 1, int(not np.isfinite(np.frombuffer(value, dtype)[0]))
            counts[dtype][0] += count
            counts[dtype][1] += bad
        elif number in (1, 2, 3, 4) and kind == 0:
            legacy = True
            dims[number] = value - (1 << 64) if value >= 1 << 63 else value
    if shaped:
        shape, legacy = dims["shape"], False
    elif legacy:
        shape = tuple(dims.get(n, 0) for n in (1, 2, 3, 4))
    else:
        shape = ()
    doubles = counts[np.dtype("<f8")]
    count, bad = doubles if doubles[0] else counts[np.dtype("<f4")]  # Caffe reads doubles first
    return BlobSummary(shape, legacy, count, bad)


def _scan_layer(wire, end, name_field, blobs_field, v0_field):
    name, blobs = None, []
    for number, kind, value in wire.fields(end):
        if kind != 2:
            continue
        if number == name_field:
            name = wire.read(value, wire.pos + value).decode("utf-8", "replace")
        elif number == blobs_field:
            blobs.append(_scan_blob(wire, wire.pos + value))
        elif number == v0_field:   # a V0 layer inside a V1 one: its name and blobs count
            v0_name, v0_blobs = _scan_layer(wire, wire.pos + value, *_V0_FIELDS)
            name, blobs = name or v0_name, blobs or v0_blobs
    return name, blobs


def scan_caffemodel(path):
    """{layer name: [BlobSummary(shape, legacy, count, non_finite)]} of a binary caffemodel,
    in file order (V2 ``layer`` and V1 ``layers``), from one streaming pass: no
    NetParameter is built, values are read in chunks and counted where NaN or inf. A
    missing, empty, cut-short or non-protobuf file, a file without layers, and a blob
    whose values do not fill its shape (Caffe would abort) are a ToolkitError naming it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ToolkitError(f"weights file not found: {path} (fetch it with weights/fetch.py "
                           "or pass the path of a trained .caffemodel)")
    size = os.path.getsize(path)
    if size == 0:
        raise ToolkitError(f"{path} is empty (0 bytes: an interrupted download or a full "
                           "disk?); re-download it or pass a .caffemodel written by Caffe")
    layers = collections.OrderedDict()
    with open(path, "rb", buffering=1 << 16) as f:
        wire = _Wire(f, path, size)
        for number, kind, value in wire.fields(size):
            if number in _LAYER_FIELDS and kind == 2:
                name, blobs = _scan_layer(wire, wire.pos + value, *_LAYER_FIELDS[number])
                layers[name or ""] = blobs
    if not layers:
        raise ToolkitError(f"{path} holds no layers; it is not a trained .caffemodel "
                           "(re-download it or pass a .caffemodel written by Caffe)")
    for name, blobs in layers.items():
        for index, blob in enumerate(blobs):
            needed = int(np.prod(blob.shape, dtype=np.int64))
            if blob.count != needed:
                raise ToolkitError(
                    f"{path}: layer {name!r} blob {index} holds {blob.count} values but its "
                    f"shape {blob.shape} needs {needed} (a corrupt or cut file); "
                    "re-download it or pass a .caffemodel written by Caffe")
    return layers


def summary_fits(expected, blob):
    """``shapes_match`` for a BlobSummary: Caffe's Blob::ShapeEquals."""
    if blob.legacy:
        return len(expected) <= 4 and (1,) * (4 - len(expected)) + tuple(expected) == blob.shape
    return tuple(expected) == blob.shape


def fit_report(path, net_shapes):
    """How the caffemodel at ``path`` fits a net whose layers have the parameter shapes
    ``net_shapes`` ({layer: [shape]}, every layer, [] for one without parameters), as
    Caffe's CopyTrainedLayersFrom copies by layer name: (mismatches, missing, non_finite)
    lists of messages (count or shape mismatches Caffe aborts on; net layers with
    parameters the file does not set, by name; layers holding NaN or inf). One streaming
    pass (``scan_caffemodel``, whose errors it raises)."""
    layers = scan_caffemodel(path)
    mismatches, non_finite = [], []
    for name, blobs in layers.items():
        bad = sum(b.non_finite for b in blobs)
        if bad:
            non_finite.append(f"layer {name!r} holds {bad} NaN or inf value(s) of "
                              f"{sum(b.count for b in blobs)}")
        if name not in net_shapes:
            continue
        wanted = net_shapes[name]
        if len(blobs) != len(wanted):
            mismatches.append(f"layer {name}: {len(blobs)} blobs in the caffemodel, "
                              f"{len(wanted)} in the prototxt")
            continue
        mismatches += [f"layer {name} blob {index}: caffemodel {blob.shape}, prototxt "
                       f"{tuple(want)}" for index, (blob, want) in enumerate(zip(blobs, wanted))
                       if not summary_fits(want, blob)]
    missing = [name for name, wanted in net_shapes.items() if wanted and name not in layers]
    return mismatches, missing, non_finite


def missing_note(layer, path):
    """The note on a net layer the caffemodel at ``path`` gives no weights."""
    return (f"layer {layer} has no weights in {os.path.basename(path)} (it keeps its filler "
            "initialisation)")


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


def parameters_digest(net):
    """sha256 of every parameter blob of ``net``, in layer order: identifies the weights
    whatever file they came from (about 0.2 s for the full DeepLab-LargeFOV)."""
    digest = hashlib.sha256()
    for name, blobs in net.params.items():
        digest.update(name.encode())
        for blob in blobs:
            digest.update(np.ascontiguousarray(blob.data, np.float32).tobytes())
    return digest.hexdigest()
