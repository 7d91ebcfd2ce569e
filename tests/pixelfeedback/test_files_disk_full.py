"""Issue 28, case 7 (full and read-only disks): a tool's error names the path and the free
space of its file system, and a download that fills the disk says so instead of "the
download broke off" (weights/fetch.py and tools/fetch_voc.py share pixelfeedback/download.py).
A real tmpfs of 1.2 MB (root only; skipped where mount is refused)."""
import errno
import os
import subprocess

import numpy as np
import pytest

from pixelfeedback import cli
from tests.conftest import load_script
from tests.pixelfeedback.test_evaluation import NUM_CLASSES, SIZE, tiny_model  # noqa: F401 (fixture)
from tests.pixelfeedback.test_download import fetch_weights, server, tiny_models, tiny_zoo_entry  # noqa: F401


@pytest.fixture
def disk(tmp_path):
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)])


def fill(path):
    """Write zeros to ``path`` until its file system is full."""
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_download_that_fills_the_disk_names_it_and_the_free_space(
        fetch_weights, tiny_zoo_entry, server, disk, capsys):
    server.files["/published/tiny.caffemodel"] = np.random.RandomState(0).bytes(3_000_000)
    assert fetch_weights.main(["tiny", "--dest", str(disk), "--no-progress"]) == 2
    err = error_line(capsys)
    assert f"cannot write {disk / 'tiny.caffemodel.part'}: No space left on device" in err
    assert f"{disk} (tmpfs tmpfs) has 0 MB free" in err
    assert "broke off" not in err and "choose another --dest" in err


def test_a_read_only_disk_is_named_with_the_tools_flag(fetch_weights, tiny_zoo_entry, server,
                                                       tiny_models, disk, capsys):
    server.files["/published/tiny.caffemodel"] = open(tiny_models[1], "rb").read()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    assert fetch_weights.main(["tiny", "--dest", str(disk), "--no-progress"]) == 2
    err = error_line(capsys)
    assert f"cannot write {disk / 'tiny.caffemodel.part'}: Read-only file system" in err
    assert "choose another --dest" in err and "broke off" not in err


def test_an_evaluation_on_a_full_disk_names_the_free_space(tiny_model, disk, tmp_path,
                                                           capsys):
    from tests.conftest import write_tiny_voc

    root = str(tmp_path / "voc")
    list_file = write_tiny_voc(root, n_images=2, num_classes=NUM_CLASSES)
    fill(disk / "filler")
    evaluate = load_script(os.path.join("tools", "evaluate.py"))
    prototxt, weights = tiny_model
    assert evaluate.main(["--model", prototxt, "--weights", weights, "--data-root", root,
                          "--list", list_file, "--num-classes", str(NUM_CLASSES), "--size",
                          str(SIZE), "--out", str(disk / "eval"), "--no-progress"]) == 2
    err = error_line(capsys)
    assert f"cannot write {disk}" in err and "No space left on device" in err
    assert f"{disk} (tmpfs tmpfs) has 0 MB free" in err and "choose another --out" in err


def test_the_message_of_a_full_disk_without_a_real_one(tmp_path):
    message = cli.describe_os_error(OSError(28, "No space left on device",
                                            str(tmp_path / "a" / "b.json")))
    assert message.startswith(f"cannot write {tmp_path / 'a' / 'b.json'}: No space left")
    assert "MB free" in message   # the nearest existing folder's file system
