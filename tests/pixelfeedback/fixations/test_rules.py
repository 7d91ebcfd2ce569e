"""Fixation transitions on tiny nets whose answers can be worked out by hand (SPEC section 4).

Every net runs through real Caffe with hand-set inputs and weights; the comments give the
hand computation the assertions check. Units are (channel, y, x); "data units" are the
fixations at the input blob.
"""
import numpy as np
import pytest

from python_layers import ToolkitError
from pixelfeedback.fixations import (
    BackTracker,
    KStrategy,
    NetGraph,
    k_needed_per_layer,
    pooled_size,
    run_forward,
)


def build(caffe, tmp_path, text, params=None, inputs=None, name="net.prototxt"):
    """A caffe.Net from ``text`` with hand-set params {layer: [W, b]} and inputs, forwarded."""
    path = tmp_path / name
    path.write_text(text)
    net = caffe.Net(str(path), caffe.TEST)
    for layer, arrays in (params or {}).items():
        for index, array in enumerate(arrays):
            net.params[layer][index].data[...] = array
    for blob, array in (inputs or {}).items():
        net.blobs[blob].data[...] = array
    net.forward()
    return net, NetGraph.from_prototxt(str(path))


def units_of(net, graph, score="score", cls=1, blob=None, **options):
    """The set of units of class ``cls`` at ``blob`` (default: the data blob)."""
    tracker = BackTracker(net, graph, **options)
    result = tracker.trace(score, classes=[cls], keep_layers=blob is not None)[cls]
    array = result.layers[blob] if blob is not None else result.units
    return set(map(tuple, array.tolist()))


def input_layer(name, *dims):
    shape = " ".join(f"dim: {d}" for d in dims)
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" '
            f"input_param {{ shape {{ {shape} }} }} }}\n")


def conv_layer(name, bottom, top=None, **param):
    fields = " ".join(f"{key}: {value}" for key, value in param.items())
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" '
            f"convolution_param {{ {fields} }} }}\n")


# ----------------------------------------------------------------------------- convolution

SHIFT_NET = input_layer("data", 1, 2, 3, 3) + conv_layer("score", "data", num_output=2,
                                                          kernel_size=3)


def shift_net(caffe, tmp_path):
    # data channel 0: a single 1 at (0,0); channel 1: 1 at the centre, 3 at (2,2).
    # score = 3x3 conv without padding -> one position. Class 0 has zero weights and bias
    # (score 0); class 1 has all-ones filters: channel 0 contributes 1, channel 1 1+3 = 4,
    # so class 1 (score 5) wins and channel 1 is the top-1 channel.
    data = np.zeros((1, 2, 3, 3), np.float32)
    data[0, 0, 0, 0] = 1
    data[0, 1, 1, 1] = 1
    data[0, 1, 2, 2] = 3
    weights = np.zeros((2, 2, 3, 3), np.float32)
    weights[1] = 1
    return build(caffe, tmp_path, SHIFT_NET, {"score": [weights, np.zeros(2)]}, {"data": data})


def test_conv_shift_variants_choose_tap_or_centre(caffe, tmp_path):
    net, graph = shift_net(caffe, tmp_path)
    # full: channel 1's largest single tap is 3 at (2,2); none: the centre tap (1,1);
    # partial: dilation 1, so full shift.
    assert units_of(net, graph, shift="full") == {(1, 2, 2)}
    assert units_of(net, graph, shift="partial") == {(1, 2, 2)}
    assert units_of(net, graph, shift="none") == {(1, 1, 1)}
    # K=2 adds channel 0 (contribution 1): its only non-zero tap (0,0) or the centre.
    assert units_of(net, graph, shift="full", k=2) == {(1, 2, 2), (0, 0, 0)}
    assert units_of(net, graph, shift="none", k=2) == {(1, 1, 1), (0, 1, 1)}


def test_dilated_conv_partial_shift_keeps_centre(caffe, tmp_path):
    # 5x5 input, 3x3 kernel with dilation 2, no padding: one output whose taps are rows and
    # columns {0, 2, 4}. Input: 1 at (2,2) (the centre tap), 5 at (4,4). All-ones class-1
    # filter: score 6 > 0 (class 0 scores 0).
    text = input_layer("data", 1, 1, 5, 5) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=3, dilation=2)
    data = np.zeros((1, 1, 5, 5), np.float32)
    data[0, 0, 2, 2] = 1
    data[0, 0, 4, 4] = 5
    weights = np.zeros((2, 1, 3, 3), np.float32)
    weights[1] = 1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    assert units_of(net, graph, shift="full") == {(0, 4, 4)}      # the strongest tap
    assert units_of(net, graph, shift="partial") == {(0, 2, 2)}   # dilation 2: centre
    assert units_of(net, graph, shift="none") == {(0, 2, 2)}


def test_centre_in_padding_moves_to_nearest_valid_tap(caffe, tmp_path):
    # 3x3 input of ones, 3x3 kernel, pad 2: 5x5 output whose window at (y,x) covers input
    # rows y-2..y. Class 1's filter is 1 only at tap (2,2), i.e. input (y,x): score 1 for
    # y,x <= 2, else 0; class 0 has bias 0.5, so class 1 wins exactly at y,x in 0..2.
    text = input_layer("data", 1, 1, 3, 3) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=3, pad=2)
    weights = np.zeros((2, 1, 3, 3), np.float32)
    weights[1, 0, 2, 2] = 1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.array([0.5, 0])]},
                       {"data": np.ones((1, 1, 3, 3), np.float32)})
    # full: tap (2,2) is the only non-zero contribution -> input (y,x): all 9 cells.
    assert units_of(net, graph, shift="full") == {(0, y, x) for y in range(3) for x in range(3)}
    # none: the centre tap (1,1) is input (y-1, x-1); at y=0 it is padding and moves to the
    # nearest tap inside (tap 2 = row 0), so rows and columns are max(y-1, 0): {0, 1}.
    assert units_of(net, graph, shift="none") == {(0, y, x) for y in range(2) for x in range(2)}


def test_stride_two_with_padding_never_picks_padding(caffe, tmp_path):
    # 3x3 input 1..9 (value 1 + 3y + x), 3x3 kernel, stride 2, pad 1 -> 2x2 output; output
    # (y,x) covers input rows 2y-1..2y+1. Class 1's filter is all -1, so every contribution
    # is negative and a padding tap (0) would "win" if it were a candidate. Class 0 has bias
    # -100, so class 1 wins everywhere.
    text = input_layer("data", 1, 1, 3, 3) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=3, stride=2, pad=1)
    data = (1 + np.arange(9, dtype=np.float32)).reshape(1, 1, 3, 3)
    weights = np.zeros((2, 1, 3, 3), np.float32)
    weights[1] = -1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.array([-100, 0])]},
                       {"data": data})
    assert net.blobs["score"].data.shape == (1, 2, 2, 2)
    # Full shift: the largest (least negative) valid tap is the smallest input value in the
    # window, its top-left valid cell: output (0,0) -> (0,0); (0,1) -> (0,1); (1,0) -> (1,0);
    # (1,1) -> (1,1). Padding taps (value 0) are never chosen.
    assert units_of(net, graph, shift="full") == {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}
    # No shift: centres are input (2y, 2x): (0,0), (0,2), (2,0), (2,2).
    assert units_of(net, graph, shift="none") == {(0, 0, 0), (0, 0, 2), (0, 2, 0), (0, 2, 2)}


def test_rectangular_kernel_uses_its_own_axes(caffe, tmp_path):
    # 2x3 input, kernel_h 2 / kernel_w 1 -> 1x3 output; output x sees rows 0,1 of column x.
    # Class 1 weights (1, 2) down the column; class 0 bias -100. Contributions per tap:
    # x=0: (1, 2) -> row 1; x=1: (5, 2) -> row 0; x=2: (1, 6) -> row 1.
    # No shift: the centre tap of a 2-tall kernel is tap (2-1)//2 = 0, i.e. row 0.
    text = (input_layer("data", 1, 1, 2, 3) +
            'layer { name: "score" type: "Convolution" bottom: "data" top: "score" '
            "convolution_param { num_output: 2 kernel_h: 2 kernel_w: 1 } }\n")
    weights = np.zeros((2, 1, 2, 1), np.float32)
    weights[1, 0, :, 0] = [1, 2]
    data = np.array([[1, 5, 1], [1, 1, 3]], np.float32).reshape(1, 1, 2, 3)
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.array([-100, 0])]},
                       {"data": data})
    assert units_of(net, graph, shift="full") == {(0, 1, 0), (0, 0, 1), (0, 1, 2)}
    assert units_of(net, graph, shift="none") == {(0, 0, 0), (0, 0, 1), (0, 0, 2)}


def test_float32_near_tie_is_decided_in_float64(caffe, tmp_path):
    # Two channels, 1x2 kernel of ones. Channel 0 contributes 1; channel 1 contributes
    # 1 + 2**-25, which float32 rounds to 1 (a false tie that would pick channel 0).
    # The engine's float32 pass must see the gap is within rounding and decide in float64:
    # channel 1, at its strongest tap (0, 0).
    text = input_layer("data", 1, 2, 1, 2) + conv_layer("score", "data", num_output=2,
                                                         kernel_h=1, kernel_w=2)
    data = np.array([[1, 0], [1, 2.0 ** -25]], np.float32).reshape(1, 2, 1, 2)
    weights = np.zeros((2, 2, 1, 2), np.float32)
    weights[1] = 1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    assert np.float32(1) + np.float32(2.0 ** -25) == np.float32(1)
    assert units_of(net, graph, shift="full") == {(1, 0, 0)}


def test_grouped_conv_stays_in_its_group(caffe, tmp_path):
    # data (4 channels, 1x2); score = 1x1 conv, group 2: class 0 reads channels 0,1 with
    # weights (1, 2), class 1 reads channels 2,3 with weights (3, 1).
    # x=0: channels (1,1,0,0) -> scores (3, 0) -> class 0; contributions (1, 2) -> channel 1.
    # x=1: channels (0,0,1,1) -> scores (0, 4) -> class 1; contributions (3, 1) -> channel 2.
    text = input_layer("data", 1, 4, 1, 2) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=1, group=2)
    data = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32).reshape(1, 4, 1, 2)
    weights = np.array([[1, 2], [3, 1]], np.float32).reshape(2, 2, 1, 1)
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    assert units_of(net, graph, cls=0) == {(1, 0, 0)}
    assert units_of(net, graph, cls=1) == {(2, 0, 1)}


# ----------------------------------------------------------------------------- pooling

POOL_TEXT = (input_layer("data", 1, 2, 4, 4) +
             'layer { name: "score" type: "Pooling" bottom: "data" top: "score" '
             "pooling_param { pool: %s kernel_size: 3 stride: 2 pad: 1 } }\n")


def pool_data():
    # Channel 0 (class 0) is 1 everywhere; channel 1 (class 1) is 100 - (4y + x): positive
    # (pooling ranks values: a window with no positive cell would be dead), largest at the
    # top-left. Class 1 wins at every output.
    data = np.full((1, 2, 4, 4), 1, np.float32)
    data[0, 1] = 100 - np.arange(16, dtype=np.float32).reshape(4, 4)
    return data


def test_max_pool_window_over_padding_and_caffe_rounding(caffe, tmp_path):
    net, graph = build(caffe, tmp_path, POOL_TEXT % "MAX", inputs={"data": pool_data()})
    # Caffe: ceil((4 + 2 - 3) / 2) + 1 = 3, and (3-1)*2 = 4 < 4 + 1, so 3x3 outputs.
    assert net.blobs["score"].data.shape == (1, 2, 3, 3)
    assert pooled_size(4, 3, 2, 1) == 3
    # Window (py,px) covers rows 2py-1..2py+1 inside 0..3; the largest value is the top-left
    # valid cell (max(2py-1, 0), max(2px-1, 0)): rows and columns {0, 1, 3}. The last window
    # (rows 3..5) holds only row 3.
    expected = {(1, y, x) for y in (0, 1, 3) for x in (0, 1, 3)}
    assert units_of(net, graph, shift="full") == expected
    # K=2 adds the next cell in each window: (0,0)->(0,1); (0,1)->(0,2) ... e.g. the corner
    # window (2,2) has one valid cell (3,3), so it adds nothing.
    with_two = units_of(net, graph, k=2)
    assert expected < with_two
    assert (1, 0, 1) in with_two and (1, 0, 2) in with_two


def test_pooled_size_rule_drops_window_starting_in_padding():
    # 5 wide, kernel 2, stride 2, pad 1: ceil(5/2) + 1 = 4 windows, but window 3 would start
    # at 3*2 - 1 = 5 = the padding; Caffe's rule ((4-1)*2 >= 5+1) drops it -> 3.
    assert pooled_size(5, 2, 2, 1) == 3
    assert pooled_size(6, 2, 2, 1) == 4
    assert pooled_size(7, 3, 2, 0) == 3


def test_ave_pool_top_k_cells_without_padding(caffe, tmp_path):
    net, graph = build(caffe, tmp_path, POOL_TEXT % "AVE", inputs={"data": pool_data()})
    # AVE divides by the padded window size, but ranking is by cell value: top-2 valid cells
    # of window (0,0) (cells (0,0),(0,1),(1,0),(1,1), values 100,99,96,95) are (0,0),(0,1).
    got = units_of(net, graph, k=2)
    window_00 = {(1, 0, 0), (1, 0, 1)}
    assert window_00 <= got
    # The padded corner cells never appear; only real cells do.
    assert all(0 <= y < 4 and 0 <= x < 4 for _, y, x in got)
    # K=1 gives the top-left valid cell of each window, as for MAX.
    assert units_of(net, graph) == {(1, y, x) for y in (0, 1, 3) for x in (0, 1, 3)}


# ----------------------------------------------------------------------------- inner product

IP_TEXT = (input_layer("data", 1, 2, 1, 2) +
           'layer { name: "score" type: "InnerProduct" bottom: "data" top: "score" '
           "inner_product_param { num_output: 2 } }\n")


def ip_net(caffe, tmp_path):
    # Flattened input (c*2 + x): x = (3, 1, 1, 2), i.e. units (0,0,0) (0,0,1) (1,0,0) (1,0,1).
    # Class 1 row W = (1, -1, 2, 0.5): contributions (3, -1, 2, 1), score 5 > 0 = class 0.
    data = np.array([3, 1, 1, 2], np.float32).reshape(1, 2, 1, 2)
    weights = np.zeros((2, 4), np.float32)
    weights[1] = [1, -1, 2, 0.5]
    return build(caffe, tmp_path, IP_TEXT, {"score": [weights, np.zeros(2)]}, {"data": data})


def test_inner_product_top_k_and_all_positive(caffe, tmp_path):
    net, graph = ip_net(caffe, tmp_path)
    assert units_of(net, graph) == {(0, 0, 0)}                           # top-1: 3
    assert units_of(net, graph, k=2) == {(0, 0, 0), (1, 0, 0)}           # 3 and 2
    assert units_of(net, graph, ip_rule="positive") == {(0, 0, 0), (1, 0, 0), (1, 0, 1)}


def test_points_count_distinct_channels(caffe, tmp_path):
    net, graph = ip_net(caffe, tmp_path)
    # K=2 fixates channels 0 and 1 at pixel (0,0): one point with count 2.
    result = BackTracker(net, graph, k=2).trace("score")[1]
    assert result.points.tolist() == [[0, 0]]
    assert result.counts.tolist() == [2]
    assert result.n_seeds == 1 and result.class_id == 1 and result.item == 0


# ----------------------------------------------------------------------------- eltwise, concat

def two_inputs(op_fields):
    return (input_layer("data", 1, 2, 1, 2) + input_layer("data2", 1, 2, 1, 2) +
            'layer { name: "score" type: "Eltwise" bottom: "data" bottom: "data2" top: "score" '
            f"eltwise_param {{ {op_fields} }} }}\n")


def test_eltwise_sum_ranks_bottoms_by_coeff_times_value(caffe, tmp_path):
    # score = data - 2 * data2. Channel 0 (class 0) is 0 in both. Channel 1:
    # x=0: data 3, data2 -1 -> terms (3, 2): score 5, data wins.
    # x=1: data 1, data2 -2 -> terms (1, 4): score 5, data2 wins (ignoring coeff it would not).
    data = np.array([[0, 0], [3, 1]], np.float32).reshape(1, 2, 1, 2)
    data2 = np.array([[0, 0], [-1, -2]], np.float32).reshape(1, 2, 1, 2)
    net, graph = build(caffe, tmp_path, two_inputs("operation: SUM coeff: 1 coeff: -2"),
                       inputs={"data": data, "data2": data2})
    assert units_of(net, graph, blob="data") == {(1, 0, 0)}
    assert units_of(net, graph, blob="data2") == {(1, 0, 1)}
    assert units_of(net, graph, blob="data2", k=2) == {(1, 0, 0), (1, 0, 1)}


def test_eltwise_max_takes_the_larger_bottom(caffe, tmp_path):
    # Channel 1: x=0 data 3 > data2 1; x=1 data 1 < data2 4. Channel 0 is -1 (class 0 loses).
    data = np.array([[-1, -1], [3, 1]], np.float32).reshape(1, 2, 1, 2)
    data2 = np.array([[-1, -1], [1, 4]], np.float32).reshape(1, 2, 1, 2)
    net, graph = build(caffe, tmp_path, two_inputs("operation: MAX"),
                       inputs={"data": data, "data2": data2})
    assert units_of(net, graph, blob="data") == {(1, 0, 0)}
    assert units_of(net, graph, blob="data2") == {(1, 0, 1)}


def test_concat_sends_each_channel_to_its_bottom(caffe, tmp_path):
    # score = concat(data (1 channel), data2 (2 channels)): class 0 = data ch 0, class 1 =
    # data2 ch 0, class 2 = data2 ch 1. x=0: (5, 1, 0) -> class 0; x=1: (0, 1, 7) -> class 2.
    text = (input_layer("data", 1, 1, 1, 2) + input_layer("data2", 1, 2, 1, 2) +
            'layer { name: "score" type: "Concat" bottom: "data" bottom: "data2" top: "score" }\n')
    data = np.array([5, 0], np.float32).reshape(1, 1, 1, 2)
    data2 = np.array([[1, 1], [0, 7]], np.float32).reshape(1, 2, 1, 2)
    net, graph = build(caffe, tmp_path, text, inputs={"data": data, "data2": data2})
    assert units_of(net, graph, cls=0, blob="data") == {(0, 0, 0)}
    assert units_of(net, graph, cls=2, blob="data2") == {(1, 0, 1)}
    tracker = BackTracker(net, graph)
    result = tracker.trace("score", skip_background=False, keep_layers=True)
    assert sorted(result) == [0, 2]
    assert "data2" not in result[0].layers or len(result[0].layers["data2"]) == 0


# ----------------------------------------------------------------------------- deconv + crop

DECONV_TEXT = (input_layer("data", 1, 1, 2, 2) + input_layer("ref", 1, 1, 3, 3) +
               'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
               "convolution_param { num_output: 2 kernel_size: 3 stride: 2 } }\n"
               'layer { name: "score" type: "Crop" bottom: "up" bottom: "ref" top: "score" '
               "crop_param { axis: 2 offset: 1 } }\n")


def deconv_net(caffe, tmp_path):
    # Deconvolution k3 s2 p0: input (y',x') reaches output (2y'+i, 2x'+j), i,j in 0..2, so
    # the output is 5x5. Class 1's filter is all ones, class 0's zero with bias 0.5.
    # Input (1 at (0,0), 2 at (1,1)): up1 = 1 on rows/cols 0..2, 2 on rows/cols 2..4, 3 at
    # (2,2). Crop offset 1 keeps up rows/cols 1..3; class 1 (> 0.5) at up positions
    # (1,1) (1,2) (2,1) (2,2) (2,3) (3,2) (3,3).
    data = np.array([[1, 0], [0, 2]], np.float32).reshape(1, 1, 2, 2)
    weights = np.zeros((1, 2, 3, 3), np.float32)
    weights[0, 1] = 1
    return build(caffe, tmp_path, DECONV_TEXT, {"up": [weights, np.array([0.5, 0])]},
                 {"data": data})


def test_deconvolution_and_crop_exact_index_maps(caffe, tmp_path):
    net, graph = deconv_net(caffe, tmp_path)
    assert net.blobs["up"].data.shape == (1, 2, 5, 5)
    # Crop: score (y,x) -> up (y+1, x+1), channel kept.
    assert units_of(net, graph, blob="up") == {
        (1, 1, 1), (1, 1, 2), (1, 2, 1), (1, 2, 2), (1, 2, 3), (1, 3, 2), (1, 3, 3)}
    # Full shift: each up unit takes its strongest source; (2,2) has sources (0,0) (value 1)
    # and (1,1) (value 2) -> (1,1). Up (1,1), (1,2), (2,1) come only from (0,0); the rest
    # from (1,1).
    assert units_of(net, graph, shift="full") == {(0, 0, 0), (0, 1, 1)}
    # No shift: per axis the valid tap nearest the centre tap 1 (ties: the lower tap).
    # Row 1: tap 1 -> y'=0. Row 2: taps 2 (y'=0) and 0 (y'=1) tie -> tap 0, y'=1. Row 3:
    # tap 1 -> y'=1. Up (1,2) -> (0,1) (a cell of value 0: no shift is position-only).
    assert units_of(net, graph, shift="none") == {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}


# ----------------------------------------------------------------------------- zoom (interp)

def test_zoom_python_layer_bilinear_sources(caffe, tmp_path):
    # Zoom x2 (align corners): 2x2 -> 3x3; output (y,x) reads input (y/2, x/2).
    # Channel 0 (class 0) = 3.6 everywhere; channel 1 = [[1, 8], [2, 3]] zooms to
    # [[1, 4.5, 8], [1.5, 3.5, 5.5], [2, 2.5, 3]]: class 1 at (0,1), (0,2), (1,2).
    text = (input_layer("data", 1, 2, 2, 2) +
            'layer { name: "score" type: "Python" bottom: "data" top: "score" python_param '
            '{ module: "python_layers.interp" layer: "Zoom" param_str: "{\\"factor\\": 2}" } }\n')
    data = np.full((1, 2, 2, 2), 3.6, np.float32)
    data[0, 1] = [[1, 8], [2, 3]]
    net, graph = build(caffe, tmp_path, text, inputs={"data": data})
    # (0,1): 0.5*1 vs 0.5*8 -> (0,1); (0,2): only (0,1) has weight; (1,2): 0.5*8 vs 0.5*3.
    assert units_of(net, graph) == {(1, 0, 1)}
    # K=2: (0,1) adds (0,0); (1,2) adds (1,1); (0,2) has a single source.
    assert units_of(net, graph, k=2) == {(1, 0, 0), (1, 0, 1), (1, 1, 1)}
    # K=3 adds nothing: cells of weight 0 (e.g. (1,0) for output (0,1)) are no candidates.
    assert units_of(net, graph, k=3) == {(1, 0, 0), (1, 0, 1), (1, 1, 1)}


# ----------------------------------------------------------------------------- identities, V1

def test_in_place_relu_and_dropout_are_identities(caffe, tmp_path):
    # mid = identity 1x1 conv of data (2, -5) -> ReLU in place -> (2, 0); Dropout in place;
    # score class 1 = mid0 - mid1 = 2 > 0 (class 0 zero). Contributions after ReLU (2, 0)
    # choose mid channel 0 (before ReLU they would be (2, 5): channel 1) -> data channel 0.
    text = (input_layer("data", 1, 2, 1, 1)
            + conv_layer("mid", "data", num_output=2, kernel_size=1) +
            'layer { name: "relu" type: "ReLU" bottom: "mid" top: "mid" }\n'
            'layer { name: "drop" type: "Dropout" bottom: "mid" top: "mid" }\n'
            'layer { name: "relu_b" type: "ReLU" bottom: "mid" top: "mid_b" }\n'
            + conv_layer("score", "mid_b", num_output=2, kernel_size=1))
    score_w = np.zeros((2, 2, 1, 1), np.float32)
    score_w[1, :, 0, 0] = [1, -1]
    net, graph = build(caffe, tmp_path, text, {
        "mid": [np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), np.zeros(2)],
        "score": [score_w, np.zeros(2)]},
        {"data": np.array([2, -5], np.float32).reshape(1, 2, 1, 1)})
    assert units_of(net, graph, blob="mid") == {(0, 0, 0)}
    assert units_of(net, graph) == {(0, 0, 0)}
    assert graph.versions["mid"] == 3   # conv output, after ReLU, after Dropout


V1_TEXT = """
input: "data"
input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3
layers { name: "score" type: CONVOLUTION bottom: "data" top: "score"
         convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "score" top: "score" }
"""


def test_v1_prototxt_reads_like_v2(caffe, tmp_path):
    graph = NetGraph.from_text(V1_TEXT)
    assert [(layer.name, layer.type) for layer in graph.layers] == [("score", "Convolution"),
                                                                    ("relu", "ReLU")]
    assert graph.inputs == ["data"]
    net, graph = shift_net(caffe, tmp_path)
    v1_net, v1_graph = build(caffe, tmp_path, V1_TEXT, {"score": [net.params["score"][0].data,
                                                                  np.zeros(2)]},
                             {"data": net.blobs["data"].data}, name="v1.prototxt")
    for shift in ("full", "none"):
        assert units_of(v1_net, v1_graph, shift=shift) == units_of(net, graph, shift=shift)


def test_train_only_layers_are_left_out():
    text = (input_layer("data", 1, 1, 2, 2) +
            'layer { name: "drop" type: "Dropout" bottom: "data" top: "data" '
            "include { phase: TRAIN } }\n")
    assert [l.name for l in NetGraph.from_text(text).layers] == ["data"]
    assert [l.name for l in NetGraph.from_text(text, phase="TRAIN").layers] == ["data", "drop"]


# ----------------------------------------------------------------------------- K strategies

FRACTION_TEXT = input_layer("data", 1, 5, 1, 1) + conv_layer("score", "data", num_output=2,
                                                              kernel_size=1)


def fraction_net(caffe, tmp_path):
    # Class 1 = sum of 5 channels (2, 4, -3, 1, 3): contributions sorted 4 (ch1), 3 (ch4),
    # 2 (ch0), 1 (ch3), -3 (ch2); positive total 10, running sums 4, 7, 9, 10.
    weights = np.zeros((2, 5, 1, 1), np.float32)
    weights[1] = 1
    data = np.array([2, 4, -3, 1, 3], np.float32).reshape(1, 5, 1, 1)
    return build(caffe, tmp_path, FRACTION_TEXT, {"score": [weights, np.zeros(2)]}, {"data": data})


def test_fraction_k_reaches_share_of_positive_total(caffe, tmp_path):
    net, graph = fraction_net(caffe, tmp_path)
    assert units_of(net, graph, k="fraction:0.3") == {(1, 0, 0)}                    # 4 >= 3
    assert units_of(net, graph, k="fraction:0.5") == {(1, 0, 0), (4, 0, 0)}         # 7 >= 5
    assert units_of(net, graph, k="fraction:0.75") == {(1, 0, 0), (4, 0, 0), (0, 0, 0)}
    assert units_of(net, graph, k="fraction:1") == {(1, 0, 0), (4, 0, 0), (0, 0, 0), (3, 0, 0)}


def test_k_needed_per_layer_matches_hand_count(caffe, tmp_path):
    net, graph = fraction_net(caffe, tmp_path)
    # Thresholds 3.5, 6.5, 9.5 of the total 10 need K = 1, 2, 4.
    means, counts = k_needed_per_layer(BackTracker(net, graph), "score",
                                       fractions=[0.35, 0.65, 0.95], return_counts=True)
    assert list(means) == ["score"]
    np.testing.assert_array_equal(means["score"], [1, 2, 4])
    assert counts["score"] == 1


RESOLUTION_TEXT = (input_layer("data", 1, 2, 4, 4) +
                   conv_layer("mid", "data", num_output=2, kernel_size=1) +
                   'layer { name: "score" type: "Pooling" bottom: "mid" top: "score" '
                   "pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n")


def test_resolution_k_follows_stride(caffe, tmp_path):
    # mid = identity 1x1 conv (stride 1: K = 1); pool k2 s2 (K = 2*2 = 4). Data channel 0 is
    # 0.5 everywhere; channel 1 is 1..4 in the top-left 2x2 block, 0 elsewhere. Pooled:
    # class 1 (4 > 0.5) only at (0,0). Resolution K takes all 4 cells of that window, then
    # one channel each (channel 1, the only non-zero contribution under identity weights).
    data = np.zeros((1, 2, 4, 4), np.float32)
    data[0, 0] = 0.5
    data[0, 1, :2, :2] = [[1, 2], [3, 4]]
    net, graph = build(caffe, tmp_path, RESOLUTION_TEXT,
                       {"mid": [np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1), np.zeros(2)]},
                       {"data": data})
    block = {(1, y, x) for y in range(2) for x in range(2)}
    assert units_of(net, graph, k="resolution") == block
    assert units_of(net, graph, k=1) == {(1, 1, 1)}                       # the max, 4
    assert units_of(net, graph, k="score=1,default=resolution") == {(1, 1, 1)}
    assert units_of(net, graph, k=KStrategy.per_layer({"score": 4}, default=1)) == block


def test_resolution_k_of_strided_conv_counts_channels(caffe, tmp_path):
    # 5 channels, 2x2 input, conv k2 s2 -> one output; resolution K = 2*2 = 4 channels.
    # All-ones class-1 filters; channel c holds c+1 at (0,0): contributions 1..5, so the top
    # 4 are channels 1..4, each at its only non-zero tap (0,0).
    text = input_layer("data", 1, 5, 2, 2) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=2, stride=2)
    data = np.zeros((1, 5, 2, 2), np.float32)
    data[0, :, 0, 0] = np.arange(1, 6)
    weights = np.zeros((2, 5, 2, 2), np.float32)
    weights[1] = 1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    assert units_of(net, graph, k="resolution", shift="full") == {(c, 0, 0) for c in range(1, 5)}


def test_k_strategy_parser():
    assert KStrategy.parse("3").kind == "fixed" and KStrategy.parse("3").value == 3
    assert KStrategy.parse("fraction:0.1").value == 0.1
    assert KStrategy.parse("resolution").kind == "resolution"
    per_layer = KStrategy.parse("conv5_1=2,pool1=fraction:0.2,default=resolution")
    assert per_layer.for_layer("conv5_1").value == 2
    assert per_layer.for_layer("pool1").kind == "fraction"
    assert per_layer.for_layer("other").kind == "resolution"
    assert KStrategy.parse("conv1=3").for_layer("x").value == 1
    for bad in ("0", "two", "fraction:2", "fraction:x", "conv1=2,oops"):
        with pytest.raises(ToolkitError):
            KStrategy.parse(bad)


# ----------------------------------------------------------------------------- batch items

def test_batch_items_never_mix(caffe, tmp_path):
    # The shift net with two items: item 1 has channel 1's strong cell at (0,2) instead.
    text = input_layer("data", 2, 2, 3, 3) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=3)
    data = np.zeros((2, 2, 3, 3), np.float32)
    data[:, 0, 0, 0] = 1
    data[:, 1, 1, 1] = 1
    data[0, 1, 2, 2] = 3
    data[1, 1, 0, 2] = 3
    weights = np.zeros((2, 2, 3, 3), np.float32)
    weights[1] = 1
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    results = BackTracker(net, graph, shift="full").trace_items("score")
    assert results[0][1].units.tolist() == [[1, 2, 2]]
    assert results[1][1].units.tolist() == [[1, 0, 2]]
    assert results[1][1].item == 1


def test_seed_region_makes_other_units_background(caffe, tmp_path):
    # score = data through an identity 1x1 conv; class 1 wins at all three cells. With the
    # last cell outside the seed region (say, over the padding) it counts as background:
    # class 1 seeds (1,0,0), (1,0,1) and traces back to them; background gets (0,0,2)
    # (channel 0 holds 0.5: a contribution, so the background unit is not dead).
    text = input_layer("data", 1, 2, 1, 3) + conv_layer("score", "data", num_output=2,
                                                         kernel_size=1)
    data = np.full((1, 2, 1, 3), 0.5, np.float32)
    data[0, 1] = 1
    weights = np.eye(2, dtype=np.float32).reshape(2, 2, 1, 1)
    net, graph = build(caffe, tmp_path, text, {"score": [weights, np.zeros(2)]}, {"data": data})
    region = np.array([[True, True, False]])
    traced = BackTracker(net, graph).trace("score", skip_background=False, seed_region=region)
    assert traced[1].n_seeds == 2 and sorted(traced[1].units.tolist()) == [[1, 0, 0], [1, 0, 1]]
    assert traced[0].n_seeds == 1 and traced[0].units.tolist() == [[0, 0, 2]]
    assert BackTracker(net, graph).trace("score")[1].n_seeds == 3  # no region: all three


def test_run_forward_reshapes_input(caffe, tmp_path):
    net, graph = shift_net(caffe, tmp_path)
    data = np.zeros((2, 3, 3), np.float32)
    data[1, 2, 2] = 3
    data[1, 1, 1] = 1
    run_forward(net, data)
    assert units_of(net, graph, shift="full") == {(1, 2, 2)}


# ----------------------------------------------------------------------------- errors

def test_unknown_layer_type_is_named(caffe, tmp_path):
    text = (input_layer("data", 1, 2, 1, 1) +
            'layer { name: "squash" type: "Sigmoid" bottom: "data" top: "score" }\n')
    data = np.array([0, 1], np.float32).reshape(1, 2, 1, 1)
    net, graph = build(caffe, tmp_path, text, inputs={"data": data})
    with pytest.raises(ToolkitError, match=r"'squash'.*'Sigmoid'"):
        BackTracker(net, graph).trace("score")


def test_softmax_error_says_to_seed_before_it(caffe, tmp_path):
    text = (input_layer("data", 1, 2, 1, 1) +
            'layer { name: "prob" type: "Softmax" bottom: "data" top: "prob" }\n')
    net, graph = build(caffe, tmp_path, text,
                       inputs={"data": np.array([0, 1], np.float32).reshape(1, 2, 1, 1)})
    with pytest.raises(ToolkitError, match="before the Softmax"):
        BackTracker(net, graph).trace("prob")


def test_unregistered_python_layer_is_named(caffe, tmp_path):
    text = (input_layer("data", 1, 2, 5, 5) +
            'layer { name: "shrink" type: "Python" bottom: "data" top: "score" python_param '
            '{ module: "python_layers.interp" layer: "LabelShrink" '
            'param_str: "{\\"factor\\": 2}" } }\n')
    data = np.zeros((1, 2, 5, 5), np.float32)
    data[0, 1] = 1
    net, graph = build(caffe, tmp_path, text, inputs={"data": data})
    with pytest.raises(ToolkitError, match="python_layers.interp.LabelShrink"):
        BackTracker(net, graph).trace("score")
    # Declared an identity, it passes.
    tracker = BackTracker(net, graph,
                          python_rules={("python_layers.interp", "LabelShrink"): "identity"})
    assert len(tracker.trace("score")[1].units) == 9


def test_class_not_in_prediction_is_an_error(caffe, tmp_path):
    net, graph = shift_net(caffe, tmp_path)
    with pytest.raises(ToolkitError, match=r"class 0 is not in the prediction.*predicted: 1"):
        BackTracker(net, graph).trace("score", classes=[0])


def test_point_budget_names_the_layer(caffe, tmp_path):
    net, graph = fraction_net(caffe, tmp_path)
    with pytest.raises(ToolkitError, match=r"blob 'data'.*'score'.*lower K"):
        BackTracker(net, graph, k=4, max_units=3).trace("score")
    assert len(BackTracker(net, graph, k=3, max_units=3).trace("score")[1].units) == 3


def test_bad_options_are_errors(caffe, tmp_path):
    net, graph = shift_net(caffe, tmp_path)
    with pytest.raises(ToolkitError, match="shift"):
        BackTracker(net, graph, shift="some")
    with pytest.raises(ToolkitError, match="'nope'"):
        BackTracker(net, graph, k="nope=2")
    with pytest.raises(ToolkitError, match="score blob 'fc8'"):
        BackTracker(net, graph).trace("fc8")
    with pytest.raises(ToolkitError, match="does not exist"):
        NetGraph.from_prototxt(str(tmp_path / "missing.prototxt"))
