"""Table 3.1's claims measured where they act (issue 27): each correlated pair's share of
pixels predicted as its partner, per run and per cell with its paired difference to the
control; lambda at VOC's strength; runs that diverge recorded, not dropped."""
import numpy as np
import pytest

from pixelfeedback import metrics, thesis
from pixelfeedback.nets import largefov
from pixelfeedback.sweep import driver, summary, table

NAMES = ("background", "cat", "dog", "chair", "sofa")


def test_pair_confusion_against_a_hand_worked_matrix():
    # rows: ground truth. cat: 10 pixels, 3 called dog, 1 chair; dog: 20, 5 called cat;
    # chair: 8, 2 called sofa, 1 cat; sofa: 4, 1 called chair
    confusion = np.array([[50, 0, 0, 0, 0],
                          [0, 6, 3, 1, 0],
                          [0, 5, 15, 0, 0],
                          [0, 1, 0, 5, 2],
                          [0, 0, 0, 1, 3]])
    shares = metrics.pair_confusion(confusion, NAMES, thesis.CORRELATED_PAIRS)
    assert shares == {"cat/dog": pytest.approx((3 + 5) / (10 + 20)),
                      "chair/sofa": pytest.approx((2 + 1) / (8 + 4))}
    # a pair the names lack, or whose classes have no pixel, has no share
    assert metrics.pair_confusion(confusion[:3, :3], NAMES[:3], thesis.CORRELATED_PAIRS) == {
        "cat/dog": pytest.approx(8 / 29), "chair/sofa": None}  # cat row: 9 pixels left
    assert metrics.pair_confusion(np.zeros((5, 5)), NAMES, (("cat", "dog"),)) == {"cat/dog": None}


def test_the_voc_equivalent_lambda_is_the_pixels_ratio():
    # the small set's batch 10 at crop 129 holds 2,890 label pixels, VOC's at 321 16,810
    assert largefov.voc_equivalent_lambda(5.0, "none", 2890) == pytest.approx(0.8597, abs=1e-4)
    assert largefov.voc_equivalent_lambda(0.1, "none", 16810) == pytest.approx(0.1)
    assert largefov.voc_equivalent_lambda(1.0, "valid", 2890) == pytest.approx(1 / 16810)


def record(loss, lam, seed, miou, cat_dog, chair_sofa, diverged=False):
    return {"run": f"{loss}_{lam}_{seed}", "loss": loss, "lambda": lam, "seed": seed,
            "mean_iou": miou, "normalize": "none", "label_pixels_per_batch": 2890,
            "pair_confusion": {"cat/dog": cat_dog, "chair/sofa": chair_sofa},
            "diverged": diverged}


def planted():
    control = [record("control", 0.0, s, 0.80, 0.20 + 0.01 * s, 0.10) for s in range(3)]
    cosine = [record("cosine", 5.0, s, 0.70, 0.15 + 0.02 * s, 0.10 + 0.01 * s,
                     diverged=(s == 2)) for s in range(3)]
    return control + cosine


def test_each_cell_has_its_pairs_paired_difference_and_voc_lambda():
    rows = {row["loss"]: row for row in summary.summarize(planted())}
    cosine = rows["cosine"]
    # cat/dog: cosine - control per seed = -0.05, -0.04, -0.03: mean -0.04, sd 0.01
    cat_dog = cosine["measures"]["pair_cat_dog"]
    assert cat_dog["mean"] == pytest.approx(0.17)
    assert cat_dog["paired_diff"] == pytest.approx(-0.04)
    assert cat_dog["paired_ci"] == pytest.approx(4.3027 * 0.01 / np.sqrt(3), rel=1e-3)
    assert cosine["measures"]["pair_chair_sofa"]["paired_diff"] == pytest.approx(0.01)
    assert "paired_diff" not in rows["control"]["measures"]["pair_cat_dog"]
    assert cosine["lam_voc"] == pytest.approx(5.0 * 2890 / 16810)
    assert rows["control"]["lam_voc"] is None
    assert cosine["diverged"] == 1 and rows["control"]["diverged"] == 0


def test_the_table_shows_the_pairs_the_voc_lambda_and_the_diverged_runs():
    rows = summary.summarize(planted())
    markdown = table.table_markdown(rows)
    assert "| cosine | 5 | 3 (1 diverged) | 0.7000 |" in markdown
    cosine_line = next(line for line in markdown.splitlines() if line.startswith("| cosine"))
    assert cosine_line.endswith("| 0.5996 | 0.86 |")   # the thesis at λ 5, λ at VOC
    assert "#### The two mechanisms" in markdown
    assert "| cosine | 5 | 0.1700 ± 0.0497 | -0.0400 ± 0.0248 |" in markdown
    header, *lines = table.table_csv(rows).splitlines()
    columns = header.split(",")
    cosine = dict(zip(columns, next(line for line in lines if line.startswith("cosine"))
                      .split(",")))
    assert float(cosine["lambda_voc"]) == pytest.approx(0.8597, abs=1e-4)
    assert cosine["diverged"] == "1" and cosine["init_seen_val"] == "False"
    assert float(cosine["pair_cat_dog_paired_diff"]) == pytest.approx(-0.04)
    assert float(cosine["pair_chair_sofa"]) == pytest.approx(0.11)


def test_a_planted_slip_pairing_the_wrong_classes_fails():
    """Pairs swapped (cat with chair, dog with sofa) give other shares than the thesis's."""
    confusion = np.array([[9, 0, 0, 0, 0], [0, 6, 3, 1, 0], [0, 5, 15, 0, 0],
                          [0, 1, 0, 5, 2], [0, 0, 0, 1, 3]])
    right = metrics.pair_confusion(confusion, NAMES, thesis.CORRELATED_PAIRS)
    swapped = metrics.pair_confusion(confusion, NAMES, (("cat", "chair"), ("dog", "sofa")))
    assert list(right.values()) != list(swapped.values())


@pytest.fixture(scope="module")
def synthetic_sweep(tmp_path_factory):
    """A control and a strong cosine run fine-tuned from the committed demo model on a small
    synthetic set, each with experiment 4's flow measured on its own weights."""
    import os
    from pixelfeedback import synthetic
    from pixelfeedback.demo import model as demo
    from pixelfeedback.sweep import plan

    base = tmp_path_factory.mktemp("flow")
    data = synthetic.generate(str(base / "data"), n_train=20, n_val=6)
    weights, _ = demo.weights_files(demo.DEMO_WEIGHTS_DIR)
    cfg = plan.SweepConfig(
        out=str(base / "sweep"), data_root=data["root"], train_list=data["train_list"],
        val_list=data["val_list"], init_weights=weights, losses=("cosine",), lambdas=(50.0,),
        seeds=(0,), iterations=10, base_lr=1e-3, batch_size=4, crop=129, test_size=129,
        width_div=demo.RECIPE["net"]["width_div"], num_classes=demo.RECIPE["net"]["num_classes"],
        class_names=synthetic.CLASS_NAMES, step_control=None, workers=1, flow_images=4,
        progress=False)
    return cfg, {r["run"]: r for r in driver.run_sweep(cfg)}


def test_the_flow_of_each_run_is_measured_on_its_own_weights(synthetic_sweep, tmp_path):
    """A planted slip measuring every run's flow on the control's weights fails here."""
    import os
    from pixelfeedback.sweep import flow

    cfg, results = synthetic_sweep
    for name, record in results.items():
        assert record["flow"]["images"] == 4 and record["flow"]["objects"] > 0
        again = flow.flow_measure(cfg, os.path.join(cfg.out, record["weights"]),
                                  str(tmp_path / name))
        assert again == record["flow"]
    assert results["cosine_lam50_seed0"]["flow"] != results["control_seed0"]["flow"]
    rows = {row["loss"]: row for row in summary.summarize(list(results.values()))}
    assert rows["cosine"]["measures"]["flow_drop_pct"]["paired_diff"] == pytest.approx(
        results["cosine_lam50_seed0"]["flow"]["drop_pct"]
        - results["control_seed0"]["flow"]["drop_pct"])
    assert "flow: drop % with the part masked" in table.table_markdown(list(rows.values()))


def test_flow_images_need_a_synthetic_data_set(tmp_path, tiny_voc):
    from pixelfeedback.sweep import flow, plan
    from python_layers import ToolkitError

    root, list_path = tiny_voc
    cfg = plan.SweepConfig(out=str(tmp_path / "s"), data_root=root, flow_images=3)
    with pytest.raises(ToolkitError, match="--flow-images needs a data set made by "
                                           "tools/synthetic.py"):
        flow.check_flow_data(cfg)


def test_the_flow_is_pooled_over_the_objects(monkeypatch, tmp_path):
    """An object whose activation before is near zero would swamp a mean of each object's
    drop %: the run's figure pools the drops over the summed activation."""
    from pixelfeedback import experiments
    from pixelfeedback.sweep import flow, plan

    rows = [dict(mean_before=10.0, mean_after=4.0, drop_pct=60.0),
            dict(mean_before=0.01, mean_after=-0.99, drop_pct=10000.0)]
    monkeypatch.setattr(experiments, "run_all", lambda *a, **k: {"salient": {
        "rows": rows, "images": 2}})
    monkeypatch.setattr(experiments, "synthetic_part_mask_fn", lambda root: None)
    cfg = plan.SweepConfig(out=str(tmp_path), flow_images=2, width_div=32, num_classes=5,
                           test_size=65)
    measured = flow.flow_measure(cfg, "w.caffemodel", str(tmp_path))
    assert measured["drop_pct"] == pytest.approx(100 * (6.0 + 1.0) / 10.01)
    assert measured["objects"] == 2 and measured["images"] == 2
