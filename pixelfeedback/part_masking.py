"""The annotations of the synthetic data set's images and hiding an object's
discriminative part (the masking of experiment 4 and of the demo): ``load_annotation``
reads an image's objects with their body and part masks, ``mask_part`` paints the part (or
any region of the body) over. The data set itself: ``pixelfeedback.synthetic``."""
import os

import cv2
import numpy as np

from pixelfeedback import synthetic
from python_layers import ToolkitError, voc_io


def load_annotation(root, image_id):
    """The annotation of one image: the JSON dict plus its masks.

    Adds ``bodies`` and ``parts`` ((H, W) uint8 maps, object k -> k+1) and, per object,
    ``body_mask`` (visible object, part included), ``part_mask`` (visible part) and
    ``rest_mask`` (body without part) as boolean arrays.
    """
    paths = synthetic.example_paths(os.path.abspath(os.fspath(root)), image_id)
    if not os.path.isfile(paths["annotation"]):
        raise ToolkitError(f"annotation not found: {paths['annotation']} (is {root} a synthetic "
                           "data set made by tools/synthetic.py, and is the id right?)")
    annotation = synthetic.read_json(paths["annotation"])
    if annotation is None:
        raise ToolkitError(f"cannot read {paths['annotation']}: regenerate the data set")
    annotation["bodies"] = voc_io.read_label(paths["bodies"])
    annotation["parts"] = voc_io.read_label(paths["parts"])
    for k, obj in enumerate(annotation["objects"]):
        obj["body_mask"] = annotation["bodies"] == k + 1
        obj["part_mask"] = annotation["parts"] == k + 1
        obj["rest_mask"] = obj["body_mask"] & ~obj["part_mask"]
    return annotation


def mask_part(image, annotation, object_index, fill="body", grow=1, region=None):
    """Hide an object's discriminative part; return a new image (the input is not changed).

    ``fill``: ``"body"`` (default) repaints the part with the object's own body texture (as if
    the part had never been drawn), so the object stays a body of its pair and only the
    evidence for its class goes: experiment 4's question. ``"inpaint"`` fills from the
    surroundings (OpenCV Telea), ``"mean"`` with the mean colour of the rest of the visible body,
    and a number or BGR triple with that constant (the thesis's grey box). ``grow`` px around
    the part are painted too (clipped to the body), so JPEG ringing leaves no trace.
    ``region`` (an (H, W) boolean mask, e.g. the densest fixations) is painted instead of the
    part, clipped to the object's body, so other regions can be compared with the part.
    """
    image = np.asarray(image)
    objects = annotation.get("objects", [])
    if not 0 <= object_index < len(objects):
        raise ToolkitError(f"object_index {object_index} is out of range: image "
                           f"{annotation.get('id')} has {len(objects)} object(s)")
    obj = objects[object_index]
    if "part_mask" not in obj:
        raise ToolkitError("mask_part needs an annotation from load_annotation (with masks)")
    if image.shape[:2] != obj["part_mask"].shape or image.ndim != 3 or image.shape[2] != 3:
        raise ToolkitError(f"image of shape {image.shape} does not match annotation "
                           f"{annotation.get('id')} ({obj['part_mask'].shape}, BGR)")
    if region is not None and np.shape(region) != obj["part_mask"].shape:
        raise ToolkitError(f"region of shape {np.shape(region)} does not match annotation "
                           f"{annotation.get('id')} ({obj['part_mask'].shape})")
    region = (obj["part_mask"] if region is None else np.asarray(region, bool)).astype(np.uint8)
    if grow > 0:
        region = cv2.dilate(region, np.ones((2 * grow + 1,) * 2, np.uint8))
    region = region.astype(bool) & obj["body_mask"]
    out = image.copy()
    if isinstance(fill, str) and fill == "body":
        x0, y0, x1, y1 = obj["box"]
        texture = np.clip(np.round(synthetic.body_texture(obj)), 0, 255).astype(image.dtype)
        out[y0:y1, x0:x1][region[y0:y1, x0:x1]] = texture[region[y0:y1, x0:x1]]
    elif isinstance(fill, str) and fill == "inpaint":
        out = cv2.inpaint(np.ascontiguousarray(image), region.astype(np.uint8), 3,
                          cv2.INPAINT_TELEA)
    elif isinstance(fill, str) and fill == "mean":
        rest = obj["body_mask"] & ~region
        source = rest if rest.any() else obj["body_mask"]
        out[region] = np.round(image[source].reshape(-1, 3).mean(axis=0)).astype(image.dtype)
    elif not isinstance(fill, str):
        colour = np.broadcast_to(np.asarray(fill, np.float64), (3,))
        out[region] = np.clip(np.round(colour), 0, 255).astype(image.dtype)
    else:
        raise ToolkitError(f"fill {fill!r} is unknown: use 'body', 'inpaint', 'mean', "
                           "a grey value or a BGR triple")
    return out
