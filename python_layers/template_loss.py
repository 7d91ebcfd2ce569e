"""The template-similarity loss as a Caffe Python layer (thesis ch. 3, Algorithm 3); the
maths, the loss names and the options are in ``python_layers.template_similarity``::

    layer { name: "template_loss" type: "Python" bottom: "fc7" bottom: "fc8_voc12"
            bottom: "label_shrink" top: "template_loss" loss_weight: 0.1
            python_param { module: "python_layers.template_loss"
                           layer: "TemplateSimilarityLoss"
                           param_str: '{"similarity": "cosine", "selective": true}' } }

The forward pass computes the loss and keeps per-pixel factors; the backward pass writes
the gradient, times the top's diff (lambda), straight into fc7's diff. On the first forward
pass and every 20th the layer writes its diagnostics line to stderr
(``template_similarity.format_stats_line``).
"""
import sys

import caffe

from python_layers import ToolkitError, one_line_errors
from python_layers.template_similarity import (
    LossStats, check_ignore_label, check_shapes, loss_backward, loss_forward, parse_param_str)


class TemplateSimilarityLoss(caffe.Layer):
    """Caffe loss layer: bottoms fc7, fc8_voc12, label; top a scalar (weight = lambda).

    Options come as JSON in ``param_str`` (keys: similarity, selective, normalize,
    template_grad, ignore_label, eps), all checked at setup. fc8 and the label only
    select; they get zero diffs.
    """

    @one_line_errors
    def setup(self, bottom, top):
        self.params = parse_param_str(self.param_str)
        if len(bottom) != 3 or len(top) != 1:
            raise ToolkitError(f"TemplateSimilarityLoss needs 3 bottoms (fc7, fc8_voc12, "
                               f"label) and 1 top, got {len(bottom)} bottoms and "
                               f"{len(top)} tops; fix the layer in the prototxt")
        check_shapes(bottom[0].data.shape, bottom[1].data.shape, bottom[2].data.shape)
        check_ignore_label(self.params["ignore_label"], bottom[1].data.shape[1])
        self.stats = LossStats(self.params["similarity"])
        self.state = None

    @one_line_errors
    def reshape(self, bottom, top):
        check_shapes(bottom[0].data.shape, bottom[1].data.shape, bottom[2].data.shape)
        top[0].reshape(1)

    def forward(self, bottom, top):
        options = {k: v for k, v in self.params.items() if k != "template_grad"}
        self.state = loss_forward(bottom[0].data, bottom[1].data, bottom[2].data, **options)
        top[0].data[0] = self.state.loss
        self.stats.add(self.state)
        if self.stats.due():
            sys.stderr.write(self.stats.line() + "\n")
            sys.stderr.flush()

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            loss_backward(self.state, bottom[0].diff, top[0].diff[0],
                          self.params["template_grad"])
        for index in (1, 2):
            if propagate_down[index]:
                bottom[index].diff[...] = 0
