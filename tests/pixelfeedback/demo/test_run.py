"""The main job (tools/demo.py) and its committed model: what must hold by construction of
the synthetic data set, with real Caffe end to end."""
import json
import os

import pytest

from pixelfeedback import evaluation, synthetic
from pixelfeedback.sweep import plan
from pixelfeedback.nets import weights as netweights

from pixelfeedback.demo import model as demo
from pixelfeedback.demo import run as demo_run
from pixelfeedback.download import file_digest


def test_committed_model_is_the_one_the_recipe_describes(caffe, tmp_path):
    meta = json.load(open(demo.DEMO_RECIPE_FILE))
    assert meta["recipe"] == demo.RECIPE
    assert meta["recipe_id"] == demo.recipe_id()
    assert meta["sha256"] == file_digest(demo.DEMO_WEIGHTS)
    assert demo.committed_baseline() is not None
    assert os.path.getsize(demo.DEMO_WEIGHTS) < 5 * 2 ** 20  # a few MB at most
    # every layer of the recipe's net is there, with its shape, by name
    deploy, _ = demo.demo_model_files(str(tmp_path))
    net = caffe.Net(deploy, caffe.TEST)
    loaded = netweights.load_weights(net, demo.DEMO_WEIGHTS)
    assert set(net.params) <= set(loaded)
    assert net.params["conv1_1"][0].data.shape == (8, 3, 3, 3)  # 64 / width_div 8
    assert net.params["fc8_voc12"][0].data.shape == (5, 128, 1, 1)
    # its val mIoU, measured now on the recipe's val images, is the recorded one (val images
    # depend only on the seed and their index, so one training image is enough)
    data = synthetic.generate(str(tmp_path / "data"), n_train=1, n_val=demo.RECIPE["data"]["n_val"],
                              size=demo.RECIPE["data"]["size"], seed=demo.RECIPE["data"]["seed"])
    _, test = demo.demo_model_files(str(tmp_path))
    result = evaluation.evaluate((test, demo.DEMO_WEIGHTS), data["val_list"], data["root"],
                               str(tmp_path / "eval"), num_classes=5,
                               size=demo.RECIPE["data"]["size"], progress=False)
    assert result["num_images"] == meta["val_images"] == demo.RECIPE["data"]["n_val"]
    assert result["mean_iou"] == pytest.approx(meta["val_mean_iou"], abs=1e-6)
    # chapter 3's baseline: good, yet it errs (room for a fine-tune to change something),
    # and on training images as on val (it did not memorise its training set)
    assert 0.6 <= meta["val_mean_iou"] <= 0.95
    assert abs(meta["train_mean_iou"] - meta["val_mean_iou"]) < 0.03
    # trained from the recipe's initial weights (kept beside it) with DeepLab's stage-1
    # step schedule, which the step control continues
    assert file_digest(demo.init_weights()) == demo.RECIPE["init"]["sha256"]
    assert os.path.getsize(demo.init_weights()) < 5 * 2 ** 20
    solver = demo.RECIPE["baseline"]["solver"]
    assert solver["lr_policy"] == "step"
    assert demo.step_control() == {"base_lr": demo.RECIPE["baseline"]["base_lr"],
                                   "gamma": solver["gamma"], "stepsize": solver["stepsize"],
                                   "done": demo.RECIPE["baseline"]["iterations"]}


def test_make_demo_is_a_reduced_version_of_the_powered_table():
    """make demo and make table31-small fine-tune alike (their cells measure the same thing):
    the demo runs fewer cells at the rule's first stage (the same first seeds, no seeds
    added), on the same val images; its cells' first-stage results are the powered table's."""
    full, powered = demo.SETTINGS["full"], demo.SETTINGS["table31"]
    for key in ("seeds", "normalize", "val_images", "finetune_iterations", "finetune_lr",
                "train_images"):
        assert full[key] == powered[key], key
    assert full["more_seeds"] == () and powered["more_seeds"]
    assert powered["step_control"] and not full["step_control"]
    assert set(full["losses"]) <= set(powered["losses"])
    assert set(full["lambdas"]) <= set(powered["lambdas"])
    assert len(full["losses"]) * len(full["lambdas"]) < \
        len(powered["losses"]) * len(powered["lambdas"])
    assert len(powered["seeds"]) >= 2 and powered["val_images"] <= demo.RECIPE["data"]["n_val"]
    assert powered["train_images"] <= demo.RECIPE["data"]["n_train"]


def test_quick_demo_end_to_end(tmp_path):
    summary = demo_run.run_demo(out=str(tmp_path / "out"), data_dir=str(tmp_path / "data"),
                            quick=True, progress=False)
    baseline = summary["baseline"]
    # the baseline beats chance (predicting background everywhere) by a wide margin
    assert baseline["mean_iou"] > 3 * baseline["all_background_mean_iou"]
    assert baseline["mean_iou"] > 0.6
    # fixations land on the discriminative part far more often than its share of the area
    shares = summary["part_shares"]
    assert shares["objects_traced"] >= 3
    assert shares["mean_share_on_part"] > 3 * shares["mean_part_area_share"]
    assert shares["median_enrichment"] > 3
    # masking the part lowers the class activation on the rest of the object
    salient = summary["salient"]
    assert salient["objects"] >= 3
    assert salient["mean_drop_pct"] > 10
    assert salient["objects_with_drop"] > salient["objects"] / 2
    # the small Table 3.1: the poly control, the step control and the chosen losses
    losses = [row["loss"] for row in summary["table"]["rows"]]
    assert losses == ["control", plan.CONTROL_STEP, "cosine", "selective_cosine"]
    assert all(0 <= row["mean"] <= 1 for row in summary["table"]["rows"])
    assert summary["table"]["findings"][0].startswith("Schedule switch alone")
    # the report and its figures
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    for section in ("## 1. Data", "## 2. Baseline", "## 3. Segmentation fixations",
                    "## 4. Masking the part", "## 5. Table 3.1 in small", "## Timings",
                    "Schedule switch alone", "Quick mode"):
        assert section in report
    for figure in ["data.png"] + summary["fixation_figures"] + summary["salient"]["figures"]:
        assert (out / figure).is_file(), figure
    assert (out / "table" / "table31.md").is_file()

    # a kill mid-write left a temporary among the salient figures: never embedded, removed
    leftover = out / os.path.dirname(summary["salient"]["figures"][0]) / ".tmp-k1ll3d.png"
    leftover.write_bytes(b"")
    # a second run reuses every cached step
    again = demo_run.run_demo(out=str(out), data_dir=str(tmp_path / "data"), quick=True,
                          progress=False)
    assert again["baseline"]["mean_iou"] == pytest.approx(baseline["mean_iou"])
    assert again["table"]["markdown"] == summary["table"]["markdown"]
    assert again["salient"]["figures"] == summary["salient"]["figures"]
    # training time is read from the logs, so a rerun (or a resume) still reports all of it
    assert again["table"]["train_seconds"] == summary["table"]["train_seconds"] > 0
    assert f"the {summary['table']['runs']} Table 3.1 runs" in (out / "report.md").read_text()
    assert ".tmp-" not in (out / "report.md").read_text() and not leftover.exists()


class Stop(Exception):
    """Ends a demo run right after its run folder was accepted."""


def test_a_quick_folder_is_refused_by_a_full_run_until_restart(tmp_path, monkeypatch, capsys):
    """`tools/demo.py --quick` then `make demo` into the same folder: refused with a message
    that names the differing settings and the way out (--restart), never mixed."""
    from tests.conftest import load_script

    def stop(*args, **kwargs):
        raise Stop()

    monkeypatch.setattr(demo_run, "make_data", stop)
    out, data = str(tmp_path / "demo"), str(tmp_path / "data")
    with pytest.raises(Stop):
        demo_run.run_demo(out=out, data_dir=data, quick=True, progress=False)
    script = load_script(os.path.join("tools", "demo.py"))
    assert script.main(["--out", out, "--data", data, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "mode: 'quick' there, 'full' now" in err and "--restart" in err
    with pytest.raises(Stop):   # the way out: the full run starts afresh
        script.main(["--out", out, "--data", data, "--no-progress", "--restart"])
    assert json.load(open(os.path.join(out, "settings.json")))["mode"] == "full"


# A baseline recipe small enough to train in seconds: the retrain and export path end to end.
TINY_RECIPE = dict(
    demo.RECIPE, data={"size": 65, "n_train": 100, "n_val": 12, "seed": 0},
    baseline={"iterations": 4, "batch_size": 2, "crop": 65, "base_lr": 1e-3,
              "solver": {"type": "SGD", "lr_policy": "step", "gamma": 0.1, "stepsize": 2},
              "seed": 0, "snapshot": 2})


def test_retrain_and_export_make_the_model_the_next_run_uses(tmp_path, monkeypatch, capsys):
    """`tools/demo.py --retrain --export` at tiny size: the baseline is trained, exported
    with its recipe into the weights folder (never weights/demo here), accepted there as
    the recipe's model, and used by the next run instead of training again."""
    committed = file_digest(demo.DEMO_WEIGHTS)
    weights_dir, data = str(tmp_path / "weights"), str(tmp_path / "data")
    traced = []

    def stop_after_baseline(deploy, weights, *args):
        traced.append(weights)
        raise Stop()

    monkeypatch.setattr(demo_run, "part_shares", stop_after_baseline)
    with pytest.raises(Stop):
        demo_run.run_demo(out=str(tmp_path / "first"), data_dir=data, quick=True, retrain=True,
                          export=True, progress=False, recipe=TINY_RECIPE,
                          weights_dir=weights_dir)
    trained = str(tmp_path / "first" / "baseline" / "baseline_iter_4.caffemodel")
    log = (tmp_path / "first" / "baseline" / "train.log").read_text()
    assert log.splitlines()[0].endswith("-weights " + demo.init_weights())
    exported, recipe_file = demo.weights_files(weights_dir)
    assert traced == [trained]
    assert file_digest(exported) == file_digest(trained)
    meta = json.load(open(recipe_file))
    assert meta["recipe"] == TINY_RECIPE and meta["sha256"] == file_digest(exported)
    assert meta["val_images"] == 12 and 0 <= meta["val_mean_iou"] <= 1
    assert meta["train_images"] == 12 and 0 <= meta["train_mean_iou"] <= 1
    assert meta["last_loss"] is not None and meta["train_seconds"] >= 0
    assert demo.committed_baseline(TINY_RECIPE, weights_dir) == meta
    assert demo.committed_baseline(demo.RECIPE, weights_dir) is None  # another recipe's
    # the next run (no --retrain) takes the exported model and trains nothing
    with pytest.raises(Stop):
        demo_run.run_demo(out=str(tmp_path / "second"), data_dir=data, quick=True,
                          progress=False, recipe=TINY_RECIPE, weights_dir=weights_dir)
    assert traced[-1] == exported
    assert not (tmp_path / "second" / "baseline" / "baseline_iter_4.caffemodel").exists()
    assert file_digest(demo.DEMO_WEIGHTS) == committed   # weights/demo untouched

    # the script passes its flags through
    calls = []
    monkeypatch.setattr(demo_run, "run_demo", lambda *a, **k: calls.append((a, k)))
    from tests.conftest import load_script
    script = load_script(os.path.join("tools", "demo.py"))
    assert script.main(["--retrain", "--export", "--table31-small", "--no-progress"]) == 0
    (args, kwargs), = calls
    assert args[:5] == ("runs/table31-small", "data/synthetic", False, True, True)
    assert kwargs["table31"] is True
