#!/usr/bin/env python
"""Write the nets and solvers of prototxt/: DeepLab-LargeFOV from pixelfeedback/nets/largefov.py and the
other models' deploy nets (FCN-8s, FCN-AlexNet, DeepLab v2 ResNet-101, VGG-16) from
pixelfeedback/nets/architectures.py (through the registry).

Files: train_{baseline,control,cosine,correlation,selective_cosine,selective_correlation},
solver_<same>, test, deploy and deploy_<model> (.prototxt). Train with, from the
repository root:

    .venv/bin/caffe train -solver prototxt/solver_cosine.prototxt -weights <caffemodel>

(add -gpu 0 on a GPU). The stage-1 baseline (train_baseline, solver_baseline) has its own
recipe: train_aug at batch 20, step schedule, 6000 iterations (DeepLab's, that of the
thesis's baseline 0.6225); the fine-tunes read VOC 2012 train at batch 10. The checked-in
files use the defaults below; tests check that they are current, so after changing a net
definition run this script again.
"""
import argparse
import sys

from pixelfeedback import cli
from pixelfeedback.nets import largefov, prototxt
from pixelfeedback.sweep import settings


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, every flag's default shown."""


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--out-dir", default=None,
                        help="where to write the files (default: the repository's prototxt/)")
    parser.add_argument("--lam", type=cli.nonnegative_float, default=0.01,
                        help="weight (lambda) of the template-similarity loss (default 0.01)")
    parser.add_argument("--list", dest="list_file", default=largefov.FINETUNE.list_file,
                        help="fine-tuning list file, relative to the repository root "
                             f"(default {largefov.FINETUNE.list_file})")
    for name in ("normalize", "data_root", "batch_size", "crop", "iterations", "baseline_list",
                 "baseline_batch_size", "baseline_iterations", "width_div", "num_classes"):
        settings.BY_NAME[name].add_to(parser)  # the sweep's flags: one definition each
    parser.add_argument("--seed", type=cli.int_at_least(-1), default=largefov.DEFAULT_SEED,
                        help=f"random seed of Caffe and the data layer ({largefov.DEFAULT_SEED}); "
                             "-1 for none (different every run)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that differ from what "
                             "would be written now")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: prototxt.write_or_check(
        args.out_dir, args.check, lam=args.lam, data_root=args.data_root,
        list_file=args.list_file, batch_size=args.batch_size, crop=args.crop,
        iterations=args.iterations, baseline_list=args.baseline_list,
        baseline_batch_size=args.baseline_batch_size,
        baseline_iterations=args.baseline_iterations,
        seed=None if args.seed < 0 else args.seed, width_div=args.width_div,
        num_classes=args.num_classes, normalize=args.normalize), argv)


if __name__ == "__main__":
    sys.exit(main())
