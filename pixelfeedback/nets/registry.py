"""The one model registry: every model the tools know by name, with its deploy net (the
NetSpec builder that generates ``prototxt/``), published weights and settings.

Deploy prototxts live in ``prototxt/`` (generated with NetSpec); weights are fetched into
``weights/`` by ``weights/fetch.py``. Sizes and checksums of the published files are not
published, so ``weights/fetch.py`` records a sha256 on first download and verifies it later.
"""
import collections
import os

from pixelfeedback.nets import architectures, largefov
from pixelfeedback.paths import REPO_ROOT
from python_layers import voc_io

# BGR means subtracted by DeepLab (the data layer's default) and FCN; no scaling to [0, 1].
DEEPLAB_MEAN = voc_io.DEEPLAB_MEAN
FCN_MEAN = (104.00698793, 116.66876762, 122.67891434)

ModelInfo = collections.namedtuple("ModelInfo", [
    "name",          # short name used on the command line
    "deploy",        # deploy prototxt, relative to the repository root
    "weights",       # caffemodel file name under weights/
    "url",           # where the published weights are downloaded from
    "archive_member",  # file inside a zip at url, or None when url is the caffemodel
    "score_blob",    # the blob fixations start from (scores before any zoom)
    "mean",          # BGR mean
    "kind",          # "segmentation" or "classification"
    "trained_on",    # splits the weights have seen (the tools warn when evaluating on them)
    "description",
    "build_deploy",  # () -> NetParameter of the full-size deploy net written to ``deploy``
])

MODELS = collections.OrderedDict((m.name, m) for m in [
    ModelInfo("largefov", "prototxt/deploy.prototxt", "train2_iter_8000.caffemodel",
              "http://www.cs.jhu.edu/~alanlab/ccvl/DeepLab-LargeFOV/train2_iter_8000.caffemodel",
              None, "fc8_voc12", DEEPLAB_MEAN, "segmentation", ("voc2012_train", "voc2012_val"),
              "DeepLab-LargeFOV (VGG-16), trained on VOC 2012 train_aug + val (stage 2)",
              largefov.deploy_net),
    ModelInfo("largefov-init", "prototxt/deploy.prototxt", "vgg16_20M.caffemodel",
              "http://www.cs.jhu.edu/~alanlab/ccvl/init_models/vgg16_20M.caffemodel",
              None, "fc8_voc12", DEEPLAB_MEAN, "segmentation", (),
              "ImageNet initialisation of DeepLab-LargeFOV (fc8_voc12 is untrained)",
              largefov.deploy_net),
    ModelInfo("fcn8s", "prototxt/deploy_fcn8s.prototxt", "fcn8s-heavy-pascal.caffemodel",
              "http://dl.caffe.berkeleyvision.org/fcn8s-heavy-pascal.caffemodel",
              None, "score", FCN_MEAN, "segmentation", ("voc2011_train", "sbd_train"),
              "FCN-8s (VGG-16), PASCAL VOC", architectures.fcn8s),
    ModelInfo("fcn-alexnet", "prototxt/deploy_fcn_alexnet.prototxt", "fcn-alexnet-pascal.caffemodel",
              "http://dl.caffe.berkeleyvision.org/fcn-alexnet-pascal.caffemodel",
              None, "score", FCN_MEAN, "segmentation", ("voc2011_train", "sbd_train"),
              "FCN-AlexNet, PASCAL VOC", architectures.fcn_alexnet),
    ModelInfo("deeplabv2-resnet101", "prototxt/deploy_deeplabv2_resnet101.prototxt",
              "deeplabv2_resnet101_voc12.caffemodel",
              "http://liangchiehchen.com/projects/released/deeplab_aspp_resnet101/prototxt_and_model.zip",
              "train_iter_20000.caffemodel", "fc1_voc12", DEEPLAB_MEAN, "segmentation",
              ("voc2012_train",),
              "DeepLab v2 ASPP (ResNet-101), VOC 2012", architectures.deeplabv2_resnet101),
    ModelInfo("vgg16", "prototxt/deploy_vgg16.prototxt", "VGG_ILSVRC_16_layers.caffemodel",
              "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel",
              None, "fc8", DEEPLAB_MEAN, "classification", (),
              "VGG-16 ImageNet classifier (CNN-Fixations)", architectures.vgg16),
])


def weights_path(name):
    """Where the weights of model ``name`` live once fetched."""
    return os.path.join(REPO_ROOT, "weights", MODELS[name].weights)


def deploy_path(name):
    """The deploy prototxt of model ``name``."""
    return os.path.join(REPO_ROOT, MODELS[name].deploy)


def published_deploy_nets():
    """{name: (builder, file name under prototxt/)} of the registry's nets other than
    LargeFOV (whose deploy net prototxt.render_all writes with its own options)."""
    return collections.OrderedDict(
        (m.name, (m.build_deploy, os.path.basename(m.deploy))) for m in MODELS.values()
        if m.build_deploy is not largefov.deploy_net)
