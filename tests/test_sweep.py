"""tools/reproduce_table.py: the Table 3.1 sweep with the control, seeds, statistics and a
ledger that survives interruption. End to end with real `caffe train` at reduced width."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from pixelfeedback.nets import largefov
from pixelfeedback import sweep
from pixelfeedback import training
from pixelfeedback.nets import weights as netweights

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
    rows = sweep.summarize(results, losses=("cosine",), lambdas=(0.1,))
    control, cosine = rows
    # control: mean 0.55, s = 0.0707, n = 2, t(0.975, 1) = 12.706 -> half width 0.6353
    assert control["mean"] == pytest.approx(0.55)
    assert control["ci"] == pytest.approx(12.7062 * 0.070711 / np.sqrt(2), rel=1e-3)
    assert control["thesis"] == sweep.THESIS_BASELINE
    # cosine: mean 0.65; difference to the control 0.10; Welch: each variance 0.005 / 2,
    # se = sqrt(0.0025 + 0.0025) = 0.07071, dof = 0.005^2 / (2 * 0.0025^2) = 2,
    # t(0.975, 2) = 4.303 -> half width 0.3042
    assert cosine["mean"] == pytest.approx(0.65)
    assert cosine["diff"] == pytest.approx(0.10)
    assert cosine["diff_ci"] == pytest.approx(4.3027 * 0.070711, rel=1e-3)
    assert cosine["thesis"] == 0.6321  # Table 3.1, cosine, lambda 0.1
    markdown = sweep.table_markdown(rows)
    assert "| control (softmax only) | 0 | 2 | 0.5500 |" in markdown
    assert "| cosine | 0.1 | 2 | 0.6500 |" in markdown and "+0.1000" in markdown
    assert sweep.table_csv(rows).splitlines()[0].startswith("loss,lambda,seeds,mean_iou,ci95")


def test_single_seed_gives_no_interval():
    rows = sweep.summarize([record("control", 0.0, 0, 0.5), record("cosine", 0.01, 0, 0.6)],
                        losses=("cosine",), lambdas=(0.01,))
    assert np.isnan(rows[1]["ci"]) and np.isnan(rows[1]["diff_ci"])
    assert "n/a" in sweep.table_markdown(rows)


def test_unknown_loss_is_refused():
    with pytest.raises(sweep.ToolkitError, match="unknown loss 'cosin'"):
        sweep.SweepConfig(losses=("cosin",))


class Interrupted(Exception):
    pass


@pytest.fixture
def small_sweep(tmp_path, tiny_voc, caffe):
    """A reduced-width sweep config on the tiny data set with random initial weights."""
    root, list_path = tiny_voc
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(str(largefov.deploy_net(width_div=32, num_classes=4, size=65)))
    net = caffe.Net(str(deploy), caffe.TEST)
    netweights.fill_random_weights(net, seed=0)
    init = str(tmp_path / "init.caffemodel")
    net.save(init)
    return sweep.SweepConfig(out=str(tmp_path / "sweep"), data_root=root, train_list=list_path,
                          val_list=list_path, init_weights=init, losses=("cosine",),
                          lambdas=(0.01, 0.1), seeds=(0, 1), iterations=4, batch_size=2,
                          crop=33, test_size=65, width_div=32, num_classes=4, progress=False)


def test_sweep_runs_is_interrupted_resumes_and_writes_the_table(small_sweep):
    cfg = small_sweep
    assert [sweep.run_name(r) for r in cfg.runs()] == [
        "control_seed0", "control_seed1", "cosine_lam0.01_seed0", "cosine_lam0.01_seed1",
        "cosine_lam0.1_seed0", "cosine_lam0.1_seed1"]
    finished = []

    def stop_after_two(result):
        finished.append(result["run"])
        if len(finished) == 2:
            raise Interrupted()

    with pytest.raises(Interrupted):
        sweep.run_sweep(cfg, on_result=stop_after_two)
    ledger = os.path.join(cfg.out, "results")
    first = {name: os.path.getmtime(os.path.join(ledger, name + ".json")) for name in finished}
    assert sorted(os.listdir(ledger)) == sorted(n + ".json" for n in finished)

    seen = []
    results = sweep.run_sweep(cfg, on_result=lambda r: seen.append(r["run"]))
    assert len(results) == 6 and len(seen) == 6
    for name, mtime in first.items():  # finished runs were not run again
        assert os.path.getmtime(os.path.join(ledger, name + ".json")) == mtime
    for result in results:
        assert 0.0 <= result["mean_iou"] <= 1.0
        assert np.isfinite(result["last_loss"])
        assert os.path.isfile(os.path.join(cfg.out, result["weights"]))
    control = json.load(open(os.path.join(ledger, "control_seed0.json")))
    assert control["loss"] == "control" and control["lambda"] == 0.0

    rows, markdown = sweep.write_table(cfg, results)
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
    cfg.init_weights = "/nonexistent/not-used.caffemodel"
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    assert [sweep.run_name(r) for r in cfg.runs()] == ["baseline", "control_seed0",
                                                   "cosine_lam0.1_seed0"]
    results = sweep.run_sweep(cfg)
    assert len(results) == 3
    log = open(os.path.join(cfg.out, "runs", "control_seed0", "train.log")).read()
    assert os.path.join(cfg.out, "runs", "baseline", "baseline_iter_4.caffemodel") in log
    rows, markdown = sweep.write_table(cfg, results)
    assert [r["loss"] for r in rows] == ["baseline", "control", "cosine"]
    assert rows[0]["thesis"] == sweep.THESIS_BASELINE and rows[1]["thesis"] is None
    assert "stage-1 baseline" in markdown


def test_missing_initial_weights_is_a_clear_error(small_sweep):
    small_sweep.init_weights = "/nonexistent/train2_iter_8000.caffemodel"
    with pytest.raises(sweep.ToolkitError, match="initial weights not found"):
        sweep.run_sweep(small_sweep)


def test_cli_help_and_errors(tmp_path):
    script = os.path.join(REPO, "tools", "reproduce_table.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True,
                               text=True).stdout
    for option in ("--losses", "--lambdas", "--seeds", "--gpu", "--iterations", "--table-only"):
        assert option in help_text
    result = subprocess.run([sys.executable, script, "--losses", "nope", "--out",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "error: unknown loss 'nope'" in result.stderr


def test_a_rerun_with_other_settings_is_refused_never_mixed(small_sweep):
    """The case of the demo's --quick folder reused by a full run: 4-iteration runs must
    never be tabulated beside 5-iteration ones (it used to say "(done, skipped)")."""
    cfg = small_sweep
    cfg.lambdas, cfg.seeds = (0.1,), (0,)
    sweep.run_sweep(cfg)
    longer = sweep.SweepConfig(**{**vars(small_sweep), "iterations": 5, "snapshot_every": None})
    with pytest.raises(sweep.ToolkitError, match=r"holds a Table 3.1 sweep of other settings "
                       r"\(iterations: 4 there, 5 now\); pass another --out, or --restart"):
        sweep.run_sweep(longer)
    # another seed is the same setting: the sweep is extended, finished runs are kept
    extended = sweep.SweepConfig(**{**vars(small_sweep), "seeds": (0, 1), "snapshot_every": None})
    ran = []
    sweep.run_sweep(extended, on_result=lambda r: ran.append((r["run"], r["seconds"])))
    assert [name for name, _ in ran] == ["control_seed0", "control_seed1", "cosine_lam0.1_seed0",
                                         "cosine_lam0.1_seed1"]
    # --restart discards the old runs and trains with the new settings
    longer.restart = True
    results = sweep.run_sweep(longer)
    assert {r["iterations"] for r in results} == {5}


def test_a_second_sweep_on_the_same_folder_names_the_first(small_sweep, tmp_path):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pixelfeedback.runfolder import RunFolder\n"
        "from pixelfeedback import sweep\n"
        f"cfg = sweep.SweepConfig(**{{k: v for k, v in {vars(small_sweep)!r}.items()}})\n"
        "folder = RunFolder(cfg.out, cfg.fingerprint(), what='Table 3.1 sweep')\n"
        "print('locked', flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(sweep.ToolkitError, match=rf"in use by process {holder.pid}\b"):
            sweep.run_sweep(small_sweep)
    finally:
        holder.kill()
        holder.wait()
