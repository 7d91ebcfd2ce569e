"""The segmentation data layer (DeepLab's ``ImageSegData``, which BVLC Caffe lacks).

Per image, as DeepLab's transformer: read BGR, subtract the mean, pad bottom/right to the
crop size (the image with the mean, i.e. 0 after subtraction; the label with 255), then
crop (random in training, top-left otherwise) and mirror (random, training only; image
and label alike). The per-image transform is a plain function, ``preprocess``, which the
evaluation and fixation tools reuse for DeepLab's test protocol (pad to 513 with the mean).

Layer parameters are JSON in ``param_str``::

    {"root": "data/VOCdevkit/VOC2012", "list": "data/lists/train.txt", "batch_size": 10,
     "crop_size": 321, "mirror": true, "shuffle": true, "seed": 0, "prefetch": 2,
     "workers": 0}

Relative paths are relative to the current directory (``caffe train`` runs from the
repository root).

Resume: batch k is a function of (seed, k) alone (``BatchSource``), and in the TRAIN phase
the layer reseeds Caffe's RNG (dropout) from (seed, k) before every batch, so a training
resumed from a snapshot at iteration N, with ``START_BATCH_ENV`` set to N (what
pixelfeedback.training does), repeats an uninterrupted one bit for bit.
"""
import json
import math
import os

import numpy as np

from python_layers import ToolkitError, one_line_errors, voc_io
from python_layers.prefetch import ProcessPrefetcher, ThreadPrefetcher

try:
    import caffe
    _LayerBase = caffe.Layer
    _TEST_PHASE = caffe.TEST
except ImportError:  # preprocess() stays usable without pycaffe
    caffe = None
    _LayerBase = object
    _TEST_PHASE = 1

DEEPLAB_MEAN = voc_io.DEEPLAB_MEAN
BLOB_LIMIT = 2 ** 31 - 1   # values of one Caffe blob (Blob::Reshape aborts beyond)
MAX_PREFETCH = 16          # batches ahead: each one is batch x 3 x crop x crop floats
MAX_WORKERS = 64           # data worker processes

DEFAULTS = {
    "root": None,            # data root the list's paths are joined onto (required)
    "list": None,            # DeepLab list file: "/JPEGImages/x.jpg /SegmentationClassAug/x.png"
    "batch_size": 1,
    "crop_size": 321,
    "mean": list(DEEPLAB_MEAN),
    "mirror": True,          # random horizontal flips (training phase only)
    "shuffle": True,         # reshuffle the list every epoch
    "seed": None,            # seed of crops, flips and shuffling (None: from the OS)
    "ignore_label": voc_io.IGNORE_LABEL,
    "num_classes": 21,
    "prefetch": 2,           # batches prepared ahead (0: none, at most 16)
    "workers": 0,            # processes that prepare them (0: a thread of the trainer)
    "reseed_caffe": True,    # with a seed, TRAIN: reseed Caffe's RNG (dropout) every batch
}


# --- the per-image transform --------------------------------------------------------

def pad_to(array, height, width, value):
    """Pad ``array`` (H, W[, C]) at the bottom and right with ``value`` to at least
    ``height`` x ``width``; larger arrays are returned unchanged (never cropped)."""
    array = np.asarray(array)
    pad_h, pad_w = max(height - array.shape[0], 0), max(width - array.shape[1], 0)
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, mode="constant", constant_values=value)


def crop_window(image_shape, crop, rng=None, mirror=False):
    """(y0, x0, flip) of a crop from an image padded to at least ``crop``: uniform over
    the valid offsets and a fair coin for ``flip`` when ``rng`` is given, else (0, 0, False).
    """
    if rng is None:
        if mirror:
            raise ValueError("a random mirror needs rng")
        return 0, 0, False
    height, width = image_shape[:2]
    y0 = int(rng.randint(max(height - crop, 0) + 1))
    x0 = int(rng.randint(max(width - crop, 0) + 1))
    flip = bool(mirror) and bool(rng.randint(2))
    return y0, x0, flip


def _transform_into(data_out, label_out, image_bgr, label, crop, mean, window):
    """Write the mean-subtracted, padded, cropped (and flipped) image into ``data_out``
    (3, crop, crop), pre-filled with 0, and the label into ``label_out`` (crop, crop),
    pre-filled with the ignore label. Only the crop window is converted (fast)."""
    y0, x0, flip = window
    if flip:
        data_out, label_out = data_out[:, :, ::-1], label_out[:, ::-1]
    patch = image_bgr[y0:y0 + crop, x0:x0 + crop]
    rows, cols = patch.shape[:2]
    np.subtract(patch.transpose(2, 0, 1), mean[:, None, None], out=data_out[:, :rows, :cols],
                casting="unsafe")
    if label is not None:
        label_out[:rows, :cols] = label[y0:y0 + crop, x0:x0 + crop]


def preprocess(image_bgr, label=None, crop=321, mean=DEEPLAB_MEAN, rng=None, mirror=False,
               ignore_label=voc_io.IGNORE_LABEL):
    """DeepLab's per-image transform. Returns (data (3, crop, crop) float32, label
    (crop, crop) uint8 or None).

    ``image_bgr`` (H, W, 3) minus ``mean``, padded bottom/right to ``crop`` with 0 (the
    mean before subtraction), the label with ``ignore_label``. With ``rng`` (a
    ``numpy.random.RandomState``): a random crop and, when ``mirror``, a random flip of
    both; without: the top-left crop (the test protocol: ``preprocess(image, crop=513)``).
    """
    image_bgr = np.asarray(image_bgr)
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) BGR, got shape {image_bgr.shape}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != image_bgr.shape[:2]:
            raise ToolkitError(f"label size {label.shape[1]}x{label.shape[0]} differs from "
                               f"image size {image_bgr.shape[1]}x{image_bgr.shape[0]}")
    mean = np.asarray(mean, np.float32).reshape(3)
    data = np.zeros((3, crop, crop), np.float32)
    label_crop = np.full((crop, crop), ignore_label, np.uint8)
    window = crop_window(image_bgr.shape, crop, rng, mirror)
    _transform_into(data, label_crop, image_bgr, label, crop, mean, window)
    return data, (label_crop if label is not None else None)


def load_pair(image_path, label_path, num_classes=21, ignore_label=voc_io.IGNORE_LABEL):
    """Read an image (BGR) and its label, checking that sizes match and that every label
    value is a class (0..num_classes-1) or the ignore label."""
    image = voc_io.read_image(image_path)
    label = voc_io.read_label(label_path, num_classes, ignore_label)
    if label.shape != image.shape[:2]:
        raise ToolkitError(
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} but image {image_path} "
            f"is {image.shape[1]}x{image.shape[0]} (width x height); a label must have its "
            "image's size: fix or remove the pair from the list")
    return image, label


# --- parameters -----------------------------------------------------------------------

def _require(ok, key, what):
    if not ok:
        raise ToolkitError(f"ImageSegData: param_str key {key!r} {what}")


def parse_params(param_str):
    """Validated layer parameters: DEFAULTS updated with the JSON in ``param_str``."""
    try:
        given = json.loads(param_str) if param_str and param_str.strip() else {}
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"ImageSegData: param_str is not valid JSON ({exc})") from None
    if not isinstance(given, dict):
        raise ToolkitError("ImageSegData: param_str must be a JSON object")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ToolkitError(f"ImageSegData: unknown param_str key {unknown[0]!r}; known keys: "
                           f"{', '.join(sorted(DEFAULTS))}")
    params = dict(DEFAULTS, **given)

    def positive_int(key, minimum=1, maximum=None):
        value = params[key]
        within = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum
                 and (maximum is None or value <= maximum), key,
                 f"must be an integer {within}, got {value!r}")

    for key in ("root", "list"):
        _require(isinstance(params[key], str) and params[key], key,
                 "is required: a path (relative to the current directory)")
    positive_int("batch_size")
    positive_int("crop_size")
    positive_int("num_classes", 1, 255)     # 8-bit labels, 255 the ignore value
    positive_int("prefetch", 0, MAX_PREFETCH)
    positive_int("workers", 0, MAX_WORKERS)
    _require(not params["workers"] or params["prefetch"], "workers",
             f"{params['workers']} needs prefetch >= 1 (the workers make batches ahead); "
             "set prefetch, or workers to 0")
    values = params["batch_size"] * 3 * params["crop_size"] ** 2
    _require(values <= BLOB_LIMIT, "crop_size",
             f"{params['crop_size']} with batch_size {params['batch_size']} makes a data blob "
             f"of {values} values, more than a Caffe blob holds ({BLOB_LIMIT}); use a smaller "
             "crop or batch")
    mean = params["mean"]
    _require(isinstance(mean, list) and len(mean) == 3
             and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                     and math.isfinite(v) for v in mean),
             "mean", f"must be a list of 3 finite numbers (B, G, R), got {mean!r}")
    for key in ("mirror", "shuffle", "reseed_caffe"):
        _require(isinstance(params[key], bool), key, f"must be true or false, got {params[key]!r}")
    seed = params["seed"]
    _require(seed is None or (isinstance(seed, int) and not isinstance(seed, bool)
                              and 0 <= seed < 2**32), "seed",
             f"must be null or an integer in [0, 2**32), got {seed!r}")
    ignore = params["ignore_label"]
    _require(isinstance(ignore, int) and not isinstance(ignore, bool)
             and params["num_classes"] <= ignore <= 255, "ignore_label",
             f"must be an integer in [num_classes, 255], got {ignore!r}")
    return params


def read_pairs(root, list_file):
    """The (image, label) paths of a list file; every file must exist (checked up front, so
    a bad list fails at setup rather than hours into training)."""
    if not os.path.isdir(root):
        raise ToolkitError(f"ImageSegData: param_str key 'root' {root!r} is not a folder "
                           "(relative paths start in the directory caffe runs in)")
    pairs = voc_io.read_list(list_file, root=root)
    for number, (image_path, label_path) in enumerate(pairs, 1):
        if label_path is None:
            raise ToolkitError(f"{list_file}: entry {number} ({image_path}) has no label; "
                               "a training list needs 'image label' on every line")
    missing = [p for pair in pairs for p in pair if not os.path.isfile(p)]
    if missing:
        raise ToolkitError(f"{len(missing)} file(s) of list {list_file} not found, first: "
                           f"{missing[0]} (check the data root {root!r} and the list)")
    return pairs


# --- batches ---------------------------------------------------------------------------

# Where a resumed `caffe train` tells its data layer the batch to start from
# (pixelfeedback.training sets it for the trainer it starts; TRAIN phase only).
START_BATCH_ENV = "PIXELFEEDBACK_START_BATCH"

# Streams derived from one seed, so that each random choice has its own.
_ORDER_STREAM, _CROP_STREAM, _CAFFE_STREAM = 0, 1, 2


def stream_seed(seed, stream, index):
    """The 32-bit seed of one random choice (epoch order, batch crops, the trainer's RNG
    at a batch): a pure function of (seed, stream, index), never of what came before."""
    return int(np.random.RandomState([seed, stream, index]).randint(2**31))


class BatchSource:
    """Makes batches in list order (reshuffled every epoch when ``shuffle``), with random
    crops and flips when ``train``.

    Batch ``k`` is a pure function of (seed, k): epoch ``e``'s order is drawn from
    ``stream_seed(seed, order, e)``, the crops and flips of batch ``k`` from
    ``stream_seed(seed, crop, k)``. So the data layer's whole state is the number of the
    next batch: a training resumed at iteration N (``start_batch=N``) sees exactly the
    batches an uninterrupted one sees from N on, which is what makes a resume
    bit-identical. Without a seed, one is drawn from the OS.
    """

    def __init__(self, pairs, params, train, start_batch=0):
        self.pairs = pairs
        self.batch_size = params["batch_size"]
        self.crop = params["crop_size"]
        self.mean = np.asarray(params["mean"], np.float32)
        self.shuffle = params["shuffle"]
        self.mirror = params["mirror"] and train
        self.train = train
        self.num_classes = params["num_classes"]
        self.ignore_label = params["ignore_label"]
        seed = params["seed"]
        self.seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else seed
        self.batch = int(start_batch)  # the number of the next batch
        self._epoch, self._order = None, None

    def _order_of(self, epoch):
        if epoch != self._epoch:
            count = len(self.pairs)
            self._order = (np.random.RandomState(stream_seed(self.seed, _ORDER_STREAM, epoch))
                           .permutation(count) if self.shuffle else np.arange(count))
            self._epoch = epoch
        return self._order

    def indices(self, batch):
        """The list positions of the images of batch number ``batch``."""
        count = len(self.pairs)
        first = batch * self.batch_size
        return [int(self._order_of(p // count)[p % count])
                for p in range(first, first + self.batch_size)]

    def next_batch(self):
        """(data (N,3,crop,crop) float32, label (N,1,crop,crop) float32) of the next batch."""
        n, crop = self.batch_size, self.crop
        data = np.zeros((n, 3, crop, crop), np.float32)
        labels = np.full((n, crop, crop), self.ignore_label, np.uint8)
        rng = (np.random.RandomState(stream_seed(self.seed, _CROP_STREAM, self.batch))
               if self.train else None)
        for slot, index in enumerate(self.indices(self.batch)):
            image_path, label_path = self.pairs[index]
            image, label = load_pair(image_path, label_path, self.num_classes, self.ignore_label)
            window = crop_window(image.shape, crop, rng, self.mirror)
            _transform_into(data[slot], labels[slot], image, label, crop, self.mean, window)
        self.batch += 1
        return data, labels[:, None].astype(np.float32)


def start_batch_from_env():
    """The batch a resumed training starts from (``START_BATCH_ENV``; 0 when unset)."""
    text = os.environ.get(START_BATCH_ENV, "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ToolkitError(f"ImageSegData: {START_BATCH_ENV} must be a batch number >= 0, "
                           f"got {text!r}")
    return int(text)


class ImageSegData(_LayerBase):
    """Caffe data layer: tops ``data`` (N,3,crop,crop) and ``label`` (N,1,crop,crop).

    Random crops/mirrors in the TRAIN phase; top-left crops, no mirror in TEST.
    """

    @one_line_errors
    def setup(self, bottom, top):
        if bottom:
            raise ToolkitError("ImageSegData takes no bottoms")
        if len(top) != 2:
            raise ToolkitError("ImageSegData gives two tops: data and label")
        self.params = parse_params(self.param_str)
        pairs = read_pairs(self.params["root"], self.params["list"])
        train = getattr(self, "phase", 0) != _TEST_PHASE
        self.source = BatchSource(pairs, self.params, train, start_batch_from_env() if train else 0)
        # Caffe's own RNG (dropout) is reseeded per batch, so a resumed training draws
        # the masks an uninterrupted one draws (the solverstate does not hold the RNG).
        self.reseed = train and self.params["reseed_caffe"] and self.params["seed"] is not None
        self.batch = self.source.batch  # the number of the batch the next forward serves
        depth, workers = self.params["prefetch"], self.params["workers"]
        self.prefetcher = (ProcessPrefetcher(self.source, depth, workers) if workers
                           else ThreadPrefetcher(self.source, depth) if depth else None)
        n, crop = self.params["batch_size"], self.params["crop_size"]
        top[0].reshape(n, 3, crop, crop)
        top[1].reshape(n, 1, crop, crop)

    @one_line_errors
    def reshape(self, bottom, top):
        pass  # fixed shapes, set in setup

    def forward(self, bottom, top):
        if self.reseed:
            caffe.set_random_seed(stream_seed(self.params["seed"], _CAFFE_STREAM, self.batch))
        self.batch += 1
        if self.prefetcher is not None:
            data, label = self.prefetcher.get()
        else:
            data, label = self.source.next_batch()
        top[0].data[...] = data
        top[1].data[...] = label

    def backward(self, top, propagate_down, bottom):
        pass  # a data layer has no bottoms

    def close(self):
        """Stop the prefetch thread or workers (Caffe keeps Python layers alive with their
        net)."""
        if self.prefetcher is not None:
            self.prefetcher.close()
