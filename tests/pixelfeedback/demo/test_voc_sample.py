"""The VOC-layout sample of make docker-check (pixelfeedback/demo/voc_sample.py): its labels
are VOC palette PNGs with the synthetic classes at VOC's ids, and its surgery weights score
the mapped classes exactly as the demo model does."""
import os

import numpy as np
import pytest
from PIL import Image

from pixelfeedback import synthetic, voc_data
from pixelfeedback.demo import model as demo_model
from pixelfeedback.demo import voc_sample
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.nets.weights import load_weights
from tests.conftest import load_script
from tests.python_layers.test_voc_io import VOC_COLOURS

# written out by hand from VOC's class list: cat 8, chair 9, dog 12, sofa 18
SYNTHETIC_TO_VOC = {0: 0, 1: 8, 2: 12, 3: 9, 4: 18, 255: 255}


def test_voc_folder_labels_are_voc_palette_pngs_with_the_mapped_ids(tmp_path):
    voc_root = tmp_path / "VOCdevkit" / "VOC2012"
    ids = voc_sample.write_voc_folder(str(voc_root), n_train=3, n_val=2, size=65, seed=1)
    assert len(ids["train"]) == 3 and len(ids["val"]) == 2
    seen = set()
    for split in ("train", "val"):
        listed = (voc_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
        assert listed == ids[split]
        for index, image_id in enumerate(ids[split]):
            assert (voc_root / "JPEGImages" / f"{image_id}.jpg").is_file()
            with Image.open(voc_root / "SegmentationClass" / f"{image_id}.png") as img:
                assert img.mode == "P"
                palette = np.array(img.getpalette()[:3 * 256]).reshape(-1, 3)
                label = np.array(img)
            for voc_id, rgb in VOC_COLOURS.items():
                assert tuple(palette[voc_id]) == tuple(rgb)
            synthetic_label = synthetic.render_example(
                synthetic.example_rng(1, split, index), 65)[1]
            expected = np.vectorize(SYNTHETIC_TO_VOC.get)(synthetic_label)
            np.testing.assert_array_equal(label, expected)
            seen |= set(np.unique(label).tolist())
    assert seen <= set(SYNTHETIC_TO_VOC.values()) and seen & {8, 9, 12, 18}
    # what the image's entrypoint runs on the mounted folder
    counts = voc_data.lists_for_existing(str(voc_root), str(tmp_path / "lists"))
    assert counts == {"train": 3, "val": 2}


def test_surgery_weights_score_the_mapped_classes_as_the_demo_model(tmp_path, caffe):
    weights = voc_sample.voc21_weights(str(tmp_path / "w21.caffemodel"))
    nets = {}
    for classes, path in ((5, demo_model.DEMO_WEIGHTS), (21, weights)):
        prototxt = str(tmp_path / f"deploy{classes}.prototxt")
        write_net(largefov.deploy_net(width_div=8, num_classes=classes, size=129), prototxt)
        nets[classes] = caffe.Net(prototxt, caffe.TEST)
        load_weights(nets[classes], path)  # every layer, shapes checked
    image = synthetic.render_example(synthetic.example_rng(0, "val", 5), 129)[0]
    data = (image.astype(np.float32) - np.float32(registry.DEEPLAB_MEAN))
    scores = {}
    for classes, net in nets.items():
        net.blobs["data"].data[0] = data.transpose(2, 0, 1)
        scores[classes] = net.forward()["fc8_voc12"][0].copy()
    assert scores[21].shape[0] == 21
    for k, voc_id in SYNTHETIC_TO_VOC.items():
        if k != 255:
            np.testing.assert_array_equal(scores[21][voc_id], scores[5][k])
    others = [c for c in range(21) if c not in SYNTHETIC_TO_VOC.values()]
    np.testing.assert_array_equal(scores[21][others], voc_sample.OTHER_BIAS)


def test_fc8_surgery_refuses_another_class_count():
    with pytest.raises(voc_sample.ToolkitError, match="fc8 has 3 outputs"):
        voc_sample.fc8_surgery(np.zeros((3, 4, 1, 1)), np.zeros(3))


def test_script_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    voc_root = tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages"
    voc_root.mkdir(parents=True)
    (voc_root / "real.jpg").write_bytes(b"")
    script = load_script("tools/make_voc_sample.py")
    assert script.main(["--out", str(tmp_path), "--no-weights"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert script.main(["--out", str(tmp_path / "new"), "--no-weights", "--train", "1",
                        "--val", "1", "--size", "65"]) == 0
    assert os.path.isfile(tmp_path / "new" / "VOCdevkit" / "VOC2012" / "ImageSets" /
                          "Segmentation" / "val.txt")
    capsys.readouterr()
    assert script.main(["--out", str(tmp_path / "other"), "--size", "100"]) == 2
    assert "--size" in capsys.readouterr().err and not (tmp_path / "other").exists()
    with pytest.raises(voc_sample.ToolkitError, match="1 to 9999"):
        voc_sample.write_voc_folder(str(tmp_path / "x"), n_train=10000)
