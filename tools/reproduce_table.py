#!/usr/bin/env python
"""Reproduce Table 3.1: fine-tune DeepLab-LargeFOV with each template-similarity loss and
weight (lambda), plus the control (the same fine-tune with the softmax loss alone), over
several seeds; evaluate each on val; print the table beside the thesis's numbers
(pixelfeedback/sweep.py says how).
"""
import argparse
import sys

from pixelfeedback import cli, sweep
from pixelfeedback.nets import largefov
from pixelfeedback.sweep import LAMBDAS, LOSSES


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Everything (settings, list files, every image and label, initial weights, "
               "the disk the snapshots need) is checked before the first run trains. Results "
               "land in OUT/results/<run>.json (one per finished run), the table in "
               "OUT/table31.md and OUT/table31.csv. Rerun the same command to resume.")
    cli.add_out(parser, "runs/table31", "output folder (a run folder: results, runs, table)")
    parser.add_argument("--data-root", default="data/VOCdevkit/VOC2012",
                        help="VOC 2012 folder holding JPEGImages/ and the label folders")
    parser.add_argument("--train-list", default="data/lists/train.txt",
                        help="DeepLab list file of the fine-tuning images (VOC 2012 train; the "
                             "thesis's 'augmentation of ... train, 1456 images' may also "
                             "mean train_aug)")
    parser.add_argument("--val-list", default="data/lists/val.txt", help="list file evaluated")
    parser.add_argument("--init-weights", default="weights/train2_iter_8000.caffemodel",
                        help="trained LargeFOV the fine-tunes start from")
    parser.add_argument("--losses", default=",".join(LOSSES),
                        help="comma-separated subset of: " + ", ".join(LOSSES))
    parser.add_argument("--lambdas", type=sweep.lambda_list,
                        default=",".join(f"{x:g}" for x in LAMBDAS),
                        help="comma-separated loss weights (finite, >= 0)")
    parser.add_argument("--normalize", choices=largefov.NORMALIZATIONS,
                        default=largefov.DEFAULT_NORMALIZE,
                        help=largefov.NORMALIZE_HELP)
    parser.add_argument("--seeds", type=sweep.seed_list, default="0,1,2",
                        help="comma-separated seeds, integers >= 0 (runs per cell)")
    parser.add_argument("--iterations", type=cli.positive_int, default=2000,
                        help="fine-tuning iterations (the thesis does not say; SPEC default)")
    parser.add_argument("--snapshot-every", type=cli.positive_int, default=None, metavar="N",
                        help="solver snapshot interval, 1..iterations (default: a quarter of "
                             "the iterations)")
    parser.add_argument("--keep-snapshots", type=cli.nonnegative_int, default=2, metavar="N",
                        help="snapshots kept per run once its training finished, newest "
                             "first (the final weights are always kept)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=10)
    parser.add_argument("--crop", type=cli.size_8k_plus_1(), default=321,
                        help="training crop (8k+1)")
    parser.add_argument("--test-size", type=cli.size_8k_plus_1(), default=513,
                        help="test input size (8k+1, at least the largest val image)")
    parser.add_argument("--width-div", type=cli.positive_int, default=1,
                        help="divide every layer's channels (1 = the real LargeFOV)")
    parser.add_argument("--num-classes", type=cli.int_at_least(2), default=21)
    cli.add_gpu(parser)
    parser.add_argument("--gpus", type=sweep.gpu_list, default=None, metavar="IDS",
                        help="run one worker per GPU (comma-separated ids, e.g. 0,1,2,3), "
                             "each taking the next run no one holds")
    parser.add_argument("--shard", type=sweep.shard_spec, default=None, metavar="I/N",
                        help="do only part I of N of the runs (every N-th), so that N "
                             "processes or machines sharing --out split the sweep; any of "
                             "them may rerun to write the whole table "
                             "(docker/slurm_table31.sh is an example)")
    parser.add_argument("--step-control", nargs="?", const="stage1", default=None,
                        type=sweep.step_schedule,
                        metavar="BASE_LR,GAMMA,STEPSIZE,DONE",
                        help="also run the step-schedule control: the baseline's step "
                             "schedule continued from its iteration DONE, lambda 0 (alone: "
                             "DeepLab's stage-1 schedule 0.001,0.1,2000 continued from "
                             "--baseline-iterations)")
    parser.add_argument("--baseline-from", default=None, metavar="IMAGENET_CAFFEMODEL",
                        help="first train DeepLab's stage-1 baseline from this ImageNet init "
                             "(weights/vgg16_20M.caffemodel) and fine-tune from it instead of "
                             "--init-weights: the fair route, since the released "
                             "train2_iter_8000 has seen VOC 2012 val")
    parser.add_argument("--baseline-list", default="data/lists/train_aug.txt",
                        help="training list of the stage-1 baseline")
    parser.add_argument("--baseline-iterations", type=cli.positive_int, default=6000)
    parser.add_argument("--restart", action="store_true",
                        help="discard what --out holds (runs of other settings included) and "
                        "start afresh")
    cli.add_progress(parser)
    parser.add_argument("--table-only", action="store_true",
                        help="only rebuild the table (and its figure) from every finished run "
                             "in --out, whatever --losses, --lambdas and --seeds name")
    return parser


def run(args):
    """The sweep of these arguments (its configuration is checked before anything trains)."""
    step_control = None
    if args.step_control == "stage1":
        step_control = dict(sweep.STAGE1_STEP_SCHEDULE, done=args.baseline_iterations)
    elif args.step_control:
        step_control = args.step_control
    cfg = sweep.SweepConfig(
        out=args.out, data_root=args.data_root, train_list=args.train_list,
        val_list=args.val_list, init_weights=args.init_weights,
        losses=[x.strip() for x in args.losses.split(",") if x.strip()],
        lambdas=args.lambdas, seeds=args.seeds, iterations=args.iterations,
        snapshot_every=args.snapshot_every, keep_snapshots=args.keep_snapshots,
        batch_size=args.batch_size, crop=args.crop, test_size=args.test_size,
        width_div=args.width_div, num_classes=args.num_classes, gpu=args.gpu,
        init_trained_on=None if args.baseline_from else sweep.trained_on(args.init_weights),
        baseline_from=args.baseline_from, baseline_list=args.baseline_list,
        baseline_iterations=args.baseline_iterations, restart=args.restart,
        step_control=step_control, shard=args.shard, devices=args.gpus,
        normalize=args.normalize, progress=cli.show_progress(args))
    sweep.run_and_report(cfg, table_only=args.table_only)


def main(argv=None):
    return cli.main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
