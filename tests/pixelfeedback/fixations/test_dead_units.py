"""Dead units (SPEC section 4, issue 12): a unit none of whose inputs contributes stops
there and is counted, per layer and class, in the tracker's result, the pipeline's
summary.json and the printed summary; nets worked out by hand, then the committed demo
model on the image the issue names."""
import json

import numpy as np
import pytest

from pixelfeedback import fixation_outputs, pipeline
from pixelfeedback.fixations import BackTracker, NetGraph

# data (1, 1, 1, 3) -> mid: 1x1 conv to 2 channels, in-place ReLU -> score: 1x1 conv to 2
# classes. Class 0 has zero weights and bias 0.1; class 1 reads both mid channels with
# weight 1, so class 1 wins wherever mid sums to more than 0.1.
TEXT = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 1 dim: 3 } } }
layer { name: "mid" type: "Convolution" bottom: "data" top: "mid"
        convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "mid" top: "mid" }
layer { name: "score" type: "Convolution" bottom: "mid" top: "score"
        convolution_param { num_output: 2 kernel_size: 1 } }
"""


def tiny_net(caffe, tmp_path, data, mid_bias, score_bias_1):
    path = tmp_path / "tiny.prototxt"
    path.write_text(TEXT)
    net = caffe.Net(str(path), caffe.TEST)
    net.params["mid"][0].data[...] = np.array([1, 0.5], np.float32).reshape(2, 1, 1, 1)
    net.params["mid"][1].data[...] = mid_bias
    net.params["score"][0].data[...] = np.array([[0, 0], [1, 1]], np.float32).reshape(2, 2, 1, 1)
    net.params["score"][1].data[...] = [0.1, score_bias_1]
    net.blobs["data"].data[...] = np.asarray(data, np.float32).reshape(1, 1, 1, 3)
    net.forward()
    return net, NetGraph.from_prototxt(str(path))


def test_a_seed_whose_inputs_are_all_zero_dies_at_the_score_layer(caffe, tmp_path):
    # data (1, -1, 2), mid bias 0: mid = (1, -1, 2) and (0.5, -0.5, 1), after ReLU
    # (1, 0, 2) and (0.5, 0, 1). score class 1 (bias 0.5) = 2, 0.5, 3.5 > 0.1: three seeds.
    # Seed x=1 reads mid (0, 0): both contributions exactly 0 -> dead at 'score' (before,
    # it went on through channel 0 to data x=1). Seeds x=0, 2 take channel 0 (1 > 0.5,
    # 2 > 1) and then data x=0, x=2.
    net, graph = tiny_net(caffe, tmp_path, [1, -1, 2], [0, 0], 0.5)
    result = BackTracker(net, graph).trace("score")[1]
    assert result.n_seeds == 3
    assert result.units.tolist() == [[0, 0, 0], [0, 0, 2]]
    assert result.dead == {"score": 1} and result.dead_seeds == 1


def test_a_unit_below_the_seeds_dies_where_its_inputs_are_zero(caffe, tmp_path):
    # The fc7 case of the issue. data (1, 0, 2), mid bias (0.5, 0): mid = (1.5, 0.5, 2.5)
    # and (0.5, 0, 1). score class 1 (bias 0) = 2, 0.5, 3.5: three seeds, all live. Seed
    # x=1 takes mid channel 0 (0.5 > 0), unit (0, 0, 1) = 0.5 only through its bias: its
    # one contribution 1 x data 0 is exactly 0 -> dead at 'mid'. The other two reach data.
    net, graph = tiny_net(caffe, tmp_path, [1, 0, 2], [0.5, 0], 0.0)
    result = BackTracker(net, graph).trace("score", keep_layers=True)[1]
    assert result.layers["mid"].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert result.units.tolist() == [[0, 0, 0], [0, 0, 2]]
    assert result.dead == {"mid": 1} and result.dead_seeds == 0


def test_a_class_whose_every_seed_dies_has_no_points(caffe, tmp_path):
    # data (-1, -1, -1): mid is all 0 after the ReLU, so every class-1 seed (score = its
    # bias 0.5) has only zero contributions: all three die, nothing reaches the image.
    net, graph = tiny_net(caffe, tmp_path, [-1, -1, -1], [0, 0], 0.5)
    result = BackTracker(net, graph).trace("score")[1]
    assert result.dead == {"score": 3} and result.dead_seeds == 3
    assert len(result.points) == 0 and len(result.units) == 0


def test_pipeline_reports_dead_units_in_summary_and_line(caffe, tmp_path):
    net, graph = tiny_net(caffe, tmp_path, [1, 0, 2], [0.5, 0], 0.0)
    tracker = BackTracker(net, graph)
    data = net.blobs["data"].data[0].copy()
    image = np.zeros((1, 3, 3), np.uint8)
    results = pipeline.run_fixations(net, tracker, data, image, "score", names=("bg", "obj"))
    (result,) = results
    assert result.dead_units == {"mid": 1} and result.dead_seeds == 0
    record = fixation_outputs.summary_record(result)
    assert record["dead_units_by_layer"] == {"mid": 1} and record["dead_seeds"] == 0
    json.dumps(record)
    line = fixation_outputs.summary_line(result)
    assert "dead units" in line and "mid 1" in line and "0 of 3 seeds dead" in line


@pytest.fixture(scope="module")
def demo_net(tmp_path_factory, caffe):
    """The demo baseline's committed initial weights (weights/demo/, the earlier demo
    model, in which the issue found the dead units), on the demo net."""
    from pixelfeedback.demo.model import demo_model_files, init_weights, model_spec

    prototxt, _ = demo_model_files(str(tmp_path_factory.mktemp("demo")))
    spec = model_spec(prototxt, init_weights())
    net = pipeline.load_model(spec)
    return spec, net


def test_committed_stage0_model_on_val_image_1(demo_net):
    # The case of the issue (found on the earlier demo model): on val image 1, 13 of the sofa trace's fc7 units read an fc6
    # that is all zero after its ReLU. They stop at fc7 and are counted; they used to go
    # on through fc6 channel 0.
    from pixelfeedback import synthetic
    from pixelfeedback.demo.model import RECIPE

    spec, net = demo_net
    image = synthetic.render_example(synthetic.example_rng(RECIPE["data"]["seed"], "val", 1),
                                     RECIPE["data"]["size"])[0]
    data, image, _ = pipeline.prepare_input(image, net.blobs["data"].data.shape[2], spec.mean)
    tracker = pipeline.make_tracker(net, spec.prototxt)
    results = pipeline.run_fixations(net, tracker, data, image, spec.score_blob,
                                     names=synthetic.CLASS_NAMES, keep_layers=True)
    sofa = {r.name: r for r in results}["sofa"]
    assert sofa.score_units == 26 and sofa.dead_units == {"fc7": 13} and sofa.dead_seeds == 0
    fc6 = net.blobs["fc6"].data[0]
    fc7_units = sofa.layers["fc7"]
    zero_below = [not fc6[:, y, x].any() for _, y, x in fc7_units]
    assert sum(zero_below) == 13     # exactly the fc7 units whose fc6 column is all 0
