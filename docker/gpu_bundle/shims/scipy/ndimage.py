"""GPU bundle stand-in for ``scipy.ndimage`` (caffe/io.py's resize_image)."""
from _missing import missing

zoom = missing("scipy.ndimage.zoom")
