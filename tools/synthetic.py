#!/usr/bin/env python
"""Generate the synthetic VOC-style data set: confusable pairs (cat/dog, chair/sofa) that
differ only by a small discriminative part (pixelfeedback/synthetic.py says why and how).

    python tools/synthetic.py --out data/synthetic --train 300 --val 60
"""
import argparse
import sys

from pixelfeedback import cli, synthetic


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_out(parser, None, "data set root (created)", required=True)
    parser.add_argument("--train", type=cli.int_between(1, 99999), default=200,
                        help="training images (default 200; ids have five digits)")
    parser.add_argument("--val", type=cli.int_between(1, 99999), default=50,
                        help="validation images (default 50)")
    parser.add_argument("--size", type=cli.size_8k_plus_1(65), default=129, metavar="N",
                        help="image side, 8k+1, at least 65 (default: %(default)s)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="random seed (default 0)")
    cli.add_progress(parser, "--quiet")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: synthetic.generate_and_report(
        args.out, args.train, args.val, args.size, args.seed,
        progress=cli.show_progress(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
