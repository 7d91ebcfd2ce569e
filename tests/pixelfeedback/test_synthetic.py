"""The synthetic VOC-style data set: determinism, VOC conventions, parts, appearance, masking."""
import os

import cv2
import numpy as np
import pytest

from python_layers import ToolkitError, voc_io
from pixelfeedback import synthetic
from tests.pixelfeedback.test_part_masking import examples


def _files(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A 100-image data set shared by the read-only tests."""
    root = str(tmp_path_factory.mktemp("synthetic") / "data")
    return synthetic.generate(root, n_train=80, n_val=20, seed=3)


def test_same_seed_is_byte_identical_and_other_seeds_differ(tmp_path):
    first = _files(synthetic.generate(str(tmp_path / "a"), n_train=6, n_val=2, seed=7)["root"])
    second = _files(synthetic.generate(str(tmp_path / "b"), n_train=6, n_val=2, seed=7)["root"])
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []   # labels, masks, JSON, JPEG
    other = _files(synthetic.generate(str(tmp_path / "c"), n_train=6, n_val=2, seed=8)["root"])
    labels = [k for k in first if k.startswith("SegmentationClass")]
    assert sum(first[k] != other[k] for k in labels) == len(labels)


def test_writer_processes_write_the_same_files(tmp_path, monkeypatch):
    """A large set is written by one process per core; the files are those one process
    writes (a smaller threshold here, so that 24 images take two processes)."""
    monkeypatch.setattr(synthetic, "PARALLEL_MIN_IMAGES", 12)
    alone = synthetic.generate(str(tmp_path / "a"), n_train=20, n_val=4, seed=5, workers=1)
    shared = synthetic.generate(str(tmp_path / "b"), n_train=20, n_val=4, seed=5, workers=2)
    first, second = _files(alone["root"]), _files(shared["root"])
    assert first.keys() == second.keys() and len(first) > 24 * 5
    assert [k for k in first if first[k] != second[k]] == []
    assert alone["counts"] == shared["counts"]


def test_an_image_depends_only_on_seed_split_and_index(tmp_path):
    """A smaller set is a prefix of a larger one of the same seed, in both splits: the
    demo's quick run trains on the first 100 of the recipe's 10000 training images and
    the committed model's test regenerates only the val images."""
    small = _files(synthetic.generate(str(tmp_path / "a"), n_train=2, n_val=2, seed=1)["root"])
    large = _files(synthetic.generate(str(tmp_path / "b"), n_train=5, n_val=3, seed=1)["root"])
    for name in ("train_00000", "train_00001", "val_00000", "val_00001"):
        for path in (os.path.join("SegmentationClass", name + ".png"),
                     os.path.join("JPEGImages", name + ".jpg"),
                     os.path.join("Objects", name + ".json")):
            assert small[path] == large[path], path


@pytest.mark.parametrize("size", [129, 161])
def test_image_sizes_are_8k_plus_1(tmp_path, size):
    info = synthetic.generate(str(tmp_path / "d"), n_train=2, n_val=1, size=size)
    assert (info["size"] - 1) % 8 == 0 and info["size"] == size
    for image, label, annotation in examples(info):
        assert image.shape == (size, size, 3) and label.shape == (size, size)
        assert annotation["bodies"].shape == (size, size)


def test_labels_values_void_band_and_visibility(dataset):
    for image, label, annotation in examples(dataset):
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3, 4, 255}
        bodies = annotation["bodies"]
        # Every pixel with a 4-neighbour of another instance (object or background) is void.
        edge = np.zeros(bodies.shape, bool)
        edge[:, 1:] |= bodies[:, 1:] != bodies[:, :-1]
        edge[:, :-1] |= bodies[:, 1:] != bodies[:, :-1]
        edge[1:, :] |= bodies[1:, :] != bodies[:-1, :]
        edge[:-1, :] |= bodies[1:, :] != bodies[:-1, :]
        assert (label[edge] == 255).all()
        assert edge.any() == bool(annotation["objects"])
        # The band stays thin: void pixels lie within void_radius of a boundary.
        near = cv2.dilate(edge.astype(np.uint8),
                          np.ones((2 * annotation["void_radius"] + 1,) * 2, np.uint8))
        assert (near[label == 255] == 1).all()
        # Labels follow the visible objects.
        assert set(np.unique(label[bodies == 0]).tolist()) <= {0, 255}
        for obj in annotation["objects"]:
            assert set(np.unique(label[obj["body_mask"]]).tolist()) <= {obj["class_id"], 255}
            assert obj["visible_pixels"] == obj["body_mask"].sum()


def test_every_part_lies_inside_its_body_and_carries_its_class(dataset):
    offsets = []
    for image, label, annotation in examples(dataset):
        assert 1 <= len(annotation["objects"]) <= 3
        for obj in annotation["objects"]:
            part, body = obj["part_mask"], obj["body_mask"]
            assert part.sum() == obj["part_side"] ** 2 == obj["part_pixels"]
            assert not (part & ~body).any()
            assert (label[part] == obj["class_id"]).all()
            assert obj["class_name"] == synthetic.CLASS_NAMES[obj["class_id"]]
            assert obj["part_pattern"] == synthetic.PART_PATTERNS[obj["class_name"]]
            ys, xs = np.nonzero(part)
            offsets.append(np.hypot(ys.mean() - obj["centre"][1], xs.mean() - obj["centre"][0]))
            assert 0.15 * obj["length"] - 1 <= obj["part_side"] <= max(0.25 * obj["length"] + 1, 7)
    assert np.median(offsets) > 2.0   # parts are placed anywhere in the body, not centred


def test_paired_classes_share_body_appearance_but_not_parts(dataset):
    body, part = {}, {}
    for image, label, annotation in examples(dataset):
        for obj in annotation["objects"]:
            rest = obj["rest_mask"] & (label == obj["class_id"])
            # leave the JPEG's ringing around the part out of the body statistics
            rest &= ~cv2.dilate(obj["part_mask"].astype(np.uint8), np.ones((5, 5))).astype(bool)
            body.setdefault(obj["class_name"], []).append(image[rest].astype(float).mean(0))
            part.setdefault(obj["class_name"], []).append(
                image[obj["part_mask"]].astype(float))
    mean_body = {name: np.mean(values, axis=0) for name, values in body.items()}
    assert set(mean_body) == {"cat", "dog", "chair", "sofa"}

    def distance(a, b):
        return np.linalg.norm(mean_body[a] - mean_body[b])

    # Pair members differ by sampling noise only; the two pairs by far more.
    assert distance("cat", "dog") < 0.35 * distance("cat", "chair")
    assert distance("chair", "sofa") < 0.35 * distance("dog", "sofa")
    # Parts differ within a pair (colour statistics of the part pixels).
    for a, b in synthetic.CONFUSABLE_PAIRS:
        mean_a = np.concatenate(part[a]).mean(0)
        mean_b = np.concatenate(part[b]).mean(0)
        assert np.linalg.norm(mean_a - mean_b) > 40


def test_part_patterns_differ():
    patterns = [synthetic.part_pattern(name, 9) for name in synthetic.CLASS_NAMES[1:]]
    for i in range(len(patterns)):
        for j in range(i + 1, len(patterns)):
            assert np.abs(patterns[i].astype(int) - patterns[j].astype(int)).mean() > 20


def test_list_files_and_image_sets_point_at_existing_files(dataset):
    root = dataset["root"]
    for split in synthetic.SPLITS:
        pairs = voc_io.read_list(dataset[split + "_list"], root=root)
        assert len(pairs) == dataset["params"]["n_" + split] == dataset["counts"][split]["images"]
        for image_path, label_path in pairs:
            assert os.path.isfile(image_path) and os.path.isfile(label_path)
            assert "/SegmentationClass/" in label_path
        with open(dataset["image_sets"][split]) as f:
            ids = f.read().split()
        assert ids == [os.path.splitext(os.path.basename(p))[0] for p, _ in pairs]
    assert dataset["class_names"] == list(synthetic.CLASS_NAMES)
    assert os.path.isfile(dataset["dataset_json"])


def test_skips_when_present_and_regenerates_on_new_parameters(tmp_path):
    root = str(tmp_path / "d")
    assert synthetic.generate(root, n_train=4, n_val=2)["generated"]
    label = os.path.join(root, "SegmentationClass", "train_00003.png")
    stamp = os.stat(label).st_mtime_ns
    again = synthetic.generate(root, n_train=4, n_val=2)
    assert not again["generated"] and os.stat(label).st_mtime_ns == stamp
    assert again["train_list"] == os.path.join(root, "lists", "train.txt")
    # A missing file means the data set is incomplete: regenerate.
    os.unlink(label)
    assert synthetic.generate(root, n_train=4, n_val=2)["generated"] and os.path.isfile(label)
    # Fewer images: the old ones are removed.
    assert synthetic.generate(root, n_train=2, n_val=2)["generated"]
    assert not os.path.exists(label)
    assert not os.path.exists(os.path.join(root, "Objects", "train_00003.json"))
    assert sorted(os.listdir(os.path.join(root, "JPEGImages"))) == [
        "train_00000.jpg", "train_00001.jpg", "val_00000.jpg", "val_00001.jpg"]


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 130}, "8k\\+1"),
    ({"size": 57}, "at least 65"),
    ({"n_train": 0}, "n_train"),
    ({"n_val": 0}, "n_val"),
    ({"seed": -1}, "seed"),
    ({"workers": 0}, "workers must be a positive integer"),
    ({"workers": "2"}, "workers must be a positive integer"),
])
def test_bad_arguments_raise_toolkit_error(tmp_path, kwargs, message):
    with pytest.raises(ToolkitError, match=message):
        synthetic.generate(str(tmp_path / "d"), **kwargs)


def test_an_interrupted_generation_is_redone(tmp_path):
    root = str(tmp_path / "d")
    first = _files(synthetic.generate(root, n_train=3, n_val=1)["root"])
    os.unlink(os.path.join(root, "dataset.json"))   # as if killed before the end
    with open(os.path.join(root, "SegmentationClass", "train_00001.png"), "wb") as f:
        f.write(b"half")
    assert synthetic.generate(root, n_train=3, n_val=1)["generated"]
    assert _files(root) == first


def test_refuses_a_folder_with_another_data_set(tmp_path):
    os.makedirs(tmp_path / "voc" / "ImageSets" / "Segmentation")
    with pytest.raises(ToolkitError, match="did not make"):
        synthetic.generate(str(tmp_path / "voc"), n_train=1, n_val=1)


def test_command_line(tmp_path, capsys):
    from tests.conftest import load_script
    script = load_script(os.path.join("tools", "synthetic.py"))
    out = str(tmp_path / "cli")
    assert script.main(["--out", out, "--train", "2", "--val", "1", "--quiet"]) == 0
    assert "generated" in capsys.readouterr().out
    assert script.main(["--out", out, "--train", "2", "--val", "1", "--size", "100"]) == 2
    assert "argument --size: must be an integer 8k+1" in capsys.readouterr().err
