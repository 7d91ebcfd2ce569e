"""The DeepLab-LargeFOV definition (tools/largefov.py), the generated prototxt/ files, and
checked weight loading, with real Caffe."""
import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from python_layers import ToolkitError
from python_layers.interp import zoom_bilinear
from pixelfeedback.nets import largefov, netspec, prototxt
from pixelfeedback.nets import weights as netweights

from tests.conftest import REPO  # noqa: E402

# SPEC section 2, written out independently of netdef's tables.
TRUNK = [
    "conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1",
    "conv2_1", "relu2_1", "conv2_2", "relu2_2", "pool2",
    "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3",
    "conv4_1", "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4",
    "conv5_1", "relu5_1", "conv5_2", "relu5_2", "conv5_3", "relu5_3", "pool5", "pool5a",
    "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8_voc12",
]
BELOW_FC6 = [name for name in TRUNK if name.startswith("conv")]
LOSS_FILES = ["control", "cosine", "correlation", "selective_cosine", "selective_correlation"]


def read_net(path):
    from caffe.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    text_format.Merge(open(path).read(), net)
    return net


def read_solver(path):
    from caffe.proto import caffe_pb2
    solver = caffe_pb2.SolverParameter()
    text_format.Merge(open(path).read(), solver)
    return solver


def layers_by_name(net):
    return {layer.name: layer for layer in net.layer}


def build(caffe, tmp_path, proto, phase=None, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(netspec.to_text(proto))
    return caffe.Net(str(path), caffe.TEST if phase is None else phase)


# --- the checked-in files ----------------------------------------------------------------

def test_checked_in_prototxt_is_current():
    stale = prototxt.stale_files()
    assert not stale, ("prototxt/ is out of date with tools/largefov.py: run "
                       f"'.venv/bin/python tools/make_prototxt.py' (stale: {stale})")


def test_every_generated_file_has_the_header():
    for name in prototxt.render_all():
        with open(os.path.join(REPO, "prototxt", name)) as f:
            assert f.readline() == netspec.HEADER, name


def test_trunk_layers_in_order_as_spec():
    deploy = read_net(os.path.join(REPO, "prototxt", "deploy.prototxt"))
    assert [layer.name for layer in deploy.layer] == ["data"] + TRUNK
    test = read_net(os.path.join(REPO, "prototxt", "test.prototxt"))
    assert [layer.name for layer in test.layer] == ["data"] + TRUNK + ["fc8_interp", "prediction"]
    for name in LOSS_FILES + ["baseline"]:
        train = read_net(os.path.join(REPO, "prototxt", f"train_{name}.prototxt"))
        tail = ["label_shrink", "loss"] + (["loss_template"] if name not in ("control", "baseline") else [])
        assert [layer.name for layer in train.layer] == ["data"] + TRUNK + tail, name


def test_layer_settings_as_spec():
    layers = layers_by_name(read_net(os.path.join(REPO, "prototxt", "deploy.prototxt")))
    conv = {name: layers[name].convolution_param for name in TRUNK if name[:2] in ("co", "fc")}
    widths = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
    for name in BELOW_FC6:
        assert conv[name].num_output == widths[name[4]] and list(conv[name].kernel_size) == [3]
        dilated = name.startswith("conv5")
        assert list(conv[name].pad) == [2 if dilated else 1]
        assert list(conv[name].dilation) == ([2] if dilated else [])
    assert (conv["fc6"].num_output, list(conv["fc6"].pad), list(conv["fc6"].dilation)) == (1024, [12], [12])
    assert (conv["fc7"].num_output, list(conv["fc7"].kernel_size)) == (1024, [1])
    assert conv["fc8_voc12"].num_output == 21
    assert conv["fc8_voc12"].weight_filler.type == "gaussian"
    assert np.isclose(conv["fc8_voc12"].weight_filler.std, 0.01)
    assert conv["fc8_voc12"].bias_filler.value == 0
    for number, stride in zip("12345", [2, 2, 2, 1, 1]):
        pool = layers[f"pool{number}"].pooling_param
        assert (pool.pool, pool.kernel_size, pool.stride, pool.pad) == (0, 3, stride, 1)  # 0 = MAX
    pool5a = layers["pool5a"].pooling_param
    assert (pool5a.pool, pool5a.kernel_size, pool5a.stride, pool5a.pad) == (1, 3, 1, 1)  # 1 = AVE
    for drop, blob in [("drop6", "fc6"), ("drop7", "fc7")]:
        assert list(layers[drop].top) == list(layers[drop].bottom) == [blob]
        assert np.isclose(layers[drop].dropout_param.dropout_ratio, 0.5)


def test_train_net_losses_and_python_layers():
    layers = layers_by_name(read_net(os.path.join(REPO, "prototxt", "train_selective_cosine.prototxt")))
    assert layers["data"].python_param.layer == "ImageSegData"
    assert '"crop_size": 321' in layers["data"].python_param.param_str
    assert '"batch_size": 10' in layers["data"].python_param.param_str
    assert layers["label_shrink"].python_param.layer == "LabelShrink"
    assert layers["loss"].type == "SoftmaxWithLoss" and layers["loss"].loss_param.ignore_label == 255
    template = layers["loss_template"]
    assert list(template.bottom) == ["fc7", "fc8_voc12", "label_shrink"]
    assert np.isclose(list(template.loss_weight), [0.01]).all()
    assert template.python_param.module == "python_layers.template_loss"
    assert '"selective": true' in template.python_param.param_str
    assert '"similarity": "cosine"' in template.python_param.param_str


def test_finetune_freezes_everything_below_fc6():
    for name in LOSS_FILES:
        layers = layers_by_name(read_net(os.path.join(REPO, "prototxt", f"train_{name}.prototxt")))
        for conv in BELOW_FC6:
            assert [(p.lr_mult, p.decay_mult) for p in layers[conv].param] == [(0, 0), (0, 0)], conv
        for fc in ("fc6", "fc7"):
            assert [(p.lr_mult, p.decay_mult) for p in layers[fc].param] == [(1, 1), (2, 0)]
        assert [(p.lr_mult, p.decay_mult) for p in layers["fc8_voc12"].param] == [(10, 1), (20, 0)]


def test_baseline_learns_everywhere():
    layers = layers_by_name(read_net(os.path.join(REPO, "prototxt", "train_baseline.prototxt")))
    for name in BELOW_FC6 + ["fc6", "fc7"]:
        assert [(p.lr_mult, p.decay_mult) for p in layers[name].param] == [(1, 1), (2, 0)], name
    assert [(p.lr_mult, p.decay_mult) for p in layers["fc8_voc12"].param] == [(10, 1), (20, 0)]


def test_solvers_as_spec():
    for name in LOSS_FILES:
        s = read_solver(os.path.join(REPO, "prototxt", f"solver_{name}.prototxt"))
        assert s.net == f"prototxt/train_{name}.prototxt"
        assert (s.lr_policy, s.max_iter, s.snapshot, s.display) == ("poly", 2000, 2000, 10)
        assert np.allclose([s.base_lr, s.power, s.momentum, s.weight_decay], [1e-4, 0.9, 0.9, 5e-4])
        assert s.snapshot_prefix == f"weights/snapshots/{name}"
        assert s.solver_mode == 0  # CPU; `caffe train -gpu 0` overrides it
    s = read_solver(os.path.join(REPO, "prototxt", "solver_baseline.prototxt"))
    assert (s.lr_policy, s.stepsize, s.max_iter) == ("step", 2000, 6000)
    assert np.allclose([s.base_lr, s.gamma, s.momentum, s.weight_decay], [1e-3, 0.1, 0.9, 5e-4])
    assert os.path.isfile(os.path.join(REPO, "weights", "snapshots", ".gitignore"))


def test_make_prototxt_check_flags_stale_files(tmp_path):
    script = os.path.join(REPO, "tools", "make_prototxt.py")
    out = str(tmp_path / "p")
    run = lambda *a: subprocess.run([sys.executable, script, "--out-dir", out, *a],  # noqa: E731
                                    capture_output=True, text=True)
    assert run("--lam", "0.5").returncode == 0
    assert run("--lam", "0.5", "--check").returncode == 0
    checked = run("--check")  # other options than the files were written with
    assert checked.returncode == 1 and "train_cosine.prototxt" in checked.stdout
    assert "train_control.prototxt" not in checked.stdout
    assert run("--width-div", "3").returncode == 2


# --- nets in Caffe ---------------------------------------------------------------------------

def test_full_width_deploy_and_test_nets_build(caffe, tmp_path):
    deploy = caffe.Net(os.path.join(REPO, "prototxt", "deploy.prototxt"), caffe.TEST)
    assert deploy.blobs["data"].data.shape == (1, 3, 513, 513)
    assert deploy.blobs["fc8_voc12"].data.shape == (1, 21, 65, 65)
    assert deploy.params["fc6"][0].data.shape == (1024, 512, 3, 3)
    assert deploy.params["fc7"][0].data.shape == (1024, 1024, 1, 1)
    del deploy
    test = caffe.Net(os.path.join(REPO, "prototxt", "test.prototxt"), caffe.TEST)
    assert test.blobs["fc8_voc12"].data.shape == (1, 21, 65, 65)
    assert test.blobs["fc8_interp"].data.shape == (1, 21, 513, 513)
    assert test.blobs["prediction"].data.shape == (1, 1, 513, 513)


def test_full_width_train_net_builds_321_to_41(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    proto = largefov.train_net("cosine", data_root=root, list_file=list_path, batch_size=1)
    net = build(caffe, tmp_path, proto, caffe.TRAIN)
    assert net.blobs["data"].data.shape == (1, 3, 321, 321)
    assert net.blobs["fc8_voc12"].data.shape == (1, 21, 41, 41)
    assert net.blobs["label_shrink"].data.shape == (1, 1, 41, 41)
    assert net.blobs["fc7"].data.shape == (1, 1024, 41, 41)
    net.layers[0].close()


def test_reduced_width_train_net_runs(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    proto = largefov.train_net("correlation", data_root=root, list_file=list_path, batch_size=2,
                             crop=65, width_div=16, seed=0)
    net = build(caffe, tmp_path, proto, caffe.TRAIN)
    net.forward()
    assert net.blobs["fc8_voc12"].data.shape == (2, 21, 9, 9)
    assert net.blobs["fc7"].data.shape == (2, 64, 9, 9)
    assert np.isfinite(net.blobs["loss"].data) and np.isfinite(net.blobs["loss_template"].data)
    np.testing.assert_array_equal(net.blobs["label_shrink"].data, net.blobs["label"].data[..., ::8, ::8])
    net.layers[0].close()


def test_reduced_width_test_net_zooms_and_argmaxes(caffe, tmp_path, rng):
    net = build(caffe, tmp_path, largefov.test_net(width_div=16, num_classes=5, size=97))
    net.blobs["data"].data[...] = rng.randn(1, 3, 97, 97) * 50
    net.forward()
    scores = net.blobs["fc8_voc12"].data
    assert scores.shape == (1, 5, 13, 13)
    np.testing.assert_allclose(net.blobs["fc8_interp"].data, zoom_bilinear(scores, 8),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(net.blobs["prediction"].data[0, 0],
                                  net.blobs["fc8_interp"].data[0].argmax(axis=0))


def test_bad_options_are_toolkit_errors():
    with pytest.raises(ToolkitError, match="width_div"):
        largefov.deploy_net(width_div=3)
    with pytest.raises(ToolkitError, match="crop size"):
        largefov.train_net("softmax", crop=320)
    with pytest.raises(ToolkitError, match="unknown loss"):
        largefov.train_net("dice")
    with pytest.raises(ToolkitError, match="lambda"):
        largefov.train_net("cosine", lam=-1)


def test_write_experiment_writes_a_run_folder(tmp_path, tiny_voc):
    root, list_path = tiny_voc
    solver_path = largefov.write_experiment(
        str(tmp_path / "run"), "selective_correlation", lam=0.5, data_root=root,
        list_file=list_path, batch_size=2, crop=65, width_div=16, seed=7, iterations=30)
    assert solver_path == str(tmp_path / "run" / "solver_selective_correlation.prototxt")
    s = read_solver(solver_path)
    assert s.net == str(tmp_path / "run" / "train_selective_correlation.prototxt")
    assert s.snapshot_prefix == str(tmp_path / "run" / "selective_correlation")
    assert (s.max_iter, s.snapshot, s.random_seed, s.lr_policy) == (30, 30, 7, "poly")
    layers = layers_by_name(read_net(s.net))
    assert np.isclose(list(layers["loss_template"].loss_weight), [0.5]).all()
    assert '"seed": 7' in layers["data"].python_param.param_str
    baseline = read_solver(largefov.write_experiment(str(tmp_path / "base"), "softmax",
                                                   stage="baseline", data_root=root,
                                                   list_file=list_path))
    assert (baseline.lr_policy, baseline.max_iter) == ("step", 6000)
    assert baseline.net.endswith("train_baseline.prototxt")


# --- loading weights ---------------------------------------------------------------------

def small_deploy(caffe, tmp_path, name, **options):
    return build(caffe, tmp_path, largefov.deploy_net(size=33, **options), name=name)


def test_load_weights_copies_by_layer_name(caffe, tmp_path):
    source = small_deploy(caffe, tmp_path, "a.prototxt", width_div=8)
    model = str(tmp_path / "a.caffemodel")
    source.save(model)
    target = small_deploy(caffe, tmp_path, "b.prototxt", width_div=8)
    assert not np.array_equal(target.params["conv1_1"][0].data, source.params["conv1_1"][0].data)
    loaded = netweights.load_weights(target, model)
    assert loaded == [name for name in TRUNK if name in source.params]
    for name in source.params:
        for a, b in zip(source.params[name], target.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_load_weights_from_a_train_net_snapshot(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    train = build(caffe, tmp_path, largefov.train_net("cosine", data_root=root, list_file=list_path,
                                                    batch_size=1, crop=33, width_div=16),
                  caffe.TRAIN, name="train.prototxt")
    model = str(tmp_path / "train.caffemodel")
    train.save(model)
    train.layers[0].close()
    target = small_deploy(caffe, tmp_path, "d.prototxt", width_div=16)
    loaded, ignored = netweights.check_weights(target, model)
    assert {"label_shrink", "loss", "loss_template"} <= set(ignored)
    netweights.load_weights(target, model)
    np.testing.assert_array_equal(target.params["fc7"][0].data, train.params["fc7"][0].data)


def test_mismatched_width_names_the_layer_and_shapes(caffe, tmp_path):
    model = str(tmp_path / "half.caffemodel")
    small_deploy(caffe, tmp_path, "half.prototxt", width_div=16).save(model)
    target = small_deploy(caffe, tmp_path, "full.prototxt", width_div=8)
    with pytest.raises(ToolkitError, match=r"'conv1_1' weights has shape \(4, 3, 3, 3\) but the "
                                           r"net expects \(8, 3, 3, 3\).*width_div"):
        netweights.load_weights(target, model)


def test_other_num_classes_names_fc8(caffe, tmp_path):
    model = str(tmp_path / "five.caffemodel")
    small_deploy(caffe, tmp_path, "five.prototxt", width_div=16, num_classes=5).save(model)
    target = small_deploy(caffe, tmp_path, "21.prototxt", width_div=16)
    with pytest.raises(ToolkitError, match=r"'fc8_voc12' weights has shape \(5, 64, 1, 1\)"):
        netweights.load_weights(target, model)
    loaded, ignored = netweights.check_weights(
        small_deploy(caffe, tmp_path, "five2.prototxt", width_div=16, num_classes=5), model)
    assert "fc8_voc12" in loaded and ignored == []


def test_missing_layers_and_missing_file(caffe, tmp_path):
    from caffe.proto import caffe_pb2
    source = small_deploy(caffe, tmp_path, "s.prototxt", width_div=16)
    model_path = str(tmp_path / "s.caffemodel")
    source.save(model_path)
    model = netweights.read_caffemodel(model_path)
    kept = [layer for layer in model.layer if layer.name != "fc8_voc12"]
    del model.layer[:]
    model.layer.extend(kept)
    partial = str(tmp_path / "partial.caffemodel")
    with open(partial, "wb") as f:
        f.write(model.SerializeToString())
    target = small_deploy(caffe, tmp_path, "t.prototxt", width_div=16)
    with pytest.raises(ToolkitError, match="no weights for layer.*fc8_voc12"):
        netweights.load_weights(target, partial)
    assert "fc8_voc12" not in netweights.load_weights(target, partial, require_all=False)
    with pytest.raises(ToolkitError, match="weights file not found: .*nothing.caffemodel"):
        netweights.load_weights(target, str(tmp_path / "nothing.caffemodel"))
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\xff\xfe not a protobuf \x00\x01" * 50)
    with pytest.raises(ToolkitError, match="garbage.caffemodel"):
        netweights.load_weights(target, str(garbage))
    # A layer with a bias missing: Caffe would abort on the blob count; this names it.
    model = caffe_pb2.NetParameter()
    model.ParseFromString(open(model_path, "rb").read())
    del layers_by_name(model)["conv1_1"].blobs[1:]
    short = str(tmp_path / "short.caffemodel")
    with open(short, "wb") as f:
        f.write(model.SerializeToString())
    with pytest.raises(ToolkitError, match="'conv1_1' has 1 parameter blob"):
        netweights.load_weights(target, short)


def v1_caffemodel(source_path, out_path, shape_change=None):
    """Rewrite a caffemodel in the V1 ('layers', legacy 4-D blob dims) format of older
    published models."""
    from caffe.proto import caffe_pb2
    model = caffe_pb2.NetParameter()
    model.ParseFromString(open(source_path, "rb").read())
    old = caffe_pb2.NetParameter(name=model.name)
    for layer in model.layer:
        if not layer.blobs:
            continue
        v1 = old.layers.add(name=layer.name, type=caffe_pb2.V1LayerParameter.CONVOLUTION)
        for blob in layer.blobs:
            dims = (1,) * (4 - len(blob.shape.dim)) + tuple(blob.shape.dim)
            if shape_change and layer.name == shape_change:
                dims = dims[:-1] + (dims[-1] + 1,)
            legacy = v1.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3])
            values = np.zeros(int(np.prod(dims)), np.float32)
            values[:len(blob.data)] = blob.data
            legacy.data.extend(values.tolist())
    with open(out_path, "wb") as f:
        f.write(old.SerializeToString())


def test_v1_caffemodels_are_checked_and_loaded(caffe, tmp_path):
    source = small_deploy(caffe, tmp_path, "v.prototxt", width_div=16)
    model = str(tmp_path / "new.caffemodel")
    source.save(model)
    v1 = str(tmp_path / "v1.caffemodel")
    v1_caffemodel(model, v1)
    target = small_deploy(caffe, tmp_path, "w.prototxt", width_div=16)
    netweights.load_weights(target, v1)
    np.testing.assert_array_equal(target.params["fc6"][0].data, source.params["fc6"][0].data)
    np.testing.assert_array_equal(target.params["fc6"][1].data, source.params["fc6"][1].data)
    bad = str(tmp_path / "v1bad.caffemodel")
    v1_caffemodel(model, bad, shape_change="fc7")
    with pytest.raises(ToolkitError, match=r"'fc7' weights has shape \(64, 64, 1, 2\)"):
        netweights.load_weights(target, bad)


def test_zero_iterations_is_refused_not_replaced_by_the_default(tmp_path):
    """`iterations or 2000` once turned 0 into a 2000-iteration run with snapshots every 1."""
    from python_layers import ToolkitError
    with pytest.raises(ToolkitError, match="iterations must be a positive integer, got 0"):
        largefov.write_experiment(str(tmp_path), "cosine", iterations=0)
