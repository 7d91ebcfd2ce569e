#!/usr/bin/env python
"""The main job: the whole thesis on a generated "discriminative parts" data set, on a CPU,
with real Caffe, in minutes, with nothing downloaded.

1. generate the synthetic data set (pixelfeedback/synthetic.py: cat/dog and chair/sofa share a body
   and differ only by a small part);
2. the baseline: a reduced-width DeepLab-LargeFOV trained from scratch with `caffe train`
   (the trained model is committed under weights/demo/ with the recipe that made it, and
   reused while the recipe matches; --retrain trains it again);
3. segmentation fixations on val images, and the share of fixations that fall on the
   discriminative part against the part's share of the object's area (the synthetic
   analogue of experiment 1, where the answer is known by construction);
4. experiment 4: mask the part, segment again, and measure the drop of the class's
   activation over the rest of the body;
5. Table 3.1 in small: the control and the four template-similarity losses at three
   weights, two seeds each, fine-tuned from the baseline as the thesis does (fc6-fc8 only);
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
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--data", default="data/synthetic",
                        help="where the synthetic data set goes (default data/synthetic)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and fine-tunes (a few minutes; what the tests run)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the baseline again instead of using weights/demo/")
    parser.add_argument("--export", action="store_true",
                        help="with --retrain: copy the new baseline into weights/demo/")
    parser.add_argument("--restart", action="store_true",
                        help="discard what --out holds (results of other settings included) "
                        "and start afresh")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: run.run_demo(
        args.out, args.data, args.quick, args.retrain, args.export, restart=args.restart,
        progress=not args.no_progress), argv)


if __name__ == "__main__":
    sys.exit(main())
