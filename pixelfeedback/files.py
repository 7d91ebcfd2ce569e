"""Writing files atomically (so that an interrupted run never leaves a half-written file):
text, JSON and VOC palette label PNGs. The library's one home for writes; reading VOC data
stays in ``python_layers/voc_io.py``. Nothing heavy is imported with this module: Pillow
(and voc_io's palette) load only when a label is written.
"""
import contextlib
import json
import os
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success. An
    OSError of the writes that names no file (a full disk at ``write``/``close``) is raised
    naming ``path``, so that the tools can say which file and where."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
    try:
        try:
            yield tmp
        except OSError as exc:
            if exc.filename is not None or exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, path) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text):
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path, obj):
    """Write JSON atomically (sorted keys, indented, trailing newline)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_label(path, label):
    """Write an (H, W) index map as a VOC palette PNG, atomically."""
    from PIL import Image

    from python_layers.voc_io import voc_palette

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be 2-D, got shape {label.shape}")
    if label.size and (label.min() < 0 or label.max() > 255):  # never wrap -1 into 255
        raise ValueError(f"label values must be 0..255 (class indices, 255 = ignore), got "
                         f"{label.min()}..{label.max()}")
    img = Image.fromarray(label.astype(np.uint8), mode="P")
    img.putpalette(voc_palette().ravel().tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def disk_space(path):
    """(mount point, filesystem, free bytes) of the file system holding ``path`` (or, when
    it does not exist yet, its nearest existing folder); the filesystem as /proc/mounts
    names it ('/dev/sda1 ext4'), or '' where unknown."""
    path = os.path.realpath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    mount = path
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    stat = os.statvfs(path)
    filesystem = ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 3 and fields[1] == mount:
                    filesystem = f"{fields[0]} {fields[2]}"
    except OSError:
        pass
    return mount, filesystem, stat.f_bavail * stat.f_frsize


def free_space_text(path):
    """'<mount> (<filesystem>) has N MB free' for the file system of ``path``."""
    try:
        mount, filesystem, free = disk_space(path)
    except OSError:
        return "its free space unknown"
    where = f"{mount} ({filesystem})" if filesystem else mount
    return f"{where} has {free / 1e6:.0f} MB free"


CORRUPT_SUFFIX = ".corrupt"  # what set_aside appends


def set_aside(paths):
    """Rename each of ``paths`` (an unusable snapshot, an unreadable result) to
    ``<path>.corrupt``, out of the way of whatever lists or reads it, but kept for a look;
    returns the new names' base names, sorted."""
    for path in paths:
        os.replace(path, path + CORRUPT_SUFFIX)
    return sorted(os.path.basename(path) + CORRUPT_SUFFIX for path in paths)

