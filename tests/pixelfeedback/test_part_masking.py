"""Reading a synthetic image's annotation and hiding its part (pixelfeedback/part_masking.py)."""
import os

import cv2
import numpy as np
import pytest

from pixelfeedback import part_masking, synthetic
from python_layers import ToolkitError, voc_io


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small data set shared by the read-only tests."""
    root = str(tmp_path_factory.mktemp("synthetic") / "data")
    return synthetic.generate(root, n_train=30, n_val=4, seed=3)


def examples(info, split="train"):
    """(image, label, annotation) of every image of a split."""
    root = info["root"]
    for image_path, label_path in voc_io.read_list(info[split + "_list"], root=root):
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        yield (voc_io.read_image(image_path), voc_io.read_label(label_path),
               part_masking.load_annotation(root, image_id))


def test_mask_part_removes_the_part_and_keeps_the_body(dataset):
    checked = 0
    for image, label, annotation in examples(dataset):
        for k, obj in enumerate(annotation["objects"]):
            original = image.copy()
            masked = part_masking.mask_part(image, annotation, k)
            assert (image == original).all()  # input untouched
            part, body = obj["part_mask"], obj["body_mask"]
            grown = cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            assert (masked[~(grown & body)] == image[~(grown & body)]).all()
            rest = obj["rest_mask"] & ~cv2.dilate(part.astype(np.uint8),
                                                  np.ones((7, 7))).astype(bool)
            body_mean = image[rest].astype(float).mean(0)
            body_std = image[rest].astype(float).std(0).mean()
            before = np.abs(image[part].astype(float) - body_mean).mean()
            after = np.abs(masked[part].astype(float) - body_mean).mean()
            assert after < 0.5 * before
            assert masked[part].astype(float).std(0).mean() < 2.0 * body_std + 5
            for fill in ("inpaint", "mean", 128, (0, 0, 255)):
                other = part_masking.mask_part(image, annotation, k, fill=fill)
                assert (other[~grown] == image[~grown]).all()
                assert np.abs(other[part].astype(float) - image[part]).mean() > 5
            checked += 1
        if checked >= 12:
            break
    assert checked >= 12


def test_mask_part_paints_any_region_within_the_body(dataset):
    image, _, annotation = next(examples(dataset))
    obj = annotation["objects"][0]
    region = np.zeros(obj["body_mask"].shape, bool)
    region[:, : region.shape[1] // 2] = True     # half the image: only the body part is painted
    masked = part_masking.mask_part(image, annotation, 0, fill=0, grow=0, region=region)
    assert (masked[region & obj["body_mask"]] == 0).all()
    assert (masked[~(region & obj["body_mask"])] == image[~(region & obj["body_mask"])]).all()
    with pytest.raises(ToolkitError, match="region of shape"):
        part_masking.mask_part(image, annotation, 0, region=region[:-1])


def test_mask_part_rejects_bad_arguments(dataset):
    image, _, annotation = next(examples(dataset))
    with pytest.raises(ToolkitError, match="out of range"):
        part_masking.mask_part(image, annotation, len(annotation["objects"]))
    with pytest.raises(ToolkitError, match="unknown"):
        part_masking.mask_part(image, annotation, 0, fill="blur")
    with pytest.raises(ToolkitError, match="does not match"):
        part_masking.mask_part(image[:-8], annotation, 0)
    with pytest.raises(ToolkitError, match="annotation not found"):
        part_masking.load_annotation(dataset["root"], "train_99999")
