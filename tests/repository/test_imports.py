"""Importing any library module changes no process state and loads no Caffe, so that the
entry wrapper (pixelfeedback.cli) can quiet Caffe's glog before it loads; and no library
module imports a script."""
import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def library_modules():
    names = []
    for folder, _, files in os.walk(os.path.join(REPO, "pixelfeedback")):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.relpath(os.path.join(folder, name), REPO)[:-3]
                names.append(path.replace(os.sep, ".").replace(".__init__", ""))
    return sorted(names)


def test_importing_the_library_loads_no_caffe_and_changes_no_state():
    probe = (
        "import os, sys, importlib\n"
        "import cv2  # OpenCV sets LD_LIBRARY_PATH when imported: a third party's doing\n"
        "env, path = dict(os.environ), list(sys.path)\n"
        f"for name in {library_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "    assert 'caffe' not in sys.modules, name + ' imports caffe'\n"
        "    assert dict(os.environ) == env, name + ' changes os.environ'\n"
        "    assert sys.path == path, name + ' changes sys.path'\n"
        "print('ok')\n")
    env = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("script", sorted(
    os.path.join("tools", n) for n in os.listdir(os.path.join(REPO, "tools"))
    if n.endswith(".py")) + [os.path.join("weights", "fetch.py")])
def test_scripts_are_thin_and_imported_by_nobody(script):
    with open(os.path.join(REPO, script)) as f:
        text = f.read()
    assert len(text.splitlines()) <= 130, f"{script} is no thin script"
    assert "sys.path" not in text, f"{script} changes the import path"
    for write in ("os.environ[", "os.environ.setdefault", "os.environ.update", "os.putenv"):
        assert write not in text, f"{script} changes the environment"
    stem = os.path.splitext(os.path.basename(script))[0]
    for module in library_modules():
        path = os.path.join(REPO, module.replace(".", os.sep))
        path = path + ".py" if os.path.isfile(path + ".py") else os.path.join(path, "__init__.py")
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in ("tools", "weights"):
                pytest.fail(f"{module} imports from the scripts' folder {node.module}")
            if isinstance(node, ast.Import) and any(a.name.startswith(("tools.", "weights."))
                                                     for a in node.names):
                pytest.fail(f"{module} imports a script")
    assert stem  # every script was read
