#!/usr/bin/env python
"""Download the published caffemodels of the model registry (pixelfeedback/nets/registry.py) into weights/.

    python weights/fetch.py largefov [fcn8s ...]   fetch these models
    python weights/fetch.py --all                  fetch every model
    python weights/fetch.py --list                 what is known, what is present
    python weights/fetch.py --verify [names]       check files already here (no download)

    python weights/fetch.py largefov --replace-checksum   download again, record anew
    python weights/fetch.py largefov-init --width-div 32  shapes of LargeFOV at 1/32 width

Checksums of these files were never published, so the sha256 of the first download is
recorded in weights/checksums.json and every later download or --verify is checked
against it. A sha256 is recorded only for a file that reads as a whole caffemodel of
finite values whose parameter shapes fit the model's deploy prototxt (Caffe would abort on
a mismatch; each layer that differs is named); anything else (an HTML error page from a
mirror, a cut file) is neither kept nor recorded. --verify checks and never records.
A sha256 recorded for a bad file (by an older version of this script) makes every good
download a "sha256 mismatch": --replace-checksum downloads again and, once the new file
passes the checks, records its sha256 in place of the old one.
"""
import argparse
import os
import sys

from pixelfeedback import cli
from pixelfeedback.nets import published_weights, registry
from pixelfeedback.nets.published_weights import BASE_URL_ENV
from pixelfeedback.paths import WEIGHTS_DIR


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"models to fetch: {', '.join(registry.MODELS)}")
    parser.add_argument("--all", action="store_true", help="fetch every model of the registry")
    parser.add_argument("--list", action="store_true", help="list the models and exit")
    parser.add_argument("--verify", action="store_true",
                        help="check files already present (sha256, shapes); download nothing")
    parser.add_argument("--force", action="store_true",
                        help="download again even when the file is present")
    parser.add_argument("--replace-checksum", action="store_true",
                        help="download again and, once the file reads as a caffemodel that "
                             "fits the deploy net, record its sha256 in place of the one "
                             "in checksums.json (which a bad earlier download may have left)")
    parser.add_argument("--dest", default=WEIGHTS_DIR,
                        help="folder for the caffemodels and checksums.json (default weights/)")
    parser.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV),
                        help="mirror serving the same file names (default: the published "
                             f"hosts; also set by ${BASE_URL_ENV})")
    parser.add_argument("--no-shape-check", action="store_true",
                        help="skip comparing the caffemodel with the deploy prototxt (it "
                             "must still read as a whole caffemodel)")
    parser.add_argument("--width-div", type=cli.positive_int, default=1, metavar="N",
                        help="check DeepLab-LargeFOV's weights (largefov, largefov-init) "
                             "against the net with every layer's channels divided by N, as "
                             "tools/reproduce_table.py --width-div N trains it (1: the "
                             "published net; the docs' rehearsal serves weights at 32)")
    cli.add_progress(parser)
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: published_weights.fetch_models(
        args.names, fetch_all=args.all, list_only=args.list, verify=args.verify, dest=args.dest,
        base_url=args.base_url, force=args.force, progress=cli.show_progress(args),
        shapes=not args.no_shape_check, replace_checksum=args.replace_checksum,
        width_div=args.width_div), argv)


if __name__ == "__main__":
    sys.exit(main())
