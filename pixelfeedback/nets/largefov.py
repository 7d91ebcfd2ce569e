"""The one definition of DeepLab-LargeFOV (VGG-16) and its solvers, built with caffe.NetSpec.

Layer and blob names follow the published caffemodels (SPEC section 2), so ``copy_from``
loads them; DeepLab's ``hole`` is ``dilation`` here, and its ImageSegData/Interp layers
are the Python layers ``python_layers.seg_data.ImageSegData``, ``python_layers.interp``
``LabelShrink`` and ``Zoom``. ``width_div`` divides every channel count (fc8 keeps
``num_classes``) for fast tests and from-scratch runs at reduced width.

Builders return ``caffe_pb2.NetParameter`` / ``SolverParameter`` (``str()`` gives the
prototxt text). ``pixelfeedback.nets.prototxt`` writes the checked-in ``prototxt/`` files,
``write_experiment`` one run folder of a sweep. Paths written into nets and solvers are
relative to the repository root (``caffe train`` runs there); paths outside the
repository stay absolute.
"""
import collections
import json
import os

from pixelfeedback.nets.netspec import EXPERIMENT_HEADER, netspec, solver_parameter, write_net
from pixelfeedback.paths import repo_relative
from python_layers import ToolkitError, template_similarity, voc_io



# The nets' losses: softmax alone (the control, the baseline) or with a template loss (the
# four of Table 3.1 and Eq. 3.1 as printed); prototxt/ holds softmax and Table 3.1's four.
TEMPLATE_LOSSES = template_similarity.ALL_LOSS_NAMES
LOSSES = ("softmax",) + TEMPLATE_LOSSES
TABLE31_LOSSES = ("softmax",) + template_similarity.LOSS_NAMES
# The template term's normalisation (SPEC section 3): its values and default are the
# layer's (python_layers.template_similarity.NORMALIZATIONS); "none" is Algorithm 3.
DEFAULT_NORMALIZE = template_similarity.DEFAULT_PARAMS["normalize"]
STAGES = ("finetune", "baseline")
DEFAULT_DATA_ROOT = "data/VOCdevkit/VOC2012"
# The two training recipes: each setting's default is defined here once (the sweep's flags,
# tools/make_prototxt.py and the builders below read them).
Recipe = collections.namedtuple("Recipe", ["list_file", "batch_size", "crop", "lr_policy",
                                           "base_lr", "gamma", "stepsize", "power",
                                           "iterations"])
# The thesis's fine-tune (section 3.4): poly from 1e-4 at batch 10 on VOC 2012 train
# (1,464 images: the thesis's "train" of 1456 images is ambiguous with train_aug, docs/voc.md);
# the thesis gives no iteration count: 2000 is this project's choice (SPEC section 3).
FINETUNE = Recipe("data/lists/train.txt", 10, 321, "poly", 1e-4, None, None, 0.9, 2000)
# DeepLab-LargeFOV's stage 1 from the ImageNet init (SPEC section 2): step (x0.1 every 2000)
# from 1e-3 at batch 20 on train_aug (10,582 images), 6000 iterations: the recipe of the
# thesis's baseline 0.6225 (the author's Caffe figure, "From Caffe").
STAGE1 = Recipe("data/lists/train_aug.txt", 20, 321, "step", 1e-3, 0.1, 2000, None, 6000)
DEFAULT_LIST = FINETUNE.list_file
DEFAULT_SEED = 0
SNAPSHOT_DIR = "weights/snapshots"
IGNORE_LABEL = voc_io.IGNORE_LABEL
LABEL_FACTOR = 8  # output stride of the trunk: 321 -> 41, 513 -> 65
# (name, channels at full width, pad, dilation) of the 3x3 convolutions, block by block;
# each conv has an in-place ReLU "relu" + suffix, each block ends with pool<block>.
CONV_BLOCKS = (
    (("conv1_1", 64, 1, 1), ("conv1_2", 64, 1, 1)),
    (("conv2_1", 128, 1, 1), ("conv2_2", 128, 1, 1)),
    (("conv3_1", 256, 1, 1), ("conv3_2", 256, 1, 1), ("conv3_3", 256, 1, 1)),
    (("conv4_1", 512, 1, 1), ("conv4_2", 512, 1, 1), ("conv4_3", 512, 1, 1)),
    (("conv5_1", 512, 2, 2), ("conv5_2", 512, 2, 2), ("conv5_3", 512, 2, 2)),
)
POOL_STRIDES = (2, 2, 2, 1, 1)  # pool1..pool5: MAX k3 pad 1
FC_CHANNELS = 1024
# Layer names of the trunk in order (data layer excluded), as SPEC section 2.
TRUNK_LAYERS = tuple(
    name for number, block in enumerate(CONV_BLOCKS, 1)
    for name in [n for conv in block for n in (conv[0], "relu" + conv[0][4:])] + [f"pool{number}"]
) + ("pool5a", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8_voc12")
FROZEN_IN_FINETUNE = tuple(conv[0] for block in CONV_BLOCKS for conv in block)


def _check_width_div(width_div):
    if not isinstance(width_div, int) or isinstance(width_div, bool) or width_div < 1 \
            or 64 % width_div:
        raise ToolkitError(f"width_div must be a divisor of 64 (1, 2, 4, ... 64), got {width_div!r}")


def _learning(lr_mult):
    """``param`` specs: weights at ``lr_mult`` with weight decay, bias at twice it without."""
    return [dict(lr_mult=lr_mult, decay_mult=1 if lr_mult else 0),
            dict(lr_mult=2 * lr_mult, decay_mult=0)]


def _conv(bottom, channels, kernel, pad=0, dilation=1, lr_mult=None, filler=None):
    _, L, _ = netspec()
    extra = {"dilation": dilation} if dilation > 1 else {}
    if lr_mult is not None:
        extra["param"] = _learning(lr_mult)
    return L.Convolution(bottom, num_output=channels, kernel_size=kernel, pad=pad,
                         weight_filler=filler or dict(type="msra"),
                         bias_filler=dict(type="constant", value=0), **extra)


def _trunk(n, width_div=1, num_classes=21, stage=None):
    """Add conv1_1 .. fc8_voc12 on top of ``n.data``. ``stage`` None (test/deploy nets)
    writes no learning rates; "finetune" freezes everything below fc6."""
    _, L, P = netspec()
    _check_width_div(width_div)
    if stage is not None and stage not in STAGES:
        raise ToolkitError(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
    below_fc6 = None if stage is None else (0 if stage == "finetune" else 1)
    fc_lr = None if stage is None else 1
    fc8_lr = None if stage is None else 10
    bottom = n.data
    for number, (block, stride) in enumerate(zip(CONV_BLOCKS, POOL_STRIDES), 1):
        for name, channels, pad, dilation in block:
            n[name] = _conv(bottom, channels // width_div, 3, pad, dilation, below_fc6)
            n["relu" + name[4:]] = L.ReLU(n[name], in_place=True)
            bottom = n["relu" + name[4:]]
        n[f"pool{number}"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3,
                                       stride=stride, pad=1)
        bottom = n[f"pool{number}"]
    n.pool5a = L.Pooling(bottom, pool=P.Pooling.AVE, kernel_size=3, stride=1, pad=1)
    n.fc6 = _conv(n.pool5a, FC_CHANNELS // width_div, 3, pad=12, dilation=12, lr_mult=fc_lr)
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.fc7 = _conv(n.drop6, FC_CHANNELS // width_div, 1, lr_mult=fc_lr)
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.relu7, dropout_ratio=0.5, in_place=True)
    n.fc8_voc12 = _conv(n.drop7, num_classes, 1, lr_mult=fc8_lr,
                        filler=dict(type="gaussian", std=0.01))
    return n.fc8_voc12


def data_param_str(data_root, list_file, batch_size, crop, seed=None, mirror=True,
                   shuffle=True, num_classes=21):
    """The JSON ``param_str`` of the ImageSegData layer."""
    return json.dumps({
        "root": repo_relative(data_root), "list": repo_relative(list_file),
        "batch_size": batch_size,
        "crop_size": crop, "mean": list(voc_io.DEEPLAB_MEAN), "mirror": mirror, "shuffle": shuffle,
        "seed": seed, "ignore_label": IGNORE_LABEL, "num_classes": num_classes,
    }, sort_keys=True)


def _check_loss(loss, lam):
    if loss not in LOSSES:
        raise ToolkitError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")
    if not isinstance(lam, (int, float)) or isinstance(lam, bool) or not lam >= 0:
        raise ToolkitError(f"lambda (the template loss weight) must be a number >= 0, got {lam!r}")


def label_positions_per_batch(batch_size, crop):
    """Pixels of the shrunk label per batch: the most valid pixels a batch can have, and so
    the factor between the two normalisations at the same lambda (2890 for batch 10 at
    crop 129, 16810 at crop 321)."""
    return batch_size * ((crop - 1) // LABEL_FACTOR + 1) ** 2


def voc_equivalent_lambda(lam, normalize, pixels):
    """The lambda on VOC at the thesis's scale (Algorithm 3's sum, ``normalize: none``,
    batch 10 at crop 321: 16,810 label pixels per batch) that weighs the template term as
    ``lam`` does here: on ``none`` the term grows with the label pixels per batch
    (``pixels``), so it is ``lam * pixels / 16810``; on ``valid`` it is an average over the
    valid pixels, ``lam / 16810`` of Algorithm 3's."""
    voc = label_positions_per_batch(FINETUNE.batch_size, FINETUNE.crop)
    return lam * pixels / voc if normalize == "none" else lam / voc


def _check_crop(crop):
    if not isinstance(crop, int) or crop < LABEL_FACTOR + 1 or (crop - 1) % LABEL_FACTOR:
        raise ToolkitError(f"crop size must be 8k+1 (e.g. 321, 513) so that labels shrink "
                           f"exactly by 8, got {crop!r}")


def train_net(loss="softmax", lam=0.01, data_root=DEFAULT_DATA_ROOT, list_file=DEFAULT_LIST,
              batch_size=FINETUNE.batch_size, crop=FINETUNE.crop, width_div=1, num_classes=21,
              seed=None,
              stage="finetune", mirror=True, shuffle=True, normalize=DEFAULT_NORMALIZE):
    """The training net: ImageSegData -> trunk -> fc8_voc12 -> SoftmaxWithLoss on the
    shrunk label, plus the template-similarity loss (weight ``lam``, ``normalize`` "none"
    = Algorithm 3's sum, "valid" = an average over valid pixels) for the four template
    losses. ``stage`` "finetune" trains fc6..fc8 only (thesis 3.4); "baseline" is
    DeepLab's own multipliers (1/2 everywhere, 10/20 for fc8)."""
    _check_loss(loss, lam)
    _check_crop(crop)
    caffe, L, _ = netspec()
    n = caffe.NetSpec()
    n.data, n.label = L.Python(ntop=2, python_param=dict(
        module="python_layers.seg_data", layer="ImageSegData",
        param_str=data_param_str(data_root, list_file, batch_size, crop, seed, mirror,
                                 shuffle, num_classes)))
    _trunk(n, width_div, num_classes, stage)
    n.label_shrink = L.Python(n.label, python_param=dict(
        module="python_layers.interp", layer="LabelShrink",
        param_str=json.dumps({"factor": LABEL_FACTOR})))
    n.loss = L.SoftmaxWithLoss(n.fc8_voc12, n.label_shrink,
                               loss_param=dict(ignore_label=IGNORE_LABEL))
    if loss != "softmax":
        similarity, selective = template_similarity.parse_loss_name(loss)
        n.loss_template = L.Python(
            n.fc7, n.fc8_voc12, n.label_shrink, loss_weight=float(lam), python_param=dict(
                module="python_layers.template_loss", layer="TemplateSimilarityLoss",
                param_str=template_similarity.loss_param_str(similarity, selective, normalize)))
    net = n.to_proto()
    net.name = f"DeepLab-LargeFOV-train-{experiment_name(loss, stage)}"
    return net


def test_net(width_div=1, num_classes=21, size=513):
    """The test net: Input data (1,3,size,size) -> trunk -> fc8_voc12 -> fc8_interp (x8
    bilinear zoom, 65 -> 513) -> ArgMax 'prediction'. Crop predictions to the image size."""
    _check_crop(size)
    caffe, L, _ = netspec()
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    _trunk(n, width_div, num_classes)
    n.fc8_interp = L.Python(n.fc8_voc12, python_param=dict(
        module="python_layers.interp", layer="Zoom", param_str=json.dumps({"factor": LABEL_FACTOR})))
    n.prediction = L.ArgMax(n.fc8_interp, argmax_param=dict(axis=1))
    net = n.to_proto()
    net.name = "DeepLab-LargeFOV-test"
    return net


test_net.__test__ = False  # a builder, not a pytest test, wherever it is imported


def deploy_net(width_div=1, num_classes=21, size=513):
    """The deploy net the fixation tools run: Input data -> trunk -> fc8_voc12 (scores)."""
    _check_crop(size)
    caffe, L, _ = netspec()
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    _trunk(n, width_div, num_classes)
    net = n.to_proto()
    net.name = "DeepLab-LargeFOV-deploy"
    return net


def experiment_name(loss, stage="finetune"):
    """File stem of a run: "baseline", "control" (softmax fine-tune) or the loss name."""
    if stage == "baseline":
        return "baseline" if loss == "softmax" else f"baseline_{loss}"
    return "control" if loss == "softmax" else loss


def solver(net_path, iterations=FINETUNE.iterations, base_lr=FINETUNE.base_lr, seed=None,
           snapshot=None, snapshot_prefix=None):
    """The fine-tuning solver of thesis 3.4 (``FINETUNE``): poly (power 0.9) from 1e-4,
    momentum 0.9, weight decay 5e-4, a snapshot at the end (or every ``snapshot``
    iterations)."""
    s = solver_parameter()
    s.net = repo_relative(net_path)
    s.base_lr = base_lr
    s.lr_policy = FINETUNE.lr_policy
    s.power = FINETUNE.power
    _common_solver_fields(s, iterations, seed, snapshot, snapshot_prefix)
    return s


def baseline_solver(net_path, iterations=STAGE1.iterations, base_lr=STAGE1.base_lr,
                    stepsize=STAGE1.stepsize, seed=None, snapshot=2000, snapshot_prefix=None):
    """DeepLab-LargeFOV stage 1 (``STAGE1``): step (x0.1 every 2000) from 1e-3, 6000
    iterations."""
    s = solver_parameter()
    s.net = repo_relative(net_path)
    s.base_lr = base_lr
    s.lr_policy = STAGE1.lr_policy
    s.gamma = STAGE1.gamma
    s.stepsize = stepsize
    _common_solver_fields(s, iterations, seed, snapshot, snapshot_prefix)
    return s


def continued_step_schedule(base_lr, gamma, stepsize, done, iterations):
    """Solver fields that continue a ``step`` schedule (lr = base_lr * gamma**floor(i /
    stepsize)) from its iteration ``done`` for ``iterations`` more: a ``multistep`` schedule
    starting at the rate reached by then, dropping where the original would have. The
    step-schedule control of the sweep uses it (SPEC section 3)."""
    if not (base_lr > 0 and 0 < gamma <= 1):
        raise ToolkitError(f"a step schedule needs base_lr > 0 and 0 < gamma <= 1, got "
                           f"{base_lr!r} and {gamma!r}")
    for value, what in ((stepsize, "stepsize"), (done + 1, "done + 1")):
        if not isinstance(value, int) or value < 1:
            raise ToolkitError(f"a step schedule's {what} must be an integer >= 1, got {value!r}")
    drops = done // stepsize
    return {"lr_policy": "multistep", "base_lr": base_lr * gamma ** drops, "gamma": gamma,
            "stepvalue": [k * stepsize - done for k in range(drops + 1, drops + 2 + iterations
                                                              // stepsize)
                          if k * stepsize - done < iterations]}


def _common_solver_fields(s, iterations, seed, snapshot, snapshot_prefix):
    if not isinstance(iterations, int) or iterations < 1:
        raise ToolkitError(f"iterations must be a positive integer, got {iterations!r}")
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.max_iter = iterations
    s.display = 10
    s.snapshot = min(snapshot or iterations, iterations)
    s.snapshot_prefix = repo_relative(snapshot_prefix or os.path.join(SNAPSHOT_DIR, "snapshot"))
    s.solver_mode = s.CPU  # `caffe train -gpu 0` overrides
    if seed is not None:
        s.random_seed = seed


def write_experiment(out_dir, loss, lam=0.01, stage="finetune", data_root=DEFAULT_DATA_ROOT,
                     list_file=DEFAULT_LIST, batch_size=FINETUNE.batch_size,
                     crop=FINETUNE.crop, width_div=1,
                     num_classes=21, seed=None, iterations=None, snapshot=None, base_lr=None,
                     mirror=True, shuffle=True, solver_overrides=None,
                     normalize=DEFAULT_NORMALIZE):
    """Write one run folder: ``train_<name>.prototxt`` and ``solver_<name>.prototxt``,
    with snapshots ``<out_dir>/<name>_iter_<N>.caffemodel``; returns the solver's path.

    ``loss`` "softmax" is the control (lambda unused); ``stage`` "baseline" uses DeepLab's
    stage-1 step solver (6000 iterations by default) instead of the poly fine-tune (2000).
    ``normalize`` is the template term's normalisation (``train_net``).
    ``base_lr`` overrides the solver's learning rate; ``solver_overrides`` sets any other
    SolverParameter fields (e.g. {"type": "Adam", "lr_policy": "poly", "power": 0.9} for
    training from scratch, as the synthetic demo does).
    """
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    name = experiment_name(loss, stage)
    net_path = os.path.join(out_dir, f"train_{name}.prototxt")
    solver_path = os.path.join(out_dir, f"solver_{name}.prototxt")
    net = train_net(loss, lam, data_root, list_file, batch_size, crop, width_div, num_classes,
                    seed, stage, mirror, shuffle, normalize)
    options = dict(seed=seed, snapshot=snapshot, snapshot_prefix=os.path.join(out_dir, name))
    if base_lr is not None:
        options["base_lr"] = base_lr
    if stage == "baseline":
        s = baseline_solver(net_path, STAGE1.iterations if iterations is None else iterations,
                            **options)
    else:
        s = solver(net_path, FINETUNE.iterations if iterations is None else iterations,
                   **options)
    for field, value in (solver_overrides or {}).items():
        if isinstance(value, (list, tuple)):
            getattr(s, field)[:] = value
        else:
            setattr(s, field, value)
    if s.lr_policy != "step":
        s.ClearField("stepsize")
        if s.lr_policy != "multistep":
            s.ClearField("gamma")
    write_net(net, net_path, EXPERIMENT_HEADER)
    write_net(s, solver_path, EXPERIMENT_HEADER)
    return solver_path
