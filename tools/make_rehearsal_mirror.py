#!/usr/bin/env python
"""Write the docs' rehearsal mirror into a folder: the VOC 2012 and SBD archives in their
published layouts, a handful of images each, and DeepLab-LargeFOV's vgg16_20M and
train2_iter_8000 caffemodels at 1/32 width under their published names
(pixelfeedback/rehearsal_mirror.py). make docker-check serves it to the image.
"""
import argparse
import sys

from pixelfeedback import cli, rehearsal_mirror


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the mirror's folder (made if missing)")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: print(
        "\n".join(rehearsal_mirror.make_mirror(args.out))), argv)


if __name__ == "__main__":
    sys.exit(main())
