"""Each fixation rule on its own: a hand-built ``TraceContext`` of tiny NumPy arrays and one
layer read from its prototxt text; no ``caffe.Net``.

A rule maps units (tag, c, y, x) of a top to units of the layer's bottoms; the comments work
out by hand which channel, tap or cell each unit must reach. Tag 0 is batch item 0 unless a
test gives ``item_of_tag``.
"""
import numpy as np
import pytest

from pixelfeedback.fixations import KNeededCollector, KStrategy
from pixelfeedback.fixations.graph import layer_from_text
from pixelfeedback.fixations.rules import (
    RULES,
    TraceContext,
    concat,
    convolution,
    crop,
    eltwise,
    flatten,
    identity,
    inner_product,
    interp,
    pooling,
    rule_for,
)
from pixelfeedback.fixations.rules.convolution import axis_taps
from pixelfeedback.fixations.units import Units
from python_layers import ToolkitError


def layer(kind, params="", bottoms=("in",), tops=("out",), name="L"):
    """A LayerSpec of ``kind`` with the given parameter text, bottoms and tops."""
    links = "".join(f' bottom: "{b}"' for b in bottoms) + "".join(f' top: "{t}"' for t in tops)
    return layer_from_text(f'name: "{name}" type: "{kind}"{links} {params}')


def f32(values, shape=None):
    array = np.asarray(values, np.float32)
    return array.reshape(shape) if shape is not None else array


def down(result, bottom=0):
    """The (c, y, x) set a rule's result sends to ``bottom`` (tags dropped)."""
    return {unit[1:] for b, units in result if b == bottom for unit in units.as_set()}


def run(rule, ctx, lay, c, y, x, tag=0, t=0):
    return rule(ctx, lay, t, Units.of(c, y, x, tag))


# ----------------------------------------------------------------------------- convolution

CONV3 = layer("Convolution", "convolution_param { num_output: 2 kernel_size: 3 }")


def shift_context(**options):
    # Input (1, 2, 3, 3): channel 0 holds 1 at (0,0); channel 1 holds 1 at (1,1) and 3 at
    # (2,2). Output channel 1 has all-ones filters, so at the single output position its
    # contributions are channel 0: 1, channel 1: 1 + 3 = 4 -> channel 1 first.
    X = np.zeros((1, 2, 3, 3), np.float32)
    X[0, 0, 0, 0] = 1
    X[0, 1, 1, 1] = 1
    X[0, 1, 2, 2] = 3
    W = np.zeros((2, 2, 3, 3), np.float32)
    W[1] = 1
    return TraceContext(bottoms=[X], top_shapes=[(1, 2, 1, 1)], params=[W], **options)


@pytest.mark.parametrize("float32_ranking", [True, False])
def test_convolution_channel_and_tap_for_each_shift(float32_ranking):
    def units(shift, k=1):
        ctx = shift_context(shift=shift, k=k, float32_ranking=float32_ranking)
        return down(run(convolution, ctx, CONV3, 1, 0, 0))

    # full: channel 1 at its strongest single tap, the 3 at (2,2).
    assert units("full") == {(1, 2, 2)}
    # partial: dilation 1, so as full.
    assert units("partial") == {(1, 2, 2)}
    # none: the window's centre tap (1,1).
    assert units("none") == {(1, 1, 1)}
    # K=2 adds channel 0 (contribution 1): at its only non-zero tap (0,0), or the centre.
    assert units("full", 2) == {(1, 2, 2), (0, 0, 0)}
    assert units("none", 2) == {(1, 1, 1), (0, 1, 1)}


def test_convolution_dilated_partial_shift_keeps_the_centre():
    # 5x5 input, 3x3 kernel of ones with dilation 2: one output whose taps are rows and
    # columns {0, 2, 4}. Input 1 at (2,2) (the centre tap), 5 at (4,4).
    lay = layer("Convolution", "convolution_param { num_output: 1 kernel_size: 3 dilation: 2 }")
    X = np.zeros((1, 1, 5, 5), np.float32)
    X[0, 0, 2, 2] = 1
    X[0, 0, 4, 4] = 5
    W = np.ones((1, 1, 3, 3), np.float32)

    def units(shift):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 1, 1)], params=[W], shift=shift)
        return down(run(convolution, ctx, lay, 0, 0, 0))

    assert units("full") == {(0, 4, 4)}      # the strongest tap: 5
    assert units("partial") == {(0, 2, 2)}   # dilation 2: the centre
    assert units("none") == {(0, 2, 2)}


def test_convolution_centre_in_padding_moves_inside_and_padding_only_windows_end():
    # 3x3 input of ones, 3x3 kernel, pad 2: output (y,x) covers input rows y-2..y and
    # columns x-2..x. Kernel of ones (every tap inside contributes 1).
    lay = layer("Convolution", "convolution_param { num_output: 1 kernel_size: 3 pad: 2 }")
    X = np.ones((1, 1, 3, 3), np.float32)
    ones = np.ones((1, 1, 3, 3), np.float32)
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 5, 5)], params=[ones], shift="none")
    # Output (0,0): taps 0, 1 are padding on both axes; the centre tap 1 moves to the
    # nearest tap inside, tap 2 = input row/column 0.
    assert down(run(convolution, ctx, lay, 0, 0, 0)) == {(0, 0, 0)}
    # Output (4,4): rows 2..4, only tap 0 (row 2) inside; centre tap 1 (row 3) -> tap 0.
    assert down(run(convolution, ctx, lay, 0, 4, 4)) == {(0, 2, 2)}
    assert ctx.dead == []
    # Only tap (2,2) has weight 1. Full shift at (0,0): that tap is the only one inside ->
    # input (0,0). At (4,4) the one tap inside (0,0) has weight 0: the contribution is
    # exactly 0, so the unit is dead (stopped, recorded in ctx.dead), not sent to a tap.
    W = np.zeros((1, 1, 3, 3), np.float32)
    W[0, 0, 2, 2] = 1
    full = TraceContext(bottoms=[X], top_shapes=[(1, 1, 5, 5)], params=[W], shift="full")
    assert down(run(convolution, full, lay, 0, 0, 0)) == {(0, 0, 0)}
    assert down(run(convolution, full, lay, 0, 4, 4)) == set()
    assert [u.as_set() for u in full.dead] == [{(0, 0, 4, 4)}]
    # pad 3 on a 3x3 input: output (0,0) covers rows -3..-1, wholly padding (only the bias):
    # no input contributes, so it is dead too.
    wide = layer("Convolution", "convolution_param { num_output: 1 kernel_size: 3 pad: 3 }")
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 7, 7)], params=[W])
    assert down(run(convolution, ctx, wide, 0, 0, 0)) == set()
    assert [u.as_set() for u in ctx.dead] == [{(0, 0, 0, 0)}]
    # Output (3,3) covers rows/columns 0..2, all inside; partial shift (dilation 1) takes
    # the strongest tap, (2,2) -> input (2,2). Output (0,0) adds nothing.
    assert down(run(convolution, ctx, wide, [0, 0], [0, 3], [0, 3])) == {(0, 2, 2)}


def test_convolution_never_picks_padding_even_when_all_contributions_are_negative():
    # 3x3 input 1..9 (1 + 3y + x), 3x3 filter of -1, stride 2, pad 1: output (1,1) covers
    # rows/columns 1..3, inside: 1..2. Contributions are all negative; a padding tap (0)
    # would win if it were a candidate. Full shift: the least negative valid product is
    # the smallest value, at (1,1).
    lay = layer("Convolution",
                "convolution_param { num_output: 1 kernel_size: 3 stride: 2 pad: 1 }")
    X = f32(1 + np.arange(9), (1, 1, 3, 3))
    W = -np.ones((1, 1, 3, 3), np.float32)
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 2, 2)], params=[W], shift="full")
    assert down(run(convolution, ctx, lay, 0, 1, 1)) == {(0, 1, 1)}


def test_convolution_both_gather_layouts_leave_padding_out():
    # 6x6 input, 3x3 kernel of ones, pad 1: output (0,0) covers rows/columns -1..1, inside
    # 0..1. Channel 0 holds 3 at (1,1), channel 1 holds 2 at (0,0): contributions 3 and 2 ->
    # channel 0, at (1,1). (Were the padding taps read at the clipped edge, channel 1 would
    # count its 2 four times.) One unit gathers straight from the map (27 tap cells <= 36
    # map cells); three units gather from the pixel-major copy (81 > 36).
    lay = layer("Convolution", "convolution_param { num_output: 1 kernel_size: 3 pad: 1 }")
    X = np.zeros((1, 2, 6, 6), np.float32)
    X[0, 0, 1, 1] = 3
    X[0, 1, 0, 0] = 2
    W = np.ones((1, 2, 3, 3), np.float32)
    for float32_ranking in (True, False):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 6, 6)], params=[W],
                           float32_ranking=float32_ranking)
        assert down(run(convolution, ctx, lay, 0, 0, 0)) == {(0, 1, 1)}
        # Outputs (0,0), (0,5), (5,0): (0,5) and (5,0) see only zeros: every contribution
        # is exactly 0, so both are dead (in both rankings) and only (0,0) goes down.
        assert down(run(convolution, ctx, lay, [0, 0, 0], [0, 0, 5], [0, 5, 0])) == {
            (0, 1, 1)}
        assert set().union(*(u.as_set() for u in ctx.dead)) == {(0, 0, 0, 5), (0, 0, 5, 0)}


def test_convolution_groups_read_only_their_channels():
    # 4 input channels, 1x1 kernel, group 2: output 0 reads channels 0,1 with weights (1, 2),
    # output 1 reads channels 2,3 with weights (3, 1). Input ones: output 0's contributions
    # (1, 2) -> channel 1; output 1's (3, 1) -> channel 2.
    lay = layer("Convolution", "convolution_param { num_output: 2 kernel_size: 1 group: 2 }")
    X = np.ones((1, 4, 1, 1), np.float32)
    W = f32([[1, 2], [3, 1]], (2, 2, 1, 1))
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 2, 1, 1)], params=[W])
    assert down(run(convolution, ctx, lay, 0, 0, 0)) == {(1, 0, 0)}
    assert down(run(convolution, ctx, lay, 1, 0, 0)) == {(2, 0, 0)}


def test_convolution_float32_near_tie_is_decided_in_float64():
    # Channel 0 contributes 1; channel 1 contributes 1 + 2**-25, which float32 rounds to 1
    # (a false tie that would pick channel 0). The float32 ranking sees the gap is within
    # its rounding bound and decides in float64: channel 1, at its strongest tap (0,0).
    lay = layer("Convolution", "convolution_param { num_output: 1 kernel_h: 1 kernel_w: 2 }")
    X = f32([[1, 0], [1, 2.0 ** -25]], (1, 2, 1, 2))
    W = np.ones((1, 2, 1, 2), np.float32)
    for float32_ranking in (True, False):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 1, 1)], params=[W], shift="full",
                           float32_ranking=float32_ranking)
        assert down(run(convolution, ctx, lay, 0, 0, 0)) == {(1, 0, 0)}


def test_deconvolution_taps_are_the_exact_transpose():
    # Deconvolution k3 s2 p0: input (y',x') reaches output (2y'+i, 2x'+j). Input 2x2
    # [[1, 0], [0, 2]], one input channel, filter of ones to output channel 0.
    # Output (1,2): rows: tap i=1 only (y'=0); columns: tap 0 -> x'=1, tap 2 -> x'=0.
    # Candidates (0,1) value 0 and (0,0) value 1.
    lay = layer("Deconvolution", "convolution_param { num_output: 1 kernel_size: 3 stride: 2 }")
    X = f32([[1, 0], [0, 2]], (1, 1, 2, 2))
    W = np.ones((1, 1, 3, 3), np.float32)

    def units(shift, y, x):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 5, 5)], params=[W], shift=shift)
        return down(run(convolution, ctx, lay, 0, y, x))

    assert units("full", 1, 2) == {(0, 0, 0)}   # the strongest source, value 1
    # none: row tap 1 (y'=0); the centre column tap 1 does not land (2 - 1 is odd), taps 0
    # and 2 tie at distance 1 -> the lower, tap 0 -> x'=1.
    assert units("none", 1, 2) == {(0, 0, 1)}
    # Output (2,2) reaches (0,0) (value 1) and (1,1) (value 2): full takes (1,1).
    assert units("full", 2, 2) == {(0, 1, 1)}


def test_axis_taps_of_a_strided_deconvolution_list_only_landing_taps():
    # kernel 3, stride 2: output 1 is reached by taps (1+0) % 2 + 2m = 1, 3 (3 is outside
    # the kernel); output 2 by taps 0 and 2, from inputs (2-0)/2 = 1 and (2-2)/2 = 0.
    taps, coord, inside = axis_taps(np.array([1, 2]), 3, 2, 0, 1, 2, deconv=True)
    assert taps.tolist() == [[1, 3], [0, 2]]
    assert inside.tolist() == [[True, False], [True, True]]
    assert coord[inside].tolist() == [0, 1, 0]
    # Convolution: every tap, input out*stride - pad + tap*dilation.
    taps, coord, inside = axis_taps(np.array([0]), 3, 1, 1, 2, 4, deconv=False)
    assert coord.tolist() == [[-1, 1, 3]] and inside.tolist() == [[False, True, True]]


def test_convolution_batch_items_never_mix_and_threads_change_nothing():
    # Two items: item 1 holds channel 1's strong cell at (0,2) instead of (2,2). Tags 0, 1
    # are items 0, 1; tag 2 is item 1 again (another class).
    ctx = shift_context(shift="full")
    X = np.concatenate([ctx.bottoms[0], ctx.bottoms[0]])
    X[1, 1, 2, 2] = 0
    X[1, 1, 0, 2] = 3
    tags = np.array([0, 1, 1], np.int64)
    options = dict(bottoms=[X], top_shapes=[(2, 2, 1, 1)], params=ctx.params, shift="full",
                   item_of_tag=tags, k=2)
    units = Units.of([1, 1, 1], [0, 0, 0], [0, 0, 0], tag=[0, 1, 2])
    expected = {(0, 1, 2, 2), (0, 0, 0, 0), (1, 1, 0, 2), (1, 0, 0, 0), (2, 1, 0, 2),
                (2, 0, 0, 0)}
    plain = convolution(TraceContext(**options), CONV3, 0, units)
    assert plain[0][1].as_set() == expected
    threaded = convolution(TraceContext(**options, chunk_elements=1, pool_map=map), CONV3, 0,
                           units)
    assert threaded[0][1].as_set() == expected


# ----------------------------------------------------------------------------- pooling

POOL = 'pooling_param {{ pool: {} kernel_size: 3 stride: 2 pad: 1 }}'


def pool_input():
    # One channel, 4x4, value 100 - (4y + x): positive, largest at the top-left, so a
    # window's first cell inside wins; K larger than the cells inside would add padding
    # cells if they were candidates.
    return (100 - np.arange(16, dtype=np.float32)).reshape(1, 1, 4, 4)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_window_top_k_without_padding(method):
    lay = layer("Pooling", POOL.format(method))

    def units(k, y, x):
        ctx = TraceContext(bottoms=[pool_input()], top_shapes=[(1, 1, 3, 3)], k=k)
        return down(run(pooling, ctx, lay, 0, y, x))

    # Window (0,0) covers rows/columns -1..1; inside: (0,0) 100, (0,1) 99, (1,0) 96, (1,1) 95.
    assert units(1, 0, 0) == {(0, 0, 0)}
    assert units(2, 0, 0) == {(0, 0, 0), (0, 0, 1)}
    assert units(9, 0, 0) == {(0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1)}   # 4 cells only
    # Window (2,2) covers rows/columns 3..5: only (3,3) is inside.
    assert units(2, 2, 2) == {(0, 3, 3)}
    # Resolution K = stride area = 4: the four inside cells of window (0,0).
    assert units("resolution", 0, 0) == units(9, 0, 0)


def test_pooling_ties_go_to_the_first_cell_and_channels_stay():
    # Channel 1 all equal: K=2 of window (1,1) (rows/columns 1..3) are its first two cells
    # in row-major order, (1,1) and (1,2), in channel 1.
    lay = layer("Pooling", POOL.format("MAX"))
    X = np.ones((1, 2, 4, 4), np.float32)
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 2, 3, 3)], k=2)
    assert down(run(pooling, ctx, lay, 1, 1, 1)) == {(1, 1, 1), (1, 1, 2)}


def test_global_pooling_uses_the_whole_map():
    # 2x3 map; resolution K = H * W = 6 takes every cell; K=2 the two largest, 9 and 7.
    lay = layer("Pooling", "pooling_param { pool: AVE global_pooling: true }")
    X = f32([[1, 9, 2], [7, 3, 0]], (1, 1, 2, 3))
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 1, 1)], k="resolution")
    assert down(run(pooling, ctx, lay, 0, 0, 0)) == {(0, y, x) for y in range(2)
                                                     for x in range(3)}
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 1, 1)], k=2)
    assert down(run(pooling, ctx, lay, 0, 0, 0)) == {(0, 0, 1), (0, 1, 0)}


def test_stochastic_pooling_is_named():
    lay = layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }", name="sto")
    ctx = TraceContext(bottoms=[np.ones((1, 1, 2, 2), np.float32)], top_shapes=[(1, 1, 1, 1)])
    with pytest.raises(ToolkitError, match="'sto'.*STOCHASTIC"):
        run(pooling, ctx, lay, 0, 0, 0)


# ----------------------------------------------------------------------------- inner product

IP = layer("InnerProduct", "inner_product_param { num_output: 2 }")


def ip_context(**options):
    # Flat input (c*2 + x) = (3, 1, 1, 2) of a (1, 2, 1, 2) blob. Row 1 = (1, -1, 2, 0.5):
    # contributions (3, -1, 2, 1). Row 0 = all -1: contributions (-3, -1, -1, -2).
    X = f32([3, 1, 1, 2], (1, 2, 1, 2))
    W = f32([[-1, -1, -1, -1], [1, -1, 2, 0.5]])
    return TraceContext(bottoms=[X], top_shapes=[(1, 2)], params=[W], **options)


def test_inner_product_top_k():
    assert down(run(inner_product, ip_context(), IP, 1, 0, 0)) == {(0, 0, 0)}        # 3
    assert down(run(inner_product, ip_context(k=2), IP, 1, 0, 0)) == {(0, 0, 0),     # 3, 2
                                                                      (1, 0, 0)}
    # All negative: still the largest, -1, the first of the tie (flat 1 -> (0, 0, 1)).
    assert down(run(inner_product, ip_context(), IP, 0, 0, 0)) == {(0, 0, 1)}


def test_inner_product_positive_rule():
    ctx = ip_context(ip_rule="positive")
    # Row 1: the positive contributors 3, 2, 1 -> flat 0, 2, 3.
    assert down(run(inner_product, ctx, IP, 1, 0, 0)) == {(0, 0, 0), (1, 0, 0), (1, 0, 1)}
    # Row 0 has none: it keeps its single largest (flat 1). Both rows in one tag merge.
    assert down(run(inner_product, ctx, IP, [0, 1], [0, 0], [0, 0])) == {
        (0, 0, 1), (0, 0, 0), (1, 0, 0), (1, 0, 1)}


def test_inner_product_on_a_flat_input_and_transposed_weights():
    # (N, D) input: inputs go down as (d, 0, 0). transpose: W is (D, outputs).
    lay = layer("InnerProduct", "inner_product_param { num_output: 2 transpose: true }")
    X = f32([[3, 1, 1, 2]])
    W = f32([[-1, -1, -1, -1], [1, -1, 2, 0.5]]).T.copy()
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 2)], params=[W], k=2)
    assert down(run(inner_product, ctx, lay, 1, 0, 0)) == {(0, 0, 0), (2, 0, 0)}


# ----------------------------------------------------------------------------- eltwise

def eltwise_layer(fields):
    return layer("Eltwise", f"eltwise_param {{ {fields} }}", bottoms=("a", "b"))


def test_eltwise_sum_ranks_bottoms_by_coeff_times_value():
    # out = a - 2b. At x=0: a 3, b -1 -> terms (3, 2): bottom a. At x=1: a 1, b -2 -> terms
    # (1, 4): bottom b (by the plain values it would be a).
    a = f32([3, 1], (1, 1, 1, 2))
    b = f32([-1, -2], (1, 1, 1, 2))
    lay = eltwise_layer("operation: SUM coeff: 1 coeff: -2")
    result = run(eltwise, TraceContext(bottoms=[a, b]), lay, [0, 0], [0, 0], [0, 1])
    assert down(result, 0) == {(0, 0, 0)} and down(result, 1) == {(0, 0, 1)}
    # K=2: both bottoms receive both units.
    result = run(eltwise, TraceContext(bottoms=[a, b], k=2), lay, [0, 0], [0, 0], [0, 1])
    assert down(result, 0) == down(result, 1) == {(0, 0, 0), (0, 0, 1)}


@pytest.mark.parametrize("operation", ["PROD", "MAX"])
def test_eltwise_prod_and_max_rank_by_value(operation):
    # a = (3, 1), b = (1, 4): x=0 -> a, x=1 -> b. Equal values (x=2: 5, 5) -> the lower
    # bottom, a.
    a = f32([3, 1, 5], (1, 1, 1, 3))
    b = f32([1, 4, 5], (1, 1, 1, 3))
    result = run(eltwise, TraceContext(bottoms=[a, b]), eltwise_layer(f"operation: {operation}"),
                 [0, 0, 0], [0, 0, 0], [0, 1, 2])
    assert down(result, 0) == {(0, 0, 0), (0, 0, 2)} and down(result, 1) == {(0, 0, 1)}


def test_eltwise_coeff_count_must_match():
    lay = eltwise_layer("operation: SUM coeff: 1")
    ctx = TraceContext(bottoms=[np.ones((1, 1, 1, 1), np.float32)] * 2)
    with pytest.raises(ToolkitError, match="1 coeffs for 2 bottoms"):
        run(eltwise, ctx, lay, 0, 0, 0)


# ----------------------------------------------------------------------------- concat, crop

def test_concat_sends_each_channel_to_its_owner():
    # Channels: bottom 0 has 1 (channel 0), bottom 1 has 2 (channels 1, 2 of the top).
    lay = layer("Concat", bottoms=("a", "b"))
    ctx = TraceContext(bottoms=[np.zeros((1, 1, 1, 2)), np.zeros((1, 2, 1, 2))],
                       top_shapes=[(1, 3, 1, 2)])
    result = run(concat, ctx, lay, [0, 1, 2], [0, 0, 0], [1, 0, 1])
    assert down(result, 0) == {(0, 0, 1)}
    assert down(result, 1) == {(0, 0, 0), (1, 0, 1)}   # top channels 1, 2 -> 0, 1 of b


def test_concat_along_height_shifts_rows():
    # axis 2: bottom a has rows 0..1, b rows 2..4 of the top; top row 3 is b's row 1.
    lay = layer("Concat", "concat_param { axis: 2 }", bottoms=("a", "b"))
    ctx = TraceContext(bottoms=[np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 2))],
                       top_shapes=[(1, 1, 5, 2)])
    result = run(concat, ctx, lay, [0, 0], [1, 3], [0, 1])
    assert down(result, 0) == {(0, 1, 0)} and down(result, 1) == {(0, 1, 1)}


def test_concat_along_the_batch_axis_is_an_error():
    lay = layer("Concat", "concat_param { axis: 0 }", bottoms=("a", "b"), name="cat")
    ctx = TraceContext(bottoms=[np.zeros((1, 1, 1, 1))] * 2, top_shapes=[(2, 1, 1, 1)])
    with pytest.raises(ToolkitError, match="'cat'.*axis 0"):
        run(concat, ctx, lay, 0, 0, 0)


def test_crop_adds_the_offsets():
    # axis 2, offset 1: (c, y, x) -> (c, y+1, x+1) of bottom 0; bottom 1 gets nothing.
    lay = layer("Crop", "crop_param { axis: 2 offset: 1 }", bottoms=("big", "ref"))
    ctx = TraceContext(bottoms=[np.zeros((1, 2, 5, 5)), np.zeros((1, 2, 3, 3))])
    assert run(crop, ctx, lay, 1, 2, 0)[0][0] == 0
    assert down(run(crop, ctx, lay, 1, 2, 0)) == {(1, 3, 1)}
    # axis 1, offsets (1, 2, 3) for channel, row, column.
    lay = layer("Crop", "crop_param { axis: 1 offset: 1 offset: 2 offset: 3 }",
                bottoms=("big", "ref"))
    assert down(run(crop, ctx, lay, 0, 0, 0)) == {(1, 2, 3)}


def test_crop_on_the_batch_axis_is_an_error():
    lay = layer("Crop", "crop_param { axis: 0 offset: 1 }", bottoms=("big", "ref"), name="cr")
    ctx = TraceContext(bottoms=[np.zeros((2, 1, 2, 2)), np.zeros((1, 1, 1, 1))])
    with pytest.raises(ToolkitError, match="'cr'.*batch axis"):
        run(crop, ctx, lay, 0, 0, 0)


# ----------------------------------------------------------------------------- flatten

def test_flatten_maps_the_flat_index_back():
    # Bottom (1, 2, 2, 3): 6 values per channel. Flat 7 -> channel 1, rest 1 -> (0, 1);
    # flat 5 -> channel 0, rest 5 -> (1, 2).
    lay = layer("Flatten")
    ctx = TraceContext(bottoms=[np.zeros((1, 2, 2, 3))])
    assert down(run(flatten, ctx, lay, [7, 5], [0, 0], [0, 0])) == {(1, 0, 1), (0, 1, 2)}


# ----------------------------------------------------------------------------- interp

def interp_context(k=1):
    # 2x2 input [[1, 8], [2, 3]] up to 3x3 (align corners): output (y,x) reads input
    # (y/2, x/2).
    return TraceContext(bottoms=[f32([[1, 8], [2, 3]], (1, 1, 2, 2))],
                        top_shapes=[(1, 1, 3, 3)], k=k)


ZOOM = layer("Python", 'python_param { module: "python_layers.interp" layer: "Zoom" '
                       'param_str: "{\\"factor\\": 2}" }')


@pytest.mark.parametrize("lay", [layer("Interp"), ZOOM], ids=["Interp", "Zoom"])
def test_interp_bilinear_sources_strongest_first(lay):
    # Output (1,1) reads (0.5, 0.5): four corners of weight 1/4, values 1, 8, 2, 3 ->
    # weight * value 0.25, 2, 0.5, 0.75: strongest first (0,1), (1,1), (1,0), (0,0).
    order = [(0, 0, 1), (0, 1, 1), (0, 1, 0), (0, 0, 0)]
    for k in range(1, 5):
        assert down(run(interp, interp_context(k), lay, 0, 1, 1)) == set(order[:k])
    # Output (0,2) reads exactly (0,1): one source of weight 1; weight-0 cells are no
    # candidates, so K=4 still gives one.
    assert down(run(interp, interp_context(4), lay, 0, 0, 2)) == {(0, 0, 1)}
    # Resolution K: round(2/3) -> at least 1 per axis, K = 1.
    assert down(run(interp, interp_context("resolution"), lay, 0, 1, 1)) == {(0, 0, 1)}


# ----------------------------------------------------------------------------- identity

def test_identity_passes_units_down_unchanged():
    units = Units.of([1, 0], [2, 0], [3, 1], tag=[0, 4])
    result = identity(TraceContext(bottoms=[np.zeros((1, 2, 4, 4))]), layer("ReLU"), 0, units)
    assert len(result) == 1 and result[0][0] == 0 and result[0][1].as_set() == units.as_set()


# ----------------------------------------------------------------------------- the table

def test_rule_for_picks_one_rule_per_layer_type():
    assert rule_for(layer("Convolution")) is convolution
    assert rule_for(layer("Deconvolution")) is convolution
    assert rule_for(layer("Pooling")) is pooling
    assert rule_for(layer("InnerProduct")) is inner_product
    assert rule_for(layer("Eltwise", bottoms=("a", "b"))) is eltwise
    assert rule_for(layer("Concat", bottoms=("a", "b"))) is concat
    assert rule_for(layer("Crop", bottoms=("a", "b"))) is crop
    assert rule_for(layer("Flatten")) is flatten
    assert rule_for(layer("Interp")) is interp
    assert rule_for(ZOOM) is interp
    for kind in ("ReLU", "Dropout", "BatchNorm", "LRN", "Split"):
        assert RULES[kind] is identity and rule_for(layer(kind)) is identity
    # Any in-place layer and one-bottom Scale/Bias are identities.
    assert rule_for(layer("Sigmoid", bottoms=("x",), tops=("x",))) is identity
    assert rule_for(layer("Scale")) is identity


def test_rule_for_names_layers_without_a_rule():
    with pytest.raises(ToolkitError, match=r"'L'.*'Scale'"):
        rule_for(layer("Scale", bottoms=("x", "s")))
    with pytest.raises(ToolkitError, match="before the Softmax"):
        rule_for(layer("Softmax"))
    shrink = layer("Python", 'python_param { module: "python_layers.interp" '
                             'layer: "LabelShrink" }')
    with pytest.raises(ToolkitError, match="python_layers.interp.LabelShrink"):
        rule_for(shrink)
    assert rule_for(shrink, {("python_layers.interp", "LabelShrink"): "identity"}) is identity


# ----------------------------------------------------------------------------- the context

def test_collector_records_each_ranking_and_bad_options_are_named():
    # Pooling window (0,0) of -pool_input: values (-100, -99, -96, -95) plus 5 padding
    # cells; no positive contribution, so the collector counts the unit as such and
    # averages nothing (and the unit is dead).
    collector = KNeededCollector([0.5])
    ctx = TraceContext(bottoms=[-pool_input()], top_shapes=[(1, 1, 3, 3)], layer_name="pool",
                       collector=collector)
    run(pooling, ctx, layer("Pooling", POOL.format("MAX")), 0, 0, 0)
    assert collector.no_positive["pool"] == 1 and collector.counts["pool"] == 0
    # The IP row 1 contributions (3, -1, 2, 1): half of 6 needs K = 1 (3 >= 3).
    ctx = ip_context(layer_name="ip", collector=collector)
    run(inner_product, ctx, IP, 1, 0, 0)
    np.testing.assert_array_equal(collector.means()["ip"], [1])
    assert TraceContext(bottoms=[], k=KStrategy.parse("L=3,default=1"),
                        layer_name="L").k_spec() == ("fixed", 3)
    with pytest.raises(ToolkitError, match="shift"):
        TraceContext(bottoms=[], shift="some")
    with pytest.raises(ToolkitError, match="ip_rule"):
        TraceContext(bottoms=[], ip_rule="all")


# ----------------------------------------------------------------------------- dead units

def dead_set(ctx):
    """The (tag, c, y, x) units a rule stopped as dead."""
    return set().union(*(u.as_set() for u in ctx.dead))


def test_pooling_window_with_no_positive_value_is_dead():
    # Pooling ranks values: window (0,0) of -pool_input holds (-100, -99, -96, -95), none
    # positive -> dead, even though -95 is the largest. On a map that is 0 (after a ReLU)
    # but for 0.5 at (3,3), window (0,0) (rows/columns 0..1) is dead too, and window (2,2)
    # (rows/columns 3) lives and goes to (3,3).
    lay = layer("Pooling", POOL.format("MAX"))
    ctx = TraceContext(bottoms=[-pool_input()], top_shapes=[(1, 1, 3, 3)], k=2)
    assert down(run(pooling, ctx, lay, 0, 0, 0)) == set()
    assert dead_set(ctx) == {(0, 0, 0, 0)}
    X = np.zeros((1, 1, 4, 4), np.float32)
    X[0, 0, 3, 3] = 0.5
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 3, 3)])
    assert down(run(pooling, ctx, lay, [0, 0], [0, 2], [0, 2])) == {(0, 3, 3)}
    assert dead_set(ctx) == {(0, 0, 0, 0)}


def test_inner_product_with_all_zero_contributions_is_dead():
    # x = (0, 2, 0, 0) and row W = (1, 0, -3, 5): every product is exactly 0 -> dead under
    # both rules (no arbitrary first input). Row (1, -1, 0, 0): products (0, -2, 0, 0), all
    # <= 0 but one non-zero: it lives; top-1 by value is the first 0 (index 0), and the
    # positive rule keeps its single largest, also index 0.
    X = f32([0, 2, 0, 0], (1, 4))
    W = f32([[1, 0, -3, 5], [1, -1, 0, 0]])
    ip = layer("InnerProduct", "inner_product_param { num_output: 2 }")
    for rule in ("topk", "positive"):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 2)], params=[W], ip_rule=rule)
        assert down(run(inner_product, ctx, ip, [0, 1], [0, 0], [0, 0])) == {(0, 0, 0)}
        assert dead_set(ctx) == {(0, 0, 0, 0)}


def test_eltwise_dead_rules_differ_by_operation():
    # Bottoms a = (-1) and b = (-2) at the unit. SUM with coeffs (0, 0) gives contributions
    # exactly 0 -> dead; SUM with (1, 1) ranks contributions (-1, -2): alive, bottom 0.
    # MAX and PROD rank values: none positive -> dead.
    a, b = f32([-1], (1, 1, 1, 1)), f32([-2], (1, 1, 1, 1))
    cases = [("SUM", "coeff: 0 coeff: 0", True), ("SUM", "coeff: 1 coeff: 1", False),
             ("MAX", "", True), ("PROD", "", True)]
    for operation, coeffs, dead in cases:
        lay = layer("Eltwise", f"eltwise_param {{ operation: {operation} {coeffs} }}",
                    bottoms=("a", "b"))
        ctx = TraceContext(bottoms=[a, b], top_shapes=[(1, 1, 1, 1)])
        result = run(eltwise, ctx, lay, 0, 0, 0)
        assert bool(ctx.dead) == dead, operation
        assert down(result, 0) == (set() if dead else {(0, 0, 0)}), operation


def test_interp_with_all_zero_sources_is_dead():
    # Zoom x2 of a 2x2 map: output (1,1) reads all four cells with weight 1/4. Cells all 0
    # -> every weight x value is 0 -> dead; with one cell 3 it goes to that cell.
    lay = layer("Python", 'python_param { module: "python_layers.interp" layer: "Zoom" '
                'param_str: "{\\"factor\\": 2}" }')
    X = np.zeros((1, 1, 2, 2), np.float32)
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 3, 3)])
    assert down(run(interp, ctx, lay, 0, 1, 1)) == set() and dead_set(ctx) == {(0, 0, 1, 1)}
    X[0, 0, 1, 0] = 3
    ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 3, 3)])
    assert down(run(interp, ctx, lay, 0, 1, 1)) == {(0, 1, 0)} and not ctx.dead


def test_exact_ties_go_to_the_lowest_index():
    # Two channels with equal contributions (2 and 2) -> K=1 takes channel 0; equal taps
    # within a channel -> full shift takes the first in row-major order.
    lay = layer("Convolution", "convolution_param { num_output: 1 kernel_size: 2 }")
    X = np.ones((1, 2, 2, 2), np.float32)
    W = np.zeros((1, 2, 2, 2), np.float32)
    W[0, 0, 0, 1] = W[0, 0, 1, 0] = 1      # channel 0: taps (0,1) and (1,0), each 1
    W[0, 1, 1, 1] = 2                      # channel 1: tap (1,1), 2
    for float32_ranking in (True, False):
        ctx = TraceContext(bottoms=[X], top_shapes=[(1, 1, 1, 1)], params=[W], shift="full",
                           float32_ranking=float32_ranking)
        assert down(run(convolution, ctx, lay, 0, 0, 0)) == {(0, 0, 1)}
