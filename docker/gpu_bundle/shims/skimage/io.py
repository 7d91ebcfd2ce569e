"""GPU bundle stand-in for ``skimage.io`` (caffe/io.py's load_image)."""
from _missing import missing

imread = missing("skimage.io.imread")
