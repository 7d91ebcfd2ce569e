"""Mean IoU of a segmentation net on a list of images, with DeepLab's test protocol
(thesis Algorithm 2; tools/evaluate.py is the command).

Per image: BGR minus the mean, padded at the bottom/right to --size (513) with the mean,
one forward pass, the prediction (the net's 'prediction' blob, an ArgMax of the x8-zoomed
scores, or the argmax of the zoomed scores) cropped to the image size. One confusion
matrix is accumulated over the whole list (thesis Algorithm 2, pixelfeedback/metrics.py).

Written to --out: predictions/<id>.png (VOC palette PNGs), metrics.json, class_iou.csv,
summary.md and settings.json (the run folder's settings, so that a resumed run cannot mix
two models; pixelfeedback.runfolder).
The run resumes: an image whose finished prediction PNG exists is not run again (the PNG is read
back into the confusion matrix), so an interrupted evaluation continues where it stopped.

NaN or inf in the scores (broken or diverged weights) stops the run with an error naming the
blob and the image. Class names: the given ones, else the model's or its data set's
(``pipeline.model_class_names``: the demo model's), VOC's for 21 classes, else class_<i>.

Evaluating weights on a split they were trained on (e.g. the released DeepLab-LargeFOV
train2_iter_8000, fine-tuned on train+val, on VOC 2012 val) prints a warning and records
it in metrics.json: such a number is no test result.
"""
import os
import sys
import time

import numpy as np

from pixelfeedback.data_lists import ALL_OR_NONE, check_pairs
from pixelfeedback import files, metrics, reports
from pixelfeedback.messages import note
from pixelfeedback.nets import registry
from pixelfeedback.nets.loading import load_net
from pixelfeedback.nets.weights import parameters_digest
from pixelfeedback.fixations.rules import NON_FINITE_ADVICE
from pixelfeedback.pipeline import class_names_for, model_class_names
from pixelfeedback.runfolder import CONTENTS, RunFolder, content_digest
from python_layers import ToolkitError, voc_io

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


def infer_model_name(weights):
    """The registry name whose published file name is ``basename(weights)``, else None."""
    if not weights:
        return None
    base = os.path.basename(weights)
    return next((m.name for m in registry.MODELS.values() if m.weights == base), None)


def infer_split_name(list_file):
    """'voc2012_val' for .../val.txt (likewise train, trainval, train_aug), else None."""
    stem = os.path.splitext(os.path.basename(list_file))[0]
    return f"voc2012_{stem}" if stem in LIST_SPLITS else None


def contamination_warning(model_name, split_name):
    """A warning when the model's weights were trained on images of the split, else None."""
    if model_name not in registry.MODELS or not split_name:
        return None
    trained_on = registry.MODELS[model_name].trained_on
    seen = [s for s in SEEN_BY_TRAINING_ON.get(split_name, (split_name,)) if s in trained_on]
    if not seen:
        return None
    return (f"the weights of '{model_name}' were trained on {', '.join(trained_on)}, which "
            f"contains the images of {split_name}: this mean IoU is not a test result "
            "(fine for looking at predictions or fixations, never for reporting)")


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


def predict_image(net, input_name, output_blob, image, size, mean, scores_blob=None,
                  image_name="the image"):
    """The (H, W) uint8 class map of one BGR image (DeepLab's test protocol). NaN or inf
    in ``scores_blob`` (default ``output_blob``) is an error naming the blob and
    ``image_name``: an arg-max of such scores is no prediction."""
    from python_layers import seg_data   # a Caffe layer module: it imports caffe

    data, _ = seg_data.preprocess(image, crop=size, mean=mean)
    net.blobs[input_name].data[0] = data
    net.forward()
    scores_blob = scores_blob or output_blob
    if not np.isfinite(net.blobs[scores_blob].data).all():
        raise ToolkitError(f"blob '{scores_blob}' holds NaN or inf after the forward pass of "
                           f"{image_name}, so no class can be read from it; "
                           f"{NON_FINITE_ADVICE}")
    output = net.blobs[output_blob].data[0]
    height, width = image.shape[:2]
    if output.shape[0] == 1:  # already class indices (an ArgMax layer)
        return output[0, :height, :width].astype(np.uint8)
    return output[:, :height, :width].argmax(axis=0).astype(np.uint8)


def run_fingerprint(net, model, list_file, data_root, num_classes, size, mean, output_blob):
    """What must stay the same for saved predictions to be reused (the run folder's
    settings; paths marked so that a moved or copied folder still resumes)."""
    return {
        "model": RunFolder.path(model) if os.path.exists(model) else model,
        "parameters_sha256": parameters_digest(net),
        "list": RunFolder.path(list_file),
        "data_root": RunFolder.path(data_root),
        "num_classes": num_classes,
        "size": size,
        "mean": [float(m) for m in mean],
        "output_blob": output_blob,
        # what the list holds, not only where it is (added later: adopted by older folders)
        "contents": {"list": content_digest(list_file)},
    }


def evaluate(net_or_paths, list_file, data_root, out_dir, num_classes=21, size=513,
             mean=None, restart=False, progress=True, model_name=None,
             split_name=None, output_blob=None, class_names=None, gpu=None, on_image=None,
             skip_bad_images=False, skip_flag="--skip-bad-images"):
    """Evaluate a net on a list; returns the dict written to ``out_dir/metrics.json``.

    net_or_paths: a caffe.Net, or (prototxt, caffemodel) paths (caffemodel may be None:
    the fillers' weights). model_name / split_name: registry model and split (inferred from
    the caffemodel's and the list's file names) for the trained-on-this-split warning.
    mean: BGR mean (default: the registry model's, else DeepLab's).
    progress: a bar (True), none (False), or one that goes when done ("transient").
    output_blob: default 'prediction' when the net has it, else its first output.
    restart: discard what ``out_dir`` holds (predictions of other settings included) and
    predict every image again; otherwise finished predictions of the same settings are
    reused and other settings are refused (pixelfeedback.runfolder).
    on_image(index, image_id, reused): called after each image (tests interrupt with it).
    A list without labels only writes predictions (no score entries in the result).
    skip_bad_images: an image (or its label) that cannot be read, e.g. a truncated JPEG,
    is left out and listed in ``skipped_images`` (counted in ``images_skipped``) instead
    of stopping the run with an error naming it. skip_flag: the caller's flag for that,
    which the error names (None: a caller without one, e.g. the sweep; no advice).
    Every label is checked first (``data_lists.check_pairs``: a map of class indices
    below ``num_classes`` or 255), before any image is predicted.
    """
    if isinstance(net_or_paths, (tuple, list)):
        prototxt, weights = net_or_paths
        net = load_net(prototxt, weights, gpu=gpu)
        model_desc = prototxt
    else:
        net, weights, model_desc = net_or_paths, None, model_name or "in-memory caffe.Net"
    model_name = model_name or infer_model_name(weights)
    split_name = split_name or infer_split_name(list_file)
    if mean is None:
        mean = (registry.MODELS[model_name].mean if model_name in registry.MODELS
                else registry.DEEPLAB_MEAN)
    pairs = voc_io.read_list(list_file, root=data_root)
    input_name, output_blob = prepare_net(net, size, output_blob)
    scores_blob, num_outputs = score_channels(net, output_blob)
    if num_outputs != num_classes:
        raise ToolkitError(f"blob {scores_blob!r} has {num_outputs} channels but "
                           f"--num-classes is {num_classes}; set --num-classes to match the net")
    has_labels = check_pairs(pairs, list_file, "--list", labels=ALL_OR_NONE, max_size=size,
                             unique_names=True, skip_bad_images=skip_bad_images,
                             skip_flag=skip_flag, num_classes=num_classes)
    class_names = list(class_names_for(
        num_classes, class_names or model_class_names(weights, data_root, num_classes)))

    warnings = []
    warning = contamination_warning(model_name, split_name)
    if warning:
        warnings.append(warning)
        print(f"WARNING: {warning}", file=sys.stderr)
    if weights is None and isinstance(net_or_paths, (tuple, list)):
        warnings.append("no weights given: the net has its fillers' random weights")

    settings = run_fingerprint(net, model_desc, list_file, data_root, num_classes, size, mean,
                               output_blob)
    with RunFolder(out_dir, settings, what="evaluation", restart=restart,
                   adopt=(CONTENTS,)) as folder:
        result = _predict_and_score(folder, net, pairs, has_labels, input_name, output_blob,
                                    num_classes, size, mean, progress, on_image,
                                    skip_bad_images, scores_blob, skip_flag)
        result.update({
            "model": model_desc if isinstance(model_desc, str) else str(model_desc),
            "model_name": model_name,
            "weights": os.path.abspath(weights) if weights else None,
            "list": os.path.abspath(list_file),
            "data_root": os.path.abspath(data_root),
            "split_name": split_name,
            "class_names": class_names,
            "warnings": warnings,
        })
        confusion = result.pop("confusion_matrix", None)
        if has_labels:
            result.update(score_fields(confusion, class_names))
        folder.write_json("metrics.json", result)
        if has_labels:
            folder.write_text("class_iou.csv", class_csv(result))
            folder.write_text("summary.md", summary_markdown(result))
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    return result


def read_or_skip(read, path, skipped, skip_bad_images, skip_flag="--skip-bad-images"):
    """``read()``, or None after adding ``path`` to ``skipped`` when it raises a
    ToolkitError and ``skip_bad_images``; otherwise the error says how to skip with the
    caller's ``skip_flag`` (None: the caller has no such flag, the error is left as is)."""
    try:
        return read()
    except ToolkitError as exc:
        if skip_bad_images:
            skipped.append(path)
            return None
        if not skip_flag:
            raise
        raise ToolkitError(f"{exc} (or pass {skip_flag} to leave unreadable images out; they "
                           "are counted in the report)") from None


def _predict_and_score(folder, net, pairs, has_labels, input_name, output_blob, num_classes,
                       size, mean, progress, on_image, skip_bad_images=False,
                       scores_blob=None, skip_flag="--skip-bad-images"):
    """Predict every image not predicted yet into ``folder``/predictions, reading the others
    back, and add all into one confusion matrix (``confusion_matrix`` of the result).
    Unreadable images are left out with ``skip_bad_images`` (see ``evaluate``). The bar's
    mIoU= is the running value, current when the bar closes."""
    from tqdm import tqdm
    from python_layers import seg_data   # a Caffe layer module: it imports caffe

    confusion = np.zeros((num_classes, num_classes), np.int64)
    ran = reused = 0
    skipped = []
    started = time.time()
    # "transient" (a sweep's run): the bar goes when done, the run's result line stays
    bar = tqdm(pairs, desc="evaluate", unit="img", disable=not progress,
               leave=progress != "transient")
    for index, (image_path, label_path) in enumerate(bar):
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        pred_name = os.path.join("predictions", image_id + ".png")
        pred = label = None
        if folder.has(pred_name):
            pred = _cached_prediction(folder.file(pred_name))
        if pred is not None:
            if has_labels:
                label = voc_io.read_label(label_path, num_classes)
                if pred.shape != label.shape:
                    pred = None  # a stale file of another image size: predict again
        if pred is None:
            if has_labels:
                loaded = read_or_skip(lambda: seg_data.load_pair(image_path, label_path,
                                                                 num_classes),
                                      image_path, skipped, skip_bad_images, skip_flag)
                image, label = loaded if loaded is not None else (None, None)
            else:
                image = read_or_skip(lambda: voc_io.read_image(image_path), image_path,
                                     skipped, skip_bad_images, skip_flag)
            if image is None:
                continue
            pred = predict_image(net, input_name, output_blob, image, size, mean,
                                 scores_blob, image_path)
            files.write_label(folder.file(pred_name), pred)
            ran += 1
            was_reused = False
        else:
            reused += 1
            was_reused = True
        if has_labels:
            confusion += metrics.confusion_matrix(pred, label, num_classes)
            if progress:  # refresh=False: tqdm redraws at its own pace and on close
                bar.set_postfix(mIoU=f"{metrics.scores(confusion)['mean_iou']:.4f}",
                                refresh=False)
        if on_image is not None:
            on_image(index, image_id, was_reused)
    bar.close()
    return {"num_images": len(pairs), "images_run": ran, "images_reused": reused,
            "images_skipped": len(skipped), "skipped_images": skipped,
            "num_classes": num_classes, "size": size, "mean": [float(m) for m in mean],
            "output_blob": output_blob, "seconds": round(time.time() - started, 3),
            "confusion_matrix": confusion}


def _cached_prediction(path):
    """The prediction PNG an earlier run of this evaluation wrote, or None when it cannot
    be read (this tool's own file, cut or edited: the image is predicted again, with a
    note, never an error)."""
    try:
        return voc_io.read_label(path)
    except ToolkitError:
        note(f"note: the saved prediction {path} cannot be read; predicting the image again")
        return None


def score_fields(confusion, class_names):
    """The metrics.json entries of a confusion matrix (rows = ground truth)."""
    s = metrics.scores(confusion)
    return {
        "mean_iou": reports.json_number(s["mean_iou"]),
        "pixel_accuracy": reports.json_number(s["pixel_accuracy"]),
        "mean_class_accuracy": reports.json_number(s["mean_class_accuracy"]),
        "freq_weighted_iou": reports.json_number(s["freq_weighted_iou"]),
        "class_iou": {name: reports.json_number(v) for name, v in zip(class_names, s["class_iou"])},
        "num_pixels": s["num_pixels"],
        "num_classes_scored": s["num_classes_scored"],
        "confusion": confusion.tolist(),
    }


def class_csv(result):
    """class_iou.csv: one row per class (an empty cell where the IoU is undefined)."""
    return reports.csv_text([{"class": name, "iou": iou}
                             for name, iou in result["class_iou"].items()], ("class", "iou"))


def images_text(result):
    """'12 images', or '11 of 12 images scored; 1 skipped as unreadable: <path>'."""
    total, skipped = result["num_images"], result.get("skipped_images") or []
    if not skipped:
        return f"{total} image{'s' if total != 1 else ''}"
    first = f"`{skipped[0]}`" + (", ..." if len(skipped) > 1 else "")
    return (f"{total - len(skipped)} of {total} images scored; {len(skipped)} skipped as "
            f"unreadable: {first}")


def summary_markdown(result):
    lines = [
        f"# Evaluation of {result['model_name'] or os.path.basename(str(result['model']))}",
        "",
        f"- weights: `{result['weights']}`",
        f"- list: `{result['list']}` ({images_text(result)})",
        f"- mean IoU: **{reports.percent(result['mean_iou'])} %**",
        f"- pixel accuracy: {reports.percent(result['pixel_accuracy'])} %",
        f"- mean class accuracy: {reports.percent(result['mean_class_accuracy'])} %",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in result["warnings"]]
    if result["warnings"]:
        lines.append("")
    lines += ["| class | IoU (%) |", "|---|---:|"]
    lines += [f"| {name} | {reports.percent(iou)} |" for name, iou in result["class_iou"].items()]
    return "\n".join(lines) + "\n"


def print_table(result):
    """The evaluation's result on the terminal: per-class IoU, mean IoU, pixel accuracy."""
    print(f"images: {result['num_images']} ({result['images_run']} run, "
          f"{result['images_reused']} read back"
          + (f", {result['images_skipped']} skipped as unreadable, first: "
             f"{result['skipped_images'][0]}" if result.get("images_skipped") else "") + ")")
    if "class_iou" not in result:
        print("no labels in the list: predictions written, no scores")
        return
    width = max(len(n) for n in result["class_iou"])
    for name, iou in result["class_iou"].items():
        print(f"  {name:{width}s}  {reports.percent(iou):>6s}")
    print(f"mean IoU:       {reports.percent(result['mean_iou'])} %")
    print(f"pixel accuracy: {reports.percent(result['pixel_accuracy'])} %")


def evaluate_and_report(model, weights, list_file, data_root, out, **options):
    """``evaluate`` a test prototxt with its weights and print the table (tools/evaluate.py)."""
    result = evaluate((model, weights), list_file, data_root, out, **options)
    print_table(result)
    print(f"written to {out}")
    return result
