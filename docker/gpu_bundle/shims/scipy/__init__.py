"""GPU bundle stand-in: pycaffe's caffe/io.py imports scipy.ndimage at `import caffe`."""
