"""The ImageSegData Python layer and its per-image transform, on generated files, through
a real caffe.Net: shapes, padding, crops and mirrors, seeds, prefetching and errors."""
import json
import os

import cv2
import numpy as np
import pytest

from pixelfeedback import files
from python_layers import ToolkitError, voc_io
from python_layers.seg_data import DEEPLAB_MEAN, crop_window, pad_to, preprocess

MEAN = np.array(DEEPLAB_MEAN, np.float32)


def data_net(caffe, tmp_path, phase=None, **params):
    """A caffe.Net holding only the data layer with ``params`` as its param_str."""
    from caffe import layers as L
    n = caffe.NetSpec()
    n.data, n.label = L.Python(ntop=2, python_param=dict(
        module="python_layers.seg_data", layer="ImageSegData", param_str=json.dumps(params)))
    path = tmp_path / f"data_{len(list(tmp_path.iterdir()))}.prototxt"
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TRAIN if phase is None else phase)


def batches(net, count):
    out = []
    for _ in range(count):
        net.forward()
        out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
    net.layers[0].close()
    return out


def coordinate_voc(root, n_images=3, size=(40, 50)):
    """A lossless (PNG) data set whose pixels say where they come from: B = label value,
    G = column, R = row, so every crop and flip can be checked exactly."""
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    rs = np.random.RandomState(1)
    lines = []
    h, w = size
    for i in range(n_images):
        label = rs.randint(0, 21, size=(h, w)).astype(np.uint8)
        label[rs.rand(h, w) < 0.1] = 255
        image = np.stack([label, np.tile(np.arange(w), (h, 1)),
                          np.tile(np.arange(h)[:, None], (1, w))], axis=2).astype(np.uint8)
        cv2.imwrite(os.path.join(root, "JPEGImages", f"c{i}.png"), image)
        files.write_label(os.path.join(root, "SegmentationClassAug", f"c{i}.png"), label)
        lines.append(f"/JPEGImages/c{i}.png /SegmentationClassAug/c{i}.png\n")
    list_path = os.path.join(root, "list.txt")
    with open(list_path, "w") as f:
        f.writelines(lines)
    return list_path


def test_shapes_and_padding(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc  # 45 x 53 images, so a 65 crop is mostly padding
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=2, crop_size=65,
                   shuffle=False, seed=0, mirror=False)
    (data, label), = batches(net, 1)
    assert data.shape == (2, 3, 65, 65) and label.shape == (2, 1, 65, 65)
    assert data.dtype == np.float32
    # Images are smaller than the crop: the only window is the top-left one.
    assert np.all(data[:, :, 45:, :] == 0) and np.all(data[:, :, :, 53:] == 0)
    assert np.all(label[:, :, 45:, :] == 255) and np.all(label[:, :, :, 53:] == 255)
    pairs = voc_io.read_list(list_path, root)
    for slot in range(2):
        image = voc_io.read_image(pairs[slot][0]).astype(np.float32)
        np.testing.assert_array_equal(label[slot, 0, :45, :53], voc_io.read_label(pairs[slot][1]))
        np.testing.assert_allclose(data[slot, :, :45, :53], (image - MEAN).transpose(2, 0, 1),
                                   atol=1e-4)


def test_train_crops_and_mirrors_image_and_label_alike(caffe, tmp_path):
    root = str(tmp_path / "coord")
    list_path = coordinate_voc(root)
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=3, crop_size=33,
                   seed=3, mirror=True)
    labels = {i: voc_io.read_label(os.path.join(root, "SegmentationClassAug", f"c{i}.png"))
              for i in range(3)}
    flips = set()
    for data, label in batches(net, 6):
        pixels = np.rint(data + MEAN[None, :, None, None]).astype(int)
        for slot in range(3):
            cols, rows = pixels[slot, 1], pixels[slot, 2]
            # Each output pixel's source coordinates are a crop window, maybe mirrored.
            assert np.all(np.diff(rows, axis=0) == 1)
            step = np.unique(np.diff(cols, axis=1))
            assert step.size == 1 and step[0] in (1, -1)
            flips.add(int(step[0]))
            # The label at each pixel is the label of that pixel's source, for every image
            # it could come from (exactly one matches: the B channel identifies it).
            assert np.array_equal(pixels[slot, 0], label[slot, 0].astype(int))
            assert any(np.array_equal(labels[i][rows, cols], label[slot, 0]) for i in labels)
    assert flips == {1, -1}


def test_mirror_false_never_flips(caffe, tmp_path):
    root = str(tmp_path / "coord")
    list_path = coordinate_voc(root)
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=3, crop_size=33,
                   seed=3, mirror=False)
    for data, _ in batches(net, 4):
        cols = np.rint(data[:, 1] + MEAN[1]).astype(int)
        assert np.all(np.diff(cols, axis=2) == 1)


def test_test_phase_is_a_fixed_top_left_crop(caffe, tmp_path):
    root = str(tmp_path / "coord")
    list_path = coordinate_voc(root)
    net = data_net(caffe, tmp_path, phase=caffe.TEST, root=root, list=list_path, batch_size=3,
                   crop_size=33, seed=3, mirror=True, shuffle=False)
    for data, label in batches(net, 2):
        pixels = np.rint(data + MEAN[None, :, None, None]).astype(int)
        np.testing.assert_array_equal(pixels[:, 1], np.tile(np.arange(33), (3, 33, 1)))
        np.testing.assert_array_equal(pixels[:, 2], np.tile(np.arange(33)[:, None], (3, 1, 33)))
        for slot in range(3):
            truth = voc_io.read_label(os.path.join(root, "SegmentationClassAug", f"c{slot}.png"))
            np.testing.assert_array_equal(label[slot, 0], truth[:33, :33])


def test_seed_fixes_the_batches_and_prefetch_does_not_change_them(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    common = dict(root=root, list=list_path, batch_size=2, crop_size=33)
    first = batches(data_net(caffe, tmp_path, seed=5, prefetch=0, **common), 4)
    again = batches(data_net(caffe, tmp_path, seed=5, prefetch=3, **common), 4)
    other = batches(data_net(caffe, tmp_path, seed=6, prefetch=3, **common), 4)
    for (d1, l1), (d2, l2) in zip(first, again):
        np.testing.assert_array_equal(d1, d2)
        np.testing.assert_array_equal(l1, l2)
    assert any(not np.array_equal(d1, d3) for (d1, _), (d3, _) in zip(first, other))


def test_prefetch_thread_is_a_daemon(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=2, crop_size=33,
                   prefetch=2)
    thread = net.layers[0].prefetcher.thread
    assert thread.daemon and thread.is_alive()
    net.forward()
    net.layers[0].close()
    assert not thread.is_alive()


def test_preprocess_test_protocol_pads_to_513_with_the_mean(rng):
    image = rng.randint(0, 256, size=(375, 500, 3)).astype(np.uint8)
    label = rng.randint(0, 21, size=(375, 500)).astype(np.uint8)
    data, padded_label = preprocess(image, label, crop=513)
    assert data.shape == (3, 513, 513) and padded_label.shape == (513, 513)
    np.testing.assert_allclose(data[:, :375, :500], (image - MEAN).transpose(2, 0, 1), atol=1e-4)
    assert np.all(data[:, 375:] == 0) and np.all(data[:, :, 500:] == 0)
    assert np.all(padded_label[375:] == 255) and np.all(padded_label[:, 500:] == 255)
    np.testing.assert_array_equal(padded_label[:375, :500], label)
    data_only, none = preprocess(image, crop=513)
    assert none is None and np.array_equal(data_only, data)


def test_pad_to_pads_bottom_right_only():
    padded = pad_to(np.ones((2, 3), np.uint8), 4, 5, 255)
    assert padded.shape == (4, 5)
    assert np.all(padded[:2, :3] == 1) and np.all(padded[2:] == 255) and np.all(padded[:, 3:] == 255)
    big = np.zeros((6, 6, 3))
    assert pad_to(big, 4, 4, 0) is big


def test_preprocess_random_crop_is_reproducible(rng):
    image = rng.randint(0, 256, size=(60, 70, 3)).astype(np.uint8)
    label = rng.randint(0, 21, size=(60, 70)).astype(np.uint8)
    a = preprocess(image, label, 33, rng=np.random.RandomState(1), mirror=True)
    b = preprocess(image, label, 33, rng=np.random.RandomState(1), mirror=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# --- the random crop, the mirror and the seed reach every image ---------------------------
# coordinate_voc images are 40 x 50: a 33 crop has the offsets y0 0..7 and x0 0..17.

def crop_windows(data):
    """[(y0, x0, flipped)] of every slot of a batch of coordinate_voc crops, read from the
    pixels (G = source column, R = source row), independent of how the layer drew them."""
    pixels = np.rint(data + MEAN[None, :, None, None]).astype(int)
    windows = []
    for slot in pixels:
        cols, rows = slot[1], slot[2]
        windows.append((int(rows[0, 0]), int(cols[0].min()), bool(cols[0, 0] > cols[0, -1])))
    return windows


def layer_windows(net, count):
    """The crop windows of ``count`` batches of ``net``, one list per batch."""
    return [crop_windows(data) for data, _ in batches(net, count)]


def test_random_crop_takes_every_window_and_mirrors_each_image_by_a_coin(caffe, tmp_path):
    root = str(tmp_path / "coord")
    list_path = coordinate_voc(root)
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=4, crop_size=33,
                   seed=3, mirror=True)
    per_batch = layer_windows(net, 50)
    windows = [w for batch in per_batch for w in batch]  # 200 crops
    # Every valid offset is taken, in both directions (a top-left crop, a crop moving in
    # one direction only, or x0 tied to y0 fails), and none outside them.
    assert {y0 for y0, _, _ in windows} == set(range(8))
    assert {x0 for _, x0, _ in windows} == set(range(18))
    # The flip is a fair coin per image, not one per batch.
    flipped = sum(f for _, _, f in windows)
    assert 0.35 * len(windows) < flipped < 0.65 * len(windows), flipped
    assert any(len({f for _, _, f in batch}) == 2 for batch in per_batch)
    assert any(len({(y0, x0) for y0, x0, _ in batch}) > 1 for batch in per_batch)


def test_the_seed_fixes_crops_and_mirrors_not_only_the_order(caffe, tmp_path):
    # One image: the shuffle order is trivial, so only crops and flips can differ.
    root = str(tmp_path / "coord")
    list_path = coordinate_voc(root, n_images=1)
    common = dict(root=root, list=list_path, batch_size=2, crop_size=33, mirror=True)

    def run(seed, prefetch=0):
        net = data_net(caffe, tmp_path, seed=seed, prefetch=prefetch, **common)
        return [w for batch in layer_windows(net, 10) for w in batch]  # 20 crops

    first, again, other = run(5), run(5, prefetch=2), run(6)
    assert first == again
    assert [w[:2] for w in first] != [w[:2] for w in other]  # the crops follow the seed
    assert [w[2] for w in first] != [w[2] for w in other]    # and so do the flips
    # Without a seed each net draws its own crops.
    assert run(None) != run(None)


def test_preprocess_random_crop_takes_every_window_of_the_padded_image():
    # 20 x 50 image, crop 33: padded to 33 x 50, so y0 is always 0 and x0 is 0..17.
    label = np.arange(20 * 50).reshape(20, 50) % 21
    image = np.stack([label, np.tile(np.arange(50), (20, 1)),
                      np.tile(np.arange(20)[:, None], (1, 50))], axis=2).astype(np.uint8)
    rng = np.random.RandomState(0)
    windows = []
    for _ in range(200):
        data, crop_label = preprocess(image, label.astype(np.uint8), 33, rng=rng, mirror=True)
        (y0, x0, flipped), = crop_windows(data[None])
        windows.append((y0, x0, flipped))
        source = label[:, x0:x0 + 33][:, ::-1] if flipped else label[:, x0:x0 + 33]
        np.testing.assert_array_equal(crop_label[:20], source)
        assert np.all(crop_label[20:] == 255)
    assert {y0 for y0, _, _ in windows} == {0}
    assert {x0 for _, x0, _ in windows} == set(range(18))
    assert 0.35 * 200 < sum(f for _, _, f in windows) < 0.65 * 200
    no_mirror = [crop_windows(preprocess(image, crop=33, rng=rng)[0][None])[0] for _ in range(50)]
    assert not any(f for _, _, f in no_mirror) and len({x0 for _, x0, _ in no_mirror}) > 1


def test_crop_window_ranges_over_the_valid_offsets():
    rng = np.random.RandomState(0)
    windows = [crop_window((40, 50, 3), 33, rng, mirror=True) for _ in range(300)]
    assert {w[0] for w in windows} == set(range(8))
    assert {w[1] for w in windows} == set(range(18))
    assert {w[2] for w in windows} == {True, False}
    assert crop_window((40, 50, 3), 33) == (0, 0, False)  # no rng: the test protocol
    assert {crop_window((20, 30, 3), 33, rng, mirror=False) for _ in range(20)} == {(0, 0, False)}


# --- errors ----------------------------------------------------------------------------

def test_missing_file_is_named_at_setup(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    os.remove(os.path.join(root, "JPEGImages", "img_0002.jpg"))
    with pytest.raises(ToolkitError, match="img_0002.jpg"):
        data_net(caffe, tmp_path, root=root, list=list_path, crop_size=33)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_corrupt_image_error_reaches_forward(caffe, tmp_path, tiny_voc, prefetch):
    root, list_path = tiny_voc
    with open(os.path.join(root, "JPEGImages", "img_0000.jpg"), "wb") as f:
        f.write(b"this is not a jpeg" * 10)
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=4, crop_size=33,
                   shuffle=False, prefetch=prefetch)
    with pytest.raises(ToolkitError, match=r"img_0000\.jpg.*corrupt"):
        net.forward()
    with pytest.raises(ToolkitError, match="corrupt"):  # and again: it does not hang
        net.forward()


def test_label_of_another_size_names_both_files(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    files.write_label(os.path.join(root, "SegmentationClassAug", "img_0001.png"),
                      np.zeros((30, 30), np.uint8))
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=4, crop_size=33,
                   shuffle=False)
    with pytest.raises(ToolkitError, match=r"img_0001\.png is 30x30 but image .*img_0001\.jpg is 53x45"):
        net.forward()


def test_label_value_neither_class_nor_ignore(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    label = np.zeros((45, 53), np.uint8)
    label[3, 4] = 30
    files.write_label(os.path.join(root, "SegmentationClassAug", "img_0000.png"), label)
    net = data_net(caffe, tmp_path, root=root, list=list_path, batch_size=1, crop_size=33,
                   shuffle=False, prefetch=0)
    with pytest.raises(ToolkitError, match=r"img_0000\.png has values \[30\]"):
        net.forward()


def test_unknown_key_is_named(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    with pytest.raises(ToolkitError, match="'crop'"):
        data_net(caffe, tmp_path, root=root, list=list_path, crop=33)


def test_bad_values_are_named(caffe, tmp_path, tiny_voc):
    root, list_path = tiny_voc
    with pytest.raises(ToolkitError, match="'batch_size'"):
        data_net(caffe, tmp_path, root=root, list=list_path, batch_size=0)
    with pytest.raises(ToolkitError, match="'root'"):
        data_net(caffe, tmp_path, list=list_path)
