"""tools/fetch_voc.py checks the image counts of the lists it made against the published
data sets (issue 26 item 4): VOC 2012 train 1,464, val 1,449, SBD's train_aug 10,582; any
other count is a warning naming the list, and a folder without SBD labels is a note."""
import os

import numpy as np

from pixelfeedback import files, voc_data
from tests.conftest import load_script


def voc_folder(root, train, val, aug):
    """A VOC2012 folder with these image ids (``aug``: also a SegmentationClassAug label)."""
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (sets / "val.txt").write_text("".join(f"{i}\n" for i in val))
    (root / "JPEGImages").mkdir()
    for name in sorted(set(train) | set(val) | set(aug)):
        (root / "JPEGImages" / f"{name}.jpg").write_bytes(b"x")
        label = np.zeros((2, 2), np.uint8)
        if name in train or name in val:
            files.write_label(str(root / "SegmentationClass" / f"{name}.png"), label)
        if name in aug:
            files.write_label(str(root / "SegmentationClassAug" / f"{name}.png"), label)


def test_lists_only_warns_for_each_count_that_is_not_the_published_one(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    voc_folder(root, train=["a", "b"], val=["c"], aug=["a", "b", "c", "d"])
    lists = tmp_path / "lists"
    fetch_voc = load_script(os.path.join("tools", "fetch_voc.py"))
    assert fetch_voc.main(["--lists-only", str(root), "--lists-dir", str(lists)]) == 0
    captured = capsys.readouterr()
    assert f"{lists / 'val.txt'}: 1 images" in captured.out
    warnings = captured.err.splitlines()
    assert len(warnings) == 3, captured.err
    assert warnings[0].startswith(f"warning: {lists / 'train.txt'} has 2 images, the "
                                  "published VOC 2012 1,464")
    assert warnings[1].startswith(f"warning: {lists / 'val.txt'} has 1 images, the published "
                                  "VOC 2012 1,449")
    assert warnings[2].startswith(f"warning: {lists / 'train_aug.txt'} has 3 images, the "
                                  "published VOC 2012 + SBD 10,582")


def test_a_folder_without_sbd_labels_gets_a_note(tmp_path, capsys):
    root = tmp_path / "VOC2012"
    voc_folder(root, train=["a"], val=["b"], aug=[])
    fetch_voc = load_script(os.path.join("tools", "fetch_voc.py"))
    assert fetch_voc.main(["--lists-only", str(root), "--lists-dir", str(tmp_path)]) == 0
    note = capsys.readouterr().err.splitlines()[-1]
    assert note.startswith(f"note: no {tmp_path / 'train_aug.txt'} (no SBD labels)")
    assert "--sbd" in note


def test_the_published_counts_give_no_warning():
    assert voc_data.count_warnings({"train": 1464, "val": 1449, "train_aug": 10582},
                                   "lists") == []
    assert len(voc_data.count_warnings({"train": 1464, "val": 1448, "train_aug": 10582},
                                       "lists")) == 1
