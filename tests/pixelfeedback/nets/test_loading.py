"""Net loading (pixelfeedback.nets.loading) with real Caffe: what Caffe would abort the
process on (unknown layer types, broken Python layers, unknown bottoms, --gpu on a CPU-only
build) is a ToolkitError first, in-process; a valid net loads with and without weights."""
import os

import numpy as np
import pytest

from pixelfeedback.nets import loading
from python_layers import ToolkitError

INPUT = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
"""
CONV = """layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: %d kernel_size: 3
                            weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "constant" value: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
"""
TINY = INPUT + CONV % 2


def python_layer(module, cls, bottom="conv1"):
    return (f'layer {{ name: "zoom" type: "Python" bottom: "{bottom}" top: "zoom"\n'
            f'        python_param {{ module: "{module}" layer: "{cls}" '
            "param_str: '{\"factor\": 2}' } }\n")


@pytest.fixture
def write(tmp_path):
    def write(text, name="net.prototxt"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write


def error_of(call, *args, **kwargs):
    with pytest.raises(ToolkitError) as exc:
        call(*args, **kwargs)
    return str(exc.value)


# ----------------------------------------------------------------------------- check_prototxt

def test_interp_layer_is_named_before_caffe_could_abort(caffe, write):
    path = write(TINY + 'layer { name: "fc8_interp" type: "Interp" bottom: "conv1" '
                        'top: "fc8_interp" }\n')
    for call in (loading.check_prototxt, loading.load_net):   # load_net checks before Net
        message = error_of(call, path)
        assert message.startswith(f"{path}: layer 'fc8_interp' has type 'Interp', which this "
                                  "Caffe lacks")
        assert "python_layers" in message
    # still alive: the next Caffe call in this process works
    assert loading.load_net(write(TINY, "ok.prototxt")).blobs["conv1"].data.shape == (1, 2, 6, 6)


def test_valid_net_returns_the_net_parameter(caffe, write):
    net_param = loading.check_prototxt(write(TINY), phase="TEST")
    assert net_param.name == "tiny"
    assert [layer.name for layer in net_param.layer] == ["data", "conv1", "relu1"]


def test_python_layer_with_a_missing_module(caffe, write):
    message = error_of(loading.check_prototxt,
                       write(TINY + python_layer("python_layers.no_such_module", "Zoom")))
    assert "Python layer 'zoom'" in message
    assert "cannot import module 'python_layers.no_such_module'" in message
    assert "check python_param.module" in message


def test_python_layer_with_a_missing_class(caffe, write):
    message = error_of(loading.check_prototxt,
                       write(TINY + python_layer("python_layers.interp", "Zooom")))
    assert "Python layer 'zoom'" in message
    assert "module 'python_layers.interp' has no class 'Zooom'" in message
    assert "Zoom" in message.split("its classes:")[1]   # lists what there is


def test_python_layer_that_exists_loads(caffe, write):
    net = loading.load_net(write(TINY + python_layer("python_layers.interp", "Zoom")))
    assert net.blobs["zoom"].data.shape == (1, 2, 11, 11)   # (6 - 1) * 2 + 1


def test_v1_layers_with_known_types_pass(caffe, write):
    path = write('name: "v1"\ninput: "data"\n'
                 "input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n"
                 'layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"\n'
                 "         convolution_param { num_output: 2 kernel_size: 3 } }\n"
                 'layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }\n')
    assert len(loading.check_prototxt(path, phase="TEST").layers) == 2
    assert loading.load_net(path).blobs["conv1"].data.shape == (1, 2, 6, 6)


def test_v1_layer_type_this_caffe_lacks_is_named(caffe, write):
    if "WindowData" in set(caffe.layer_type_list()):
        pytest.skip("this Caffe has WindowData")
    path = write('name: "v1"\nlayers { name: "windows" type: WINDOW_DATA top: "data" }\n')
    assert "layer 'windows' has type 'WindowData', which this Caffe lacks" in \
        error_of(loading.check_prototxt, path)


def test_syntax_error_quotes_the_parser(caffe, write):
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    for text in (TINY + 'layer { name: "broken" type: "ReLU" \n',
                 TINY.replace('top: "conv1"\n', 'top: "conv1"\n interp_param { zoom_factor: 8 }\n',
                              1)):
        with pytest.raises(text_format.ParseError) as parse_error:
            text_format.Merge(text, caffe_pb2.NetParameter())
        path = write(text)
        message = error_of(loading.check_prototxt, path)
        assert message.startswith(f"{path}: not a net prototxt")
        assert str(parse_error.value) in message


def test_missing_prototxt_says_how_to_regenerate(caffe, tmp_path):
    path = str(tmp_path / "test.prototxt")
    message = error_of(loading.check_prototxt, path)
    assert path in message and "make prototxt" in message


def test_mixed_v1_and_v2_layers_are_refused(caffe, write):
    path = write(TINY + 'layers { name: "relu2" type: RELU bottom: "conv1" top: "conv1" }\n')
    assert "mixes V1 'layers' and V2 'layer'" in error_of(loading.check_prototxt, path)


def test_unknown_bottom_and_twice_made_top_are_caught(caffe, write):
    unknown = write(TINY + 'layer { name: "relu2" type: "ReLU" bottom: "conv9" top: "r" }\n')
    assert "layer 'relu2' reads blob 'conv9'" in error_of(loading.load_net, unknown)
    twice = write(TINY + 'layer { name: "relu2" type: "ReLU" bottom: "data" top: "conv1" }\n',
                  "twice.prototxt")
    assert "layer 'relu2' makes blob 'conv1'" in error_of(loading.load_net, twice)


def test_layers_of_the_other_phase_are_not_checked_for_that_phase(caffe, write):
    path = write(TINY + 'layer { name: "interp" type: "Interp" bottom: "conv1" top: "big"\n'
                        "        include { phase: TRAIN } }\n")
    assert "'Interp'" in error_of(loading.check_prototxt, path)          # every layer
    assert "'Interp'" in error_of(loading.load_net, path, phase="TRAIN")
    assert "big" not in loading.load_net(path, phase="TEST").blobs       # as Caffe filters


# ----------------------------------------------------------------------------- the device

def test_check_gpu_is_a_clear_error_on_this_build(caffe):
    caffe_dir = os.path.dirname(caffe.__file__)
    if loading._links_cuda(caffe_dir):
        device = 999   # a CUDA build: a device that does not exist
        expected = "cannot use GPU 999: the device does not exist"
    else:
        device = 0
        expected = ("cannot use GPU 0: this Caffe is a CPU-only build (build the CUDA one with "
                    "`docker/build_caffe.sh --cuda`); run without --gpu")
    message = error_of(loading.check_gpu, device)
    assert message.startswith(expected)
    assert loading._gpu_checks[device] == message      # cached for the process
    assert error_of(loading.check_gpu, device) == message
    assert error_of(loading.use_device, device) == message
    # this process is alive and Caffe still works on the CPU
    loading.use_device(None)
    assert caffe.layer_type_list()


def test_check_gpu_rejects_a_bad_id(caffe):
    assert "integer >= 0" in error_of(loading.check_gpu, -1)


# ----------------------------------------------------------------------------- load_net

def test_load_net_with_and_without_weights(caffe, write, tmp_path):
    path = write(TINY)
    fresh = loading.load_net(path)
    assert np.all(fresh.params["conv1"][1].data == 0.5)          # the fillers ran
    assert fresh.params["conv1"][0].data.std() > 0

    trained = loading.load_net(path)
    trained.params["conv1"][0].data[...] = np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3)
    trained.params["conv1"][1].data[...] = [1.0, -1.0]
    weights = str(tmp_path / "tiny.caffemodel")
    trained.save(weights)

    loaded = loading.load_net(path, weights)
    np.testing.assert_array_equal(loaded.params["conv1"][0].data,
                                  trained.params["conv1"][0].data)
    np.testing.assert_array_equal(loaded.params["conv1"][1].data, [1.0, -1.0])
    loaded.blobs["data"].data[...] = 1.0
    loaded.forward()
    assert loaded.blobs["conv1"].data.shape == (1, 2, 6, 6)

    wider = write(INPUT + CONV % 4, "wider.prototxt")            # weights of another net
    message = error_of(loading.load_net, wider, weights)
    assert "layer 'conv1' weights has shape" in message


def test_load_net_missing_weights_names_the_file(caffe, write, tmp_path):
    weights = str(tmp_path / "missing.caffemodel")
    message = error_of(loading.load_net, write(TINY), weights)
    assert weights in message and "weights/fetch.py --list" in message


def test_load_net_on_a_gpu_this_caffe_cannot_use(caffe, write):
    if loading._links_cuda(os.path.dirname(caffe.__file__)):
        pytest.skip("a CUDA build: GPU 0 may be usable")
    assert "CPU-only build" in error_of(loading.load_net, write(TINY), gpu=0)


def test_load_net_rejects_an_unknown_phase(caffe, write):
    assert "phase must be 'TEST' or 'TRAIN'" in error_of(loading.load_net, write(TINY),
                                                         phase="test")


def demo_model(tmp_path):
    from pixelfeedback.demo.model import DEMO_WEIGHTS, demo_model_files
    deploy, test = demo_model_files(str(tmp_path))
    return deploy, test, DEMO_WEIGHTS


@pytest.mark.parametrize("script", ["seg_fixations", "evaluate", "reproduce_table",
                                    "experiments"])
def test_gpu_on_a_cpu_build_is_a_clear_error_in_every_tool(script, tmp_path, capsys):
    """`--gpu 0` on this CPU-only Caffe: exit 2 and a message, never Caffe's SIGABRT."""
    from tests.conftest import load_script, write_tiny_voc

    deploy, test, weights = demo_model(tmp_path)
    write_tiny_voc(str(tmp_path), n_images=1, list_name="val.txt")
    out = str(tmp_path / "out")
    argv = {
        "seg_fixations": ["--gpu", "0", "--out", out],
        "evaluate": ["--model", test, "--weights", weights, "--data-root", str(tmp_path),
                     "--list", str(tmp_path / "val.txt"), "--out", out, "--gpu", "0"],
        "reproduce_table": ["--out", out, "--gpu", "0", "--iterations", "1"],
        "experiments": ["location", "--model", deploy, "--weights", weights, "--data-root",
                        str(tmp_path), "--list", str(tmp_path / "val.txt"), "--out", out,
                        "--gpu", "0"],
    }[script]
    status = load_script(os.path.join("tools", script + ".py")).main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: cannot use GPU 0: this Caffe is a CPU-only build"), err
    assert "Traceback" not in err
