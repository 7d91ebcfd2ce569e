"""Downloads (pixelfeedback/download.py), weights/fetch.py and tools/fetch_voc.py against a loopback
HTTP server started by the tests (127.0.0.1, a free port); nothing else is contacted."""
import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from python_layers import ToolkitError, voc_io
from tests.conftest import REPO, load_script
from pixelfeedback import download as dl
from pixelfeedback import files
from pixelfeedback.nets import loading, published_weights, registry
from pixelfeedback.nets import weights as netweights


class FileServer:
    """Serves ``files`` {url path: bytes} on 127.0.0.1. Per path, ``truncate[path] = n``
    sends the full Content-Length but only n bytes, then closes the connection;
    ``ranges`` False makes the server ignore Range headers. ``requests`` logs
    (path, Range header, status)."""

    def __init__(self):
        self.files = {}
        self.truncate = {}
        self.ranges = True
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                data = server.files.get(self.path)
                wanted = self.headers.get("Range")
                if data is None:
                    server.requests.append((self.path, wanted, 404))
                    self.send_error(404)
                    return
                start = 0
                if wanted and server.ranges:
                    start = int(wanted.split("=")[1].split("-")[0])
                    if start >= len(data):
                        server.requests.append((self.path, wanted, 416))
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                server.requests.append((self.path, wanted, 206 if start else 200))
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.truncate.get(self.path)
                self.wfile.write(body[:cut] if cut is not None else body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


PAYLOAD = np.random.RandomState(0).bytes(300_000)


# --- pixelfeedback/download.py --------------------------------------------------------------------

def test_download_success(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "sub" / "a.bin"
    info = dl.download(server.url + "/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert info == {"path": str(dest), "sha256": sha256(PAYLOAD), "size": len(PAYLOAD),
                    "recorded": False}
    assert os.listdir(tmp_path / "sub") == ["a.bin"]  # no .part left behind
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dl.download(server.url + "/a.bin", tmp_path / "b.bin", md5=md5, progress=False)


def test_wrong_checksum_leaves_no_file(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    dest = tmp_path / "a.bin"
    with pytest.raises(ToolkitError) as err:
        dl.download(server.url + "/a.bin", dest, sha256="0" * 64, progress=False)
    message = str(err.value)
    assert "sha256 mismatch" in message and server.url + "/a.bin" in message
    assert "expected " + "0" * 64 in message and sha256(PAYLOAD) in message
    assert os.listdir(tmp_path) == []


def test_broken_download_leaves_no_file_then_resumes_with_range(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.truncate["/a.bin"] = 100_000  # announces 300000 bytes, closes after 100000
    dest = tmp_path / "a.bin"
    with pytest.raises(ToolkitError) as err:
        dl.download(server.url + "/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert "incomplete" in str(err.value) or "broke off" in str(err.value)
    assert "run the same command again to resume" in str(err.value)
    assert not dest.exists()
    assert (tmp_path / "a.bin.part").stat().st_size == 100_000

    del server.truncate["/a.bin"]
    dl.download(server.url + "/a.bin", dest, sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/a.bin", "bytes=100000-", 206)
    assert not (tmp_path / "a.bin.part").exists()


def test_resume_without_range_support_starts_over(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    server.ranges = False
    (tmp_path / "a.bin.part").write_bytes(b"garbage that is not the start")
    dl.download(server.url + "/a.bin", tmp_path / "a.bin", sha256=sha256(PAYLOAD),
                progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD


def test_complete_part_file_gets_416_and_starts_over(server, tmp_path):
    server.files["/a.bin"] = PAYLOAD
    (tmp_path / "a.bin.part").write_bytes(PAYLOAD + b"extra")
    dl.download(server.url + "/a.bin", tmp_path / "a.bin", progress=False)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert [r[2] for r in server.requests] == [416, 200]


def test_http_error_and_unreachable_host(server, tmp_path):
    with pytest.raises(ToolkitError, match=r"/missing.bin failed: HTTP 404"):
        dl.download(server.url + "/missing.bin", tmp_path / "m.bin", progress=False)
    closed = FileServer()
    url = closed.url
    closed.close()
    with pytest.raises(ToolkitError, match="cannot connect to " + url):
        dl.download(url + "/a.bin", tmp_path / "m.bin", progress=False)
    assert os.listdir(tmp_path) == []


def test_record_checksum_then_detect_a_changed_file(server, tmp_path):
    record = str(tmp_path / "checksums.json")
    server.files["/w.bin"] = PAYLOAD
    info = dl.download(server.url + "/w.bin", tmp_path / "w.bin", record=record, progress=False)
    assert info["recorded"]
    with open(record) as f:
        assert json.load(f)["w.bin"]["sha256"] == sha256(PAYLOAD)
    os.unlink(tmp_path / "w.bin")
    server.files["/w.bin"] = PAYLOAD[::-1]
    with pytest.raises(ToolkitError, match="recorded in .*checksums.json"):
        dl.download(server.url + "/w.bin", tmp_path / "w.bin", record=record, progress=False)
    assert not (tmp_path / "w.bin").exists()


def test_extract_one_member_of_a_zip(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("release/readme.txt", b"hello")
        zf.writestr("release/model/train_iter_20000.caffemodel", PAYLOAD)
    server.files["/bundle.zip"] = buffer.getvalue()
    dest = tmp_path / "model.caffemodel"
    info = dl.download(server.url + "/bundle.zip", dest, member="train_iter_20000.caffemodel",
                       sha256=sha256(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD and info["sha256"] == sha256(PAYLOAD)
    assert os.listdir(tmp_path) == ["model.caffemodel"]  # the archive is gone
    with pytest.raises(ToolkitError, match="no member 'nope.caffemodel'"):
        dl.download(server.url + "/bundle.zip", tmp_path / "x", member="nope.caffemodel",
                    progress=False)
    server.files["/broken.zip"] = b"not an archive at all"
    with pytest.raises(ToolkitError, match="not a readable zip or tar archive"):
        dl.download(server.url + "/broken.zip", tmp_path / "y", member="a", progress=False)
    assert os.listdir(tmp_path) == ["model.caffemodel"]  # nothing else left behind


# --- weights/fetch.py -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fetch_weights():
    return load_script(os.path.join("weights", "fetch.py"))


def tiny_net_text(conv1_channels=4):
    """data (1,3,9,9) -> conv1 (3x3, ``conv1_channels``) -> relu1 -> score (1x1, 2)."""
    filler = 'weight_filler { type: "gaussian" std: 0.1 }'
    return "\n".join([
        'name: "tiny"',
        'layer { name: "data" type: "Input" top: "data"',
        '  input_param { shape { dim: 1 dim: 3 dim: 9 dim: 9 } } }',
        'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"',
        f'  convolution_param {{ num_output: {conv1_channels} kernel_size: 3 {filler} }} }}',
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
        'layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"',
        f'  convolution_param {{ num_output: 2 kernel_size: 1 {filler} }} }}',
    ]) + "\n"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory, caffe):
    """(prototxt, caffemodel fitting it, caffemodel of a net whose conv1 has 5 channels)."""
    folder = tmp_path_factory.mktemp("tiny")
    paths = {}
    for channels in (4, 5):
        prototxt = str(folder / f"tiny{channels}.prototxt")
        with open(prototxt, "w") as f:
            f.write(tiny_net_text(channels))
        caffemodel = str(folder / f"tiny{channels}.caffemodel")
        caffe.Net(prototxt, caffe.TEST).save(caffemodel)
        paths[channels] = (prototxt, caffemodel)
    return paths[4][0], paths[4][1], paths[5][1]


@pytest.fixture
def tiny_zoo_entry(monkeypatch, server, tiny_models):
    info = registry.ModelInfo("tiny", tiny_models[0], "tiny.caffemodel",
                         server.url + "/published/tiny.caffemodel", None, "score",
                         registry.DEEPLAB_MEAN, "segmentation", (), "a tiny test net", None)
    monkeypatch.setitem(registry.MODELS, "tiny", info)
    return info


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def test_fetch_records_sha256_then_detects_a_changed_file(
        fetch_weights, tiny_zoo_entry, tiny_models, server, tmp_path, capsys):
    good = read_bytes(tiny_models[1])
    server.files["/published/tiny.caffemodel"] = good
    dest = str(tmp_path / "weights")
    assert fetch_weights.main(["tiny", "--dest", dest, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "recorded sha256" in out and "parameter shapes fit" in out
    with open(os.path.join(dest, "checksums.json")) as f:
        assert json.load(f)["tiny.caffemodel"]["sha256"] == sha256(good)

    # Present and verified: no second request.
    requests = len(server.requests)
    assert fetch_weights.main(["tiny", "--dest", dest, "--no-progress"]) == 0
    assert len(server.requests) == requests and "sha256 verified" in capsys.readouterr().out

    # The server's file changes: a forced download fails and keeps the good file.
    server.files["/published/tiny.caffemodel"] = good[:-4] + b"\0\0\0\0"
    assert fetch_weights.main(["tiny", "--dest", dest, "--force", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sha256 mismatch") and "checksums.json" in err
    assert read_bytes(os.path.join(dest, "tiny.caffemodel")) == good

    # A local file changed after download: --verify says so.
    with open(os.path.join(dest, "tiny.caffemodel"), "ab") as f:
        f.write(b"x")
    assert fetch_weights.main(["tiny", "--dest", dest, "--verify", "--no-progress"]) == 2
    assert "changed since its sha256 was recorded" in capsys.readouterr().err


def test_fetch_reports_shape_mismatch_naming_the_layer(
        fetch_weights, tiny_zoo_entry, tiny_models, server, tmp_path, capsys):
    server.files["/published/tiny.caffemodel"] = read_bytes(tiny_models[2])  # conv1: 5 ch
    assert fetch_weights.main(["tiny", "--dest", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "layer conv1 blob 0: caffemodel (5, 3, 3, 3), prototxt (4, 3, 3, 3)" in err
    assert "layer conv1 blob 1: caffemodel (5,), prototxt (4,)" in err
    assert "layer score blob 0: caffemodel (2, 5, 1, 1), prototxt (2, 4, 1, 1)" in err
    assert "Caffe would abort" in err


def test_v1_caffemodel_with_legacy_blobs(fetch_weights, tiny_models, tmp_path, caffe):
    """Old 'layers' files with num/channels/height/width blobs: compared as Caffe does."""
    from caffe.proto import caffe_pb2

    def v1_model(conv1_channels):
        model = caffe_pb2.NetParameter()
        for name, shape in (("conv1", (conv1_channels, 3, 3, 3)), ("score", (2, 4, 1, 1))):
            layer = model.layers.add()
            layer.name = name
            layer.type = caffe_pb2.V1LayerParameter.CONVOLUTION
            for blob_shape in (shape, (1, 1, 1, shape[0])):  # weights, legacy 4-D bias
                blob = layer.blobs.add()
                blob.num, blob.channels, blob.height, blob.width = blob_shape
                blob.data.extend([0.5] * int(np.prod(blob_shape)))
        path = str(tmp_path / f"v1_{conv1_channels}.caffemodel")
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        return path

    fitting = v1_model(4)
    assert netweights.caffemodel_shapes(fitting)["conv1"][1] == ((1, 1, 1, 4), True)
    assert loading.shape_report(fitting, tiny_models[0]) == ([], [])
    net = caffe.Net(tiny_models[0], caffe.TEST)
    net.copy_from(fitting)  # Caffe agrees (it would abort otherwise)
    assert float(net.params["conv1"][1].data[0]) == 0.5
    mismatches, _ = loading.shape_report(v1_model(5), tiny_models[0])
    assert mismatches[0] == "layer conv1 blob 0: caffemodel (5, 3, 3, 3), prototxt (4, 3, 3, 3)"


def test_fetch_command_line_with_base_url_env(server, tmp_path, tiny_models):
    # --no-shape-check: any whole caffemodel is taken (issue 28: never random bytes)
    payload = read_bytes(tiny_models[1])
    server.files["/mirror/train2_iter_8000.caffemodel"] = payload
    env = dict(os.environ, TOOLKIT_WEIGHTS_BASE_URL=server.url + "/mirror")
    script = os.path.join(REPO, "weights", "fetch.py")
    done = subprocess.run([sys.executable, script, "largefov", "--dest", str(tmp_path),
                           "--no-shape-check", "--no-progress"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "train2_iter_8000.caffemodel").read_bytes() == payload
    assert "voc2012_val" in done.stdout  # the trained-on caveat
    listed = subprocess.run([sys.executable, script, "--list", "--dest", str(tmp_path)],
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "largefov" in listed.stdout
    assert "sha256 recorded" in listed.stdout
    bad = subprocess.run([sys.executable, script, "nosuchmodel"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown model nosuchmodel")


# --- tools/fetch_voc.py -----------------------------------------------------------------------

VOC_TRAIN = ["2007_000001", "2007_000002", "2008_000003"]
VOC_VAL = ["2007_000004", "2009_000005"]
SBD_TRAIN = ["2007_000002", "2009_000005", "2010_000006"]  # 2009_000005 is VOC val
SBD_VAL = ["2010_000007"]  # 2010_000007 is in SBD only: its image comes from SBD


def tar_bytes(entries, mode="w"):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def png_bytes(label):
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "x.png")
        files.write_label(path, label)
        return read_bytes(path)


def jpg_bytes(rng):
    import cv2
    return cv2.imencode(".jpg", rng.randint(0, 255, (12, 14, 3)).astype(np.uint8))[1].tobytes()


def mat_bytes(segmentation):
    import scipy.io
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"GTcls": {"Segmentation": segmentation,
                                        "CategoriesPresent": np.unique(segmentation)}})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def voc_archives():
    """(VOC tar bytes, SBD tgz bytes, {id: VOC label}, {id: SBD label})."""
    rng = np.random.RandomState(0)
    base = "VOCdevkit/VOC2012/"
    entries, voc_labels, sbd_labels = {}, {}, {}
    for image_id in VOC_TRAIN + VOC_VAL + ["2011_000099"]:  # one detection-only image
        entries[base + f"JPEGImages/{image_id}.jpg"] = jpg_bytes(rng)
    for image_id in VOC_TRAIN + VOC_VAL:
        label = rng.randint(0, 21, (12, 14)).astype(np.uint8)
        label[0] = 255
        voc_labels[image_id] = label
        entries[base + f"SegmentationClass/{image_id}.png"] = png_bytes(label)
    entries[base + "ImageSets/Segmentation/train.txt"] = "\n".join(VOC_TRAIN).encode() + b"\n"
    entries[base + "ImageSets/Segmentation/val.txt"] = "\n".join(VOC_VAL).encode() + b"\n"
    entries[base + "Annotations/2007_000001.xml"] = b"<annotation/>"
    sbd = {}
    for image_id in SBD_TRAIN + SBD_VAL:
        segmentation = rng.randint(0, 21, (12, 14)).astype(np.uint8)
        sbd_labels[image_id] = segmentation
        sbd[f"benchmark_RELEASE/dataset/cls/{image_id}.mat"] = mat_bytes(segmentation)
        sbd[f"benchmark_RELEASE/dataset/img/{image_id}.jpg"] = jpg_bytes(rng)
    sbd["benchmark_RELEASE/dataset/train.txt"] = "\n".join(SBD_TRAIN).encode() + b"\n"
    sbd["benchmark_RELEASE/dataset/val.txt"] = "\n".join(SBD_VAL).encode() + b"\n"
    return tar_bytes(entries), tar_bytes(sbd, "w:gz"), voc_labels, sbd_labels


@pytest.fixture
def fetch_voc(monkeypatch, voc_archives):
    """tools/fetch_voc.py with the published md5 sums replaced by the generated archives'."""
    from pixelfeedback import voc_data as module
    voc_tar, sbd_tgz = voc_archives[:2]
    archives = dict(module.ARCHIVES)
    archives["voc"] = archives["voc"]._replace(md5=hashlib.md5(voc_tar).hexdigest())
    archives["sbd"] = archives["sbd"]._replace(md5=hashlib.md5(sbd_tgz).hexdigest())
    monkeypatch.setattr(module, "ARCHIVES", archives)
    return load_script(os.path.join("tools", "fetch_voc.py"))


def test_fetch_voc_with_sbd_over_loopback(fetch_voc, voc_archives, server, tmp_path, capsys):
    voc_tar, sbd_tgz, voc_labels, sbd_labels = voc_archives
    server.files["/mirror/VOCtrainval_11-May-2012.tar"] = voc_tar
    server.files["/mirror/benchmark.tgz"] = sbd_tgz
    dest = tmp_path / "data"
    assert fetch_voc.main(["--dest", str(dest), "--sbd", "--base-url", server.url + "/mirror",
                           "--no-progress"]) == 0, capsys.readouterr().err
    lists = dest / "lists"
    assert (lists / "train.txt").read_text().splitlines() == [
        f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png" for i in VOC_TRAIN]
    assert (lists / "val.txt").read_text().splitlines() == [
        f"/JPEGImages/{i}.jpg /SegmentationClass/{i}.png" for i in VOC_VAL]
    # train_aug = (SBD train + SBD val + VOC train) - VOC val, sorted
    aug_ids = ["2007_000001", "2007_000002", "2008_000003", "2010_000006", "2010_000007"]
    assert (lists / "train_aug.txt").read_text().splitlines() == [
        f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png" for i in aug_ids]

    root = str(dest / "VOCdevkit" / "VOC2012")
    for list_name in ("train", "val", "train_aug"):
        for image_path, label_path in voc_io.read_list(str(lists / f"{list_name}.txt"), root):
            assert os.path.isfile(image_path) and os.path.isfile(label_path)
    aug = os.path.join(root, "SegmentationClassAug")
    # SBD-only images: the converted .mat; VOC images: VOC's label wins over SBD's.
    np.testing.assert_array_equal(voc_io.read_label(os.path.join(aug, "2010_000006.png")),
                                  sbd_labels["2010_000006"])
    np.testing.assert_array_equal(voc_io.read_label(os.path.join(aug, "2007_000002.png")),
                                  voc_labels["2007_000002"])
    np.testing.assert_array_equal(
        voc_io.read_label(os.path.join(root, "SegmentationClass", "2007_000004.png")),
        voc_labels["2007_000004"])
    assert os.listdir(dest / "downloads") == []  # archives deleted after extraction
    assert "train_aug.txt: 5 images" in capsys.readouterr().out

    # Running again reuses the extraction and the conversion: nothing is downloaded.
    requests = len(server.requests)
    os.unlink(lists / "train_aug.txt")
    assert fetch_voc.main(["--dest", str(dest), "--sbd", "--base-url", server.url + "/mirror",
                           "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "already extracted" in out and "SBD already converted" in out
    assert len(server.requests) == requests
    assert len((lists / "train_aug.txt").read_text().splitlines()) == 5


def test_fetch_voc_from_archive_and_checksum_errors(fetch_voc, voc_archives, server, tmp_path,
                                                    capsys):
    voc_tar = voc_archives[0]
    local = tmp_path / "VOCtrainval_11-May-2012.tar"
    local.write_bytes(voc_tar)
    dest = tmp_path / "data"
    assert fetch_voc.main(["--dest", str(dest), "--from-archive", str(local),
                           "--no-progress"]) == 0
    assert (dest / "lists" / "val.txt").is_file()
    assert not (dest / "lists" / "train_aug.txt").exists()
    assert local.exists()  # a user's archive is never deleted
    capsys.readouterr()

    # A corrupted mirror: md5 mismatch, nothing left in downloads/, exit status 2.
    server.files["/bad/VOCtrainval_11-May-2012.tar"] = voc_tar[:-10] + b"0123456789"
    dest2 = tmp_path / "data2"
    assert fetch_voc.main(["--dest", str(dest2), "--base-url", server.url + "/bad",
                           "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: md5 mismatch") and "VOCtrainval_11-May-2012.tar" in err
    assert os.listdir(dest2 / "downloads") == []
    assert not (dest2 / "VOCdevkit").exists()

    # Not a VOC archive at all (with --no-verify): a clear error.
    other = tmp_path / "other.tar"
    other.write_bytes(tar_bytes({"something/else.txt": b"x"}))
    assert fetch_voc.main(["--dest", str(tmp_path / "data3"), "--from-archive", str(other),
                           "--no-verify", "--no-progress"]) == 2
    assert "not the VOC 2012 trainval archive" in capsys.readouterr().err


def test_fetch_voc_help():
    done = subprocess.run([sys.executable, os.path.join(REPO, "tools", "fetch_voc.py"),
                           "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "--from-archive" in done.stdout and "train_aug.txt" in done.stdout


def test_zoo_urls_are_rewritten_for_mirrors(fetch_weights):
    info = registry.MODELS["deeplabv2-resnet101"]
    assert published_weights.model_url(info) == info.url
    assert published_weights.model_url(info, "http://127.0.0.1:1/m/") == \
        "http://127.0.0.1:1/m/prototxt_and_model.zip"



def test_lists_only_for_an_existing_voc_folder(tmp_path):
    """A mounted VOC2012 folder (the Docker image's case): lists, nothing downloaded."""
    import numpy as np
    fetch_voc = load_script(os.path.join("tools", "fetch_voc.py"))
    root = tmp_path / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("a\nb\n")
    (sets / "val.txt").write_text("c\n")
    for name in "abcd":
        (root / "JPEGImages").mkdir(exist_ok=True)
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"x")
        files.write_label(str(root / "SegmentationClassAug" / f"{name}.png"),
                          np.zeros((2, 2), np.uint8))
        if name in "abc":
            files.write_label(str(root / "SegmentationClass" / f"{name}.png"),
                              np.zeros((2, 2), np.uint8))
    lists = tmp_path / "lists"
    assert fetch_voc.main(["--lists-only", str(root), "--lists-dir", str(lists)]) == 0
    assert (lists / "train.txt").read_text().splitlines() == [
        "/JPEGImages/a.jpg /SegmentationClass/a.png", "/JPEGImages/b.jpg /SegmentationClass/b.png"]
    assert (lists / "val.txt").read_text() == "/JPEGImages/c.jpg /SegmentationClass/c.png\n"
    # train_aug: everything with an Aug label, minus val
    assert [line.split()[0] for line in (lists / "train_aug.txt").read_text().splitlines()] == [
        "/JPEGImages/a.jpg", "/JPEGImages/b.jpg", "/JPEGImages/d.jpg"]
    assert fetch_voc.main(["--lists-only", str(tmp_path), "--lists-dir", str(lists)]) == 2
