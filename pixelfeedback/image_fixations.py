"""Segmentation fixations of one image, end to end: choose the model and image (the demo's
when none is given), trace every predicted class, write the figures (fixations, Figure 2.4,
the flow strip and GIF per class), overlays, heat maps, point CSVs and summary.json, and
return the lines tools/seg_fixations.py prints.
"""
import os
import tempfile

from pixelfeedback import files, fixation_outputs, heatmap, pipeline
from pixelfeedback.demo.model import fixation_demo
from pixelfeedback.nets import registry
from python_layers import ToolkitError, voc_io


def default_class_names(spec):
    """The model's own class names: the spec's, else ``pipeline.model_class_names`` (the
    demo's for the demo weights), else None (``pipeline.class_names_for`` then gives VOC's
    for 21 classes, else class_<i>)."""
    if spec.class_names is not None:
        return spec.class_names
    return pipeline.model_class_names(spec.weights)


def summary_files(summary):
    """The file names (in the output folder) a summary.json lists."""
    names = {summary.get("figure"), summary.get("figure_2_4")}
    for record in summary.get("classes") or []:
        names.update((record.get("files") or {}).values())
    return {n for n in names if isinstance(n, str) and n and os.path.basename(n) == n}


def listed_files(summary_path):
    """The files an earlier run's summary.json lists; none when there is none or it cannot
    be read (then nothing of the folder is taken for that run's)."""
    import json

    try:
        with open(summary_path) as f:
            summary = json.load(f)
        return summary_files(summary) if isinstance(summary, dict) else set()
    except (OSError, ValueError, AttributeError):
        return set()


def remove_stale(out_dir, earlier, written):
    """Delete the files of an earlier run into ``out_dir`` that this run did not write
    (never anything its summary.json did not list); returns their names, sorted."""
    stale = sorted(name for name in earlier - written
                   if os.path.isfile(os.path.join(out_dir, name)))
    for name in stale:
        os.remove(os.path.join(out_dir, name))
    return stale


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
        given = [flag for flag, value in (("--image", args.image), ("--weights", args.weights))
                 if value is not None]
        if given:
            raise ToolkitError(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} "
                               f"--model (a prototxt or one of {', '.join(registry.MODELS)})")
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
    heatmap.check_heatmap_options(args.sigma, args.radius_fraction, args.min_fraction,
                                  args.alpha)

    net = pipeline.load_model(spec, args.gpu)
    kind = pipeline.net_kind(net, spec)
    size = net.blobs["data"].data.shape[2] if args.size is None else args.size
    if size < 0 or (kind == "classification" and size == 0):
        raise ToolkitError(f"--size must be positive (0 only for segmentation nets), got {size}")
    data, image, note = pipeline.prepare_input(image, size, spec.mean, kind)
    names = (pipeline.parse_class_names(args.class_names) if args.class_names
             else default_class_names(spec))
    names = pipeline.class_names_for(net.blobs[spec.score_blob].data.shape[1], names)
    tracker = pipeline.make_tracker(net, spec.prototxt, args.shift, args.k, args.max_units)
    results = pipeline.run_fixations(
        net, tracker, data, image, spec.score_blob, kind,
        pipeline.parse_classes(args.classes, names),
        skip_background=not args.include_background, names=names, sigma=args.sigma,
        remove_outliers=not args.no_outlier_removal, radius_fraction=args.radius_fraction,
        min_fraction=args.min_fraction, keep_layers=args.flow)
    out_dir = args.out or os.path.join("runs", "fixations", fixation_outputs.safe_name(stem))
    earlier = listed_files(os.path.join(out_dir, "summary.json"))
    results, figure = fixation_outputs.write_outputs(out_dir, stem, image, results, args.alpha)
    figure_2_4 = fixation_outputs.write_figure_2_4(out_dir, stem, image, results, net,
                                           spec.score_blob, names, kind, args.alpha)
    if args.flow:
        results = fixation_outputs.write_flow(out_dir, stem, image, results, tracker.graph, net)

    def kept(path):  # the demo's generated files live in work_dir and are deleted
        return "(generated, not kept)" if path.startswith(work_dir) else path

    summary = {
        "model": spec.name, "prototxt": kept(spec.prototxt), "weights": kept(spec.weights),
        "score_blob": spec.score_blob, "shift": args.shift, "k": args.k,
        "max_units": tracker.max_units,
        "heatmap": {"sigma": args.sigma, "radius_fraction": args.radius_fraction,
                    "min_fraction": args.min_fraction,
                    "outlier_removal": not args.no_outlier_removal},
        "image_size_hw": list(image.shape[:2]), "input_size": int(size),
        "figure": os.path.basename(figure),
        "figure_2_4": os.path.basename(figure_2_4) if figure_2_4 else None,
        "classes": [fixation_outputs.summary_record(r) for r in results]}
    files.write_json(os.path.join(out_dir, "summary.json"), summary)
    lines = [line for line in (spec.note, note) if line]
    stale = remove_stale(out_dir, earlier, summary_files(summary))
    if stale:
        lines.append(f"removed {len(stale)} file(s) of the previous run in {out_dir} that "
                     f"this run did not write ({', '.join(stale[:3])}"
                     + (", ..." if len(stale) > 3 else "") + ")")
    if not results:
        lines.append("no class to trace: the net predicts only background "
                     "(pass --include-background or --classes)")
    lines += [fixation_outputs.summary_line(result) for result in results]
    lines.append(f"figure: {figure}")
    if figure_2_4:
        lines.append(f"Figure 2.4: {figure_2_4}")
    return lines

