#!/usr/bin/env python
"""Segmentation fixations of one image (thesis chapter 2, SPEC section 4).

Back-tracks every predicted class from the score blob (before any zoom) to image-plane
points through the strongest contributions, then draws per class: the fixation points,
a heat map after CNN-Fixations' outlier removal, and the overlay on the image.

    python tools/seg_fixations.py                        demo: no download needed
    python tools/seg_fixations.py --model largefov --image photo.jpg
    python tools/seg_fixations.py --model my_deploy.prototxt --weights my.caffemodel \\
        --image photo.jpg --score-blob fc8_voc12 --shift full --k fraction:0.1

Input protocol (DeepLab's test protocol): BGR, minus the mean, padded at the bottom/right
to --size with the mean (0 after subtraction). An image larger than --size is resized
down (aspect kept) to fit, and every output is then in the resized image's pixels (the
summary says so); --size 0 reshapes the net to the image instead (no padding, FCN's
protocol). Classification nets (VGG-16) take the image warped to --size x --size, as
CNN-Fixations did. Fixation points in the padding are dropped.

Dead units: a unit none of whose inputs contributes (every contribution exactly 0, or no
positive value where the layer ranks values, as max pooling does) stops there; the summary
says per class how many units (and seeds) died at which layer. Exact ties go to the lowest
index (channel, then tap in row-major order).

Outputs in --out (default runs/fixations/<image stem>): <stem>_fixations.png (image,
fixations, heat-map overlay; one row per class), <stem>_figure_2_4.png (the thesis's
Figure 2.4: input, predicted segmentation, arg-max at the score blob with the class's
seeds, fixations, heat map; one row per class), and per class <stem>_<class>_flow.png and
<stem>_<class>_flow.gif (the fixations of every traced blob at image scale, from the score
blob down to the image) with <stem>_<class>_flow_units.csv (class, blob, the unit's
channel,y,x and its receptive-field centre image_y,image_x; --no-flow skips the three),
<stem>_<class>_overlay.png,
<stem>_<class>_heat.png (grey, 0..255), <stem>_<class>_points.csv (y,x,count: every image
point inside the image, before outlier removal; count = the image channels fixated there,
which also weighs the point in the heat map), and summary.json (settings, per class the
counts, dead units per layer and the file names).
"""
import argparse
import sys

from pixelfeedback import cli, heatmap, image_fixations, pipeline
from pixelfeedback.fixations import SHIFTS
from pixelfeedback.nets import registry


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    known = ", ".join(registry.MODELS)
    parser.add_argument("--model", help="deploy prototxt path or a known model name "
                        f"({known}); default: the committed demo model (weights/demo/: a reduced-"
                        "width DeepLab-LargeFOV trained on synthetic data) on a synthetic val "
                        "image, which needs nothing downloaded")
    parser.add_argument("--weights", help="caffemodel (default for a known model: weights/"
                        "<its file>, fetched by `python weights/fetch.py <name>`)")
    parser.add_argument("--image", help="image file (JPEG, PNG, ...); required with --model")
    parser.add_argument("--score-blob", help="blob the fixations start from: class scores "
                        "before any zoom (default: the model's from the registry, else found "
                        "from the net: its single output, or the blob feeding its zoom / "
                        "Softmax / arg-max)")
    parser.add_argument("--shift", choices=SHIFTS, default=pipeline.DEFAULT_SHIFT,
                        help="spatial shift at convolutions: none (window centre), full "
                        "(strongest tap), partial (full where dilation is 1, centre where it "
                        f"is larger; the thesis's choice) (default {pipeline.DEFAULT_SHIFT})")
    parser.add_argument("--k", default=pipeline.DEFAULT_K,
                        help="K strategy: a number ('1'), 'fraction:0.1' (smallest K reaching "
                        "that share of a unit's positive contribution), 'resolution' (K = "
                        "the layer's spatial up-sampling factor), or per layer "
                        f"'conv5_1=2,default=1' (default {pipeline.DEFAULT_K})")
    parser.add_argument("--max-units", type=cli.positive_int, metavar="N",
                        help="budget of fixation units per blob and "
                        "class; the trace stops with an error beyond it (default: "
                        f"{image_fixations.default_max_units()})")
    parser.add_argument("--classes", help="comma-separated class names or indices to trace "
                        "(default: every predicted class but background; for a classifier "
                        "the top-1 class)")
    parser.add_argument("--include-background", action="store_true",
                        help="also trace the background class (class 0) by default")
    parser.add_argument("--class-names", help="comma-separated names of the net's classes "
                        "(default: the demo's for the demo model's weights, VOC's 21 names for "
                        "21 classes, else class_<i>)")
    cli.add_size(parser, None, "input side: images are padded bottom/right to it (larger ones "
                 "resized down to fit); 0 reshapes the net to the image (default: the deploy "
                 "prototxt's input size)")
    cli.add_mean(parser, "the model's; DeepLab's 104.008,116.669,122.675 for a prototxt")
    parser.add_argument("--sigma", type=cli.nonnegative_float, metavar="PIXELS",
                        help="Gaussian blur of the heat map in pixels, >= 0 "
                        f"(default {heatmap.SIGMA_FRACTION} x the image diagonal)")
    parser.add_argument("--radius-fraction", type=cli.positive_float,
                        default=heatmap.RADIUS_FRACTION, metavar="F",
                        help="outlier removal radius as a fraction of the image diagonal, "
                        f"> 0 (default {heatmap.RADIUS_FRACTION})")
    parser.add_argument("--min-fraction", type=cli.float_in(0, 1, high_inclusive=False),
                        default=heatmap.MIN_FRACTION, metavar="F",
                        help="a point is kept when more than this fraction of all points lie "
                        f"within the radius, in [0, 1) (default {heatmap.MIN_FRACTION})")
    parser.add_argument("--no-outlier-removal", action="store_true",
                        help="build heat maps from all points")
    parser.add_argument("--alpha", type=cli.fraction, default=heatmap.OVERLAY_ALPHA,
                        metavar="A", help="opacity of the heat map over the image, in [0, 1] "
                        f"(default {heatmap.OVERLAY_ALPHA})")
    parser.add_argument("--flow", action=argparse.BooleanOptionalAction, default=True,
                        help="write the flow of each class's fixations through the layers "
                        "(PNG strip, animated GIF, CSV of the units per blob); --no-flow "
                        "skips it (default: on)")
    cli.add_gpu(parser)
    cli.add_out(parser, None, "output folder (default runs/fixations/<image stem>)")
    return parser


def main(argv=None):
    return cli.main(build_parser(), image_fixations.run, argv)


if __name__ == "__main__":
    sys.exit(main())
