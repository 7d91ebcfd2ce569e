#!/usr/bin/env python
"""The GPU self-check of the GPU bundle (docker/gpu_check.sh runs it) or of the installed
toolkit (the CUDA image's gpu-check): libraries, device query, CPU vs GPU passes, Caffe's
GPU tests, timings at the thesis's scale with the Python layers' share, and the default
Table 3.1 sweep's wall time extrapolated, reported as JSON and Markdown
(pixelfeedback/gpu_check.py and gpu_timings.py say how).
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.gpu_check import run_check


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", help="the unpacked GPU bundle (default: none, the "
                                         "installed toolkit and its Caffe, as in the image)")
    parser.add_argument("--out", required=True, help="folder for gpu_check.json/.md")
    parser.add_argument("--gpu", type=cli.nonnegative_int, default=0, metavar="ID",
                        help="the GPU to check (default 0)")
    parser.add_argument("--cpu", action="store_true",
                        help="no GPU: run the CPU parts only (GPU steps skipped)")
    parser.add_argument("--iterations", type=cli.int_at_least(2), default=20,
                        help="caffe train iterations timed per loss (default 20)")
    parser.add_argument("--width-div", type=cli.int_at_least(1), default=1,
                        help="channel divisor of the nets (1: full width; tests use more)")
    parser.add_argument("--tests-timeout", type=cli.int_at_least(1), default=240,
                        help="seconds Caffe's GPU tests may take (default 240)")
    return parser


def main(argv=None):
    return cli.main(build_parser(), run_check, argv)


if __name__ == "__main__":
    sys.exit(main())
