"""The template loss's fast path (issue #29): the same results as the algorithm before it
(frozen in tests/frozen_template_loss.py) within float32 rounding, bit-identical for every
thread count and block size, the pool started only when used; its per-run diagnostics line
(issue #27); ``ignore_label`` checked at setup (issue #28)."""
import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from python_layers import ToolkitError
from python_layers import similarity_blocks, thread_pool
from python_layers import template_similarity as tl
from tests.conftest import REPO
from tests.frozen_template_loss import frozen_template_similarity_loss
from tests.python_layers.test_template_loss import IGNORE, make_net, random_batch

TABLE31_OPTIONS = [dict(similarity=s, selective=sel, normalize=nm, template_grad=tg)
                   for s, sel, nm, tg in itertools.product(("cosine", "correlation"),
                                                           (False, True), ("none", "valid"),
                                                           (False, True))]


def fc7_like_batch(seed, n=3, depth=96, h=7, w=9, classes=6, dtype=np.float32):
    """ReLU-then-dropout-like fc7 (many zeros, positive means), random scores, every class
    present, an ignore border, one all-zero vector and one constant vector."""
    rs = np.random.RandomState(seed)
    fc7 = np.maximum(rs.randn(n, depth, h, w), 0) * 2 * (rs.rand(n, depth, h, w) < 0.5)
    fc7[0, :, 1, 1] = 0.0
    fc7[1, :, 2, 3] = 0.3
    fc8 = rs.randn(n, classes, h, w)
    label = rs.randint(0, classes, size=(n, 1, h, w)).astype(float)
    label[:, :, 0, :] = IGNORE
    return fc7.astype(dtype), fc8.astype(dtype), label.astype(dtype)


@pytest.mark.parametrize("options", TABLE31_OPTIONS,
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_matches_the_frozen_algorithm(options, monkeypatch):
    monkeypatch.setattr(similarity_blocks, "PRODUCT_ROW_BYTES", 64 * 4 * 5)   # several row blocks
    monkeypatch.setattr(similarity_blocks, "GRADIENT_ROW_BYTES", 64 * 4 * 7)
    for dtype, rtol in ((np.float64, 1e-11), (np.float32, 2e-5)):
        fc7, fc8, label = fc7_like_batch(1, dtype=dtype)
        old_loss, old_grad = frozen_template_similarity_loss(fc7, fc8, label, **options)
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
        assert grad.dtype == old_grad.dtype == dtype
        assert loss == pytest.approx(old_loss, rel=rtol)
        np.testing.assert_allclose(grad, old_grad, rtol=10 * rtol,
                                   atol=10 * rtol * np.abs(old_grad).max())


def spread_classes_batch(seed, n=4, depth=64, side=11, classes=9):
    """Like the bench's inputs: every class in the batch, each item with only a few of
    them (rectangles of its own object classes on background 0, ignore borders)."""
    rs = np.random.RandomState(seed)
    fc7 = np.maximum(rs.randn(n, depth, side, side), 0) * 2 * (rs.rand(n, depth, side, side) < 0.5)
    label = np.zeros((n, 1, side, side))
    for item in range(n):
        for cls in range(1, classes)[item::n]:
            y0, x0 = rs.randint(0, side // 2, size=2)
            label[item, 0, y0:y0 + 4, x0:x0 + 5] = IGNORE
            label[item, 0, y0 + 1:y0 + 3, x0 + 1:x0 + 4] = cls
    return fc7, rs.randn(n, classes, side, side), label


@pytest.mark.parametrize("options", TABLE31_OPTIONS,
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_items_with_few_of_the_classes_match_the_frozen_algorithm(options):
    # issue #29: the products use only the classes in each item's labels and the sum of
    # all templates; the results stay the frozen algorithm's within float32 rounding
    for dtype, rtol in ((np.float64, 1e-11), (np.float32, 2e-5)):
        fc7, fc8, label = (a.astype(dtype) for a in spread_classes_batch(5))
        old_loss, old_grad = frozen_template_similarity_loss(fc7, fc8, label, **options)
        loss, grad = tl.template_similarity_loss(fc7, fc8, label, **options)
        assert loss == pytest.approx(old_loss, rel=rtol)
        np.testing.assert_allclose(grad, old_grad, rtol=10 * rtol,
                                   atol=10 * rtol * np.abs(old_grad).max())


@pytest.mark.parametrize("scipy", [True, False], ids=["scipy", "numpy"])
def test_add_product_adds_in_place(scipy, monkeypatch):
    if not scipy:   # the GPU bundle's Python has no SciPy
        monkeypatch.setattr(similarity_blocks, "_scipy_gemm", lambda dtype: None)
    rs = np.random.RandomState(0)
    for dtype in (np.float32, np.float64):
        target, left, right = (rs.randn(*shape).astype(dtype)
                               for shape in ((6, 5), (6, 3), (3, 5)))
        expected = target + left @ right
        assert similarity_blocks.add_product(target, left, right) is target
        np.testing.assert_allclose(target, expected, rtol=1e-5)


def test_single_threaded_blas_restores_the_thread_counts():
    wheels = thread_pool._wheel_openblas()
    before = [get() for get, _ in wheels]
    with thread_pool.single_threaded_blas():
        assert all(get() == 1 for get, _ in wheels)
    assert [get() for get, _ in wheels] == before


@pytest.mark.parametrize("similarity", tl.SIMILARITIES)
def test_same_bits_for_every_thread_count_and_block_size(similarity, monkeypatch):
    fc7, fc8, label = fc7_like_batch(2)
    results = []
    for threads, row_bytes in ((1, 2 ** 17), (2, 2 ** 17), (3, 2 ** 17), (2, 64 * 4 * 8)):
        monkeypatch.setattr(similarity_blocks, "PRODUCT_ROW_BYTES", row_bytes)
        monkeypatch.setattr(similarity_blocks, "GRADIENT_ROW_BYTES", row_bytes)
        for template_grad in (False, True):
            loss, grad = tl.template_similarity_loss(fc7, fc8, label, similarity,
                                                     template_grad=template_grad,
                                                     threads=threads)
            results.append((row_bytes, template_grad, loss, grad))
    for row_bytes, template_grad, loss, grad in results:
        first = next(r for r in results if r[0] == row_bytes and r[1] == template_grad)
        assert loss == first[2] and np.array_equal(grad, first[3])


def test_nearly_constant_vectors_are_centred_exactly():
    # x = 100 + noise of 1e-3: |x|^2 - D mean^2 would lose every float32 bit of the
    # centred norm; the exact centring keeps the float32 correlation at the float64 one
    rs = np.random.RandomState(3)
    fc7, fc8, label = fc7_like_batch(4)
    fc7[2, :, 3, 4] = 100 + 1e-3 * rs.randn(fc7.shape[1])
    for similarity in ("correlation", "correlation_printed"):
        loss64, grad64 = tl.template_similarity_loss(fc7.astype(np.float64), fc8, label,
                                                     similarity)
        loss32, grad32 = tl.template_similarity_loss(fc7, fc8, label, similarity)
        assert loss32 == pytest.approx(loss64, rel=1e-4)
        np.testing.assert_allclose(grad32[2, :, 3, 4], grad64[2, :, 3, 4], rtol=1e-3,
                                   atol=1e-4 * np.abs(grad64[2, :, 3, 4]).max())


def test_backward_scales_into_the_given_buffer():
    fc7, fc8, label = fc7_like_batch(5)
    state = tl.loss_forward(fc7, fc8, label, "correlation")
    out = np.full_like(fc7, np.nan)
    assert tl.loss_backward(state, out, 0.25, template_grad=True) is out
    _, grad = tl.template_similarity_loss(fc7, fc8, label, "correlation", template_grad=True)
    np.testing.assert_allclose(out, 0.25 * grad, rtol=1e-6, atol=1e-9)


def test_pool_size_setting(monkeypatch):
    monkeypatch.delenv(thread_pool.THREADS_ENV, raising=False)
    assert thread_pool.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(thread_pool.THREADS_ENV, "3")
    assert thread_pool.default_threads() == 3
    monkeypatch.setenv(thread_pool.THREADS_ENV, "zero")
    with pytest.raises(ToolkitError, match="PIXELFEEDBACK_LOSS_THREADS must be a positive"):
        thread_pool.default_threads()
    with pytest.raises(ToolkitError, match="threads must be a positive integer"):
        thread_pool.resolve_threads(0)


def test_importing_starts_no_thread_and_the_pool_starts_on_use():
    script = ("import threading, numpy as np\n"
              "import python_layers.template_similarity as tl\n"
              "import python_layers.thread_pool\n"
              "print(threading.active_count())\n"
              "x = np.random.rand(4, 8, 3, 3).astype(np.float32)\n"
              "s = np.random.rand(4, 2, 3, 3).astype(np.float32)\n"
              "y = np.zeros((4, 1, 3, 3), np.float32)\n"
              "tl.template_similarity_loss(x, s, y, threads=2)\n"
              "print(threading.active_count())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, check=True)
    before, after = map(int, done.stdout.split())
    assert before == 1 and after > 1


# ----------------------------------------------------------------------------- diagnostics

def test_stats_line_round_trip():
    line = tl.format_stats_line(40, 1000, 25, 0.125, "centred")
    text = f"I1206 loss = 3\n{tl.format_stats_line(20, 500, 0, 1.5, 'centred')}\n{line}\nmore\n"
    assert tl.parse_stats_line(text) == {"forwards": 40, "valid_vectors": 1000,
                                         "zero_vectors": 25, "zero_share": 0.025,
                                         "min_norm": 0.125, "norm": "centred"}
    assert tl.parse_stats_line("no such line") is None
    assert tl.parse_stats_line(tl.format_stats_line(1, 0, 0, float("inf"), "plain"))[
        "min_norm"] == float("inf")


@pytest.mark.parametrize("similarity", ["cosine", "correlation"])
def test_layer_writes_its_tally_on_the_first_and_every_20th_forward(caffe, tmp_path, capfd,
                                                                    similarity):
    fc7, fc8, label = random_batch(4, depth=6, dtype=np.float32)
    fc7[0, :, 0, 1] = 0.0      # an all-zero valid vector
    fc7[1, :, 0, 0] = 2.0      # a constant one (centred norm 0, not all zero)
    net = make_net(caffe, tmp_path, fc7, fc8, label, tl.loss_param_str(similarity, False))
    capfd.readouterr()
    lines = []
    for _ in range(41):
        net.forward()
        lines += [x for x in capfd.readouterr().err.splitlines() if x.startswith("Template")]
    assert len(lines) == 3 and [tl.parse_stats_line(x)["forwards"] for x in lines] == [1, 20, 40]
    valid = (label[:, 0] != IGNORE)
    vectors = np.moveaxis(fc7.astype(np.float64), 1, -1)[valid]
    if similarity == "correlation":
        vectors = vectors - vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(vectors, axis=1)
    stats = tl.parse_stats_line("\n".join(lines))
    assert stats["valid_vectors"] == 40 * valid.sum() and stats["zero_vectors"] == 40
    assert stats["zero_share"] == pytest.approx(1 / valid.sum(), abs=1e-6)
    assert stats["norm"] == ("plain" if similarity == "cosine" else "centred")
    assert stats["min_norm"] == pytest.approx(norms.min(), rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------- ignore_label

@pytest.mark.parametrize("value", [-1, 256, 3.0])
def test_ignore_label_must_be_a_label_value(value):
    with pytest.raises(ToolkitError, match=r"'ignore_label' must be an integer from 0 to 255 "
                                           r"\(labels are 8-bit PNGs; VOC uses 255\)"):
        tl.parse_param_str(f'{{"ignore_label": {value}}}')


@pytest.mark.parametrize("value, message", [
    (-1, "'ignore_label' must be an integer from 0 to 255"),
    (2, r"'ignore_label' 2 is a class id of fc8 \(bottom\[1\] has 4 channels, classes 0..3\); "
        r"use a label value from 4 to 255 \(VOC uses 255\)"),
])
def test_caffe_net_refuses_a_bad_ignore_label_at_setup(caffe, tmp_path, value, message):
    fc7, fc8, label = random_batch(0, dtype=np.float32)
    with pytest.raises(ToolkitError, match=message):
        make_net(caffe, tmp_path, fc7, fc8, label, f'{{"ignore_label": {value}}}')
    with pytest.raises(ToolkitError, match=message):
        tl.template_similarity_loss(fc7, fc8, label, ignore_label=value)
    make_net(caffe, tmp_path, fc7, fc8, label, '{"ignore_label": 4}')   # above the classes
