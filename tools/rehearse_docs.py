#!/usr/bin/env python
"""Rehearse the docs: run the shell blocks of a docs page marked <!-- rehearsed --> in
order, in a scratch copy of the checkout, against a loopback mirror of the published files
in small, changed only by the substitutions the page lists under "How this page is tested"
(pixelfeedback/doc_rehearsal.py says how; DEVELOPING.md, the markers).

    python tools/rehearse_docs.py                    # docs/voc.md's host blocks
    python tools/rehearse_docs.py --kind docker --print-only --set mirror=URL \\
        --set engine=docker --set run_options= --set image=pixel-feedback:cpu
"""
import argparse
import sys

from pixelfeedback import cli, doc_rehearsal


def setting(text):
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"must be NAME=VALUE, got {text!r}")
    return name, value


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("pages", nargs="*", help="docs pages, relative to the repository "
                        f"(default: {', '.join(doc_rehearsal.HOST_PAGES)} for host blocks, "
                        f"{', '.join(doc_rehearsal.DOCKER_PAGES)} for docker ones)")
    parser.add_argument("--kind", choices=sorted(doc_rehearsal.MARKERS), default="host",
                        help="which marked blocks: host (run here) or docker (make "
                             "docker-check runs them; --print-only)")
    parser.add_argument("--print-only", action="store_true",
                        help="print the substituted script instead of running it")
    parser.add_argument("--set", dest="values", type=setting, action="append", default=[],
                        metavar="NAME=VALUE", help="a placeholder's value for --print-only "
                        "(mirror, engine, run_options, image)")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and leave it (DIR/checkout: "
                        "the scratch copy the commands ran in; DIR/mirror: the mirror)")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: doc_rehearsal.run(
        args.pages, args.kind, args.print_only, dict(args.values), args.keep), argv)


if __name__ == "__main__":
    sys.exit(main())
