"""Issue 28, case 7 for tools/seg_fixations.py. A rerun into the same --out removes the files
of the previous run that its summary.json listed and this run did not write (a class no
longer traced, the flow figures of a --no-flow rerun), so the folder holds exactly what
its summary.json describes; files it never wrote stay. A class or class name given twice
is refused, and a message names only the flags the user gave."""
import json
import os

from tests.conftest import load_script
from tests.tools.test_seg_fixations_cli import small_model  # noqa: F401 (fixture)


def listed(out):
    summary = json.loads((out / "summary.json").read_text())
    names = {summary["figure"], summary["figure_2_4"]}
    for record in summary["classes"]:
        names.update(record["files"].values())
    return summary, names


def test_a_rerun_leaves_only_its_own_files(tmp_path, capsys):
    """The demo (model and image made on the fly), background traced too: two classes."""
    main = load_script(os.path.join("tools", "seg_fixations.py")).main
    out = tmp_path / "out"
    base = ["--out", str(out)]
    assert main(base + ["--include-background"]) == 0
    summary, first = listed(out)
    traced = [c["class_id"] for c in summary["classes"]]
    assert len(traced) >= 2 and traced[0] == 0, traced
    (out / "my_notes.txt").write_text("the user's own file")
    capsys.readouterr()

    assert main(base + ["--classes", str(traced[1]), "--no-flow"]) == 0
    summary, second = listed(out)
    assert [c["class_id"] for c in summary["classes"]] == traced[1:2]
    assert set(os.listdir(out)) == second | {"summary.json", "my_notes.txt"}
    removed = first - second
    assert removed and not any((out / name).exists() for name in removed)
    assert any(name.endswith("_flow.png") for name in removed)   # the --no-flow rerun
    assert f"removed {len(removed)} file(s) of the previous run" in capsys.readouterr().out


def test_a_class_or_name_given_twice_is_refused(tmp_path, small_model, capsys):
    main = load_script(os.path.join("tools", "seg_fixations.py")).main
    base = ["--model", small_model["prototxt"], "--weights", small_model["weights"],
            "--image", small_model["image"], "--out", str(tmp_path / "out")]
    cls = [c for c in small_model["predicted"] if c][0]
    assert main(base + ["--classes", f"{cls},{cls}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --classes gives class") and "twice" in err
    names = ",".join(f"c{i}" for i in range(20)) + ",c3"
    assert main(base + ["--class-names", names]) == 2
    assert capsys.readouterr().err.startswith("error: --class-names names 'c3' twice")


def test_the_message_names_only_the_flags_given(tmp_path, capsys):
    """--weights alone needs --model: the message says so, without --image."""
    main = load_script(os.path.join("tools", "seg_fixations.py")).main
    assert main(["--weights", str(tmp_path / "w.caffemodel"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --weights needs --model") and "--image" not in err
    assert main(["--image", "a.jpg", "--weights", "w", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: --image and --weights need --model")
