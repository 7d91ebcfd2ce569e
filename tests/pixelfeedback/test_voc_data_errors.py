"""Issue 28, cases 5 and 7 for tools/fetch_voc.py: a bogus or truncated VOC tar or SBD tgz
is one line `error: ...` naming the archive and saying how to get a whole one (never
tarfile's traceback), and the tool's own SBD stamp, when it cannot be read, makes the
conversion run again instead of failing. Archives are the generated ones of
tests/pixelfeedback/test_download.py, served from its loopback server."""
import io
import json
import os
import tarfile

import pytest

from tests.pixelfeedback.test_download import fetch_voc, server, voc_archives  # noqa: F401 (fixtures)


def cut_in_a_member(archive_bytes):
    """The archive cut in the middle of its last member's data (a partial download)."""
    with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as tf:
        last = [m for m in tf.getmembers() if m.isfile() and m.size > 1][-1]
    return archive_bytes[:last.offset_data + last.size // 2]


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("content", ["bogus", "truncated"])
def test_a_bad_voc_archive_is_one_line_naming_it(fetch_voc, voc_archives, tmp_path, capsys,
                                                 content):
    voc_tar = voc_archives[0]
    local = tmp_path / "VOCtrainval_11-May-2012.tar"
    local.write_bytes(b"no tar at all" * 100 if content == "bogus"
                      else cut_in_a_member(voc_tar))
    assert fetch_voc.main(["--dest", str(tmp_path / "data"), "--from-archive", str(local),
                           "--no-verify", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert f"cannot read {local}" in line and "VOC 2012 trainval tar" in line
    assert "give --from-archive the complete VOCtrainval_11-May-2012.tar" in line


def test_a_truncated_sbd_archive_is_one_line_naming_it(fetch_voc, voc_archives, tmp_path,
                                                       capsys):
    voc_tar, sbd_tgz = voc_archives[:2]
    (tmp_path / "voc.tar").write_bytes(voc_tar)
    cut = tmp_path / "benchmark.tgz"
    cut.write_bytes(sbd_tgz[:len(sbd_tgz) // 2])
    assert fetch_voc.main(["--dest", str(tmp_path / "data"), "--from-archive",
                           str(tmp_path / "voc.tar"), "--sbd-archive", str(cut),
                           "--no-verify", "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert f"cannot read {cut}" in line and "SBD benchmark.tgz" in line
    assert "--sbd-archive" in line and "--from-archive" not in line


def test_a_truncated_download_says_to_delete_it(fetch_voc, voc_archives, server, tmp_path,
                                                capsys):
    voc_tar = voc_archives[0]
    server.files["/mirror/VOCtrainval_11-May-2012.tar"] = cut_in_a_member(voc_tar)
    dest = tmp_path / "data"
    assert fetch_voc.main(["--dest", str(dest), "--base-url", server.url + "/mirror",
                           "--no-verify", "--no-progress"]) == 2
    line = one_error_line(capsys)
    download = dest / "downloads" / "VOCtrainval_11-May-2012.tar"
    assert f"delete {download} and run the command again" in line
    assert "--from-archive" not in line   # a flag the user did not give


def test_an_unreadable_sbd_stamp_is_redone(fetch_voc, voc_archives, tmp_path, capsys):
    voc_tar, sbd_tgz = voc_archives[:2]
    (tmp_path / "voc.tar").write_bytes(voc_tar)
    (tmp_path / "benchmark.tgz").write_bytes(sbd_tgz)
    argv = ["--dest", str(tmp_path / "data"), "--from-archive", str(tmp_path / "voc.tar"),
            "--sbd-archive", str(tmp_path / "benchmark.tgz"), "--no-progress"]
    assert fetch_voc.main(argv) == 0
    stamp = tmp_path / "data" / "VOCdevkit" / "VOC2012" / "SegmentationClassAug" / \
        ".sbd-splits.json"
    splits = json.loads(stamp.read_text())
    lists = tmp_path / "data" / "lists" / "train_aug.txt"
    first = lists.read_text()
    stamp.write_text(stamp.read_text()[:10])     # cut short (a full disk, an editor)
    capsys.readouterr()
    assert fetch_voc.main(argv) == 0
    out = capsys.readouterr().out
    assert "cannot be read; converting SBD again" in out
    assert json.loads(stamp.read_text()) == splits and lists.read_text() == first
    assert os.path.getsize(lists) > 0
