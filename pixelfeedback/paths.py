"""Where the repository's folders are, and how paths are written into generated files."""
import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOTXT_DIR = os.path.join(REPO_ROOT, "prototxt")
WEIGHTS_DIR = os.path.join(REPO_ROOT, "weights")


def repo_relative(path):
    """``path`` as written into nets and solvers: relative to the repository root when it
    lies inside it (or is relative already), else absolute."""
    path = os.fspath(path)
    if not os.path.isabs(path):
        return path
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith("..") else relative
