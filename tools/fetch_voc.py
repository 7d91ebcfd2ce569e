#!/usr/bin/env python
"""Fetch PASCAL VOC 2012 (and optionally SBD) and write DeepLab list files.

    python tools/fetch_voc.py                  # VOC 2012 trainval -> data/VOCdevkit/VOC2012
    python tools/fetch_voc.py --sbd            # also SBD -> SegmentationClassAug, train_aug.txt
    python tools/fetch_voc.py --from-archive ~/Downloads/VOCtrainval_11-May-2012.tar

Downloads are resumable (run the command again after an interruption), verified against
the published md5 sums, and renamed into place only when complete. Results:

    data/VOCdevkit/VOC2012/JPEGImages/*.jpg
    data/VOCdevkit/VOC2012/SegmentationClass/*.png     VOC's palette labels (255 = ignore)
    data/VOCdevkit/VOC2012/SegmentationClassAug/*.png  with --sbd: SBD labels converted to
                                                       palette PNGs, VOC's own labels where
                                                       VOC has one (they win over SBD's)
    data/lists/train.txt     1464 VOC train images  "/JPEGImages/x.jpg /SegmentationClass/x.png"
    data/lists/val.txt       1449 VOC val images    "/JPEGImages/x.jpg /SegmentationClass/x.png"
    data/lists/train_aug.txt with --sbd: (SBD train + SBD val + VOC train) minus VOC val,
                             10582 images           "/JPEGImages/x.jpg /SegmentationClassAug/x.png"

Paths in the lists are relative to the data root data/VOCdevkit/VOC2012 (DeepLab's
convention: pass that folder as --data-root). train.txt and val.txt point to VOC's own
SegmentationClass, so the validation labels never depend on the SBD conversion; the
pixels are the same as in DeepLab's SegmentationClassAug for those images.
"""
import argparse
import os
import sys

from pixelfeedback import cli, voc_data
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.voc_data import BASE_URL_ENV


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", default=os.path.join(REPO_ROOT, "data"),
                        help="where VOCdevkit/, lists/ and downloads/ go (default data/)")
    parser.add_argument("--sbd", action="store_true",
                        help="also fetch SBD: SegmentationClassAug and lists/train_aug.txt")
    parser.add_argument("--from-archive", metavar="TAR",
                        help="use this VOCtrainval_11-May-2012.tar instead of downloading")
    parser.add_argument("--sbd-archive", metavar="TGZ",
                        help="use this SBD benchmark.tgz instead of downloading (implies --sbd)")
    parser.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV),
                        help="mirror serving the same file names (default: the published "
                             f"hosts; also set by ${BASE_URL_ENV})")
    parser.add_argument("--no-verify", action="store_true",
                        help="accept archives whose md5 differs from the published one")
    parser.add_argument("--keep-archives", action="store_true",
                        help="keep downloaded archives in DEST/downloads after extraction")
    parser.add_argument("--lists-only", metavar="VOC2012_DIR",
                        help="download nothing: write the list files for this existing "
                             "VOC2012 folder (e.g. one mounted into the Docker image); "
                             "train_aug.txt too when it has SegmentationClassAug/")
    parser.add_argument("--lists-dir", default=None,
                        help="where the list files go (default DEST/lists)")
    cli.add_progress(parser)
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: voc_data.fetch(
        args.dest, args.sbd, args.from_archive, args.sbd_archive, args.base_url,
        verify=not args.no_verify, keep_archives=args.keep_archives, lists_only=args.lists_only,
        lists_dir=args.lists_dir, progress=cli.show_progress(args)), argv)


if __name__ == "__main__":
    sys.exit(main())
