"""A bad ``param_str`` (or other ToolkitError at setup) of the toolkit's Python layers: one
line naming the layer, the key and the allowed values, without a Python traceback, both
under raw ``caffe train -solver ...`` (exit 2) and ``caffe.Net`` (a ToolkitError that the
toolkit's tools print as one line; python_layers.one_line_errors)."""
import os
import subprocess

import pytest

from pixelfeedback import training
from python_layers import ToolkitError
from tests.conftest import REPO

LOSS_NET = """layer {{ name: "fc7" type: "Input" top: "fc7"
  input_param {{ shape {{ dim: 1 dim: 4 dim: 3 dim: 3 }} }} }}
layer {{ name: "fc8_voc12" type: "Input" top: "fc8_voc12"
  input_param {{ shape {{ dim: 1 dim: 3 dim: 3 dim: 3 }} }} }}
layer {{ name: "label" type: "Input" top: "label"
  input_param {{ shape {{ dim: 1 dim: 1 dim: 3 dim: 3 }} }} }}
layer {{ name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12"
  bottom: "label" top: "template_loss" loss_weight: 0.1
  python_param {{ module: "python_layers.template_loss" layer: "TemplateSimilarityLoss"
    param_str: '{param_str}' }} }}
"""
DATA_NET = """layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "ImageSegData"
    param_str: '{param_str}' }} }}
"""
ZOOM_NET = """layer {{ name: "data" type: "Input" top: "data"
  input_param {{ shape {{ dim: 1 dim: 1 dim: 4 dim: 4 }} }} }}
layer {{ name: "zoom" type: "Python" bottom: "data" top: "zoom"
  python_param {{ module: "python_layers.interp" layer: "Zoom" param_str: '{param_str}' }} }}
"""

CASES = [
    (LOSS_NET, '{"similarity": "cosin"}',
     "TemplateSimilarityLoss: 'similarity' must be one of 'cosine', 'correlation'"),
    (LOSS_NET, '{"similarty": "cosine"}',
     "TemplateSimilarityLoss: unknown param_str key 'similarty'; allowed keys: similarity"),
    (LOSS_NET, '{"similarity": cosine}', "TemplateSimilarityLoss param_str is not valid JSON"),
    (LOSS_NET, '{"selective": "yes"}', "TemplateSimilarityLoss: 'selective' must be true or false"),
    (LOSS_NET, '{"eps": -1}', "TemplateSimilarityLoss: 'eps' must be a small positive number"),
    (LOSS_NET, '{"ignore_label": -1}', "TemplateSimilarityLoss: 'ignore_label' must be an "
     "integer from 0 to 255 (labels are 8-bit PNGs; VOC uses 255), got -1"),
    (LOSS_NET, '{"ignore_label": 2}', "TemplateSimilarityLoss: 'ignore_label' 2 is a class id "
     "of fc8 (bottom[1] has 3 channels, classes 0..2); use a label value from 3 to 255"),
    (DATA_NET, '{"root": ".", "list": "x.txt", "batchsize": 2}',
     "ImageSegData: unknown param_str key 'batchsize'; known keys: batch_size"),
    (ZOOM_NET, '{"factor": 0}', "Zoom: 'factor' must be a positive integer, got 0"),
]


def write_net(tmp_path, template, param_str):
    net = tmp_path / "net.prototxt"
    net.write_text(template.format(param_str=param_str))
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.01\nmax_iter: 1\nlr_policy: "fixed"\n')
    return str(net), str(solver)


@pytest.mark.parametrize("template, param_str, message", CASES)
def test_raw_caffe_train_prints_one_line_and_exits_2(tmp_path, template, param_str, message):
    _, solver = write_net(tmp_path, template, param_str)
    done = subprocess.run([training.caffe_binary(), "train", "-solver", solver],
                          capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, GLOG_minloglevel="2"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: {message}"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("template, param_str, message", CASES)
def test_caffe_net_raises_the_one_line_without_a_traceback(tmp_path, template, param_str,
                                                           message, caffe, capfd):
    net, _ = write_net(tmp_path, template, param_str)
    with pytest.raises(ToolkitError) as error:
        caffe.Net(net, caffe.TRAIN)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
    assert "Traceback" not in capfd.readouterr().err


def test_training_quotes_the_layers_line(tmp_path):
    """training.train (the sweep, the demo) quotes the layer's message, not 'error: ...'."""
    _, solver = write_net(tmp_path, LOSS_NET, '{"eps": -1}')
    with pytest.raises(ToolkitError) as error:
        training.train(solver, str(tmp_path))
    message = str(error.value)
    assert "(exit 2)" in message and ": TemplateSimilarityLoss: 'eps' must be" in message
    assert "error: T" not in message
