"""The demo's model: the committed reduced-width DeepLab-LargeFOV trained on the synthetic
data (weights/demo/), the recipe that made it, and the input tools/seg_fixations.py traces
when no --model is given (needs nothing downloaded).
"""
import collections
import hashlib
import json
import os
import shutil

import numpy as np

from pixelfeedback import synthetic
from pixelfeedback.download import file_digest
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.pipeline import DEFAULT_SCORE_BLOB, ModelSpec
from python_layers import voc_io


DEMO_WEIGHTS_DIR = os.path.join(REPO_ROOT, "weights", "demo")


DEMO_WEIGHTS = os.path.join(DEMO_WEIGHTS_DIR, "largefov_synthetic.caffemodel")


DEMO_RECIPE_FILE = os.path.join(DEMO_WEIGHTS_DIR, "recipe.json")


# The baseline's recipe: the committed model is the product of exactly this.
RECIPE = {
    "data": {"size": 129, "n_train": 300, "n_val": 60, "seed": 0},
    "net": {"width_div": 8, "num_classes": 5},
    # From scratch, so not DeepLab's step SGD from an ImageNet init: Adam, poly decay.
    "baseline": {"iterations": 5000, "batch_size": 10, "crop": 129, "base_lr": 1e-3,
                 "solver": {"type": "Adam", "lr_policy": "poly", "power": 0.9,
                            "momentum2": 0.999},
                 "seed": 0, "snapshot": 1000},
}


# The run: full, and --quick for the tests (same model, fewer images and runs).
SETTINGS = {
    "full": {"val_images": 60, "fixation_images": 12, "experiment_images": 30,
             "losses": ("correlation", "cosine", "selective_correlation", "selective_cosine"),
             "lambdas": (0.01, 0.1, 1.0), "seeds": (0, 1), "finetune_iterations": 100,
             "finetune_lr": 1e-3},
    "quick": {"val_images": 12, "fixation_images": 4, "experiment_images": 6,
              "losses": ("cosine", "selective_cosine"), "lambdas": (0.1,), "seeds": (0,),
              "finetune_iterations": 10, "finetune_lr": 1e-3},
}


def recipe_id(recipe=RECIPE):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def committed_baseline():
    """The committed model when it was made by this recipe, else None."""
    if not (os.path.isfile(DEMO_WEIGHTS) and os.path.isfile(DEMO_RECIPE_FILE)):
        return None
    with open(DEMO_RECIPE_FILE) as f:
        meta = json.load(f)
    if meta.get("recipe_id") != recipe_id() or meta.get("sha256") != file_digest(DEMO_WEIGHTS):
        return None
    return meta


def export_baseline(weights, losses, metrics, seconds):
    """Commit-ready copy of a freshly trained baseline with its recipe (weights/demo/)."""
    os.makedirs(DEMO_WEIGHTS_DIR, exist_ok=True)
    with voc_io.atomic_path(DEMO_WEIGHTS) as tmp:
        shutil.copyfile(weights, tmp)
    meta = {"recipe": RECIPE, "recipe_id": recipe_id(), "sha256": file_digest(DEMO_WEIGHTS),
            "val_mean_iou": metrics["mean_iou"], "val_class_iou": metrics["class_iou"],
            "val_images": metrics.get("num_images"), "train_seconds": round(seconds),
            "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None,
            "made_by": "python tools/demo.py --retrain --export"}
    voc_io.write_json(DEMO_RECIPE_FILE, meta)
    return meta


def demo_model_files(work_dir):
    """(deploy prototxt, test prototxt) of the demo net, written into work_dir."""
    size, net = RECIPE["data"]["size"], RECIPE["net"]
    deploy = os.path.join(work_dir, "deploy.prototxt")
    test = os.path.join(work_dir, "test.prototxt")
    write_net(largefov.deploy_net(size=size, **net), deploy)
    write_net(largefov.test_net(size=size, **net), test)
    return deploy, test


Demo = collections.namedtuple("Demo", ["model", "image", "stem"])


DEMO_IMAGE = ("val", 5)  # a synthetic val image with a sofa, a chair and a dog


def model_spec(prototxt, weights, note=None):
    """The ``ModelSpec`` of the demo net (reduced-width LargeFOV, the synthetic classes)."""
    return ModelSpec("demo", prototxt, weights, DEFAULT_SCORE_BLOB, registry.DEEPLAB_MEAN,
                     "segmentation", synthetic.CLASS_NAMES, note)


def random_demo(work_dir, seed=0):
    """A reduced-width DeepLab-LargeFOV with fixed-seed random weights on a synthetic image,
    for when the committed model is missing: it shows the mechanics, not what a trained net
    attends to. The net and weights are written into ``work_dir``."""
    import caffe
    from pixelfeedback.nets.weights import fill_random_weights

    prototxt, _ = demo_model_files(work_dir)
    weights = os.path.join(work_dir, "demo_random.caffemodel")
    net = caffe.Net(prototxt, caffe.TEST)
    fill_random_weights(net, seed=seed)
    net.save(weights)
    image = synthetic.render_example(np.random.RandomState(seed), RECIPE["data"]["size"])[0]
    return Demo(model_spec(prototxt, weights,
                           "demo: reduced-width DeepLab-LargeFOV with random weights on a "
                           "synthetic image (weights/demo/ is missing; pass --model and "
                           "--image for real fixations)"), image, "demo")


def fixation_demo(work_dir):
    """What tools/seg_fixations.py traces with no --model: the committed demo model on one of
    its data set's val images (rendered on the fly), or random weights when it is missing."""
    if not os.path.isfile(DEMO_WEIGHTS):
        return random_demo(work_dir)
    prototxt, _ = demo_model_files(work_dir)
    split, index = DEMO_IMAGE
    image = synthetic.render_example(synthetic.example_rng(RECIPE["data"]["seed"], split, index),
                                     RECIPE["data"]["size"])[0]
    return Demo(model_spec(prototxt, DEMO_WEIGHTS,
                           "demo: the committed reduced-width DeepLab-LargeFOV trained on "
                           "synthetic data (weights/demo/), on a synthetic val image; pass "
                           "--model and --image for your own"), image, "demo")
