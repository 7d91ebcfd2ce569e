"""Issue 28, case 5: param_str values of the data layer (python_layers/seg_data.py) and
the interp layers (python_layers/interp.py) that passed setup and failed later are refused
at setup, one line naming the key: a mean of NaN or inf (NaN data, NaN loss), more than 255
classes, an unbounded prefetch (memory), and crop, batch or zoom factor so large that
Caffe's Blob::Reshape aborts the whole process with a C++ stack."""
import os
import subprocess

import pytest

from pixelfeedback import training
from python_layers import ToolkitError
from tests.conftest import REPO
from tests.python_layers.test_layer_errors import DATA_NET, ZOOM_NET, write_net

DATA = '{{"root": ".", "list": "x.txt", {}}}'

CASES = [  # (net, param_str, the error line's start)
    (DATA_NET, DATA.format('"mean": [NaN, 116.7, 122.7]'),
     "ImageSegData: param_str key 'mean' must be a list of 3 finite numbers"),
    (DATA_NET, DATA.format('"mean": [104, Infinity, 122.7]'),
     "ImageSegData: param_str key 'mean' must be a list of 3 finite numbers"),
    (DATA_NET, DATA.format('"num_classes": 256'),
     "ImageSegData: param_str key 'num_classes' must be an integer in [1, 255], got 256"),
    (DATA_NET, DATA.format('"prefetch": 1000'),
     "ImageSegData: param_str key 'prefetch' must be an integer in [0, 16], got 1000"),
    (DATA_NET, DATA.format('"crop_size": 30000'),
     "ImageSegData: param_str key 'crop_size' 30000 with batch_size 1 makes a data blob of "
     "2700000000 values, more than a Caffe blob holds"),
    (DATA_NET, DATA.format('"crop_size": 321, "batch_size": 10000'),
     "ImageSegData: param_str key 'crop_size' 321 with batch_size 10000 makes a data blob"),
    (ZOOM_NET, '{"factor": 100000}',
     "Zoom: param_str key 'factor' 100000 makes a top of shape (1, 1, 300001, 300001)"),
]


@pytest.mark.parametrize("template, param_str, message", CASES)
def test_raw_caffe_train_refuses_at_setup(tmp_path, template, param_str, message):
    _, solver = write_net(tmp_path, template, param_str)
    done = subprocess.run([training.caffe_binary(), "train", "-solver", solver],
                          capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, GLOG_minloglevel="2"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: {message}"), done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "@ 0x" not in done.stderr


def test_caffe_net_raises_for_a_nan_mean(tmp_path, caffe):
    net, _ = write_net(tmp_path, DATA_NET, CASES[0][1])
    with pytest.raises(ToolkitError, match="'mean' must be a list of 3 finite numbers"):
        caffe.Net(net, caffe.TRAIN)


def test_a_root_that_is_no_folder_is_named(tmp_path, caffe):
    (tmp_path / "x.txt").write_text("/JPEGImages/a.jpg /SegmentationClass/a.png\n")
    param_str = f'{{"root": "{tmp_path}/nowhere", "list": "{tmp_path}/x.txt"}}'
    net, _ = write_net(tmp_path, DATA_NET, param_str)
    with pytest.raises(ToolkitError, match="param_str key 'root' .*nowhere' is not a folder"):
        caffe.Net(net, caffe.TRAIN)


def test_the_largest_values_still_pass(tmp_path, caffe):
    """The limits refuse only what cannot work: 255 classes, prefetch 16, a big crop."""
    from python_layers.seg_data import parse_params

    params = parse_params('{"root": ".", "list": "x", "num_classes": 255, "prefetch": 16, '
                          '"crop_size": 26000, "mean": [0, 255.5, -3]}')
    assert (params["num_classes"], params["prefetch"], params["crop_size"]) == (255, 16, 26000)
