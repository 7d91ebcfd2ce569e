"""GPU bundle stand-in for ``PIL.Image``: open, fromarray, putpalette and save of the
8-bit PNG label maps the GPU check writes; anything else raises."""
import builtins
import os

import numpy as np

import _png

MODES = {0: "L", 2: "RGB", 3: "P"}


class Image:
    def __init__(self, array, mode, palette=None):
        self._array, self.mode, self._palette = array, mode, palette

    def __array__(self, dtype=None):
        return self._array if dtype is None else self._array.astype(dtype)

    def load(self):
        """Pillow decodes here; the stand-in decoded in ``open`` (and raised there on a
        truncated file)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def putpalette(self, data):
        self._palette = np.asarray(data, np.uint8).reshape(-1, 3)

    def save(self, fp, format=None):
        if format not in (None, "PNG"):
            raise NotImplementedError("the GPU bundle's PIL stand-in writes PNG only")
        palette = self._palette if self.mode == "P" else None
        if self.mode == "P" and palette is None:
            palette = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        with builtins.open(os.fspath(fp), "wb") as f:
            f.write(_png.encode(self._array, palette))


def open(path):  # noqa: A001 - Pillow's name
    with builtins.open(os.fspath(path), "rb") as f:
        array, colour_type = _png.decode(f.read())
    return Image(array, MODES[colour_type])


def fromarray(array, mode=None):
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise NotImplementedError("the GPU bundle's PIL stand-in takes uint8 arrays only")
    return Image(array, mode or ("RGB" if array.ndim == 3 else "L"))
