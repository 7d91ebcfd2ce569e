"""The per-pixel template-similarity losses (SPEC section 3): values worked by hand, a slow
loop reference, finite-difference gradients of the NumPy maths in float64, and the same
gradients through a real caffe.Net with the Python layer (float32, loss_weight 0.5).
"""
import itertools
import json
import os

import numpy as np
import pytest

from python_layers import ToolkitError
from python_layers import template_similarity as tl

SIMILARITIES = ("cosine", "correlation")
NORMALIZATIONS = ("valid", "none")
IGNORE = 255


# ----------------------------------------------------------------------------- slow reference

def reference_similarity(a, b, similarity):
    """cos(a, b) = <a,b> / (|a||b|); correlation: Pearson over the channels with population
    standard deviations; correlation_printed: Eq. 3.1 as printed, (<a,b> - mu_a mu_b) /
    (sigma_a sigma_b) with <.,.> the plain sum over the channels. A degenerate vector (zero
    norm or zero variance) gives 0."""
    if similarity == "cosine":
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        return 0.0 if norms < 1e-12 else float(np.dot(a, b) / norms)
    stds = a.std() * b.std()
    if similarity == "correlation_printed":
        return 0.0 if stds < 1e-12 else float((np.dot(a, b) - a.mean() * b.mean()) / stds)
    return 0.0 if stds < 1e-12 else float(((a - a.mean()) * (b - b.mean())).mean() / stds)


def reference_templates(fc7, fc8, label, ignore_label=IGNORE):
    """{class: fc7 vector} where the class's pixel with the highest fc8 score for it sits;
    pixels in (n, y, x) order and a strict '>' keep the first of equal scores."""
    n_items, _, height, width = fc7.shape
    best = {}
    for n, y, x in itertools.product(range(n_items), range(height), range(width)):
        c = int(label[n, 0, y, x])
        if c != ignore_label and (c not in best or fc8[n, c, y, x] > best[c][0]):
            best[c] = (fc8[n, c, y, x], fc7[n, :, y, x].copy())
    return {c: vector for c, (_, vector) in best.items()}


def reference_loss(fc7, fc8, label, similarity="cosine", selective=False, normalize="valid",
                   templates=None, ignore_label=IGNORE):
    """Algorithm 3 as loops over pixels and classes. ``templates`` freezes the templates
    (for the gradient with template_grad false)."""
    if templates is None:
        templates = reference_templates(fc7, fc8, label, ignore_label)
    classes = sorted(templates)
    n_items, _, height, width = fc7.shape
    total, n_valid = 0.0, 0
    for n, y, x in itertools.product(range(n_items), range(height), range(width)):
        own = int(label[n, 0, y, x])
        if own == ignore_label:
            continue
        n_valid += 1
        if selective and int(np.argmax(fc8[n, :, y, x])) == own:
            continue
        for c in classes:
            s = reference_similarity(fc7[n, :, y, x], templates[c], similarity)
            total += -s if own == c else s
    if not classes:
        return 0.0
    return total / (len(classes) * (n_valid if normalize == "valid" else 1))


# ----------------------------------------------------------------------------- inputs

def hand_example():
    """One image, 1 x 5 pixels, D = 3, two classes (fc8 has 2 channels); see the test."""
    vectors = [[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 0, 0], [5, 5, 5]]
    scores = [[2, 0], [1, 0], [0, 3], [1, 0], [0, 0]]
    labels = [0, 0, 1, 1, IGNORE]
    fc7 = np.array(vectors, float).T.reshape(1, 3, 1, 5)
    fc8 = np.array(scores, float).T.reshape(1, 2, 1, 5)
    label = np.array(labels, float).reshape(1, 1, 1, 5)
    return fc7, fc8, label


def random_batch(seed, depth=5, dtype=np.float64):
    """N = 2, 3 x 4 pixels, 4 fc8 channels. Class 0 in both items with its template in item 1,
    class 1 only in item 0, class 2 in item 1, class 3 on exactly one pixel, ignore pixels,
    and a mix of correctly and wrongly classified pixels."""
    rs = np.random.RandomState(seed)
    fc7 = rs.randn(2, depth, 3, 4)
    label = np.array([[[0, 0, 1, 1], [0, 1, 1, IGNORE], [0, 0, IGNORE, 1]],
                      [[2, 2, 0, 0], [2, 3, 0, IGNORE], [2, 2, 0, 0]]], float)[:, None]
    fc8 = rs.randn(2, 4, 3, 4)
    fc8[1, 0, 2, 3] = 6.0                      # class 0's template: item 1, pixel (2, 3)
    fc8[0, 1, 0, 2] = fc8[0, 1, 1, 1] = 4.0    # a tie for class 1: the first pixel wins
    fc8[0, 0, 0, 0] = fc8[1, 2, 0, 0] = 5.0    # some pixels surely right ...
    fc8[0, 3, 0, 3] = fc8[1, 1, 1, 1] = 5.0    # ... and some surely wrong (incl. class 3's)
    return fc7.astype(dtype), fc8.astype(dtype), label.astype(dtype)


def template_mask(fc7, fc8, label):
    """True on the fc7 entries of the template pixels (picked by the reference)."""
    mask = np.zeros(fc7.shape, bool)
    for vector in reference_templates(fc7, fc8, label).values():
        mask |= np.all(fc7 == vector[None, :, None, None], axis=1, keepdims=True)
    return mask


def numeric_gradient(loss_of, fc7, step):
    """Central differences of loss_of(fc7) for every entry of fc7."""
    probe = fc7.copy()
    grad = np.zeros(fc7.shape)
    for index in np.ndindex(fc7.shape):
        original = probe[index]
        probe[index] = original + step
        plus = loss_of(probe)
        probe[index] = original - step
        minus = loss_of(probe)
        probe[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def expected_gradient(fc7, fc8, label, template_grad, **options):
    """Finite differences of the reference: with moving templates (template_grad true) or
    with the templates frozen at fc7's values (false)."""
    frozen = None if template_grad else reference_templates(fc7, fc8, label)
    return numeric_gradient(
        lambda x: reference_loss(x, fc8, label, templates=frozen, **options), fc7, 1e-6)


ALL_OPTIONS = [dict(similarity=s, selective=sel, normalize=nm, template_grad=tg)
               for s, sel, nm, tg in itertools.product(SIMILARITIES, (False, True),
                                                       NORMALIZATIONS, (False, True))]


def split_template_grad(options):
    """(template_grad, the other options): the reference takes no template_grad. A copy,
    since the parametrised dicts are shared between tests."""
    rest = dict(options)
    return rest.pop("template_grad"), rest


def option_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items())


# ----------------------------------------------------------------------------- values

# The hand example. Pixels p0..p4 (fc7 vector, fc8 scores, label):
#   p0 (1,0,0) (2,0) label 0  -> predicted 0, right
#   p1 (1,1,0) (1,0) label 0  -> predicted 0, right
#   p2 (0,1,0) (0,3) label 1  -> predicted 1, right
#   p3 (1,0,0) (1,0) label 1  -> predicted 0, WRONG
#   p4 (5,5,5) (0,0) ignore   -> never counts
# Templates: class 0 = p0 (score 2 > 1), t0 = (1,0,0); class 1 = p2 (score 3 > 0), t1 = (0,1,0).
# Cosine (pixel adds -sim to its own class, +sim to the other):
#   p0: cos(p0,t0) = 1, cos(p0,t1) = 0        -> -1 + 0         = -1
#   p1: cos = 1/sqrt2 with both                -> -1/sqrt2 + 1/sqrt2 = 0
#   p2: cos(p2,t0) = 0, cos(p2,t1) = 1        -> +0 - 1         = -1
#   p3: cos(p3,t0) = 1, cos(p3,t1) = 0        -> +1 - 0         = +1
#   sum = -1. 4 valid pixels, 2 classes: "valid" -1/8, "none" -1/2.
#   selective (only p3): +1 -> 1/8 and 1/2.
# Correlation (centre over the 3 channels, population std):
#   t0 -> (2,-1,-1)/3, t1 -> (-1,2,-1)/3, p1 -> (1,1,-2)/3;
#   corr(t0,t1) = (-2-2+1)/6 = -1/2, corr(p1,t0) = corr(p1,t1) = (2-1+2)/6 = 1/2.
#   p0 (= t0): -1 + (-1/2) = -3/2;  p1: -1/2 + 1/2 = 0;  p2 (= t1): -1/2 - 1 = -3/2;
#   p3 (= t0): +1 - (-1/2) = +3/2.  sum = -3/2: "valid" -3/16, "none" -3/4.
#   selective (only p3): +3/2 -> 3/16 and 3/4.
HAND_LOSSES = {
    ("cosine", False, "valid"): -1 / 8, ("cosine", False, "none"): -1 / 2,
    ("cosine", True, "valid"): 1 / 8, ("cosine", True, "none"): 1 / 2,
    ("correlation", False, "valid"): -3 / 16, ("correlation", False, "none"): -3 / 4,
    ("correlation", True, "valid"): 3 / 16, ("correlation", True, "none"): 3 / 4,
}


@pytest.mark.parametrize("similarity,selective,normalize", sorted(HAND_LOSSES))
def test_hand_worked_losses(similarity, selective, normalize):
    fc7, fc8, label = hand_example()
    for template_grad in (False, True):
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, similarity, selective,
                                                 normalize, template_grad)
        assert loss == pytest.approx(HAND_LOSSES[similarity, selective, normalize], abs=1e-12)
        assert grad.shape == fc7.shape and grad.dtype == fc7.dtype
        assert np.all(grad[..., 4] == 0)  # the ignored pixel gets nothing
    assert reference_loss(fc7, fc8, label, similarity, selective, normalize) == pytest.approx(
        HAND_LOSSES[similarity, selective, normalize], abs=1e-12)


def test_hand_worked_gradient():
    # Selective cosine, "none": loss = (cos(p3,t0) - cos(p3,t1)) / 2 with p3 = (1,0,0).
    # d cos(a,b)/da = b/(|a||b|) - cos(a,b) a/|a|^2: for t0 (1,0,0) - 1*(1,0,0) = 0,
    # for t1 (0,1,0) - 0 = (0,1,0). So grad p3 = (0 - (0,1,0)) / 2 = (0,-1/2,0); the
    # templates are constants and the other pixels are not selected: all else is 0.
    fc7, fc8, label = hand_example()
    _, grad = tl.template_similarity_loss(fc7, fc8, label, "cosine", True, "none")
    expected = np.zeros_like(fc7)
    expected[0, :, 0, 3] = (0, -0.5, 0)
    np.testing.assert_allclose(grad, expected, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_matches_loop_reference(seed):
    rs = np.random.RandomState(seed)
    n_items, depth, height, width, n_scores = 3, 6, 4, 5, 5
    fc7 = rs.randn(n_items, depth, height, width)
    fc8 = rs.randint(-2, 3, size=(n_items, n_scores, height, width)).astype(float)  # many ties
    label = rs.randint(0, n_scores, size=(n_items, 1, height, width)).astype(float)
    label[rs.rand(*label.shape) < 0.2] = IGNORE
    for similarity, selective, normalize in itertools.product(SIMILARITIES, (False, True),
                                                              NORMALIZATIONS):
        expected = reference_loss(fc7, fc8, label, similarity, selective, normalize)
        for template_grad in (False, True):
            loss, _ = tl.template_similarity_loss(fc7, fc8, label, similarity, selective,
                                                  normalize, template_grad)
            assert loss == pytest.approx(expected, rel=1e-10, abs=1e-12)
        loss32, _ = tl.template_similarity_loss(fc7.astype(np.float32), fc8.astype(np.float32),
                                                label.astype(np.float32), similarity, selective,
                                                normalize)
        assert loss32 == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_templates_first_of_ties_and_across_items():
    fc7, fc8, label = random_batch(0)
    scores = fc8.reshape(2, 4, -1)
    labels = label.reshape(2, -1).astype(int)
    labels[labels == IGNORE] = -1
    item, pos = tl.pick_templates(scores, labels, np.array([0, 1, 2, 3]))
    assert (item[0], pos[0]) == (1, 2 * 4 + 3)   # class 0 from the second item
    assert (item[1], pos[1]) == (0, 2)           # tie at (0,2) and (1,1): the first
    assert (item[3], pos[3]) == (1, 1 * 4 + 1)   # the one pixel of class 3


def test_no_class_or_no_valid_pixel_gives_zero():
    fc7, fc8, label = random_batch(1)
    label[...] = IGNORE
    for options in ALL_OPTIONS:
        out = np.full_like(fc7, 7.0)  # a reused buffer must come back all zero
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, out=out, **options)
        assert loss == 0.0 and grad is out and not grad.any()


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
def test_gradient_matches_finite_differences(options):
    fc7, fc8, label = random_batch(2)
    loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
    template_grad, options = split_template_grad(options)
    assert loss == pytest.approx(reference_loss(fc7, fc8, label, **options), rel=1e-10)
    expected = expected_gradient(fc7, fc8, label, template_grad, **options)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)
    assert np.all(grad[label.repeat(fc7.shape[1], axis=1) == IGNORE] == 0)


@pytest.mark.parametrize("options", ALL_OPTIONS, ids=option_id)
def test_gradient_with_zero_and_constant_vectors(options):
    fc7, fc8, label = random_batch(3)
    fc7[0, :, 0, 1] = 0.0               # a zero vector (label 0)
    fc7[1, :, 2, 0] = 0.75              # a constant vector (label 2)
    fc7[1, :, 1, 1] = 0.0               # class 3's template (its one pixel) is a zero vector
    fc7[0, :, 2, 0] = -2.0              # class 0, constant too
    loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    template_grad, options = split_template_grad(options)
    assert loss == pytest.approx(reference_loss(fc7, fc8, label, **options), rel=1e-10)
    # Similarity is not differentiable at a degenerate vector (zero norm; for correlation
    # also zero variance): the loss gives it no gradient; compare everywhere else.
    centred = fc7 - fc7.mean(axis=1, keepdims=True) if options["similarity"] == "correlation" \
        else fc7
    degenerate = np.broadcast_to(np.abs(centred).max(axis=1, keepdims=True) < 1e-12, fc7.shape)
    assert degenerate.any()
    assert np.all(grad[degenerate] == 0)
    expected = expected_gradient(fc7, fc8, label, template_grad, **options)
    np.testing.assert_allclose(grad[~degenerate], expected[~degenerate], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_nothing_misclassified_gives_zero_selective_loss(similarity):
    fc7, _, label = random_batch(4)
    one_hot = np.eye(4)[np.where(label[:, 0] == IGNORE, 0, label[:, 0]).astype(int)]
    fc8 = np.moveaxis(one_hot, -1, 1) * 3.0  # every valid pixel predicted right
    for normalize, template_grad in itertools.product(NORMALIZATIONS, (False, True)):
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, similarity, True, normalize,
                                                 template_grad)
        assert loss == 0.0 and not grad.any()
        plain, _ = tl.template_similarity_loss(fc7, fc8, label, similarity, False, normalize)
        assert plain != 0.0


def test_single_class_batch():
    fc7, fc8, label = random_batch(5)
    label[label != IGNORE] = 2
    for options in ALL_OPTIONS:
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
        template_grad, plain = split_template_grad(options)
        assert loss == pytest.approx(reference_loss(fc7, fc8, label, **plain), rel=1e-10)
        expected = expected_gradient(fc7, fc8, label, template_grad, **plain)
        np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def test_float32_gradient_close_to_float64():
    fc7, fc8, label = random_batch(6, depth=64)
    for options in ALL_OPTIONS:
        _, grad64 = tl.template_similarity_loss(fc7, fc8, label, **options)
        _, grad32 = tl.template_similarity_loss(fc7.astype(np.float32), fc8.astype(np.float32),
                                                label.astype(np.float32), **options)
        assert grad32.dtype == np.float32
        np.testing.assert_allclose(grad32, grad64, rtol=1e-3, atol=1e-5 * np.abs(grad64).max())


# ----------------------------------------------------------------------------- through Caffe

NET = """name: "template_loss_check"
force_backward: true
layer {{ name: "fc7" type: "Input" top: "fc7"
  input_param {{ shape {{ dim: {n} dim: {d} dim: {h} dim: {w} }} }} }}
layer {{ name: "fc8_voc12" type: "Input" top: "fc8_voc12"
  input_param {{ shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} }} }}
layer {{ name: "label" type: "Input" top: "label"
  input_param {{ shape {{ dim: {n} dim: 1 dim: {lh} dim: {w} }} }} }}
layer {{ name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12" bottom: "label"
  top: "template_loss" loss_weight: {loss_weight}
  python_param {{ module: "python_layers.template_loss" layer: "TemplateSimilarityLoss"
    param_str: '{param_str}' }} }}
"""


def make_net(caffe, tmp_path, fc7, fc8, label, param_str, loss_weight=0.5, label_height=None):
    n, d, h, w = fc7.shape
    path = os.path.join(str(tmp_path), "template_loss.prototxt")
    with open(path, "w") as f:
        f.write(NET.format(n=n, d=d, h=h, w=w, c=fc8.shape[1], lh=label_height or h,
                           loss_weight=loss_weight, param_str=param_str))
    net = caffe.Net(path, caffe.TRAIN)
    net.blobs["fc7"].data[...] = fc7
    net.blobs["fc8_voc12"].data[...] = fc8
    net.blobs["label"].data[...] = label
    return net


def net_objective(net):
    """The weighted loss Caffe optimises (Net::ForwardFromTo's return value)."""
    return float(net._forward(0, len(net.layers) - 1))


def net_numeric_gradient(net, step=1e-2):
    """Central differences of the net's objective in fc7 (Caffe's GradientChecker step)."""
    data = net.blobs["fc7"].data
    grad = np.zeros(data.shape)
    for index in np.ndindex(data.shape):
        original = float(data[index])
        data[index] = original + step
        plus = net_objective(net)
        data[index] = original - step
        minus = net_objective(net)
        data[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def gradient_mismatch(computed, estimated, threshold=2e-2, floor_fraction=0.05):
    """Entries failing Caffe's GradientChecker rule |c - e| <= threshold * scale, with
    scale = max(|c|, |e|, floor). Caffe's floor is 1, which would pass any gradient below
    1e-2 in size; here it is a fraction of the largest estimated entry, so the rule is
    relative and a gradient wrong by 10 % fails."""
    floor = floor_fraction * np.abs(estimated).max()
    scale = np.maximum(np.maximum(np.abs(computed), np.abs(estimated)), floor)
    return np.abs(computed - estimated) > threshold * scale


@pytest.mark.parametrize("name", tl.ALL_LOSS_NAMES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_caffe_net_gradient_matches_finite_differences(caffe, tmp_path, name, normalize):
    similarity, selective = tl.parse_loss_name(name)
    fc7, fc8, label = random_batch(7, dtype=np.float32)
    net = make_net(caffe, tmp_path, fc7, fc8, label,
                   tl.loss_param_str(similarity, selective, normalize, template_grad=True))
    net.forward()
    net.blobs["fc8_voc12"].diff[...] = 3.0  # garbage the layer must overwrite with zeros
    net.blobs["label"].diff[...] = 3.0
    net.backward()
    computed = net.blobs["fc7"].diff.copy()
    loss, grad = tl.template_similarity_loss(fc7.astype(np.float64), fc8, label, similarity,
                                             selective, normalize, template_grad=True)
    assert float(net.blobs["template_loss"].data[0]) == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert net_objective(net) == pytest.approx(0.5 * loss, rel=1e-5, abs=1e-6)
    np.testing.assert_allclose(computed, 0.5 * grad, rtol=1e-3, atol=1e-6)
    assert not net.blobs["fc8_voc12"].diff.any() and not net.blobs["label"].diff.any()
    estimated = net_numeric_gradient(net)
    assert not gradient_mismatch(computed, estimated).any()


def test_caffe_checker_rejects_a_wrong_gradient(caffe, tmp_path):
    fc7, fc8, label = random_batch(8, dtype=np.float32)
    net = make_net(caffe, tmp_path, fc7, fc8, label,
                   tl.loss_param_str("cosine", False, template_grad=True))
    net.forward()
    net.backward()
    computed = net.blobs["fc7"].diff.copy()
    estimated = net_numeric_gradient(net)
    assert not gradient_mismatch(computed, estimated).any()
    assert gradient_mismatch(1.1 * computed, estimated).mean() > 0.5
    assert gradient_mismatch(0.9 * computed, estimated).mean() > 0.5
    # the frozen-template gradient differs from the full one at the template pixels only
    _, frozen = tl.template_similarity_loss(fc7, fc8, label, template_grad=False)
    wrong = gradient_mismatch(0.5 * frozen, estimated)
    assert wrong.any() and not wrong[~template_mask(fc7, fc8, label)].any()


def test_caffe_net_frozen_templates(caffe, tmp_path):
    # template_grad false (the default): off the template pixels the gradient equals the
    # net's finite differences; on them it is the float64 frozen-template gradient.
    fc7, fc8, label = random_batch(9, dtype=np.float32)
    net = make_net(caffe, tmp_path, fc7, fc8, label, "", loss_weight=2.0)
    net.forward()
    net.backward()
    computed = net.blobs["fc7"].diff.copy()
    templates = template_mask(fc7, fc8, label)
    estimated = net_numeric_gradient(net)
    assert not gradient_mismatch(computed[~templates], estimated[~templates]).any()
    _, grad = tl.template_similarity_loss(fc7.astype(np.float64), fc8, label)
    np.testing.assert_allclose(computed, 2.0 * grad, rtol=1e-3, atol=1e-6)


def test_caffe_net_hand_example(caffe, tmp_path):
    fc7, fc8, label = hand_example()
    for (similarity, selective, normalize), expected in HAND_LOSSES.items():
        net = make_net(caffe, tmp_path, fc7, fc8, label,
                       tl.loss_param_str(similarity, selective, normalize), loss_weight=0.1)
        net.forward()
        assert float(net.blobs["template_loss"].data[0]) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- params, errors

def test_param_helpers():
    assert tl.parse_loss_name("selective_correlation") == ("correlation", True)
    assert tl.parse_loss_name("cosine") == ("cosine", False)
    assert tl.parse_loss_name("selective_correlation_printed") == ("correlation_printed", True)
    assert tl.parse_loss_name("correlation_printed") == ("correlation_printed", False)
    assert tl.LOSS_NAMES == ("correlation", "cosine", "selective_correlation",
                             "selective_cosine")   # Table 3.1's order; the sweep reads it
    assert tl.ALL_LOSS_NAMES == tl.LOSS_NAMES + ("correlation_printed",
                                                 "selective_correlation_printed")
    assert all(tl.loss_name(*tl.parse_loss_name(n)) == n for n in tl.ALL_LOSS_NAMES)
    text = tl.loss_param_str("correlation", True, normalize="none")
    assert json.loads(text) == {"similarity": "correlation", "selective": True,
                                "normalize": "none", "template_grad": False}
    assert tl.parse_param_str(text)["ignore_label"] == 255
    assert tl.parse_param_str("") == tl.DEFAULT_PARAMS
    assert tl.DEFAULT_PARAMS["normalize"] == "none"   # Algorithm 3 literally (SPEC section 3)
    with pytest.raises(ToolkitError, match="unknown template loss 'cos'.*selective_cosine"):
        tl.parse_loss_name("cos")
    with pytest.raises(ToolkitError, match="'normalize' must be one of 'none', 'valid'"):
        tl.loss_param_str("cosine", False, normalize="mean")


@pytest.mark.parametrize("param_str,match", [
    ('{"similarity": "cosine", "lambda": 0.1}', "unknown param_str key 'lambda'.*allowed keys"),
    ('{"similarity": "cosin"}', "'similarity' must be one of 'cosine', 'correlation'"),
    ('{"selective": "yes"}', "'selective' must be true or false"),
    ('{"ignore_label": 25.5}', "'ignore_label' must be an integer"),
    ('{"similarity": cosine}', "param_str is not valid JSON"),
    ('["cosine"]', "must be a JSON object"),
])
def test_bad_param_str(caffe, tmp_path, param_str, match):
    with pytest.raises(ToolkitError, match=match):
        tl.parse_param_str(param_str)
    fc7, fc8, label = random_batch(0, dtype=np.float32)
    with pytest.raises(ToolkitError, match=match):
        make_net(caffe, tmp_path, fc7, fc8, label, param_str)


def test_mismatched_shapes(caffe, tmp_path):
    fc7, fc8, label = random_batch(0)
    with pytest.raises(ToolkitError, match=r"fc8 \(bottom\[1\]\) has shape \(2, 4, 3, 3\).*"
                                           r"N, h and w must match"):
        tl.template_similarity_loss(fc7, fc8[..., :3], label)
    with pytest.raises(ToolkitError, match=r"label \(bottom\[2\]\) must have 1 channel"):
        tl.template_similarity_loss(fc7, fc8, np.concatenate([label, label], axis=1))
    with pytest.raises(ToolkitError, match=r"fc7 \(bottom\[0\]\) must be 4-D"):
        tl.template_similarity_loss(fc7[0], fc8, label)
    bad = label.copy()
    bad[0, 0, 0, 0] = 7
    with pytest.raises(ToolkitError, match=r"label \(bottom\[2\]\) holds \[7\].*4 channels"):
        tl.template_similarity_loss(fc7, fc8, bad)
    with pytest.raises(ToolkitError, match=r"label \(bottom\[2\]\) has shape \(2, 1, 2, 4\)"):
        make_net(caffe, tmp_path, fc7, fc8, label[:, :, :2], "", label_height=2)
