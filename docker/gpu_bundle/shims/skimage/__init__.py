"""GPU bundle stand-in: pycaffe's caffe/io.py imports scikit-image at `import caffe`."""
