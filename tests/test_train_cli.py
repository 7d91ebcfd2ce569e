"""`caffe train` on the command line with every solver kind that pixelfeedback/nets/largefov.py writes
(reduced width, tiny generated data): it runs, the logged loss is finite and goes down,
and the snapshot loads back into the deploy net."""
import math
import os
import re
import subprocess

import pytest

from tests.conftest import write_tiny_voc
from pixelfeedback.nets import largefov, netspec
from pixelfeedback.nets import weights as netweights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CAFFE = os.path.join(REPO, ".venv", "bin", "caffe")
ITERATIONS = 40
LOSS_LINE = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)")

# (loss, stage): the baseline, the control (softmax fine-tune) and the four template losses.
KINDS = [("softmax", "baseline"), ("softmax", "finetune"), ("cosine", "finetune"),
         ("correlation", "finetune"), ("selective_cosine", "finetune"),
         ("selective_correlation", "finetune")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    return root, write_tiny_voc(root, n_images=6)


def logged_losses(log):
    """[(iteration, loss)] from Caffe's "Iteration N (...), loss = X" lines."""
    return [(int(m.group(1)), float(m.group(2))) for m in LOSS_LINE.finditer(log)]


@pytest.mark.parametrize("loss,stage", KINDS, ids=[largefov.experiment_name(*k) for k in KINDS])
def test_caffe_train_runs_and_loss_goes_down(caffe, tmp_path, dataset, loss, stage):
    root, list_path = dataset
    run_dir = tmp_path / "run"
    solver = largefov.write_experiment(
        str(run_dir), loss, lam=0.1, stage=stage, data_root=root, list_file=list_path,
        batch_size=2, crop=65, width_div=16, seed=1, iterations=ITERATIONS)
    env = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    done = subprocess.run([CAFFE, "train", "-solver", solver], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    losses = logged_losses(log)
    assert [it for it, _ in losses] == list(range(0, ITERATIONS + 1, 10)), log[-3000:]
    values = [value for _, value in losses]
    assert all(math.isfinite(v) for v in values), values
    assert values[-1] < values[0] and min(values[-2:]) < 0.8 * values[0], values
    if loss != "softmax":
        assert "loss_template" in log

    name = largefov.experiment_name(loss, stage)
    snapshot = run_dir / f"{name}_iter_{ITERATIONS}.caffemodel"
    assert snapshot.is_file()
    deploy = run_dir / "deploy.prototxt"
    deploy.write_text(netspec.to_text(largefov.deploy_net(width_div=16, size=65)))
    net = caffe.Net(str(deploy), caffe.TEST)
    assert "fc8_voc12" in netweights.load_weights(net, str(snapshot))


def test_data_errors_are_printed_by_caffe_train(tmp_path, dataset):
    root, _ = dataset
    solver = largefov.write_experiment(str(tmp_path / "run"), "softmax", data_root=root,
                                     list_file=str(tmp_path / "no_such_list.txt"),
                                     batch_size=2, crop=65, width_div=16, iterations=2)
    done = subprocess.run([CAFFE, "train", "-solver", solver], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    assert "list file not found" in done.stderr and "no_such_list.txt" in done.stderr
