"""The Table 3.1 sweep: fine-tune DeepLab-LargeFOV with each template-similarity loss and
weight (lambda), plus the control (the same fine-tune with the softmax loss alone), over
several seeds; evaluate each on val; tabulate beside the thesis's numbers.

Every run is `caffe train` on the command line with a generated solver
(pixelfeedback.training), then the evaluation protocol (pixelfeedback.evaluation). Each
finished run writes one result file atomically (<out>/results/<run>.json); a rerun skips
finished runs, and an interrupted training resumes from its last solver snapshot; once a
run's training finished, only its newest ``keep_snapshots`` snapshots stay (the final
weights always).

Everything is checked before the first run trains (``SweepConfig.check``): the settings,
the list files and every image and label they name, the initial weights and the disk the
snapshots need, so a bad argument fails in seconds, not after hours of training.

The table (Markdown and CSV) shows, per cell, the mean and 95 % confidence interval over
seeds and the difference to the control. The thesis had no control run (its arXiv record's
comment: "Update: Further experiments showed minimal benefits."); one explanation the control
tests, ours: the fine-tune also switches to the poly schedule, which alone took LargeFOV from
62.25 to 65.88 (the author's PyTorch DeepLab readme, "From Caffe"). So a gain counts only
against the control. A loss run and the control run of the same seed start from the same
weights and see the same data order, so the comparison is paired
(metrics.paired_difference): a cell counts as a gain only where its paired 95 % interval
lies above zero.
"""
import argparse
import collections
import contextlib
import csv
import fcntl
import glob
import hashlib
import io
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from pixelfeedback import cli, evaluation, files, metrics, reports
from pixelfeedback.data_lists import check_list
from pixelfeedback.messages import note
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.loading import check_gpu
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.runfolder import RunFolder
from pixelfeedback.training import (die_with_parent, final_weights, parse_losses,
                                    prune_snapshots, resumed_from, train, training_seconds,
                                    weights_problem)
from python_layers import ToolkitError
from python_layers.template_similarity import LOSS_NAMES as LOSSES

LAMBDAS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


CONTROL = "control"


CONTROL_STEP = "control_step"  # the baseline's step schedule continued, lambda 0


BASELINE = "baseline"  # DeepLab's stage-1 training (optional), the fine-tunes' start


# Table 3.1 of the thesis (VOC 2012 val mIoU, before CRF) and its baseline.
THESIS_BASELINE = 0.6225


THESIS_TABLE = {
    "correlation": (0.6314, 0.6285, 0.6252, 0.5977, 0.5560, 0.3253),
    "cosine": (0.6331, 0.6306, 0.6321, 0.6198, 0.6086, 0.5996),
    "selective_correlation": (0.62645, 0.32536, 0.32535, 0.32535, 0.32535, 0.32535),
    "selective_cosine": (0.63324, 0.63767, 0.63104, 0.61689, 0.60718, 0.59921),
}


LOSS_TITLES = {
    "correlation": "correlation", "cosine": "cosine",
    "selective_correlation": "selective correlation", "selective_cosine": "selective cosine",
    CONTROL: "control (softmax only)", BASELINE: "stage-1 baseline (before fine-tuning)",
    CONTROL_STEP: "control, step schedule continued",
}


# DeepLab-LargeFOV's stage-1 schedule (SPEC section 2): what --step-control continues.
STAGE1_STEP_SCHEDULE = {"base_lr": 1e-3, "gamma": 0.1, "stepsize": 2000}


Run = collections.namedtuple("Run", ["loss", "lam", "seed"])


class SweepConfig(object):
    """Everything a sweep needs; defaults are the thesis's fine-tuning (SPEC section 3)."""

    def __init__(self, out="runs/table31", data_root="data/VOCdevkit/VOC2012",
                 train_list="data/lists/train.txt", val_list="data/lists/val.txt",
                 init_weights="weights/train2_iter_8000.caffemodel",
                 losses=LOSSES, lambdas=LAMBDAS, seeds=(0,), iterations=2000,
                 batch_size=10, crop=321, test_size=513, width_div=1, num_classes=21,
                 gpu=None, snapshot_every=None, progress=True, init_trained_on=None,
                 base_lr=None, baseline_from=None, baseline_list=None,
                 baseline_iterations=6000, class_names=None, restart=False,
                 keep_snapshots=2, step_control=None, shard=None, devices=None,
                 normalize=largefov.DEFAULT_NORMALIZE, control_seeds=None):
        self.out = os.path.abspath(out)
        self.data_root = os.path.abspath(data_root)
        self.train_list = os.path.abspath(train_list)
        self.val_list = os.path.abspath(val_list)
        self.init_weights = os.path.abspath(init_weights)
        self.losses = tuple(losses)
        self.lambdas = tuple(float(x) for x in lambdas)
        self.seeds = tuple(int(s) for s in seeds)
        # The controls' seeds when not ``seeds`` (``control_seed_list``): more than the
        # losses' when a sequential rule adds seeds to loss cells later (``run_sequential``).
        self.control_seeds = tuple(int(s) for s in control_seeds) if control_seeds else None
        # The template term's normalisation (SPEC section 3): "none" = Algorithm 3's sum.
        self.normalize = normalize
        self.iterations = int(iterations)
        self.batch_size = int(batch_size)
        self.crop = int(crop)
        self.test_size = int(test_size)
        self.width_div = int(width_div)
        self.num_classes = int(num_classes)
        self.gpu = gpu
        self.snapshot_every = snapshot_every or max(self.iterations // 4, 1)
        self.progress = progress
        self.init_trained_on = init_trained_on
        self.base_lr = base_lr  # None: the thesis's 1e-4
        self.class_names = list(class_names) if class_names else None
        self.restart = bool(restart)
        # Optional stage 1: train the baseline from an ImageNet init (vgg16_20M) on
        # baseline_list (train_aug) and fine-tune from it instead of init_weights.
        self.baseline_from = os.path.abspath(baseline_from) if baseline_from else None
        self.baseline_list = os.path.abspath(baseline_list or train_list)
        self.baseline_iterations = int(baseline_iterations)
        self.keep_snapshots = keep_snapshots  # newest snapshots kept per run (final: always)
        # The step-schedule control: {"base_lr", "gamma", "stepsize", "done"} of the
        # baseline's step schedule, continued from its iteration ``done`` (None: no such run).
        self.step_control = dict(step_control) if step_control else None
        # (i, n): this process does the i-th of n interleaved parts of the runs (1-based).
        self.shard = tuple(shard) if shard else None
        # Parallel workers, one per device (GPU id; None = CPU), each taking the next run.
        self.devices = list(devices) if devices else None
        for loss in self.losses:
            if loss not in LOSSES:
                raise ToolkitError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")

    def check(self):
        """Check everything the sweep needs before anything trains or is written: the
        settings, the GPU (`caffe train -gpu` aborts a CPU-only build), the list files and
        every image and label they name, the initial weights (they load into the net to be
        trained and are finite) and the disk the snapshots need. Raises ToolkitError naming
        the setting's flag and what to do. ``run_sweep`` calls it first."""
        check_settings(self)
        if self.gpu is not None:
            check_gpu(self.gpu, "--gpu")
        for device in self.devices or []:
            if device is not None:
                check_gpu(device, "--gpus")
        check_files(self)
        check_disk(self)
        check_init_weights(self)

    def fingerprint(self):
        """The settings that decide each run's result: the run folder refuses others. Which
        losses, lambdas and seeds are run is not among them, so a sweep can be extended."""
        return {
            "data_root": RunFolder.path(self.data_root),
            "train_list": RunFolder.path(self.train_list),
            "val_list": RunFolder.path(self.val_list),
            "init_weights": RunFolder.path(self.init_weights),
            "iterations": self.iterations, "batch_size": self.batch_size, "crop": self.crop,
            "test_size": self.test_size, "width_div": self.width_div,
            "num_classes": self.num_classes, "base_lr": self.base_lr,
            "normalize": self.normalize,
            "baseline_from": RunFolder.path(self.baseline_from) if self.baseline_from else None,
            "baseline_list": RunFolder.path(self.baseline_list) if self.baseline_from else None,
            "baseline_iterations": self.baseline_iterations if self.baseline_from else None,
            **({"step_control": self.step_control} if self.step_control else {}),
        }

    def control_seed_list(self):
        """The seeds of the controls: ``control_seeds``, else ``seeds``."""
        return self.control_seeds or self.seeds

    def runs(self):
        """The optional baseline, the control (and the step control) for every seed, then
        every loss x lambda x seed."""
        planned = [Run(BASELINE, 0.0, self.seeds[0])] if self.baseline_from else []
        planned += [Run(CONTROL, 0.0, seed) for seed in self.control_seed_list()]
        if self.step_control:
            planned += [Run(CONTROL_STEP, 0.0, seed) for seed in self.control_seed_list()]
        planned += [Run(loss, lam, seed) for loss in self.losses for lam in self.lambdas
                    for seed in self.seeds]
        return planned

    def shard_runs(self):
        """The runs this process takes on: all, or its shard's (every n-th fine-tune; the
        baseline, which every fine-tune needs, belongs to every shard)."""
        planned = self.runs()
        if not self.shard:
            return planned
        index, count = self.shard
        tunes = [run for run in planned if run.loss != BASELINE]
        return [run for run in planned if run.loss == BASELINE] + tunes[index - 1::count]


# ----------------------------------------------------------------------------- checks first


def comma_list(item_type, what):
    """argparse type factory: a non-empty comma-separated list of ``item_type`` values (a
    ``pixelfeedback.cli`` type such as ``cli.nonnegative_float``), none twice.

    ``comma_list(cli.nonnegative_int, "integers >= 0")("0,x")`` says
    "must be a comma-separated list of integers >= 0, got '0,x' ('x' is not one)".
    """
    requirement = f"must be a comma-separated list of {what}"

    def parse(text):
        parts = [part.strip() for part in str(text).split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"{requirement}, got {text!r} (none given)")
        values = []
        for part in parts:
            try:
                value = item_type(part)
            except (argparse.ArgumentTypeError, TypeError, ValueError):
                raise argparse.ArgumentTypeError(
                    f"{requirement}, got {text!r} ({part!r} is not one)") from None
            if value in values:
                raise argparse.ArgumentTypeError(f"{requirement}, got {text!r} ({part!r} twice)")
            values.append(value)
        return values

    parse.__name__ = "comma_list"
    return parse


lambda_list = comma_list(cli.nonnegative_float, "finite numbers >= 0 (loss weights)")
seed_list = comma_list(cli.nonnegative_int, "integers >= 0 (seeds)")
gpu_list = comma_list(cli.nonnegative_int, "GPU ids (integers >= 0)")


def shard_spec(text):
    """argparse type: ``I/N`` (1 <= I <= N) -> (I, N)."""
    parts = str(text).split("/")
    try:
        index, count = (int(part) for part in parts)
    except ValueError:
        index = count = None
    if index is None or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"must be I/N, this process's part I of N (1 <= I <= N), e.g. 2/4; got {text!r}")
    return index, count


def step_schedule(text):
    """argparse type: ``BASE_LR,GAMMA,STEPSIZE,DONE`` of a step schedule -> the dict the
    sweep's step control takes (checked further by ``check_settings``); ``stage1`` (what
    ``--step-control`` alone gives: argparse passes its const through this too) stays
    ``"stage1"``, DeepLab's stage-1 schedule continued from the baseline's iterations."""
    if text == "stage1":
        return "stage1"
    parts = [part.strip() for part in str(text).split(",")]
    try:
        base_lr, gamma = cli.finite_float(parts[0]), cli.finite_float(parts[1])
        stepsize, done = cli.positive_int(parts[2]), cli.nonnegative_int(parts[3])
        if len(parts) != 4:
            raise ValueError
    except (argparse.ArgumentTypeError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"must be BASE_LR,GAMMA,STEPSIZE,DONE (the baseline's step schedule and the "
            f"iteration it stopped at), e.g. 0.001,0.1,2000,6000; got {text!r}") from None
    return {"base_lr": base_lr, "gamma": gamma, "stepsize": stepsize, "done": done}


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _int_at_least(value, minimum, what):
    if not _is_int(value) or value < minimum:
        raise ToolkitError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _no_repeats(values, what):
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise ToolkitError(f"{what} names {seen[0]!r} twice; give each once")


def _check_8k1(value, what, example):
    if not _is_int(value) or value < 9 or (value - 1) % 8:
        raise ToolkitError(f"{what} must be 8k+1 ({example}), got {value!r}")


def check_settings(cfg):
    """The numbers and names of a sweep (no file is read): ToolkitError naming the flag."""
    if not cfg.losses:
        raise ToolkitError(f"no loss to run (--losses is empty); name one or more of "
                           f"{', '.join(LOSSES)}")
    _no_repeats(cfg.losses, "--losses")
    if not cfg.lambdas:
        raise ToolkitError("no lambda to run (--lambdas is empty); give one or more loss "
                           "weights >= 0, e.g. 0.01,0.1")
    for lam in cfg.lambdas:
        if not math.isfinite(lam) or lam < 0:
            raise ToolkitError(f"every lambda (--lambdas) must be a finite number >= 0, "
                               f"got {lam!r}")
    _no_repeats(cfg.lambdas, "--lambdas")
    if not cfg.seeds:
        raise ToolkitError("no seed to run (--seeds is empty); give one or more integers "
                           ">= 0, e.g. 0,1,2")
    for seed in cfg.seeds:  # Caffe reads random_seed -1 as "unseeded"
        _int_at_least(seed, 0, "every seed (--seeds)")
    _no_repeats(cfg.seeds, "--seeds")
    for seed in cfg.control_seed_list():
        _int_at_least(seed, 0, "every control seed")
    _no_repeats(cfg.control_seed_list(), "the control seeds")
    largefov.check_normalize(cfg.normalize)
    _int_at_least(cfg.iterations, 1, "the fine-tuning iterations (--iterations)")
    if not _is_int(cfg.snapshot_every) or not 1 <= cfg.snapshot_every <= cfg.iterations:
        raise ToolkitError(f"the snapshot interval (--snapshot-every) must be an integer "
                           f"between 1 and the iterations ({cfg.iterations}), got "
                           f"{cfg.snapshot_every!r}")
    _int_at_least(cfg.keep_snapshots, 0, "the snapshots kept per run (--keep-snapshots)")
    _int_at_least(cfg.batch_size, 1, "the batch size (--batch-size)")
    _int_at_least(cfg.num_classes, 2, "the number of classes (--num-classes)")
    if not _is_int(cfg.width_div) or cfg.width_div < 1 or 64 % cfg.width_div:
        raise ToolkitError(f"the width divisor (--width-div) must divide 64 (1, 2, 4, ... 64), "
                           f"got {cfg.width_div!r}")
    _check_8k1(cfg.crop, "the training crop (--crop)",
               "e.g. 321, so that the labels shrink exactly by the net's stride 8")
    _check_8k1(cfg.test_size, "the test size (--test-size)",
               "e.g. 513, which holds VOC's images of at most 500x500")
    if cfg.baseline_from:
        _int_at_least(cfg.baseline_iterations, 1,
                      "the stage-1 baseline's iterations (--baseline-iterations)")
    if cfg.step_control:
        schedule = cfg.step_control
        if sorted(schedule) != ["base_lr", "done", "gamma", "stepsize"]:
            raise ToolkitError(f"the step control (--step-control) needs base_lr, gamma, "
                               f"stepsize and done, got {sorted(schedule)}")
        largefov.continued_step_schedule(iterations=cfg.iterations, **schedule)
    if cfg.shard:
        index, count = cfg.shard
        if not (_is_int(index) and _is_int(count) and 1 <= index <= count):
            raise ToolkitError(f"the shard (--shard) must be I/N with 1 <= I <= N, got "
                               f"{index}/{count}")
    if cfg.devices is not None:
        if cfg.gpu is not None:
            raise ToolkitError("give either --gpu (one GPU) or --gpus (one worker per GPU), "
                               "not both")
        if not cfg.devices:
            raise ToolkitError("--gpus is empty; give GPU ids, e.g. 0,1")
        for device in cfg.devices:
            if device is not None:
                _int_at_least(device, 0, "every GPU id (--gpus)")
        _no_repeats([d for d in cfg.devices if d is not None], "--gpus")


def check_files(cfg):
    """The initial weights, the list files and every image and label they name."""
    if cfg.baseline_from:
        if not os.path.isfile(cfg.baseline_from):
            raise ToolkitError(f"stage-1 initial weights (--baseline-from) not found: "
                               f"{cfg.baseline_from} (python weights/fetch.py largefov-init "
                               "fetches vgg16_20M.caffemodel)")
    elif not os.path.isfile(cfg.init_weights):
        raise ToolkitError(f"initial weights not found: {cfg.init_weights} "
                           "(python weights/fetch.py largefov, or pass --init-weights)")
    sizes = {}  # (image, label) -> image size, so a list given twice is read once
    check_list(cfg.train_list, cfg.data_root, "--train-list", sizes=sizes,
               progress=cfg.progress)
    check_list(cfg.val_list, cfg.data_root, "--val-list", sizes=sizes, max_size=cfg.test_size,
               max_size_name="the test size", size_flag="--test-size", unique_names=True,
               progress=cfg.progress)
    if cfg.baseline_from:
        check_list(cfg.baseline_list, cfg.data_root, "--baseline-list", sizes=sizes,
                   progress=cfg.progress)


def check_init_weights(cfg):
    """The initial weights load into the net the sweep trains (layer by layer, shapes as
    ``--width-div`` and ``--num-classes`` make them) and hold no NaN or inf, so that broken
    or mismatched weights are refused before the first `caffe train`. The stage-1
    baseline's ImageNet init (``--baseline-from``) has no fc8 of ours: only the layers it
    has are checked."""
    import tempfile

    from pixelfeedback.nets.loading import load_net
    from pixelfeedback.nets.weights import check_finite_params

    path = cfg.baseline_from or cfg.init_weights
    flag = "--baseline-from" if cfg.baseline_from else "--init-weights"
    with tempfile.TemporaryDirectory(prefix="sweep-check-") as tmp:
        deploy = os.path.join(tmp, "deploy.prototxt")
        # parameter shapes do not depend on the input size: a small one builds fast
        write_net(largefov.deploy_net(cfg.width_div, cfg.num_classes, size=65), deploy)
        try:
            net = load_net(deploy, path, require_all=not cfg.baseline_from)
        except ToolkitError as exc:
            raise ToolkitError(
                f"the initial weights ({flag}) do not fit the net this sweep trains "
                f"(--width-div {cfg.width_div}, --num-classes {cfg.num_classes}): {exc}. Pass "
                f"the --width-div and --num-classes they were trained with, or other "
                f"weights") from None
    try:
        check_finite_params(net, path)
    except ToolkitError as exc:
        raise ToolkitError(f"the initial weights ({flag}) are unusable: {exc}") from None


def baseline_snapshot_every(cfg):
    """The stage-1 baseline snapshots four times, so an interrupted one resumes."""
    return max(cfg.baseline_iterations // 4, 1)


def snapshot_counts(cfg, run):
    """(snapshots written, snapshots kept) of one run: Caffe snapshots every interval and
    at the end."""
    if run.loss == BASELINE:
        iterations, every = cfg.baseline_iterations, baseline_snapshot_every(cfg)
    else:
        iterations, every = cfg.iterations, cfg.snapshot_every
    written = -(-iterations // every)
    return written, min(written, cfg.keep_snapshots)


def disk_needed(cfg):
    """Bytes the snapshots of the runs still to do need at most, and how it is made up.

    A snapshot is the net's .caffemodel (about the initial weights' file) plus its
    .solverstate (the momentum history: as much again). A finished run keeps its newest
    ``keep_snapshots`` (at least the final .caffemodel); the run in training holds all it
    wrote until it finishes."""
    weights = cfg.init_weights if not cfg.baseline_from else cfg.baseline_from
    weights_bytes = os.path.getsize(weights)
    snapshot_bytes = 2 * weights_bytes
    pending = [run for run in cfg.shard_runs() if cfg.restart or not os.path.exists(
        os.path.join(cfg.out, "results", run_name(run) + ".json"))]
    kept, peak = 0, 0
    for run in pending:
        written, keep = snapshot_counts(cfg, run)
        kept_bytes = max(keep * snapshot_bytes, weights_bytes)
        kept += kept_bytes
        peak = max(peak, written * snapshot_bytes - kept_bytes)
    trainers = len(cfg.devices) if cfg.devices else 1  # each holds its run's snapshots
    return kept + trainers * peak, dict(runs=len(pending), snapshot_bytes=snapshot_bytes)


def _existing_folder(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def human_bytes(count):
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000.0


def check_disk(cfg):
    """The snapshots' disk need against the free space of --out's filesystem."""
    need, parts = disk_needed(cfg)
    free = shutil.disk_usage(_existing_folder(cfg.out)).free
    if need > free:
        raise ToolkitError(
            f"the sweep's snapshots need about {human_bytes(need)} but the filesystem of "
            f"{cfg.out} has {human_bytes(free)} free ({parts['runs']} runs to do, "
            f"{human_bytes(parts['snapshot_bytes'])} a snapshot (.caffemodel and .solverstate), "
            f"{cfg.keep_snapshots} kept per run plus those of the run in training); free some "
            "space, pass another --out, or keep fewer (--keep-snapshots) or write fewer "
            "(--snapshot-every)")
    return need, free


def run_name(run):
    if run.loss == BASELINE:
        return "baseline"
    if run.loss in (CONTROL, CONTROL_STEP):
        return f"{run.loss}_seed{run.seed}"
    return f"{run.loss}_lam{run.lam:g}_seed{run.seed}"


def write_test_net(cfg, path):
    write_net(largefov.test_net(width_div=cfg.width_div, num_classes=cfg.num_classes,
                                size=cfg.test_size), path)
    return path


def evaluate_weights(cfg, weights, out_dir, test_net):
    """Evaluate ``weights`` on the val list into the run folder ``out_dir`` with the test
    net written at ``test_net``."""
    write_test_net(cfg, test_net)
    return evaluation.evaluate(
        (test_net, weights), cfg.val_list, cfg.data_root, out_dir,
        num_classes=cfg.num_classes, size=cfg.test_size,
        progress="transient" if cfg.progress else False, gpu=cfg.gpu,
        class_names=cfg.class_names)


def write_solver(cfg, run, run_dir, init):
    """The net and solver of one run in run_dir; returns (solver path, iterations)."""
    common = dict(data_root=cfg.data_root, batch_size=cfg.batch_size, crop=cfg.crop,
                  width_div=cfg.width_div, num_classes=cfg.num_classes, seed=run.seed)
    if run.loss == BASELINE:
        return largefov.write_experiment(
            run_dir, loss="softmax", stage="baseline", list_file=cfg.baseline_list,
            iterations=cfg.baseline_iterations, snapshot=baseline_snapshot_every(cfg),
            **common), cfg.baseline_iterations
    overrides = None
    if run.loss == CONTROL_STEP:
        overrides = largefov.continued_step_schedule(iterations=cfg.iterations,
                                                     **cfg.step_control)
    return largefov.write_experiment(
        run_dir, loss="softmax" if run.loss in (CONTROL, CONTROL_STEP) else run.loss,
        lam=run.lam, list_file=cfg.train_list, iterations=cfg.iterations,
        snapshot=cfg.snapshot_every, base_lr=cfg.base_lr, solver_overrides=overrides,
        normalize=cfg.normalize, **common), cfg.iterations


def result_file(run):
    return os.path.join("results", run_name(run) + ".json")


def run_one(cfg, folder, run):
    """Fine-tune and evaluate one run in the sweep's run folder ``folder``; returns its
    result record (and writes it), or None while another process works on the run (its
    folder ``runs/<run>`` is locked by the one training it)."""
    name = run_name(run)
    if folder.has(result_file(run)):
        return folder.read_json(result_file(run))
    run_folder = folder.try_child(os.path.join("runs", name), {"run": name},
                                  what="Table 3.1 run")
    if run_folder is None:
        return None
    with run_folder:
        if folder.has(result_file(run)):  # finished while we waited for the lock
            return folder.read_json(result_file(run))
        return _train_and_evaluate(cfg, folder, run, run_folder.root)


def _train_and_evaluate(cfg, folder, run, run_dir):
    started = time.time()
    init = cfg.baseline_from if run.loss == BASELINE else fine_tune_init(cfg, folder)
    solver_path, iterations = write_solver(cfg, run, run_dir, init)
    log_path = os.path.join(run_dir, "train.log")
    if not any(weights_problem(path) is None
               for path in glob.glob(os.path.join(run_dir, f"*_iter_{iterations}.caffemodel"))):
        # not trained yet, or its final weights are unusable (a kill mid-write): resume
        train(solver_path, run_dir, init, cfg.gpu, progress=cfg.progress,
              description=run_name(run))
    # else: trained before an interrupted evaluation, which resumes on its own
    with open(log_path) as f:
        log_text = f.read()
    losses = parse_losses(log_text)
    weights = final_weights(run_dir, iterations)
    prune_snapshots(run_dir, cfg.keep_snapshots, iterations)
    evaluated = evaluate_weights(cfg, weights, os.path.join(run_dir, "eval"),
                                 os.path.join(run_dir, "test.prototxt"))
    resumes = resumed_from(log_text)
    record = {
        "run": run_name(run), "loss": run.loss, "lambda": run.lam, "seed": run.seed,
        "mean_iou": evaluated["mean_iou"], "pixel_accuracy": evaluated["pixel_accuracy"],
        "class_iou": evaluated["class_iou"], "iterations": iterations,
        "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None,
        "normalize": cfg.normalize,
        "label_pixels_per_batch": largefov.label_positions_per_batch(cfg.batch_size, cfg.crop),
        "resumed": bool(resumes), "resumed_from": resumes,
        "device": "cpu" if cfg.gpu is None else f"gpu {cfg.gpu}",
        "weights": os.path.relpath(weights, folder.root),
        "seconds": round(time.time() - started, 1),  # of the invocation that finished it
        "train_seconds": round(training_seconds(log_text), 1),  # all sessions, from the log
    }
    folder.write_json(result_file(run), record)
    return record


def fine_tune_init(cfg, folder):
    """The fine-tunes start from the stage-1 baseline when the sweep trains one."""
    if not cfg.baseline_from:
        return cfg.init_weights
    return folder.file(folder.read_json(result_file(Run(BASELINE, 0.0, cfg.seeds[0])))
                       ["weights"])


PLANS_DIR = "plans"


def record_plan(folder, cfg):
    """Note the runs this sweep plans (all shards', one file per distinct plan), so that a
    table rebuilt later counts what is unfinished against every sweep the folder saw."""
    names = [run_name(run) for run in cfg.runs()]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    rel = os.path.join(PLANS_DIR, digest + ".json")
    if not folder.has(rel):
        folder.write_json(rel, names)


def planned_run_names(out):
    """Every run any sweep into ``out`` planned (``record_plan``), in first-seen order."""
    names = []
    for path in sorted(glob.glob(os.path.join(out, PLANS_DIR, "*.json"))):
        with open(path) as f:
            names += [name for name in json.load(f) if name not in names]
    return names


def load_results(out):
    results = []
    for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    return results


def open_sweep_folder(cfg, restart=False):
    """The sweep's run folder, shared by the processes of these settings (shards, GPU
    workers, a second sweep that helps): each takes the runs no one holds."""
    return RunFolder(cfg.out, cfg.fingerprint(), what="Table 3.1 sweep", restart=restart,
                     shared=True)


def run_sweep(cfg, on_result=None):
    """Run every run of this process (all, or its ``cfg.shard``) not finished yet; returns
    all result records of the folder.

    ``cfg.out`` is a shared run folder (pixelfeedback.runfolder): other settings are
    refused unless ``cfg.restart``; processes of the same settings split the runs, each
    run locked by the one training it. Everything is checked first (``cfg.check()``): a
    bad setting, file or image fails before any run trains and before anything is written.
    With ``cfg.devices``, one worker process per device takes the next free run."""
    cfg.check()
    with open_sweep_folder(cfg, cfg.restart) as folder:
        if cfg.init_trained_on and "voc2012_val" in cfg.init_trained_on:
            warn_val_contamination(cfg.init_weights)
        record_plan(folder, cfg)
        if cfg.devices:
            busy = _run_on_devices(cfg, folder, on_result)
        else:
            busy = _run_planned(cfg, folder, on_result)
        # a run another process held may have finished since (the baseline always has)
        busy = [run for run in busy if not folder.has(result_file(run))]
        if busy:
            print(f"{len(busy)} run(s) were being trained by other processes "
                  f"({', '.join(run_name(r) for r in busy[:3])}{', ...' if len(busy) > 3 else ''}); "
                  "the table lacks them until they finish: rerun to wait for them",
                  file=sys.stderr, flush=True)
        return load_results(cfg.out)


def target_met(row, half_width, effect):
    """Whether a table row's paired comparison is precise enough: its 95 % interval is at
    most +-``half_width``, or its effect is beyond +-``effect`` with an interval that
    excludes zero (mIoU, not points)."""
    ci, diff = row["paired_ci"], row["paired_diff"]
    if not (np.isfinite(ci) and np.isfinite(diff)):
        return False
    return ci <= half_width or (abs(diff) > effect and abs(diff) > ci)


def run_sequential(cfg, more_seeds, half_width, effect):
    """The sweep with a sequential rule fixed in advance: every loss cell gets
    ``cfg.seeds``, both controls those and ``more_seeds`` (so every later pair has its
    controls); then each loss cell whose paired interval misses the target
    (``target_met``) gets ``more_seeds`` too, once. Returns (all results, the cells
    (loss, lambda) that were extended)."""
    import copy

    more_seeds = tuple(int(s) for s in more_seeds)
    control_seeds = cfg.seeds + tuple(s for s in more_seeds if s not in cfg.seeds)
    first = copy.copy(cfg)
    first.control_seeds = control_seeds
    results = run_sweep(first)
    # decided on the first seeds alone, so that a resumed sweep extends the same cells
    first_seeds = [r for r in results if r["loss"] not in LOSSES or r["seed"] in cfg.seeds]
    rows = summarize(first_seeds, cfg.losses, cfg.lambdas)
    extended = [(row["loss"], row["lam"]) for row in rows if more_seeds
                and row["loss"] in cfg.losses and not target_met(row, half_width, effect)]
    for loss in cfg.losses:
        lambdas = [lam for cell_loss, lam in extended if cell_loss == loss]
        if not lambdas:
            continue
        more = copy.copy(first)
        more.losses, more.lambdas, more.seeds, more.restart = (loss,), tuple(lambdas), \
            more_seeds, False
        if cfg.progress:
            note(f"{LOSS_TITLES[loss]} at λ {', '.join(f'{x:g}' for x in lambdas)}: the "
                 f"paired interval misses the target; adding seeds "
                 f"{', '.join(map(str, more_seeds))}")
        results = run_sweep(more)
    return results, extended


class _SweepProgress:
    """One bar for the sweep (runs finished of this process's runs) and a line per run."""

    def __init__(self, cfg, folder, runs):
        from tqdm import tqdm

        self.folder, self.runs = folder, runs
        self.seen = {run for run in runs if folder.has(result_file(run))}
        self.bar = tqdm(total=len(runs), initial=len(self.seen), desc="Table 3.1 sweep",
                        unit="run", disable=not cfg.progress, dynamic_ncols=True)

    def done(self, record):
        self.bar.write(f"{record['run']}: mean IoU {record['mean_iou']:.4f}, loss "
                       f"{reports.fmt(record['first_loss'])} -> "
                       f"{reports.fmt(record['last_loss'])}, {record['seconds']:.0f} s"
                       + (f", resumed from iteration {record['resumed_from'][-1]}"
                          if record.get("resumed") else ""), file=sys.stderr)
        self.bar.update(1)

    def poll(self):
        """Count the runs other processes finished (the parent of device workers)."""
        for run in self.runs:
            if run not in self.seen and self.folder.has(result_file(run)):
                self.seen.add(run)
                self.done(self.folder.read_json(result_file(run)))

    def close(self):
        self.bar.close()


def _run_planned(cfg, folder, on_result=None):
    """This process's runs in order; returns those other processes held."""
    runs = cfg.shard_runs()
    bar = _SweepProgress(cfg, folder, runs)
    busy = []
    try:
        for run in runs:
            if run.loss != BASELINE and cfg.baseline_from:
                _wait_for_baseline(cfg, folder)
            done = folder.has(result_file(run))
            record = run_one(cfg, folder, run)
            if record is None:
                busy.append(run)
                continue
            if not done:
                bar.seen.add(run)
                bar.done(record)
            if on_result:
                on_result(record)
    finally:
        bar.close()
    return busy


def _wait_for_baseline(cfg, folder, poll_s=5.0):
    """The fine-tunes need the baseline: train it, or wait while another process does."""
    baseline = Run(BASELINE, 0.0, cfg.seeds[0])
    waited = False
    while run_one(cfg, folder, baseline) is None:
        if not waited and cfg.progress:
            note("waiting for the stage-1 baseline, which another process is training")
        waited = True
        time.sleep(poll_s)


def _device_worker(cfg, device, parent, errors):
    """One worker process of ``--gpus``: the runs no other worker holds, on ``device``.
    It dies with the sweep process (as each of its trainers dies with it)."""
    dies_with_parent = die_with_parent(parent)
    if dies_with_parent:
        dies_with_parent()
    cfg.gpu, cfg.devices, cfg.progress = device, None, False
    try:
        with open_sweep_folder(cfg) as folder:
            _run_planned(cfg, folder)
    except ToolkitError as exc:
        errors.put(f"{'CPU' if device is None else f'GPU {device}'}: {exc}")
        sys.exit(2)


def _run_on_devices(cfg, folder, on_result):
    """One worker process per device, each taking the next run no one holds; the parent
    shows the progress. A worker's error stops nothing else and is raised at the end."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    runs = cfg.shard_runs()
    bar = _SweepProgress(cfg, folder, runs)
    workers = [context.Process(target=_device_worker, args=(cfg, device, os.getpid(), errors),
                               name=f"sweep-device-{device}", daemon=True)
               for device in cfg.devices]
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            bar.poll()
            time.sleep(1.0)
        bar.poll()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
        bar.close()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    failed = [w for w in workers if w.exitcode not in (0, 2)]
    if messages or failed:
        messages += [f"worker {w.name} stopped with exit code {w.exitcode}" for w in failed]
        raise ToolkitError("a sweep worker failed: " + "; ".join(messages))
    if on_result:
        for record in load_results(cfg.out):
            on_result(record)
    return [run for run in runs if not folder.has(result_file(run))]


def warn_val_contamination(weights):
    print(f"WARNING: {weights} is the released DeepLab-LargeFOV train2_iter_8000, which was "
          "fine-tuned on VOC 2012 train+val: its val mIoU is not a fair measurement. Train "
          "the stage-1 baseline on train_aug (prototxt/solver_baseline.prototxt) and pass "
          "it with --init-weights for numbers to compare.", file=sys.stderr, flush=True)


def welch_ci(a, b, level=0.95):
    """Mean of a - b and the half width of its Welch-t confidence interval (NaN if n<2)."""
    from scipy import stats
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    if a.size < 2 or b.size < 2:
        return diff, float("nan")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, 0.0
    dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return diff, float(stats.t.ppf((1 + level) / 2, dof) * se)


NO_PAIRS = dict(paired_n=0, paired_diff=float("nan"), paired_ci=float("nan"),
                paired_mde=float("nan"), gain="n/a")


def paired_fields(values, control):
    """The paired comparison of one cell with the control over the seeds both have
    ({seed: mean IoU} each): metrics.paired_difference of loss - control, and its verdict."""
    seeds = sorted(set(values) & set(control))
    if not seeds:
        return dict(NO_PAIRS)
    paired = metrics.paired_difference([values[s] for s in seeds], [control[s] for s in seeds])
    return dict(paired_n=paired.n, paired_diff=paired.mean, paired_ci=paired.half_width,
                paired_mde=paired.mde, gain=metrics.paired_verdict(paired))


def table_cells(results):
    """(losses, lambdas) of the loss runs among ``results``: the losses in Table 3.1's
    order, the lambdas ascending. A table built from a folder shows every finished cell,
    whatever the command line that rebuilds it names."""
    present = {(r["loss"], float(r["lambda"])) for r in results if r["loss"] in LOSSES}
    return (tuple(loss for loss in LOSSES if any(cell[0] == loss for cell in present)),
            tuple(sorted({lam for _, lam in present})))


def summarize(results, losses=None, lambdas=None):
    """Rows of the table: one per loss and lambda (and the control), with statistics: the
    mean and its CI over seeds; the difference to the control with Welch's (unpaired)
    interval; the paired difference (same seeds) with its interval, minimum detectable
    effect at 80 % power and verdict ``gain`` ("yes" only where the paired interval lies
    above zero, "worse" below it, "no", or "n/a" with fewer than two pairs). ``losses`` and
    ``lambdas`` default to every cell the results hold (``table_cells``)."""
    cells = table_cells(results)
    losses = cells[0] if losses is None else losses
    lambdas = cells[1] if lambdas is None else lambdas
    by_cell = collections.defaultdict(dict)
    for record in results:
        by_cell[(record["loss"], float(record["lambda"]))][int(record["seed"])] = \
            record["mean_iou"]
    control = by_cell.get((CONTROL, 0.0), {})
    rows = []
    baseline = list(by_cell.get((BASELINE, 0.0), {}).values())
    own = dict(NO_PAIRS, gain="")
    if baseline:
        rows.append(dict(loss=BASELINE, lam=0.0, n=len(baseline), mean=float(np.mean(baseline)),
                         ci=float("nan"), diff=float("nan"), diff_ci=float("nan"), **own,
                         thesis=THESIS_BASELINE))
    if control:
        ci = metrics.mean_ci(list(control.values()))
        rows.append(dict(loss=CONTROL, lam=0.0, n=ci.n, mean=ci.mean, ci=ci.half_width,
                         diff=0.0, diff_ci=float("nan"), **own,
                         thesis=None if baseline else THESIS_BASELINE))
    step = by_cell.get((CONTROL_STEP, 0.0))
    if step:  # its paired difference to the poly control: minus what the switch does
        rows.append(_cell_row(CONTROL_STEP, 0.0, step, control, thesis=None))
    for loss in losses:
        for column, lam in enumerate(lambdas):
            cell = by_cell.get((loss, float(lam)))
            if not cell:
                continue
            thesis = None
            if float(lam) in LAMBDAS and loss in THESIS_TABLE:
                thesis = THESIS_TABLE[loss][LAMBDAS.index(float(lam))]
            rows.append(_cell_row(loss, lam, cell, control, thesis))
    return rows


def _cell_row(loss, lam, cell, control, thesis):
    """One row compared with the control: {seed: mean IoU} each."""
    values = list(cell.values())
    ci = metrics.mean_ci(values)
    diff, diff_half = (welch_ci(values, list(control.values())) if control
                       else (float("nan"),) * 2)
    return dict(loss=loss, lam=float(lam), n=ci.n, mean=ci.mean, ci=ci.half_width, diff=diff,
                diff_ci=diff_half, **paired_fields(cell, control), thesis=thesis)


NORMALIZE_TITLES = {
    "none": "normalize none: Algorithm 3 literally, the sum over the batch's pixels divided by "
            "the classes",
    "valid": "normalize valid: also divided by the valid pixels, so the same λ is up to "
             "(pixels per batch) times weaker than Algorithm 3's",
}


def loss_scale(results, batch_size=None, crop=None):
    """The template term's scale the loss runs among ``results`` were trained at:
    {"normalize": [names], "pixels": [label pixels per batch]} (on ``none`` lambda's
    weight grows with the pixels), or None without loss runs. Records from before the
    setting was recorded were trained on ``valid``; ``batch_size`` and ``crop`` stand in
    for records that lack the pixel count."""
    loss_runs = [r for r in results if r["loss"] in LOSSES]
    if not loss_runs:
        return None
    pixels = sorted({r["label_pixels_per_batch"] for r in loss_runs
                     if r.get("label_pixels_per_batch")})
    if not pixels and batch_size and crop:
        pixels = [largefov.label_positions_per_batch(batch_size, crop)]
    return {"normalize": sorted({r.get("normalize", "valid") for r in loss_runs}),
            "pixels": pixels}


def table_markdown(rows, title="Table 3.1", scale=None):
    """The table as Markdown: our mean +- CI, the difference to the control (Welch and
    paired), the minimum detectable effect, whether the cell is a gain, the thesis.
    ``scale`` (``loss_scale``) goes into the title and a line under it."""
    heading = title
    if scale:
        heading += " (normalize " + "/".join(scale["normalize"]) + "".join(
            ", ≤ " + " or ".join(f"{p:,}" for p in scale["pixels"]) + " label pixels per batch"
            for _ in scale["pixels"][:1]) + ")"
    lines = [f"### {heading}: val mean IoU, mean ± 95 % CI over seeds", ""]
    if scale:
        lines += ["Template loss: " + "; ".join(NORMALIZE_TITLES.get(n, f"normalize {n}")
                                                for n in scale["normalize"]) + ".", ""]
    lines += [
             "| loss | λ | seeds | mean IoU | ± CI | Δ vs control | ± Welch CI | pairs "
             "| paired Δ ± CI | MDE | gain? | thesis |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        own = row["loss"] in (CONTROL, BASELINE)
        paired = "—" if own else "{} ± {}".format(reports.fmt(row["paired_diff"], signed=True),
                                                   reports.fmt(row["paired_ci"]))
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            LOSS_TITLES[row["loss"]],
            "—" if row["loss"] == BASELINE else "0" if row["loss"] in (CONTROL, CONTROL_STEP)
            else f"{row['lam']:g}", row["n"], reports.fmt(row["mean"]), reports.fmt(row["ci"]),
            "—" if own else reports.fmt(row["diff"], signed=True),
            "—" if own else reports.fmt(row["diff_ci"]),
            "—" if own else row["paired_n"], paired,
            "—" if own else reports.fmt(row["paired_mde"]),
            "—" if own else row["gain"], reports.fmt(row["thesis"])))
    lines += ["", "A loss run and the control run of the same seed start from the same weights "
              "and see the same data order, so the comparison is paired: paired Δ is the mean "
              "of (loss − control) over the seeds both have (pairs), ± its 95 % Student-t "
              "interval t(0.975, n−1)·sd/√n. A cell is a gain (gain? yes) only where that "
              "interval lies above zero (worse: below zero; n/a: fewer than two pairs). MDE is "
              "the smallest true difference this many pairs would detect with 80 % power, "
              "(t(0.975, n−1) + t(0.80, n−1))·sd/√n: a smaller effect can hide in a \"no\". "
              "The Welch CI beside Δ ignores the pairing (wider when seeds matter). On the "
              "step-schedule control's row (the baseline's step schedule continued, λ = 0), "
              "−Δ is what the switch to the poly schedule alone does. The "
              "thesis's column is its single run (its baseline, 0.6225, sits on the baseline's "
              "row, or the control's when no baseline was trained; the thesis had no control)."]
    return "\n".join(lines) + "\n"


def table_csv(rows, scale=None):
    """The table as CSV; ``scale`` (``loss_scale``) adds the template term's normalisation
    and label pixels per batch to every row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["loss", "lambda", "seeds", "mean_iou", "ci95", "diff_vs_control",
                     "diff_ci95", "paired_seeds", "paired_diff", "paired_ci95", "paired_mde80",
                     "gain", "thesis", "normalize", "label_pixels_per_batch"])
    normalize = "/".join(scale["normalize"]) if scale else ""
    pixels = "/".join(map(str, scale["pixels"])) if scale else ""
    for row in rows:
        writer.writerow([row["loss"], row["lam"], row["n"], row["mean"], row["ci"], row["diff"],
                         row["diff_ci"], row["paired_n"], row["paired_diff"], row["paired_ci"],
                         row["paired_mde"], row["gain"],
                         "" if row["thesis"] is None else row["thesis"], normalize, pixels])
    return out.getvalue()


TABLE_FILES = ("table31.md", "table31.csv", "table31.png")


def write_table(cfg, results, title="Table 3.1"):
    """table31.md, table31.csv and the figure table31.png in ``cfg.out``, from every
    finished run in ``results`` (whatever cells ``cfg`` names). Returns (rows, markdown)."""
    from pixelfeedback.table_figure import table_figure

    rows = summarize(results)
    scale = loss_scale(results, cfg.batch_size, cfg.crop)
    markdown = table_markdown(rows, title, scale)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[0]), markdown)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[1]), table_csv(rows, scale))
    subtitle = None
    if scale:
        subtitle = "normalize " + "/".join(scale["normalize"]) + "".join(
            f", ≤ {p:,} label pixels per batch" for p in scale["pixels"][:1])
    table_figure(os.path.join(cfg.out, TABLE_FILES[2]), rows, LOSSES, LOSS_TITLES,
                 THESIS_TABLE, LAMBDAS, THESIS_BASELINE, CONTROL, CONTROL_STEP,
                 title=title + ": paired Δ mIoU vs the poly control", subtitle=subtitle)
    return rows, markdown


def trained_on(init_weights):
    """The splits the registry says ``init_weights`` (by file name) were trained on, or None."""
    for model in registry.MODELS.values():
        if os.path.basename(init_weights) == model.weights:
            return model.trained_on
    return None


@contextlib.contextmanager
def _table_lock(out):
    """Shards finishing at once write the table one after the other, each from the results
    as they are when it writes (so the last one written is complete)."""
    with open(os.path.join(out, ".table.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def run_and_report(cfg, table_only=False):
    """Run (or, with ``table_only``, only tabulate) the sweep and print the table."""
    if not table_only:
        run_sweep(cfg)
    elif not os.path.isdir(os.path.join(cfg.out, "results")):
        raise ToolkitError(f"{cfg.out} holds no finished runs (no results/); run the sweep "
                           "first, without --table-only")
    with _table_lock(cfg.out):
        results = load_results(cfg.out)
        _, markdown = write_table(cfg, results)
    print(markdown)
    finished = {record["run"] for record in results}
    planned = planned_run_names(cfg.out)
    missing = [name for name in planned if name not in finished]
    if missing:
        print(f"{len(missing)} of the {len(planned)} runs planned in {cfg.out} are not "
              f"finished yet (first: {missing[0]}): other shards or workers may still be "
              "training them; rerun the sweep to complete the table")
    print(f"written: {os.path.join(cfg.out, 'table31.md')} and table31.csv")
    return results
