"""GPU bundle stand-in for ``skimage.transform`` (caffe/io.py's resize_image)."""
from _missing import missing

resize = missing("skimage.transform.resize")
