#!/usr/bin/env python
"""Write a tiny PASCAL-VOC-layout folder of synthetic images (VOC class ids) and 21-class
reduced-width LargeFOV weights made from the demo model by net surgery, so that the Docker
image's `reproduce` runs end to end without VOC (pixelfeedback/demo/voc_sample.py says how;
make docker-check uses it).

    python tools/make_voc_sample.py --out /tmp/voc-sample
    # then: reproduce --data-root OUT/VOCdevkit/VOC2012 --init-weights
    #       OUT/weights/largefov_w8_voc21.caffemodel --width-div 8 --num-classes 21 ...
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.demo import voc_sample


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_out(parser, None, "where VOCdevkit/ and weights/ go (created)", required=True)
    parser.add_argument("--train", type=cli.int_between(1, 9999), default=8,
                        help="training images (default 8; ids have four digits)")
    parser.add_argument("--val", type=cli.int_between(1, 9999), default=4,
                        help="val images (default 4)")
    parser.add_argument("--size", type=cli.size_8k_plus_1(65), default=129, metavar="N",
                        help="image side, 8k+1, at least 65 (default: %(default)s)")
    parser.add_argument("--seed", type=cli.nonnegative_int, default=0,
                        help="random seed of the synthetic images (default 0)")
    parser.add_argument("--no-weights", action="store_true",
                        help="write only the VOC folder (no Caffe needed)")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: voc_sample.make_voc_sample(
        args.out, args.train, args.val, args.size, args.seed, weights=not args.no_weights), argv)


if __name__ == "__main__":
    sys.exit(main())
