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

from pixelfeedback import files, pipeline, synthetic
from pixelfeedback.download import file_digest
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.pipeline import DEFAULT_SCORE_BLOB, ModelSpec
from pixelfeedback import thesis
from python_layers import ToolkitError
from python_layers.template_similarity import ALL_LOSS_NAMES, LOSS_NAMES


DEMO_WEIGHTS_DIR = os.path.join(REPO_ROOT, "weights", "demo")


DEMO_WEIGHTS = pipeline.DEMO_WEIGHTS   # one home for the path: the pipeline names its classes


DEMO_RECIPE_FILE = os.path.join(DEMO_WEIGHTS_DIR, "recipe.json")


# The baseline's recipe: the committed model is the product of exactly this. Chapter 3 needs
# a baseline that still errs: 10000 training images (the net sees each about twice, so it
# cannot memorise them; the export records its mIoU on training images beside val's), and
# DeepLab's stage 1: SGD, step schedule (x0.1 every third of the run) from initial weights,
# so the fine-tunes switch to poly as the thesis's did. Its initial weights (DeepLab's are
# ImageNet VGG-16's) are the earlier demo model, kept beside it: trained from scratch on the
# first 300 training images, which it fitted (training loss 0.003).
RECIPE = {
    "data": {"size": 129, "n_train": 10000, "n_val": 500, "seed": 0},
    "net": {"width_div": 8, "num_classes": 5},
    "init": {"weights": "stage0_synthetic300.caffemodel",
             "sha256": "6ade9016eb57dc9deec76f494a696bdbb4eccea705210d17293491a38f654327",
             "made_by": "the demo recipe of commit d915815: from scratch, Adam, poly from "
                        "1e-3, 5000 iterations on the first 300 training images"},
    "baseline": {"iterations": 1800, "batch_size": 10, "crop": 129, "base_lr": 1e-3,
                 "solver": {"type": "SGD", "lr_policy": "step", "gamma": 0.1,
                            "stepsize": 600},
                 "seed": 0, "snapshot": 600},
}


# The harder tier's baseline (issue 27 item 5; docs/table31.md, "The harder tier"): the
# same recipe on the hard variant of the data (smaller, fainter parts in a busier body),
# whose knobs were chosen by this baseline's val mIoU alone (0.60-0.70, the thesis's 0.6225
# in reach) before any loss ran on it. The knobs are in the recipe, so changing them
# retrains.
HARD_RECIPE = dict(RECIPE, data=dict(RECIPE["data"],
                                     difficulty=synthetic.difficulty_knobs("hard")))

# The committed baselines in weights/demo/: each its recipe, caffemodel and recipe file.
BASELINES = {
    "demo": {"recipe": RECIPE, "weights": os.path.basename(DEMO_WEIGHTS),
             "recipe_file": os.path.basename(DEMO_RECIPE_FILE)},
    "hard": {"recipe": HARD_RECIPE, "weights": "largefov_synthetic_hard.caffemodel",
             "recipe_file": "recipe_hard.json"},
}


# Table 3.1 in small, powered, on Algorithm 3's scale (normalize "none", SPEC section 3):
# the four losses at all six thesis lambdas, and Eq. 3.1 as printed (correlation_printed,
# its selective variant: issue 27), the poly control and the step control; each run's
# correlated pairs and its flow (experiment 4 on its own weights, 30 val images). The
# fine-tune: fc6-fc8 learning, SGD, poly from 1e-3 for 300 iterations (lr x iterations
# 0.3; the full-size default, the thesis's 1e-4 for the project's 2000, is 0.2: not the
# same, and the thesis gives no iteration count), batch 10 at crop 129 (at most 2,890
# label pixels per batch), 500 val images. The sequential rule, fixed
# before any run of this table on "none" (sweep.driver.run_sequential): every loss cell gets seeds
# 0-2 and both controls seeds 0-4; a loss cell whose paired 95 % interval of (loss -
# control) is wider than +-POWER_TARGET and is not an effect beyond +-EFFECT_TARGET whose
# interval excludes zero gets seeds 3 and 4 as well, once; the table reports whatever that
# gives. (The poly controls of 5 seeds on the 500 val images spread with sd 0.0017 mIoU.)
POWER_TARGET = 0.005
EFFECT_TARGET = 0.02
TABLE31_SMALL = {"train_images": RECIPE["data"]["n_train"], "val_images": 500,
                 "fixation_images": 12, "experiment_images": 30,
                 "losses": ALL_LOSS_NAMES, "lambdas": thesis.LAMBDAS, "seeds": (0, 1, 2),
                 "more_seeds": (3, 4), "normalize": "none", "step_control": True,
                 "flow_images": 30, "finetune_iterations": 300, "finetune_lr": 1e-3}

# The harder tier's table (make table31-hard): Table 3.1's four losses at lambda 0.01, 0.1
# and 1 with the powered table's fine-tune, val images, flow, controls and seed rule, on the
# hard baseline ("baseline": the key of BASELINES; absent: "demo").
HARD_LAMBDAS = (0.01, 0.1, 1.0)
TABLE31_HARD = dict(TABLE31_SMALL, losses=LOSS_NAMES, lambdas=HARD_LAMBDAS, baseline="hard")

# The runs: "table31" (make table31-small), "full" (make demo: the same fine-tunes and val
# images, two of its cells and the poly control at the rule's first stage, seeds 0-2, no
# step control: 9 runs of about a minute each on 2 cores, so that it stays within 15
# minutes), "quick" for the tests (fewer images, one short run each), "table31-hard" (make
# table31-hard) and "quick-hard" (its quick run, for the tests).
SETTINGS = {
    "table31": TABLE31_SMALL,
    "full": dict(TABLE31_SMALL, losses=("cosine", "selective_cosine"), lambdas=(0.05,),
                 more_seeds=(), step_control=False),
    "quick": {"train_images": 100, "val_images": 12, "fixation_images": 4,
              "experiment_images": 6, "losses": ("cosine", "selective_cosine"),
              "lambdas": (0.1,), "seeds": (0,), "more_seeds": (), "normalize": "none",
              "step_control": True, "flow_images": 4,
              "finetune_iterations": 10, "finetune_lr": 1e-3},
    "table31-hard": TABLE31_HARD,
}
SETTINGS["quick-hard"] = dict(SETTINGS["quick"], baseline="hard")


def baseline_of(mode):
    """The key of BASELINES whose model a mode fine-tunes."""
    return SETTINGS[mode].get("baseline", "demo")


def step_control(recipe=RECIPE):
    """The sweep's step-schedule control: the baseline's own step schedule continued after
    its last iteration (what the fine-tune would do without the switch to poly)."""
    baseline = recipe["baseline"]
    return {"base_lr": baseline["base_lr"], "gamma": baseline["solver"]["gamma"],
            "stepsize": baseline["solver"]["stepsize"], "done": baseline["iterations"]}


def recipe_id(recipe=RECIPE):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def init_weights(recipe=RECIPE):
    """The baseline's initial weights (weights/demo/), checked against the recipe's sha256."""
    path = os.path.join(DEMO_WEIGHTS_DIR, recipe["init"]["weights"])
    if not os.path.isfile(path) or file_digest(path) != recipe["init"]["sha256"]:
        raise ToolkitError(f"the demo baseline's initial weights {path} are missing or not "
                           f"the recipe's (sha256 {recipe['init']['sha256'][:12]}...); restore "
                           "them with git checkout weights/demo")
    return path


def weights_files(weights_dir=DEMO_WEIGHTS_DIR, baseline="demo"):
    """(caffemodel, recipe file) of the baseline ``baseline`` (a key of BASELINES) kept in
    ``weights_dir``."""
    names = BASELINES[baseline]
    return (os.path.join(weights_dir, names["weights"]),
            os.path.join(weights_dir, names["recipe_file"]))


def committed_baseline(recipe=RECIPE, weights_dir=DEMO_WEIGHTS_DIR, baseline="demo"):
    """The metadata of the model ``baseline`` in ``weights_dir`` when ``recipe`` made it,
    else None."""
    weights, recipe_file = weights_files(weights_dir, baseline)
    if not (os.path.isfile(weights) and os.path.isfile(recipe_file)):
        return None
    with open(recipe_file) as f:
        meta = json.load(f)
    if meta.get("recipe_id") != recipe_id(recipe) or meta.get("sha256") != file_digest(weights):
        return None
    return meta


def export_baseline(weights, losses, metrics, seconds, train_metrics=None, recipe=RECIPE,
                    weights_dir=DEMO_WEIGHTS_DIR, baseline="demo"):
    """Commit-ready copy of a freshly trained baseline with its recipe (into ``weights_dir``,
    weights/demo/ by default, under the names of BASELINES[baseline]). ``train_metrics``: its
    evaluation on training images, which lies close to val's when the net did not memorise
    them."""
    target, recipe_file = weights_files(weights_dir, baseline)
    os.makedirs(weights_dir, exist_ok=True)
    with files.atomic_path(target) as tmp:
        shutil.copyfile(weights, tmp)
    meta = {"recipe": recipe, "recipe_id": recipe_id(recipe), "sha256": file_digest(target),
            "val_mean_iou": metrics["mean_iou"], "val_class_iou": metrics["class_iou"],
            "val_images": metrics.get("num_images"), "train_seconds": round(seconds),
            "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None,
            "made_by": "python tools/demo.py --retrain --export"}
    if train_metrics:
        meta.update(train_mean_iou=train_metrics["mean_iou"],
                    train_images=train_metrics.get("num_images"))
    files.write_json(recipe_file, meta)
    return meta


def demo_model_files(work_dir, recipe=RECIPE):
    """(deploy prototxt, test prototxt) of the demo net, written into work_dir."""
    size, net = recipe["data"]["size"], recipe["net"]
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
