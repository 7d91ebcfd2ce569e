"""pixelfeedback.fixation_figures: the receptive-field centres the flow draws (worked out by
hand on small nets), the flow's stages, its PNG strip and GIF, and Figure 2.4 (written
from a traced image: tests/pixelfeedback/test_fixation_outputs.py)."""
import cv2
import numpy as np
from PIL import Image

from pixelfeedback import fixation_figures as ff
from pixelfeedback.fixations import NetGraph


def graph_of(text):
    return NetGraph.from_text(text)


NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 20 dim: 24 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc6" type: "Convolution" bottom: "pool1" top: "fc6"
        convolution_param { num_output: 4 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "fc6" top: "up"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 } }
layer { name: "zoom" type: "Python" bottom: "up" top: "zoom"
        python_param { module: "python_layers.interp" layer: "Zoom" param_str: "{\\"factor\\": 2}" } }
layer { name: "gpool" type: "Pooling" bottom: "zoom" top: "gpool" pooling_param { pool: AVE global_pooling: true } }
"""


def test_receptive_field_centres_by_hand():
    # conv1 (k3 s2 p1): y_in = 2y - 1 + 1 = 2y. pool1 (k2 s2): y_in = 2y + 0.5 -> image
    # 2(2y + 0.5) = 4y + 1. fc6 (k3 d2 p2): y_in = y - 2 + 2 = y -> 4y + 1.
    # up (deconv k4 s2 p1): centre (4 - 1)/2 = 1.5: y_in = (y + 1 - 1.5)/2 = y/2 - 0.25 ->
    # image 4(y/2 - 0.25) + 1 = 2y. zoom x2 of an h-row map: y_in = y (h-1)/(2h-2) = y/2 ->
    # image y. Global pooling has no spatial map: left out.
    shapes = {"data": (1, 3, 20, 24), "conv1": (1, 4, 10, 12), "pool1": (1, 4, 5, 6),
              "fc6": (1, 4, 5, 6), "up": (1, 4, 10, 12), "zoom": (1, 4, 19, 23),
              "gpool": (1, 4, 1, 1)}
    centres = ff.receptive_field_centres(graph_of(NET), shapes)
    assert centres["conv1"] == ((2.0, 0.0), (2.0, 0.0))
    assert centres["pool1"] == ((4.0, 1.0), (4.0, 1.0))
    assert centres["fc6"] == ((4.0, 1.0), (4.0, 1.0))
    assert centres["up"] == ((2.0, 0.0), (2.0, 0.0))
    assert centres["zoom"] == ((1.0, 0.0), (1.0, 0.0))
    assert "gpool" not in centres


def test_flow_stages_go_from_the_score_side_to_the_image():
    shapes = {"data": (1, 3, 20, 24), "conv1": (1, 4, 10, 12), "pool1": (1, 4, 5, 6),
              "fc6": (1, 4, 5, 6), "up": (1, 4, 10, 12), "zoom": (1, 4, 19, 23),
              "gpool": (1, 4, 1, 1)}
    layers = {"fc6": np.array([[0, 1, 2], [3, 1, 2], [1, 0, 0]]),   # two units share (1, 2)
              "pool1": np.array([[2, 1, 2]]), "conv1": np.array([[0, 3, 4]]),
              "data": np.array([[0, 6, 8], [1, 6, 8]]), "gpool": np.array([[0, 0, 0]])}
    stages = ff.flow_stages(layers, graph_of(NET), shapes)
    assert [s.blob for s in stages] == ["fc6", "pool1", "conv1", "data"]
    assert [s.units for s in stages] == [3, 1, 1, 2]
    np.testing.assert_array_equal(stages[0].points, [[1, 1], [5, 9]])   # 4y+1, distinct
    np.testing.assert_array_equal(stages[2].points, [[6, 8]])
    np.testing.assert_array_equal(stages[3].points, [[6, 8]])
    colours = ff.depth_colours(len(stages))
    assert colours.shape == (4, 3) and len({tuple(c) for c in colours}) == 4


def test_strip_and_gif_have_one_panel_and_frame_per_stage(tmp_path):
    image = (np.random.RandomState(0).rand(30, 40, 3) * 255).astype(np.uint8)
    stages = [ff.FlowStage("fc8", np.array([[3.0, 4.0]]), 1),
              ff.FlowStage("conv1", np.array([[10.0, 12.0], [20.0, 30.0]]), 2),
              ff.FlowStage("data", np.array([[10.0, 12.0]]), 3)]
    strip = ff.save_flow_strip(str(tmp_path / "strip.png"), image, stages, "cat", columns=2)
    picture = cv2.imread(strip)
    single = cv2.imread(ff.save_flow_strip(str(tmp_path / "one.png"), image, stages[:1]))
    assert picture.shape[1] > 1.9 * single.shape[1]           # two columns ...
    assert picture.shape[0] > 2 * single.shape[0]             # ... of two rows and a title
    gif = ff.save_flow_gif(str(tmp_path / "flow.gif"), image, stages, "cat")
    with Image.open(gif) as animation:
        assert animation.n_frames == 3 and animation.info["loop"] == 0
    empty = ff.save_flow_gif(str(tmp_path / "empty.gif"), image, [], "cat")
    with Image.open(empty) as animation:
        assert animation.n_frames == 1


def test_the_strip_keeps_every_dots_colour(tmp_path):
    """Twenty stages of one unit each over a noisy image: every stage's depth colour is in
    the written PNG exactly (a 64-colour palette mapped sparse dots to greys)."""
    image = (np.random.RandomState(1).rand(60, 80, 3) * 255).astype(np.uint8)
    stages = [ff.FlowStage(f"blob{i}", np.array([[30.0, 40.0]]), 1) for i in range(20)]
    strip = cv2.imread(ff.save_flow_strip(str(tmp_path / "strip.png"), image, stages, "cat"))
    found = {tuple(c) for c in strip.reshape(-1, 3).tolist()}
    missing = [i for i, colour in enumerate(ff.depth_colours(20).tolist())
               if tuple(colour) not in found]
    assert missing == []


def test_captions_say_1_unit_and_2_units(monkeypatch):
    captions = []
    real = ff._caption
    monkeypatch.setattr(ff, "_caption", lambda width, lines, *a: captions.append(lines)
                        or real(width, lines, *a))
    image = np.zeros((20, 20, 3), np.uint8)
    stages = [ff.FlowStage("fc8", np.array([[3.0, 4.0]]), 1),
              ff.FlowStage("data", np.array([[3.0, 4.0]]), 2)]
    ff.flow_panel(image, stages, 0)
    ff.flow_panel(image, stages, 1)
    assert captions == [["1. fc8", "1 unit"], ["2. data", "2 units"]]


def test_flow_units_csv_lists_every_unit_with_its_centre(tmp_path):
    """The units of every traced blob, score side first, with the receptive-field centres
    worked out by hand in test_receptive_field_centres_by_hand (fc6: 4y + 1; conv1: 2y;
    data: y); global pooling has no centre."""
    import csv

    shapes = {"data": (1, 3, 20, 24), "conv1": (1, 4, 10, 12), "pool1": (1, 4, 5, 6),
              "fc6": (1, 4, 5, 6), "up": (1, 4, 10, 12), "zoom": (1, 4, 19, 23),
              "gpool": (1, 4, 1, 1)}
    layers = {"gpool": np.array([[2, 0, 0]]), "fc6": np.array([[0, 1, 2], [3, 1, 2]]),
              "conv1": np.array([[1, 3, 4]]), "data": np.array([[2, 6, 8]])}
    path = ff.save_flow_units_csv(str(tmp_path / "units.csv"), layers, graph_of(NET), shapes,
                                  "cat", 8)
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["class", "class_id", "blob", "channel", "y", "x", "image_y", "image_x"],
        ["cat", "8", "gpool", "2", "0", "0", "", ""],
        ["cat", "8", "fc6", "0", "1", "2", "5", "9"],
        ["cat", "8", "fc6", "3", "1", "2", "5", "9"],
        ["cat", "8", "conv1", "1", "3", "4", "6", "8"],
        ["cat", "8", "data", "2", "6", "8", "6", "8"],
    ]
