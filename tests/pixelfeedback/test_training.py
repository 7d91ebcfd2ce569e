"""`caffe train` as the sweep runs it (pixelfeedback.training): a resume after kill -9 gives
the uninterrupted run's weights bit for bit, the trainer dies with its parent, a corrupt
newest snapshot is set aside for the one before, a failure quotes the log's error line,
and the terminal gets a progress bar instead of glog."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pixelfeedback import training
from pixelfeedback.nets import largefov
from pixelfeedback.nets.weights import read_caffemodel
from python_layers import ToolkitError
from tests.conftest import (REPO, assert_no_trainer_left, kill_once_logged,
                            newest_solverstate_iteration, write_tiny_voc)

# Snapshots every 25 iterations; the kill comes after the one at 50, with 540 iterations
# (about a second) left, so that a slow poll on a loaded machine still interrupts the run.
ITERATIONS, SNAPSHOT = 600, 25
KILL_AFTER = "Iteration 60,"  # logged every 10 iterations


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    return root, write_tiny_voc(root, n_images=6)


def experiment(folder, data, loss="cosine", **overrides):
    """A small fine-tune with dropout, random crops, flips and shuffling: everything a
    resume has to repeat."""
    root, list_file = data
    options = dict(loss=loss, lam=0.5, data_root=root, list_file=list_file, batch_size=2,
                   crop=33, width_div=16, num_classes=4, seed=3, iterations=ITERATIONS,
                   snapshot=SNAPSHOT, base_lr=1e-3)
    options.update(overrides)
    return largefov.write_experiment(str(folder), **options)


def weight_bytes(path):
    model = read_caffemodel(path)
    return [np.asarray(blob.data, np.float32).tobytes()
            for layer in model.layer for blob in layer.blobs]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("uninterrupted")
    solver = experiment(folder, data)
    training.train(solver, str(folder))
    return weight_bytes(training.final_weights(str(folder), ITERATIONS))


def interrupt(solver, folder, whole_group=True):
    """Run train() in a child Python process of its own process group and kill -9 that
    whole group (what a user's kill or a lost session does), or only that process, once
    Caffe logged KILL_AFTER. The trainer is in a process group of its own, so only the
    parent-death signal can stop it."""
    code = f"from pixelfeedback.training import train; train({solver!r}, {str(folder)!r})"
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, start_new_session=True)
    kill_once_logged(parent, os.path.join(folder, "train.log"), KILL_AFTER, whole_group)


def test_kill_9_then_rerun_gives_the_uninterrupted_weights_bit_for_bit(tmp_path, data,
                                                                        uninterrupted):
    solver = experiment(tmp_path, data)
    interrupt(solver, tmp_path)
    assert_no_trainer_left(solver)
    resume_point = newest_solverstate_iteration(tmp_path)
    assert 0 < resume_point < ITERATIONS

    training.train(solver, str(tmp_path))
    log = open(tmp_path / "train.log").read()
    assert training.resumed_from(log) == [resume_point]
    sessions = log.split(training.COMMAND_PREFIX)[1:]
    assert training.training_seconds(log) == pytest.approx(
        sum(training.training_seconds(training.COMMAND_PREFIX + s) for s in sessions))
    assert 0 < training.training_seconds(sessions[0]) < training.training_seconds(log)
    assert weight_bytes(training.final_weights(str(tmp_path), ITERATIONS)) == uninterrupted


def test_the_trainer_dies_with_the_process_that_started_it(tmp_path, data):
    solver = experiment(tmp_path, data)
    interrupt(solver, tmp_path, whole_group=False)  # kill -9 of that one process
    assert_no_trainer_left(solver)


def test_a_truncated_newest_snapshot_is_set_aside_and_the_one_before_used(
        tmp_path, data, uninterrupted, capfd):
    solver = experiment(tmp_path, data)
    interrupt(solver, tmp_path)
    cut = newest_solverstate_iteration(tmp_path)  # 50 or later: there is one before it
    newest = tmp_path / f"cosine_iter_{cut}.solverstate"
    newest.write_bytes(newest.read_bytes()[:len(newest.read_bytes()) // 2])
    capfd.readouterr()

    training.train(solver, str(tmp_path))
    warning = capfd.readouterr().err
    assert f"snapshot {newest}" in warning and f"cosine_iter_{cut}.solverstate.corrupt" in warning
    assert training.resumed_from(open(tmp_path / "train.log").read()) == [cut - SNAPSHOT]
    assert weight_bytes(training.final_weights(str(tmp_path), ITERATIONS)) == uninterrupted
    assert list(tmp_path.glob("*" + training.CORRUPT_SUFFIX)) == []   # gone once finished


def test_snapshot_problem_names_what_is_wrong(tmp_path, data):
    solver = experiment(tmp_path, data, iterations=25)
    training.train(solver, str(tmp_path))
    state = tmp_path / "cosine_iter_25.solverstate"
    assert training.snapshot_problem(str(state)) is None
    weights = tmp_path / "cosine_iter_25.caffemodel"
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert "names weights" in training.snapshot_problem(str(state))
    weights.unlink()
    assert "do not exist" in training.snapshot_problem(str(state))
    assert training.usable_snapshot(str(tmp_path), warn=lambda m: None) == (None, 0)
    assert os.path.exists(str(state) + training.CORRUPT_SUFFIX)


def test_failure_quotes_the_error_line_not_the_stack(tmp_path, data):
    root, list_file = data
    broken = tmp_path / "broken.txt"
    broken.write_text(open(list_file).read() + "/JPEGImages/gone.jpg /SegmentationClassAug/gone.png\n")
    solver = experiment(tmp_path, (root, str(broken)))
    with pytest.raises(ToolkitError) as error:
        training.train(solver, str(tmp_path))
    message = str(error.value)
    assert "caffe train failed" in message and "gone.jpg" in message
    assert "@ 0x" not in message and "Traceback" not in message
    assert str(tmp_path / "train.log") in message


def test_a_caffe_check_failure_is_quoted_without_glog_prefix_or_stack(tmp_path):
    """A real glog F line of this Caffe (whose glog writes the year: F20261130 ...)."""
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path}/missing.prototxt"\nbase_lr: 0.01\nmax_iter: 1\n'
                      'lr_policy: "fixed"\n')
    with pytest.raises(ToolkitError) as error:
        training.train(str(solver), str(tmp_path))
    message = str(error.value)
    assert f"Check failed: fd != -1 (-1 vs. -1) File not found: {tmp_path}/missing" in message
    assert not re.search(r"[IWEF]\d{4,8} \d\d:\d\d", message), message
    assert "@ 0x" not in message and "***" not in message


def test_glog_line_reads_both_date_formats():
    for line in ("F20261130 04:59:47.389648 30258 io.cpp:39] Check failed: x",
                 "F1130 04:59:47.389648 30258 io.cpp:39] Check failed: x"):
        assert training.GLOG_LINE.match(line).group("message") == "Check failed: x"
    assert training.GLOG_LINE.match("control_seed0: 20/20 loss=0.1") is None


def test_training_seconds_sums_the_sessions_of_a_log():
    log = ("$ caffe train -solver s.prototxt\n"
           "I20261130 23:59:58.500000 1 solver.cpp:1] Solving\n"
           "Iteration 0, loss = 1 (not glog: ignored)\n"
           "I20261201 00:00:01.000000 1 solver.cpp:1] Iteration 10, loss = 0.5\n"
           "$ caffe train -solver s.prototxt -snapshot s_iter_10.solverstate\n"
           "I1201 00:00:05.000000 1 solver.cpp:1] Restoring\n"
           "I1201 00:00:05.250000 1 solver.cpp:1] Iteration 20, loss = 0.4\n"
           "$ caffe train -solver s.prototxt -snapshot s_iter_20.solverstate\n")
    assert training.training_seconds(log) == pytest.approx(2.75)  # 2.5 over midnight, 0.25, 0
    assert training.training_seconds("") == 0


def test_last_error_reads_glog_and_python_errors():
    glog = ("I1130 02:00:00.000 1 solver.cpp:1] Iteration 0\n"
            "F1130 02:00:01.000 1 sgd_solver.cpp:333] Check failed: state.history_size() == "
            "history_.size() (3 vs. 6) Incorrect length of history blobs.\n"
            "*** Check failure stack trace: ***\n    @     0x7f00 caffe::SGDSolver<>::Restore()\n")
    assert training.last_error(glog).startswith("Check failed: state.history_size()")
    python = "Traceback (most recent call last):\n  File \"x.py\", line 1\nToolkitError: bad key\n"
    assert training.last_error(python) == "ToolkitError: bad key"
    assert training.last_error("") is None


def test_progress_bar_instead_of_glog(tmp_path, data, capfd):
    solver = experiment(tmp_path, data, iterations=20)
    training.train(solver, str(tmp_path), progress=True, description="control seed 0")
    out, err = capfd.readouterr()
    assert "control seed 0" in err and "20/20" in err and "loss=" in err
    assert "solver.cpp" not in out + err  # glog went to the log only
    assert "solver.cpp" in open(tmp_path / "train.log").read()


# ----------------------------------------------------------------------------- a full disk

def test_no_space_is_read_from_the_log_or_the_free_space(tmp_path):
    """The message names the mount, its file system and the free MB, and says what to do."""
    log = ("I20261130 04:59:47.389648 1 sgd_solver.cpp:112] Iter\n"
           "F20261130 04:59:47.5 1 io.cpp:69] Check failed: proto.SerializeToOstream(&output)\n"
           "write error: No space left on device\n")
    plenty = ("/data", "/dev/sdb1 ext4", 50 * 10 ** 9)
    message = training.no_space_message(str(tmp_path), log, space=plenty)
    assert message.startswith("no space left on /data (/dev/sdb1 ext4), 50000 MB free; "
                              "free space and rerun to resume")
    full = ("/scratch", "tmpfs tmpfs", 4096)
    assert training.no_space_message(str(tmp_path), "Iter", space=full).startswith(
        "no space left on /scratch (tmpfs tmpfs), 0 MB free")
    assert training.no_space_message(str(tmp_path), "Check failed: x", space=plenty) is None
    # less room than one more snapshot of this run is no room
    (tmp_path / "s_iter_10.caffemodel").write_bytes(b"w" * (3 * 2 ** 20))
    assert training.no_space_message(str(tmp_path), "", space=("/d", "", 2 * 2 ** 20)) \
        .startswith("no space left on /d, 2 MB free")


def test_empty_or_unreadable_snapshots_are_never_the_resume_point(tmp_path, data, capfd):
    solver = experiment(tmp_path, data, iterations=25)
    training.train(solver, str(tmp_path))
    (tmp_path / "cosine_iter_50.caffemodel").write_bytes(b"")              # disk full
    (tmp_path / "cosine_iter_75.caffemodel").write_bytes(b"garbage")
    (tmp_path / "cosine_iter_75.solverstate").write_bytes(b"")
    capfd.readouterr()
    assert training.usable_snapshot(str(tmp_path)) == (
        str(tmp_path / "cosine_iter_25.solverstate"), 25)
    err = capfd.readouterr().err
    assert "cosine_iter_75.solverstate is empty (0 bytes" in err
    assert "cosine_iter_50.caffemodel is empty (0 bytes" in err
    assert sorted(p.name for p in tmp_path.glob("*.corrupt")) == [
        "cosine_iter_50.caffemodel.corrupt", "cosine_iter_75.caffemodel.corrupt",
        "cosine_iter_75.solverstate.corrupt"]
    assert training.remove_set_aside(str(tmp_path)) and not list(tmp_path.glob("*.corrupt"))
    (tmp_path / "cosine_iter_25.caffemodel").write_bytes(b"")
    with pytest.raises(ToolkitError, match="final weights .*cosine_iter_25.caffemodel is "
                                           "empty.*rerun to resume"):
        training.final_weights(str(tmp_path), 25)
    assert (tmp_path / "cosine_iter_25.caffemodel.corrupt").exists()


def test_a_session_cut_mid_line_still_reads_as_a_resume():
    """A log of an earlier version whose failed session ended mid-line: the rerun's command
    line glued onto it still counts as a session and a resume."""
    log = ("$ /x/.venv/bin/caffe train -solver s.prototxt\n"
           "I20261130 10:00:00.000000 1 solver.cpp:1] Solving\n"
           "I20261130 10:00:02.000000 1 sgd_solver.cpp:112] Iter"
           "$ /x/.venv/bin/caffe train -solver s.prototxt -snapshot /r/s_iter_1400.solverstate\n"
           "I20261130 11:00:00.000000 1 solver.cpp:1] Restoring\n"
           "I20261130 11:00:01.500000 1 solver.cpp:1] Optimization Done.\n")
    assert training.resumed_from(log) == [1400]
    assert training.training_seconds(log) == pytest.approx(3.5)   # 2 + 1.5, not 3601.5


def test_each_session_starts_on_its_own_line(tmp_path, data):
    solver = experiment(tmp_path, data, iterations=20)
    (tmp_path / "train.log").write_text("I20261130 10:00:02.000000 1 sgd_solver.cpp:112] Iter")
    training.train(solver, str(tmp_path))
    lines = (tmp_path / "train.log").read_text().splitlines()
    assert lines[0].endswith("] Iter") and lines[1].startswith(training.COMMAND_PREFIX)


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB tmpfs (root only; skipped where mount is refused), grown by calling it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def grow():
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
    yield disk, grow
    subprocess.run(["umount", "-l", str(disk)])


def test_a_full_disk_is_named_and_the_rerun_resumes(small_disk, data):
    """caffe train on a disk that fills at a snapshot: the error says so; once there is
    room, the rerun resumes from the last whole snapshot, its command line on a line of its
    own, and the log counts both sessions."""
    disk, grow = small_disk
    solver = experiment(disk, data, iterations=200)
    with pytest.raises(ToolkitError) as error:
        training.train(solver, str(disk))
    message = str(error.value)
    assert f"no space left on {disk} (tmpfs tmpfs), 0 MB free; free space and rerun to " \
           "resume" in message
    assert "Iter" not in message and "@ 0x" not in message
    for path in training.snapshots(str(disk)).values():   # no empty snapshot stays
        assert all(os.path.getsize(p) > 0 for p in path)
    resume_point = newest_solverstate_iteration(disk)
    assert resume_point > 0

    grow()
    training.train(solver, str(disk))
    log = (disk / "train.log").read_text()
    assert training.resumed_from(log) == [resume_point]
    sessions = log.split("\n" + training.COMMAND_PREFIX)
    assert len(sessions) == 2 and log.startswith(training.COMMAND_PREFIX)
    assert training.training_seconds(log) == pytest.approx(
        training.training_seconds(sessions[0])
        + training.training_seconds(training.COMMAND_PREFIX + sessions[1]))
    assert list(disk.glob("*" + training.CORRUPT_SUFFIX)) == []
    training.final_weights(str(disk), 200)
