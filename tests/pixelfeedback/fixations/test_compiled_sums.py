"""The Convolution rule's two gathers (issue #29): the NumPy path and the optional compiled
one (numba, ``rules/compiled_sums``) each give the reference's fixations and dead units, on
both of its layouts (pixel-major copies of small maps, Caffe's channel-major large ones).
tests/pixelfeedback/fixations/test_reference.py runs whichever the machine has; this file runs each."""
import importlib

import numpy as np
import pytest

from pixelfeedback.fixations import BackTracker, NetGraph
from tests.pixelfeedback.fixations.test_reference import (CLASSES, PER_LAYER_K, SHRINK_RULES, assert_same,
                                            nets)  # noqa: F401 (nets is a fixture)

convolution = importlib.import_module("pixelfeedback.fixations.rules.convolution")


def compiled_module():
    try:
        from pixelfeedback.fixations.rules import compiled_sums
    except ImportError:
        return None
    return compiled_sums


PATHS = ["numpy", pytest.param("compiled", marks=pytest.mark.skipif(
    compiled_module() is None, reason="numba is not installed (the compiled gather is optional)"))]


@pytest.fixture(params=PATHS)
def gather(request, monkeypatch):
    """Force the NumPy or the compiled gather for the test."""
    kernels = compiled_module() if request.param == "compiled" else None
    monkeypatch.setattr(convolution, "_compiled", [kernels])
    monkeypatch.delenv(convolution.NO_NUMBA_ENV, raising=False)
    return request.param


def test_the_setting_switches_the_path(gather, monkeypatch):
    assert (convolution.compiled_kernels() is not None) == (gather == "compiled")
    monkeypatch.setenv(convolution.NO_NUMBA_ENV, "1")
    assert convolution.compiled_kernels() is None


@pytest.mark.parametrize("kind", ["chain", "branch", "upsample", "rect"])
@pytest.mark.parametrize("shift", ["none", "partial", "full"])
def test_each_path_matches_the_reference(nets, gather, kind, shift):
    dead = 0
    for seed in range(1, 5):
        net, graph, score = nets(kind, seed)
        for k in ("1", "2", "resolution", PER_LAYER_K[kind]):
            for chunk in (2 ** 21, 300):
                dead += assert_same(net, graph, score, shift, k, python_rules=SHRINK_RULES,
                                    chunk_elements=chunk)[1]
    assert dead > 0


def test_each_path_on_largefov(caffe, tmp_path, gather):
    # conv1_x and conv2_x read Caffe's channel-major maps (their windows cover fewer cells
    # than the maps have), the deeper layers pixel-major copies
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    from pixelfeedback.nets.weights import fill_random_weights

    size = 97
    path = tmp_path / "largefov.prototxt"
    write_net(largefov.deploy_net(width_div=16, num_classes=CLASSES, size=size), str(path))
    net = caffe.Net(str(path), caffe.TEST)
    fill_random_weights(net, seed=5)
    net.blobs["data"].data[...] = np.random.RandomState(5).normal(0, 40, (1, 3, size, size))
    net.forward()
    graph = NetGraph.from_prototxt(str(path))
    for shift, k in (("partial", "1"), ("full", "2"), ("none", "resolution")):
        assert_same(net, graph, "fc8_voc12", shift, k)


def test_paths_agree_with_plain_float64_ranking(nets, gather):
    for kind in ("chain", "branch", "upsample"):
        net, graph, score = nets(kind, 2)
        for k in ("1", "3"):
            plain = BackTracker(net, graph, shift="full", k=k)
            plain.float32_ranking = False
            expected = plain.trace_items(score, keep_layers=True)
            got = BackTracker(net, graph, shift="full", k=k, threads=2,
                              chunk_elements=500).trace_items(score, keep_layers=True)
            for item, classes in expected.items():
                for cls, result in classes.items():
                    assert got[item][cls].dead == result.dead
                    for blob, units in result.layers.items():
                        np.testing.assert_array_equal(got[item][cls].layers[blob], units)
