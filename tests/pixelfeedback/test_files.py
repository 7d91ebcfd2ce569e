"""pixelfeedback/files.py, the library's one home for writing files: atomic writes (text,
JSON, VOC palette label PNGs) that leave the old file or the new one and never a temporary;
python_layers/voc_io.py keeps only the reading; importing files loads neither OpenCV nor
Pillow, and the GPU bundle's stand-ins for them carry what the GPU check writes and reads."""
import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from pixelfeedback import files
from python_layers import voc_io
from tests.conftest import REPO
from tests.python_layers.test_voc_io import VOC_COLOURS

WRITE_HELPERS = ("atomic_path", "write_text", "write_json", "write_label")
VOC_IO = os.path.join(REPO, "python_layers", "voc_io.py")
SHIMS = os.path.join(REPO, "docker", "gpu_bundle", "shims")


def leftover_temporaries(folder):
    """Files atomic_path could have left behind in ``folder``."""
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


# --- label PNGs ------------------------------------------------------------------------------

def test_written_label_shows_the_voc_colours_and_reads_back_as_indices(tmp_path):
    indices = sorted(VOC_COLOURS)
    label = np.array([indices, indices[::-1]], np.uint8)  # 2 x 22, every class and void
    path = tmp_path / "label.png"
    files.write_label(path, label)
    with Image.open(path) as img:
        assert img.mode == "P"
        rgb = np.array(img.convert("RGB"))
    for row in range(2):
        for col, index in enumerate(label[row]):
            assert tuple(int(v) for v in rgb[row, col]) == VOC_COLOURS[int(index)]
    read = voc_io.read_label(path)
    assert read.dtype == np.uint8 and read.tolist() == label.tolist()


def test_write_label_refuses_values_outside_0_to_255(tmp_path):
    for bad in ([[256, 0]], [[-1, 0]]):  # would wrap to 0 and 255 (ignore) silently
        with pytest.raises(ValueError, match=r"label values must be 0\.\.255"):
            files.write_label(str(tmp_path / "bad.png"), np.array(bad))
    assert not os.path.exists(tmp_path / "bad.png")


# --- atomic writes ---------------------------------------------------------------------------

def test_atomic_writes_leave_no_temporary_files(tmp_path):
    files.write_label(tmp_path / "label.png", np.zeros((3, 4), np.uint8))
    files.write_text(tmp_path / "notes.txt", "first\n")
    first_inode = os.stat(tmp_path / "notes.txt").st_ino
    files.write_text(tmp_path / "notes.txt", "second\n")
    # Replaced by a rename, never rewritten in place: a reader sees the old or the new file.
    assert os.stat(tmp_path / "notes.txt").st_ino != first_inode
    files.write_json(tmp_path / "record.json", {"b": 1.5, "a": [1, 2]})
    assert sorted(os.listdir(tmp_path)) == ["label.png", "notes.txt", "record.json"]
    assert (tmp_path / "notes.txt").read_text() == "second\n"
    text = (tmp_path / "record.json").read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1.5}
    assert text.index('"a"') < text.index('"b"') and text.endswith("}\n")  # sorted, newline
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "notes.txt").st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_an_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    files.write_json(target, {"done": 1})
    with pytest.raises(KeyboardInterrupt):
        with files.atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write('{"do')  # half written when the run is interrupted
            raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"done": 1}
    assert leftover_temporaries(tmp_path) == []
    with pytest.raises(TypeError):  # not JSON: nothing replaces the old file
        files.write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"done": 1}
    assert leftover_temporaries(tmp_path) == []


def test_atomic_write_makes_the_folder(tmp_path):
    files.write_text(tmp_path / "new" / "deeper" / "file.txt", "x")
    assert (tmp_path / "new" / "deeper" / "file.txt").read_text() == "x"
    assert leftover_temporaries(tmp_path / "new" / "deeper") == []


# --- one home for writes ---------------------------------------------------------------------

def test_voc_io_defines_no_write_function():
    tree = ast.parse(open(VOC_IO).read())
    defined = [node.name for node in tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    assert [name for name in defined if name.startswith("write") or name in WRITE_HELPERS] == []
    assert [name for name in WRITE_HELPERS if hasattr(voc_io, name)] == []


def test_importing_files_loads_neither_opencv_nor_pillow(tmp_path):
    probe = (
        "import sys\n"
        "heavy = lambda: sorted(m for m in ('cv2', 'PIL', 'python_layers.voc_io') if m in sys.modules)\n"
        "from pixelfeedback import files\n"
        "print(heavy())\n"
        f"files.write_json({str(tmp_path / 'a.json')!r}, {{'a': 1}})\n"
        "print(heavy())\n"
        f"files.write_label({str(tmp_path / 'a.png')!r}, [[0, 1]])\n"
        "print(heavy())\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    # Pillow (and voc_io's palette) load only when a label is written
    assert done.stdout.splitlines() == ["[]", "[]", "['PIL', 'cv2', 'python_layers.voc_io']"]


def voc_io_aliases(tree):
    """The names a module binds to python_layers.voc_io, and the names it takes from it."""
    aliases, taken = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "python_layers":
            aliases |= {a.asname or a.name for a in node.names if a.name == "voc_io"}
        elif isinstance(node, ast.ImportFrom) and node.module == "python_layers.voc_io":
            taken += [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            aliases |= {a.asname for a in node.names if a.name == "python_layers.voc_io" and a.asname}
    return aliases, taken


def code_files():
    for top in ("pixelfeedback", "tools", "weights", "benchmarks"):
        for folder, _, names in os.walk(os.path.join(REPO, top)):
            for name in sorted(names):
                if name.endswith(".py"):
                    yield os.path.join(folder, name)


def test_no_module_imports_voc_io_to_write():
    """Every use of voc_io in the library, the scripts and the benchmarks is a name voc_io
    still defines (reading, the palette, constants), never a write helper: those are
    pixelfeedback.files; a module that imports voc_io uses something of it."""
    still_defined = {name for name in vars(voc_io) if not name.startswith("__")}
    assert not still_defined & set(WRITE_HELPERS)
    problems, importers = [], 0
    for path in code_files():
        tree = ast.parse(open(path).read(), path)
        aliases, taken = voc_io_aliases(tree)
        rel = os.path.relpath(path, REPO)
        used = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name) and node.value.id in aliases]
        used += [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                 and ast.unparse(node.value) == "python_layers.voc_io"]
        used += taken
        importers += bool(used)
        if aliases and not used:
            problems.append(f"{rel} imports voc_io and uses nothing of it")
        problems += [f"{rel} uses voc_io.{name}" for name in used if name not in still_defined
                     or name in WRITE_HELPERS]
    assert problems == []
    assert importers > 10  # the scan found the readers (evaluation, synthetic, sweep's checks...)


# --- the GPU bundle ----------------------------------------------------------------------------

BUNDLE_PYTHON = '''
import importlib.abc, importlib.machinery, os, sys, sysconfig
SITE = tuple(os.path.realpath(sysconfig.get_paths()[key]) + os.sep for key in ("purelib", "platlib"))
class OnlyWhatTheBundleCarries(importlib.abc.MetaPathFinder):
    """Refuse the venv's packages beyond numpy, protobuf and six, as the bundle lacks them."""
    def find_spec(self, name, path=None, target=None):
        if "." in name or name in ("numpy", "google", "six"):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        if spec and spec.origin and os.path.realpath(spec.origin).startswith(SITE):
            raise ImportError(name + " is not in the GPU bundle")
        return None
sys.meta_path.insert(0, OnlyWhatTheBundleCarries())
sys.path.insert(0, sys.argv[1])  # the stand-ins, ahead of the venv's packages
'''


def test_what_the_gpu_check_writes_and_reads_works_with_the_bundles_stand_ins(tmp_path):
    """The GPU bundle has no OpenCV or Pillow (docker/gpu_bundle/shims stand in): the GPU
    check's data written through files.write_label and read through voc_io there is what
    the real Pillow and OpenCV read here."""
    out = tmp_path / "bundle"
    probe = BUNDLE_PYTHON + '''
import numpy as np
from pixelfeedback import files, gpu_check
from python_layers import voc_io
import cv2, PIL.Image
assert cv2.__file__.startswith(sys.argv[1]) and PIL.Image.__file__.startswith(sys.argv[1])
root, list_path = gpu_check.write_data(sys.argv[2], count=2, size=(80, 100))
for index, (image, label) in enumerate(voc_io.read_list(list_path, root=root)):
    np.save(os.path.join(sys.argv[2], f"image{index}.npy"), voc_io.read_image(image))
    np.save(os.path.join(sys.argv[2], f"label{index}.npy"), voc_io.read_label(label, 21))
files.write_label(os.path.join(sys.argv[2], "every_class.png"), [list(range(21)) + [255]])
print(sorted(m for m in ("scipy", "matplotlib", "skimage", "tqdm") if m in sys.modules))
'''
    done = subprocess.run([sys.executable, "-c", probe, SHIMS, str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]"]
    pairs = voc_io.read_list(out / "list.txt", root=str(out))
    assert len(pairs) == 2
    for index, (image, label) in enumerate(pairs):
        np.testing.assert_array_equal(np.load(out / f"image{index}.npy"), voc_io.read_image(image))
        np.testing.assert_array_equal(np.load(out / f"label{index}.npy"), voc_io.read_label(label))
    with Image.open(out / "every_class.png") as img:
        assert img.mode == "P" and np.array(img).tolist() == [list(range(21)) + [255]]
        rgb = np.array(img.convert("RGB"))[0]
    assert [tuple(int(v) for v in colour) for colour in rgb] == [
        VOC_COLOURS[index] for index in list(range(21)) + [255]]
