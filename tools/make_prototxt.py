#!/usr/bin/env python
"""Write the nets and solvers of prototxt/: DeepLab-LargeFOV from pixelfeedback/nets/largefov.py and the
other models' deploy nets (FCN-8s, FCN-AlexNet, DeepLab v2 ResNet-101, VGG-16) from
pixelfeedback/nets/architectures.py (through the registry).

Files: train_{baseline,control,cosine,correlation,selective_cosine,selective_correlation},
solver_<same>, test, deploy and deploy_<model> (.prototxt). Train with, from the
repository root:

    .venv/bin/caffe train -solver prototxt/solver_cosine.prototxt -weights <caffemodel>

(add -gpu 0 on a GPU). The checked-in files use the defaults below; tests check that they
are current, so after changing a net definition run this script again.
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.nets import largefov, prototxt


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=None,
                        help="where to write the files (default: the repository's prototxt/)")
    parser.add_argument("--lam", type=cli.nonnegative_float, default=0.01,
                        help="weight (lambda) of the template-similarity loss (default 0.01)")
    parser.add_argument("--normalize", choices=largefov.NORMALIZATIONS,
                        default=largefov.DEFAULT_NORMALIZE,
                        help=largefov.NORMALIZE_HELP)
    parser.add_argument("--data-root", default=largefov.DEFAULT_DATA_ROOT,
                        help="VOC data root, relative to the repository root "
                             f"(default {largefov.DEFAULT_DATA_ROOT})")
    parser.add_argument("--list", dest="list_file", default=largefov.DEFAULT_LIST,
                        help="training list file, relative to the repository root "
                             f"(default {largefov.DEFAULT_LIST})")
    parser.add_argument("--batch-size", type=cli.positive_int, default=10, help="images per batch (10)")
    parser.add_argument("--crop", type=cli.size_8k_plus_1(), default=321, help="training crop, 8k+1 (321)")
    parser.add_argument("--iterations", type=cli.positive_int, default=2000,
                        help="fine-tuning iterations (2000; the thesis does not say)")
    parser.add_argument("--baseline-iterations", type=cli.positive_int, default=6000,
                        help="iterations of the DeepLab stage-1 baseline solver (6000)")
    parser.add_argument("--seed", type=cli.int_at_least(-1), default=largefov.DEFAULT_SEED,
                        help=f"random seed of Caffe and the data layer ({largefov.DEFAULT_SEED}); "
                             "-1 for none (different every run)")
    parser.add_argument("--width-div", type=cli.positive_int, default=1,
                        help="divide every channel count by this (1 = the real net)")
    parser.add_argument("--num-classes", type=cli.int_at_least(2), default=21, help="classes (21 for VOC)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that differ from what "
                             "would be written now")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: prototxt.write_or_check(
        args.out_dir, args.check, lam=args.lam, data_root=args.data_root,
        list_file=args.list_file, batch_size=args.batch_size, crop=args.crop,
        iterations=args.iterations, baseline_iterations=args.baseline_iterations,
        seed=None if args.seed < 0 else args.seed, width_div=args.width_div,
        num_classes=args.num_classes, normalize=args.normalize), argv)


if __name__ == "__main__":
    sys.exit(main())
