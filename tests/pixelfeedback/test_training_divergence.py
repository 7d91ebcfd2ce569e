"""Issue 28, case 4: a real `caffe train` whose loss goes NaN (its learning rate grows
tenfold every 20 iterations) is stopped as soon as the log shows it, not after the whole
run, and ``training.TrainingDiverged`` names the iteration, the run folder and the last
snapshot with finite weights; both through the venv's caffe wrapper (whose guard stops
it) and with the bare binary (training's own watch, as in the GPU bundle)."""
import os
import pickle

import pytest

from pixelfeedback import training
from pixelfeedback.nets import largefov
from pixelfeedback.nets.weights import scan_caffemodel
from python_layers import ToolkitError
from tests.conftest import REPO, write_tiny_voc

ITERATIONS = 4000   # the loss is NaN after about 120: thousands of iterations are left


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    return root, write_tiny_voc(root, n_images=6)


def diverging_experiment(folder, data):
    root, list_file = data
    return largefov.write_experiment(
        str(folder), "softmax", data_root=root, list_file=list_file, batch_size=2, crop=33,
        width_div=16, num_classes=4, seed=3, iterations=ITERATIONS, snapshot=25,
        base_lr=1e-3, solver_overrides={"display": 1, "lr_policy": "step", "gamma": 10.0,
                                        "stepsize": 20})


def assert_stopped_at_the_first_nan(error, folder):
    log = open(folder / "train.log").read()
    first = training.first_non_finite_loss(log)
    assert first is not None
    assert isinstance(error, ToolkitError)
    assert error.iteration == first[0] < ITERATIONS
    assert error.run_dir == str(folder) and error.log_path == str(folder / "train.log")
    assert f"at iteration {first[0]}" in str(error) and str(folder / "train.log") in str(error)
    # stopped there: far from the end, no final weights, no "Optimization Done"
    assert f"Iteration {ITERATIONS}," not in log and "Optimization Done" not in log
    assert max(training.snapshots(str(folder))) < ITERATIONS // 2
    # the last finite snapshot: before the NaN, every value finite
    weights = error.last_finite_weights
    assert weights is not None and weights.endswith(".caffemodel")
    iteration = int(training.SNAPSHOT_FILE.search(weights).group(1))
    assert 0 < iteration < first[0]
    assert all(b.non_finite == 0 for blobs in scan_caffemodel(weights).values() for b in blobs)
    assert f"the last finite snapshot is {weights}" in str(error)
    copy = pickle.loads(pickle.dumps(error))   # crosses the sweep's worker processes
    assert (copy.iteration, copy.run_dir, copy.last_finite_weights, str(copy)) == \
        (error.iteration, error.run_dir, weights, str(error))


def test_the_wrapper_stops_a_diverging_training(tmp_path, data):
    solver = diverging_experiment(tmp_path, data)
    with pytest.raises(training.TrainingDiverged) as error:
        training.train(solver, str(tmp_path))
    assert_stopped_at_the_first_nan(error.value, tmp_path)
    log = open(tmp_path / "train.log").read()
    assert "error: the training loss is" in log   # the guard's line


def test_the_bare_binary_is_stopped_by_train_itself(tmp_path, data, monkeypatch):
    """Without the wrapper's guard (the GPU bundle's caffe), train() reads the log."""
    import sysconfig

    import caffe

    binary = os.path.join(REPO, "build", "caffe", "bin", "caffe")
    pycaffe = os.path.dirname(os.path.dirname(caffe.__file__))
    monkeypatch.setattr(training, "caffe_binary", lambda: binary)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [REPO, pycaffe, sysconfig.get_paths()["purelib"]]))
    solver = diverging_experiment(tmp_path, data)
    with pytest.raises(training.TrainingDiverged) as error:
        training.train(solver, str(tmp_path))
    assert_stopped_at_the_first_nan(error.value, tmp_path)
    assert "error: the training loss is" not in open(tmp_path / "train.log").read()


def test_last_finite_snapshot_skips_broken_and_later_ones(tmp_path, data):
    solver = diverging_experiment(tmp_path, data)
    with pytest.raises(training.TrainingDiverged) as error:
        training.train(solver, str(tmp_path))
    finite = error.value.last_finite_weights
    assert training.last_finite_snapshot(str(tmp_path), before=25) is None
    newest = max(training.snapshots(str(tmp_path)))
    nan_weights = [p for p in training.snapshots(str(tmp_path))[newest]
                   if p.endswith(".caffemodel")]
    if nan_weights:   # a snapshot after the NaN holds NaN: never the last finite one
        assert training.last_finite_snapshot(str(tmp_path)) == finite
    with open(finite, "r+b") as f:   # cut short: the one before it
        f.truncate(os.path.getsize(finite) // 2)
    earlier = training.last_finite_snapshot(str(tmp_path), before=error.value.iteration)
    assert earlier != finite and earlier is not None
