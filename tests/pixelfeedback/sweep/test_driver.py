"""tools/reproduce_table.py: the Table 3.1 sweep with the control, seeds, statistics and a
ledger that survives interruption. End to end with real `caffe train` at reduced width."""
import collections
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, random_largefov_weights
from pixelfeedback import cli, data_lists
from pixelfeedback.sweep import checks, driver, one_run, plan, store, summary, table
from pixelfeedback import thesis
from python_layers import ToolkitError
from pixelfeedback import training

LOG = """I1125 solver.cpp:239] Iteration 0 (0 iter/s, 0.5s/10 iters), loss = 1.5
I1125 solver.cpp:239] Iteration 10 (4 iter/s, 2.5s/10 iters), loss = 0.75
I1125 solver.cpp:239] Iteration 20 (4 iter/s, 2.5s/10 iters), loss = 0.5
"""


def test_parse_losses_reads_caffe_log_lines():
    assert training.parse_losses(LOG) == [(0, 1.5), (10, 0.75), (20, 0.5)]


def record(loss, lam, seed, miou):
    return {"loss": loss, "lambda": lam, "seed": seed, "mean_iou": miou}


def test_summary_against_a_hand_computation():
    results = [record("control", 0.0, 0, 0.50), record("control", 0.0, 1, 0.60),
               record("cosine", 0.1, 0, 0.60), record("cosine", 0.1, 1, 0.70)]
    rows = summary.summarize(results, losses=("cosine",), lambdas=(0.1,))
    control, cosine = rows
    # control: mean 0.55, s = 0.0707, n = 2, t(0.975, 1) = 12.706 -> half width 0.6353
    assert control["mean"] == pytest.approx(0.55)
    assert control["ci"] == pytest.approx(12.7062 * 0.070711 / np.sqrt(2), rel=1e-3)
    assert control["thesis"] == thesis.BASELINE
    # cosine: mean 0.65; difference to the control 0.10; Welch: each variance 0.005 / 2,
    # se = sqrt(0.0025 + 0.0025) = 0.07071, dof = 0.005^2 / (2 * 0.0025^2) = 2,
    # t(0.975, 2) = 4.303 -> half width 0.3042
    assert cosine["mean"] == pytest.approx(0.65)
    assert cosine["diff"] == pytest.approx(0.10)
    assert cosine["diff_ci"] == pytest.approx(4.3027 * 0.070711, rel=1e-3)
    assert cosine["thesis"] == 0.6321  # Table 3.1, cosine, lambda 0.1
    markdown = table.table_markdown(rows)
    assert "| control (softmax only) | 0 | 2 | 0.5500 |" in markdown
    assert "| cosine | 0.1 | 2 | 0.6500 |" in markdown and "+0.1000" in markdown
    assert table.table_csv(rows).splitlines()[0].startswith("loss,lambda,seeds,mean_iou,ci95")


def test_single_seed_gives_no_interval():
    rows = summary.summarize([record("control", 0.0, 0, 0.5), record("cosine", 0.01, 0, 0.6)],
                        losses=("cosine",), lambdas=(0.01,))
    assert np.isnan(rows[1]["ci"]) and np.isnan(rows[1]["diff_ci"])
    assert "n/a" in table.table_markdown(rows)


def test_unknown_loss_is_refused():
    with pytest.raises(ToolkitError, match="unknown loss 'cosin'"):
        plan.SweepConfig(losses=("cosin",))


class Interrupted(Exception):
    pass


@pytest.fixture
def small_sweep(tmp_path, tiny_voc, caffe):
    """A reduced-width sweep config on the tiny data set with random initial weights."""
    root, list_path = tiny_voc
    init = random_largefov_weights(str(tmp_path), caffe)
    return plan.SweepConfig(out=str(tmp_path / "sweep"), data_root=root, train_list=list_path,
                          val_list=list_path, init_weights=init, losses=("cosine",),
                          lambdas=(0.01, 0.1), seeds=(0, 1), iterations=4, batch_size=2,
                          crop=33, test_size=65, width_div=32, num_classes=4, progress=False,
                          step_control=None, workers=1)


def test_sweep_runs_is_interrupted_resumes_and_writes_the_table(small_sweep):
    cfg = small_sweep
    assert [plan.run_name(r) for r in cfg.runs()] == [
        "control_seed0", "control_seed1", "cosine_lam0.01_seed0", "cosine_lam0.01_seed1",
        "cosine_lam0.1_seed0", "cosine_lam0.1_seed1"]
    finished = []

    def stop_after_two(result):
        finished.append(result["run"])
        if len(finished) == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        driver.run_sweep(cfg, on_result=stop_after_two)
    ledger = os.path.join(cfg.out, "results")
    first = {name: os.path.getmtime(os.path.join(ledger, name + ".json")) for name in finished}
    assert sorted(os.listdir(ledger)) == sorted(n + ".json" for n in finished)

    seen = []
    results = driver.run_sweep(cfg, on_result=lambda r: seen.append(r["run"]))
    assert len(results) == 6 and len(seen) == 6
    for name, mtime in first.items():  # finished runs were not run again
        assert os.path.getmtime(os.path.join(ledger, name + ".json")) == mtime
    for result in results:
        assert 0.0 <= result["mean_iou"] <= 1.0
        assert np.isfinite(result["last_loss"])
        assert os.path.isfile(os.path.join(cfg.out, result["weights"]))
    control = json.load(open(os.path.join(ledger, "control_seed0.json")))
    assert control["loss"] == "control" and control["lambda"] == 0.0

    rows, markdown = table.write_table(cfg, results)
    assert [(r["loss"], r["lam"], r["n"]) for r in rows] == [
        ("control", 0.0, 2), ("cosine", 0.01, 2), ("cosine", 0.1, 2)]
    assert os.path.isfile(os.path.join(cfg.out, "table31.md"))
    assert open(os.path.join(cfg.out, "table31.csv")).read().count("\n") == 4
    # the control's own solver has no template loss; the cosine ones have it with lambda
    control_net = open(os.path.join(cfg.out, "runs", "control_seed0",
                                    "train_control.prototxt")).read()
    cosine_net = open(os.path.join(cfg.out, "runs", "cosine_lam0.1_seed1",
                                   "train_cosine.prototxt")).read()
    assert "TemplateSimilarityLoss" not in control_net
    assert "TemplateSimilarityLoss" in cosine_net and "loss_weight: 0.1" in cosine_net


def test_optional_stage1_baseline_is_trained_first_and_fine_tuned_from(small_sweep):
    cfg = small_sweep
    cfg.baseline_from, cfg.baseline_iterations = cfg.init_weights, 4
    cfg.baseline_list = cfg.train_list
    cfg.init_weights = "/nonexistent/not-used.caffemodel"
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    cfg.normalize = "valid"   # the option, not the default: it reaches the net and the result
    assert [plan.run_name(r) for r in cfg.runs()] == ["baseline", "control_seed0",
                                                   "cosine_lam0.1_seed0"]
    results = driver.run_sweep(cfg)
    assert len(results) == 3
    assert {r["normalize"] for r in results} == {"valid"}
    assert {r["label_pixels_per_batch"] for r in results} == {2 * 5 * 5}   # batch 2, crop 33
    net = open(os.path.join(cfg.out, "runs", "cosine_lam0.1_seed0", "train_cosine.prototxt")).read()
    assert '\\"normalize\\": \\"valid\\"' in net
    log = open(os.path.join(cfg.out, "runs", "control_seed0", "train.log")).read()
    assert os.path.join(cfg.out, "runs", "baseline", "baseline_iter_4.caffemodel") in log
    # stage 1 has its own recipe: DeepLab's batch 20, not the fine-tunes' batch 2
    baseline_net = open(os.path.join(cfg.out, "runs", "baseline", "train_baseline.prototxt")).read()
    assert '\\"batch_size\\": 20' in baseline_net and '\\"batch_size\\": 2,' in net
    assert results[0]["run"] == "baseline" and results[0]["batch_size"] == 20
    rows, markdown = table.write_table(cfg, results)
    assert [r["loss"] for r in rows] == ["baseline", "control", "cosine"]
    assert rows[0]["thesis"] == thesis.BASELINE and rows[1]["thesis"] is None
    assert "stage-1 baseline" in markdown


def test_missing_initial_weights_is_a_clear_error(small_sweep):
    small_sweep.init_weights = "/nonexistent/trained.caffemodel"
    with pytest.raises(ToolkitError, match="initial weights not found"):
        driver.run_sweep(small_sweep)


def test_cli_help_and_errors(tmp_path):
    script = os.path.join(REPO, "tools", "reproduce_table.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True,
                               text=True).stdout
    for option in ("--losses", "--lambdas", "--seeds", "--gpu", "--iterations", "--table-only"):
        assert option in help_text
    result = subprocess.run([sys.executable, script, "--losses", "nope", "--out",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "error: argument --losses: unknown loss 'nope'" in result.stderr


def test_a_rerun_with_other_settings_is_refused_never_mixed(small_sweep):
    """The case of the demo's --quick folder reused by a full run: 4-iteration runs must
    never be tabulated beside 5-iteration ones (it used to say "(done, skipped)")."""
    cfg = small_sweep
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    driver.run_sweep(cfg)
    longer = plan.SweepConfig(**{**vars(small_sweep), "iterations": 5, "snapshot_every": None})
    with pytest.raises(ToolkitError, match=r"holds a Table 3.1 sweep of other settings "
                       r"\(iterations: 4 there, 5 now\); pass another --out, or --restart"):
        driver.run_sweep(longer)
    # another seed is the same setting: the sweep is extended, finished runs are kept
    extended = plan.SweepConfig(**{**vars(small_sweep), "seeds": (0, 1), "snapshot_every": None})
    ran = []
    driver.run_sweep(extended, on_result=lambda r: ran.append((r["run"], r["seconds"])))
    assert [name for name, _ in ran] == ["control_seed0", "control_seed1", "cosine_lam0.1_seed0",
                                         "cosine_lam0.1_seed1"]
    # --restart discards the old runs and trains with the new settings
    longer.restart = True
    results = driver.run_sweep(longer)
    assert {r["iterations"] for r in results} == {5}


def test_a_second_sweep_on_the_same_folder_names_the_first(small_sweep, tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pixelfeedback.runfolder import RunFolder\n"
        "from pixelfeedback.sweep import plan\n"
        f"cfg = plan.SweepConfig(**{{k: v for k, v in {vars(small_sweep)!r}.items()}})\n"
        "folder = RunFolder(cfg.out, cfg.fingerprint(), what='Table 3.1 sweep')\n"
        "print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ToolkitError, match=rf"in use by process {holder.pid}\b"):
            driver.run_sweep(small_sweep)
    finally:
        holder.kill()
        holder.wait()


# ----------------------------------------------------------------------------- paired table

def test_paired_difference_per_cell_marks_a_gain_only_where_its_interval_clears_zero():
    # control: seeds far apart; "cosine" 0.1 adds 0.02 to every seed's run (+-0.001);
    # "cosine" 0.5 adds nothing (+-0.002); seed 3 has no control run, so it is not paired.
    control = {0: 0.50, 1: 0.60, 2: 0.55}
    results = [record("control", 0.0, s, v) for s, v in control.items()]
    results += [record("cosine", 0.1, s, control[s] + 0.02 + e)
                for s, e in zip((0, 1, 2), (0.001, -0.001, 0.0))]
    results += [record("cosine", 0.5, s, control[s] + e)
                for s, e in zip((0, 1, 2), (0.002, -0.002, 0.0))]
    results.append(record("cosine", 0.5, 3, 0.9))
    rows = summary.summarize(results, losses=("cosine",), lambdas=(0.1, 0.5))
    _, gain, none = rows
    # paired differences 0.021, 0.019, 0.020: mean 0.020, sd 0.001, n 3
    # half width t(0.975, 2) * 0.001 / sqrt(3) = 4.3027 * 0.000577 = 0.002484
    assert gain["paired_n"] == 3 and gain["paired_diff"] == pytest.approx(0.020)
    assert gain["paired_ci"] == pytest.approx(4.302653 * 0.001 / np.sqrt(3), rel=1e-5)
    assert gain["paired_mde"] == pytest.approx((4.302653 + 1.060660) * 0.001 / np.sqrt(3),
                                               rel=1e-5)
    assert gain["gain"] == "yes"
    assert gain["diff"] - gain["diff_ci"] < 0  # Welch (unpaired) cannot see it
    assert none["paired_n"] == 3 and none["paired_diff"] == pytest.approx(0.0, abs=1e-12)
    assert none["gain"] == "no"

    markdown = table.table_markdown(rows)
    assert "| paired Δ ± CI |" in markdown and "| gain? |" in markdown
    assert "| cosine | 0.1 | 3 | " in markdown
    assert "| 3 | +0.0200 ± 0.0025 | 0.0031 | yes |" in markdown
    assert "| cosine | 0.5 | 4 | " in markdown and "| no |" in markdown
    assert "(t(0.975, n−1) + t(0.80, n−1))·sd/√n" in markdown

    lines = table.table_csv(rows).splitlines()
    header = lines[0].split(",")
    for column in ("paired_seeds", "paired_diff", "paired_ci95", "paired_mde80", "gain"):
        assert column in header
    cells = dict(zip(header, lines[2].split(",")))
    assert cells["loss"] == "cosine" and cells["gain"] == "yes"
    assert float(cells["paired_diff"]) == pytest.approx(0.020)
    assert float(cells["paired_ci95"]) == pytest.approx(gain["paired_ci"])
    assert dict(zip(header, lines[3].split(",")))["gain"] == "no"


# ----------------------------------------------------------------------------- checks first

@pytest.fixture
def no_training(monkeypatch):
    """Any training or evaluation is a test failure: the checks must come first."""
    def fail(*args, **kwargs):
        raise AssertionError("a run started training before the arguments were checked")

    monkeypatch.setattr(one_run, "train", fail)
    monkeypatch.setattr(one_run, "evaluate_weights", fail)


@pytest.fixture
def cli_setup(tmp_path, tiny_voc, no_training):
    """(argv builder, out folder) for tools/reproduce_table.py on the tiny data set, with a
    stand-in initial weights file (nothing may train)."""
    root, list_path = tiny_voc
    init = tmp_path / "init.caffemodel"
    init.write_bytes(b"\0" * 1000)
    out = str(tmp_path / "sweep")

    def argv(*extra, **flags):
        options = {"--out": out, "--data-root": root, "--train-list": list_path,
                   "--val-list": list_path, "--init-weights": str(init), "--losses": "cosine",
                   "--lambdas": "0.1", "--seeds": "0", "--iterations": "4",
                   "--batch-size": "2", "--crop": "33", "--test-size": "65",
                   "--width-div": "32", "--num-classes": "4"}
        options.update(flags)
        return [item for pair in options.items() for item in pair] + list(extra)

    return argv, out


def run_script(argv, capsys):
    from tests.conftest import load_script

    status = load_script("tools/reproduce_table.py").main(argv)
    return status, capsys.readouterr().err


def assert_refused_before_training(status, err, out, match):
    assert status == 2, err
    assert "error:" in err and "Traceback" not in err
    assert match in err, err
    assert not os.path.exists(os.path.join(out, "runs"))


@pytest.mark.parametrize("flag, value, match", [
    ("--iterations", "0", "--iterations: must be an integer >= 1, got '0'"),
    ("--lambdas", "abc", "--lambdas: must be a comma-separated list of finite numbers >= 0"),
    ("--lambdas", "nan", "got 'nan' ('nan' is not one)"),
    ("--lambdas", "-1", "got '-1' ('-1' is not one)"),
    ("--lambdas", "0.1,0.1", "('0.1' twice)"),
    ("--seeds", "", "--seeds: must be a comma-separated list of integers >= 0 (seeds), got ''"),
    ("--seeds", "x", "got 'x' ('x' is not one)"),
    ("--test-size", "100", "--test-size: must be an integer 8k+1 >= 9"),
    ("--crop", "32", "--crop: must be an integer 8k+1 >= 9"),
    ("--snapshot-every", "5", "--snapshot-every) must be an integer between 1 and the "
                              "iterations (4), got 5"),
])
def test_bad_arguments_are_refused_before_any_training(cli_setup, capsys, flag, value, match):
    argv, out = cli_setup
    status, err = run_script(argv(**{flag: value}), capsys)
    assert_refused_before_training(status, err, out, match)


def test_a_missing_val_list_is_refused_before_any_training(cli_setup, capsys, tmp_path):
    argv, out = cli_setup
    missing = str(tmp_path / "lists" / "val.txt")
    status, err = run_script(argv(**{"--val-list": missing}), capsys)
    assert_refused_before_training(status, err, out, f"list file (--val-list) not found: "
                                                     f"{missing}")


def test_a_list_naming_a_missing_image_is_refused_before_any_training(cli_setup, capsys,
                                                                     tiny_voc, tmp_path):
    argv, out = cli_setup
    root, list_path = tiny_voc
    train = tmp_path / "train.txt"
    train.write_text(open(list_path).read()
                     + "/JPEGImages/gone.jpg /SegmentationClassAug/img_0000.png\n")
    status, err = run_script(argv(**{"--train-list": str(train)}), capsys)
    assert_refused_before_training(
        status, err, out, "1 file(s) named by {} (--train-list) not found, first: {}".format(
            train, os.path.join(root, "JPEGImages", "gone.jpg")))


def test_a_truncated_jpeg_is_refused_before_any_training(cli_setup, capsys, tiny_voc,
                                                        tmp_path):
    argv, out = cli_setup
    root, list_path = tiny_voc
    whole = open(os.path.join(root, "JPEGImages", "img_0001.jpg"), "rb").read()
    with open(os.path.join(root, "JPEGImages", "cut.jpg"), "wb") as f:
        f.write(whole[:len(whole) * 2 // 3])  # a partial download: headers intact
    shutil.copy(os.path.join(root, "SegmentationClassAug", "img_0001.png"),
                os.path.join(root, "SegmentationClassAug", "cut.png"))
    train = tmp_path / "train.txt"
    train.write_text(open(list_path).read() + "/JPEGImages/cut.jpg /SegmentationClassAug/cut.png\n")
    status, err = run_script(argv(**{"--train-list": str(train)}), capsys)
    assert_refused_before_training(status, err, out, "cut.jpg: the file is truncated or corrupt")
    assert f"remove its line from {train} (--train-list)" in err


def test_an_image_and_label_of_different_sizes_are_refused_before_any_training(
        cli_setup, capsys, tiny_voc, tmp_path):
    from PIL import Image

    argv, out = cli_setup
    root, list_path = tiny_voc
    Image.new("RGB", (40, 30)).save(os.path.join(root, "JPEGImages", "odd.jpg"))
    Image.new("P", (41, 30)).save(os.path.join(root, "SegmentationClassAug", "odd.png"))
    val = tmp_path / "val.txt"
    val.write_text(open(list_path).read() + "/JPEGImages/odd.jpg /SegmentationClassAug/odd.png\n")
    status, err = run_script(argv(**{"--val-list": str(val)}), capsys)
    assert_refused_before_training(status, err, out, "is 40x30 but its label")
    assert "odd.png is 41x30" in err


def test_a_val_image_larger_than_the_test_size_is_refused_before_any_training(cli_setup, capsys):
    argv, out = cli_setup
    status, err = run_script(argv(**{"--test-size": "49"}), capsys)  # images are 53x45
    assert_refused_before_training(status, err, out, "larger than the test size 49x49; "
                                                     "pass a larger --test-size")


def test_missing_baseline_init_is_refused_and_init_weights_then_not_needed(small_sweep,
                                                                          no_training):
    cfg = small_sweep
    cfg.init_weights = "/nonexistent/not-used.caffemodel"
    cfg.baseline_from = "/nonexistent/vgg16_20M.caffemodel"
    with pytest.raises(ToolkitError, match=r"--baseline-from\) not found: "
                                                  r"/nonexistent/vgg16_20M"):
        driver.run_sweep(cfg)
    assert not os.path.exists(cfg.out)


def test_a_long_list_is_checked_with_a_progress_bar(tiny_voc, tmp_path, capsys):
    root, list_path = tiny_voc
    long_list = tmp_path / "long.txt"
    long_list.write_text(open(list_path).read() * 60)  # 240 lines
    assert len(data_lists.check_list(str(long_list), root, "--train-list", progress=True)) == 240
    assert "check long.txt" in capsys.readouterr().err
    assert len(data_lists.check_list(list_path, root, "--train-list", progress=True)) == 4
    assert "check" not in capsys.readouterr().err  # short lists: no bar


def test_the_disk_estimate_refuses_when_the_snapshots_would_not_fit(tiny_voc, tmp_path,
                                                                    monkeypatch, no_training):
    root, list_path = tiny_voc
    init = tmp_path / "init.caffemodel"
    init.write_bytes(b"\0" * 1_000_000)
    cfg = plan.SweepConfig(out=str(tmp_path / "sweep"), data_root=root, train_list=list_path,
                            val_list=list_path, init_weights=str(init), losses=("cosine",),
                            lambdas=(0.1,), seeds=(0, 1), iterations=8, snapshot_every=2,
                            batch_size=2, crop=33, test_size=65, width_div=32, num_classes=4,
                            progress=False, step_control=None)
    # 4 runs (2 controls, 2 cosine); a snapshot = 1 MB caffemodel + 1 MB solverstate = 2 MB;
    # each run writes 8 / 2 = 4 snapshots and keeps 2 (4 MB): 4 x 4 MB = 16 MB kept, plus the
    # 2 more snapshots (4 MB) a run holds while it trains: 20 MB.
    need, parts = checks.disk_needed(cfg)
    assert need == 20_000_000 and parts == {"runs": 4, "snapshot_bytes": 2_000_000}
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 19_000_000))
    with pytest.raises(ToolkitError, match=r"need about 20\.0 MB but the filesystem of "
                       r".*sweep has 19\.0 MB free \(4 runs to do, 2\.0 MB a snapshot"):
        driver.run_sweep(cfg)
    assert not os.path.exists(cfg.out)
    cfg.keep_snapshots = 1  # 4 x 2 MB + 3 x 2 MB = 14 MB: fits
    assert checks.disk_needed(cfg)[0] == 14_000_000
    assert checks.check_disk(cfg) == (14_000_000, 19_000_000)


def test_prune_snapshots_keeps_the_newest_and_always_the_final_weights(tmp_path):
    for iteration in (1, 2, 3, 4):
        for ext in ("caffemodel", "solverstate"):
            (tmp_path / f"finetune_cosine_iter_{iteration}.{ext}").write_text("x")
    (tmp_path / "train.log").write_text("log")
    training.prune_snapshots(str(tmp_path), 2, 4)
    assert sorted(os.listdir(tmp_path)) == [
        "finetune_cosine_iter_3.caffemodel", "finetune_cosine_iter_3.solverstate",
        "finetune_cosine_iter_4.caffemodel", "finetune_cosine_iter_4.solverstate", "train.log"]
    training.prune_snapshots(str(tmp_path), 0, 4)
    assert sorted(os.listdir(tmp_path)) == ["finetune_cosine_iter_4.caffemodel", "train.log"]


def test_only_the_last_snapshots_of_a_run_are_kept(small_sweep):
    cfg = small_sweep
    cfg.lambdas, cfg.seeds, cfg.snapshot_every, cfg.keep_snapshots = (0.1,), (0,), 1, 1
    results = driver.run_sweep(cfg)
    assert len(results) == 2
    for name in ("control_seed0", "cosine_lam0.1_seed0"):
        run_dir = os.path.join(cfg.out, "runs", name)
        kept = sorted(f for f in os.listdir(run_dir) if "_iter_" in f)
        assert [f.split("_iter_")[1] for f in kept] == ["4.caffemodel", "4.solverstate"], kept
    # a rerun finds the finished runs and still tabulates them
    assert len(driver.run_sweep(cfg)) == 2


def broken_copy(init, tmp_path, how, caffe):
    """A copy of the initial weights ``init`` broken in one way."""
    path = str(tmp_path / f"{how}.caffemodel")
    data = open(init, "rb").read()
    if how == "truncated":
        open(path, "wb").write(data[:len(data) // 2])
    elif how == "garbage":
        open(path, "wb").write(np.random.RandomState(0).bytes(len(data)))
    elif how == "nan":
        net = caffe.Net(os.path.join(os.path.dirname(init), "deploy.prototxt"), init, caffe.TEST)
        net.params["fc8_voc12"][0].data[0, 0] = np.nan
        net.save(path)
    return path


@pytest.mark.parametrize("how, match", [
    ("truncated", "is not a Caffe model"),
    ("garbage", "is not a Caffe model"),
    ("nan", "layer 'fc8_voc12' weights hold 1 NaN or inf value(s)"),
])
def test_broken_initial_weights_are_refused_before_any_training(small_sweep, no_training,
                                                                tmp_path, caffe, how, match):
    cfg = small_sweep
    cfg.init_weights = broken_copy(cfg.init_weights, tmp_path, how, caffe)
    with pytest.raises(ToolkitError, match=r"initial weights \(--init-weights\)") as info:
        driver.run_sweep(cfg)
    assert match in str(info.value)
    assert not os.path.exists(cfg.out)


@pytest.mark.parametrize("setting, value, flag", [("num_classes", 5, "--num-classes 5"),
                                                  ("width_div", 16, "--width-div 16")])
def test_initial_weights_of_another_net_are_refused_naming_the_flag(small_sweep, no_training,
                                                                   setting, value, flag):
    """The demo's 5-class weights given to a 21-class sweep failed at the first caffe train."""
    cfg = small_sweep
    setattr(cfg, setting, value)
    with pytest.raises(ToolkitError, match="do not fit the net this sweep trains") as info:
        driver.run_sweep(cfg)
    assert flag in str(info.value) and "has shape" in str(info.value)
    assert not os.path.exists(cfg.out)


def test_an_unreadable_result_is_set_aside_and_its_run_redone(small_sweep, capsys):
    """An empty results/<run>.json (a crash mid-write without atomic rename, a hand edit)
    used to stop the sweep and --table-only with a JSONDecodeError."""
    cfg = small_sweep
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    first = {r["run"]: r for r in driver.run_sweep(cfg)}
    result = os.path.join(cfg.out, "results", "cosine_lam0.1_seed0.json")
    open(result, "w").close()
    driver.run_and_report(cfg, table_only=True)   # no traceback: the table lacks the run
    err = capsys.readouterr().err
    assert "results/cosine_lam0.1_seed0.json is unreadable" in err and "set aside" in err
    assert os.path.isfile(result + ".corrupt") and not os.path.exists(result)
    again = {r["run"]: r for r in driver.run_sweep(cfg)}   # redone, training kept
    assert again["cosine_lam0.1_seed0"]["mean_iou"] == first["cosine_lam0.1_seed0"]["mean_iou"]
    assert again["cosine_lam0.1_seed0"]["last_loss"] == first["cosine_lam0.1_seed0"]["last_loss"]
    with open(result, "w") as f:
        f.write('{"hand": "edited"}')
    assert "cosine_lam0.1_seed0" not in {r["run"] for r in store.load_results(cfg.out)}
    assert "is no result record" in capsys.readouterr().err


def test_a_run_that_diverges_is_recorded_with_its_iteration_and_score(small_sweep):
    """A loss that goes non-finite used to end the sweep (after the whole run); now the run
    is stopped there, recorded as diverged at that iteration and scored by its last finite
    weights (here the initial ones: no snapshot came before), and the sweep goes on."""
    cfg = small_sweep
    cfg.lambdas, cfg.seeds, cfg.iterations, cfg.snapshot_every = (0.1,), (0,), 40, 40
    cfg.base_lr = 1e12
    results = {r["run"]: r for r in driver.run_sweep(cfg)}
    assert set(results) == {"control_seed0", "cosine_lam0.1_seed0"}
    for record in results.values():
        assert record["diverged"] is True and 0 <= record["diverged_at"] < 40
        assert np.isfinite(record["mean_iou"]) and np.isfinite(record["last_loss"])
        assert record["weights"] == os.path.relpath(cfg.init_weights, cfg.out)
    rows, markdown = table.write_table(cfg, list(results.values()))
    assert "| 1 (1 diverged) |" in markdown


def test_an_rgb_label_in_the_val_list_is_refused_before_any_run_trains(cli_setup, tiny_voc,
                                                                      capsys):
    """It used to be found only after the control had trained, and its advice named
    --skip-bad-images, a flag this tool lacks."""
    from PIL import Image

    argv, out = cli_setup
    root, list_path = tiny_voc
    label = os.path.join(root, "SegmentationClassAug", "img_0002.png")
    Image.open(label).convert("RGB").save(label)
    status, err = run_script(argv(), capsys)
    assert_refused_before_training(status, err, out, "img_0002.png")
    assert "RGB" in err and "--skip-bad-images" not in err


def test_a_label_value_beyond_the_classes_is_refused_naming_num_classes(cli_setup, capsys):
    argv, out = cli_setup
    status, err = run_script(argv(**{"--num-classes": "2"}), capsys)
    assert_refused_before_training(status, err, out, "--num-classes")


def test_flags_that_do_nothing_together_say_so(small_sweep, capsys):
    cfg = small_sweep   # fine-tunes from --init-weights: no stage 1
    cfg.baseline_batch_size, cfg.baseline_iterations = 7, 9
    checks.check_combinations(cfg)
    err = capsys.readouterr().err
    assert "--baseline-batch-size, --baseline-iterations do(es) nothing" in err
    assert "--baseline-list" not in err   # left at its default: nothing to say
    driver.run_sweep(with_changes(cfg, losses=("cosine",), lambdas=(0.1,), seeds=(0,)))
    capsys.readouterr()
    driver.run_and_report(cfg, table_only=True)
    assert "--table-only: the table is rebuilt from every finished run" in capsys.readouterr().err


def with_changes(cfg, **changes):
    import copy
    other = copy.copy(cfg)
    for key, value in changes.items():
        setattr(other, key, value)
    return other


def test_an_unreadable_plan_is_set_aside_not_a_traceback(small_sweep, capsys):
    cfg = small_sweep
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    with store.open_sweep_folder(cfg) as folder:
        store.record_plan(folder, cfg)
    plan_file = next(iter(os.listdir(os.path.join(cfg.out, "plans"))))
    open(os.path.join(cfg.out, "plans", plan_file), "w").write('{"cut": ')
    assert store.planned_run_names(cfg.out) == []
    assert "is unreadable" in capsys.readouterr().err
    assert os.listdir(os.path.join(cfg.out, "plans")) == [plan_file + ".corrupt"]


def test_a_later_table_without_mechanisms_leaves_no_earlier_figure_beside_it(tmp_path):
    from tests.pixelfeedback.sweep.test_mechanisms import planted
    cfg = plan.SweepConfig(out=str(tmp_path))
    table.write_table(cfg, planted())
    assert os.path.isfile(tmp_path / "table31_mechanisms.png")
    table.write_table(cfg, [{k: v for k, v in r.items() if k != "pair_confusion"}
                            for r in planted()])
    assert not os.path.exists(tmp_path / "table31_mechanisms.png")
    assert os.path.isfile(tmp_path / "table31.png")
