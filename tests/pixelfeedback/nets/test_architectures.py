"""The zoo deploy nets (FCN-8s, FCN-AlexNet, DeepLab v2 ResNet-101, VGG-16): they build in
real Caffe, have the published layer names and parameter shapes, the checked-in prototxt
files are current, and the back-tracker runs through each of them end to end."""
import os

import numpy as np
import pytest

from pixelfeedback.nets import architectures, netspec, prototxt, registry
from pixelfeedback.nets import weights as netweights

# Published layer names (fcn.berkeleyvision.org voc-fcn8s deploy / voc-fcn-alexnet val,
# VGG_ILSVRC_16_layers deploy), the Input layer left out.
VGG_TRUNK = [name for stage, convs in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
             for name in [n for i in range(1, convs + 1)
                          for n in (f"conv{stage}_{i}", f"relu{stage}_{i}")] + [f"pool{stage}"]]
FCN8S_LAYERS = VGG_TRUNK + [
    "fc6", "relu6", "fc7", "relu7", "score_fr", "upscore2", "score_pool4", "score_pool4c",
    "fuse_pool4", "upscore_pool4", "score_pool3", "score_pool3c", "fuse_pool3", "upscore8",
    "score"]
FCN_ALEXNET_LAYERS = [
    "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3",
    "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "fc7", "relu7", "score_fr",
    "upscore", "score"]
VGG16_LAYERS = VGG_TRUNK + ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8", "prob"]
RESNET101_BLOCKS = (["2a", "2b", "2c", "3a"] + [f"3b{i}" for i in range(1, 4)] + ["4a"]
                    + [f"4b{i}" for i in range(1, 23)] + ["5a", "5b", "5c"])


def resnet101_layers():
    """DeepLab v2 ResNet-101 layer names in MSRA's scheme (written out independently)."""
    names = ["conv1", "bn_conv1", "scale_conv1", "conv1_relu", "pool1"]
    for block in RESNET101_BLOCKS:
        if block.endswith("a"):
            names += [f"res{block}_branch1", f"bn{block}_branch1", f"scale{block}_branch1"]
        for branch in ("2a", "2b", "2c"):
            names += [f"res{block}_branch{branch}", f"bn{block}_branch{branch}",
                      f"scale{block}_branch{branch}"]
            if branch != "2c":
                names.append(f"res{block}_branch{branch}_relu")
        names += [f"res{block}", f"res{block}_relu"]
    return names + [f"fc1_voc12_c{i}" for i in range(4)] + ["fc1_voc12"]


PUBLISHED_LAYERS = {
    "fcn8s": FCN8S_LAYERS, "fcn-alexnet": FCN_ALEXNET_LAYERS,
    "deeplabv2-resnet101": resnet101_layers(), "vgg16": VGG16_LAYERS,
}

# Small versions for tests: (keyword arguments, score blob, expected score shape).
SMALL = {
    "fcn8s": (dict(width_div=16, size=64), "score", (1, 21, 64, 64)),
    "fcn-alexnet": (dict(width_div=16, size=64), "score", (1, 21, 64, 64)),
    "deeplabv2-resnet101": (dict(width_div=16, size=65), "fc1_voc12", (1, 21, 9, 9)),
    "vgg16": (dict(width_div=16, size=32), "fc8", (1, 1000)),
}

ZOO = registry.published_deploy_nets()


def build(caffe, proto, tmp_path, name="net"):
    path = str(tmp_path / f"{name}.prototxt")
    netspec.write_net(proto, path)
    return caffe.Net(path, caffe.TEST), path


def test_registry_and_zoo_agree():
    for name, (_, file_name) in ZOO.items():
        assert registry.MODELS[name].deploy == f"prototxt/{file_name}"


@pytest.mark.parametrize("name", list(ZOO))
def test_layer_names_are_the_published_ones(name):
    generator, _ = ZOO[name]
    proto = generator(**SMALL[name][0])
    names = [layer.name for layer in proto.layer]
    assert names[0] == "data" and proto.layer[0].type == "Input"
    assert names[1:] == PUBLISHED_LAYERS[name]


@pytest.mark.parametrize("name", list(ZOO))
def test_small_nets_build_and_run(caffe, tmp_path, name):
    generator, _ = ZOO[name]
    kwargs, score_blob, score_shape = SMALL[name]
    net, _ = build(caffe, generator(**kwargs), tmp_path)
    netweights.fill_random_weights(net, seed=1)
    net.blobs["data"].data[...] = np.random.RandomState(0).normal(0, 50, net.blobs["data"].shape)
    net.forward()
    scores = net.blobs[score_blob].data
    assert scores.shape == score_shape
    assert np.isfinite(scores).all() and scores.std() > 0
    assert registry.MODELS[name].score_blob == score_blob


def test_published_settings_in_the_small_nets():
    fcn = {layer.name: layer for layer in architectures.fcn8s(width_div=16, size=64).layer}
    assert fcn["conv1_1"].convolution_param.pad == [100]
    assert [fcn[n].crop_param.offset for n in ("score_pool4c", "score_pool3c", "score")] == \
        [[5], [9], [31]]
    assert all(fcn[n].crop_param.axis == 2 for n in ("score_pool4c", "score_pool3c", "score"))
    for name, kernel, stride in (("upscore2", 4, 2), ("upscore_pool4", 4, 2), ("upscore8", 16, 8)):
        param = fcn[name].convolution_param
        assert fcn[name].type == "Deconvolution" and not param.bias_term
        assert (param.kernel_size, param.stride) == ([kernel], [stride])
    alex = {layer.name: layer for layer in architectures.fcn_alexnet(width_div=16, size=64).layer}
    assert alex["score"].crop_param.offset == [18]
    assert [alex[n].convolution_param.group for n in ("conv2", "conv4", "conv5")] == [2, 2, 2]
    assert alex["norm1"].lrn_param.local_size == 5
    res = {layer.name: layer for layer in architectures.deeplabv2_resnet101(width_div=16).layer}
    assert res["bn_conv1"].batch_norm_param.use_global_stats
    assert res["scale_conv1"].scale_param.bias_term
    assert res["res4b7_branch2b"].convolution_param.dilation == [2]
    assert res["res5b_branch2b"].convolution_param.dilation == [4]
    assert res["res3a_branch2a"].convolution_param.stride == [2]
    assert [res[f"fc1_voc12_c{i}"].convolution_param.dilation[0] for i in range(4)] == \
        list(architectures.ASPP_DILATIONS)
    assert list(res["fc1_voc12"].bottom) == [f"fc1_voc12_c{i}" for i in range(4)]
    assert res["fc1_voc12"].type == "Eltwise"


def test_full_size_nets_have_the_published_shapes(caffe, tmp_path):
    """Full width, built only (Caffe allocates activations lazily): parameter shapes of the
    published caffemodels and the output sizes of the published input sizes."""
    expected_params = {
        "fcn8s": {"conv1_1": (64, 3, 3, 3), "fc6": (4096, 512, 7, 7),
                  "score_fr": (21, 4096, 1, 1), "upscore2": (21, 21, 4, 4),
                  "score_pool3": (21, 256, 1, 1), "upscore8": (21, 21, 16, 16)},
        "fcn-alexnet": {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5),
                        "conv4": (384, 192, 3, 3), "fc6": (4096, 256, 6, 6),
                        "upscore": (21, 21, 63, 63)},
        "deeplabv2-resnet101": {"conv1": (64, 3, 7, 7), "res2a_branch1": (256, 64, 1, 1),
                                "res4b22_branch2b": (256, 256, 3, 3),
                                "res5c_branch2c": (2048, 512, 1, 1),
                                "fc1_voc12_c3": (21, 2048, 3, 3)},
        "vgg16": {"conv5_3": (512, 512, 3, 3), "fc6": (4096, 25088), "fc8": (1000, 4096)},
    }
    expected_blobs = {"fcn8s": ("score", (1, 21, 500, 500)),
                      "fcn-alexnet": ("score", (1, 21, 500, 500)),
                      "deeplabv2-resnet101": ("fc1_voc12", (1, 21, 65, 65)),
                      "vgg16": ("fc8", (1, 1000))}
    for name, (generator, _) in ZOO.items():
        net, _ = build(caffe, generator(), tmp_path, name)
        for layer, shape in expected_params[name].items():
            assert net.params[layer][0].data.shape == shape, (name, layer)
        blob, shape = expected_blobs[name]
        assert net.blobs[blob].data.shape == shape, name
        if name == "deeplabv2-resnet101":
            assert [b.data.shape for b in net.params["bn_conv1"]] == [(64,), (64,), (1,)]
            assert len(net.params["scale_conv1"]) == 2
            assert len(net.params["conv1"]) == 1  # bias-free convolutions
        del net


def test_resnet_gives_41_for_321(caffe, tmp_path):
    net, _ = build(caffe, architectures.deeplabv2_resnet101(width_div=32, size=321), tmp_path)
    assert net.blobs["fc1_voc12"].data.shape == (1, 21, 41, 41)


def test_checked_in_prototxt_files_are_current(repo_root):
    assert prototxt.stale_files(os.path.join(repo_root, "prototxt")) == []
    with open(os.path.join(repo_root, "prototxt", "deploy_fcn8s.prototxt")) as f:
        assert f.readline() == netspec.HEADER


def test_write_deploy_nets_and_staleness(tmp_path):
    paths = [p for p in prototxt.write_all(str(tmp_path))
             if os.path.basename(p) in {file_name for _, file_name in ZOO.values()}]
    assert sorted(os.path.basename(p) for p in paths) == sorted(
        file_name for _, file_name in ZOO.values())
    assert prototxt.stale_files(str(tmp_path)) == []
    with open(paths[0], "a") as f:
        f.write("# edited\n")
    assert prototxt.stale_files(str(tmp_path)) == [paths[0]]


def test_weights_load_by_name_into_the_published_prototxt(caffe, tmp_path):
    """A caffemodel saved from a generated net loads by name into a net built from the same
    generator's text, with the shape check of pixelfeedback.nets.weights."""

    source, path = build(caffe, architectures.fcn_alexnet(width_div=16, size=64), tmp_path, "a")
    netweights.fill_random_weights(source, seed=3)
    source.save(str(tmp_path / "a.caffemodel"))
    target = caffe.Net(path, caffe.TEST)
    netweights.load_weights(target, str(tmp_path / "a.caffemodel"))
    np.testing.assert_array_equal(target.params["fc6"][0].data, source.params["fc6"][0].data)


def test_width_division_and_groups():
    assert architectures._width(96, 16, 2) == 6
    assert architectures._width(64, 1000) == 1
    assert architectures._width(384, 1000, 2) == 2
    assert architectures.resnet_block_names(4, 3) == ["a", "b1", "b2"]
    assert architectures.resnet_block_names(5, 3) == ["a", "b", "c"]


def test_bilinear_kernel_is_fcns():
    kernel = architectures.bilinear_kernel(4)
    np.testing.assert_allclose(kernel[0], [0.0625, 0.1875, 0.1875, 0.0625])
    assert kernel.sum() == pytest.approx(4.0)  # stride 2: each output sums 1 over 2x2 inputs


@pytest.mark.parametrize("name", list(ZOO))
def test_back_tracker_runs_through_each_net(caffe, tmp_path, name):
    """The back-tracker (pixelfeedback.fixations) end to end on each small net with random weights:
    image-plane points inside the input."""
    from pixelfeedback import fixations

    generator, _ = ZOO[name]
    kwargs, score_blob, _ = SMALL[name]
    net, path = build(caffe, generator(**kwargs), tmp_path)
    netweights.fill_random_weights(net, seed=2)
    net.blobs["data"].data[...] = np.random.RandomState(1).normal(0, 50, net.blobs["data"].shape)
    net.forward()
    scores = net.blobs[score_blob].data
    classification = scores.ndim == 2
    tracker = fixations.BackTracker(net, fixations.NetGraph.from_prototxt(path),
                                    shift="partial", k=fixations.KStrategy.parse("resolution"))
    traced = tracker.trace(score_blob, item=0, skip_background=not classification)
    if classification:
        assert list(traced) == [int(scores[0].argmax())]
    else:
        predicted = set(np.unique(scores[0].argmax(0)).tolist()) - {0}
        assert set(traced) == predicted and traced
    height, width = net.blobs["data"].data.shape[2:]
    for class_id, result in traced.items():
        points = np.asarray(result.points)
        assert points.ndim == 2 and points.shape[1] == 2 and len(points) > 0, class_id
        assert (points[:, 0] >= 0).all() and (points[:, 0] < height).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] < width).all()
