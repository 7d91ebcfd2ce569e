#!/usr/bin/env python
"""Mean IoU of a segmentation net on a list of images, with DeepLab's test protocol.

    python tools/evaluate.py --model prototxt/test.prototxt \\
        --weights weights/my_iter_6000.caffemodel \\
        --data-root data/VOCdevkit/VOC2012 --list data/lists/val.txt --out runs/eval

Per image: BGR minus the mean, padded at the bottom/right to --size (513) with the mean,
one forward pass, the prediction (the net's 'prediction' blob, an ArgMax of the x8-zoomed
scores, or the argmax of the zoomed scores) cropped to the image size. One confusion
matrix is accumulated over the whole list (thesis Algorithm 2, tools/metrics.py).

Written to --out: predictions/<id>.png (VOC palette PNGs), metrics.json, class_iou.csv,
summary.md and run.json (the settings, so that a resumed run cannot mix two models).
The run resumes: an image whose prediction PNG exists is not run again (the PNG is read
back into the confusion matrix), so an interrupted evaluation continues where it stopped.

Evaluating weights on a split they were trained on (e.g. the released DeepLab-LargeFOV
train2_iter_8000, fine-tuned on train+val, on VOC 2012 val) prints a warning and records
it in metrics.json: such a number is no test result.
"""
import argparse
import collections
import csv
import io
import os
import sys
import time

if __name__ == "__main__":  # quiet Caffe's glog unless the user asks for it
    os.environ.setdefault("GLOG_minloglevel", "2")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from python_layers import ToolkitError, seg_data, voc_io  # noqa: E402
from tools import metrics, zoo  # noqa: E402

# Splits whose images a model trained on the key has seen. FCN's SBD train holds a part
# of VOC 2012 val (which is why FCN reports on "seg11valid").
SEEN_BY_TRAINING_ON = {
    "voc2012_val": ("voc2012_val", "voc2012_trainval", "sbd_train"),
    "voc2012_train": ("voc2012_train", "voc2012_trainval", "voc2012_train_aug"),
    "voc2012_train_aug": ("voc2012_train_aug", "voc2012_train", "sbd_train", "sbd_val"),
    "voc2012_trainval": ("voc2012_train", "voc2012_val", "voc2012_trainval",
                         "voc2012_train_aug", "sbd_train"),
}
LIST_SPLITS = ("train", "val", "trainval", "train_aug")


def default_class_names(num_classes):
    """VOC's names for 21 classes, class_<i> otherwise."""
    if num_classes == len(voc_io.VOC_CLASSES):
        return list(voc_io.VOC_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def infer_model_name(weights):
    """The registry name whose published file name is ``basename(weights)``, else None."""
    if not weights:
        return None
    base = os.path.basename(weights)
    return next((m.name for m in zoo.MODELS.values() if m.weights == base), None)


def infer_split_name(list_file):
    """'voc2012_val' for .../val.txt (likewise train, trainval, train_aug), else None."""
    stem = os.path.splitext(os.path.basename(list_file))[0]
    return f"voc2012_{stem}" if stem in LIST_SPLITS else None


def contamination_warning(model_name, split_name):
    """A warning when the model's weights were trained on images of the split, else None."""
    if model_name not in zoo.MODELS or not split_name:
        return None
    trained_on = zoo.MODELS[model_name].trained_on
    seen = [s for s in SEEN_BY_TRAINING_ON.get(split_name, (split_name,)) if s in trained_on]
    if not seen:
        return None
    return (f"the weights of '{model_name}' were trained on {', '.join(trained_on)}, which "
            f"contains the images of {split_name}: this mean IoU is not a test result "
            "(fine for looking at predictions or fixations, never for reporting)")


def load_net(prototxt, weights, gpu=None):
    """A caffe.Net in TEST phase with ``weights`` copied in (shapes checked first)."""
    import caffe

    if gpu is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(int(gpu))
        caffe.set_mode_gpu()
    if not os.path.isfile(prototxt):
        raise ToolkitError(f"net prototxt not found: {prototxt} (prototxt/test.prototxt is the "
                           "DeepLab test net; regenerate it with `make prototxt`)")
    if weights is not None and not os.path.isfile(weights):
        raise ToolkitError(f"weights not found: {weights}; fetch published ones with "
                           "`python weights/fetch.py --list` or pass a trained caffemodel")
    net = caffe.Net(prototxt, caffe.TEST)
    if weights is not None:
        from tools import netdef
        netdef.load_weights(net, weights)
    return net


def check_inputs(pairs, size):
    """Fail early (before any forward pass) on missing files or images above ``size``."""
    from PIL import Image

    with_label = [label is not None for _, label in pairs]
    if any(with_label) and not all(with_label):
        raise ToolkitError("the list mixes lines with and without a label; give every image "
                           "a label (or none, to only write predictions)")
    ids = collections.Counter(os.path.splitext(os.path.basename(image))[0]
                              for image, _ in pairs)
    if len(ids) != len(pairs):
        twice = sorted(i for i, count in ids.items() if count > 1)
        raise ToolkitError(f"the list names image {twice[0]!r} more than once; predictions are "
                           "saved by image name, so every name must be unique")
    missing = [p for pair in pairs for p in pair if p is not None and not os.path.isfile(p)]
    if missing:
        raise ToolkitError(f"{len(missing)} file(s) of the list not found, first: {missing[0]} "
                           "(check --data-root and --list)")
    for image_path, _ in pairs:
        try:
            with Image.open(image_path) as img:
                width, height = img.size
        except Exception as exc:  # PIL raises many kinds on a broken file
            raise ToolkitError(f"cannot read image {image_path} ({exc}); replace it or remove "
                               "it from the list") from None
        if height > size or width > size:
            raise ToolkitError(
                f"image {image_path} is {width}x{height}, larger than the net input "
                f"{size}x{size}; pass a larger --size (VOC images are at most 500x500: 513 "
                "fits them)")
    return all(with_label)


def prepare_net(net, size, output_blob):
    """Reshape the input to (1, 3, size, size); returns (input name, output name)."""
    input_name = "data" if "data" in net.blobs else net.inputs[0]
    if net.blobs[input_name].data.shape != (1, 3, size, size):
        net.blobs[input_name].reshape(1, 3, size, size)
        net.reshape()
    if output_blob is None:
        output_blob = "prediction" if "prediction" in net.blobs else net.outputs[0]
    if output_blob not in net.blobs:
        raise ToolkitError(f"the net has no blob {output_blob!r}; its outputs are "
                           f"{', '.join(net.outputs)}")
    shape = net.blobs[output_blob].data.shape
    if len(shape) != 4 or shape[2:] != (size, size):
        raise ToolkitError(
            f"blob {output_blob!r} has shape {shape}, not (1, C, {size}, {size}): evaluation "
            "needs scores zoomed to the input size (use prototxt/test.prototxt, whose "
            "'fc8_interp' zooms fc8 x8, not the deploy net)")
    return input_name, output_blob


def score_channels(net, output_blob):
    """(blob, channels) of the class scores behind ``output_blob``: the blob itself, or
    for a 1-channel prediction (ArgMax) the scores it was computed from."""
    channels = net.blobs[output_blob].data.shape[1]
    if channels != 1:
        return output_blob, channels
    for layer, tops in net.top_names.items():
        if output_blob in tops and net.bottom_names[layer]:
            bottom = net.bottom_names[layer][0]
            return bottom, net.blobs[bottom].data.shape[1]
    return output_blob, channels


def predict(net, input_name, output_blob, image, size, mean):
    """The (H, W) uint8 class map of one BGR image (DeepLab's test protocol)."""
    data, _ = seg_data.preprocess(image, crop=size, mean=mean)
    net.blobs[input_name].data[0] = data
    net.forward()
    output = net.blobs[output_blob].data[0]
    height, width = image.shape[:2]
    if output.shape[0] == 1:  # already class indices (an ArgMax layer)
        return output[0, :height, :width].astype(np.uint8)
    return output[:, :height, :width].argmax(axis=0).astype(np.uint8)


def parameters_digest(net):
    """sha256 of every parameter blob of ``net``, in layer order: identifies the weights
    whatever file they came from (about 0.2 s for the full DeepLab-LargeFOV)."""
    import hashlib

    digest = hashlib.sha256()
    for name, blobs in net.params.items():
        digest.update(name.encode())
        for blob in blobs:
            digest.update(np.ascontiguousarray(blob.data, np.float32).tobytes())
    return digest.hexdigest()


def run_fingerprint(net, model, list_file, data_root, num_classes, size, mean, output_blob):
    """What must stay the same for saved predictions to be reused."""
    return {
        "model": os.path.abspath(model) if os.path.exists(model) else model,
        "parameters_sha256": parameters_digest(net),
        "list": os.path.abspath(list_file),
        "data_root": os.path.abspath(data_root),
        "num_classes": num_classes,
        "size": size,
        "mean": [float(m) for m in mean],
        "output_blob": output_blob,
    }


def claim_out_dir(out_dir, fingerprint, resume):
    """Write run.json; refuse to resume into a folder written with other settings."""

    path = os.path.join(out_dir, "run.json")
    if resume:
        differ = voc_io.settings_differ(path, fingerprint)
        if differ:
            raise ToolkitError(
                f"{out_dir} holds predictions of a different run (differs in: "
                f"{', '.join(differ)}); pass another --out, or --no-resume to overwrite them")
    voc_io.write_json(path, fingerprint)


def evaluate(net_or_paths, list_file, data_root, out_dir, num_classes=21, size=513,
             mean=None, resume=True, progress=True, model_name=None,
             split_name=None, output_blob=None, class_names=None, gpu=None, on_image=None):
    """Evaluate a net on a list; returns the dict written to ``out_dir/metrics.json``.

    net_or_paths: a caffe.Net, or (prototxt, caffemodel) paths (caffemodel may be None:
    the fillers' weights). model_name / split_name: registry model and split (inferred from
    the caffemodel's and the list's file names) for the trained-on-this-split warning.
    mean: BGR mean (default: the registry model's, else DeepLab's).
    output_blob: default 'prediction' when the net has it, else its first output.
    on_image(index, image_id, reused): called after each image (tests interrupt with it).
    A list without labels only writes predictions (no score entries in the result).
    """
    from tqdm import tqdm

    if isinstance(net_or_paths, (tuple, list)):
        prototxt, weights = net_or_paths
        net = load_net(prototxt, weights, gpu=gpu)
        model_desc = prototxt
    else:
        net, weights, model_desc = net_or_paths, None, model_name or "in-memory caffe.Net"
    model_name = model_name or infer_model_name(weights)
    split_name = split_name or infer_split_name(list_file)
    if mean is None:
        mean = zoo.MODELS[model_name].mean if model_name in zoo.MODELS else zoo.DEEPLAB_MEAN
    class_names = list(class_names) if class_names else default_class_names(num_classes)
    if len(class_names) != num_classes:
        raise ToolkitError(f"{len(class_names)} class names given for {num_classes} classes")

    pairs = voc_io.read_list(list_file, root=data_root)
    has_labels = check_inputs(pairs, size)
    input_name, output_blob = prepare_net(net, size, output_blob)
    scores_blob, num_outputs = score_channels(net, output_blob)
    if num_outputs != num_classes:
        raise ToolkitError(f"blob {scores_blob!r} has {num_outputs} channels but "
                           f"--num-classes is {num_classes}; set --num-classes to match the net")

    warnings = []
    warning = contamination_warning(model_name, split_name)
    if warning:
        warnings.append(warning)
        print(f"WARNING: {warning}", file=sys.stderr)
    if weights is None and isinstance(net_or_paths, (tuple, list)):
        warnings.append("no weights given: the net has its fillers' random weights")

    pred_dir = os.path.join(out_dir, "predictions")
    os.makedirs(pred_dir, exist_ok=True)
    claim_out_dir(out_dir, run_fingerprint(net, model_desc, list_file, data_root, num_classes,
                                           size, mean, output_blob), resume)

    confusion = np.zeros((num_classes, num_classes), np.int64)
    ran = reused = 0
    started = time.time()
    bar = tqdm(pairs, desc="evaluate", unit="img", disable=not progress)
    for index, (image_path, label_path) in enumerate(bar):
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        pred_path = os.path.join(pred_dir, image_id + ".png")
        pred = label = None
        if resume and os.path.exists(pred_path):
            pred = voc_io.read_label(pred_path)
            if has_labels:
                label = voc_io.read_label(label_path, num_classes)
                if pred.shape != label.shape:
                    pred = None  # a stale file of another image size: predict again
        if pred is None:
            if has_labels:
                image, label = seg_data.load_pair(image_path, label_path, num_classes)
            else:
                image = voc_io.read_image(image_path)
            pred = predict(net, input_name, output_blob, image, size, mean)
            voc_io.write_label(pred_path, pred)
            ran += 1
            was_reused = False
        else:
            reused += 1
            was_reused = True
        if has_labels:
            confusion += metrics.confusion_matrix(pred, label, num_classes)
            if progress and index % 10 == 0:
                bar.set_postfix(mIoU=f"{metrics.scores(confusion)['mean_iou']:.4f}")
        if on_image is not None:
            on_image(index, image_id, was_reused)
    bar.close()

    result = {
        "model": model_desc if isinstance(model_desc, str) else str(model_desc),
        "model_name": model_name,
        "weights": os.path.abspath(weights) if weights else None,
        "list": os.path.abspath(list_file),
        "data_root": os.path.abspath(data_root),
        "split_name": split_name,
        "num_images": len(pairs),
        "images_run": ran,
        "images_reused": reused,
        "num_classes": num_classes,
        "class_names": class_names,
        "size": size,
        "mean": [float(m) for m in mean],
        "output_blob": output_blob,
        "warnings": warnings,
        "seconds": round(time.time() - started, 3),
    }
    if has_labels:
        result.update(score_fields(confusion, class_names))
    voc_io.write_json(os.path.join(out_dir, "metrics.json"), result)
    if has_labels:
        voc_io.write_text(os.path.join(out_dir, "class_iou.csv"), class_csv(result))
        voc_io.write_text(os.path.join(out_dir, "summary.md"), summary_markdown(result))
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return result


def _number(value):
    """JSON has no NaN: undefined scores become null."""
    value = float(value)
    return None if np.isnan(value) else value


def score_fields(confusion, class_names):
    """The metrics.json entries of a confusion matrix (rows = ground truth)."""
    s = metrics.scores(confusion)
    return {
        "mean_iou": _number(s["mean_iou"]),
        "pixel_accuracy": _number(s["pixel_accuracy"]),
        "mean_class_accuracy": _number(s["mean_class_accuracy"]),
        "freq_weighted_iou": _number(s["freq_weighted_iou"]),
        "class_iou": {name: _number(v) for name, v in zip(class_names, s["class_iou"])},
        "num_pixels": s["num_pixels"],
        "num_classes_scored": s["num_classes_scored"],
        "confusion": confusion.tolist(),
    }


def class_csv(result):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["class", "iou"])
    for name, iou in result["class_iou"].items():
        writer.writerow([name, "" if iou is None else f"{iou:.6f}"])
    return out.getvalue()


def _percent(value):
    return "n/a" if value is None else f"{100 * value:.2f}"


def summary_markdown(result):
    lines = [
        f"# Evaluation of {result['model_name'] or os.path.basename(str(result['model']))}",
        "",
        f"- weights: `{result['weights']}`",
        f"- list: `{result['list']}` ({result['num_images']} images)",
        f"- mean IoU: **{_percent(result['mean_iou'])} %**",
        f"- pixel accuracy: {_percent(result['pixel_accuracy'])} %",
        f"- mean class accuracy: {_percent(result['mean_class_accuracy'])} %",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in result["warnings"]]
    if result["warnings"]:
        lines.append("")
    lines += ["| class | IoU (%) |", "|---|---:|"]
    lines += [f"| {name} | {_percent(iou)} |" for name, iou in result["class_iou"].items()]
    return "\n".join(lines) + "\n"


def print_table(result):
    print(f"images: {result['num_images']} ({result['images_run']} run, "
          f"{result['images_reused']} read back)")
    if "class_iou" not in result:
        print("no labels in the list: predictions written, no scores")
        return
    width = max(len(n) for n in result["class_iou"])
    for name, iou in result["class_iou"].items():
        print(f"  {name:{width}s}  {_percent(iou):>6s}")
    print(f"mean IoU:       {_percent(result['mean_iou'])} %")
    print(f"pixel accuracy: {_percent(result['pixel_accuracy'])} %")


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
    parser.add_argument("--out", required=True,
                        help="output folder (predictions/, metrics.json, class_iou.csv, ...)")
    parser.add_argument("--gpu", type=int, default=None, help="GPU id (default: CPU)")
    parser.add_argument("--num-classes", type=int, default=21, help="classes (default 21)")
    parser.add_argument("--size", type=int, default=513,
                        help="net input side; images are padded to it (default 513)")
    parser.add_argument("--mean", type=float, nargs=3, metavar=("B", "G", "R"), default=None,
                        help="BGR mean subtracted (default: the registry model's, else "
                             "DeepLab's 104.008 116.669 122.675)")
    parser.add_argument("--output-blob", default=None,
                        help="blob with the prediction or zoomed scores (default "
                             "'prediction' if the net has it, else its first output)")
    parser.add_argument("--model-name", default=None,
                        help=f"registry name of the weights ({', '.join(zoo.MODELS)}); "
                             "inferred from the caffemodel's file name")
    parser.add_argument("--split-name", default=None,
                        help="split of the list, e.g. voc2012_val (inferred from val.txt, "
                             "train.txt, ...); used to warn about weights trained on it")
    parser.add_argument("--no-resume", action="store_true",
                        help="predict every image again, overwriting saved predictions")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        result = evaluate((args.model, args.weights), args.list, args.data_root, args.out,
                          num_classes=args.num_classes, size=args.size, mean=args.mean,
                          resume=not args.no_resume, progress=not args.no_progress,
                          model_name=args.model_name, split_name=args.split_name,
                          output_blob=args.output_blob, gpu=args.gpu)
    except ToolkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_table(result)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
