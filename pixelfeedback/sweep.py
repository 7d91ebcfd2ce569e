"""The Table 3.1 sweep: fine-tune DeepLab-LargeFOV with each template-similarity loss and
weight (lambda), plus the control (the same fine-tune with the softmax loss alone), over
several seeds; evaluate each on val; tabulate beside the thesis's numbers.

Every run is `caffe train` on the command line with a generated solver
(pixelfeedback.training), then the evaluation protocol (pixelfeedback.evaluation). Each
finished run writes one result file atomically (<out>/results/<run>.json); a rerun skips
finished runs, and an interrupted training resumes from its last solver snapshot. The table
(Markdown and CSV) shows, per cell, the mean and 95 % confidence interval over seeds and the
difference to the control: the thesis's author later wrote that its gains may come from the
switch to the poly schedule, so a gain counts only against the control.
"""
import collections
import csv
import glob
import io
import json
import math
import os
import sys
import time

import numpy as np

from pixelfeedback import evaluation, metrics, reports
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.loading import check_gpu
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.runfolder import RunFolder
from pixelfeedback.training import final_weights, parse_losses, train
from python_layers import ToolkitError, voc_io
from python_layers.template_similarity import LOSS_NAMES as LOSSES

LAMBDAS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0)


CONTROL = "control"


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
}


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
                 baseline_iterations=6000, class_names=None, restart=False):
        self.out = os.path.abspath(out)
        self.data_root = os.path.abspath(data_root)
        self.train_list = os.path.abspath(train_list)
        self.val_list = os.path.abspath(val_list)
        self.init_weights = os.path.abspath(init_weights)
        self.losses = tuple(losses)
        self.lambdas = tuple(float(x) for x in lambdas)
        self.seeds = tuple(int(s) for s in seeds)
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
        for loss in self.losses:
            if loss not in LOSSES:
                raise ToolkitError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")

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
            "baseline_from": RunFolder.path(self.baseline_from) if self.baseline_from else None,
            "baseline_list": RunFolder.path(self.baseline_list) if self.baseline_from else None,
            "baseline_iterations": self.baseline_iterations if self.baseline_from else None,
        }

    def runs(self):
        """The optional baseline, the control for every seed, then every loss x lambda x
        seed."""
        planned = [Run(BASELINE, 0.0, self.seeds[0])] if self.baseline_from else []
        planned += [Run(CONTROL, 0.0, seed) for seed in self.seeds]
        planned += [Run(loss, lam, seed) for loss in self.losses for lam in self.lambdas
                    for seed in self.seeds]
        return planned


def run_name(run):
    if run.loss == BASELINE:
        return "baseline"
    if run.loss == CONTROL:
        return f"control_seed{run.seed}"
    return f"{run.loss}_lam{run.lam:g}_seed{run.seed}"


def write_test_net(cfg, path):
    if not os.path.exists(path):
        write_net(largefov.test_net(width_div=cfg.width_div, num_classes=cfg.num_classes,
                                    size=cfg.test_size), path)
    return path


def evaluate_weights(cfg, weights, out_dir, model_name=None):
    test_net = write_test_net(cfg, os.path.join(cfg.out, "test.prototxt"))
    return evaluation.evaluate(
        (test_net, weights), cfg.val_list, cfg.data_root, out_dir,
        num_classes=cfg.num_classes, size=cfg.test_size,
        progress=cfg.progress, gpu=cfg.gpu, model_name=model_name, class_names=cfg.class_names)


def run_one(cfg, run):
    """Fine-tune and evaluate one run; returns its result record (and writes it)."""
    name = run_name(run)
    result_path = os.path.join(cfg.out, "results", name + ".json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    run_dir = os.path.join(cfg.out, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    started = time.time()
    common = dict(data_root=cfg.data_root, batch_size=cfg.batch_size, crop=cfg.crop,
                  width_div=cfg.width_div, num_classes=cfg.num_classes, seed=run.seed)
    if run.loss == BASELINE:
        iterations, init = cfg.baseline_iterations, cfg.baseline_from
        solver_path = largefov.write_experiment(
            run_dir, loss="softmax", stage="baseline", list_file=cfg.baseline_list,
            iterations=iterations, **common)
    else:
        iterations, init = cfg.iterations, fine_tune_init(cfg)
        solver_path = largefov.write_experiment(
            run_dir, loss="softmax" if run.loss == CONTROL else run.loss, lam=run.lam,
            list_file=cfg.train_list, iterations=iterations, snapshot=cfg.snapshot_every,
            base_lr=cfg.base_lr, **common)
    finished = glob.glob(os.path.join(run_dir, f"*_iter_{iterations}.caffemodel"))
    if finished:  # trained before an interrupted evaluation: evaluation resumes on its own
        losses = parse_losses(open(os.path.join(run_dir, "train.log")).read())
    else:
        losses = train(solver_path, run_dir, init, cfg.gpu)
    weights = final_weights(run_dir, iterations)
    evaluation = evaluate_weights(cfg, weights, os.path.join(run_dir, "eval"))
    record = {
        "run": name, "loss": run.loss, "lambda": run.lam, "seed": run.seed,
        "mean_iou": evaluation["mean_iou"], "pixel_accuracy": evaluation["pixel_accuracy"],
        "class_iou": evaluation["class_iou"], "iterations": iterations,
        "first_loss": losses[0][1] if losses else None,
        "last_loss": losses[-1][1] if losses else None,
        "weights": os.path.relpath(weights, cfg.out), "seconds": round(time.time() - started, 1),
    }
    voc_io.write_json(result_path, record)
    return record


def fine_tune_init(cfg):
    """The fine-tunes start from the stage-1 baseline when the sweep trains one."""
    if not cfg.baseline_from:
        return cfg.init_weights
    with open(os.path.join(cfg.out, "results", "baseline.json")) as f:
        return os.path.join(cfg.out, json.load(f)["weights"])


def load_results(out):
    results = []
    for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))):
        with open(path) as f:
            results.append(json.load(f))
    return results


def run_sweep(cfg, on_result=None):
    """Run every planned run not finished yet; returns all result records.

    ``cfg.out`` is a run folder (pixelfeedback.runfolder): locked while the sweep runs, and
    refused when it holds runs of other settings unless ``cfg.restart``."""
    with RunFolder(cfg.out, cfg.fingerprint(), what="Table 3.1 sweep",
                   restart=cfg.restart):
        return _run_planned(cfg, on_result)


def _run_planned(cfg, on_result):
    if cfg.gpu is not None:
        check_gpu(cfg.gpu)   # before any training: `caffe train -gpu` aborts a CPU build
    os.makedirs(os.path.join(cfg.out, "results"), exist_ok=True)
    if cfg.init_trained_on and "voc2012_val" in cfg.init_trained_on:
        warn_val_contamination(cfg.init_weights)
    planned = cfg.runs()
    for number, run in enumerate(planned, 1):
        done = os.path.exists(os.path.join(cfg.out, "results", run_name(run) + ".json"))
        if cfg.progress:
            print(f"[{number}/{len(planned)}] {run_name(run)}"
                  + (" (done, skipped)" if done else ""), flush=True)
        record = run_one(cfg, run)
        if on_result:
            on_result(record)
        if cfg.progress and not done:
            print(f"    mean IoU {record['mean_iou']:.4f}, loss {record['first_loss']:.4g} -> "
                  f"{record['last_loss']:.4g}, {record['seconds']:.0f} s", flush=True)
    return load_results(cfg.out)


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


def summarize(results, losses=LOSSES, lambdas=LAMBDAS):
    """Rows of the table: one per loss and lambda (and the control), with statistics."""
    by_cell = collections.defaultdict(list)
    for record in results:
        by_cell[(record["loss"], float(record["lambda"]))].append(record["mean_iou"])
    control = by_cell.get((CONTROL, 0.0), [])
    rows = []
    baseline = by_cell.get((BASELINE, 0.0))
    if baseline:
        rows.append(dict(loss=BASELINE, lam=0.0, n=len(baseline), mean=float(np.mean(baseline)),
                         ci=float("nan"), diff=float("nan"), diff_ci=float("nan"),
                         thesis=THESIS_BASELINE))
    if control:
        ci = metrics.mean_ci(control)
        rows.append(dict(loss=CONTROL, lam=0.0, n=ci.n, mean=ci.mean, ci=ci.half_width,
                         diff=0.0, diff_ci=float("nan"),
                         thesis=None if baseline else THESIS_BASELINE))
    for loss in losses:
        for column, lam in enumerate(lambdas):
            values = by_cell.get((loss, float(lam)))
            if not values:
                continue
            ci = metrics.mean_ci(values)
            diff, diff_half = welch_ci(values, control) if control else (float("nan"),) * 2
            thesis = None
            if float(lam) in LAMBDAS and loss in THESIS_TABLE:
                thesis = THESIS_TABLE[loss][LAMBDAS.index(float(lam))]
            rows.append(dict(loss=loss, lam=float(lam), n=ci.n, mean=ci.mean, ci=ci.half_width,
                             diff=diff, diff_ci=diff_half, thesis=thesis))
    return rows


def table_markdown(rows, title="Table 3.1"):
    """The table as Markdown: our mean +- CI, difference to the control, the thesis."""
    lines = [f"### {title}: val mean IoU, mean ± 95 % CI over seeds", "",
             "| loss | λ | seeds | mean IoU | ± CI | Δ vs control | ± CI | thesis |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            LOSS_TITLES[row["loss"]],
            "—" if row["loss"] == BASELINE else "0" if row["loss"] == CONTROL else
            f"{row['lam']:g}", row["n"], reports.fmt(row["mean"]), reports.fmt(row["ci"]),
            "—" if row["loss"] in (CONTROL, BASELINE) else reports.fmt(row["diff"], signed=True),
            "—" if row["loss"] in (CONTROL, BASELINE) else reports.fmt(row["diff_ci"]),
            reports.fmt(row["thesis"])))
    lines += ["", "A cell beats the control only where Δ − CI > 0. The thesis's column is its "
              "single run (its baseline, 0.6225, sits on the baseline's row, or the control's when "
              "no baseline was trained; the thesis had no control)."]
    return "\n".join(lines) + "\n"


def table_csv(rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["loss", "lambda", "seeds", "mean_iou", "ci95", "diff_vs_control",
                     "diff_ci95", "thesis"])
    for row in rows:
        writer.writerow([row["loss"], row["lam"], row["n"], row["mean"], row["ci"], row["diff"],
                         row["diff_ci"], "" if row["thesis"] is None else row["thesis"]])
    return out.getvalue()


def write_table(cfg, results, title="Table 3.1"):
    rows = summarize(results, cfg.losses, cfg.lambdas)
    markdown = table_markdown(rows, title)
    voc_io.write_text(os.path.join(cfg.out, "table31.md"), markdown)
    voc_io.write_text(os.path.join(cfg.out, "table31.csv"), table_csv(rows))
    return rows, markdown


def trained_on(init_weights):
    """The splits the registry says ``init_weights`` (by file name) were trained on, or None."""
    for model in registry.MODELS.values():
        if os.path.basename(init_weights) == model.weights:
            return model.trained_on
    return None


def run_and_report(cfg, table_only=False):
    """Run (or, with ``table_only``, only tabulate) the sweep and print the table."""
    results = load_results(cfg.out) if table_only else run_sweep(cfg)
    _, markdown = write_table(cfg, results)
    print(markdown)
    print(f"written: {os.path.join(cfg.out, 'table31.md')} and table31.csv")
    return results
