"""A Caffe Python layer for the fixation tests: align-corners bilinear down-sampling to a
given size (what DeepLab's Interp does with ``height``/``width``), so the tracker's bilinear
rule is compared with the reference on a layer that shrinks (resolution K > 1)."""
import json

import caffe
import numpy as np

from python_layers.interp import bilinear_matrix


class Shrink(caffe.Layer):
    """param_str ``{"height": h, "width": w}``: bottom (N, C, H, W) -> top (N, C, h, w)."""

    def setup(self, bottom, top):
        params = json.loads(self.param_str)
        self.size = int(params["height"]), int(params["width"])

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape[:2], *self.size)

    def forward(self, bottom, top):
        height, width = bottom[0].data.shape[2:]
        rows = bilinear_matrix(height, self.size[0])
        cols = bilinear_matrix(width, self.size[1])
        top[0].data[...] = np.einsum("yh,nchw,xw->ncyx", rows, bottom[0].data, cols)

    def backward(self, top, propagate_down, bottom):
        pass
