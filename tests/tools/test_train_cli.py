"""`caffe train` on the command line with every solver kind that pixelfeedback/nets/largefov.py writes
(reduced width, tiny generated data): it runs, the logged loss is finite and goes down,
the snapshot loads back into the deploy net, and the template term changes the trained
weights by an amount that grows with its weight lambda."""
import math
import os
import re
import subprocess

import numpy as np
import pytest

from tests.conftest import REPO, write_tiny_voc
from pixelfeedback import training
from pixelfeedback.nets import largefov, netspec
from pixelfeedback.nets import weights as netweights

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
    done = subprocess.run([training.caffe_binary(), "train", "-solver", solver], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
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
    done = subprocess.run([training.caffe_binary(), "train", "-solver", solver], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "list file not found" in done.stderr and "no_such_list.txt" in done.stderr


# --- the template term changes training, the more the larger lambda -----------------------

TERM_ITERATIONS = 20
TERM_LAMBDAS = (0.0, 0.1, 1.0)


def trained_weights(run_dir, dataset, loss, lam=0.0):
    """{layer: [arrays]} of the final snapshot of a fine-tune with ``loss`` at weight
    ``lam`` on the shared data, seed and initial weights (so only the loss differs)."""
    root, list_path = dataset
    solver = largefov.write_experiment(
        str(run_dir), loss, lam=lam, data_root=root, list_file=list_path, batch_size=2,
        crop=65, width_div=16, seed=1, iterations=TERM_ITERATIONS)
    training.train(solver, str(run_dir))
    model = netweights.read_caffemodel(training.final_weights(str(run_dir), TERM_ITERATIONS))
    return {layer.name: [np.array(blob.data) for blob in layer.blobs]
            for layer in model.layer if layer.blobs}


def distance(a, b):
    """The L2 distance between two sets of weights with the same layers."""
    assert a.keys() == b.keys()
    return float(np.sqrt(sum(np.sum((x - y) ** 2)
                             for name in a for x, y in zip(a[name], b[name]))))


@pytest.fixture(scope="module")
def control_weights(tmp_path_factory, dataset):
    return trained_weights(tmp_path_factory.mktemp("control"), dataset, "softmax")


def test_training_at_the_same_seed_is_repeatable(tmp_path, dataset, control_weights):
    assert distance(control_weights, trained_weights(tmp_path, dataset, "softmax")) == 0.0


@pytest.mark.parametrize("loss", largefov.TEMPLATE_LOSSES)
def test_the_template_term_moves_the_weights_away_from_the_control_more_with_lambda(
        tmp_path, dataset, control_weights, loss):
    distances = [distance(control_weights,
                          trained_weights(tmp_path / f"lam{lam:g}", dataset, loss, lam))
                 for lam in TERM_LAMBDAS]
    # lambda 0 trains exactly as the control; the template term moves fc6..fc8 (conv1..5
    # are frozen) further from the control's weights the larger its weight.
    assert distances[0] == 0.0, distances
    assert 0 < distances[1] < distances[2], distances
