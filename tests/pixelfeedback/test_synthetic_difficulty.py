"""The synthetic set's difficulty knobs (synthetic.DIFFICULTIES): the default data set is the
one every earlier version drew, byte for byte; each knob changes what it names and nothing
else; the hard variant is deterministic and recorded; bad knobs are refused by name."""
import hashlib
import json
import os

import numpy as np
import pytest

from python_layers import ToolkitError, voc_io
from pixelfeedback import part_masking, synthetic

DEFAULT = synthetic.DIFFICULTIES["default"]

# Digests of what the generator wrote before the knobs existed (commit beb10c1, the pinned
# OpenCV, NumPy and Pillow of requirements.txt): generate(n_train=3, n_val=1, seed=0).
BEFORE_THE_KNOBS = {
    "dataset.json": "fea27ee36ce457ae3bb9c346321f157756b158ef32546c489fc21d8e79472bc2",
    "Objects/train_00001.json": "f748832bbd3cb5d82767c2c1fd4a630c40fdfef6a3a2473b1e538b2173d1f685",
    "Objects/val_00000.json": "87db1fce7170338803f371b57f07b4a48ecc0936c7a5e3381baf9c58abd4205b",
}
LABELS_BEFORE_THE_KNOBS = {  # sha256 of the decoded label arrays
    "train_00000": "dd84cb576b99accbbc8247cb4d0ac46310c2c8acfb694f11b154c7d9ab1c1245",
    "train_00002": "c9d0b660db99e4fed2ae76b2f5a67ecc9ae18ff1d62741b0b6b98318350fc30c",
    "val_00000": "69f25db2721ad74380e73c963b162f1aa6b8556e8156bfd5419c5882bb775c09",
}
RENDER_BEFORE_THE_KNOBS = "b328b390bbc83827485393d8a76b76700d0b338df1862d5c281b1f3b162a3058"


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _render(index, difficulty, split="val"):
    return synthetic.render_example(synthetic.example_rng(0, split, index), 129, difficulty)


def _annotated(image, objects, bodies, parts):
    """An annotation as load_annotation returns it, from render_example's output."""
    annotation = {"objects": json.loads(json.dumps(objects))}
    for k, obj in enumerate(annotation["objects"]):
        obj["body_mask"], obj["part_mask"] = bodies == k + 1, parts == k + 1
        obj["rest_mask"] = obj["body_mask"] & ~obj["part_mask"]
    return annotation


def test_the_default_is_the_data_set_drawn_before_the_knobs(tmp_path):
    for number, kwargs in enumerate(({}, {"difficulty": "default"},
                                     {"difficulty": dict(DEFAULT)})):
        root = synthetic.generate(str(tmp_path / str(number)), n_train=3, n_val=1, seed=0,
                                  **kwargs)["root"]
        for name, digest in BEFORE_THE_KNOBS.items():
            with open(os.path.join(root, name), "rb") as f:
                assert _sha(f.read()) == digest, name
        for image_id, digest in LABELS_BEFORE_THE_KNOBS.items():
            label = voc_io.read_label(os.path.join(root, "SegmentationClass", image_id + ".png"))
            assert _sha(label.tobytes()) == digest, image_id
        params = json.load(open(os.path.join(root, "dataset.json")))["params"]
        assert "difficulty" not in params
    assert _sha(_render(5, "default")[0].tobytes()) == RENDER_BEFORE_THE_KNOBS
    assert _sha(synthetic.render_example(synthetic.example_rng(0, "val", 5), 129)[0]
                .tobytes()) == RENDER_BEFORE_THE_KNOBS


def test_part_scale_shrinks_the_parts_only():
    half = dict(DEFAULT, part_scale=0.5)
    sides, default_sides = [], []
    for index in range(12):
        for obj in _render(index, half)[4]:
            # 15-25 % of the body's length, halved; never below 3 px (7 px halved rounds to 4)
            assert 0.5 * 0.15 * obj["length"] - 1 <= obj["part_side"] \
                <= max(0.5 * 0.25 * obj["length"] + 1, 4)
            assert obj["part_side"] >= synthetic.MIN_PART_SIDE_PX
            assert "texture_strength" not in obj
            sides.append(obj["part_side"] / obj["length"])
        default_sides += [o["part_side"] / o["length"] for o in _render(index, DEFAULT)[4]]
    assert 0.4 < np.mean(sides) / np.mean(default_sides) < 0.65


@pytest.mark.parametrize("contrast", [0.25, 0.5])
def test_part_contrast_blends_the_part_into_its_body_and_changes_nothing_else(contrast):
    faint = dict(DEFAULT, part_contrast=contrast)
    checked = 0
    for index in range(8):
        image, label, bodies, parts, objects = _render(index, faint)
        d_image, d_label, d_bodies, d_parts, d_objects = _render(index, DEFAULT)
        # the contrast draws nothing: the same scene, labels and masks
        assert (label == d_label).all() and (bodies == d_bodies).all()
        assert (parts == d_parts).all() and objects == d_objects
        assert (image[parts == 0] == d_image[parts == 0]).all()
        for k, obj in enumerate(objects):
            part = parts == k + 1
            x0, y0, x1, y1 = obj["box"]
            texture = np.zeros(image.shape, np.float32)
            texture[y0:y1, x0:x1] = synthetic.body_texture(obj)
            under = texture[part]          # the body the part is drawn over
            pattern = d_image[part].astype(np.float32)   # the default draws the pattern as is
            expected = np.clip(np.round(under + contrast * (pattern - under)), 0, 255)
            assert np.abs(image[part].astype(np.float32) - expected).max() <= 1
            # the part's distance to its body shrinks by the contrast
            ratio = np.abs(image[part] - under).mean() / np.abs(pattern - under).mean()
            assert ratio == pytest.approx(contrast, abs=0.02)
            checked += 1
    assert checked >= 8


def test_texture_strength_scales_the_body_texture_and_mask_part_repaints_it():
    strong = dict(DEFAULT, texture_strength=2.0)
    ratios = []
    for index in range(6):
        image, label, bodies, parts, objects = _render(index, strong)
        d_image, d_label, d_bodies, _, d_objects = _render(index, DEFAULT)
        assert (label == d_label).all() and (bodies == d_bodies).all()
        assert (image[bodies == 0] == d_image[bodies == 0]).all()   # background unchanged
        annotation = _annotated(image, objects, bodies, parts)
        for k, (obj, d_obj) in enumerate(zip(objects, d_objects)):
            assert obj.pop("texture_strength") == 2.0 and obj == d_obj
            rest = annotation["objects"][k]["rest_mask"]
            shade = synthetic.body_texture(dict(d_obj, texture_strength=1e-9))  # no texture
            x0, y0, x1, y1 = d_obj["box"]
            smooth = np.zeros(image.shape, np.float32)
            smooth[y0:y1, x0:x1] = shade
            ratios.append(np.abs(image[rest] - smooth[rest]).mean()
                          / np.abs(d_image[rest] - smooth[rest]).mean())
            # mask_part paints the strong texture the part was drawn over
            masked = part_masking.mask_part(image, annotation, k, grow=0)
            part = annotation["objects"][k]["part_mask"]
            texture = np.zeros(image.shape, np.float32)
            texture[y0:y1, x0:x1] = synthetic.body_texture(annotation["objects"][k])
            assert np.abs(masked[part] - np.clip(np.round(texture[part]), 0, 255)).max() == 0
    assert 1.8 < np.median(ratios) < 2.1


def test_a_harder_variant_is_deterministic_and_recorded(tmp_path):
    harder = {"part_scale": 0.6, "part_contrast": 0.4, "texture_strength": 2.0}
    first = synthetic.generate(str(tmp_path / "a"), n_train=4, n_val=2, seed=0,
                               difficulty=harder)
    second = synthetic.generate(str(tmp_path / "b"), n_train=4, n_val=2, seed=0,
                                difficulty=dict(harder))
    for folder, _, names in os.walk(first["root"]):
        for name in names:
            path = os.path.join(folder, name)
            twin = os.path.join(second["root"], os.path.relpath(path, first["root"]))
            assert open(path, "rb").read() == open(twin, "rb").read(), path
    assert first["params"]["difficulty"] == harder
    # a folder of the default set is regenerated when the harder one is asked for, and back
    root = str(tmp_path / "c")
    assert synthetic.generate(root, n_train=4, n_val=2)["generated"]
    assert synthetic.generate(root, n_train=4, n_val=2, difficulty=harder)["generated"]
    assert not synthetic.generate(root, n_train=4, n_val=2, difficulty=harder)["generated"]
    label = os.path.join("SegmentationClass", "train_00000.png")
    assert open(os.path.join(root, label), "rb").read() == \
        open(os.path.join(first["root"], label), "rb").read()
    assert synthetic.generate(root, n_train=4, n_val=2)["generated"]
    assert "difficulty" not in json.load(open(os.path.join(root, "dataset.json")))["params"]


def test_the_hard_variant_is_the_chosen_one_and_harder_on_every_knob(tmp_path):
    """docs/table31.md, "The harder tier": the first candidate of the rule (part_scale 0.6,
    texture_strength 2.0, part_contrast 0.4) scored 0.671 and was chosen."""
    hard = synthetic.DIFFICULTIES["hard"]
    assert hard == {"part_scale": 0.6, "part_contrast": 0.4, "texture_strength": 2.0}
    assert set(hard) == set(synthetic.DIFFICULTY_KNOBS) == set(DEFAULT)
    assert hard["part_scale"] < 1 and hard["part_contrast"] < 1 and hard["texture_strength"] > 1
    info = synthetic.generate(str(tmp_path / "d"), n_train=2, n_val=1, difficulty="hard")
    assert info["params"]["difficulty"] == hard


@pytest.mark.parametrize("difficulty, message", [
    ("harder", "difficulty 'harder' is unknown: use one of default"),
    ({"part_scale": 0.5}, "must name every knob, part_scale, part_contrast, texture_strength"),
    (dict(DEFAULT, blur=1.0), "and no other"),
    (dict(DEFAULT, part_contrast=1.5), "part_contrast=1.5 must be a number above 0 and at most 1"),
    (dict(DEFAULT, part_scale=0), "part_scale=0 must be a number above 0"),
    (dict(DEFAULT, texture_strength="2"), "texture_strength='2' must be a number"),
    (dict(DEFAULT, part_scale=True), "part_scale=True must be a number"),
])
def test_bad_difficulties_are_refused_by_name(tmp_path, difficulty, message):
    with pytest.raises(ToolkitError, match=message.replace("(", r"\(")):
        synthetic.generate(str(tmp_path / "d"), n_train=1, n_val=1, difficulty=difficulty)
    assert not (tmp_path / "d").exists()
