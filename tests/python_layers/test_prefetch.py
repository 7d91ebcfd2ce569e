"""Batches made ahead (python_layers/prefetch.py): the data layer's worker processes give
the batches of one source bit for bit, resume where told, re-raise a worker's error by its
message, leave nothing behind, and run under `caffe train` (issue #29, item 3)."""
import json
import os
import subprocess

import numpy as np
import pytest

from pixelfeedback import training
from python_layers import ToolkitError
from python_layers.prefetch import ProcessPrefetcher
from python_layers.seg_data import BatchSource, parse_params, read_pairs
from tests.conftest import REPO
from tests.python_layers.test_seg_data import batches, data_net


def source_of(root, list_path, start_batch=0, **params):
    params = parse_params(json.dumps(dict(root=root, list=list_path, batch_size=2,
                                          crop_size=33, seed=4, **params)))
    return BatchSource(read_pairs(root, list_path), params, train=True,
                       start_batch=start_batch)


def made(prefetcher, count):
    out = [tuple(array.copy() for array in prefetcher.get()) for _ in range(count)]
    prefetcher.close()
    return out


def shared_memory_names():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_workers_make_the_batches_of_one_source(tiny_voc, workers):
    root, list_path = tiny_voc
    source = source_of(root, list_path)
    expected = [source.next_batch() for _ in range(7)]   # past an epoch: 7 x 2 > the images
    before = shared_memory_names()
    got = made(ProcessPrefetcher(source_of(root, list_path), 2, workers), 7)
    for (data, label), (want_data, want_label) in zip(got, expected):
        np.testing.assert_array_equal(data, want_data)
        np.testing.assert_array_equal(label, want_label)
    assert shared_memory_names() <= before   # the slots' names went at once


def test_workers_start_at_the_resumed_batch(tiny_voc):
    root, list_path = tiny_voc
    uninterrupted = source_of(root, list_path)
    expected = [uninterrupted.next_batch() for _ in range(5)][3:]
    got = made(ProcessPrefetcher(source_of(root, list_path, start_batch=3), 3, 2), 2)
    for (data, label), (want_data, want_label) in zip(got, expected):
        np.testing.assert_array_equal(data, want_data)
        np.testing.assert_array_equal(label, want_label)


def test_a_workers_error_is_raised_by_its_message(tiny_voc):
    root, list_path = tiny_voc
    source = source_of(root, list_path, shuffle=False)
    os.remove(source.pairs[2][0])   # the first image of batch 1
    prefetcher = ProcessPrefetcher(source, 2, 2)
    try:
        prefetcher.get()
        with pytest.raises(ToolkitError, match="cannot read|not found|No such"):
            prefetcher.get()
        with pytest.raises(ToolkitError):   # and again, without waiting
            prefetcher.get()
    finally:
        prefetcher.close()
    assert not any(p.is_alive() for p in prefetcher.processes)


def test_the_layer_with_workers_gives_the_threads_batches(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    common = dict(root=root, list=list_path, batch_size=2, crop_size=33, seed=5, prefetch=2)
    threaded = batches(data_net(caffe, tmp_path, **common), 4)
    net = data_net(caffe, tmp_path, workers=2, **common)
    processes = list(net.layers[0].prefetcher.processes)
    in_workers = batches(net, 4)
    for (d1, l1), (d2, l2) in zip(threaded, in_workers):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    assert not any(p.is_alive() for p in processes)


def test_workers_need_prefetch(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    with pytest.raises(ToolkitError, match="'workers' 2 needs prefetch >= 1"):
        data_net(caffe, tmp_path, root=root, list=list_path, prefetch=0, workers=2)
    with pytest.raises(ToolkitError, match=r"'workers' must be an integer in \[0, 64\]"):
        data_net(caffe, tmp_path, root=root, list=list_path, workers=-1)


def test_caffe_train_with_data_workers(tmp_path, tiny_voc):
    root, list_path = tiny_voc
    params = json.dumps(dict(root=root, list=list_path, batch_size=2, crop_size=33, seed=1,
                             prefetch=2, workers=2))
    net = tmp_path / "net.prototxt"
    net.write_text(f"""layer {{ name: "data" type: "Python" top: "data" top: "label"
  python_param {{ module: "python_layers.seg_data" layer: "ImageSegData"
    param_str: '{params}' }} }}
layer {{ name: "score" type: "Convolution" bottom: "data" top: "score"
  convolution_param {{ num_output: 21 kernel_size: 1 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} }}
""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.001\nmax_iter: 12\nlr_policy: "fixed"\n'
                      'display: 4\nsolver_mode: CPU\n')
    before = shared_memory_names()
    done = subprocess.run([training.caffe_binary(), "train", "-solver", str(solver)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=dict(os.environ, GLOG_minloglevel="0"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Optimization Done" in done.stderr
    assert "leaked" not in done.stderr and "Traceback" not in done.stderr
    assert shared_memory_names() <= before
