"""Eq. 3.1 of the thesis as printed (issue #27): the similarity ``correlation_printed``,
(<x, t> - mu_x mu_t) / (sigma_x sigma_t) with <.,.> the plain sum over the D channels. Its
identity with Pearson's r, a hand-worked example (D = 3), finite-difference gradients of
the NumPy maths, degenerate vectors, and the loss names."""
import itertools

import numpy as np
import pytest

from python_layers import template_similarity as tl
from tests.python_layers.test_template_loss import (IGNORE, NORMALIZATIONS, expected_gradient, hand_example,
                                      random_batch, reference_loss, split_template_grad)

PRINTED = "correlation_printed"
PRINTED_OPTIONS = [dict(similarity=PRINTED, selective=sel, normalize=nm, template_grad=tg)
                   for sel, nm, tg in itertools.product((False, True), NORMALIZATIONS,
                                                        (False, True))]


def option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items() if k != "similarity")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_printed_equals_d_r_plus_mean_term(dtype):
    # (<x,t> - mu_x mu_t) / (s_x s_t) = D r + (D - 1) mu_x mu_t / (s_x s_t), r = Pearson's
    rs = np.random.RandomState(0)
    for depth in (2, 3, 7, 64):
        x = rs.randn(9, depth) + rs.randn(9, 1)   # means of either sign
        t = rs.randn(4, depth) + rs.randn(4, 1)
        got = tl.similarity_to_templates(x.astype(dtype), t.astype(dtype), PRINTED)
        r = np.array([[np.corrcoef(a, b)[0, 1] for a in x] for b in t])
        mean_term = np.outer(t.mean(axis=1) / t.std(axis=1), x.mean(axis=1) / x.std(axis=1))
        expected = depth * r + (depth - 1) * mean_term
        rtol = 1e-10 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * depth)
        pearson = tl.similarity_to_templates(x.astype(dtype), t.astype(dtype), "correlation")
        np.testing.assert_allclose(pearson, r, rtol=rtol, atol=rtol)


def test_printed_similarity_of_the_hand_example():
    # t0 = (1,0,0): mu 1/3, sigma^2 = ((2/3)^2 + 2 (1/3)^2)/3 = 2/9; so is p3 = t0.
    # sim(t0, t0) = (1 - 1/9) / (2/9) = 4; sim(t0, t1 = (0,1,0)) = (0 - 1/9) / (2/9) = -1/2;
    # p1 = (1,1,0): mu 2/3, sigma^2 2/9; sim(p1, t0) = (1 - 2/9) / (2/9) = 7/2 = sim(p1, t1).
    fc7, _, _ = hand_example()
    vectors = fc7[0, :, 0, :].T
    sims = tl.similarity_to_templates(vectors, vectors[[0, 2]], PRINTED)
    np.testing.assert_allclose(sims[:, :4], [[4, 7 / 2, -1 / 2, 4], [-1 / 2, 7 / 2, 4, -1 / 2]],
                               atol=1e-12)


# Loss of the hand example (pixels p0..p3 valid, templates t0 = p0, t1 = p2, 2 classes):
#   p0 (label 0): -4 + (-1/2) = -9/2;  p1 (label 0): -7/2 + 7/2 = 0;
#   p2 (label 1): (-1/2) - 4 = -9/2;   p3 (label 1, misclassified): +4 - (-1/2) = +9/2.
#   sum -9/2: "none" /2 -> -9/4, "valid" /8 -> -9/16; selective (p3 only): 9/4, 9/16.
# Plain Pearson (the printed formula with 1/D) gives -3/4, -3/16, 3/4, 3/16 instead.
PRINTED_HAND_LOSSES = {(False, "none"): -9 / 4, (False, "valid"): -9 / 16,
                       (True, "none"): 9 / 4, (True, "valid"): 9 / 16}


@pytest.mark.parametrize("selective,normalize", sorted(PRINTED_HAND_LOSSES))
def test_printed_hand_worked_losses(selective, normalize):
    fc7, fc8, label = hand_example()
    for template_grad in (False, True):
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, PRINTED, selective,
                                                 normalize, template_grad)
        assert loss == pytest.approx(PRINTED_HAND_LOSSES[selective, normalize], abs=1e-12)
        assert np.all(grad[..., 4] == 0)
    assert reference_loss(fc7, fc8, label, PRINTED, selective, normalize) == pytest.approx(
        PRINTED_HAND_LOSSES[selective, normalize], abs=1e-12)


def test_printed_hand_worked_gradient():
    # Selective, "none": loss = (sim(p3, t0) - sim(p3, t1)) / 2, templates constant, x = p3.
    # d sim(x,t)/dx = (t - mu_t/D 1) / (s_x s_t) - sim(x,t) (x - mu_x) / (D s_x^2), with
    # s_x s_t = 2/9, D s_x^2 = 2/3, x - mu_x = (2,-1,-1)/3:
    #   t0: (8/9, -1/9, -1/9) 9/2 - 4 (2,-1,-1)/3 * 3/2 = (4,-1/2,-1/2) - (4,-2,-2) = (0, 3/2, 3/2)
    #   t1: (-1/9, 8/9, -1/9) 9/2 + 1/2 (2,-1,-1)/3 * 3/2 = (-1/2,4,-1/2) + (1/2,-1/4,-1/4)
    #       = (0, 15/4, -3/4)
    # grad p3 = ((0, 3/2, 3/2) - (0, 15/4, -3/4)) / 2 = (0, -9/8, 9/8); all else 0.
    fc7, fc8, label = hand_example()
    _, grad = tl.template_similarity_loss(fc7, fc8, label, PRINTED, True, "none")
    expected = np.zeros_like(fc7)
    expected[0, :, 0, 3] = (0, -9 / 8, 9 / 8)
    np.testing.assert_allclose(grad, expected, atol=1e-12)


@pytest.mark.parametrize("options", PRINTED_OPTIONS, ids=option_id)
def test_printed_gradient_matches_finite_differences(options):
    fc7, fc8, label = random_batch(2)
    fc7 += np.random.RandomState(5).randn(2, 1, 3, 4)   # per-pixel means of either sign
    loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
    template_grad, options = split_template_grad(options)
    assert loss == pytest.approx(reference_loss(fc7, fc8, label, **options), rel=1e-10)
    expected = expected_gradient(fc7, fc8, label, template_grad, **options)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
    assert np.all(grad[label.repeat(fc7.shape[1], axis=1) == IGNORE] == 0)


@pytest.mark.parametrize("options", PRINTED_OPTIONS, ids=option_id)
def test_printed_degenerate_vectors_get_no_gradient(options):
    fc7, fc8, label = random_batch(3)
    fc7[0, :, 0, 1] = 0.0               # a zero vector (label 0)
    fc7[1, :, 2, 0] = 0.75              # a constant vector (label 2)
    fc7[1, :, 1, 1] = 0.0               # class 3's template (its one pixel) is a zero vector
    loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    template_grad, options = split_template_grad(options)
    assert loss == pytest.approx(reference_loss(fc7, fc8, label, **options), rel=1e-10)
    centred = fc7 - fc7.mean(axis=1, keepdims=True)
    degenerate = np.broadcast_to(np.abs(centred).max(axis=1, keepdims=True) < 1e-12, fc7.shape)
    assert np.all(grad[degenerate] == 0)
    expected = expected_gradient(fc7, fc8, label, template_grad, **options)
    np.testing.assert_allclose(grad[~degenerate], expected[~degenerate], rtol=1e-6, atol=1e-7)


def test_printed_float32_close_to_float64():
    fc7, fc8, label = random_batch(6, depth=64)
    fc7 += 0.5
    for options in PRINTED_OPTIONS:
        _, grad64 = tl.template_similarity_loss(fc7, fc8, label, **options)
        _, grad32 = tl.template_similarity_loss(fc7.astype(np.float32), fc8.astype(np.float32),
                                                label.astype(np.float32), **options)
        np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-5 * np.abs(grad64).max())


def test_printed_loss_names_come_after_table31():
    assert tl.ALL_LOSS_NAMES[:4] == tl.LOSS_NAMES
    assert tl.EXTRA_LOSS_NAMES == ("correlation_printed", "selective_correlation_printed")
    assert tl.parse_param_str(tl.loss_param_str(PRINTED, True))["similarity"] == PRINTED
