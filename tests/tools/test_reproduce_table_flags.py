"""Every flag of tools/reproduce_table.py, through the script's own main(), reaches the
sweep setting it names (a flag dropped between the script and SweepConfig used to go
unnoticed: most sweep tests set the configuration directly)."""
import os

import pytest

from tests.flag_harness import (assert_flag_reaches, capture_call, flag_ids, parser_flags,
                                table_flags)
from pixelfeedback.sweep import checks, driver, plan
from python_layers import ToolkitError

SCRIPT = "tools/reproduce_table.py"
# (flag, value, SweepConfig attribute, expected value); paths are made absolute
FLAGS = [
    ("--out", "elsewhere/t31", "out", os.path.abspath("elsewhere/t31")),
    ("--data-root", "d/VOC", "data_root", os.path.abspath("d/VOC")),
    ("--train-list", "l/tr.txt", "train_list", os.path.abspath("l/tr.txt")),
    ("--val-list", "l/va.txt", "val_list", os.path.abspath("l/va.txt")),
    ("--init-weights", "w/init.caffemodel", "init_weights", os.path.abspath("w/init.caffemodel")),
    ("--losses", "cosine,selective_correlation", "losses", ("cosine", "selective_correlation")),
    ("--lambdas", "0.2,3", "lambdas", (0.2, 3.0)),
    ("--normalize", "valid", "normalize", "valid"),
    ("--seeds", "4,7", "seeds", (4, 7)),
    ("--iterations", "40", "iterations", 40),
    ("--snapshot-every", "7", "snapshot_every", 7),
    ("--keep-snapshots", "5", "keep_snapshots", 5),
    ("--batch-size", "3", "batch_size", 3),
    ("--crop", "129", "crop", 129),
    ("--test-size", "257", "test_size", 257),
    ("--width-div", "8", "width_div", 8),
    ("--num-classes", "5", "num_classes", 5),
    ("--gpu", "2", "gpu", 2),
    ("--gpus", "1,3", "devices", [1, 3]),
    ("--workers", "3", "workers", 3),
    ("--threads", "2", "threads", 2),
    ("--flow-images", "30", "flow_images", 30),
    ("--shard", "2/3", "shard", (2, 3)),
    ("--step-control", "0.01,0.5,100,300", "step_control",
     {"base_lr": 0.01, "gamma": 0.5, "stepsize": 100, "done": 300}),
    ("--baseline-from", "w/vgg.caffemodel", "baseline_from", os.path.abspath("w/vgg.caffemodel")),
    ("--baseline-list", "l/aug.txt", "baseline_list", os.path.abspath("l/aug.txt")),
    ("--baseline-batch-size", "7", "baseline_batch_size", 7),
    ("--baseline-iterations", "12", "baseline_iterations", 12),
    ("--base-lr", "0.002", "base_lr", 0.002),
    ("--restart", None, "restart", True),
    ("--val-trained-init", None, "val_trained_init", True),
]


@pytest.fixture
def captured(monkeypatch):
    """Runs the script's main() and returns {"cfg": SweepConfig, "table_only": ...} it
    handed the sweep."""
    return capture_call(monkeypatch, SCRIPT, driver, "run_and_report")


@pytest.mark.parametrize("flag, value, attribute, expected", FLAGS, ids=flag_ids(FLAGS))
def test_each_flag_reaches_its_setting(captured, flag, value, attribute, expected):
    assert_flag_reaches(lambda *argv: captured(*argv)["cfg"], flag, value, attribute,
                        expected, only=False)


def test_the_remaining_flags(captured):
    call = captured("--table-only", "--no-progress")
    assert call["table_only"] is True and call["cfg"].progress is False
    # --step-control alone continues DeepLab's stage 1 from --baseline-iterations
    cfg = captured("--step-control", "--baseline-iterations", "900")["cfg"]
    assert cfg.step_control == dict(plan.STAGE1_STEP_SCHEDULE, done=900)
    assert captured("--step-control", "none")["cfg"].step_control is None
    # the released weights are recognised: refused unless the flag says they have seen val
    cfg = captured("--init-weights", "weights/train2_iter_8000.caffemodel")["cfg"]
    assert "voc2012_val" in checks.trained_on(cfg.init_weights) and cfg.baseline_from is None
    with pytest.raises(ToolkitError, match="has seen VOC 2012 val.*--val-trained-init"):
        checks.check_init_provenance(cfg)
    cfg = captured("--init-weights", "weights/train2_iter_8000.caffemodel",
                   "--val-trained-init")["cfg"]
    checks.check_init_provenance(cfg)
    # without --init-weights, stage 1 from the ImageNet init and both controls: the fair table
    cfg = captured()["cfg"]
    assert cfg.baseline_from == os.path.abspath("weights/vgg16_20M.caffemodel")
    assert cfg.init_weights is None and cfg.step_control == dict(
        plan.STAGE1_STEP_SCHEDULE, done=6000)
    assert [run.loss for run in cfg.runs()[:5]] == [
        "baseline", "control", "control", "control", "control_step"]


def test_every_flag_of_the_script_is_in_this_test():
    tested = table_flags(FLAGS) | {"--table-only", "--no-progress", "--step-control"}
    assert parser_flags(SCRIPT) == tested
