"""A mirror of the published files in small, for rehearsing the docs' commands (the docs'
rehearsal: ``pixelfeedback.doc_rehearsal``): the VOC 2012 and SBD archives in their
published layouts and DeepLab-LargeFOV's two caffemodels at reduced width under their
published file names, served from a loopback HTTP server.

Files written into the mirror's folder, named as the fetch tools download them
(``voc_data.ARCHIVES``, ``registry.MODELS``)::

    VOCtrainval_11-May-2012.tar   VOCdevkit/VOC2012/{JPEGImages, SegmentationClass,
                                  ImageSets/Segmentation/{train,val}.txt}
    benchmark.tgz                 benchmark_RELEASE/dataset/{img, cls/*.mat, train.txt, val.txt}
    vgg16_20M.caffemodel          LargeFOV at 1/``width_div`` width without fc8_voc12
                                  (as the ImageNet init has none), seeded random weights
    train2_iter_8000.caffemodel   the same with fc8_voc12 (21 classes)

Images are small JPEGs of coloured boxes, labels VOC palette PNGs (SBD's: ``GTcls``
.mat files) of the boxes' classes with a void (255) border, as VOC draws them.
"""
import contextlib
import functools
import http.server
import io
import os
import tarfile
import tempfile
import threading

import numpy as np

from pixelfeedback import files

WIDTH_DIV = 32          # the rehearsal's width: LargeFOV's channels / 32
VOC_TRAIN = ("2007_000032", "2007_000039", "2008_000008", "2009_000012")
VOC_VAL = ("2007_000033", "2008_000009", "2010_000002")
SBD_TRAIN = ("2007_000039", "2008_000008", "2008_000009", "2011_000003", "2011_000006")
SBD_VAL = ("2011_000010", "2011_000017")   # SBD only: their images come from SBD
IMAGE_SIZE = (60, 80)


def _box_image(rng, size=IMAGE_SIZE, num_classes=21):
    """(BGR image, label): two coloured boxes of random classes on a dark background,
    each box outlined in void (255) as VOC's labels are."""
    height, width = size
    image = rng.randint(0, 50, (height, width, 3)).astype(np.uint8)
    label = np.zeros(size, np.uint8)
    for _ in range(2):
        cls = rng.randint(1, num_classes)
        y, x = rng.randint(0, height // 2), rng.randint(0, width // 2)
        h, w = rng.randint(12, height - y + 1), rng.randint(12, width - x + 1)
        label[y:y + h, x:x + w] = 255
        label[y + 1:y + h - 1, x + 1:x + w - 1] = cls
        image[y:y + h, x:x + w] = (37 * cls) % 200 + 40, (91 * cls) % 200 + 40, 120
    return image, label


def _jpeg(image):
    import cv2
    return cv2.imencode(".jpg", image)[1].tobytes()


def _png(label):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "label.png")
        files.write_label(path, label)
        with open(path, "rb") as f:
            return f.read()


def _mat(label):
    import scipy.io
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": {"Segmentation": label,
                                        "CategoriesPresent": np.unique(label)}})
    return buffer.getvalue()


def _tar(path, entries, mode):
    with files.atomic_path(path) as tmp, tarfile.open(tmp, mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def write_archives(folder, seed=0):
    """The VOC 2012 trainval tar and the SBD tgz in ``folder``; returns their paths."""
    from pixelfeedback.voc_data import ARCHIVES
    rng = np.random.RandomState(seed)
    voc, sbd = "VOCdevkit/VOC2012/", "benchmark_RELEASE/dataset/"
    voc_entries, sbd_entries = {}, {}
    for image_id in VOC_TRAIN + VOC_VAL:
        image, label = _box_image(rng)
        voc_entries[voc + f"JPEGImages/{image_id}.jpg"] = _jpeg(image)
        voc_entries[voc + f"SegmentationClass/{image_id}.png"] = _png(label)
    for split, ids in (("train", VOC_TRAIN), ("val", VOC_VAL)):
        voc_entries[voc + f"ImageSets/Segmentation/{split}.txt"] = \
            "".join(f"{i}\n" for i in ids).encode()
    for image_id in SBD_TRAIN + SBD_VAL:
        image, label = _box_image(rng)
        label[label == 255] = 0   # SBD's class maps have no void border
        sbd_entries[sbd + f"img/{image_id}.jpg"] = _jpeg(image)
        sbd_entries[sbd + f"cls/{image_id}.mat"] = _mat(label)
    for split, ids in (("train", SBD_TRAIN), ("val", SBD_VAL)):
        sbd_entries[sbd + f"{split}.txt"] = "".join(f"{i}\n" for i in ids).encode()
    paths = (os.path.join(folder, ARCHIVES["voc"].filename),
             os.path.join(folder, ARCHIVES["sbd"].filename))
    _tar(paths[0], voc_entries, "w")
    _tar(paths[1], sbd_entries, "w:gz")
    return paths


def write_weights(folder, width_div=WIDTH_DIV, seed=0):
    """LargeFOV's ImageNet init (no fc8_voc12) and trained model at 1/``width_div`` width,
    under their published names in ``folder``; returns their paths."""
    import caffe
    from caffe.proto import caffe_pb2

    from pixelfeedback.nets import largefov, registry
    from pixelfeedback.nets.netspec import write_net
    from pixelfeedback.nets.weights import fill_random_weights
    with tempfile.TemporaryDirectory(prefix="mirror-") as tmp:
        deploy = write_net(largefov.deploy_net(width_div=width_div, size=65),
                           os.path.join(tmp, "deploy.prototxt"))
        net = caffe.Net(deploy, caffe.TEST)
        fill_random_weights(net, seed=seed)
        trained = os.path.join(folder, registry.MODELS["largefov"].weights)
        with files.atomic_path(trained) as path:
            net.save(path)
    model = caffe_pb2.NetParameter()
    with open(trained, "rb") as f:
        model.ParseFromString(f.read())
    keep = [layer for layer in model.layer if layer.name != "fc8_voc12"]
    del model.layer[:]
    model.layer.extend(keep)
    init = os.path.join(folder, registry.MODELS["largefov-init"].weights)
    with files.atomic_path(init) as path, open(path, "wb") as f:
        f.write(model.SerializeToString())
    return init, trained


def make_mirror(folder, width_div=WIDTH_DIV, seed=0):
    """Every file of the mirror in ``folder`` (made if missing); returns their names."""
    os.makedirs(folder, exist_ok=True)
    made = write_archives(folder, seed) + write_weights(folder, width_div, seed)
    return sorted(os.path.basename(path) for path in made)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    """Serve ``folder`` on 127.0.0.1 (a free port) while the block runs; yields its URL."""
    handler = functools.partial(_QuietHandler, directory=os.path.abspath(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
