"""One run of the sweep: its net and solver, `caffe train` (resumed from its last usable
snapshot), the evaluation on val, and its result record, written atomically."""
import glob
import math
import os
import time

from pixelfeedback import evaluation, thesis
from pixelfeedback.messages import note
from pixelfeedback.metrics import pair_confusion
from pixelfeedback.nets import largefov
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.sweep.flow import flow_measure
from pixelfeedback.sweep.plan import (BASELINE, CONTROL, CONTROL_STEP, Run,
                                      baseline_snapshot_every, result_file, run_name)
from pixelfeedback.sweep.settings import record_fields
from pixelfeedback.sweep.store import read_result
from pixelfeedback.training import (TrainingDiverged, final_weights, parse_losses,
                                    prune_snapshots, resumed_from, train, training_seconds,
                                    weights_problem)
from python_layers.template_similarity import parse_stats_line


def write_test_net(cfg, path):
    """The test net of the sweep's evaluation at ``path``."""
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
        class_names=cfg.class_names, skip_flag=None)  # the sweep has no --skip-bad-images


def write_solver(cfg, run, run_dir):
    """The net and solver of one run in run_dir; returns (solver path, iterations)."""
    common = dict(data_root=cfg.data_root, crop=cfg.crop, width_div=cfg.width_div,
                  num_classes=cfg.num_classes, seed=run.seed)
    if run.loss == BASELINE:  # DeepLab's stage 1: its own list, batch and iterations
        return largefov.write_experiment(
            run_dir, loss="softmax", stage="baseline", list_file=cfg.baseline_list,
            batch_size=cfg.baseline_batch_size, iterations=cfg.baseline_iterations,
            snapshot=baseline_snapshot_every(cfg), **common), cfg.baseline_iterations
    overrides = None
    if run.loss == CONTROL_STEP:
        overrides = largefov.continued_step_schedule(iterations=cfg.iterations,
                                                     **cfg.step_control)
    return largefov.write_experiment(
        run_dir, loss="softmax" if run.loss in (CONTROL, CONTROL_STEP) else run.loss,
        lam=run.lam, list_file=cfg.train_list, iterations=cfg.iterations,
        batch_size=cfg.batch_size, snapshot=cfg.snapshot_every, base_lr=cfg.base_lr,
        solver_overrides=overrides, normalize=cfg.normalize, **common), cfg.iterations


def run_one(cfg, folder, run):
    """Fine-tune and evaluate one run in the sweep's run folder ``folder``; returns its
    result record (and writes it), or None while another process works on the run (its
    folder ``runs/<run>`` is locked by the one training it)."""
    name = run_name(run)
    record = read_result(folder, run)
    if record is not None:
        return record
    run_folder = folder.try_child(os.path.join("runs", name), {"run": name},
                                  what="Table 3.1 run")
    if run_folder is None:
        return None
    with run_folder:
        record = read_result(folder, run)  # finished while we waited for the lock?
        if record is not None:
            return record
        return _train_and_evaluate(cfg, folder, run, run_folder.root)


def fine_tune_init(cfg, folder):
    """The fine-tunes start from the stage-1 baseline when the sweep trains one."""
    if not cfg.baseline_from:
        return cfg.init_weights
    baseline = read_result(folder, Run(BASELINE, 0.0, cfg.seeds[0]))
    return folder.file(baseline["weights"])


def _train_and_evaluate(cfg, folder, run, run_dir):
    started = time.time()
    init = cfg.baseline_from if run.loss == BASELINE else fine_tune_init(cfg, folder)
    solver_path, iterations = write_solver(cfg, run, run_dir)
    log_path = os.path.join(run_dir, "train.log")
    diverged = None
    if not any(weights_problem(path) is None
               for path in glob.glob(os.path.join(run_dir, f"*_iter_{iterations}.caffemodel"))):
        # not trained yet, or its final weights are unusable (a kill mid-write): resume
        try:
            train(solver_path, run_dir, init, cfg.gpu, progress=cfg.progress,
                  description=run_name(run), threads=cfg.training_threads())
        except TrainingDiverged as exc:  # recorded with what its last finite weights score
            if run.loss == BASELINE:
                raise
            diverged = exc
            note(f"{run_name(run)}: {exc}")
    # else: trained before an interrupted evaluation, which resumes on its own
    with open(log_path) as f:
        log_text = f.read()
    losses = parse_losses(log_text)
    if diverged:
        weights = diverged.last_finite_weights or init
    else:
        weights = final_weights(run_dir, iterations)
        prune_snapshots(run_dir, cfg.keep_snapshots, iterations)
    evaluated = evaluate_weights(cfg, weights, os.path.join(run_dir, "eval"),
                                 os.path.join(run_dir, "test.prototxt"))
    resumes = resumed_from(log_text)
    finite = [loss for _, loss in losses if math.isfinite(loss)]
    record = {
        "run": run_name(run), "loss": run.loss, "lambda": run.lam, "seed": run.seed,
        "mean_iou": evaluated["mean_iou"], "pixel_accuracy": evaluated["pixel_accuracy"],
        "class_iou": evaluated["class_iou"], "iterations": iterations,
        "first_loss": losses[0][1] if losses else None,
        "last_loss": finite[-1] if finite else None,
        **record_fields(cfg),
        "label_pixels_per_batch": largefov.label_positions_per_batch(cfg.batch_size, cfg.crop),
        "resumed": bool(resumes), "resumed_from": resumes,
        "device": "cpu" if cfg.gpu is None else f"gpu {cfg.gpu}", "threads": cfg.training_threads(),
        "weights": os.path.relpath(weights, folder.root),
        "seconds": round(time.time() - started, 1),  # of the invocation that finished it
        "train_seconds": round(training_seconds(log_text), 1),  # all sessions, from the log
        # issue 27: what the two mechanisms act on, and the template term's diagnostics
        "class_names": evaluated["class_names"], "confusion": evaluated["confusion"],
        "pair_confusion": pair_confusion(evaluated["confusion"], evaluated["class_names"],
                                         thesis.CORRELATED_PAIRS),
        "loss_stats": parse_stats_line(log_text),
        "flow": flow_measure(cfg, weights, run_dir),
        "diverged": diverged is not None,
        "diverged_at": diverged.iteration if diverged else None,
    }
    if run.loss == BASELINE:
        record["batch_size"] = cfg.baseline_batch_size
    folder.write_json(result_file(run), record)
    return record
