"""Issue 28, case 7 (a tool's own cache file that cannot be read is redone, not blamed on
the user): the evaluation's saved prediction PNGs and the experiments' per-image records
are this toolkit's own files; one cut short makes a rerun predict (or build) that image
again, with a note, and the result equals an uninterrupted run's. (tools/fetch_voc.py's
SBD stamp: tests/pixelfeedback/test_voc_data_errors.py.)"""
import json

from pixelfeedback import evaluation
from tests.pixelfeedback.test_evaluation import NUM_CLASSES, SIZE, tiny_model, voc  # noqa: F401 (fixtures)
from tests.pixelfeedback.experiments.test_runner import data, model, read_text  # noqa: F401 (fixtures)
from tests.pixelfeedback.experiments.test_runner import run as run_experiment


def test_an_unreadable_saved_prediction_is_predicted_again(tiny_model, voc, tmp_path,
                                                          capsys):
    root, list_file = voc
    out = tmp_path / "eval"
    first = evaluation.evaluate(tiny_model, list_file, root, str(out),
                                num_classes=NUM_CLASSES, size=SIZE, progress=False)
    saved = sorted((out / "predictions").glob("*.png"))[1]
    saved.write_bytes(saved.read_bytes()[:20])      # cut short
    capsys.readouterr()
    again = evaluation.evaluate(tiny_model, list_file, root, str(out),
                                num_classes=NUM_CLASSES, size=SIZE, progress=False)
    assert f"the saved prediction {saved} cannot be read" in capsys.readouterr().err
    assert (again["images_run"], again["images_reused"]) == (1, first["num_images"] - 1)
    assert again["mean_iou"] == first["mean_iou"] and again["confusion"] == first["confusion"]


def test_an_unreadable_experiment_record_is_built_again(model, data, tmp_path, capsys):
    out = tmp_path / "out"
    reference = run_experiment("location", model, data, out)
    record = out / "cache" / "location" / "images" / "val_00001.json"
    expected = json.loads(record.read_text())
    record.write_text(record.read_text()[:15])      # cut short
    capsys.readouterr()
    result = run_experiment("location", model, data, out)
    assert f"the cached record {record} cannot be read" in capsys.readouterr().err
    assert (result["images_run"], result["images_cached"]) == (1, 3)
    assert json.loads(record.read_text()) == expected
    assert read_text(result["csv"]) == read_text(reference["csv"])
