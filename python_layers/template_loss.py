"""The template-similarity loss as a Caffe Python layer (thesis ch. 3, Algorithm 3); the
maths, the loss names and the options are in ``python_layers.template_similarity``::

    layer { name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12"
            bottom: "label_shrink" top: "template_loss" loss_weight: 0.1
            python_param { module: "python_layers.template_loss"
                           layer: "TemplateSimilarityLoss"
                           param_str: '{"similarity": "cosine", "selective": true}' } }
"""
import caffe
import numpy as np

from python_layers import ToolkitError, one_line_errors
from python_layers.template_similarity import (
    check_shapes, parse_param_str, template_similarity_loss)


class TemplateSimilarityLoss(caffe.Layer):
    """Caffe loss layer: bottoms fc7, fc8_voc12, label; top a scalar (weight = lambda).

    Options come as JSON in ``param_str`` (keys: similarity, selective, normalize,
    template_grad, ignore_label, eps). fc8 and the label only select; they get zero diffs.
    """

    @one_line_errors
    def setup(self, bottom, top):
        self.params = parse_param_str(self.param_str)
        if len(bottom) != 3 or len(top) != 1:
            raise ToolkitError(f"TemplateSimilarityLoss needs 3 bottoms (fc7, fc8_voc12, "
                               f"label) and 1 top, got {len(bottom)} bottoms and "
                               f"{len(top)} tops; fix the layer in the prototxt")
        self.grad = None

    @one_line_errors
    def reshape(self, bottom, top):
        check_shapes(bottom[0].data.shape, bottom[1].data.shape, bottom[2].data.shape)
        top[0].reshape(1)
        if self.grad is None or self.grad.shape != bottom[0].data.shape:
            # kept between iterations: a fresh array each forward costs page faults
            self.grad = np.zeros(bottom[0].data.shape, bottom[0].data.dtype)

    def forward(self, bottom, top):
        top[0].data[0], _ = template_similarity_loss(
            bottom[0].data, bottom[1].data, bottom[2].data, out=self.grad, **self.params)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            np.multiply(self.grad, top[0].diff[0], out=bottom[0].diff)
        for index in (1, 2):
            if propagate_down[index]:
                bottom[index].diff[...] = 0
