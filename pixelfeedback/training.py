"""Running `caffe train` from Python: the project's caffe tool, resuming from the newest
solver snapshot, Caffe's training log, the final weights of a run, and pruning the older
snapshots of a finished run.
"""
import glob
import math
import os
import re
import shutil
import subprocess
import sys

from pixelfeedback.paths import REPO_ROOT
from python_layers import ToolkitError


def caffe_binary():
    """The `caffe` tool of this venv (a wrapper that makes python_layers importable)."""
    candidate = os.path.join(sys.prefix, "bin", "caffe")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("caffe")
    if not found:
        raise ToolkitError("the caffe tool was not found; run `make setup` and "
                           "`source .venv/bin/activate`")
    return found


LOSS_LINE = re.compile(r"Iteration (\d+).*?, loss = ([-+0-9.eEnaif]+)")


def parse_losses(log_text):
    """(iteration, loss) pairs from Caffe's training log."""
    return [(int(m.group(1)), float(m.group(2))) for m in LOSS_LINE.finditer(log_text)]


def latest_snapshot(run_dir):
    """The newest .solverstate in run_dir and its iteration, or (None, 0)."""
    best, best_iter = None, 0
    for path in glob.glob(os.path.join(run_dir, "*.solverstate")):
        match = re.search(r"_iter_(\d+)\.solverstate$", path)
        if match and int(match.group(1)) > best_iter:
            best, best_iter = path, int(match.group(1))
    return best, best_iter


def train(solver_path, run_dir, init_weights=None, gpu=None, log_name="train.log"):
    """`caffe train` from the repository root; resumes from the newest snapshot.

    Returns the (iteration, loss) pairs of the log. A crash or a non-finite loss is a
    ToolkitError that points at the log.
    """
    command = [caffe_binary(), "train", "-solver", solver_path]
    snapshot, _ = latest_snapshot(run_dir)
    if snapshot:
        command += ["-snapshot", snapshot]
    elif init_weights:
        if not os.path.isfile(init_weights):
            raise ToolkitError(f"initial weights not found: {init_weights} "
                               "(python weights/fetch.py largefov, or pass --init-weights)")
        command += ["-weights", init_weights]
    if gpu is not None:
        command += ["-gpu", str(gpu)]
    log_path = os.path.join(run_dir, log_name)
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")  # the log is parsed
    with open(log_path, "a") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        status = subprocess.call(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                 env=env)
    text = open(log_path).read()
    if status != 0:
        tail = "\n".join(text.splitlines()[-8:])
        raise ToolkitError(f"caffe train failed (exit {status}) for {solver_path}; "
                           f"see {log_path}:\n{tail}")
    losses = parse_losses(text)
    if any(not math.isfinite(loss) for _, loss in losses):
        raise ToolkitError(f"the training loss became non-finite; see {log_path}")
    return losses


def final_weights(run_dir, iterations):
    matches = glob.glob(os.path.join(run_dir, f"*_iter_{iterations}.caffemodel"))
    if not matches:
        raise ToolkitError(f"no snapshot for iteration {iterations} in {run_dir}; "
                           "the training did not finish (rerun to resume)")
    return matches[0]


SNAPSHOT_FILE = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)$")


def snapshots(run_dir):
    """{iteration: [paths]} of the ``*_iter_<N>.caffemodel`` / ``.solverstate`` files in
    run_dir (Caffe's snapshot names)."""
    found = {}
    for path in glob.glob(os.path.join(run_dir, "*_iter_*")):
        match = SNAPSHOT_FILE.search(path)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def prune_snapshots(run_dir, keep, final_iteration):
    """After a finished training: delete the snapshots of run_dir older than the newest
    ``keep`` (a snapshot is its .caffemodel and .solverstate pair). The final weights
    (``*_iter_<final_iteration>.caffemodel``) are always kept, also with ``keep`` 0. Only
    call it once the training reached ``final_iteration``: the resume needs the newest
    .solverstate. Returns the deleted paths."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    by_iteration = snapshots(run_dir)
    newest = sorted(by_iteration, reverse=True)[:keep]
    deleted = []
    for iteration, paths in sorted(by_iteration.items()):
        if iteration in newest:
            continue
        for path in sorted(paths):
            if iteration == final_iteration and path.endswith(".caffemodel"):
                continue
            os.remove(path)
            deleted.append(path)
    return deleted
