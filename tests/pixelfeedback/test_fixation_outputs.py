"""pixelfeedback.fixation_outputs through the Python API: one image traced with
keep_layers (pipeline.run_fixations), then its flow and Figure 2.4 written; the seeds are
the score units of each class."""
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from pixelfeedback import fixation_figures as ff
from pixelfeedback import fixation_outputs, pipeline
from pixelfeedback.nets import largefov, netspec, registry
from pixelfeedback.nets.weights import fill_random_weights


@pytest.fixture(scope="module")
def traced(tmp_path_factory, caffe):
    """A reduced LargeFOV (5 classes, input 65) with random weights, one image traced with
    keep_layers through the pipeline."""
    root = tmp_path_factory.mktemp("figures")
    prototxt = str(root / "deploy.prototxt")
    netspec.write_net(largefov.deploy_net(width_div=32, num_classes=5, size=65), prototxt)
    net = caffe.Net(prototxt, caffe.TEST)
    fill_random_weights(net, seed=1)
    image = (np.random.RandomState(3).rand(50, 60, 3) * 255).astype(np.uint8)
    data, image, _ = pipeline.prepare_input(image, 65, registry.DEEPLAB_MEAN)
    tracker = pipeline.make_tracker(net, prototxt, "partial", "resolution")
    results = pipeline.run_fixations(net, tracker, data, image, "fc8_voc12",
                                     skip_background=False, keep_layers=True)
    return dict(root=root, net=net, tracker=tracker, image=image, results=results)


def test_python_api_writes_the_flow_and_figure_2_4(traced, tmp_path):
    results, net = traced["results"], traced["net"]
    assert results and all(r.layers is not None for r in results)
    names = pipeline.class_names_for(5, ["bg", "a", "b", "c", "d"])
    written = fixation_outputs.write_flow(str(tmp_path), "img", traced["image"], results,
                                          traced["tracker"].graph, net)
    shapes = {name: blob.data.shape for name, blob in net.blobs.items()}
    for result in written:
        stages = ff.flow_stages(result.layers, traced["tracker"].graph, shapes)
        assert stages[0].blob == "fc8_voc12" and stages[-1].blob == "data"
        assert stages[0].units == result.score_units      # the seeds
        with Image.open(result.files["flow_gif"]) as animation:
            assert animation.n_frames == len(stages)
        assert cv2.imread(result.files["flow"]) is not None
        units = np.genfromtxt(result.files["flow_units"], delimiter=",", dtype=None,
                              names=True, encoding=None)
        assert set(units["class"]) == {result.name}
        for blob, blob_units in result.layers.items():
            assert np.count_nonzero(units["blob"] == blob) == len(blob_units)
    figure = fixation_outputs.write_figure_2_4(str(tmp_path), "img", traced["image"], results,
                                               net, "fc8_voc12", names, "segmentation")
    assert os.path.basename(figure) == "img_figure_2_4.png"
    picture = cv2.imread(figure)
    assert picture is not None and picture.shape[0] > 100 * len(results)
    assert os.path.getsize(figure) < 300_000


def test_seeds_are_the_score_units_of_the_class(traced):
    net, results = traced["net"], traced["results"]
    scores = net.blobs["fc8_voc12"].data
    region = pipeline.image_region(scores.shape, (65, 65), traced["image"].shape[:2])
    label = np.where(region, scores[0].argmax(0), 0)
    for result in results:
        np.testing.assert_array_equal(result.seeds, np.argwhere(label == result.class_id))
        assert len(result.seeds) == result.score_units


def test_flow_needs_the_traced_blobs(traced, tmp_path):
    from python_layers import ToolkitError

    bare = [r._replace(layers=None) for r in traced["results"]]
    with pytest.raises(ToolkitError, match="keep_layers=True"):
        fixation_outputs.write_flow(str(tmp_path), "img", traced["image"], bare,
                                    traced["tracker"].graph, traced["net"])
