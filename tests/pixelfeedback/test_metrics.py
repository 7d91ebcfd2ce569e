"""pixelfeedback.metrics against hand-computed examples (Algorithm 2, SPEC section 5)."""
import math

import numpy as np
import pytest

from python_layers import ToolkitError
from pixelfeedback import metrics

# Three classes, one 255 (ignored) pixel. Scored (ground truth, prediction) pairs:
#   (0,0) (0,1) (1,1) (1,1) (2,0)   -> 5 pixels
LABEL = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
PRED = np.array([[0, 1, 1], [1, 0, 2]], np.uint8)
# rows = ground truth, columns = prediction
CONFUSION = np.array([[1, 1, 0],
                      [0, 2, 0],
                      [1, 0, 0]])


def test_confusion_matrix_hand_example():
    got = metrics.confusion_matrix(PRED, LABEL, 3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, CONFUSION)


def test_scores_hand_example():
    s = metrics.scores(CONFUSION)
    # TP = diag = [1, 2, 0]; GT pixels (row sums) = [2, 2, 1]; predicted (column sums) = [2, 3, 0]
    # union = GT + predicted - TP = [3, 3, 1]
    np.testing.assert_array_equal(s["intersection"], [1, 2, 0])
    np.testing.assert_array_equal(s["union"], [3, 3, 1])
    # IoU = [1/3, 2/3, 0/1]; mean over 3 classes = (1/3 + 2/3 + 0) / 3 = 1/3
    np.testing.assert_allclose(s["class_iou"], [1 / 3, 2 / 3, 0.0])
    assert s["mean_iou"] == pytest.approx(1 / 3)
    # pixel accuracy = (1 + 2 + 0) / 5
    assert s["pixel_accuracy"] == pytest.approx(3 / 5)
    # class accuracy = TP / GT = [1/2, 2/2, 0/1]; mean = 1/2
    assert s["mean_class_accuracy"] == pytest.approx(1 / 2)
    # frequency weighted: (2 * 1/3 + 2 * 2/3 + 1 * 0) / 5 = 2/5
    assert s["freq_weighted_iou"] == pytest.approx(2 / 5)
    assert s["num_pixels"] == 5
    assert s["num_classes_scored"] == 3


def test_ignore_label_is_skipped_whatever_the_prediction():
    pred = PRED.copy()
    pred[1, 2] = 0  # the pixel under 255 changes: nothing else may
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, LABEL, 3), CONFUSION)
    assert metrics.confusion_matrix(pred, np.full_like(LABEL, 255), 3).sum() == 0


def test_class_absent_from_ground_truth_and_prediction_is_nan_and_left_out():
    # Same pixels, four classes: class 3 occurs nowhere -> 0/0 -> NaN, mean still 1/3.
    s = metrics.scores(metrics.confusion_matrix(PRED, LABEL, 4))
    assert math.isnan(s["class_iou"][3])
    np.testing.assert_allclose(s["class_iou"][:3], [1 / 3, 2 / 3, 0.0])
    assert s["mean_iou"] == pytest.approx(1 / 3)
    assert s["num_classes_scored"] == 3


def test_class_only_predicted_counts_as_zero():
    # Predict class 3 at the class-2 pixel (was 0). Pairs: (0,0) (0,1) (1,1) (1,1) (2,3)
    pred = PRED.copy()
    pred[1, 1] = 3
    s = metrics.scores(metrics.confusion_matrix(pred, LABEL, 4))
    # TP = [1, 2, 0, 0]; GT = [2, 2, 1, 0]; predicted = [1, 3, 0, 1]
    # union = [2, 3, 1, 1]; IoU = [1/2, 2/3, 0, 0]: class 3 (only predicted) counts as 0
    np.testing.assert_allclose(s["class_iou"], [1 / 2, 2 / 3, 0.0, 0.0])
    assert s["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 4)


def test_split_is_one_confusion_matrix_not_a_mean_of_images():
    # Image A: 1 pixel class 1 predicted right.  Image B: 3 pixels class 1 predicted 0.
    a = metrics.confusion_matrix(np.array([1]), np.array([1]), 2)
    b = metrics.confusion_matrix(np.array([0, 0, 0]), np.array([1, 1, 1]), 2)
    s = metrics.scores(a + b)
    # class 1: TP 1, GT 4, predicted 1 -> 1/4.  class 0: TP 0, union 3 -> 0.  mean 1/8
    np.testing.assert_allclose(s["class_iou"], [0.0, 1 / 4])
    assert s["mean_iou"] == pytest.approx(1 / 8)
    # (the mean of per-image mIoUs would be (1 + 0) / 2 = 0.5 for image A's single class)


def test_no_scored_pixels_gives_nan():
    s = metrics.scores(np.zeros((3, 3), np.int64))
    assert math.isnan(s["mean_iou"]) and math.isnan(s["pixel_accuracy"])
    assert s["num_pixels"] == 0


def test_out_of_range_values_are_errors():
    with pytest.raises(ToolkitError, match=r"label has values \[7\]"):
        metrics.confusion_matrix(np.zeros(2, int), np.array([0, 7]), 3)
    with pytest.raises(ToolkitError, match=r"prediction has values \[5\]"):
        metrics.confusion_matrix(np.array([0, 5]), np.zeros(2, int), 3)
    with pytest.raises(ToolkitError, match="shape"):
        metrics.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)


def test_matches_a_loop_on_random_maps(rng):
    label = rng.randint(0, 5, size=(30, 40))
    label[rng.rand(30, 40) < 0.1] = 255
    pred = rng.randint(0, 5, size=(30, 40))
    expected = np.zeros((5, 5), np.int64)
    for g, p in zip(label.ravel(), pred.ravel()):
        if g != 255:
            expected[g, p] += 1
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, label, 5), expected)


def test_mean_ci_hand_computation():
    # values 1, 2, 3, 4: mean 2.5; s^2 = (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3 = 5/3
    # t(0.975, 3 dof) = 3.182446305 (t table); half width = t * sqrt(5/3) / sqrt(4)
    t_975_3 = 3.182446305284263
    half = t_975_3 * math.sqrt(5 / 3) / 2  # = 2.05426...
    ci = metrics.mean_ci([1, 2, 3, 4])
    assert ci.mean == pytest.approx(2.5)
    assert ci.std == pytest.approx(math.sqrt(5 / 3))
    assert ci.half_width == pytest.approx(half, rel=1e-9)
    assert (ci.low, ci.high) == pytest.approx((2.5 - half, 2.5 + half))
    assert ci.n == 4
    # 90 %: t(0.95, 3) = 2.353363435
    assert metrics.mean_ci([1, 2, 3, 4], level=0.90).half_width == pytest.approx(
        2.353363434801823 * math.sqrt(5 / 3) / 2, rel=1e-9)


def test_mean_ci_single_value_and_bad_input():
    ci = metrics.mean_ci([0.62])
    assert ci.mean == pytest.approx(0.62) and math.isnan(ci.half_width) and ci.n == 1
    with pytest.raises(ValueError):
        metrics.mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        metrics.mean_ci([1.0, float("nan")])


def test_paired_difference_hand_computation():
    # pairs (a, b): (3, 2) (5, 3) (7, 4) (9, 5) -> differences d = 1, 2, 3, 4
    # mean 2.5; s^2 = (1.5^2 + 0.5^2 + 0.5^2 + 1.5^2) / 3 = 5/3; se = sqrt(5/3) / sqrt(4)
    # t(0.975, 3) = 3.182446305 -> half width = 3.182446305 * se = 2.05426...
    # t(0.80, 3) = 0.978472312  -> mde = (3.182446305 + 0.978472312) * se = 2.68597...
    t_975_3, t_80_3 = 3.182446305284263, 0.9784723118282999
    se = math.sqrt(5 / 3) / 2
    paired = metrics.paired_difference([3, 5, 7, 9], [2, 3, 4, 5])
    assert paired.mean == pytest.approx(2.5)
    assert paired.std == pytest.approx(math.sqrt(5 / 3))
    assert paired.half_width == pytest.approx(t_975_3 * se, rel=1e-9)
    assert (paired.low, paired.high) == pytest.approx((2.5 - t_975_3 * se, 2.5 + t_975_3 * se))
    assert paired.mde == pytest.approx((t_975_3 + t_80_3) * se, rel=1e-9)
    assert paired.n == 4 and paired.level == 0.95 and paired.power == 0.80
    # low = 2.5 - 2.054 > 0: a gain
    assert metrics.paired_verdict(paired) == "yes"


def test_paired_difference_finds_a_planted_effect_the_unpaired_spread_hides():
    # Seeds differ a lot (0.50 .. 0.62), the loss adds 0.010 to each seed's run, +-0.001.
    control = np.array([0.50, 0.62, 0.55, 0.58, 0.53])
    loss = control + 0.010 + np.array([0.001, -0.001, 0.0, 0.0005, -0.0005])
    paired = metrics.paired_difference(loss, control)
    assert paired.mean == pytest.approx(0.010)
    assert paired.low > 0 and metrics.paired_verdict(paired) == "yes"
    assert paired.mde < 0.010
    # the unpaired intervals of the two means overlap widely: only pairing sees the gain
    assert metrics.mean_ci(loss).low < metrics.mean_ci(control).high


def test_paired_difference_does_not_find_a_zero_effect():
    control = np.array([0.50, 0.62, 0.55, 0.58, 0.53])
    loss = control + np.array([0.003, -0.003, 0.001, -0.001, 0.0])  # mean difference 0
    paired = metrics.paired_difference(loss, control)
    assert paired.mean == pytest.approx(0.0, abs=1e-12)
    assert paired.low < 0 < paired.high
    assert metrics.paired_verdict(paired) == "no"
    worse = metrics.paired_difference(control - 0.02 + [0.001, 0, -0.001, 0, 0], control)
    assert metrics.paired_verdict(worse) == "worse"


def test_paired_difference_single_pair_and_bad_input():
    single = metrics.paired_difference([0.63], [0.62])
    assert single.mean == pytest.approx(0.01) and single.n == 1
    assert math.isnan(single.half_width) and math.isnan(single.mde)
    assert metrics.paired_verdict(single) == "n/a"
    with pytest.raises(ValueError, match="pairs"):
        metrics.paired_difference([1, 2], [1])
    with pytest.raises(ValueError):
        metrics.paired_difference([], [])
    with pytest.raises(ValueError, match="NaN"):
        metrics.paired_difference([1.0, float("nan")], [1.0, 2.0])
