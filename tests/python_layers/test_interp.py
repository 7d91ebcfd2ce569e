"""Label shrink and bilinear zoom (DeepLab's Interp): values by hand, sizes, and the Caffe
layers through a real caffe.Net, with Zoom's backward checked by finite differences."""
import json

import numpy as np
import pytest

from python_layers import ToolkitError
from python_layers.interp import (bilinear_matrix, shrink_label, shrunk_size, zoom_bilinear,
                                  zoom_bilinear_adjoint, zoomed_size)


def test_sizes_follow_interp_formulas():
    assert shrunk_size(321, 8) == 41
    assert shrunk_size(513, 8) == 65
    assert shrunk_size(65, 8) == 9
    assert zoomed_size(65, 8) == 513
    assert zoomed_size(41, 8) == 321
    assert zoomed_size(1, 8) == 1


def test_shrink_321_is_every_eighth_pixel(rng):
    label = rng.randint(0, 21, size=(2, 1, 321, 321)).astype(np.uint8)
    label[..., 5:40, 7:90] = 255
    shrunk = shrink_label(label, 8)
    assert shrunk.shape == (2, 1, 41, 41)
    assert shrunk.dtype == np.uint8
    np.testing.assert_array_equal(shrunk, label[..., ::8, ::8])


def test_shrink_samples_nearest_on_align_corners_grid():
    # 11 -> (11-1)//4 + 1 = 3 outputs at source coordinates 0, 5, 10 (ratio 10/2).
    label = np.arange(11 * 11).reshape(11, 11)
    np.testing.assert_array_equal(shrink_label(label, 4), label[np.ix_([0, 5, 10], [0, 5, 10])])
    # 12 -> 3 outputs at 0, 5.5, 11: 5.5 rounds half up to 6; ends are exact corners.
    label = np.arange(12 * 12).reshape(12, 12)
    np.testing.assert_array_equal(shrink_label(label, 4), label[np.ix_([0, 6, 11], [0, 6, 11])])


def test_shrink_keeps_ignore_label_unblended():
    label = np.zeros((9, 9), np.uint8)
    label[::2, ::2] = 255
    shrunk = shrink_label(label, 2)
    assert set(np.unique(shrunk)) == {255}


def test_zoom_by_hand():
    scores = np.array([[0.0, 1.0], [2.0, 3.0]])
    expected = np.array([[0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [2.0, 2.5, 3.0]])
    np.testing.assert_allclose(zoom_bilinear(scores, 2), expected)
    # factor 4 along one axis: quarters between the two values.
    np.testing.assert_allclose(zoom_bilinear(np.array([[0.0, 4.0]]), 4), [[0, 1, 2, 3, 4]])


def test_zoom_65_to_513_keeps_corners_and_grid(rng):
    scores = rng.randn(1, 3, 65, 65).astype(np.float32)
    zoomed = zoom_bilinear(scores, 8)
    assert zoomed.shape == (1, 3, 513, 513)
    assert zoomed.dtype == np.float32
    np.testing.assert_allclose(zoomed[..., ::8, ::8], scores, atol=1e-6)
    for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        np.testing.assert_allclose(zoomed[..., corner[0], corner[1]],
                                   scores[..., corner[0], corner[1]], atol=1e-6)


def test_zoom_of_a_constant_and_of_a_ramp_is_exact():
    np.testing.assert_allclose(zoom_bilinear(np.full((4, 5), 2.5), 3), np.full((10, 13), 2.5))
    ramp = np.add.outer(np.arange(4.0), 10 * np.arange(5.0))
    zoomed = zoom_bilinear(ramp, 3)
    np.testing.assert_allclose(zoomed, np.add.outer(np.arange(10) / 3, 10 * np.arange(13) / 3))


def test_adjoint_is_the_transpose(rng):
    x = rng.randn(2, 3, 5, 4)
    g = rng.randn(2, 3, zoomed_size(5, 3), zoomed_size(4, 3))
    assert np.isclose(np.sum(zoom_bilinear(x, 3) * g), np.sum(x * zoom_bilinear_adjoint(g, 3)))
    assert np.allclose(bilinear_matrix(5, 13).sum(axis=1), 1.0)


def test_bad_factor_is_a_toolkit_error():
    with pytest.raises(ToolkitError, match="factor"):
        zoom_bilinear(np.zeros((3, 3)), 0)


def _write_net(tmp_path, caffe, layer, factor, shape, force_backward=False):
    from caffe import layers as L
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=list(shape)))
    n.y = L.Python(n.x, python_param=dict(module="python_layers.interp", layer=layer,
                                          param_str=json.dumps({"factor": factor})))
    proto = n.to_proto()
    proto.force_backward = force_backward
    path = tmp_path / f"{layer}.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), caffe.TEST)


def test_label_shrink_layer_in_caffe(caffe, tmp_path, rng):
    net = _write_net(tmp_path, caffe, "LabelShrink", 8, (2, 1, 65, 65))
    label = rng.randint(0, 5, size=(2, 1, 65, 65)).astype(np.float32)
    label[:, :, :20] = 255
    net.blobs["x"].data[...] = label
    net.forward()
    assert net.blobs["y"].data.shape == (2, 1, 9, 9)
    np.testing.assert_array_equal(net.blobs["y"].data, label[..., ::8, ::8])


def test_zoom_layer_forward_and_backward_by_finite_differences(caffe, tmp_path, rng):
    shape = (2, 3, 4, 5)
    net = _write_net(tmp_path, caffe, "Zoom", 3, shape, force_backward=True)
    x = rng.randn(*shape).astype(np.float32)
    net.blobs["x"].data[...] = x
    net.forward()
    assert net.blobs["y"].data.shape == (2, 3, 10, 13)
    np.testing.assert_allclose(net.blobs["y"].data, zoom_bilinear(x, 3), atol=1e-6)

    weights = rng.randn(*net.blobs["y"].data.shape).astype(np.float32)
    net.backward(y=weights)
    analytic = net.blobs["x"].diff.copy()

    def objective(values):  # L = sum(weights * zoom(x)), evaluated by Caffe
        net.blobs["x"].data[...] = values
        net.forward()
        return float(np.sum(weights.astype(np.float64) * net.blobs["y"].data))

    eps = 1e-2
    numeric = np.zeros_like(analytic)
    for index in np.ndindex(*shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric[index] = (objective(plus) - objective(minus)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=1e-3)


def test_unknown_layer_key_names_the_key(caffe, tmp_path):
    from caffe import layers as L
    n = caffe.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 1, 9, 9]))
    n.y = L.Python(n.x, python_param=dict(module="python_layers.interp", layer="Zoom",
                                          param_str=json.dumps({"zoom": 8})))
    path = tmp_path / "bad.prototxt"
    path.write_text(str(n.to_proto()))
    with pytest.raises(ToolkitError, match="'zoom'"):
        caffe.Net(str(path), caffe.TEST)
