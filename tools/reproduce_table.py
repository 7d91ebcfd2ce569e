#!/usr/bin/env python
"""Reproduce Table 3.1: fine-tune DeepLab-LargeFOV with each template-similarity loss and
weight (lambda), plus the control (the same fine-tune with the softmax loss alone), over
several seeds; evaluate each on val; print the table beside the thesis's numbers
(pixelfeedback/sweep/ says how; its settings.py defines every flag).
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.sweep import driver, settings


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Everything (settings, list files, every image and label, initial weights, "
               "the disk the snapshots need) is checked before the first run trains. Results "
               "land in OUT/results/<run>.json (one per finished run), the table in "
               "OUT/table31.md and OUT/table31.csv. Rerun the same command to resume.")
    settings.add_arguments(parser)
    cli.add_progress(parser)
    parser.add_argument("--table-only", action="store_true",
                        help="only rebuild the table (and its figure) from every finished run "
                             "in --out, whatever --losses, --lambdas and --seeds name")
    return parser


def main(argv=None):
    return cli.main(build_parser(), driver.run_from_args, argv)


if __name__ == "__main__":
    sys.exit(main())
