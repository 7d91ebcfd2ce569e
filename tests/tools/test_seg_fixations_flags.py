"""Every flag of tools/seg_fixations.py, through the script's own main(), reaches the
namespace image_fixations.run reads, and from there the pipeline call it names (the model
resolution, the net's device, the input size and mean, the tracker, the trace's options,
the figures' opacity and folder, the flow) (issue 20 item 9); numbers and choices are
checked by argparse. The pipeline's functions are replaced by recorders: nothing is run."""
import inspect
import types

import numpy as np
import pytest

from tests.flag_harness import (assert_flag_changes, assert_flag_reaches, assert_usage_error,
                                capture_call, flag_ids, parser_flags, record_steps,
                                table_flags)
from pixelfeedback import files, fixation_outputs, image_fixations, pipeline
from python_layers import voc_io

SCRIPT = "tools/seg_fixations.py"
NEEDED = ["--model", "m.prototxt", "--image", "photo.jpg"]   # a given model needs an image

FLAGS = [  # (flag, value, args attribute, expected, {recorded pipeline argument: expected})
    ("--model", "other.prototxt", "model", "other.prototxt",
     {"resolve_model.model": "other.prototxt"}),
    ("--weights", "w/x.caffemodel", "weights", "w/x.caffemodel",
     {"resolve_model.weights": "w/x.caffemodel"}),
    ("--image", "pics/cat.png", "image", "pics/cat.png",
     {"read_image.path": "pics/cat.png", "write_outputs.stem": "cat",
      "write_outputs.out_dir": "runs/fixations/cat",
      "write_json.path": "runs/fixations/cat/summary.json"}),
    ("--score-blob", "fc8", "score_blob", "fc8", {"resolve_model.score_blob": "fc8"}),
    ("--shift", "full", "shift", "full", {"make_tracker.shift": "full"}),
    ("--k", "fraction:0.1", "k", "fraction:0.1", {"make_tracker.k": "fraction:0.1"}),
    ("--max-units", "9", "max_units", 9, {"make_tracker.max_units": 9}),
    ("--classes", "cat,2", "classes", "cat,2", {"parse_classes.text": "cat,2"}),
    ("--include-background", None, "include_background", True,
     {"run_fixations.skip_background": False}),
    ("--class-names", "bg, cat,dog", "class_names", "bg, cat,dog",
     {"class_names_for.names": ["bg", "cat", "dog"]}),
    ("--size", "0", "size", 0, {"prepare_input.size": 0}),
    ("--mean", "1,2.5,3", "mean", (1.0, 2.5, 3.0), {"resolve_model.mean": (1.0, 2.5, 3.0)}),
    ("--sigma", "2.5", "sigma", 2.5, {"run_fixations.sigma": 2.5}),
    ("--radius-fraction", "0.3", "radius_fraction", 0.3, {"run_fixations.radius_fraction": 0.3}),
    ("--min-fraction", "0.2", "min_fraction", 0.2, {"run_fixations.min_fraction": 0.2}),
    ("--no-outlier-removal", None, "no_outlier_removal", True,
     {"run_fixations.remove_outliers": False}),
    ("--alpha", "0.8", "alpha", 0.8, {"write_outputs.alpha": 0.8, "write_figure_2_4.alpha": 0.8}),
    ("--no-flow", None, "flow", False, {"run_fixations.keep_layers": False,
                                        "write_flow.called": False}),
    ("--gpu", "1", "gpu", 1, {"load_model.gpu": 1}),
    ("--out", "elsewhere/fix", "out", "elsewhere/fix",
     {"write_outputs.out_dir": "elsewhere/fix", "write_json.path": "elsewhere/fix/summary.json"}),
]
IDS = flag_ids(FLAGS)
DATA_SIDE = 513   # the fake net's input side (the default --size)


@pytest.fixture
def captured(monkeypatch):
    """main() with NEEDED plus the given arguments -> the namespace image_fixations.run got."""
    return capture_call(monkeypatch, SCRIPT, image_fixations, "run", bind=False, needed=NEEDED)


class _Blobs(dict):
    def __missing__(self, name):   # any score blob: 21 classes
        return types.SimpleNamespace(data=np.zeros((1, 21, 65, 65), np.float32))


@pytest.fixture
def calls(monkeypatch):
    """main() with NEEDED plus the given arguments, through the real image_fixations.run
    with the pipeline's functions replaced by recorders -> {"function.parameter": value}
    (by the real functions' parameter names)."""
    seen = {}
    spec = pipeline.ModelSpec("m", "m.prototxt", "m.caffemodel", "scores", (0.0, 0.0, 0.0),
                              "segmentation", None, None)
    net = types.SimpleNamespace(blobs=_Blobs(
        data=types.SimpleNamespace(data=np.zeros((1, 3, DATA_SIDE, DATA_SIDE), np.float32))))
    image = np.zeros((10, 12, 3), np.uint8)

    def recorder(module, name, result, keep=None):
        signature = inspect.signature(getattr(module, name))   # the real function's

        def fake(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            for key, value in bound.arguments.items():
                if keep is None or key in keep:
                    seen[f"{name}.{key}"] = value
            seen[f"{name}.called"] = True
            return result(bound.arguments) if callable(result) else result
        monkeypatch.setattr(module, name, fake)

    recorder(pipeline, "resolve_model", spec)
    recorder(voc_io, "read_image", image, keep={"path"})
    recorder(pipeline, "load_model", net, keep={"spec", "gpu"})
    recorder(pipeline, "net_kind", "segmentation", keep=())
    recorder(pipeline, "prepare_input", lambda a: (np.zeros((1, 3, 4, 4)), a["image"], None),
             keep={"size", "mean", "kind"})
    recorder(pipeline, "model_class_names", None, keep=())
    recorder(pipeline, "class_names_for", lambda a: a["names"] or ["bg", "cat"], keep={"names"})
    recorder(pipeline, "make_tracker", types.SimpleNamespace(max_units=7, graph=None),
             keep={"prototxt", "shift", "k", "max_units"})
    recorder(pipeline, "parse_classes", None, keep={"text"})
    recorder(pipeline, "run_fixations", [],
             keep={"score_blob", "kind", "skip_background", "sigma", "remove_outliers",
                   "radius_fraction", "min_fraction", "keep_layers"})
    recorder(fixation_outputs, "write_outputs", lambda a: ([], a["out_dir"] + "/fig.png"),
             keep={"out_dir", "stem", "alpha"})
    recorder(fixation_outputs, "write_figure_2_4", None, keep={"alpha"})
    recorder(fixation_outputs, "write_flow", [], keep=())
    recorder(files, "write_json", None, keep={"path"})

    return record_steps(monkeypatch, SCRIPT, seen, {"write_flow.called": False}, NEEDED)


@pytest.mark.parametrize("flag, value, attribute, expected, changes", FLAGS, ids=IDS)
def test_each_flag_reaches_the_namespace(captured, flag, value, attribute, expected, changes):
    assert_flag_reaches(captured, flag, value, attribute, expected)


@pytest.mark.parametrize("flag, value, attribute, expected, changes", FLAGS, ids=IDS)
def test_each_flag_reaches_the_pipeline(calls, flag, value, attribute, expected, changes):
    assert_flag_changes(calls, flag, value, changes)


def test_the_defaults_reach_the_pipeline(calls):
    call = calls()
    assert call["resolve_model.model"] == "m.prototxt" and call["read_image.path"] == "photo.jpg"
    assert call["resolve_model.weights"] is None and call["resolve_model.mean"] is None
    assert call["load_model.gpu"] is None and call["prepare_input.size"] == DATA_SIDE
    assert (call["make_tracker.shift"], call["make_tracker.k"]) == \
        (pipeline.DEFAULT_SHIFT, pipeline.DEFAULT_K)
    assert call["run_fixations.keep_layers"] is True and call["write_flow.called"] is True
    assert call["run_fixations.skip_background"] is True
    assert call["write_outputs.out_dir"] == "runs/fixations/photo"
    assert call["write_json.path"] == "runs/fixations/photo/summary.json"


def test_flow_after_no_flow_turns_it_back_on(captured):
    assert captured("--no-flow").flow is False and captured("--no-flow", "--flow").flow is True


def test_flow_after_no_flow_writes_the_flow(calls):
    call = calls("--no-flow", "--flow")
    assert call["run_fixations.keep_layers"] is True and call["write_flow.called"] is True


def test_the_demo_model_takes_score_blob_and_mean(calls, monkeypatch):
    demo_spec = pipeline.ModelSpec("demo", "d.prototxt", "d.caffemodel", "fc8_demo",
                                   (9.0, 9.0, 9.0), "segmentation", None, None)
    monkeypatch.setattr(image_fixations, "fixation_demo", lambda work_dir: types.SimpleNamespace(
        model=demo_spec, image=np.zeros((10, 12, 3), np.uint8), stem="demo_val"))
    call = calls(needed=[])
    assert call["load_model.spec"] == demo_spec and "resolve_model.called" not in call
    call = calls("--score-blob", "fc7", "--mean", "1,2,3", needed=[])
    assert call["load_model.spec"] == demo_spec._replace(score_blob="fc7", mean=(1.0, 2.0, 3.0))
    assert call["run_fixations.score_blob"] == "fc7"
    assert call["prepare_input.mean"] == (1.0, 2.0, 3.0)


def test_every_flag_is_in_this_test():
    assert parser_flags(SCRIPT) == table_flags(FLAGS) | {"--flow"}


@pytest.mark.parametrize("flag, value", [
    ("--shift", "diagonal"), ("--max-units", "0"), ("--size", "-1"), ("--mean", "1,2"),
    ("--sigma", "-1"), ("--sigma", "nan"), ("--radius-fraction", "0"), ("--min-fraction", "1"),
    ("--min-fraction", "-0.1"), ("--alpha", "1.5"), ("--gpu", "-1")])
def test_bad_values_are_usage_errors(flag, value, capsys):
    assert_usage_error(SCRIPT, NEEDED + [flag, value], f"argument {flag}", capsys)


def test_an_image_or_weights_without_a_model_is_an_error_naming_the_flags(capsys):
    assert_usage_error(SCRIPT, ["--image", "photo.jpg"], "--model", capsys)
    assert_usage_error(SCRIPT, ["--model", "m.prototxt"], "--image", capsys)
