"""pixelfeedback/runfolder.py: the one run-folder mechanism (settings fingerprint, lock,
atomic results, crash recovery). Pure Python; the lock is checked against real second
processes, one of them killed with SIGKILL."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from pixelfeedback.folder_lock import LOCK_NAME, FolderInUse
from pixelfeedback.runfolder import SETTINGS_NAME, TMP_PREFIX, RunFolder, json_safe
from python_layers import ToolkitError

from tests.conftest import REPO  # noqa: E402

# A second process: opens a run folder (optionally a child inside it, optionally starting
# an atomic write it never finishes), says "locked", and sleeps until it is killed.
HOLDER = """\
import os, sys, time
sys.path.insert(0, {repo!r})
from pixelfeedback.runfolder import RunFolder
shared = len(sys.argv) > 2 and sys.argv[2] == "shared"
folder = RunFolder(sys.argv[1], {{"mode": "quick"}}, what="demo run", shared=shared)
if shared:
    item = folder.child("runs/a", {{"run": "a"}})
if len(sys.argv) > 2 and sys.argv[2] == "child":
    folder = folder.child("experiments", {{"n": 1}})
if len(sys.argv) > 2 and sys.argv[2] == "writer":
    writing = folder.atomic("predictions/img_0001.png")
    tmp = writing.__enter__()
    with open(tmp, "wb") as f:
        f.write(b"half a png")
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """start(folder, mode="") -> a running second process holding ``folder``; all are
    killed (SIGKILL, as a crash) at the end."""
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(repo=REPO))
    procs = []

    def start(folder, mode=""):
        args = [sys.executable, str(script), str(folder)] + ([mode] if mode else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "locked":
            proc.kill()
            raise AssertionError(f"the holder did not start: {proc.stderr.read()}")
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def kill_9(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_new_folder_writes_settings_and_resumes_equal_settings(tmp_path):
    out = tmp_path / "runs" / "demo"
    settings = {"mode": "quick", "sizes": (321, 513), "lr": np.float32(0.5),
                "n": np.int64(3), "score": float("nan"), "nested": {"b": 2, "a": [1, (2, 3)]},
                "flag": np.bool_(True), "mean": np.array([104.0, 116.5])}
    with RunFolder(out, settings) as run:
        run.write_json("metrics.json", {"miou": 0.5})
    stored = json.loads((out / SETTINGS_NAME).read_text())
    assert stored == {"mode": "quick", "sizes": [321, 513], "lr": 0.5, "n": 3, "score": None,
                      "nested": {"a": [1, [2, 3]], "b": 2}, "flag": True,
                      "mean": [104.0, 116.5]}

    # the same settings as they come back from JSON, in another key order: resumes
    again = {"mean": [104.0, 116.5], "flag": True, "nested": {"a": [1, [2, 3]], "b": 2},
             "score": np.nan, "n": 3, "lr": 0.5, "sizes": [321, 513], "mode": "quick"}
    with RunFolder(out, again) as run:
        assert run.read_json("metrics.json") == {"miou": 0.5}
        assert run.settings == stored


def test_other_settings_refuse_naming_each_difference(tmp_path):
    out = tmp_path / "demo"
    RunFolder(out, {"mode": "quick", "size": 321, "net": {"width_div": 4}, "seed": 1}).close()
    with pytest.raises(ToolkitError) as err:
        RunFolder(out, {"mode": "full", "size": 321, "net": {"width_div": 8}, "gpu": None},
                  what="demo run")
    message = str(err.value)
    assert message.startswith(f"{out} holds a demo run of other settings")
    assert "mode: 'quick' there, 'full' now" in message
    assert "net.width_div: 4 there, 8 now" in message
    assert "seed: 1 there, absent now" in message
    assert "gpu: absent there, None now" in message
    assert "size" not in message
    assert message.endswith("pass another --out, or --restart to discard it")
    # True is not 1 in settings (Python's == would say it is)
    RunFolder(tmp_path / "b", {"flag": 1}).close()
    with pytest.raises(ToolkitError, match="flag: 1 there, True now"):
        RunFolder(tmp_path / "b", {"flag": True})
    # the refusal released the lock: the old settings still open
    RunFolder(out, {"mode": "quick", "size": 321, "net": {"width_div": 4}, "seed": 1}).close()


def test_hint_flags_follow_the_caller(tmp_path):
    RunFolder(tmp_path / "r", {"a": 1}).close()
    with pytest.raises(ToolkitError, match="pass another --out-dir, or --no-resume to discard"):
        RunFolder(tmp_path / "r", {"a": 2}, hint_flag="--no-resume", out_flag="--out-dir")
    with pytest.raises(ToolkitError, match="use another folder, or restart=True to discard"):
        RunFolder(tmp_path / "r", {"a": 2}, hint_flag=None, out_flag=None)


def test_restart_clears_results_and_nested_folders(tmp_path):
    out = tmp_path / "demo"
    with RunFolder(out, {"mode": "quick"}) as run:
        run.write_text("report.md", "old\n")
        run.records("per_image").write("img_0001", {"x": 1})
        with run.child("experiments", {"n": 1}) as child:
            child.write_json("table.json", [1])
    with RunFolder(out, {"mode": "full"}, restart=True) as run:
        assert sorted(os.listdir(out)) == [LOCK_NAME, SETTINGS_NAME]
        assert run.listing() == [] and run.records("per_image").ids() == []
        run.write_text("report.md", "new\n")
        with run.child("experiments", {"n": 2}) as child:  # a new child: no refusal
            assert not child.has("table.json")
    assert json.loads((out / SETTINGS_NAME).read_text()) == {"mode": "full"}
    with RunFolder(out, {"mode": "full"}) as run:  # and it resumes as usual
        assert run.listing() == [str(out / "report.md")]
    # restart with the same settings discards the results too
    with RunFolder(out, {"mode": "full"}, restart=True) as run:
        assert not run.has("report.md")


def test_restart_says_on_stderr_what_it_discards_before_discarding_it(tmp_path, capsys):
    """Two finished runs (nested run folders with their results), a table and a
    temporary: the message counts the files and run folders and names the folder."""
    out = tmp_path / "sweep"
    with RunFolder(out, {"mode": "quick"}, what="Table 3.1 sweep") as run:
        for name in ("control_seed0", "cosine_seed0"):
            with run.child(os.path.join("runs", name), {"run": name}) as child:
                child.write_text("final.caffemodel", "w" * 1_500_000)
                child.write_text("train.log", "log\n")
            run.write_json(os.path.join("results", name + ".json"), {"mean_iou": 0.5})
        run.write_text("table.md", "| run |\n")
        (out / (TMP_PREFIX + "cut")).write_text("x")
    capsys.readouterr()
    with RunFolder(out, {"mode": "full"}, what="Table 3.1 sweep", restart=True):
        pass
    err = capsys.readouterr().err
    assert err == (f"--restart: discarding the Table 3.1 sweep in {out}: 7 files (3.0 MB): "
                   "results/ (2 files), runs/ (2 run folders, 4 files), table.md\n")
    with RunFolder(out, {"mode": "full"}, what="Table 3.1 sweep", restart=True,
                   hint_flag=None):
        pass
    assert capsys.readouterr().err == ""   # nothing there to discard: nothing said


def test_second_process_gets_the_holders_pid_and_a_killed_holder_frees_the_lock(
        tmp_path, holder):
    out = tmp_path / "runs" / "demo"
    proc = holder(out)
    with pytest.raises(ToolkitError) as err:
        RunFolder(out, {"mode": "quick"}, what="demo run")
    message = str(err.value)
    assert f"{out} is in use by process {proc.pid} (" in message
    assert "holder.py" in message  # its command line
    assert message.endswith("; wait for it to finish or stop it")
    # even the wrong settings get the lock error first: nothing is read under another's lock
    with pytest.raises(ToolkitError, match=f"in use by process {proc.pid}"):
        RunFolder(out, {"mode": "full"}, restart=True)
    assert json.loads((out / SETTINGS_NAME).read_text()) == {"mode": "quick"}

    kill_9(proc)  # the OS drops a flock with its process: no stale lock
    with RunFolder(out, {"mode": "quick"}) as run:
        with open(run.file(LOCK_NAME)) as f:
            assert f.readline().strip() == str(os.getpid())


def test_shared_folders_split_their_items_and_refuse_restarts(tmp_path, holder):
    out = tmp_path / "sweep"
    proc = holder(out, "shared")  # holds the folder shared and its item runs/a
    with RunFolder(out, {"mode": "quick"}, shared=True) as folder:
        assert folder.try_child("runs/a", {"run": "a"}) is None  # the holder's
        with folder.try_child("runs/b", {"run": "b"}) as item:
            assert item is not None
        with pytest.raises(ToolkitError, match="other settings"):
            RunFolder(out, {"mode": "full"}, shared=True)
    for kwargs in ({"shared": True, "restart": True}, {}):
        with pytest.raises(FolderInUse, match=f"in use by process {proc.pid}"):
            RunFolder(out, {"mode": "quick"}, **kwargs)
    assert (out / "runs" / "b").is_dir()  # nothing was cleared
    kill_9(proc)
    with RunFolder(out, {"mode": "quick"}, shared=True, restart=True) as folder:
        assert not (out / "runs").exists()
        assert folder.try_child("runs/a", {"run": "a"}) is not None


def test_same_process_opening_twice_is_refused(tmp_path):
    with RunFolder(tmp_path / "r", {"a": 1}):
        with pytest.raises(ToolkitError, match=r"already open in this process \(\d+\)"):
            RunFolder(tmp_path / "r", {"a": 1})
    RunFolder(tmp_path / "r", {"a": 1}).close()  # closed: free again


def test_killed_writers_temporary_is_removed_on_open_and_never_listed(tmp_path, holder):
    out = tmp_path / "demo"
    with RunFolder(out, {"mode": "quick"}) as run:
        run.write_text("predictions/img_0000.png", "done")
    proc = holder(out, "writer")  # dies in the middle of an atomic write
    temporaries = [n for n in os.listdir(out / "predictions") if n.startswith(".tmp-")]
    assert len(temporaries) == 1 and temporaries[0].endswith(".png")
    kill_9(proc)
    tmp = out / "predictions" / temporaries[0]
    assert tmp.exists()  # left behind by the crash
    with RunFolder(out, {"mode": "quick"}) as run:
        assert not tmp.exists()
        assert run.listing("predictions") == [str(out / "predictions" / "img_0000.png")]

        # a temporary of a write in progress: neither finished nor listed
        with run.atomic("predictions/img_0002.png") as path:
            with open(path, "w") as f:
                f.write("partial")
            name = os.path.relpath(path, run.root)
            assert os.path.basename(path).startswith(".tmp-") and path.endswith(".png")
            assert not run.has(name) and not run.has("predictions/img_0002.png")
            assert run.listing("predictions", suffix=".png") == [
                str(out / "predictions" / "img_0000.png")]
        assert run.has("predictions/img_0002.png")
        assert [os.path.basename(p) for p in run.listing("predictions", ".png")] == [
            "img_0000.png", "img_0002.png"]
        assert run.listing() == []  # neither the lock nor settings.json


def test_atomic_leaves_nothing_when_the_body_raises(tmp_path):
    with RunFolder(tmp_path / "r", {}) as run:
        with pytest.raises(RuntimeError):
            with run.atomic("figures/fig.png") as path:
                with open(path, "w") as f:
                    f.write("half")
                raise RuntimeError("writer failed")
        assert os.listdir(run.file("figures")) == []
        assert not run.has("figures/fig.png")


def test_moved_or_copied_folder_resumes_with_path_settings(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    parent = tmp_path / "a"
    out = parent / "run"

    def settings(run_dir):
        return {"weights": RunFolder.path(run_dir / "model.caffemodel"),
                "data_root": RunFolder.path(data), "here": RunFolder.path(run_dir)}

    with RunFolder(out, settings(out)) as run:
        run.write_text("model.caffemodel", "weights")
    stored = json.loads((out / SETTINGS_NAME).read_text())
    assert stored == {"weights": "model.caffemodel", "data_root": str(data), "here": "."}

    os.rename(parent, tmp_path / "b")  # the folder's parent moved
    moved = tmp_path / "b" / "run"
    with RunFolder(moved, settings(moved)) as run:
        assert run.has("model.caffemodel")
        assert run.resolve(run.settings["weights"]) == str(moved / "model.caffemodel")
        assert run.resolve(run.settings["data_root"]) == str(data)

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)  # a copy, stale lock file included
    with RunFolder(copy, settings(copy)) as run:
        assert run.read_json(SETTINGS_NAME) == stored

    # relative paths given on the command line are made absolute; a path outside is kept
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        with RunFolder("b/run", {"weights": RunFolder.path("b/run/model.caffemodel"),
                                 "data_root": RunFolder.path("data"),
                                 "here": RunFolder.path("b/run")}) as run:
            assert run.settings == stored
        with pytest.raises(ToolkitError, match=r"data_root: '.*/data' there, '.*/other' now"):
            RunFolder("b/run", {"weights": RunFolder.path("b/run/model.caffemodel"),
                                "data_root": RunFolder.path("other"),
                                "here": RunFolder.path("b/run")})
    finally:
        os.chdir(cwd)


def test_records_round_trip_nan_as_null(tmp_path):
    with RunFolder(tmp_path / "r", {"experiment": "salient"}) as run:
        records = run.records("salient")
        assert not records.has("img_0001")
        records.write("img_0001", {"pct": float("nan"), "rows": [np.float64("nan"), 1.5],
                                   "n": np.int32(4), "k": (1, 2)})
        records.write("settings", {"an id that": "is also a reserved name elsewhere"})
        assert records.has("img_0001") and "img_0001" in records
        assert records.read("img_0001") == {"pct": None, "rows": [None, 1.5], "n": 4,
                                            "k": [1, 2]}
        text = open(records.path("img_0001")).read()
        json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
        assert records.ids() == ["img_0001", "settings"]
        with pytest.raises(ValueError):
            records.write("../escape", {})
    # read back after a reopen
    with RunFolder(tmp_path / "r", {"experiment": "salient"}) as run:
        assert run.records("salient").read("img_0001")["pct"] is None


def test_nested_folders_have_their_own_lock_and_settings(tmp_path, holder):
    out = tmp_path / "demo"
    with RunFolder(out, {"mode": "quick"}) as parent:
        with parent.child("experiments", {"n": 1}, what="experiments run") as child:
            child.write_json("a.json", {"v": 1})
            assert child.name == os.path.join(str(out), "experiments")
        with pytest.raises(ToolkitError, match=r"experiments holds an experiments run of other "
                                               r"settings \(n: 1 there, 2 now\)"):
            parent.child("experiments", {"n": 2}, what="experiments run")
        assert parent.listing("experiments") == [str(out / "experiments" / "a.json")]
    assert json.loads((out / SETTINGS_NAME).read_text()) == {"mode": "quick"}

    # another process holds the child: the parent opens, leaves the child's in-flight
    # temporaries alone, and refuses to restart over it
    proc = holder(out, "child")
    in_flight = out / "experiments" / ".tmp-inflight.json"
    in_flight.write_text("{")
    with RunFolder(out, {"mode": "quick"}):
        assert in_flight.exists()
    with pytest.raises(ToolkitError, match=f"experiments is in use by process {proc.pid}"):
        RunFolder(out, {"mode": "quick"}, restart=True)
    assert (out / "experiments" / "a.json").exists()
    kill_9(proc)
    with RunFolder(out, {"mode": "quick"}):  # the child is free: its leftovers are swept
        assert not in_flight.exists()
    with RunFolder(out, {"mode": "quick"}, restart=True):
        assert not (out / "experiments").exists()


def test_refuses_a_folder_that_is_no_run_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for restart in (False, True):
        with pytest.raises(ToolkitError, match=r"mine is not empty \(thesis.tex\) but holds "
                                               r"no settings.json"):
            RunFolder(out, {"a": 1}, restart=restart)
    assert (out / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("")
    with pytest.raises(ToolkitError, match="is a file, not a folder"):
        RunFolder(tmp_path / "file", {})


def test_paths_stay_inside_and_reserved_names_are_not_written(tmp_path):
    with RunFolder(tmp_path / "r", {}) as run:
        assert run.file("a", "b.json") == str(tmp_path / "r" / "a" / "b.json")
        assert os.fspath(run) == str(tmp_path / "r")
        with pytest.raises(ValueError):
            run.file("..", "elsewhere.json")
        for reserved in (SETTINGS_NAME, LOCK_NAME, "x/.tmp-1.json"):
            with pytest.raises(ValueError):
                run.write_text(reserved, "")
    with pytest.raises(RuntimeError, match="closed"):
        run.write_text("late.txt", "")


def test_json_safe_names_what_json_cannot_hold():
    assert json_safe({1: (float("nan"), np.float32(2.0))}) == {"1": [None, 2.0]}
    with pytest.raises(TypeError, match=r"settings.classes is a set"):
        json_safe({"classes": {1, 2}})
    assert math.isinf(json_safe(float("inf")))
