#!/usr/bin/env python
"""Mean IoU of a segmentation net on a list of images, with DeepLab's test protocol.

    python tools/evaluate.py --model prototxt/test.prototxt \\
        --weights weights/my_iter_6000.caffemodel \\
        --data-root data/VOCdevkit/VOC2012 --list data/lists/val.txt --out runs/eval

Per image: BGR minus the mean, padded at the bottom/right to --size (513) with the mean,
one forward pass, the prediction (the net's 'prediction' blob, an ArgMax of the x8-zoomed
scores, or the argmax of the zoomed scores) cropped to the image size. One confusion
matrix is accumulated over the whole list (thesis Algorithm 2, pixelfeedback/metrics.py).

Written to --out: predictions/<id>.png (VOC palette PNGs), metrics.json, class_iou.csv,
summary.md and settings.json (the settings: a rerun with other settings is refused
unless --restart, so that a resumed run cannot mix two models).
The run resumes: an image whose prediction PNG exists is not run again (the PNG is read
back into the confusion matrix), so an interrupted evaluation continues where it stopped.

Evaluating weights on a split they were trained on (e.g. the released DeepLab-LargeFOV
train2_iter_8000, fine-tuned on train+val, on VOC 2012 val) prints a warning and records
it in metrics.json: such a number is no test result.
"""
import argparse
import sys

from pixelfeedback import cli, evaluation
from pixelfeedback.nets import registry


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="test net prototxt (prototxt/test.prototxt: input 513, x8 zoom)")
    parser.add_argument("--weights", required=True, help="caffemodel to evaluate")
    parser.add_argument("--data-root", required=True,
                        help="folder the list's paths are relative to (data/VOCdevkit/VOC2012)")
    parser.add_argument("--list", required=True,
                        help="DeepLab list file: '/JPEGImages/x.jpg /SegmentationClass/x.png'")
    cli.add_out(parser, None, "output folder (predictions/, metrics.json, class_iou.csv, ...)",
                required=True)
    cli.add_gpu(parser)
    parser.add_argument("--num-classes", type=cli.positive_int, default=21,
                        help="classes (default 21)")
    cli.add_size(parser, 513, "net input side; images are padded to it", minimum=1)
    cli.add_mean(parser, "the registry model's, else DeepLab's 104.008,116.669,122.675")
    parser.add_argument("--output-blob", default=None,
                        help="blob with the prediction or zoomed scores (default "
                             "'prediction' if the net has it, else its first output)")
    parser.add_argument("--model-name", default=None,
                        help=f"registry name of the weights ({', '.join(registry.MODELS)}); "
                             "inferred from the caffemodel's file name")
    parser.add_argument("--split-name", default=None,
                        help="split of the list, e.g. voc2012_val (inferred from val.txt, "
                             "train.txt, ...); used to warn about weights trained on it")
    parser.add_argument("--restart", action="store_true",
                        help="discard what --out holds (predictions of other settings "
                        "included) and predict every image again")
    cli.add_progress(parser)
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out images that cannot be read (e.g. truncated JPEGs) "
                        "instead of stopping; they are counted and listed in metrics.json")
    return parser


def main(argv=None):
    return cli.main(build_parser(), lambda args: evaluation.evaluate_and_report(
        args.model, args.weights, args.list, args.data_root, args.out,
        num_classes=args.num_classes, size=args.size, mean=args.mean,
        restart=args.restart, progress=cli.show_progress(args), model_name=args.model_name,
        split_name=args.split_name, output_blob=args.output_blob, gpu=args.gpu,
        skip_bad_images=args.skip_bad_images), argv)


if __name__ == "__main__":
    sys.exit(main())
