"""A sweep folder made by the toolkit before the sweep became a package resumes after it and
gives the same files (its settings.json gains only the content digests of issue 28).

``tests/fixtures/sweep_made_before_the_split/`` was made at commit 9635848 (the last one
with ``pixelfeedback/sweep.py``) with the configuration of ``config`` below: ``expected/``
holds what the whole sweep wrote in one go (settings.json, every result, the plan, the
table), ``resume_me/`` the same sweep interrupted after its first five runs (the stage-1
baseline and both controls; their snapshots' .solverstate files, evaluation predictions and
the controls' weights deleted to keep it small). Its data set and initial weights lie
inside it, so that its settings hold relative paths."""
import glob
import json
import os
import shutil

import pytest

from tests.conftest import REPO
from pixelfeedback.runfolder import content_digest
from pixelfeedback.sweep import driver, plan

FIXTURE = os.path.join(REPO, "tests", "fixtures", "sweep_made_before_the_split")
VOLATILE = ("seconds", "train_seconds")  # wall-clock times of the run that wrote a result
# The template loss computes in float32 over a thread pool since issue 29: the losses Caffe
# logs (6 significant digits) may differ in their last digit from the float64 version's.
FLOAT_DIGITS = 1e-5


def config(out):
    return plan.SweepConfig(
        out=out, data_root=os.path.join(out, "data"),
        train_list=os.path.join(out, "data", "train.txt"),
        val_list=os.path.join(out, "data", "train.txt"),
        init_weights=os.path.join(out, "init.caffemodel"),
        baseline_from=os.path.join(out, "init.caffemodel"),
        baseline_list=os.path.join(out, "data", "train.txt"), baseline_iterations=20,
        baseline_batch_size=2,  # before stage 1 had its own recipe it trained at --batch-size
        losses=("cosine", "selective_correlation"), lambdas=(0.1, 1.0), seeds=(0, 1),
        iterations=20, base_lr=0.01, batch_size=2, crop=33, test_size=65, width_div=32,
        num_classes=4, step_control=dict(plan.STAGE1_STEP_SCHEDULE, done=20),
        keep_snapshots=1, progress=False)


def without(record, keys):
    return {key: value for key, value in record.items() if key not in keys}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """The old folder resumed to the end by today's code, and its table written."""
    out = str(tmp_path_factory.mktemp("earlier") / "resume_me")
    shutil.copytree(os.path.join(FIXTURE, "resume_me"), out)
    before = sorted(os.listdir(os.path.join(out, "results")))
    cfg = config(out)
    driver.run_and_report(cfg)
    return out, before


def test_the_earlier_folder_resumes_and_trains_only_what_it_lacked(resumed):
    out, before = resumed
    assert before == ["baseline.json", "control_seed0.json", "control_seed1.json",
                      "control_step_seed0.json", "control_step_seed1.json"]
    expected = sorted(os.listdir(os.path.join(FIXTURE, "expected", "results")))
    assert sorted(os.listdir(os.path.join(out, "results"))) == expected
    for name in before:  # the finished runs were not run again
        with open(os.path.join(out, "results", name), "rb") as new, \
                open(os.path.join(FIXTURE, "resume_me", "results", name), "rb") as old:
            assert new.read() == old.read(), name


def test_its_plan_stays_byte_identical_and_its_settings_gain_only_the_contents(resumed):
    out, _ = resumed
    for path in glob.glob(os.path.join(FIXTURE, "expected", "*.json")):
        name = os.path.basename(path)
        if name == "settings.json":
            continue
        with open(os.path.join(out, "plans", name), "rb") as new, open(path, "rb") as old:
            assert new.read() == old.read(), name
    # issue 28: the folder adopts the digests of the files whose contents decide its runs
    with open(os.path.join(out, "settings.json")) as new, \
            open(os.path.join(FIXTURE, "expected", "settings.json")) as old:
        new, old = json.load(new), json.load(old)
    weights, data = content_digest(os.path.join(out, "init.caffemodel")), \
        content_digest(os.path.join(out, "data", "train.txt"))
    assert new == dict(old, contents={"init_weights": weights, "baseline_from": weights,
                                      "train_list": data, "val_list": data,
                                      "baseline_list": data})


def test_every_result_equals_the_one_the_earlier_version_wrote(resumed):
    out, _ = resumed
    for path in sorted(glob.glob(os.path.join(FIXTURE, "expected", "results", "*.json"))):
        name = os.path.basename(path)
        with open(path) as f:
            old = json.load(f)
        with open(os.path.join(out, "results", name)) as f:
            new = json.load(f)
        new, old = without(new, VOLATILE), without(old, VOLATILE)
        # what later versions record in addition (e.g. val_trained_init) may be there too
        assert set(new) >= set(old), name
        for key in old:
            expected = old[key]
            if isinstance(expected, (float, dict)):
                expected = pytest.approx(expected, rel=FLOAT_DIGITS)
            assert new[key] == expected, (name, key)


def csv_columns(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def markdown_rows(path):
    """{(loss, λ): {header: cell}} of the first Markdown table in ``path``."""
    lines = [line for line in open(path).read().split("\n\n#### ")[0].splitlines()
             if line.startswith("|") and not line.startswith("|---")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (cell.strip() for cell in line.strip("|").split("|"))))
            for line in lines[1:]]
    return {(row["loss"], row["λ"]): row for row in rows}


def test_the_table_keeps_every_value_the_earlier_version_wrote(resumed):
    """Byte-identical at the split (e6f45f9); since then later issues add columns (λ at VOC,
    the correlated pairs, diverged runs: issue 27) but change no old one."""
    out, _ = resumed
    old, new = (csv_columns(os.path.join(FIXTURE, "expected", "table31.csv")),
                csv_columns(os.path.join(out, "table31.csv")))
    assert len(new) == len(old)
    for old_row, new_row in zip(old, new):
        assert {key: new_row[key] for key in old_row} == old_row
    old, new = (markdown_rows(os.path.join(FIXTURE, "expected", "table31.md")),
                markdown_rows(os.path.join(out, "table31.md")))
    assert new.keys() == old.keys()
    for key, old_row in old.items():
        assert {header: new[key][header] for header in old_row} == old_row, key
