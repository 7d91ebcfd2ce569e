"""Segmentation fixations of one image, end to end: choose the model and image (the demo's
when none is given), trace every predicted class, write the figure, overlays, heat maps,
point CSVs and summary.json, and return the lines tools/seg_fixations.py prints.
"""
import os
import tempfile

from pixelfeedback import pipeline
from pixelfeedback.demo.model import fixation_demo
from pixelfeedback.nets import registry
from python_layers import ToolkitError, voc_io


def check_heatmap_options(sigma, radius_fraction, min_fraction, alpha):
    """Reject heat-map options outside their ranges, naming the option."""
    if radius_fraction <= 0:
        raise ToolkitError(f"--radius-fraction must be > 0, got {radius_fraction}")
    if not 0 <= min_fraction < 1:
        raise ToolkitError(f"--min-fraction must lie in [0, 1), got {min_fraction}")
    if not 0 <= alpha <= 1:
        raise ToolkitError(f"--alpha must lie in [0, 1], got {alpha}")
    if sigma is not None and sigma < 0:
        raise ToolkitError(f"--sigma must be >= 0, got {sigma}")


def default_max_units():
    """The back-tracker's own point budget (shown in --help)."""
    import inspect
    from pixelfeedback.fixations import BackTracker

    return inspect.signature(BackTracker).parameters["max_units"].default


def run(args):
    """Everything tools/seg_fixations.py does after parsing; prints the summary lines."""
    with tempfile.TemporaryDirectory(prefix="seg_fixations_") as work_dir:
        for line in _run(args, work_dir):
            print(line)


def _run(args, work_dir):
    if args.model is None:
        if args.image is not None or args.weights is not None:
            raise ToolkitError("--image and --weights need --model (a prototxt or one of "
                               f"{', '.join(registry.MODELS)})")
        demo = fixation_demo(work_dir)
        spec, image, stem = demo.model, demo.image, demo.stem
        if args.score_blob:
            spec = spec._replace(score_blob=args.score_blob)
        if args.mean:
            spec = spec._replace(mean=tuple(args.mean))
    else:
        if args.image is None:
            raise ToolkitError("--image is required with --model")
        spec = pipeline.resolve_model(args.model, args.weights, args.score_blob, args.mean)
        image = voc_io.read_image(args.image)
        stem = os.path.splitext(os.path.basename(args.image))[0]
    check_heatmap_options(args.sigma, args.radius_fraction, args.min_fraction, args.alpha)

    net = pipeline.load_model(spec, args.gpu)
    kind = pipeline.net_kind(net, spec)
    size = net.blobs["data"].data.shape[2] if args.size is None else args.size
    if size < 0 or (kind == "classification" and size == 0):
        raise ToolkitError(f"--size must be positive (0 only for segmentation nets), got {size}")
    data, image, note = pipeline.prepare_input(image, size, spec.mean, kind)
    names = args.class_names.split(",") if args.class_names else spec.class_names
    names = pipeline.class_names_for(net.blobs[spec.score_blob].data.shape[1], names)
    tracker = pipeline.make_tracker(net, spec.prototxt, args.shift, args.k, args.max_units)
    results = pipeline.run_fixations(
        net, tracker, data, image, spec.score_blob, kind,
        pipeline.parse_classes(args.classes, names),
        skip_background=not args.include_background, names=names, sigma=args.sigma,
        remove_outliers=not args.no_outlier_removal, radius_fraction=args.radius_fraction,
        min_fraction=args.min_fraction)
    out_dir = args.out or os.path.join("runs", "fixations", pipeline.safe_name(stem))
    results, figure = pipeline.write_outputs(out_dir, stem, image, results, args.alpha)

    def kept(path):  # the demo's generated files live in work_dir and are deleted
        return "(generated, not kept)" if path.startswith(work_dir) else path

    voc_io.write_json(os.path.join(out_dir, "summary.json"), {
        "model": spec.name, "prototxt": kept(spec.prototxt), "weights": kept(spec.weights),
        "score_blob": spec.score_blob, "shift": args.shift, "k": args.k,
        "image_size_hw": list(image.shape[:2]), "input_size": int(size),
        "figure": os.path.basename(figure),
        "classes": [pipeline.summary_record(r) for r in results]})
    lines = [line for line in (spec.note, note) if line]
    if not results:
        lines.append("no class to trace: the net predicts only background "
                     "(pass --include-background or --classes)")
    lines += [pipeline.summary_line(result) for result in results]
    lines.append(f"figure: {figure}")
    return lines

