"""Deploy nets of the published models the fixation tools know (FCN-8s, FCN-AlexNet,
DeepLab v2 ASPP ResNet-101, VGG-16), written with ``caffe.NetSpec``.

Layer names and settings follow the published deploy/test prototxts, so that the published
caffemodels load by name (``copy_from``). Every generator also takes ``width_div`` (divide
the channel counts) and ``size`` (input side), so tests build the same topology small and
fast. ``pixelfeedback.nets.prototxt`` writes the full-size files checked in under ``prototxt/``.

Choices where the published files leave something open (SPEC section 4 lists the models):
- FCN-8s is fcn.berkeleyvision.org's ``voc-fcn8s`` (the staged "heavy" model whose weights
  are ``fcn8s-heavy-pascal.caffemodel``): no fixed pool3/pool4 scaling layers, no Dropout
  in deploy (as published), Crop offsets 5, 9 and 31.
- FCN-AlexNet is ``voc-fcn-alexnet`` (no deploy file is published; this is its val net
  without data and loss): Crop offset 18.
- DeepLab v2 ResNet-101 is the 1.0-scale branch of the released MSC test net (its layers
  carry the plain names that hold the weights): pool1 is MAX k3 s2 **pad 1** (Caffe's ceil
  rounding then gives 129 for 257, so 513 -> 65 and 321 -> 41 at fc1_voc12, as DeepLab's
  label shrinking needs); BatchNorm with ``use_global_stats``; Scale with bias.
- VGG-16 is the ILSVRC classifier (``VGG_ILSVRC_16_layers``), input 224, Softmax ``prob``.
"""
import numpy as np

from pixelfeedback.nets.netspec import netspec
from python_layers import ToolkitError

# Published input sides (the nets are reshaped to the image by the tools anyway).
FCN_SIZE = 500
RESNET_SIZE = 513
VGG_SIZE = 224


def _width(channels, width_div, multiple=1):
    """``channels / width_div``, at least ``multiple`` and a multiple of it (for groups)."""
    if width_div < 1:
        raise ToolkitError(f"width_div must be >= 1, got {width_div}")
    reduced = (channels // width_div) // multiple * multiple
    return max(multiple, reduced)


def _input(net, size, layers):
    """An Input layer named 'data' of shape (1, 3, H, W); ``size`` is H or (H, W)."""
    height, width = (size, size) if np.isscalar(size) else size
    net.data = layers.Input(shape=dict(dim=[1, 3, int(height), int(width)]))
    return net.data


def _conv_relu(net, name, bottom, num_output, relu_name, **conv):
    """A Convolution named ``name`` plus an in-place ReLU named ``relu_name``."""
    _, L, _ = netspec()
    net[name] = L.Convolution(bottom, num_output=num_output, **conv)
    net[relu_name] = L.ReLU(net[name], in_place=True)
    return net[name]


def _vgg_trunk(net, bottom, width_div, first_pad):
    """VGG-16's 13 convolutions and five 2x2 max poolings; returns the pool tops by stage."""
    _, L, P = netspec()
    stages = [(1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512)]
    pools = {}
    top = bottom
    for stage, convs, channels in stages:
        for index in range(1, convs + 1):
            pad = first_pad if (stage, index) == (1, 1) else 1
            top = _conv_relu(net, f"conv{stage}_{index}", top, _width(channels, width_div),
                             f"relu{stage}_{index}", kernel_size=3, pad=pad, stride=1)
        net[f"pool{stage}"] = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        top = pools[stage] = net[f"pool{stage}"]
    return pools


def fcn8s(width_div=1, num_classes=21, size=FCN_SIZE):
    """FCN-8s (VGG-16) deploy net as fcn.berkeleyvision.org's voc-fcn8s; returns NetParameter."""
    caffe, L, P = netspec()
    net = caffe.NetSpec()
    data = _input(net, size, L)
    pools = _vgg_trunk(net, data, width_div, first_pad=100)
    fc_width = _width(4096, width_div)
    _conv_relu(net, "fc6", pools[5], fc_width, "relu6", kernel_size=7, pad=0, stride=1)
    _conv_relu(net, "fc7", net.fc6, fc_width, "relu7", kernel_size=1, pad=0, stride=1)
    net.score_fr = L.Convolution(net.fc7, num_output=num_classes, kernel_size=1, pad=0)
    net.upscore2 = _upsample(net.score_fr, num_classes, 4, 2)
    net.score_pool4 = L.Convolution(pools[4], num_output=num_classes, kernel_size=1, pad=0)
    net.score_pool4c = L.Crop(net.score_pool4, net.upscore2, crop_param=dict(axis=2, offset=5))
    net.fuse_pool4 = L.Eltwise(net.upscore2, net.score_pool4c, operation=P.Eltwise.SUM)
    net.upscore_pool4 = _upsample(net.fuse_pool4, num_classes, 4, 2)
    net.score_pool3 = L.Convolution(pools[3], num_output=num_classes, kernel_size=1, pad=0)
    net.score_pool3c = L.Crop(net.score_pool3, net.upscore_pool4,
                              crop_param=dict(axis=2, offset=9))
    net.fuse_pool3 = L.Eltwise(net.upscore_pool4, net.score_pool3c, operation=P.Eltwise.SUM)
    net.upscore8 = _upsample(net.fuse_pool3, num_classes, 16, 8)
    net.score = L.Crop(net.upscore8, data, crop_param=dict(axis=2, offset=31))
    proto = net.to_proto()
    proto.name = "voc-fcn8s"
    return proto


def _upsample(bottom, num_classes, kernel, stride):
    """FCN's fixed up-sampling: a bias-free Deconvolution (bilinear weights in the model)."""
    _, L, _ = netspec()
    return L.Deconvolution(bottom, param=[dict(lr_mult=0)], convolution_param=dict(
        num_output=num_classes, bias_term=False, kernel_size=kernel, stride=stride))


def fcn_alexnet(width_div=1, num_classes=21, size=FCN_SIZE):
    """FCN-AlexNet deploy net as fcn.berkeleyvision.org's voc-fcn-alexnet; returns NetParameter."""
    caffe, L, P = netspec()
    net = caffe.NetSpec()
    data = _input(net, size, L)
    lrn = dict(local_size=5, alpha=1e-4, beta=0.75)
    _conv_relu(net, "conv1", data, _width(96, width_div, 2), "relu1",
               kernel_size=11, stride=4, pad=100)
    net.pool1 = L.Pooling(net.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    net.norm1 = L.LRN(net.pool1, **lrn)
    _conv_relu(net, "conv2", net.norm1, _width(256, width_div, 2), "relu2",
               kernel_size=5, pad=2, group=2)
    net.pool2 = L.Pooling(net.conv2, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    net.norm2 = L.LRN(net.pool2, **lrn)
    _conv_relu(net, "conv3", net.norm2, _width(384, width_div, 2), "relu3", kernel_size=3, pad=1)
    _conv_relu(net, "conv4", net.conv3, _width(384, width_div, 2), "relu4",
               kernel_size=3, pad=1, group=2)
    _conv_relu(net, "conv5", net.conv4, _width(256, width_div, 2), "relu5",
               kernel_size=3, pad=1, group=2)
    net.pool5 = L.Pooling(net.conv5, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    fc_width = _width(4096, width_div)
    _conv_relu(net, "fc6", net.pool5, fc_width, "relu6", kernel_size=6, pad=0, stride=1)
    _conv_relu(net, "fc7", net.fc6, fc_width, "relu7", kernel_size=1, pad=0, stride=1)
    net.score_fr = L.Convolution(net.fc7, num_output=num_classes, kernel_size=1, pad=0)
    net.upscore = _upsample(net.score_fr, num_classes, 63, 32)
    net.score = L.Crop(net.upscore, data, crop_param=dict(axis=2, offset=18))
    proto = net.to_proto()
    proto.name = "voc-fcn-alexnet"
    return proto


# ResNet-101: blocks per stage (res2 .. res5), bottleneck widths, dilations (DeepLab v2).
RESNET101_BLOCKS = (3, 4, 23, 3)
ASPP_DILATIONS = (6, 12, 18, 24)


def resnet_block_names(stage, count):
    """Block suffixes as in MSRA's ResNet-101: letters in res2/res5, 'a, b1, b2 ...' in res3/res4."""
    if stage in (3, 4):
        return ["a"] + [f"b{index}" for index in range(1, count)]
    return [chr(ord("a") + index) for index in range(count)]


def _conv_bn(net, name, bn_name, scale_name, bottom, num_output, relu_name=None, **conv):
    """Bias-free Convolution + in-place BatchNorm (global stats) + Scale (+ optional ReLU)."""
    _, L, _ = netspec()
    net[name] = L.Convolution(bottom, num_output=num_output, bias_term=False, **conv)
    net[bn_name] = L.BatchNorm(net[name], batch_norm_param=dict(use_global_stats=True),
                               in_place=True)
    net[scale_name] = L.Scale(net[name], scale_param=dict(bias_term=True), in_place=True)
    if relu_name:
        net[relu_name] = L.ReLU(net[name], in_place=True)
    return net[name]


def _bottleneck(net, bottom, block, mid, out, stride, dilation, project):
    """One bottleneck block ``res<block>`` (stride on branch2a as in MSRA's model)."""
    _, L, P = netspec()
    if project:
        shortcut = _conv_bn(net, f"res{block}_branch1", f"bn{block}_branch1",
                            f"scale{block}_branch1", bottom, out,
                            kernel_size=1, pad=0, stride=stride)
    else:
        shortcut = bottom
    top = _conv_bn(net, f"res{block}_branch2a", f"bn{block}_branch2a", f"scale{block}_branch2a",
                   bottom, mid, f"res{block}_branch2a_relu", kernel_size=1, pad=0, stride=stride)
    conv = dict(kernel_size=3, pad=dilation, stride=1)
    if dilation > 1:
        conv["dilation"] = dilation
    top = _conv_bn(net, f"res{block}_branch2b", f"bn{block}_branch2b", f"scale{block}_branch2b",
                   top, mid, f"res{block}_branch2b_relu", **conv)
    top = _conv_bn(net, f"res{block}_branch2c", f"bn{block}_branch2c", f"scale{block}_branch2c",
                   top, out, kernel_size=1, pad=0, stride=1)
    net[f"res{block}"] = L.Eltwise(shortcut, top, operation=P.Eltwise.SUM)
    net[f"res{block}_relu"] = L.ReLU(net[f"res{block}"], in_place=True)
    return net[f"res{block}"]


def deeplabv2_resnet101(width_div=1, num_classes=21, size=RESNET_SIZE, blocks=RESNET101_BLOCKS):
    """DeepLab v2 ASPP ResNet-101 deploy net (1.0 scale); ``blocks`` may shorten it for tests."""
    caffe, L, P = netspec()
    if len(blocks) != 4 or min(blocks) < 1:
        raise ToolkitError(f"blocks must be four positive counts (res2..res5), got {blocks}")
    net = caffe.NetSpec()
    data = _input(net, size, L)
    top = _conv_bn(net, "conv1", "bn_conv1", "scale_conv1", data, _width(64, width_div),
                   "conv1_relu", kernel_size=7, pad=3, stride=2)
    net.pool1 = L.Pooling(top, pool=P.Pooling.MAX, kernel_size=3, stride=2, pad=1)
    top = net.pool1
    # stage: (bottleneck width, output width, stride of its first block, dilation)
    stages = {2: (64, 256, 1, 1), 3: (128, 512, 2, 1), 4: (256, 1024, 1, 2), 5: (512, 2048, 1, 4)}
    for stage, count in zip((2, 3, 4, 5), blocks):
        mid, out, stride, dilation = stages[stage]
        for index, suffix in enumerate(resnet_block_names(stage, count)):
            top = _bottleneck(net, top, f"{stage}{suffix}", _width(mid, width_div),
                              _width(out, width_div), stride if index == 0 else 1,
                              dilation, project=index == 0)
    branches = []
    for index, dilation in enumerate(ASPP_DILATIONS):
        name = f"fc1_voc12_c{index}"
        net[name] = L.Convolution(top, num_output=num_classes, kernel_size=3, pad=dilation,
                                  dilation=dilation)
        branches.append(net[name])
    net.fc1_voc12 = L.Eltwise(*branches, operation=P.Eltwise.SUM)
    proto = net.to_proto()
    proto.name = "deeplabv2-resnet101-aspp"
    return proto


def vgg16(width_div=1, num_classes=1000, size=VGG_SIZE):
    """VGG-16 ILSVRC classifier deploy net (fc6/fc7/fc8 InnerProduct, Softmax 'prob')."""
    caffe, L, _ = netspec()
    net = caffe.NetSpec()
    data = _input(net, size, L)
    pools = _vgg_trunk(net, data, width_div, first_pad=1)
    fc_width = _width(4096, width_div)
    net.fc6 = L.InnerProduct(pools[5], num_output=fc_width)
    net.relu6 = L.ReLU(net.fc6, in_place=True)
    net.drop6 = L.Dropout(net.fc6, dropout_ratio=0.5, in_place=True)
    net.fc7 = L.InnerProduct(net.fc6, num_output=fc_width)
    net.relu7 = L.ReLU(net.fc7, in_place=True)
    net.drop7 = L.Dropout(net.fc7, dropout_ratio=0.5, in_place=True)
    net.fc8 = L.InnerProduct(net.fc7, num_output=num_classes)
    net.prob = L.Softmax(net.fc8)
    proto = net.to_proto()
    proto.name = "VGG_ILSVRC_16_layers"
    return proto


def bilinear_kernel(kernel_size):
    """The (k, k) bilinear up-sampling kernel FCN puts on the diagonal of its Deconvolutions."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - np.abs(np.arange(kernel_size) - centre) / factor
    return np.outer(ramp, ramp).astype(np.float32)
