"""pixelfeedback.experiments and tools/experiments.py: the four chapter-2 experiments on a
reduced-width DeepLab-LargeFOV with fixed-seed random weights and a small synthetic data set
(real Caffe throughout).

The pure functions are checked on hand-made arrays; the runs are checked for their tables,
figures, value ranges, resumption and its settings guard, the mask_fn hook, agreement with
pixelfeedback.evaluation, and the command line's help, errors and summary."""
import csv
import os
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from pixelfeedback import evaluation, files, part_masking, pipeline, synthetic
from pixelfeedback import experiments as ex
from pixelfeedback.fixations import SHIFTS
from pixelfeedback.nets import largefov, netspec, registry
from pixelfeedback.nets.weights import fill_random_weights
from python_layers import ToolkitError, interp, voc_io

from tests.conftest import REPO  # noqa: E402
SCRIPT = os.path.join(REPO, "tools", "experiments.py")
SIZE = 65
WIDTH_DIV = 32
SEED = 1      # these random weights detect two classes (dog, chair) on the synthetic images
N_VAL = 4


# --- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory, caffe):
    """(deploy prototxt, caffemodel, test prototxt) of a 5-class reduced LargeFOV, input 65."""
    root = tmp_path_factory.mktemp("model")
    deploy = str(root / "deploy.prototxt")
    netspec.write_net(largefov.deploy_net(width_div=WIDTH_DIV, num_classes=5, size=SIZE), deploy)
    net = caffe.Net(deploy, caffe.TEST)
    fill_random_weights(net, seed=SEED)
    weights = str(root / "random.caffemodel")
    net.save(weights)
    test = str(root / "test.prototxt")
    netspec.write_net(largefov.test_net(width_div=WIDTH_DIV, num_classes=5, size=SIZE), test)
    return deploy, weights, test


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A synthetic data set: (root, val list) with N_VAL images of 65 px."""
    info = synthetic.generate(str(tmp_path_factory.mktemp("synthetic")), n_train=1,
                              n_val=N_VAL, size=SIZE)
    return info["root"], info["val_list"]


def run(experiment, model, data, out, **options):
    deploy, weights, _ = model
    root, list_file = data
    options.setdefault("progress", False)
    function = {"location": ex.fixation_location, "shift": ex.shift_variants,
                "k-needed": ex.k_needed, "salient": ex.salient_parts}[experiment]
    return function(deploy, weights, root, list_file, str(out), **options)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def read_text(path):
    with open(path) as f:
        return f.read()


def number(cell):
    return float("nan") if cell == "" else float(cell)


def check_png(path):
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 50 and image.shape[1] > 50, path


# --- pure functions ---------------------------------------------------------------------

def test_percent_inside_by_hand():
    label = np.zeros((6, 8), np.uint8)
    label[1:4, 2:6] = 3                        # the object
    label[0, :] = voc_io.IGNORE_LABEL          # a void row
    points = [(2, 3), (1, 2), (5, 5), (0, 4), (9, 9)]   # in, in, out, void, outside image
    counts = [2, 1, 3, 4, 7]
    pct, inside, total = ex.percent_inside(points, counts, label, 3)
    assert (inside, total) == (3.0, 6.0) and pct == pytest.approx(50.0)
    pct, inside, total = ex.percent_inside(points, counts, label, 3, void="outside")
    assert (inside, total) == (3.0, 10.0) and pct == pytest.approx(30.0)
    pct, _, total = ex.percent_inside([(0, 1)], [1], label, 3)
    assert np.isnan(pct) and total == 0
    with pytest.raises(ToolkitError, match="void"):
        ex.percent_inside(points, counts, label, 3, void="inside")


def test_zoom_is_deeplab_zoom_and_predict_crops():
    scores = np.random.RandomState(0).randn(3, 9, 9).astype(np.float32)
    np.testing.assert_array_equal(pipeline.zoom_scores(scores, (65, 65)),
                                  interp.zoom_bilinear(scores, 8))
    other = pipeline.zoom_scores(scores, (21, 30))          # not a whole factor: same grid
    assert other.shape == (3, 21, 30)
    np.testing.assert_allclose(other[:, [0, -1]][:, :, [0, -1]],
                               scores[:, [0, -1]][:, :, [0, -1]], rtol=1e-5)
    prediction, zoomed = pipeline.prediction_from_scores(scores, (65, 65), (50, 40))
    assert prediction.shape == (50, 40) and zoomed.shape == (3, 50, 40)
    np.testing.assert_array_equal(prediction, zoomed.argmax(0))


def test_densest_region_takes_the_peak_component():
    heat = np.zeros((40, 50))
    heat[5:10, 5:10] = 0.8                       # a dense blob, not the peak's
    heat[20:30, 30:38] = 0.7
    heat[25, 33] = 1.0                           # the peak
    region = ex.densest_region(heat, "heat", threshold=0.5)
    assert region.sum() == 80 and region[25, 33] and not region[7, 7]
    disc = ex.densest_region(heat, "disc", radius_fraction=2 / np.hypot(40, 50))
    assert disc.sum() == 13 and disc[25, 33]     # the pixels within 2 px
    assert not ex.densest_region(np.zeros((4, 4))).any()
    with pytest.raises(ToolkitError, match="threshold"):
        ex.densest_region(heat, "heat", threshold=0)


def test_masked_input_is_zero_after_mean_subtraction():
    image = np.random.RandomState(0).randint(0, 256, (30, 40, 3)).astype(np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[3:9, 10:20] = True
    masked, data = ex.masked_input(image, mask, 65, registry.DEEPLAB_MEAN)
    assert data.shape == (3, 65, 65)
    assert np.all(data[:, :30, :40][:, mask] == 0)
    np.testing.assert_array_equal(masked[mask], np.tile([104, 117, 123], (60, 1)))
    np.testing.assert_array_equal(masked[~mask], image[~mask])


def test_activation_change_and_accuracy_by_hand():
    before = np.array([[4.0, 2.0], [1.0, 9.0]])
    after = np.array([[3.0, 1.0], [0.0, 0.0]])
    region = np.array([[True, True], [False, False]])
    change = ex.activation_change(before, after, region)
    assert change == dict(mean_before=3.0, mean_after=2.0, drop=1.0,
                          drop_pct=pytest.approx(100 / 3))
    assert np.isnan(ex.activation_change(before, after, np.zeros((2, 2), bool))["drop"])
    assert ex.class_accuracy(np.array([[2, 1], [2, 2]]), region, 2) == 0.5


def test_k_needed_table_averages_over_all_units():
    records = [{"layers": [["conv1", 2, [2.0, 4.0]], ["pool1", 1, [1.0, 3.0]]]},
               {"layers": [["conv1", 2, [2.0, 2.0]]]}]
    rows = ex.k_needed_table(records, (0.1, 0.5), layer_order=["pool1", "conv1"])
    assert [r["layer"] for r in rows] == ["pool1", "conv1"]
    assert rows[1] == {"layer": "conv1", "units": 4, "k_at_10": 1.0, "k_at_50": 1.5}


# --- the experiments ---------------------------------------------------------------------

def test_location_writes_table_and_figure_and_matches_evaluate(model, data, tmp_path):
    result = run("location", model, data, tmp_path / "out")
    rows = read_csv(result["csv"])
    assert list(rows[0]) == ["class", "images", "mean_pct_inside", "iou"]
    assert [r["class"] for r in rows] == list(synthetic.CLASS_NAMES[1:]) + ["mean"]
    detected = [r for r in rows[:-1] if int(r["images"]) > 0]
    assert detected, "the random net must detect some class"
    for row in rows:
        pct, iou = number(row["mean_pct_inside"]), number(row["iou"])
        assert np.isnan(pct) or 0 <= pct <= 100
        assert 0 <= iou <= 1
        assert 0 <= int(row["images"]) <= N_VAL
    check_png(result["png"])
    assert result["images"] == N_VAL and result["images_run"] == N_VAL

    # The IoU comes from the test protocol: identical to evaluation.evaluate on the test net.
    _, weights, test = model
    root, list_file = data
    evaluated = evaluation.evaluate((test, weights), list_file, root, str(tmp_path / "eval"),
                                    num_classes=5, size=SIZE, progress=False,
                                    class_names=synthetic.CLASS_NAMES)
    for row in rows[:-1]:
        assert float(row["iou"]) == pytest.approx(evaluated["class_iou"][row["class"]],
                                                  abs=5e-5)
    assert result["mean_iou"] == pytest.approx(evaluated["mean_iou"], abs=1e-12)


def test_location_end_to_end_by_hand(model, data, tmp_path, caffe):
    """One image under labels whose answers are known. With D the object classes the net
    detects, the image is listed once per class c of D labelled all c (c's fixations are
    100 % inside, the others' 0 %), once all background (0 %) and once all void (not
    counted with void='skip', 0 % with void='outside'); the IoU of c follows from the
    number n_c of pixels predicted c: TP = n_c, FP = |D| n_c, FN = N - n_c."""
    deploy, weights, _ = model
    root, _ = data
    image = voc_io.read_image(os.path.join(root, "JPEGImages", "val_00000.jpg"))
    net = caffe.Net(deploy, caffe.TEST)
    net.copy_from(weights)
    net.blobs["data"].data[0] = pipeline.prepare_input(image, SIZE, registry.DEEPLAB_MEAN)[0]
    net.forward()
    scores = net.blobs["fc8_voc12"].data[0]
    prediction, _ = pipeline.prediction_from_scores(scores, (SIZE, SIZE), image.shape[:2])
    detected = [int(c) for c in np.unique(scores.argmax(0)) if c != 0]
    assert detected
    hand = tmp_path / "hand"
    os.makedirs(hand / "JPEGImages")
    labels = [(f"all_{c}", c) for c in detected] + [("all_background", 0),
                                                   ("all_void", voc_io.IGNORE_LABEL)]
    lines = []
    for name, value in labels:
        shutil.copy(os.path.join(root, "JPEGImages", "val_00000.jpg"),
                    hand / "JPEGImages" / f"{name}.jpg")
        files.write_label(str(hand / "labels" / f"{name}.png"),
                          np.full(image.shape[:2], value, np.uint8))
        lines.append(f"/JPEGImages/{name}.jpg /labels/{name}.png\n")
    list_file = hand / "list.txt"
    list_file.write_text("".join(lines))
    names = list(synthetic.CLASS_NAMES)
    total = prediction.size
    for void, images in (("skip", len(detected) + 1), ("outside", len(detected) + 2)):
        result = ex.fixation_location(deploy, weights, str(hand), str(list_file),
                                      str(tmp_path / void), void=void, progress=False,
                                      class_names=names)
        for c in detected:
            row = next(r for r in result["rows"] if r["class"] == names[c])
            assert row["images"] == images
            assert row["mean_pct_inside"] == pytest.approx(100 / images)
            n_c = int((prediction == c).sum())
            assert row["iou"] == pytest.approx(n_c / (len(detected) * n_c + total))


def test_resume_processes_only_missing_images(model, data, tmp_path):
    reference = run("location", model, data, tmp_path / "reference")

    class Stop(Exception):
        pass

    def stop_after_two(index, image_id, cached):
        if index == 1:
            raise Stop()

    out = tmp_path / "out"
    with pytest.raises(Stop):
        run("location", model, data, out, on_image=stop_after_two)
    cache = out / "cache" / "location" / "images"   # the location experiment's records
    assert sorted(p.name for p in cache.glob("val_*.json")) == ["val_00000.json",
                                                               "val_00001.json"]
    seen = []
    result = run("location", model, data, out, on_image=lambda i, n, cached: seen.append(cached))
    assert seen == [True, True, False, False]
    assert (result["images_run"], result["images_cached"]) == (2, 2)
    assert read_text(result["csv"]) == read_text(reference["csv"])

    os.unlink(cache / "val_00002.json")
    seen.clear()
    result = run("location", model, data, out, on_image=lambda i, n, cached: seen.append(cached))
    assert seen == [True, True, False, True]
    assert read_text(result["csv"]) == read_text(reference["csv"])

    with pytest.raises(ToolkitError, match="shift"):
        run("location", model, data, out, shift="full")
    result = run("location", model, data, out, shift="full", restart=True)
    assert result["images_run"] == N_VAL


def test_shift_variants(model, data, tmp_path):
    result = run("shift", model, data, tmp_path / "out", limit=3)
    rows = read_csv(result["csv"])
    assert list(rows[0]) == ["class", "images", "none", "partial", "full"]
    assert [r["class"] for r in rows] == list(synthetic.CLASS_NAMES[1:]) + ["mean"]
    assert result["images"] == 3
    for row in rows:
        for variant in SHIFTS:
            value = number(row[variant])
            assert np.isnan(value) or 0 <= value <= 100
    assert any(not np.isnan(number(rows[-1][v])) for v in SHIFTS)
    # Each column is what the back-tracker gives under that shift, computed here with a
    # tracker of our own per variant: the % of the class's weighted points on its mask,
    # averaged over the images that detect the class.
    expected = shift_percentages_by_hand(model, data, 3)
    for row in rows[:-1]:
        class_id = synthetic.CLASS_NAMES.index(row["class"])
        for variant in SHIFTS:
            assert number(row[variant]) == pytest.approx(
                expected[variant].get(class_id, float("nan")), abs=1e-4, nan_ok=True), (
                row["class"], variant)
    # ... and the variants do differ here (a run that ignored the shift would not pass).
    assert len({tuple(np.round(list(expected[v].values()), 6)) for v in SHIFTS}) > 1
    check_png(result["png"])


def shift_percentages_by_hand(model, data, limit):
    """{shift: {class: mean % inside}} of the first ``limit`` images, from a BackTracker per
    shift variant on a caffe.Net of our own (not the experiment's session)."""
    import caffe
    from pixelfeedback.fixations import BackTracker, NetGraph, run_forward

    deploy, weights, _ = model
    root, list_file = data
    net = caffe.Net(deploy, weights, caffe.TEST)
    graph = NetGraph.from_prototxt(deploy)
    sums = {v: {} for v in SHIFTS}
    for image_path, label_path in voc_io.read_list(list_file, root=root)[:limit]:
        image, label = voc_io.read_image(image_path), voc_io.read_label(label_path)
        data_blob, _, _ = pipeline.prepare_input(image, SIZE, registry.DEEPLAB_MEAN)
        run_forward(net, data_blob[None])
        scores = net.blobs["fc8_voc12"].data
        region = pipeline.image_region(scores.shape, (SIZE, SIZE), image.shape[:2])
        label_map = np.where(region, scores[0].argmax(0), 0)
        classes = [int(c) for c in np.unique(label_map) if c]
        for variant in SHIFTS:
            tracker = BackTracker(net, graph, shift=variant, k="resolution")
            traced = tracker.trace("fc8_voc12", classes=classes, skip_background=False,
                                   seed_region=region)
            for class_id in classes:
                points, counts = traced[class_id].points, traced[class_id].counts
                inside = ((points[:, 0] < image.shape[0]) & (points[:, 1] < image.shape[1]))
                pct, _, total = ex.percent_inside(points[inside], counts[inside], label,
                                                  class_id)
                if total:
                    sums[variant].setdefault(class_id, []).append(pct)
    return {v: {c: float(np.mean(p)) for c, p in by_class.items()}
            for v, by_class in sums.items()}


def test_k_needed(model, data, tmp_path, caffe):
    result = run("k-needed", model, data, tmp_path / "out", limit=2)
    rows = read_csv(result["csv"])
    columns = ["layer", "units"] + [f"k_at_{x}" for x in range(10, 100, 10)]
    assert list(rows[0]) == columns
    deploy = model[0]
    layers = list(caffe.Net(deploy, caffe.TEST)._layer_names)
    names = [r["layer"] for r in rows]
    assert {"conv1_1", "pool1", "conv5_3", "fc8_voc12"} <= set(names)
    assert names == sorted(names, key=layers.index)       # the net's order, input first
    for row in rows:
        ks = np.array([float(row[c]) for c in columns[2:]])
        assert int(row["units"]) > 0
        assert np.all(ks >= 1) and np.all(np.diff(ks) >= 0), row
    check_png(result["png"])


def test_salient_default_mask(model, data, tmp_path):
    result = run("salient", model, data, tmp_path / "out", figures=2)
    rows = read_csv(result["csv"])
    assert rows and list(rows[0]) == list(ex.SALIENT_COLUMNS)
    for row in rows:
        before, after = number(row["mean_before"]), number(row["mean_after"])
        if int(row["object_pixels"]):
            assert number(row["drop"]) == pytest.approx(before - after, abs=2e-4)
            for key in ("acc_before", "acc_after"):
                assert 0 <= number(row[key]) <= 1
        assert int(row["mask_pixels"]) > 0
    check_png(result["png"])
    # The mask is the densest fixation region of the traced class, worked out here on our
    # own: the 8-connected region of the class's heat map >= 0.5 around its peak. Hiding it
    # (the mean colour: 0 in the net input) and forwarding again gives the row's mask size
    # and mean score after.
    expected = salient_rows_by_hand(model, data)
    assert len(expected) == len(rows) and len({r["class"] for r in rows}) > 1
    for row in rows:
        mask_pixels, mean_after = expected[row["image"], row["class"]]
        assert int(row["mask_pixels"]) == mask_pixels, (row["image"], row["class"])
        assert number(row["mean_after"]) == pytest.approx(mean_after, abs=2e-4, nan_ok=True)
    figures = sorted(os.listdir(tmp_path / "out" / "salient"))
    with_rows = sorted({r["image"] for r in rows})
    assert figures == [f"{i}.png" for i in with_rows if int(i.split("_")[1]) < 2]
    for name in figures:
        check_png(tmp_path / "out" / "salient" / name)


def salient_rows_by_hand(model, data):
    """{(image id, class name): (mask pixels, mean score after masking)} for every traced
    class present in the ground truth, with a net and tracker of our own."""
    import caffe
    from scipy import ndimage

    from pixelfeedback import heatmap
    from pixelfeedback.fixations import BackTracker, NetGraph, run_forward

    deploy, weights, _ = model
    root, list_file = data
    net = caffe.Net(deploy, weights, caffe.TEST)
    tracker = BackTracker(net, NetGraph.from_prototxt(deploy), k="resolution")
    mean = registry.DEEPLAB_MEAN
    expected = {}
    for image_path, label_path in voc_io.read_list(list_file, root=root):
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        image, label = voc_io.read_image(image_path), voc_io.read_label(label_path)
        height, width = image.shape[:2]
        blob, _, _ = pipeline.prepare_input(image, SIZE, mean)
        run_forward(net, blob[None])
        scores = net.blobs["fc8_voc12"].data
        region = pipeline.image_region(scores.shape, (SIZE, SIZE), (height, width))
        label_map = np.where(region, scores[0].argmax(0), 0)
        classes = [int(c) for c in np.unique(label_map) if c]
        traced = tracker.trace("fc8_voc12", classes=classes, skip_background=False,
                               seed_region=region)
        for class_id in classes:
            if not (label == class_id).any():
                continue
            points, counts = traced[class_id].points, traced[class_id].counts
            inside = (points[:, 0] < height) & (points[:, 1] < width)
            points, counts = heatmap.merge_points(points[inside], counts[inside])
            heat = heatmap.fixation_heatmap(points, image.shape, counts).heat
            parts, _ = ndimage.label(heat >= 0.5, structure=np.ones((3, 3), bool))
            mask = parts == parts[np.unravel_index(np.argmax(heat), heat.shape)]
            blob, _, _ = pipeline.prepare_input(image, SIZE, mean)
            blob[:, :height, :width][:, mask] = 0      # the mean colour, after subtraction
            run_forward(net, blob[None])
            zoomed = interp.zoom_bilinear(net.blobs["fc8_voc12"].data[0], 8)
            object_region = (label == class_id) & ~mask
            after = zoomed[class_id, :height, :width][object_region]
            expected[image_id, synthetic.CLASS_NAMES[class_id]] = (
                int(mask.sum()), float(after.mean()) if after.size else float("nan"))
    return expected


def test_salient_figures_skip_temporaries_and_settings_are_guarded(model, data, tmp_path):
    out = tmp_path / "out"
    leftover = out / "salient" / ".tmp-inflight.png"

    def leave_a_temporary(index, image_id, cached):   # a figure being written meanwhile
        if index == 1:
            leftover.write_bytes(b"half a png")

    result = run("salient", model, data, out, limit=2, figures=2, on_image=leave_a_temporary)
    assert leftover.exists() and result["figures"]
    assert [os.path.basename(f) for f in result["figures"]] == sorted(
        name for name in os.listdir(out / "salient") if not name.startswith(".tmp-"))
    again = run("salient", model, data, out, limit=2, figures=2)   # sweeps the leftover
    assert again["images_run"] == 0 and again["figures"] == result["figures"]
    assert not leftover.exists()

    with pytest.raises(ToolkitError, match=r"mask_threshold: 0\.5 there, 0\.3 now.*--restart"):
        run("salient", model, data, out, limit=2, mask_threshold=0.3)
    restarted = run("salient", model, data, out, limit=2, mask_threshold=0.3, figures=0,
                    restart=True)
    assert restarted["images_run"] == 2
    assert restarted["figures"] == []   # the old settings' figures went with their records


def test_salient_uses_the_mask_fn_hook(model, data, tmp_path):
    calls = []

    def hide_corner(image, image_id, class_id, heat):
        calls.append((image_id, class_id, heat.shape))
        mask = np.zeros(image.shape[:2], bool)
        mask[:10, :12] = True
        masked = image.copy()
        masked[mask] = 0
        return masked, mask

    result = run("salient", model, data, tmp_path / "out", mask_fn=hide_corner, figures=0)
    names = list(synthetic.CLASS_NAMES)
    assert [(r["image"], names.index(r["class"])) for r in result["rows"]] == \
        [(i, c) for i, c, _ in calls]
    assert calls and all(shape == (SIZE, SIZE) for _, _, shape in calls)
    assert all(r["mask_pixels"] == 120 for r in result["rows"])
    assert not os.path.exists(tmp_path / "out" / "salient")


def test_synthetic_part_mask_fn(model, data, tmp_path):
    root, _ = data
    annotation = part_masking.load_annotation(root, "val_00000")
    image = voc_io.read_image(os.path.join(root, "JPEGImages", "val_00000.jpg"))
    obj = annotation["objects"][0]
    mask_fn = ex.synthetic_part_mask_fn(root)
    masked, mask = mask_fn(image, "val_00000", obj["class_id"], None)
    same_class = [o for o in annotation["objects"] if o["class_id"] == obj["class_id"]]
    assert mask[obj["part_mask"]].all()
    assert not (mask & ~np.any([o["body_mask"] for o in same_class], axis=0)).any()
    with pytest.raises(ToolkitError, match="tools/synthetic.py"):
        ex.synthetic_part_mask_fn(str(tmp_path))
    np.testing.assert_array_equal(masked[~mask], image[~mask])
    assert (masked[mask] != image[mask]).any()
    result = run("salient", model, data, tmp_path / "out", mask_fn=mask_fn, figures=1)
    part_rows = [r for r in result["rows"] if r["mask_pixels"] > 0]
    assert part_rows, "some detected class must have a visible part"


def test_run_all_matches_the_single_experiments(model, data, tmp_path):
    deploy, weights, _ = model
    root, list_file = data
    results = ex.run_all(deploy, weights, root, list_file, str(tmp_path / "all"), limit=2,
                         figures=0, progress=False)
    assert list(results) == list(ex.EXPERIMENTS)
    for experiment, result in results.items():
        single = run(experiment, model, data, tmp_path / experiment, limit=2, figures=0)
        assert read_text(result["csv"]) == read_text(single["csv"]), experiment
        check_png(result["png"])
    again = run("location", model, data, tmp_path / "all", limit=2)   # reuses run_all's records
    assert again["images_run"] == 0


# --- command line ------------------------------------------------------------------------

def run_cli(args, cwd=None):
    env = dict(os.environ, GLOG_minloglevel="2")
    return subprocess.run([sys.executable, SCRIPT] + list(args), cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(done, *phrases):
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: " in done.stderr and "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def test_cli_help_and_errors(model, data, tmp_path):
    deploy, weights, _ = model
    root, list_file = data
    done = run_cli(["--help"], tmp_path)
    assert done.returncode == 0
    for name in ex.EXPERIMENTS + ("all",):
        assert name in done.stdout
    # The top-level help lists every experiment with its line and every option, with the
    # flags shared by the other tools.
    for spec in ex.SPECS.values():
        assert f"{spec.name:9} {spec.help}" in done.stdout
    for option in ("--mask-threshold", "--mask-radius", "--fractions", "--void", "--restart",
                   "--gpu ID", "--mean B,G,R", "--size N", "--out PATH"):
        assert option in done.stdout, option
    done = run_cli(["salient", "--help"], tmp_path)
    assert done.returncode == 0 and "--mask-threshold" in done.stdout
    assert_user_error(run_cli(["bogus"], tmp_path), "invalid choice")
    base = ["--data-root", root, "--out", str(tmp_path / "out")]
    assert_user_error(run_cli(["location", "--model", deploy, "--weights", weights,
                               "--list", str(tmp_path / "missing.txt")] + base),
                      "list file not found")
    assert_user_error(run_cli(["location", "--model", "no-such-net", "--list", list_file]
                              + base), "unknown model")
    assert_user_error(run_cli(["location", "--model", deploy, "--weights", weights,
                               "--list", list_file, "--num-classes", "21"] + base),
                      "--num-classes")


def test_cli_runs_an_experiment(model, data, tmp_path):
    deploy, weights, _ = model
    root, list_file = data
    out = tmp_path / "out"
    args = ["location", "--model", deploy, "--weights", weights, "--data-root", root,
            "--list", list_file, "--out", str(out), "--limit", "2", "--no-progress"]
    done = run_cli(args, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "location: 2 images (2 run, 0 from the cache)" in done.stdout
    assert (out / "location.csv").is_file() and (out / "location.png").is_file()
    # The printed means are the CSV's 'mean' row (the mean over the object classes).
    mean_row = read_csv(out / "location.csv")[-1]
    printed = re.search(r"mean over the 4 object classes \(the CSV's 'mean' row\): "
                        r"% inside ([^,\s]+), IoU (\S+)", done.stdout)
    assert printed, done.stdout
    assert [("" if text == "n/a" else text) for text in printed.groups()] == \
        [mean_row["mean_pct_inside"], mean_row["iou"]]

    # Another setting into the same --out is refused, naming it; --restart starts afresh
    # under the new settings, which the next run then resumes.
    done = run_cli(args + ["--shift", "none"], tmp_path)
    assert_user_error(done, "shift: 'partial' there, 'none' now", "--restart")
    done = run_cli(args + ["--shift", "none", "--restart"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "location: 2 images (2 run, 0 from the cache)" in done.stdout
    done = run_cli(args + ["--shift", "none"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "location: 2 images (0 run, 2 from the cache)" in done.stdout
