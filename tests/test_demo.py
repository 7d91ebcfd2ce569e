"""The main job (tools/demo.py) and its committed model: what must hold by construction of
the synthetic data set, with real Caffe end to end."""
import json
import os

import pytest

from pixelfeedback import evaluation, synthetic
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
    # its val mIoU, measured now on the recipe's val images, is the recorded one and above
    # the stated floor (val images depend only on the seed and their index)
    data = synthetic.generate(str(tmp_path / "data"), n_train=1, n_val=demo.RECIPE["data"]["n_val"],
                              size=demo.RECIPE["data"]["size"], seed=demo.RECIPE["data"]["seed"])
    _, test = demo.demo_model_files(str(tmp_path))
    result = evaluation.evaluate((test, demo.DEMO_WEIGHTS), data["val_list"], data["root"],
                               str(tmp_path / "eval"), num_classes=5,
                               size=demo.RECIPE["data"]["size"], progress=False)
    assert result["mean_iou"] == pytest.approx(meta["val_mean_iou"], abs=1e-6)
    assert result["mean_iou"] >= 0.75


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
    # the small Table 3.1: control and the chosen losses, each evaluated
    losses = [row["loss"] for row in summary["table"]["rows"]]
    assert losses == ["control", "cosine", "selective_cosine"]
    assert all(0 <= row["mean"] <= 1 for row in summary["table"]["rows"])
    # the report and its figures
    out = tmp_path / "out"
    report = (out / "report.md").read_text()
    for section in ("## 1. Data", "## 2. Baseline", "## 3. Segmentation fixations",
                    "## 4. Masking the part", "## 5. Table 3.1 in small", "## Timings"):
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
