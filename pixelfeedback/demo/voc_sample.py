"""A tiny PASCAL-VOC-layout folder made from the project's own data, and 21-class initial
weights for it, so that the Docker image's `reproduce` (tools/reproduce_table.py on a mounted
VOCdevkit) runs for real end to end without VOC or the published weights (make docker-check).

The images are synthetic (pixelfeedback/synthetic.py); their classes become VOC's class ids
(cat 8, chair 9, dog 12, sofa 18), labels are VOC palette PNGs. The weights are the committed
demo model (reduced width 8, 5 classes) with fc8_voc12 widened to 21 outputs by net surgery:
the rows of the mapped classes are the demo model's, the other rows have zero weights and a
low bias, so a mapped class scores exactly as in the demo model.

Layout under ``out``::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png      palette labels, VOC ids, 255 void
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt
    weights/largefov_w8_voc21.caffemodel              with ``weights=True``
"""
import os
import tempfile

import cv2
import numpy as np

from pixelfeedback import files, synthetic
from pixelfeedback.demo import model as demo_model
from pixelfeedback.nets import largefov
from pixelfeedback.nets.netspec import write_net
from python_layers import ToolkitError, voc_io

# synthetic class index -> VOC class index (background stays 0, void 255)
VOC_IDS = tuple(voc_io.VOC_CLASSES.index(name) for name in synthetic.CLASS_NAMES)
VOC_NUM_CLASSES = len(voc_io.VOC_CLASSES)
OTHER_BIAS = -10.0   # bias of the fc8 rows the demo model has no class for
WEIGHTS_NAME = "largefov_w8_voc21.caffemodel"
WIDTH_DIV = demo_model.RECIPE["net"]["width_div"]


def to_voc_label(label):
    """A synthetic label map (0..4, 255) as VOC class ids."""
    lut = np.full(256, voc_io.IGNORE_LABEL, np.uint8)
    lut[:len(VOC_IDS)] = VOC_IDS
    label = np.asarray(label, np.uint8)
    bad = np.unique(label[(label >= len(VOC_IDS)) & (label != voc_io.IGNORE_LABEL)])
    if bad.size:
        raise ToolkitError(f"synthetic label values {bad.tolist()} have no VOC class")
    return lut[label]


def write_voc_folder(voc_root, n_train=8, n_val=4, size=129, seed=0):
    """Write the VOC2012-layout folder ``voc_root``; returns {split: [ids]}."""
    if not (1 <= n_train <= 9999 and 1 <= n_val <= 9999):
        raise ToolkitError(f"--train and --val must be 1 to 9999 images (ids have four "
                           f"digits), got --train {n_train} --val {n_val}")
    if size < 65 or (size - 1) % 8:
        raise ToolkitError(f"--size must be 8k+1 and at least 65, got {size}")
    if os.path.isdir(os.path.join(voc_root, "JPEGImages")) and \
            not os.path.isfile(os.path.join(voc_root, ".voc_sample")):
        raise ToolkitError(f"{voc_root} holds images this tool did not write; choose an "
                           "empty or new folder for --out")
    files.write_text(os.path.join(voc_root, ".voc_sample"),
                     "made by tools/make_voc_sample.py; safe to overwrite\n")
    ids = {}
    for split, count in (("train", n_train), ("val", n_val)):
        ids[split] = [f"2026_{split}{i:04d}" for i in range(count)]
        for index, image_id in enumerate(ids[split]):
            image, label = synthetic.render_example(
                synthetic.example_rng(seed, split, index), size)[:2]
            path = os.path.join(voc_root, "JPEGImages", image_id + ".jpg")
            with files.atomic_path(path) as tmp:
                if not cv2.imwrite(tmp, image, [cv2.IMWRITE_JPEG_QUALITY,
                                                synthetic.JPEG_QUALITY]):
                    raise ToolkitError(f"cannot write {path}: check that the folder is writable")
            files.write_label(os.path.join(voc_root, "SegmentationClass", image_id + ".png"),
                              to_voc_label(label))
        files.write_text(os.path.join(voc_root, "ImageSets", "Segmentation", split + ".txt"),
                         "".join(i + "\n" for i in ids[split]))
    return ids


def fc8_surgery(fc8_weights, fc8_bias, num_classes=VOC_NUM_CLASSES, other_bias=OTHER_BIAS):
    """fc8's (weights, bias) of the demo model's classes spread over ``num_classes`` rows:
    row VOC_IDS[k] is row k; the other rows score ``other_bias`` everywhere."""
    fc8_weights, fc8_bias = np.asarray(fc8_weights), np.asarray(fc8_bias)
    if fc8_weights.shape[0] != len(VOC_IDS) or fc8_bias.shape != (len(VOC_IDS),):
        raise ToolkitError(f"fc8 has {fc8_weights.shape[0]} outputs; the demo model has "
                           f"{len(VOC_IDS)} (its classes {', '.join(synthetic.CLASS_NAMES)})")
    weights = np.zeros((num_classes,) + fc8_weights.shape[1:], fc8_weights.dtype)
    bias = np.full(num_classes, other_bias, fc8_bias.dtype)
    weights[list(VOC_IDS)] = fc8_weights
    bias[list(VOC_IDS)] = fc8_bias
    return weights, bias


def voc21_weights(out_path, source=demo_model.DEMO_WEIGHTS):
    """Write 21-class reduced-width (width_div 8) LargeFOV weights made from the demo model
    ``source`` by net surgery (fc8_surgery) to ``out_path``; returns the path."""
    import caffe
    from pixelfeedback.nets.weights import load_weights

    if not os.path.isfile(source):
        raise ToolkitError(f"the demo model {source} is missing; restore it with "
                           "git checkout weights/demo")
    with tempfile.TemporaryDirectory() as tmp:
        nets = {}
        for classes in (len(VOC_IDS), VOC_NUM_CLASSES):
            prototxt = os.path.join(tmp, f"deploy{classes}.prototxt")
            write_net(largefov.deploy_net(width_div=WIDTH_DIV, num_classes=classes, size=65),
                      prototxt)
            nets[classes] = caffe.Net(prototxt, caffe.TEST)
        small, large = nets[len(VOC_IDS)], nets[VOC_NUM_CLASSES]
        load_weights(small, source)
        for name, blobs in small.params.items():
            if name == "fc8_voc12":
                weights, bias = fc8_surgery(blobs[0].data, blobs[1].data)
                large.params[name][0].data[...] = weights
                large.params[name][1].data[...] = bias
            else:
                for k, blob in enumerate(blobs):
                    large.params[name][k].data[...] = blob.data
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with files.atomic_path(out_path) as tmp_path:
            large.save(tmp_path)
    return out_path


def make_voc_sample(out, n_train=8, n_val=4, size=129, seed=0, weights=True):
    """The VOC-layout folder under ``out``/VOCdevkit/VOC2012 and (``weights``) the surgery
    weights under ``out``/weights; prints what it wrote and returns {"voc_root", "weights",
    "train", "val"}."""
    voc_root = os.path.join(os.path.abspath(out), "VOCdevkit", "VOC2012")
    ids = write_voc_folder(voc_root, n_train, n_val, size, seed)
    weights_path = None
    if weights:
        weights_path = voc21_weights(os.path.join(os.path.abspath(out), "weights", WEIGHTS_NAME))
    mapped = ", ".join(f"{name} {VOC_IDS[k]}" for k, name in enumerate(synthetic.CLASS_NAMES)
                       if k)
    print(f"{voc_root}: {len(ids['train'])} train and {len(ids['val'])} val images of "
          f"{size} px (synthetic classes as VOC ids: {mapped})")
    if weights_path:
        print(f"{weights_path}: the demo model with a {VOC_NUM_CLASSES}-class fc8_voc12 "
              f"(reproduce --width-div {WIDTH_DIV} --num-classes {VOC_NUM_CLASSES})")
    return {"voc_root": voc_root, "weights": weights_path, **ids}
