"""A seeded, VOC-style synthetic data set in which the thesis's ideas can be observed on a CPU.

Why: the thesis (sections 2.4 and 3.1) argues that a segmentation net must carry evidence
from an object's small *discriminative region* (a face) across the whole object ("flow of
activation"), and that correlated classes (cat/dog, sofa/chair) are confused when it does not.
PASCAL VOC is too big to train on here, so this module draws a small data set with exactly
that structure, learnable from scratch by a reduced-width DeepLab-LargeFOV in minutes:

- Four object classes in two confusable pairs. ``cat`` and ``dog`` share one body appearance
  ("fur": warm brown with soft blotches), ``chair`` and ``sofa`` share another ("upholstery":
  slate blue with a fine grain). Colour, texture, size, shape and shading of a body are drawn
  from the same distribution for both members of a pair, so a body pixel on its own says
  "cat or dog" and never which.
- Each class has its own small, high-contrast *part* (its discriminative region): cat a
  white/black checkerboard, dog yellow/black stripes, chair a cyan dot, sofa a magenta cross,
  each in a square of about 15-25 % of the body's length (at least 7 px at 129 px), at a random
  place inside the body (never touching its edge). The part is labelled with the object's class.
  (That is the default difficulty; ``DIFFICULTIES`` holds smaller, fainter parts in a busier
  body, the harder tier's data.)
  Labelling the rest of the body right therefore needs context from the part; with the part
  masked out (``part_masking.mask_part``) the object is still a body of its pair but its
  class is unknown.
- Background clutter: a colour gradient with soft blotches and noise, plus random flat shapes
  (rectangles, discs, triangles, thick lines and blobs shaped exactly like bodies) in colours kept
  away from the two body colours, so shape alone never signals an object. There are no
  "distractor bodies" (body appearance without a part, labelled background): with them a body
  would need its part even to be an object, and masking the part would turn the object into
  background, whereas the thesis (Figure 2.9) found masked objects still segmented, only with less
  activation. The choice keeps experiment 4 faithful.
- 1 to 3 objects per image; about a third of the later objects take the confusable partner of an
  earlier object's class, so a net must tell *which* part belongs to *which* body. Later objects
  are drawn over earlier ones (occlusion; labels follow what is visible) but never over an
  earlier object's part nor over more than half of an earlier body.
- Labels carry a VOC-like 255 "void" band ``void_radius`` px on each side of every visible object
  boundary (about 2 px wide at 129 px). Parts never touch it.
- Image sizes are 8k+1 (default 129) so LargeFOV's stride-8 arithmetic is exact.

Layout under ``root``::

    dataset.json                        parameters, class names, counts (written last)
    JPEGImages/<id>.jpg                 BGR images, JPEG quality 95
    SegmentationClass/<id>.png          VOC palette PNG labels (0 background, 1..4, 255 void)
    Objects/<id>.json                   per object: class, polygon, box, part box, appearance
    Objects/<id>_bodies.png             visible object k -> k+1 (part included, no void band)
    Objects/<id>_parts.png              visible part of object k -> k+1
    ImageSets/Segmentation/{train,val}.txt   image ids
    lists/{train,val}.txt               lines "/JPEGImages/<id>.jpg /SegmentationClass/<id>.png"
    .synthetic                          marks the folder as this module's (it may overwrite it)

There is no ``SegmentationClassAug``: the list files point at ``SegmentationClass``, and every
tool reads labels through the list files. Palette colours of labels 1..4 are VOC's colours of
indices 1..4; ``dataset.json`` holds the class names. Regenerating with the same parameters is
byte-identical (labels, masks, JSON and, with the same OpenCV, JPEGs); ``generate`` skips the work
when ``dataset.json`` already matches.
"""
import concurrent.futures
import contextlib
import functools
import json
import math
import multiprocessing
import os
import re

import cv2
import numpy as np

from pixelfeedback import files, thesis
from python_layers import ToolkitError, voc_io
from python_layers.thread_pool import available_cores, positive_count

CLASS_NAMES = ("background", "cat", "dog", "chair", "sofa")
NUM_CLASSES = len(CLASS_NAMES)
CONFUSABLE_PAIRS = thesis.CORRELATED_PAIRS  # each pair shares one body; a part tells them apart
PART_PATTERNS = {"cat": "checker", "dog": "stripes", "chair": "dot", "sofa": "cross"}
BODY_FAMILY = {"cat": "fur", "dog": "fur", "chair": "upholstery", "sofa": "upholstery"}
SPLITS = ("train", "val")

GENERATOR_VERSION = 1
JPEG_QUALITY = 95
PARALLEL_MIN_IMAGES = 1000    # images per writer process at least (a process's start costs ~1 s)
BASE_SIZE = 129               # body and part sizes below are in pixels at this image size
BODY_LENGTH_RANGE = (25.0, 60.0)
BODY_ASPECT_RANGE = (0.55, 1.0)
PART_FRACTION_RANGE = (0.15, 0.25)
MIN_PART_SIDE = 7
OBJECTS_PER_IMAGE = (1, 3)
PARTNER_PROBABILITY = 0.35    # chance that a later object takes the partner of an earlier class
MIN_VISIBLE_FRACTION = 0.5    # an occluded body keeps at least this much of its area

# How hard the parts are to see: the one home of the difficulty knobs. ``part_scale``
# multiplies the part's side (its fraction of the body and its minimum side),
# ``part_contrast`` blends the part's pattern into the body under it (1: the pattern as
# drawn, 0: no part visible), ``texture_strength`` multiplies the body's texture (blotches or
# grain, and pixel noise). "default" is the data set every earlier version drew, byte for
# byte; "hard" is the harder tier, chosen by its baseline's val mIoU alone
# (docs/table31.md, "The harder tier").
DIFFICULTY_KNOBS = ("part_scale", "part_contrast", "texture_strength")
DIFFICULTIES = {
    "default": {"part_scale": 1.0, "part_contrast": 1.0, "texture_strength": 1.0},
    "hard": {"part_scale": 0.6, "part_contrast": 0.4, "texture_strength": 2.0},
}
MIN_PART_SIDE_PX = 3          # a part is never smaller than this, whatever the part_scale

# Body appearance families in OpenCV HSV (hue 0..179): (hue range, saturation range, value range).
FAMILY_HSV = {
    "fur": ((8, 16), (110, 190), (120, 200)),
    "upholstery": ((96, 108), (90, 170), (110, 190)),
}
CLUTTER_HUE_MARGIN = 10       # clutter hues stay this far from a family's hue range ...
CLUTTER_MAX_SATURATION_NEAR_FAMILY = 50  # ... unless they are this grey

# Part colours (BGR): (bright, dark) of each class's pattern.
PART_COLOURS = {
    "cat": ((255, 255, 255), (20, 20, 20)),
    "dog": ((0, 230, 255), (20, 20, 20)),
    "chair": ((255, 255, 0), (20, 20, 20)),
    "sofa": ((255, 0, 255), (20, 20, 20)),
}

_ID_PATTERN = re.compile(r"^(train|val)_\d{5}(\.jpg|\.png|\.json|_bodies\.png|_parts\.png)$")
_DATA_DIRS = ("JPEGImages", "SegmentationClass", "Objects")
MARKER_FILE = ".synthetic"    # marks a folder this module may overwrite


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

def _scale(size):
    return size / float(BASE_SIZE)


def void_radius_for(size):
    """Pixels of void on each side of an object boundary: 1 at 129 px, growing with the size."""
    return max(1, int(round(_scale(size))))


def _hsv_to_bgr(h, s, v):
    return cv2.cvtColor(np.uint8([[[h, s, v]]]), cv2.COLOR_HSV2BGR)[0, 0].astype(int).tolist()


def _clutter_colour(rng):
    """A random BGR colour that cannot pass for a body colour (hue far from both families,
    or nearly grey)."""
    while True:
        h, s, v = rng.randint(0, 180), rng.randint(0, 256), rng.randint(40, 231)
        near_family = False
        for (h_lo, h_hi), _, _ in FAMILY_HSV.values():
            distance = max(h_lo - h, h - h_hi, 0)
            distance = min(distance, 180 - max(h_lo, h) + min(h_hi, h))  # hue is circular
            if distance < CLUTTER_HUE_MARGIN and s > CLUTTER_MAX_SATURATION_NEAR_FAMILY:
                near_family = True
        if not near_family:
            return _hsv_to_bgr(h, s, v)


def _blurred_noise(rng, shape, sigma):
    """Unit-variance smooth noise: white noise blurred by a Gaussian of ``sigma`` px."""
    noise = rng.standard_normal(shape).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return blurred * np.float32(2.0 * sigma * math.sqrt(math.pi))  # 1/std of blurred noise


def _blob_polygon(rng, centre, length, aspect, angle_deg, wobble):
    """A rounded blob: an ellipse whose radius is modulated by low harmonics, as 1/16-px points."""
    theta = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    radius = np.ones_like(theta)
    if wobble:
        for k in (2, 3, 4):
            radius += rng.uniform(0.0, 0.07) * np.cos(k * theta + rng.uniform(0.0, 2.0 * np.pi))
    x = 0.5 * length * radius * np.cos(theta)
    y = 0.5 * length * aspect * radius * np.sin(theta)
    a = math.radians(angle_deg)
    points = np.stack([centre[0] + x * math.cos(a) - y * math.sin(a),
                       centre[1] + x * math.sin(a) + y * math.cos(a)], axis=1)
    return np.round(points * 16.0) / 16.0


def _fill_polygon(shape, polygon):
    """A uint8 0/1 mask of a polygon given in 1/16-px coordinates."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(polygon) * 16.0).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=4)
    return mask


def _background(rng, size):
    """Cluttered background: gradient, blotches, random flat shapes and blobs, pixel noise."""
    scale = _scale(size)
    c1, c2 = (np.array(_clutter_colour(rng), np.float32) for _ in range(2))
    a = rng.uniform(0.0, 2.0 * np.pi)
    coords = np.arange(size, dtype=np.float32) / (size - 1)
    ramp = (coords[None, :] * math.cos(a) + coords[:, None] * math.sin(a))
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    image = c1 + (c2 - c1) * ramp[..., None]
    image += 18.0 * _blurred_noise(rng, (size, size), 4.0 * scale)[..., None]

    for _ in range(rng.randint(4, 10)):
        colour = _clutter_colour(rng)
        kind = rng.randint(5)
        centre = rng.uniform(0, size - 1, 2)
        extent = rng.uniform(8, 40) * scale
        shape_mask = np.zeros((size, size), np.uint8)
        if kind == 0:  # rotated rectangle
            box = cv2.boxPoints(((float(centre[0]), float(centre[1])),
                                 (float(extent), float(extent * rng.uniform(0.3, 1.0))),
                                 float(rng.uniform(0, 180))))
            cv2.fillPoly(shape_mask, [np.round(box).astype(np.int32)], 1)
        elif kind == 1:  # disc
            cv2.circle(shape_mask, tuple(int(c) for c in centre), int(extent / 2), 1, -1)
        elif kind == 2:  # triangle
            points = centre + rng.uniform(-extent / 2, extent / 2, (3, 2))
            cv2.fillPoly(shape_mask, [np.round(points).astype(np.int32)], 1)
        elif kind == 3:  # thick line
            end = centre + rng.uniform(-extent, extent, 2)
            cv2.line(shape_mask, tuple(int(c) for c in centre), tuple(int(c) for c in end), 1,
                     max(1, int(rng.uniform(1, 4) * scale)))
        else:  # a blob shaped like a body, in a clutter colour
            polygon = _blob_polygon(rng, centre, extent, rng.uniform(*BODY_ASPECT_RANGE),
                                    rng.uniform(0, 180), True)
            shape_mask = _fill_polygon((size, size), polygon)
        image[shape_mask.astype(bool)] = np.array(colour, np.float32)
    image += rng.normal(0.0, 5.0, image.shape).astype(np.float32)
    return image


def body_texture(obj):
    """The body appearance of an annotated object over its box: float32 (h, w, 3) BGR.

    Everything comes from the object's ``texture_seed``, family, colour, box and
    ``texture_strength`` (recorded only where it is not 1), so ``part_masking.mask_part``
    can paint exactly the body that the part was drawn over.
    """
    x0, y0, x1, y1 = obj["box"]
    h, w = y1 - y0, x1 - x0
    rng = np.random.RandomState(obj["texture_seed"])
    scale = obj["scale"]
    cx, cy = obj["centre"]
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    shade_angle = rng.uniform(0.0, 2.0 * np.pi)
    shade = 1.0 + rng.uniform(0.05, 0.15) * (
        (xx - cx) * math.cos(shade_angle) + (yy - cy) * math.sin(shade_angle)) / (
        0.5 * obj["length"])
    strength = obj.get("texture_strength", 1.0)  # absent: the default difficulty
    if obj["family"] == "fur":
        pattern = 0.15 * strength * _blurred_noise(rng, (h, w), 1.5 * scale)
    else:  # upholstery: a fine grain across the body's long axis
        a = math.radians(obj["angle"])
        period = rng.uniform(3.5, 5.0) * scale
        pattern = 0.12 * strength * np.sin(
            2.0 * np.pi * (xx * math.cos(a) + yy * math.sin(a)) / period
            + rng.uniform(0.0, 2.0 * np.pi))
    grain = rng.normal(0.0, 6.0 * strength, (h, w, 3)).astype(np.float32)
    base = np.array(obj["base_colour_bgr"], np.float32)
    return base * (shade * (1.0 + pattern))[..., None].astype(np.float32) + grain


def part_pattern(class_name, side):
    """The discriminative part of a class: a (side, side, 3) uint8 BGR square."""
    bright, dark = (np.array(c, np.uint8) for c in PART_COLOURS[class_name])
    yy, xx = np.mgrid[0:side, 0:side]
    pattern = PART_PATTERNS[class_name]
    cell = max(2, int(round(side / 4.0)))
    if pattern == "checker":
        on = ((yy // cell + xx // cell) % 2) == 0
    elif pattern == "stripes":
        on = ((yy // cell) % 2) == 0
    elif pattern == "dot":
        c = (side - 1) / 2.0
        on = (yy - c) ** 2 + (xx - c) ** 2 <= (0.36 * side) ** 2
    else:  # cross
        bar = max(2, side // 3)
        lo = (side - bar) // 2
        on = ((yy >= lo) & (yy < lo + bar)) | ((xx >= lo) & (xx < lo + bar))
    return np.where(on[..., None], bright, dark)


def _place_object(rng, size, class_name, bodies_full, parts_full, full_areas, void_radius,
                  part_scale=1.0):
    """Draw a body with a part that fits inside it; None when this try does not fit."""
    scale = _scale(size)
    length = rng.uniform(*BODY_LENGTH_RANGE) * scale
    aspect = rng.uniform(*BODY_ASPECT_RANGE)
    angle = rng.uniform(0.0, 180.0)
    centre = rng.uniform(0.2, 0.8, 2) * (size - 1)
    wobble = bool(rng.randint(2))
    polygon = _blob_polygon(rng, centre, length, aspect, angle, wobble)
    body = _fill_polygon((size, size), polygon)
    if body.sum() < 16:
        return None
    # Part: a square of 15-25 % of the body length (times part_scale), whose disc of
    # half-diagonal plus a margin lies inside the body (image border counts as outside), so it
    # never touches the void band.
    side = max(int(round(MIN_PART_SIDE * part_scale * scale)),
               int(round(rng.uniform(*PART_FRACTION_RANGE) * length * part_scale)),
               MIN_PART_SIDE_PX)
    padded = np.pad(body, 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    need = side / 2.0 * math.sqrt(2.0) + void_radius + 1.0
    ys, xs = np.nonzero(distance >= need)
    if ys.size == 0:
        return None
    pick = rng.randint(ys.size)
    py0, px0 = int(ys[pick]) - side // 2, int(xs[pick]) - side // 2
    # Occlusion limits: never cover an earlier part (nor its void margin), never hide more
    # than half of an earlier body.
    body_bool = body.astype(bool)
    for k in range(len(bodies_full)):
        part_k = cv2.dilate(parts_full[k], np.ones((2 * void_radius + 5,) * 2, np.uint8))
        if (part_k.astype(bool) & body_bool).any():
            return None
        visible_k = bodies_full[k].astype(bool)
        if (visible_k & ~body_bool).sum() < MIN_VISIBLE_FRACTION * full_areas[k]:
            return None
    part = np.zeros((size, size), np.uint8)
    part[py0:py0 + side, px0:px0 + side] = 1
    ys, xs = np.nonzero(body)
    return {
        "class_name": class_name,
        "class_id": CLASS_NAMES.index(class_name),
        "family": BODY_FAMILY[class_name],
        "shape": "blob" if wobble else "ellipse",
        "centre": [round(float(c), 4) for c in centre],
        "length": round(float(length), 4),
        "aspect": round(float(aspect), 4),
        "angle": round(float(angle), 4),
        "scale": scale,
        "polygon": polygon.tolist(),
        "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
        "part_pattern": PART_PATTERNS[class_name],
        "part_box": [px0, py0, px0 + side, py0 + side],
        "part_side": side,
    }, body, part


def _choose_class(rng, previous):
    """A uniform object class, or (sometimes) the confusable partner of an earlier object."""
    if previous and rng.uniform() < PARTNER_PROBABILITY:
        earlier = previous[rng.randint(len(previous))]
        pair = next(p for p in CONFUSABLE_PAIRS if earlier in p)
        return pair[1 - pair.index(earlier)]
    return CLASS_NAMES[1 + rng.randint(NUM_CLASSES - 1)]


def render_example(rng, size, difficulty="default"):
    """One synthetic example: (image BGR uint8, label, bodies map, parts map, objects).
    ``difficulty``: a name in ``DIFFICULTIES`` or a dict of its knobs."""
    knobs = difficulty_knobs(difficulty)
    void_radius = void_radius_for(size)
    image = _background(rng, size)
    n_objects = rng.randint(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1)
    objects, bodies_full, parts_full, full_areas = [], [], [], []
    for _ in range(n_objects):
        class_name = _choose_class(rng, [o["class_name"] for o in objects])
        for _attempt in range(30):
            placed = _place_object(rng, size, class_name, bodies_full, parts_full,
                                   full_areas, void_radius, knobs["part_scale"])
            if placed is not None:
                break
        if placed is None:
            continue
        obj, body, part = placed
        # Later bodies hide earlier ones: keep each earlier object's *visible* mask.
        for k in range(len(bodies_full)):
            bodies_full[k] &= (1 - body).astype(np.uint8)
        obj["texture_seed"] = int(rng.randint(2 ** 31 - 1))
        if knobs["texture_strength"] != 1.0:   # the default's annotations stay as they were
            obj["texture_strength"] = knobs["texture_strength"]
        fam_h, fam_s, fam_v = FAMILY_HSV[obj["family"]]
        obj["base_colour_bgr"] = _hsv_to_bgr(rng.randint(fam_h[0], fam_h[1] + 1),
                                             rng.randint(fam_s[0], fam_s[1] + 1),
                                             rng.randint(fam_v[0], fam_v[1] + 1))
        x0, y0, x1, y1 = obj["box"]
        window = body[y0:y1, x0:x1].astype(bool)
        image[y0:y1, x0:x1][window] = body_texture(obj)[window]
        px0, py0, px1, py1 = obj["part_box"]
        pattern = part_pattern(class_name, obj["part_side"])
        if knobs["part_contrast"] == 1.0:
            image[py0:py1, px0:px1] = pattern
        else:  # the pattern blended into the body painted under it
            under = image[py0:py1, px0:px1]
            image[py0:py1, px0:px1] = under + np.float32(knobs["part_contrast"]) * (
                pattern.astype(np.float32) - under)
        objects.append(obj)
        bodies_full.append(body)
        full_areas.append(int(body.sum()))
        parts_full.append(part)

    bodies = np.zeros((size, size), np.uint8)
    parts = np.zeros((size, size), np.uint8)
    label = np.zeros((size, size), np.uint8)
    for k, obj in enumerate(objects):
        bodies[bodies_full[k].astype(bool)] = k + 1
        parts[parts_full[k].astype(bool)] = k + 1
        label[bodies_full[k].astype(bool)] = obj["class_id"]
        obj["index"] = k
        obj["visible_pixels"] = int(bodies_full[k].sum())
        obj["part_pixels"] = int(parts_full[k].sum())
    kernel = np.ones((2 * void_radius + 1,) * 2, np.uint8)
    label[cv2.dilate(bodies, kernel) != cv2.erode(bodies, kernel)] = voc_io.IGNORE_LABEL
    return np.clip(np.round(image), 0, 255).astype(np.uint8), label, bodies, parts, objects


def difficulty_knobs(difficulty):
    """The knobs of ``difficulty`` (a name in ``DIFFICULTIES`` or a dict of every knob) as a
    dict of floats; ToolkitError naming the name or knob that is wrong."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ToolkitError(f"difficulty {difficulty!r} is unknown: use one of "
                               f"{', '.join(DIFFICULTIES)} or a dict of "
                               f"{', '.join(DIFFICULTY_KNOBS)}")
        return dict(DIFFICULTIES[difficulty])
    if not isinstance(difficulty, dict) or set(difficulty) != set(DIFFICULTY_KNOBS):
        raise ToolkitError(f"difficulty {difficulty!r} must name every knob, "
                           f"{', '.join(DIFFICULTY_KNOBS)}, and no other")
    knobs = {}
    for name in DIFFICULTY_KNOBS:
        value = difficulty[name]
        high = 1.0 if name == "part_contrast" else None
        if (isinstance(value, bool) or not isinstance(value, (int, float, np.floating))
                or not value > 0 or (high is not None and value > high)):
            raise ToolkitError(f"difficulty knob {name}={value!r} must be a number above 0"
                               + (" and at most 1" if high is not None else ""))
        knobs[name] = float(value)
    return knobs


def example_rng(seed, split, index):
    """The RandomState of one image: depends only on (seed, split, index), never on counts."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(SPLITS.index(split), index))
    return np.random.RandomState(sequence.generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _image_ids(split, count):
    return [f"{split}_{i:05d}" for i in range(count)]


def example_paths(root, image_id):
    """The files of one example: image, label, annotation JSON, body and part maps."""
    return {
        "image": os.path.join(root, "JPEGImages", image_id + ".jpg"),
        "label": os.path.join(root, "SegmentationClass", image_id + ".png"),
        "annotation": os.path.join(root, "Objects", image_id + ".json"),
        "bodies": os.path.join(root, "Objects", image_id + "_bodies.png"),
        "parts": os.path.join(root, "Objects", image_id + "_parts.png"),
    }


def _write_jpeg(path, image):
    with files.atomic_path(path) as tmp:
        if not cv2.imwrite(tmp, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise ToolkitError(f"cannot write {path}: check that the folder is writable")


def _check_arguments(n_train, n_val, size, seed):
    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ToolkitError(f"{name} must be a whole number of images >= 1, got {value!r}")
        if value > 99999:
            raise ToolkitError(f"{name}={value} is too many: ids have five digits (<= 99999)")
    if not isinstance(size, (int, np.integer)) or size < 65 or (size - 1) % 8:
        raise ToolkitError(
            f"size must be 8k+1 and at least 65 (e.g. 129, 161, 193) so that DeepLab-LargeFOV's "
            f"stride-8 output is exact, got {size!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ToolkitError(f"seed must be a non-negative integer, got {seed!r}")


def _params(n_train, n_val, size, seed, knobs):
    """dataset.json's parameters; the knobs only where they are not the default's (whose
    dataset.json stays as every earlier version wrote it)."""
    params = {"generator": "tools.synthetic", "version": GENERATOR_VERSION,
              "n_train": int(n_train), "n_val": int(n_val), "size": int(size), "seed": int(seed)}
    if knobs != DIFFICULTIES["default"]:
        params["difficulty"] = knobs
    return params


def read_json(path):
    """The JSON in ``path``, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _info(root, dataset, generated):
    info = dict(dataset)
    info.update({
        "root": root,
        "generated": generated,
        "dataset_json": os.path.join(root, "dataset.json"),
        "train_list": os.path.join(root, "lists", "train.txt"),
        "val_list": os.path.join(root, "lists", "val.txt"),
        "image_sets": {s: os.path.join(root, "ImageSets", "Segmentation", s + ".txt")
                       for s in SPLITS},
    })
    return info


def _complete(root, params):
    """True when every file of a generation with ``params`` is present."""
    for split, count in (("train", params["n_train"]), ("val", params["n_val"])):
        for name in ("lists", os.path.join("ImageSets", "Segmentation")):
            if not os.path.isfile(os.path.join(root, name, split + ".txt")):
                return False
        for image_id in _image_ids(split, count):
            if not all(os.path.isfile(p) for p in example_paths(root, image_id).values()):
                return False
    return True


def _remove_stale(root, keep_ids):
    """Delete files of earlier generations (our id pattern only) that the new one lacks."""
    for folder in _DATA_DIRS:
        directory = os.path.join(root, folder)
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            match = _ID_PATTERN.match(name)
            if match and name[:len(match.group(1)) + 6] not in keep_ids:
                os.unlink(os.path.join(directory, name))


def _writer_context():
    """The writer processes' start method: forked from a fresh single-threaded server that
    has imported this module (a fork of this process could inherit a lock held by one of
    its threads; a spawn would re-run the caller's main script)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _write_example(root, seed, size, knobs, job):
    """Render and write one image of ``job`` = (split, image id); returns (split, the
    class names of its objects)."""
    split, image_id = job
    index = int(image_id.rsplit("_", 1)[1])
    image, label, bodies, parts, objects = render_example(
        example_rng(seed, split, index), size, knobs)
    paths = example_paths(root, image_id)
    _write_jpeg(paths["image"], image)
    files.write_label(paths["label"], label)
    files.write_label(paths["bodies"], bodies)
    files.write_label(paths["parts"], parts)
    files.write_json(paths["annotation"], {
        "id": image_id, "split": split, "size": size, "objects": objects,
        "void_radius": void_radius_for(size),
        "masks": {"bodies": os.path.basename(paths["bodies"]),
                  "parts": os.path.basename(paths["parts"])}})
    return split, [obj["class_name"] for obj in objects]


def generate(root, n_train=200, n_val=50, size=129, seed=0, progress=False,
             difficulty="default", workers=None):
    """Write the synthetic data set under ``root`` and return an info dict.

    ``difficulty``: a name in ``DIFFICULTIES`` or a dict of its knobs (``difficulty_knobs``).
    ``workers``: processes that write the images (default: the cores this process may use;
    one per ``PARALLEL_MIN_IMAGES`` images at most, so a small set is written in-process);
    the files are the same whatever the count.
    The dict holds dataset.json's content plus ``root``, ``train_list``, ``val_list``,
    ``image_sets``, ``dataset_json`` and ``generated`` (False when an identical data set was
    already there and nothing was written). Refuses a folder that holds another data set.
    """
    _check_arguments(n_train, n_val, size, seed)
    if workers is not None:
        positive_count("workers", workers)
    knobs = difficulty_knobs(difficulty)
    root = os.path.abspath(os.fspath(root))
    params = _params(n_train, n_val, size, seed, knobs)
    dataset_path = os.path.join(root, "dataset.json")
    marker_path = os.path.join(root, MARKER_FILE)
    if not os.path.isfile(marker_path) and any(os.path.exists(os.path.join(root, p)) for p in (
            "dataset.json", "ImageSets", "lists", "SegmentationClass", "JPEGImages")):
        raise ToolkitError(
            f"{root} holds a data set this generator did not make (no {MARKER_FILE} file); "
            "choose an empty or new folder for --out")
    existing = read_json(dataset_path) if os.path.isfile(dataset_path) else None
    if existing is not None and existing.get("params") == params and _complete(root, params):
        return _info(root, existing, generated=False)
    if os.path.exists(dataset_path):
        os.unlink(dataset_path)  # a half-done regeneration must never look complete
    files.write_text(marker_path, "made by tools/synthetic.py; safe to regenerate\n")

    from tqdm import tqdm

    counts = {}
    jobs = [(split, image_id) for split, count in (("train", n_train), ("val", n_val))
            for image_id in _image_ids(split, count)]
    for split in SPLITS:
        counts[split] = {"images": 0, "objects": {name: 0 for name in CLASS_NAMES[1:]}}
    write = functools.partial(_write_example, root, seed, size, knobs)
    workers = min(available_cores() if workers is None else workers,
                  max(1, len(jobs) // PARALLEL_MIN_IMAGES))
    with contextlib.ExitStack() as stack:
        written = map(write, jobs)
        if workers > 1:   # every image has its own RandomState: the same files either way
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=_writer_context(), initializer=cv2.setNumThreads,
                initargs=(1,)))
            written = pool.map(write, jobs, chunksize=64)
        for split, names in tqdm(written, total=len(jobs), desc="synthetic data",
                                 disable=not progress, unit="image"):
            counts[split]["images"] += 1
            for name in names:
                counts[split]["objects"][name] += 1

    for split, count in (("train", n_train), ("val", n_val)):
        ids = _image_ids(split, count)
        files.write_text(os.path.join(root, "ImageSets", "Segmentation", split + ".txt"),
                         "".join(i + "\n" for i in ids))
        files.write_text(os.path.join(root, "lists", split + ".txt"), "".join(
            f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png\n" for i in ids))
    _remove_stale(root, {image_id for _, image_id in jobs})

    dataset = {
        "params": params,
        "class_names": list(CLASS_NAMES),
        "num_classes": NUM_CLASSES,
        "ignore_label": voc_io.IGNORE_LABEL,
        "confusable_pairs": [list(p) for p in CONFUSABLE_PAIRS],
        "part_patterns": dict(PART_PATTERNS),
        "body_families": dict(BODY_FAMILY),
        "size": int(size),
        "seed": int(seed),
        "void_radius": void_radius_for(size),
        "counts": counts,
        "label_dir": "SegmentationClass",
        "annotation_dir": "Objects",
    }
    files.write_json(dataset_path, dataset)
    return _info(root, dataset, generated=True)


def generate_and_report(out, n_train=200, n_val=50, size=129, seed=0, progress=True):
    """``generate`` and print what the data set holds (tools/synthetic.py)."""
    info = generate(out, n_train=n_train, n_val=n_val, size=size, seed=seed, progress=progress)
    state = "generated" if info["generated"] else "already present, unchanged"
    print(f"{info['root']}: {state}; {info['size']}x{info['size']} px, seed {info['seed']}")
    for split in SPLITS:
        c = info["counts"][split]
        objects = ", ".join(f"{c['objects'][name]} {name}" for name in CLASS_NAMES[1:])
        print(f"  {split}: {c['images']} images ({objects}); list {info[split + '_list']}")
    return info
