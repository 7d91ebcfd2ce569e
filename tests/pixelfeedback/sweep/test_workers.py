"""The Table 3.1 sweep as users run it (tools/reproduce_table.py in its own process): kill -9
of the sweep and a rerun give the uninterrupted weights bit for bit and say so in the
record; shards and --gpus-style workers split the runs and give the table of one process;
a run another process holds is left to it; the step-schedule control; progress without
glog on the terminal."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from pixelfeedback import training
from pixelfeedback.sweep import driver, plan, store, summary, table
from pixelfeedback.nets import weights as netweights
from tests.conftest import (REPO, assert_no_trainer_left, kill_once_logged,
                            newest_solverstate_iteration, random_largefov_weights,
                            run_with_terminal_stderr, write_tiny_voc)

SCRIPT = os.path.join(REPO, "tools", "reproduce_table.py")
ITERATIONS, SNAPSHOT = 60, 25
# The kill test trains longer: killed after the snapshot at 25 with 575 iterations (about a
# second) left, so that a slow poll on a loaded machine still interrupts the run.
KILL_TEST_ITERATIONS, KILL_AFTER = 600, "Iteration 30,"


@pytest.fixture(scope="module")
def setting(tmp_path_factory, caffe):
    """Data and random initial weights of a reduced-width sweep, and its flags."""
    base = tmp_path_factory.mktemp("sweep_setting")
    root = str(base / "voc")
    list_path = write_tiny_voc(root, n_images=6)
    init = random_largefov_weights(str(base), caffe)
    options = dict(data_root=root, train_list=list_path, val_list=list_path,
                   init_weights=init, losses=("cosine",), lambdas=(0.1, 1.0), seeds=(0, 1),
                   iterations=ITERATIONS, snapshot_every=SNAPSHOT, batch_size=2, crop=33,
                   test_size=65, width_div=32, num_classes=4, progress=False,
                   step_control=None, workers=1)
    return options


def config(setting, out, **changes):
    return plan.SweepConfig(out=str(out), **dict(setting, **changes))


def argv(setting, out, *extra):
    s = setting
    return [sys.executable, SCRIPT, "--out", str(out), "--data-root", s["data_root"],
            "--train-list", s["train_list"], "--val-list", s["val_list"],
            "--init-weights", s["init_weights"], "--losses", ",".join(s["losses"]),
            "--lambdas", ",".join(f"{x:g}" for x in s["lambdas"]),
            "--seeds", ",".join(str(x) for x in s["seeds"]), "--iterations", str(ITERATIONS),
            "--snapshot-every", str(SNAPSHOT), "--batch-size", "2", "--crop", "33",
            "--test-size", "65", "--width-div", "32", "--num-classes", "4",
            "--step-control", "none", "--workers", "1", *extra]


@pytest.fixture(scope="module")
def uninterrupted(setting, tmp_path_factory):
    """The whole sweep in one process, in one go: (folder, table CSV)."""
    out = tmp_path_factory.mktemp("one_process") / "sweep"
    cfg = config(setting, out)
    driver.run_and_report(cfg)
    return out, open(out / "table31.csv").read()


def final_weight_bytes(out, run, iterations=ITERATIONS):
    final = training.final_weights(str(out / "runs" / run), iterations)
    return [np.asarray(blob.data, np.float32).tobytes()
            for layer in netweights.read_caffemodel(final).layer for blob in layer.blobs]


def test_kill_9_of_the_sweep_then_rerun_is_bit_identical_and_recorded(setting, tmp_path):
    one_go = tmp_path / "one_go"
    driver.run_and_report(config(setting, one_go, seeds=(0,), lambdas=(0.1,),
                                iterations=KILL_TEST_ITERATIONS))
    out = tmp_path / "sweep"
    command = argv(setting, out, "--seeds", "0", "--lambdas", "0.1",
                   "--iterations", str(KILL_TEST_ITERATIONS))
    sweep_process = subprocess.Popen(command, cwd=REPO, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "runs" / "control_seed0" / "train.log"
    kill_once_logged(sweep_process, str(log), KILL_AFTER)  # the sweep and its process group
    assert_no_trainer_left(str(out))
    resume_point = newest_solverstate_iteration(log.parent)
    assert 0 < resume_point < KILL_TEST_ITERATIONS

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    record = json.load(open(out / "results" / "control_seed0.json"))
    assert record["resumed"] is True and record["resumed_from"] == [resume_point]
    assert json.load(open(out / "results" / "cosine_lam0.1_seed0.json"))["resumed"] is False
    assert f"resumed from iteration {resume_point}" in done.stderr
    for run in ("control_seed0", "cosine_lam0.1_seed0"):
        assert (final_weight_bytes(out, run, KILL_TEST_ITERATIONS)
                == final_weight_bytes(one_go, run, KILL_TEST_ITERATIONS))
        assert (json.load(open(out / "results" / f"{run}.json"))["mean_iou"]
                == json.load(open(one_go / "results" / f"{run}.json"))["mean_iou"])


def test_two_shards_at_once_write_the_table_of_one_process(setting, tmp_path, uninterrupted):
    out = tmp_path / "sweep"
    shards = [subprocess.Popen(argv(setting, out, "--shard", f"{i}/2"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for i in (1, 2)]
    outputs = [shard.communicate(timeout=600) for shard in shards]
    for shard, (stdout, stderr) in zip(shards, outputs):
        assert shard.returncode == 0, stderr
    ran = [set(re.findall(r"^(\S+): mean IoU", stderr, re.M)) for _, stderr in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # each trained its own part
    assert len(ran[0] | ran[1]) == 6
    assert open(out / "table31.csv").read() == uninterrupted[1]
    for run in ran[0] | ran[1]:
        assert final_weight_bytes(out, run) == final_weight_bytes(uninterrupted[0], run)


def test_device_workers_split_the_runs_and_agree_with_one_process(setting, tmp_path,
                                                                    uninterrupted):
    cfg = config(setting, tmp_path / "sweep", devices=[None, None])  # two CPU workers
    results = driver.run_sweep(cfg)
    assert len(results) == 6
    table.write_table(cfg, results)
    assert open(tmp_path / "sweep" / "table31.csv").read() == uninterrupted[1]
    assert {r["device"] for r in results} == {"cpu"}
    for record in results:
        assert final_weight_bytes(tmp_path / "sweep", record["run"]) == \
            final_weight_bytes(uninterrupted[0], record["run"])


def test_a_run_another_process_holds_is_left_to_it(setting, tmp_path, capfd):
    cfg = config(setting, tmp_path / "sweep", lambdas=(0.1,), seeds=(0,), iterations=4,
                 snapshot_every=None)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pixelfeedback.sweep import plan, store\n"
        f"cfg = plan.SweepConfig(**{vars(cfg)!r})\n"
        "folder = store.open_sweep_folder(cfg)\n"
        "run = folder.child('runs/control_seed0', {'run': 'control_seed0'})\n"
        "print('holding', flush=True); time.sleep(120)")], cwd=REPO, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        results = driver.run_sweep(cfg)
        assert [r["run"] for r in results] == ["cosine_lam0.1_seed0"]
        assert "1 run(s) were being trained by other processes (control_seed0)" in \
            capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(r["run"] for r in driver.run_sweep(cfg)) == ["control_seed0",
                                                              "cosine_lam0.1_seed0"]


def test_step_control_continues_the_step_schedule_and_has_its_row(setting, tmp_path):
    schedule = {"base_lr": 0.01, "gamma": 0.5, "stepsize": 3, "done": 4}
    cfg = config(setting, tmp_path / "sweep", lambdas=(0.1,), iterations=4,
                 snapshot_every=None, step_control=schedule)
    results = driver.run_sweep(cfg)
    solver = open(tmp_path / "sweep" / "runs" / "control_step_seed0" /
                  "solver_control.prototxt").read()
    # lr 0.01 * 0.5**floor(4/3) from here, halved where iteration 4 + i reaches 6
    assert 'lr_policy: "multistep"' in solver and "base_lr: 0.005" in solver
    assert "gamma: 0.5" in solver and "stepvalue: 2" in solver
    rows = summary.summarize(results, cfg.losses, cfg.lambdas)
    step = [r for r in rows if r["loss"] == plan.CONTROL_STEP]
    assert len(step) == 1 and step[0]["n"] == 2 and step[0]["paired_n"] == 2
    assert "control, step schedule continued" in table.table_markdown(rows)
    poly = json.load(open(tmp_path / "sweep" / "results" / "control_seed0.json"))
    assert poly["loss"] == "control"


def test_progress_bars_and_no_glog_on_the_terminal(setting, tmp_path):
    # bars are drawn only on a terminal: stderr is a pseudo-terminal here
    status, stdout, stderr = run_with_terminal_stderr(
        argv(setting, tmp_path / "sweep", "--seeds", "0", "--lambdas", "0.1",
             "--iterations", "20", "--snapshot-every", "20"), REPO)
    assert status == 0, stderr
    pieces = re.split(r"[\r\n]", stderr)
    assert any("Table 3.1 sweep" in p and "2/2" in p for p in pieces)
    assert any(p.startswith("control_seed0:") and "20/20" in p and "loss=" in p for p in pieces)
    assert not [p for p in pieces if training.GLOG_LINE.match(p)], "glog reached the terminal"
    assert "| control (softmax only) |" in stdout


def test_cpu_workers_give_the_bits_of_runs_trained_one_at_a_time(setting, tmp_path, capfd):
    """Issue 27: on the CPU the sweep runs one single-threaded training per core by
    default; each run's results are bit-identical to the same run trained alone with the
    same thread count."""
    cores = len(os.sched_getaffinity(0))
    default = plan.SweepConfig()
    assert default.trainers() == ([None] * cores if cores > 1 else None)
    assert default.training_threads() == 1
    assert plan.SweepConfig(gpu=0).trainers() is None and plan.SweepConfig(gpu=0).training_threads() is None
    alone = driver.run_sweep(config(setting, tmp_path / "alone", workers=1, threads=1,
                                    lambdas=(0.1,)))
    capfd.readouterr()
    together = driver.run_sweep(config(setting, tmp_path / "workers", workers=2, threads=1,
                                       lambdas=(0.1,)))
    err = capfd.readouterr().err
    for record in together:  # one line per run: the parent's, none from the workers
        assert err.count(f"{record['run']}: mean IoU") == 1, err
    volatile = ("seconds", "train_seconds", "weights")
    by_run = {r["run"]: r for r in alone}
    assert sorted(by_run) == sorted(r["run"] for r in together)
    for record in together:
        assert record["threads"] == 1
        assert {k: v for k, v in record.items() if k not in volatile} == \
            {k: v for k, v in by_run[record["run"]].items() if k not in volatile}
        assert final_weight_bytes(tmp_path / "workers", record["run"]) == \
            final_weight_bytes(tmp_path / "alone", record["run"])
