"""Every key of each run folder's fingerprint, changed in turn, is refused naming it
(issue 28): the evaluation's, an experiment's and the demo's (the sweep's walk is in
test_sweep_fingerprint.py). A key added without a case here fails its walk."""
import json
import os
import re
import shutil

import numpy as np
import pytest

from tests.conftest import write_tiny_voc
from pixelfeedback import evaluation, experiments, synthetic
from pixelfeedback.nets import largefov, netspec
from pixelfeedback.nets.weights import fill_random_weights
from pixelfeedback.runfolder import CONTENTS
from python_layers import ToolkitError

SIZE = 65


def refused_naming(key):
    return pytest.raises(ToolkitError, match=rf"of other settings \(.*\b{re.escape(key)}[:.]")


def net_files(folder, caffe, num_classes, builder, name, seed=0):
    prototxt = os.path.join(folder, f"{name}.prototxt")
    netspec.write_net(builder(width_div=32, num_classes=num_classes, size=SIZE), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    fill_random_weights(net, seed=seed)
    weights = os.path.join(folder, f"{name}.caffemodel")
    net.save(weights)
    return prototxt, weights


# --- evaluation --------------------------------------------------------------------------

@pytest.fixture
def evaluated(tmp_path, caffe):
    root = str(tmp_path / "voc")
    list_file = write_tiny_voc(root, n_images=3, list_name="val.txt")
    model = net_files(str(tmp_path), caffe, 4, largefov.test_net, "test")
    options = dict(num_classes=4, size=SIZE, progress=False)
    out = str(tmp_path / "eval")
    evaluation.evaluate(model, list_file, root, out, **options)
    return tmp_path, model, list_file, root, out, options


def other(tmp_path, path, name):
    copy = str(tmp_path / name)
    (shutil.copytree if os.path.isdir(path) else shutil.copy)(path, copy)
    return copy


EVALUATION_CHANGES = {  # key -> (model, list, root, options) changed
    "model": lambda t, m, l, r, o, caffe: ((other(t, m[0], "moved.prototxt"), m[1]), l, r, o),
    "parameters_sha256": lambda t, m, l, r, o, caffe: (
        (m[0], net_files(str(t), caffe, 4, largefov.test_net, "test2", seed=5)[1]), l, r, o),
    "list": lambda t, m, l, r, o, caffe: (m, other(t, l, "val2.txt"), r, o),
    "data_root": lambda t, m, l, r, o, caffe: (m, l, other(t, r, "voc2"), o),
    "num_classes": lambda t, m, l, r, o, caffe: (
        net_files(str(t), caffe, 5, largefov.test_net, "five"), l, r, dict(o, num_classes=5)),
    "size": lambda t, m, l, r, o, caffe: (m, l, r, dict(o, size=73)),
    "mean": lambda t, m, l, r, o, caffe: (m, l, r, dict(o, mean=(1.0, 2.0, 3.0))),
    "output_blob": lambda t, m, l, r, o, caffe: (m, l, r, dict(o, output_blob="fc8_interp")),
}


def test_every_evaluation_key_has_a_case(evaluated):
    *_, out, _ = evaluated
    stored = json.load(open(os.path.join(out, "settings.json")))
    assert set(stored) - {CONTENTS} == set(EVALUATION_CHANGES)
    assert set(stored[CONTENTS]) == {"list"}


@pytest.mark.parametrize("key", sorted(EVALUATION_CHANGES))
def test_a_changed_evaluation_setting_is_refused_naming_it(evaluated, caffe, key):
    tmp_path, model, list_file, root, out, options = evaluated
    model, list_file, root, options = EVALUATION_CHANGES[key](tmp_path, model, list_file, root,
                                                              options, caffe)
    with refused_naming(key):
        evaluation.evaluate(model, list_file, root, out, **options)


def test_a_list_changed_under_the_same_path_is_refused(evaluated):
    tmp_path, model, list_file, root, out, options = evaluated
    lines = open(list_file).readlines()
    open(list_file, "w").writelines(lines[:1])
    with refused_naming("contents.list"):
        evaluation.evaluate(model, list_file, root, out, **options)


# --- an experiment -----------------------------------------------------------------------

@pytest.fixture
def located(tmp_path, caffe):
    info = synthetic.generate(str(tmp_path / "synthetic"), n_train=1, n_val=2, size=SIZE)
    model = net_files(str(tmp_path), caffe, 5, largefov.deploy_net, "deploy")
    options = dict(progress=False, size=SIZE, num_classes=5)
    out = str(tmp_path / "exp")
    experiments.fixation_location(*model, info["root"], info["val_list"], out, **options)
    return tmp_path, model, info, out, options


CONSTANTS = {"records_version", "experiment"}  # of the code, not settings a user changes
LOCATION_CHANGES = {
    "prototxt": lambda t, m, i, o, caffe: ((other(t, m[0], "moved.prototxt"), m[1]), i, o),
    "parameters_sha256": lambda t, m, i, o, caffe: (
        (m[0], net_files(str(t), caffe, 5, largefov.deploy_net, "d2", seed=5)[1]), i, o),
    "data_root": lambda t, m, i, o, caffe: (m, dict(i, root=other(t, i["root"], "syn2")), o),
    "size": lambda t, m, i, o, caffe: (m, i, dict(o, size=73)),
    "mean": lambda t, m, i, o, caffe: (m, i, dict(o, mean=(1.0, 2.0, 3.0))),
    "score_blob": None,   # the net's own score blob: only another net changes it (model)
    "num_classes": None,  # the net's classes: only another net changes it (parameters)
    "k": lambda t, m, i, o, caffe: (m, i, dict(o, k="2")),
    "shift": lambda t, m, i, o, caffe: (m, i, dict(o, shift="full")),
    "void": lambda t, m, i, o, caffe: (m, i, dict(o, void="outside")),
}


def test_every_experiment_key_has_a_case(located):
    *_, out, _ = located
    stored = json.load(open(os.path.join(out, experiments.runner.EXPERIMENT_FOLDERS,
                                         "location", "settings.json")))
    assert set(stored) - CONSTANTS == set(LOCATION_CHANGES)


@pytest.mark.parametrize("key", sorted(k for k, v in LOCATION_CHANGES.items() if v))
def test_a_changed_experiment_setting_is_refused_naming_it(located, caffe, key):
    tmp_path, model, info, out, options = located
    model, info, options = LOCATION_CHANGES[key](tmp_path, model, info, options, caffe)
    with refused_naming(key):
        experiments.fixation_location(*model, info["root"], info["val_list"], out, **options)


# --- the demo ----------------------------------------------------------------------------

class Stop(Exception):
    pass


def test_every_demo_key_is_refused_naming_it(tmp_path, monkeypatch):
    from pixelfeedback.demo import model as demo, run as demo_run

    def stop(*args, **kwargs):
        raise Stop()

    monkeypatch.setattr(demo_run, "make_data", stop)
    out, data = str(tmp_path / "demo"), str(tmp_path / "data")
    with pytest.raises(Stop):
        demo_run.run_demo(out=out, data_dir=data, quick=True, progress=False)
    stored = json.load(open(os.path.join(out, "settings.json")))
    changes = {
        "mode": dict(quick=False),
        "steps": None,   # monkeypatched below: the quick mode's settings changed
        "recipe_id": dict(recipe=dict(demo.RECIPE, data=dict(demo.RECIPE["data"], seed=7))),
        "retrain": dict(retrain=True),
    }
    assert set(stored) == set(changes)
    quick = demo.SETTINGS["quick"]
    for key, change in changes.items():
        if change is None:
            monkeypatch.setitem(demo.SETTINGS, "quick", dict(quick, val_images=11))
        with refused_naming(key):
            demo_run.run_demo(**dict(dict(out=out, data_dir=data, quick=True, progress=False),
                                     **(change or {})))
        monkeypatch.setitem(demo.SETTINGS, "quick", quick)
