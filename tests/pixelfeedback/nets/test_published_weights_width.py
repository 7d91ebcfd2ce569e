"""weights/fetch.py --width-div N checks DeepLab-LargeFOV's weights against the net with
every layer's channels divided by N, as the sweep's --width-div trains it (the docs'
rehearsal serves reduced-width weights under the published file names, issue 26 item 7);
without it, such a file is refused as not fitting the published net."""
import os

import pytest

from pixelfeedback.nets import largefov, published_weights
from tests.conftest import load_script, random_largefov_weights
from tests.pixelfeedback.test_download import FileServer


@pytest.fixture
def served(tmp_path, caffe):
    """A loopback mirror serving LargeFOV at 1/32 width as vgg16_20M.caffemodel."""
    path = random_largefov_weights(str(tmp_path), caffe, width_div=32, num_classes=21)
    server = FileServer()
    with open(path, "rb") as f:
        server.files["/m/vgg16_20M.caffemodel"] = f.read()
    yield server
    server.close()


def fetch(argv, capsys):
    status = load_script(os.path.join("weights", "fetch.py")).main(argv + ["--no-progress"])
    return status, capsys.readouterr()


def test_reduced_width_weights_fit_at_their_width_only(served, tmp_path, capsys):
    dest = tmp_path / "weights"
    status, out = fetch(["largefov-init", "--dest", str(dest), "--base-url",
                         served.url + "/m"], capsys)
    assert status == 2 and "does not fit" in out.err          # the published net: refused
    assert not (dest / "vgg16_20M.caffemodel").exists()
    status, out = fetch(["largefov-init", "--dest", str(dest), "--base-url", served.url + "/m",
                         "--width-div", "32"], capsys)
    assert status == 0, out.err
    assert "parameter shapes fit DeepLab-LargeFOV at --width-div 32" in out.out
    assert (dest / "vgg16_20M.caffemodel").is_file()
    status, out = fetch(["--verify", "largefov-init", "--dest", str(dest), "--width-div", "16"],
                        capsys)
    assert status == 2 and ("shape mismatch: layer conv1_1 blob 0: caffemodel (2, 3, 3, 3), "
                            "prototxt (4, 3, 3, 3)") in out.err


def test_width_div_is_refused_for_other_models_and_bad_values(tmp_path, capsys):
    status, out = fetch(["fcn8s", "--dest", str(tmp_path), "--width-div", "8"], capsys)
    assert status == 2
    assert out.err.startswith("error: --width-div 8 checks the shapes against DeepLab-LargeFOV")
    assert "fcn8s is no LargeFOV model" in out.err
    status, out = fetch(["largefov", "--dest", str(tmp_path), "--width-div", "3"], capsys)
    assert status == 2 and out.err.startswith("error: --width-div must divide 64")


def test_the_full_width_shapes_are_the_deploy_prototxts():
    shapes, source = published_weights.deploy_shapes("largefov")
    assert source == os.path.join("prototxt", "deploy.prototxt")
    reduced, source = published_weights.deploy_shapes("largefov", 32)
    assert source == "DeepLab-LargeFOV at --width-div 32"
    assert shapes["fc7"][0] == (largefov.FC_CHANNELS, largefov.FC_CHANNELS, 1, 1)
    assert reduced["fc7"][0] == (largefov.FC_CHANNELS // 32, largefov.FC_CHANNELS // 32, 1, 1)
