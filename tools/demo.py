#!/usr/bin/env python
"""The main job: the whole thesis on a generated "discriminative parts" data set, on a CPU,
with real Caffe, in minutes, with nothing downloaded.

1. generate the synthetic data set (pixelfeedback/synthetic.py: cat/dog and chair/sofa share a body
   and differ only by a small part);
2. the baseline: a reduced-width DeepLab-LargeFOV trained with `caffe train` from
   weights/demo/stage0_synthetic300.caffemodel
   (the trained model is committed under weights/demo/ with the recipe that made it, and
   reused while the recipe matches; --retrain trains it again);
3. segmentation fixations on val images, and the share of fixations that fall on the
   discriminative part against the part's share of the object's area (the synthetic
   analogue of experiment 1, where the answer is known by construction);
4. experiment 4: mask the part, segment again, and measure the drop of the class's
   activation over the rest of the body;
5. Table 3.1 in small, fine-tuned from the baseline as the thesis does (fc6-fc8 only,
   poly): a poly control and template-similarity losses, paired by seed (--table31-small:
   the powered table with a step-schedule control too, every cell's paired 95 % interval
   sized to +-0.5 mIoU points; without it a reduced version of it: two cells, no step
   control; --quick: one short run each, a step control included; --table31-hard: the
   harder tier, Table 3.1's four losses at lambda 0.01, 0.1 and 1 with the same rule, on
   a harder variant of the data whose own committed baseline scores about the thesis's
   0.62);
6. a Markdown report with its figures: <out>/report.md.

Every step caches its results, so a second run only rewrites the report.
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.demo import run


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", help="output folder (default runs/demo, with "
                        "--table31-small runs/table31-small, with --table31-hard "
                        "runs/table31-hard)")
    parser.add_argument("--data", help="where the synthetic data set goes (default "
                        "data/synthetic, with --table31-hard data/synthetic-hard; with --quick "
                        "those with -quick: its 100 training images would replace the 10000 "
                        "of the others)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and fine-tunes (a few minutes; what the tests run); "
                        "with --table31-hard on the hard data")
    parser.add_argument("--table31-small", action="store_true",
                        help="the powered Table 3.1 in small: all four losses at the thesis's "
                        "six lambdas, the poly and step controls, seeds 0-2 (two more where "
                        "a cell's interval is too wide; controls 0-4); about 75 min on 2 "
                        "cores; resumes")
    parser.add_argument("--table31-hard", action="store_true",
                        help="the harder tier: Table 3.1's four losses at lambda 0.01, 0.1 "
                        "and 1, both controls, the same seed rule, on the hard variant of the "
                        "data and its own baseline (weights/demo/recipe_hard.json); resumes")
    parser.add_argument("--retrain", action="store_true",
                        help="train the baseline again instead of using weights/demo/")
    parser.add_argument("--export", action="store_true",
                        help="with --retrain: copy the new baseline into weights/demo/")
    parser.add_argument("--restart", action="store_true",
                        help="discard what --out holds (results of other settings included) "
                        "and start afresh")
    cli.add_progress(parser)
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: run.run_demo(
        *run.demo_folders(args.quick, args.table31_small, args.table31_hard, args.out,
                          args.data),
        args.quick, args.retrain, args.export, restart=args.restart,
        progress=cli.show_progress(args), table31=args.table31_small,
        hard=args.table31_hard), argv)


if __name__ == "__main__":
    sys.exit(main())
