"""Never mixes settings: every key of the sweep folder's fingerprint, changed in turn, is
refused naming it (a key added without a case here fails the walk); a file replaced under
the same path (initial weights, a list file) is refused like a changed setting."""
import os
import re
import shutil

import pytest

from tests.conftest import write_tiny_voc
from pixelfeedback.runfolder import CONTENTS
from pixelfeedback.sweep import plan, store
from python_layers import ToolkitError


@pytest.fixture
def files(tmp_path):
    """Data, two lists and two weights files that exist (their contents are digested)."""
    root = str(tmp_path / "voc")
    train = write_tiny_voc(root)
    val = os.path.join(root, "val.txt")
    shutil.copy(train, val)
    for name in ("trained.caffemodel", "imagenet.caffemodel"):
        (tmp_path / name).write_bytes(name.encode() * 100)
    return dict(data_root=root, train_list=train, val_list=val, baseline_list=train,
                init_weights=str(tmp_path / "trained.caffemodel"),
                baseline_from=str(tmp_path / "imagenet.caffemodel"))


def base(tmp_path, files, **changes):
    values = dict(files, out=str(tmp_path / "sweep"), iterations=8, batch_size=2, crop=33,
                  test_size=65, width_div=32, num_classes=4, base_lr=0.01,
                  baseline_batch_size=3, baseline_iterations=5, normalize="none",
                  step_control="stage1", progress=False)
    values.update(changes)
    return plan.SweepConfig(**values)


def other_file(tmp_path, name, like):
    path = str(tmp_path / name)
    shutil.copy(like, path)
    return path


# how to change each fingerprint key: keyword changes, or a function changing a file
SETTING_CHANGES = {
    "data_root": lambda t, f: dict(data_root=str(t / "elsewhere")),
    "train_list": lambda t, f: dict(train_list=other_file(t, "train2.txt", f["train_list"])),
    "val_list": lambda t, f: dict(val_list=other_file(t, "val2.txt", f["val_list"])),
    "init_weights": lambda t, f: dict(init_weights=other_file(t, "w2", f["init_weights"])),
    "normalize": lambda t, f: dict(normalize="valid"),
    "iterations": lambda t, f: dict(iterations=9),
    "batch_size": lambda t, f: dict(batch_size=3),
    "crop": lambda t, f: dict(crop=41),
    "test_size": lambda t, f: dict(test_size=73),
    "width_div": lambda t, f: dict(width_div=16),
    "num_classes": lambda t, f: dict(num_classes=5),
    "base_lr": lambda t, f: dict(base_lr=0.02),
    "step_control": lambda t, f: dict(step_control="0.001,0.1,2000,7"),
    "baseline_from": lambda t, f: dict(baseline_from=other_file(t, "i2", f["baseline_from"])),
    "baseline_list": lambda t, f: dict(baseline_list=other_file(t, "aug2.txt", f["train_list"])),
    "baseline_batch_size": lambda t, f: dict(baseline_batch_size=4),
    "baseline_iterations": lambda t, f: dict(baseline_iterations=6),
}


def rewrite(path, text):
    with open(path, "ab") as f:
        f.write(text)


CONTENT_CHANGES = {  # the same path, other contents
    "train_list": lambda f: rewrite(f["train_list"], b"/JPEGImages/img_0000.jpg /SegmentationClassAug/img_0000.png\n"),
    "val_list": None,  # the case, below: the val list cut from 4 images to 1
    "init_weights": lambda f: rewrite(f["init_weights"], b"other weights"),
    "baseline_from": lambda f: rewrite(f["baseline_from"], b"other init"),
    "baseline_list": lambda f: rewrite(f["baseline_list"], b"/JPEGImages/img_0001.jpg "
                                                          b"/SegmentationClassAug/img_0001.png\n"),
}


def test_every_fingerprint_key_has_a_case_here(tmp_path, files):
    keys = base(tmp_path, files).fingerprint()
    assert set(keys) - {CONTENTS} == set(SETTING_CHANGES)
    assert set(keys[CONTENTS]) == set(CONTENT_CHANGES)


@pytest.mark.parametrize("key", sorted(SETTING_CHANGES))
def test_a_changed_setting_is_refused_naming_it(tmp_path, files, key):
    with store.open_sweep_folder(base(tmp_path, files)):
        pass
    changed = base(tmp_path, files, **SETTING_CHANGES[key](tmp_path, files))
    with pytest.raises(ToolkitError, match=rf"other settings \({re.escape(key)}[:.]"):
        store.open_sweep_folder(changed)
    store.open_sweep_folder(base(tmp_path, files)).close()   # the same settings resume


@pytest.mark.parametrize("key", sorted(CONTENT_CHANGES))
def test_a_file_changed_under_the_same_path_is_refused_naming_it(tmp_path, files, key):
    cfg = base(tmp_path, files)
    with store.open_sweep_folder(cfg):
        pass
    if CONTENT_CHANGES[key] is None:  # the case: the val list cut from 4 images to 1
        lines = open(files["val_list"]).readlines()
        with open(files["val_list"], "w") as f:
            f.write(lines[0])
    else:
        CONTENT_CHANGES[key](files)
    with pytest.raises(ToolkitError, match=rf"contents\.{key}: 'sha256:[0-9a-f]+' there, "
                                           rf"'sha256:[0-9a-f]+' now"):
        store.open_sweep_folder(base(tmp_path, files))


def test_an_older_folder_without_digests_adopts_them(tmp_path, files):
    cfg = base(tmp_path, files)
    with store.open_sweep_folder(cfg) as folder:
        settings_file = folder.file("settings.json")
    import json
    stored = json.load(open(settings_file))
    digests = stored.pop(CONTENTS)
    json.dump(stored, open(settings_file, "w"))
    store.open_sweep_folder(cfg).close()   # resumes, and records what it lacked
    assert json.load(open(settings_file))[CONTENTS] == digests
    CONTENT_CHANGES["init_weights"](files)
    with pytest.raises(ToolkitError, match=r"contents\.init_weights"):
        store.open_sweep_folder(cfg)
