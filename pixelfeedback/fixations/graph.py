"""The net's layer graph from its prototxt, and Caffe's reading of layer geometry.

``NetGraph`` lists the layers in prototxt order with versioned blob nodes (each in-place layer
gives its blob a new version), so the walk can visit blobs in reverse order. The geometry
readers follow Caffe's own defaults and rounding; they need a layer's proto, not a net.
"""
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Tuple

from python_layers import ToolkitError

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


def layer_included(layer, phase):
    """Whether Caffe keeps ``layer`` in a net of ``phase`` (its include/exclude rules)."""
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
                if not layer_included(proto, phase_value):
                    continue
                enum_name = enum.Name(proto.type)
                if enum_name not in V1_TYPES:
                    raise ToolkitError(f"{source}: V1 layer '{proto.name}' has type "
                                       f"{enum_name}, which has no V2 name")
                layers.append(LayerSpec(proto.name, V1_TYPES[enum_name], list(proto.bottom),
                                        list(proto.top), proto))
        else:
            for proto in net_param.layer:
                if not layer_included(proto, phase_value):
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


def layer_from_text(text):
    """One V2 ``layer { ... }`` (its inner fields or the whole block) as a ``LayerSpec``,
    without a net around it: for rules tried on hand-built contexts."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    body = text.strip()
    if body.startswith("layer") and body.endswith("}"):
        body = body[body.index("{") + 1:-1]
    proto = caffe_pb2.LayerParameter()
    try:
        text_format.Merge(body, proto)
    except text_format.ParseError as exc:
        raise ToolkitError(f"not a BVLC Caffe layer ({exc}): {text!r}") from None
    return LayerSpec(proto.name, proto.type, list(proto.bottom), list(proto.top), proto)


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
