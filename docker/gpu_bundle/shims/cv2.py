"""GPU bundle stand-in for OpenCV: ``imread`` of the 8-bit PNGs the GPU check writes
(see README.md in this folder); anything else raises."""
import os

import numpy as np

import _png

IMREAD_COLOR = 1


def imread(path, flags=IMREAD_COLOR):
    """An (H, W, 3) uint8 BGR array, or None when the file is not a PNG this reads."""
    if flags != IMREAD_COLOR:
        raise NotImplementedError("the GPU bundle's cv2 stand-in reads colour images only")
    try:
        with open(os.fspath(path), "rb") as f:
            array, _ = _png.decode(f.read())
    except (OSError, _png.PNGError):
        return None
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, ::-1])


def __getattr__(name):
    raise AttributeError(f"cv2.{name} is not in the GPU bundle (only imread of PNG files)")
