"""The GPU check's timings at the thesis's scale and the default sweep's wall time
extrapolated from them (``pixelfeedback.gpu_check`` runs them as its ``timings`` and
``extrapolation`` steps).

Measured on the device under test, on the check's own data (VOC-sized PNG images):

- seconds per `caffe train` iteration of the fine-tune's control (softmax only) and of
  each Table 3.1 loss at batch 10, crop 321 (``FINETUNE``), and of DeepLab's stage 1 at
  batch 20 (``STAGE1``: every layer learns, so the whole trunk runs backward);
- the Python layers' share of an iteration: Caffe's own per-layer timing, `caffe time`
  (each layer's Forward and Backward timed separately, with CUDA events on a GPU; on a
  CPU by the clock), on the same train nets; the data layer (``ImageSegData``: its
  forward is the wait for the batch its prefetch thread reads), the label shrink and the
  template loss are the layers of type Python; their forward + backward milliseconds over
  the net's forward-backward milliseconds is their share;
- seconds per val image of the sweep's evaluation at 513 (read, forward, crop, score,
  write the prediction: ``pixelfeedback.evaluation``), and of the test-net forward alone;
- seconds per list line of the up-front list check (``data_lists.check_list``) and of the
  initial weights' check (load into the net, all finite).

The GPU bundle lacks what the evaluation and the list check import (``where_it_imports``):
there the evaluation counts as test-net forwards and the checks are left out (the image
and a checkout time both).

The extrapolation multiplies them out over the runs of the DEFAULT sweep
(``sweep.plan.SweepConfig()``, what `tools/reproduce_table.py` runs without arguments): stage 1
for its iterations, the controls, the step controls and every loss x lambda x seed for the
fine-tune's iterations, every run evaluated on VOC 2012 val, and the checks over the
train, val and train_aug lists at their published sizes (``voc_io.SPLIT_IMAGES``).
"""
import os
import re
import subprocess
import time

import numpy as np

from python_layers import ToolkitError, voc_io

ITERATION_SPEED = re.compile(r"Iteration (\d+) \(([0-9.]+) iter/s, ([0-9.]+)s/(\d+) iters\)")
LAYER_TIME = re.compile(r"\]\s+(\S+)\t(forward|backward): ([0-9.eE+-]+) ms\.")
FORWARD_BACKWARD = re.compile(r"Average Forward-Backward: ([0-9.eE+-]+) ms\.")
STAGE1_NET = "stage1"   # the timings' key of DeepLab's stage 1 (the sweep's baseline)
GPU_COUNTS = (1, 2, 4, 8)  # --gpus N of the extrapolation's table


def seconds_per_iteration(log_text):
    """Seconds per iteration from `caffe train`'s display lines, leaving out the first
    (which holds the start-up)."""
    speeds = [(float(m.group(3)), int(m.group(4))) for m in ITERATION_SPEED.finditer(log_text)]
    speeds = speeds[1:] or speeds
    if not speeds:
        raise ToolkitError("no 'Iteration N (x iter/s, ...)' lines in the training log; "
                           "the caffe tool printed no timing")
    return sum(s for s, _ in speeds) / sum(n for _, n in speeds)


def layer_times(log_text):
    """({layer: forward + backward ms}, forward-backward ms) from `caffe time`'s output."""
    per_layer = {}
    for match in LAYER_TIME.finditer(log_text):
        per_layer[match.group(1)] = per_layer.get(match.group(1), 0.0) + float(match.group(3))
    total = FORWARD_BACKWARD.search(log_text)
    if not per_layer or total is None:
        raise ToolkitError("no per-layer lines ('<layer>\\tforward: x ms.') or no 'Average "
                           "Forward-Backward' line in the output of caffe time")
    return per_layer, float(total.group(1))


def python_layers(net_path):
    """The names of the layers of type Python in a prototxt."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    net = caffe_pb2.NetParameter()
    with open(net_path) as f:
        text_format.Merge(f.read(), net)
    return [layer.name for layer in net.layer if layer.type == "Python"]


def python_share(net_path, gpu, iterations):
    """The Python layers' milliseconds per forward-backward of the train net at
    ``net_path`` and their share of it (`caffe time`, see the module's docstring)."""
    from pixelfeedback.training import caffe_binary
    command = [caffe_binary(), "time", "-model", net_path, "-iterations", str(iterations)]
    if gpu is not None:
        command += ["-gpu", str(gpu)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800,
                            cwd=os.path.dirname(net_path),
                            env=dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0"))
    if result.returncode != 0:
        raise ToolkitError(f"caffe time failed (exit {result.returncode}) on {net_path}: "
                           f"{(result.stdout + result.stderr)[-1500:]}")
    per_layer, total = layer_times(result.stdout + result.stderr)
    layers = {name: per_layer.get(name, 0.0) for name in python_layers(net_path)}
    python_ms = sum(layers.values())
    return {"python_layers_ms": layers, "python_ms": python_ms, "forward_backward_ms": total,
            "python_share": python_ms / total if total > 0 else None}


def time_training(work, loss, data_root, list_file, gpu, iterations, width_div, batch,
                  stage="finetune"):
    """Seconds per `caffe train` iteration of ``loss`` (lambda 0.01, the sweep's first) in
    ``stage`` ("baseline": DeepLab's stage 1), and the train net's path."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.training import train
    run_dir = os.path.join(work, f"train_{largefov.experiment_name(loss, stage)}")
    display = max(iterations // 4, 1)
    solver_path = largefov.write_experiment(
        run_dir, loss, lam=0.01, stage=stage, data_root=data_root, list_file=list_file,
        batch_size=batch, crop=321, width_div=width_div, seed=0, iterations=iterations,
        solver_overrides={"display": display, "snapshot": 0, "snapshot_after_train": False})
    train(solver_path, run_dir, gpu=gpu)
    with open(os.path.join(run_dir, "train.log"), errors="replace") as f:
        seconds = seconds_per_iteration(f.read())
    name = largefov.experiment_name(loss, stage)
    return seconds, os.path.join(run_dir, f"train_{name}.prototxt")


def _use_device(caffe, gpu):
    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpu)
        caffe.set_mode_gpu()


def time_test_forward(caffe, work, gpu, width_div, size=513, repeats=5):
    """Seconds per forward of the test net (with its Zoom Python layer) at ``size``."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    path = write_net(largefov.test_net(width_div=width_div, size=size),
                     os.path.join(work, f"test_{size}.prototxt"))
    _use_device(caffe, gpu)
    net = caffe.Net(path, caffe.TEST)
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(*net.blobs["data"].data.shape)
    net.forward()  # warm-up: allocations, cuBLAS handles
    start = time.time()
    for _ in range(repeats):
        net.forward()
    seconds = (time.time() - start) / repeats
    caffe.set_mode_cpu()
    return seconds


def time_evaluation(work, data_root, list_file, gpu, width_div, size=513):
    """Seconds per image of the sweep's evaluation (``evaluation.evaluate``: read, forward,
    crop, score, write) at ``size``."""
    from pixelfeedback import evaluation
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.netspec import write_net
    path = write_net(largefov.test_net(width_div=width_div, size=size),
                     os.path.join(work, f"evaluate_{size}.prototxt"))
    result = evaluation.evaluate((path, None), list_file, data_root,
                                 os.path.join(work, "evaluate"), size=size, progress=False,
                                 gpu=gpu, restart=True, skip_flag=None)
    return result["seconds"] / max(result["images_run"], 1)


def time_checks(work, data_root, list_file, width_div):
    """(seconds per line of the list check, seconds of the initial weights' check)."""
    from pixelfeedback.data_lists import check_list
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.loading import load_net
    from pixelfeedback.nets.netspec import write_net
    from pixelfeedback.nets.weights import check_finite_params, fill_random_weights

    lines = len(voc_io.read_list(list_file, root=data_root))
    start = time.time()
    check_list(list_file, data_root, "--train-list", progress=False, num_classes=21)
    per_line = (time.time() - start) / lines
    deploy = write_net(largefov.deploy_net(width_div, size=65),
                       os.path.join(work, "check_deploy.prototxt"))
    weights = os.path.join(work, "check_init.caffemodel")
    net = load_net(deploy)
    fill_random_weights(net, seed=0)
    net.save(weights)
    start = time.time()
    check_finite_params(load_net(deploy, weights), weights)
    init_seconds = time.time() - start
    os.remove(weights)
    return per_line, init_seconds


def where_it_imports(function, *args):
    """``function(*args)``, or None where what it imports is missing: the GPU bundle
    carries neither tqdm, SciPy nor OpenCV, which the evaluation and the list check use."""
    try:
        return function(*args)
    except ImportError:
        return None


def step_timings(work, data_root, list_file, losses, gpu, iterations, width_div):
    """Every timing of the module's docstring, at full scale on ``gpu`` (None: the CPU)."""
    import caffe

    from pixelfeedback.nets.largefov import FINETUNE, STAGE1
    per_loss, shares = {}, {}
    for loss in losses:
        per_loss[loss], net_path = time_training(work, loss, data_root, list_file, gpu,
                                                 iterations, width_div, FINETUNE.batch_size)
        shares[loss] = python_share(net_path, gpu, iterations)
    per_loss[STAGE1_NET], net_path = time_training(work, "softmax", data_root, list_file, gpu,
                                                   iterations, width_div, STAGE1.batch_size,
                                                   stage="baseline")
    shares[STAGE1_NET] = python_share(net_path, gpu, iterations)
    list_line, init_check = where_it_imports(time_checks, work, data_root, list_file,
                                             width_div) or (None, None)
    return {"status": "pass", "device": "cpu" if gpu is None else f"gpu {gpu}",
            "batch": FINETUNE.batch_size, "stage1_batch": STAGE1.batch_size, "crop": 321,
            "width_div": width_div, "iterations_timed": iterations,
            "train_seconds_per_iteration": per_loss, "python_layers": shares,
            "test_forward_seconds_513": time_test_forward(caffe, work, gpu, width_div),
            "evaluate_seconds_per_image_513": where_it_imports(
                time_evaluation, work, data_root, list_file, gpu, width_div),
            "list_check_seconds_per_line": list_line, "init_check_seconds": init_check}


# ----------------------------------------------------------------------------- the sweep

def sweep_plan(seeds=None):
    """The runs of the DEFAULT Table 3.1 sweep (tools/reproduce_table.py without arguments,
    or with these ``seeds``) and what their time depends on, as JSON data."""
    from pixelfeedback.sweep.plan import SweepConfig
    config = SweepConfig() if seeds is None else SweepConfig(seeds=seeds)
    return {"runs": [list(run) for run in config.runs()], "iterations": config.iterations,
            "baseline_iterations": config.baseline_iterations, "seeds": list(config.seeds),
            "list_lines": sum(voc_io.SPLIT_IMAGES.values()),
            "val_images": voc_io.SPLIT_IMAGES["val"]}


def run_kind(loss):
    """"stage 1", "control", "step control" or "loss run" of a planned run's loss."""
    from pixelfeedback.sweep.plan import BASELINE, CONTROL, CONTROL_STEP
    return {BASELINE: "stage 1", CONTROL: "control", CONTROL_STEP: "step control"}.get(
        loss, "loss run")


def sweep_wall_time(timings, plan):
    """Extrapolated seconds of the sweep ``plan`` (``sweep_plan``) on one device: per run,
    its iterations at its net's speed (stage 1 at stage 1's, the controls at the softmax
    fine-tune's) plus one evaluation per val image, then the up-front checks; the Python
    layers' seconds of the training by their measured share; the total on N devices
    (--gpus N: stage 1 first, alone; then the fine-tunes N at a time)."""
    per_iteration = timings["train_seconds_per_iteration"]
    shares = timings.get("python_layers") or {}
    per_image = timings.get("evaluate_seconds_per_image_513") or \
        timings["test_forward_seconds_513"]
    rows, kinds, python_seconds = [], {}, 0.0
    for loss, lam, seed in plan["runs"]:
        kind = run_kind(loss)
        net = STAGE1_NET if kind == "stage 1" else loss if loss in per_iteration else "softmax"
        iterations = plan["baseline_iterations"] if kind == "stage 1" else plan["iterations"]
        train_s, eval_s = iterations * per_iteration[net], plan["val_images"] * per_image
        share = (shares.get(net) or {}).get("python_share")
        python_seconds += train_s * share if share is not None else 0.0
        rows.append({"run": f"{loss} lambda={lam:g} seed={seed}", "kind": kind,
                     "train_seconds": train_s, "evaluate_seconds": eval_s})
        entry = kinds.setdefault(kind, {"runs": 0, "seconds": 0.0})
        entry["runs"] += 1
        entry["seconds"] += train_s + eval_s
    checks = None if timings.get("list_check_seconds_per_line") is None else \
        plan["list_lines"] * timings["list_check_seconds_per_line"] + \
        timings["init_check_seconds"]
    stage1 = kinds.get("stage 1", {}).get("seconds", 0.0)
    runs_total = sum(r["train_seconds"] + r["evaluate_seconds"] for r in rows)
    total = (checks or 0.0) + runs_total
    training = sum(r["train_seconds"] for r in rows)
    return {"runs": len(rows), "iterations_per_run": plan["iterations"],
            "baseline_iterations": plan["baseline_iterations"],
            "val_images": plan["val_images"], "list_lines": plan["list_lines"],
            "evaluation_measured": timings.get("evaluate_seconds_per_image_513") is not None,
            "by_kind": kinds, "checks_seconds": checks, "training_seconds": training,
            "python_layers_seconds": python_seconds,
            "python_layers_share": python_seconds / training if training else None,
            "total_seconds": total, "total_hours": total / 3600.0,
            "on_gpus": {str(n): (checks or 0.0) + stage1 + (runs_total - stage1) / n
                        for n in GPU_COUNTS},
            "per_run": rows}


def step_extrapolation(timings, plan):
    result = sweep_wall_time(timings, plan)
    result.update(status="pass", device=timings["device"], seeds=plan["seeds"])
    return result
