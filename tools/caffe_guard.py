#!/usr/bin/env python
"""The guard the venv's `caffe` wrapper runs for `caffe train` (docker/build_caffe.sh
writes the wrapper; every other caffe command goes to the binary unchanged):

    tools/caffe_guard.py BINARY train -solver S [-weights W[,W2]] [-gpu N] [caffe flags]

Before Caffe starts, -gpu on a CPU-only build, -weights that are missing, empty, cut
short, not a caffemodel, hold NaN or inf or do not fit the solver's net, and -weights with
-snapshot are one line `error: ...` and exit 2 (Caffe would abort with a C++ stack, or
train from random fillers). Layers of the net the weights do not set get one warning line.
While Caffe trains, its log passes through; a non-finite loss stops it with `error: ...`
and exit 3. All arguments reach Caffe as given.
"""
import argparse
import os
import sys

from pixelfeedback import caffe_guard, cli


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binary", help="the real caffe tool (build/caffe/bin/caffe)")
    parser.add_argument("arguments", nargs=argparse.REMAINDER,
                        help="caffe's command line, passed on unchanged")
    return parser


def main(argv=None):
    environment = dict(os.environ)  # the trainer's: before cli.main quiets glog for us
    return cli.main(build_parser(), lambda args: caffe_guard.guard(
        args.binary, args.arguments, environment), argv)


if __name__ == "__main__":
    sys.exit(main())
