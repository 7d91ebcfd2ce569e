#!/usr/bin/env python
"""The four experiments of thesis chapter 2 (Figures 2.6 to 2.11; pixelfeedback/experiments
says what each measures and writes).

    python tools/experiments.py location --model largefov --data-root data/VOCdevkit/VOC2012 \\
        --list data/lists/val.txt --out runs/experiments
    python tools/experiments.py all --model deploy.prototxt --weights my.caffemodel \\
        --data-root ROOT --list LIST --out OUT [--limit N] [--gpu ID]

experiments:
{experiments}

Per-image records in OUT/cache/<experiment>/ make a rerun resume: finished images are not
run again and the tables are rebuilt from the records. A rerun with other settings is
refused, naming them; --restart discards the experiment's records and starts afresh.
"""
import argparse
import sys

from pixelfeedback import cli, experiments
from pixelfeedback.fixations import SHIFTS
from pixelfeedback.nets import registry
from pixelfeedback.pipeline import DEFAULT_K, DEFAULT_SHIFT


def build_parser():
    listed = "\n".join(f"  {spec.name:9} {spec.help}" for spec in experiments.SPECS.values())
    parser = argparse.ArgumentParser(
        description=__doc__.format(experiments=listed),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=experiments.EXPERIMENTS + ("all",),
                        help="the experiment to run, or all four in one pass over the images")
    data = parser.add_argument_group("model and data (every experiment)")
    data.add_argument("--model", required=True, help="deploy prototxt or a registry name "
                      f"({', '.join(registry.MODELS)}): the net whose score blob the "
                      "fixations start at")
    data.add_argument("--weights", help="caffemodel (default for a registry name: "
                      "weights/<file>)")
    data.add_argument("--data-root", required=True, help="folder the list's paths are "
                      "relative to (data/VOCdevkit/VOC2012)")
    data.add_argument("--list", required=True, help="list file with labels: "
                      "'/JPEGImages/x.jpg /SegmentationClass/x.png' lines")
    cli.add_out(data, None, "output folder (tables, figures, cache/)", required=True)
    data.add_argument("--limit", type=cli.positive_int, metavar="N", help="only the first N images")
    data.add_argument("--num-classes", type=cli.positive_int, metavar="N",
                      help="check the net has this many classes")
    data.add_argument("--class-names", metavar="NAMES", help="comma-separated class names "
                      "(default: VOC's for 21 classes, a synthetic data set's, else class_<i>)")
    cli.add_size(data, None, "net input side; images are padded to it (default: the "
                 "deploy prototxt's; 0: the net takes each image's size)")
    cli.add_mean(data, "the model's; DeepLab's for a prototxt")
    data.add_argument("--score-blob", metavar="BLOB", help="scores the fixations start at "
                      "(default: the model's; for a prototxt found from the net)")
    data.add_argument("--k", default=DEFAULT_K, help="K strategy of the back-tracker: '1', "
                      "'fraction:0.1', 'resolution' or 'conv5_1=2,default=1' "
                      f"(default {DEFAULT_K})")
    data.add_argument("--shift", choices=SHIFTS, default=DEFAULT_SHIFT, help="shift variant "
                      "of location, k-needed and salient (the shift experiment runs all "
                      f"three) (default {DEFAULT_SHIFT})")
    data.add_argument("--max-units", type=cli.positive_int, metavar="N",
                      help="fixation budget per blob and class")
    location = parser.add_argument_group("location and shift")
    location.add_argument("--void", choices=experiments.VOID_RULES, default="skip",
                          help="fixation points on void (255) pixels: left out (skip) or "
                          "counted outside the object (default skip)")
    k_needed = parser.add_argument_group("k-needed")
    k_needed.add_argument("--fractions", metavar="X,X,...",
                          default=",".join(f"{x:g}" for x in experiments.FRACTIONS),
                          help="the x values, comma-separated in (0, 1] (default %(default)s)")
    salient = parser.add_argument_group("salient")
    salient.add_argument("--mask", choices=experiments.MASK_CHOICES, default="heat",
                         help="what to hide: 'heat' (the region of heat >= --mask-threshold "
                         "around the peak), 'disc' (--mask-radius around the peak) or 'parts' "
                         "(the true parts of a tools/synthetic.py data set) (default heat)")
    salient.add_argument("--mask-threshold", type=cli.float_in(0, 1, low_inclusive=False),
                         default=experiments.DEFAULT_MASK_THRESHOLD, metavar="X",
                         help="heat threshold in (0, 1] (default %(default)s)")
    salient.add_argument("--mask-radius", type=cli.positive_float,
                         default=experiments.DEFAULT_MASK_RADIUS, metavar="F",
                         help="disc radius as a "
                         "fraction of the image diagonal (default %(default)s)")
    salient.add_argument("--figures", type=cli.nonnegative_int,
                         default=experiments.DEFAULT_FIGURES, metavar="N",
                         help="per-image figures for the first N images (default %(default)s)")
    run = parser.add_argument_group("running")
    cli.add_gpu(run)
    run.add_argument("--restart", action="store_true", help="discard the experiment's "
                     "records (of any settings) and run every image again")
    cli.add_progress(run)
    run.add_argument("--skip-bad-images", action="store_true",
                     help="leave out images that cannot be read (e.g. truncated JPEGs) "
                     "instead of stopping; the summary counts them")
    return parser


def run(args):
    return experiments.run_and_report(
        args.model, args.weights, args.data_root, args.list, args.out, args.experiment,
        num_classes=args.num_classes, class_names=args.class_names, size=args.size,
        mean=args.mean, score_blob=args.score_blob, k=args.k, shift=args.shift,
        max_units=args.max_units, limit=args.limit, gpu=args.gpu, void=args.void,
        fractions=args.fractions, mask=args.mask, mask_threshold=args.mask_threshold,
        mask_radius=args.mask_radius, figures=args.figures, restart=args.restart,
        progress=cli.show_progress(args), skip_bad_images=args.skip_bad_images)


def main(argv=None):
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
