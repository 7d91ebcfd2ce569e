"""Shared fixtures. Tests use real Caffe (built by docker/build_caffe.sh into .venv)."""
import os
import sys

import numpy as np
import pytest

os.environ.setdefault("GLOG_minloglevel", "2")  # keep Caffe's glog quiet in test output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


@pytest.fixture(scope="session")
def caffe():
    """The real pycaffe module, CPU mode. Fails (never skips) when Caffe is missing."""
    import caffe as _caffe
    _caffe.set_mode_cpu()
    return _caffe


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def write_tiny_voc(root, n_images=4, size=(45, 53), num_classes=4, seed=0, list_name="train.txt"):
    """A tiny VOC-style data set for tests: JPEGImages/, SegmentationClassAug/ (palette
    PNGs with a 255 band around each object), and a DeepLab list file at root/list_name.

    Objects are filled rectangles whose colour depends on their class, so a net can learn
    them. Returns the list file's path.
    """
    import cv2
    from pixelfeedback import files
    from python_layers import voc_io

    rs = np.random.RandomState(seed)
    colours = rs.randint(0, 256, size=(num_classes, 3))
    os.makedirs(os.path.join(root, "JPEGImages"), exist_ok=True)
    os.makedirs(os.path.join(root, "SegmentationClassAug"), exist_ok=True)
    lines = []
    for i in range(n_images):
        h, w = size
        image = rs.randint(0, 60, size=(h, w, 3)).astype(np.uint8)
        label = np.zeros((h, w), np.uint8)
        for _ in range(2):
            c = rs.randint(1, num_classes)
            y0, x0 = rs.randint(0, h - 12), rs.randint(0, w - 12)
            y1, x1 = y0 + rs.randint(8, 12), x0 + rs.randint(8, 12)
            label[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = voc_io.IGNORE_LABEL
            label[y0:y1, x0:x1] = c
            image[y0:y1, x0:x1] = colours[c]
        name = f"img_{i:04d}"
        cv2.imwrite(os.path.join(root, "JPEGImages", name + ".jpg"), image)
        files.write_label(os.path.join(root, "SegmentationClassAug", name + ".png"), label)
        lines.append(f"/JPEGImages/{name}.jpg /SegmentationClassAug/{name}.png\n")
    list_path = os.path.join(root, list_name)
    with open(list_path, "w") as f:
        f.writelines(lines)
    return list_path


@pytest.fixture
def tiny_voc(tmp_path):
    """(root, list_path) of a tiny generated VOC-style data set (see write_tiny_voc)."""
    root = str(tmp_path / "voc")
    return root, write_tiny_voc(root)


def load_script(relative):
    """A command-line script (e.g. "tools/evaluate.py") loaded by path, so a test can call
    its ``main(argv)`` in-process; scripts are not importable modules."""
    import importlib.util

    path = os.path.join(REPO, relative)
    name = "script_" + os.path.splitext(relative)[0].replace(os.sep, "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_largefov_weights(folder, caffe, width_div=32, num_classes=4, size=65, seed=0):
    """A reduced-width LargeFOV deploy net (``folder/deploy.prototxt``) and a caffemodel of
    seeded random weights for it (``folder/init.caffemodel``, whose path is returned):
    initial weights for sweeps and fine-tunes, a model for the fixation tools."""
    from pixelfeedback.nets import largefov
    from pixelfeedback.nets.weights import fill_random_weights

    deploy = os.path.join(folder, "deploy.prototxt")
    with open(deploy, "w") as f:
        f.write(str(largefov.deploy_net(width_div=width_div, num_classes=num_classes,
                                        size=size)))
    net = caffe.Net(deploy, caffe.TEST)
    fill_random_weights(net, seed=seed)
    path = os.path.join(folder, "init.caffemodel")
    net.save(path)
    return path


def newest_solverstate_iteration(folder):
    """The iteration of the newest usable .solverstate in ``folder`` (0 when none): where a
    killed training resumes from (a kill during a snapshot's write leaves a truncated one,
    which training sets aside)."""
    from pixelfeedback.training import snapshot_problem, snapshots

    return max([i for i, paths in snapshots(str(folder)).items()
                if any(p.endswith(".solverstate") and snapshot_problem(p) is None
                       for p in paths)], default=0)


def kill_once_logged(process, log_path, line, whole_group=True, timeout=120):
    """kill -9 ``process`` (its whole process group, or only it) as soon as ``line`` is in
    the log at ``log_path``: what a user's kill or a lost session does mid-training. The
    tests that use it leave hundreds of iterations after ``line``, so that a slow poll on a
    loaded machine still interrupts the training before it ends."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while not (os.path.exists(log_path) and line in open(log_path, errors="replace").read()):
        assert process.poll() is None, f"the process ended before {line!r} was logged"
        assert time.monotonic() < deadline, f"{line!r} not logged in {timeout} s"
        time.sleep(0.02)
    (os.killpg if whole_group else os.kill)(process.pid, signal.SIGKILL)
    process.wait()


def assert_no_trainer_left(solver_prefix, timeout=10):
    """No `caffe train -solver <solver_prefix>...` process is alive (after waiting up to
    ``timeout`` s for the kernel to deliver the parent-death signal)."""
    import subprocess
    import time

    def trainers():
        return subprocess.run(["pgrep", "-f", f"train -solver {solver_prefix}"],
                              capture_output=True, text=True).stdout.split()

    deadline = time.monotonic() + timeout
    while trainers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trainers() == [], "caffe train outlived the process that started it"


def run_with_terminal_stderr(argv, cwd, timeout=600):
    """Run ``argv`` with stderr on a pseudo-terminal (tools draw their bars only on a
    terminal) and stdout on a pipe; returns (exit status, stdout, stderr text)."""
    import pty
    import subprocess

    master, slave = pty.openpty()
    process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:   # EIO once the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    stdout = process.stdout.read()
    process.stdout.close()
    status = process.wait(timeout=timeout)
    return status, stdout.decode(errors="replace"), b"".join(chunks).decode(errors="replace")
