"""The Caffe foundation: the built Caffe imports, has the Python layer, and `caffe train`
runs from the repository root a net with Python layers from python_layers/."""
import json
import os
import re
import subprocess
import sys

from tests.conftest import REPO

CAFFE = os.path.join(sys.prefix, "bin", "caffe")


def test_pycaffe_imports_with_the_python_layer(caffe):
    assert "Python" in caffe.layer_type_list()
    assert "Convolution" in caffe.layer_type_list()
    import numpy
    assert int(numpy.__version__.split(".")[0]) < 2  # pycaffe's C++ uses the numpy 1 API


def test_caffe_tool_is_on_the_venv_path():
    result = subprocess.run([CAFFE, "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "1.0.0" in result.stdout + result.stderr


NET = """
name: "toy"
layer {{
  name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "ImageSegData"
                 param_str: '{data_params}' }}
}}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 8 kernel_size: 3 pad: 1
    weight_filler {{ type: "msra" }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param {{ num_output: 4 kernel_size: 1
    weight_filler {{ type: "gaussian" std: 0.01 }} bias_filler {{ type: "constant" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} }}
"""

SOLVER = """
net: "{net}"
base_lr: 0.01
lr_policy: "fixed"
momentum: 0.9
max_iter: 60
display: 5
snapshot: 0
snapshot_after_train: false
random_seed: 1
solver_mode: CPU
"""


def test_caffe_train_runs_a_python_layer_net_from_the_repo_root(tmp_path, tiny_voc):
    root, list_path = tiny_voc
    data_params = json.dumps({"root": root, "list": list_path, "batch_size": 2, "crop_size": 33,
                              "mirror": True, "shuffle": True, "seed": 3, "num_classes": 4})
    net_path = tmp_path / "toy.prototxt"
    net_path.write_text(NET.format(data_params=data_params))
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(SOLVER.format(net=net_path))
    result = subprocess.run([CAFFE, "train", "-solver", str(solver_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0"))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-3000:]
    losses = [float(x) for x in re.findall(r"Iteration \d+.*?, loss = ([-0-9.e+]+)", log)]
    assert len(losses) >= 10, log[-3000:]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.8 * first, losses
