#!/usr/bin/env python3
"""Write the nets and solvers of prototxt/: DeepLab-LargeFOV from tools/netdef.py and the
other models' deploy nets (FCN-8s, FCN-AlexNet, DeepLab v2 ResNet-101, VGG-16) from
tools/zoo_nets.py.

Files: train_{baseline,control,cosine,correlation,selective_cosine,selective_correlation},
solver_<same>, test, deploy and deploy_<model> (.prototxt). Train with, from the
repository root:

    .venv/bin/caffe train -solver prototxt/solver_cosine.prototxt -weights <caffemodel>

(add -gpu 0 on a GPU). The checked-in files use the defaults below; tests check that they
are current, so after changing tools/netdef.py run this script again.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from python_layers import ToolkitError  # noqa: E402
from tools import netdef, zoo_nets  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None,
                        help="where to write the files (default: the repository's prototxt/)")
    parser.add_argument("--lam", type=float, default=0.01,
                        help="weight (lambda) of the template-similarity loss (default 0.01)")
    parser.add_argument("--data-root", default=netdef.DEFAULT_DATA_ROOT,
                        help="VOC data root, relative to the repository root "
                             f"(default {netdef.DEFAULT_DATA_ROOT})")
    parser.add_argument("--list", dest="list_file", default=netdef.DEFAULT_LIST,
                        help="training list file, relative to the repository root "
                             f"(default {netdef.DEFAULT_LIST})")
    parser.add_argument("--batch-size", type=int, default=10, help="images per batch (10)")
    parser.add_argument("--crop", type=int, default=321, help="training crop, 8k+1 (321)")
    parser.add_argument("--iterations", type=int, default=2000,
                        help="fine-tuning iterations (2000; the thesis does not say)")
    parser.add_argument("--baseline-iterations", type=int, default=6000,
                        help="iterations of the DeepLab stage-1 baseline solver (6000)")
    parser.add_argument("--seed", type=int, default=netdef.DEFAULT_SEED,
                        help=f"random seed of Caffe and the data layer ({netdef.DEFAULT_SEED}); "
                             "-1 for none (different every run)")
    parser.add_argument("--width-div", type=int, default=1,
                        help="divide every channel count by this (1 = the real net)")
    parser.add_argument("--num-classes", type=int, default=21, help="classes (21 for VOC)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that differ from what "
                             "would be written now")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    options = dict(lam=args.lam, data_root=args.data_root, list_file=args.list_file,
                   batch_size=args.batch_size, crop=args.crop, iterations=args.iterations,
                   baseline_iterations=args.baseline_iterations,
                   seed=None if args.seed < 0 else args.seed, width_div=args.width_div,
                   num_classes=args.num_classes)
    try:
        if args.check:
            stale = (netdef.stale_files(args.out_dir, **options)
                     + zoo_nets.stale_deploy_nets(args.out_dir))
            for path in stale:
                print(f"out of date: {path}")
            if stale:
                print("run tools/make_prototxt.py to regenerate them", file=sys.stderr)
                return 1
            print("all generated prototxt files are current")
            return 0
        written = netdef.write_all(args.out_dir, **options)
        written += zoo_nets.write_deploy_nets(args.out_dir)
        for path in written:
            print(f"wrote {path}")
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
