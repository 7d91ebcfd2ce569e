"""Issue 28, case 2: weights/fetch.py records a sha256 only for a file that reads as a
whole caffemodel fitting the model's deploy net; --verify checks and never records; a bad
recorded sha256 is replaced by a good download with --replace-checksum; flags that do
nothing beside the others are refused. Files come from the loopback server of
tests/pixelfeedback/test_download.py; nothing else is contacted."""
import json
import os

import pytest

from tests.pixelfeedback.test_download import (fetch_weights, read_bytes, server, sha256,  # noqa: F401 (fixtures)
                              tiny_models, tiny_zoo_entry)

HTML_PAGE = b"<html><body>404 Not Found</body></html>\n"   # 40 bytes, what a mirror sent


def record_of(dest):
    path = os.path.join(dest, "checksums.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def run(fetch_weights, *argv):
    return fetch_weights.main(list(argv) + ["--no-progress"])


def test_a_web_page_is_neither_recorded_nor_kept_and_a_rerun_downloads_again(
        fetch_weights, tiny_zoo_entry, tiny_models, server, tmp_path, capsys):
    assert len(HTML_PAGE) == 40
    dest = str(tmp_path / "weights")
    server.files["/published/tiny.caffemodel"] = HTML_PAGE
    assert run(fetch_weights, "tiny", "--dest", dest) == 2
    out, err = capsys.readouterr()
    assert "recorded sha256" not in out
    assert err.startswith("error: tiny: the download of ") and "web page" in err
    assert "tiny.caffemodel" not in record_of(dest)
    assert sorted(os.listdir(dest)) == []          # nothing kept: no file, no .part

    # the mirror is fixed: the rerun downloads, records the good file's sha256
    good = read_bytes(tiny_models[1])
    server.files["/published/tiny.caffemodel"] = good
    requests = len(server.requests)
    assert run(fetch_weights, "tiny", "--dest", dest) == 0
    assert len(server.requests) == requests + 1
    assert record_of(dest)["tiny.caffemodel"]["sha256"] == sha256(good)
    assert "recorded sha256" in capsys.readouterr().out


def test_a_file_that_does_not_fit_is_not_recorded(fetch_weights, tiny_zoo_entry, tiny_models,
                                                  server, tmp_path, capsys):
    dest = str(tmp_path / "weights")
    server.files["/published/tiny.caffemodel"] = read_bytes(tiny_models[2])  # conv1: 5 ch
    assert run(fetch_weights, "tiny", "--dest", dest) == 2
    assert "its sha256 was not recorded" in capsys.readouterr().err
    assert record_of(dest) == {} and not os.path.exists(os.path.join(dest, "tiny.caffemodel"))


def test_a_truncated_download_is_not_recorded(fetch_weights, tiny_zoo_entry, tiny_models,
                                              server, tmp_path, capsys):
    """A server that announces the cut length: the download is whole, the file is not."""
    dest = str(tmp_path / "weights")
    good = read_bytes(tiny_models[1])
    server.files["/published/tiny.caffemodel"] = good[:len(good) // 2]
    assert run(fetch_weights, "tiny", "--dest", dest) == 2
    assert "truncated" in capsys.readouterr().err and record_of(dest) == {}


def test_verify_checks_a_present_file_and_never_records(fetch_weights, tiny_zoo_entry,
                                                        tiny_models, tmp_path, capsys):
    dest = tmp_path / "weights"
    dest.mkdir()
    good = read_bytes(tiny_models[1])
    (dest / "tiny.caffemodel").write_bytes(good[:len(good) - 100])   # truncated, unrecorded
    assert run(fetch_weights, "tiny", "--dest", str(dest), "--verify") == 2
    assert "no sha256 is recorded" in capsys.readouterr().err
    assert record_of(str(dest)) == {}
    (dest / "tiny.caffemodel").write_bytes(good)      # whole and fitting, still unrecorded
    assert run(fetch_weights, "tiny", "--dest", str(dest), "--verify") == 0
    assert "no sha256 recorded yet (--verify records none" in capsys.readouterr().out
    assert record_of(str(dest)) == {}
    # a fetch (not --verify) of the present, checked file records it without a download
    assert run(fetch_weights, "tiny", "--dest", str(dest)) == 0
    assert record_of(str(dest))["tiny.caffemodel"]["sha256"] == sha256(good)


def test_replace_checksum_replaces_a_bad_recorded_sha256(fetch_weights, tiny_zoo_entry,
                                                         tiny_models, server, tmp_path,
                                                         capsys):
    """The state an older version left: the sha256 of the HTML page recorded."""
    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "checksums.json").write_text(json.dumps(
        {"tiny.caffemodel": {"sha256": sha256(HTML_PAGE), "url": "x", "size": 40}}))
    good = read_bytes(tiny_models[1])
    server.files["/published/tiny.caffemodel"] = good
    assert run(fetch_weights, "tiny", "--dest", str(dest), "--force") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sha256 mismatch") and "--replace-checksum" in err

    assert run(fetch_weights, "tiny", "--dest", str(dest), "--replace-checksum") == 0
    out = capsys.readouterr().out
    assert f"replaced the sha256 {sha256(HTML_PAGE)}" in out and sha256(good) in out
    assert record_of(str(dest))["tiny.caffemodel"]["sha256"] == sha256(good)
    assert read_bytes(dest / "tiny.caffemodel") == good
    # a web page is never recorded, not even with --replace-checksum
    server.files["/published/tiny.caffemodel"] = HTML_PAGE
    assert run(fetch_weights, "tiny", "--dest", str(dest), "--replace-checksum") == 2
    assert record_of(str(dest))["tiny.caffemodel"]["sha256"] == sha256(good)
    assert read_bytes(dest / "tiny.caffemodel") == good


def test_replace_checksum_is_in_the_help(fetch_weights, capsys):
    assert fetch_weights.main(["--help"]) == 0
    assert "--replace-checksum" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["tiny", "--verify", "--force"], ("--verify", "--force", "would do nothing")),
    (["tiny", "--verify", "--replace-checksum"], ("--verify", "--replace-checksum")),
    (["--list", "--force"], ("--list", "--force")),
    (["--list", "tiny"], ("--list", "no model names")),
    (["--all", "tiny"], ("--all", "tiny")),
    (["tiny", "tiny"], ("tiny", "named twice")),
])
def test_flags_that_would_do_nothing_are_refused(fetch_weights, tiny_zoo_entry, tmp_path,
                                                 capsys, argv, words):
    assert run(fetch_weights, *argv, "--dest", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    for word in words:
        assert word in err, err
