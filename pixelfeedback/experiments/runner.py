"""Running the experiments: the options, the shared session (net, trackers, image list),
the per-image pass, and the output folder with its resumable per-image records.

Output folder layout (``out_dir``, a ``RunFolder``)::

    <stem>.csv, <stem>.png             the table and figure of each experiment
    salient/<image id>.png             salient's per-image figures (the first --figures)
    cache/<experiment>/                one RunFolder per experiment: settings.json (what its
        images/<image id>.json         records depend on) and one record per image

A rerun resumes: images with a record are not run again, and the tables are rebuilt from
the records of the images in the list. A rerun with other settings is refused, naming the
settings that differ; ``restart=True`` discards the records of the experiments being run.
"""
import collections
import contextlib
import dataclasses
import os
import typing

import numpy as np

from pixelfeedback import heatmap, reports
from pixelfeedback.messages import note
from pixelfeedback.data_lists import ALL_OR_NONE, check_pairs
from pixelfeedback.evaluation import read_or_skip
from pixelfeedback.nets.weights import parameters_digest
from pixelfeedback.experiments.measures import (DEFAULT_MASK_RADIUS, DEFAULT_MASK_THRESHOLD,
                                                FRACTIONS, MASK_MODES, check_fractions,
                                                check_mask_options, check_void,
                                                parse_fractions)
from pixelfeedback.experiments.records import synthetic_part_mask_fn
from pixelfeedback.experiments.specs import EXPERIMENTS, SPECS
from pixelfeedback.fixations import SHIFTS
from pixelfeedback.pipeline import (DEFAULT_K, DEFAULT_SHIFT, class_names_for, image_region,
                                    load_model, make_tracker, model_class_names,
                                    parse_class_names, prediction_from_scores, prepare_input,
                                    resolve_model, run_fixations, trace_inside)
from pixelfeedback.runfolder import RunFolder
from python_layers import ToolkitError, voc_io

DEFAULT_FIGURES = 10
RECORDS_VERSION = 2      # bump when what a record holds changes: old records are refused
OUTPUT_SETTINGS = {"contents": "pixelfeedback.experiments", "layout": 2}
EXPERIMENT_FOLDERS = "cache"
RECORDS = "images"
MASK_CHOICES = MASK_MODES + ("parts",)


@dataclasses.dataclass
class ExperimentOptions:
    """The options of a run, checked when made (errors name the command-line flag).

    num_classes: check the net has this many; class_names: the net's (default: the model's,
    a synthetic data set's, VOC's for 21, else class_<i>); size: the net input side (None:
    the deploy prototxt's; 0: each image's size); mean: BGR (None: the model's);
    score_blob: where the fixations start (None: the model's); k, shift, max_units: the
    back-tracker's; limit: the first N images of the list; gpu: the GPU id (None: CPU);
    void: fixations on void pixels are left out ('skip') or count outside; fractions:
    k-needed's x values; mask_mode, mask_threshold, mask_radius: salient's densest region;
    mask_fn(image, image_id, class_id, heat) -> (masked image, mask): replaces it (give it
    a ``settings_key`` attribute to tell two hooks apart in the settings); figures:
    salient's per-image figures for the first N images; skip_bad_images: leave out images
    (or labels) that cannot be read, e.g. truncated JPEGs, counting them in the results,
    instead of stopping with an error naming the file.
    """
    num_classes: typing.Optional[int] = None
    class_names: typing.Optional[typing.Sequence[str]] = None
    size: typing.Optional[int] = None
    mean: typing.Optional[typing.Sequence[float]] = None
    score_blob: typing.Optional[str] = None
    k: str = DEFAULT_K
    shift: str = DEFAULT_SHIFT
    max_units: typing.Optional[int] = None
    limit: typing.Optional[int] = None
    gpu: typing.Optional[int] = None
    void: str = "skip"
    fractions: typing.Sequence[float] = FRACTIONS
    mask_mode: str = "heat"
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    mask_radius: float = DEFAULT_MASK_RADIUS
    mask_fn: typing.Optional[typing.Callable] = None
    figures: int = DEFAULT_FIGURES
    skip_bad_images: bool = False

    def __post_init__(self):
        if self.shift not in SHIFTS:
            raise ToolkitError(f"--shift must be one of {', '.join(SHIFTS)}, got {self.shift!r}")
        check_void(self.void)
        check_mask_options(self.mask_mode, self.mask_threshold, self.mask_radius)
        self.fractions = check_fractions(self.fractions)
        if self.limit is not None and self.limit < 1:
            raise ToolkitError(f"--limit must be at least 1, got {self.limit}")
        if self.figures < 0:
            raise ToolkitError(f"--figures must be >= 0, got {self.figures}")
        if self.size is not None and self.size < 0:
            raise ToolkitError(f"--size must be positive (0: the net takes each image's "
                               f"size), got {self.size}")
        if self.max_units is not None and self.max_units < 1:
            raise ToolkitError(f"--max-units must be at least 1, got {self.max_units}")

    def mask_name(self):
        """What hides the salient region: the mask mode, or the hook's settings key."""
        if self.mask_fn is None:
            return self.mask_mode
        hook = self.mask_fn
        return "mask_fn:" + getattr(hook, "settings_key",
                                    getattr(hook, "__qualname__", type(hook).__name__))


def image_id_of(path):
    """The id of an image: its file name without the extension."""
    return os.path.splitext(os.path.basename(path))[0]


class Session:
    """What every experiment of one call shares: the model and its net, the trackers per
    shift, the image list, the class names and the options."""

    def __init__(self, model, weights, data_root, list_file, options):
        self.options = options
        self.data_root = data_root
        self.pairs = voc_io.read_list(list_file, root=data_root)[:options.limit]
        self.model = resolve_model(model, weights, options.score_blob, options.mean)
        self.net = load_model(self.model, options.gpu)
        score_blob = self.model.score_blob
        score_shape = self.net.blobs[score_blob].data.shape
        if len(score_shape) != 4:
            raise ToolkitError(f"score blob {score_blob!r} has shape {score_shape}: the "
                               "experiments need a segmentation net (C x h x w scores)")
        self.num_classes = score_shape[1]
        if options.num_classes is not None and options.num_classes != self.num_classes:
            raise ToolkitError(f"--num-classes is {options.num_classes} but blob "
                               f"{score_blob!r} has {self.num_classes} channels; set "
                               "--num-classes to match the net")
        names = (options.class_names or self.model.class_names
                 or model_class_names(self.model.weights, data_root, self.num_classes))
        self.names = class_names_for(self.num_classes, names)
        self.size = (self.net.blobs["data"].data.shape[2] if options.size is None
                     else int(options.size))
        if not check_pairs(self.pairs, list_file, "--list", labels=ALL_OR_NONE,
                           max_size=self.size or None,
                           skip_bad_images=options.skip_bad_images,
                           skip_flag="--skip-bad-images", num_classes=self.num_classes):
            raise ToolkitError(f"the list {list_file} has no labels: the experiments compare "
                               "fixations with the ground truth ('image label' lines)")
        self._trackers = {}
        self._digest = parameters_digest(self.net)
        self.layer_order = [layer.name for layer in self.tracker(options.shift).graph.layers]

    def tracker(self, shift):
        """The back-tracker of the net under ``shift`` (made once)."""
        if shift not in self._trackers:
            self._trackers[shift] = make_tracker(self.net, self.model.prototxt, shift,
                                                 self.options.k, self.options.max_units)
        return self._trackers[shift]

    def setting_values(self):
        """Every setting some experiment's records depend on, by the name specs use."""
        options = self.options
        hooked = options.mask_fn is not None
        return dict(
            shift=options.shift, void=options.void, fractions=list(options.fractions),
            heatmap=dict(sigma_fraction=heatmap.SIGMA_FRACTION,
                         radius_fraction=heatmap.RADIUS_FRACTION,
                         min_fraction=heatmap.MIN_FRACTION),
            mask=options.mask_name(), class_names=list(self.names),
            mask_threshold=(options.mask_threshold
                            if not hooked and options.mask_mode == "heat" else None),
            mask_radius=(options.mask_radius
                         if not hooked and options.mask_mode == "disc" else None))

    def settings(self, spec):
        """The settings of ``spec``'s records: the model, data and input, plus its own."""
        values = self.setting_values()
        settings = dict(
            records_version=RECORDS_VERSION, experiment=spec.name,
            prototxt=RunFolder.path(self.model.prototxt), parameters_sha256=self._digest,
            data_root=RunFolder.path(self.data_root), size=self.size,
            mean=[float(m) for m in self.model.mean], score_blob=self.model.score_blob,
            num_classes=self.num_classes, k=str(self.options.k))
        settings.update({key: values[key] for key in spec.settings})
        return settings


def load_pair(session, image_path, label_path):
    """(image, label) of one list line, checked (an unreadable file is an error naming it)."""
    from python_layers import seg_data   # a Caffe layer module: it imports caffe

    return seg_data.load_pair(image_path, label_path, session.num_classes)


class ForwardedImage:
    """One image of the list after one forward pass: the input, label, fixations of the
    session's shift, scores, prediction and the score units over the image."""

    def __init__(self, session, image_path, label_path, loaded=None):
        self.session = session
        self.id = image_id_of(image_path)
        model = session.model
        image, self.label = loaded or load_pair(session, image_path, label_path)
        self.data, self.image, _ = prepare_input(image, session.size, model.mean)
        self.results = run_fixations(session.net, session.tracker(session.options.shift),
                                     self.data, self.image, model.score_blob,
                                     names=session.names)
        score_data = session.net.blobs[model.score_blob].data
        self.scores = score_data[0].copy()
        self.region = image_region(score_data.shape, self.data.shape[1:], self.image.shape[:2])
        self.classes = [r.class_id for r in self.results]
        self.prediction, self.zoomed = prediction_from_scores(self.scores, self.data.shape[1:],
                                                              self.image.shape[:2])

    def points(self, shift):
        """{class: (points, counts)} of the detected classes under ``shift``, inside the
        image, duplicates merged (a trace of its own unless ``shift`` is the session's)."""
        session = self.session
        if shift == session.options.shift:
            return {r.class_id: (r.points, r.counts) for r in self.results}
        if not self.classes:
            return {}
        traced = trace_inside(session.tracker(shift), session.model.score_blob,
                              self.classes, self.region)
        return {c: _points_inside(traced[c], self.image.shape) for c in self.classes}


def _points_inside(class_fixations, image_shape):
    """(points, counts) of one traced class inside the image, duplicates merged."""
    points = np.asarray(class_fixations.points).reshape(-1, 2)
    counts = np.asarray(class_fixations.counts).reshape(-1)
    inside = heatmap.inside_image(points, image_shape)
    return heatmap.merge_points(points[inside], counts[inside])


def chosen_specs(experiments):
    """The specs of ``experiments`` (names, or 'all'), in the order they run: the table
    order, those that forward again last."""
    if isinstance(experiments, str):
        experiments = EXPERIMENTS if experiments == "all" else (experiments,)
    unknown = [e for e in experiments if e not in SPECS]
    if unknown or not experiments:
        raise ToolkitError(f"unknown experiment {unknown[0] if unknown else '(none)'!r}; "
                           f"use {', '.join(EXPERIMENTS)} or all")
    specs = [SPECS[name] for name in EXPERIMENTS if name in experiments]
    return sorted(specs, key=lambda spec: spec.reforwards)   # stable: table order otherwise


def _open_output(out_dir, restart):
    """The output folder; with ``restart`` a folder of another run is started afresh, but
    one of this kind is kept (each experiment restarts its own records)."""
    try:
        return RunFolder(out_dir, OUTPUT_SETTINGS, what="experiments output folder")
    except ToolkitError:
        if not restart:
            raise
        return RunFolder(out_dir, OUTPUT_SETTINGS, what="experiments output folder",
                         restart=True)


def _drop_stale_figures(out, spec, records):
    """Delete per-image figures that have no record (restarted or cut short): they are
    drawn again with the record."""
    for path in out.listing(spec.figures_dir, ".png"):
        if not records.has(image_id_of(path)):
            os.unlink(path)


def run_all(model, weights, data_root, list_file, out_dir, experiments=EXPERIMENTS, *,
            restart=False, progress=True, on_image=None, **options):
    """Run ``experiments`` in one pass over the list; returns {experiment: result dict}.

    Per image: one forward and one trace per shift variant needed, then (salient) one more
    forward per masked object; images with a record for every requested experiment are
    skipped. ``model``: a deploy prototxt or a registry name (pixelfeedback.nets.registry);
    ``weights``: its caffemodel (default for a registry name: weights/<file>). ``options``:
    the fields of ``ExperimentOptions``. ``restart``: discard the requested experiments'
    records (of any settings) and run every image again. ``on_image(index, image_id,
    cached)`` is called after each image (tests interrupt there).
    Each result: {experiment, csv, png, rows, images, images_run, images_cached} (+ mean_iou
    and pixel_accuracy over all classes for location; skipped, figures and figures_dir for
    salient).
    """
    specs = chosen_specs(experiments)
    options = ExperimentOptions(**options)
    session = Session(model, weights, data_root, list_file, options)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_open_output(out_dir, restart))
        stores = {}
        for spec in specs:
            folder = stack.enter_context(out.child(
                os.path.join(EXPERIMENT_FOLDERS, spec.name), session.settings(spec),
                what=f"{spec.name} experiment", restart=restart))
            stores[spec.name] = folder.records(RECORDS)
            if spec.figures_dir:
                _drop_stale_figures(out, spec, stores[spec.name])
        ran, skipped = _run_images(session, specs, out, stores, progress, on_image)
        return {spec.name: _finish(spec, session, out, stores[spec.name], ran[spec.name],
                                   skipped)
                for spec in specs}


def _readable(store, image_id):
    """Whether the image's record is in ``store`` and reads back. The records are this
    tool's own cache: one that does not read (cut short, edited) is built again, with a
    note, never an error."""
    if not store.has(image_id):
        return False
    try:
        store.read(image_id)
        return True
    except (OSError, ValueError):
        note(f"note: the cached record {store.path(image_id)} cannot be read; building it "
             "again")
        return False


def _run_images(session, specs, out, stores, progress, on_image):
    """Build the missing records image by image; returns ({experiment: images run},
    [paths of the images skipped as unreadable])."""
    from tqdm import tqdm

    ran = collections.Counter()
    skipped = []
    with tqdm(session.pairs, desc="experiments: " + ",".join(s.name for s in specs),
              unit="img", disable=not progress) as bar:
        for index, (image_path, label_path) in enumerate(bar):
            image_id = image_id_of(image_path)
            needed = [spec for spec in specs if not _readable(stores[spec.name], image_id)]
            if needed:
                loaded = read_or_skip(lambda: load_pair(session, image_path, label_path),
                                      image_path, skipped, session.options.skip_bad_images)
                if loaded is None:
                    continue
                image = ForwardedImage(session, image_path, label_path, loaded)
                for spec in needed:
                    figure_path = None
                    if spec.figures_dir and index < session.options.figures:
                        figure_path = out.file(spec.figures_dir, image_id + ".png")
                    stores[spec.name].write(image_id,
                                            spec.build_record(image, session, figure_path))
                    ran[spec.name] += 1
            if on_image is not None:
                on_image(index, image_id, not needed)
    return ran, skipped


def _finish(spec, session, out, records, images_run, skipped=()):
    """Rebuild the experiment's table and figure from the records of the list's images
    (but those ``skipped`` as unreadable)."""
    left_out = set(skipped)
    recs = [records.read(image_id_of(image_path)) for image_path, _ in session.pairs
            if image_path not in left_out]
    rows, extra = spec.table(recs, session)
    out.write_text(spec.stem + ".csv", reports.csv_text(rows, spec.columns(session)))
    png = out.file(spec.stem + ".png")
    spec.figure(png, rows, session)
    result = dict(experiment=spec.name, csv=out.file(spec.stem + ".csv"), png=png, rows=rows,
                  images=len(recs), images_run=images_run,
                  images_cached=len(recs) - images_run, images_skipped=len(left_out),
                  skipped_images=[path for path, _ in session.pairs if path in left_out],
                  **extra)
    if spec.figures_dir:
        result.update(figures_dir=out.file(spec.figures_dir),
                      figures=out.listing(spec.figures_dir, ".png"))
    return result


def fixation_location(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 1 (Figure 2.6); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("location",),
                   **options)["location"]


def shift_variants(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 2 (Figure 2.7); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("shift",), **options)["shift"]


def k_needed(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 3 (Figure 2.8); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("k-needed",),
                   **options)["k-needed"]


def salient_parts(model, weights, data_root, list_file, out_dir, **options):
    """Experiment 4 (Figures 2.9 to 2.11); options as ``run_all``. Returns its result dict."""
    return run_all(model, weights, data_root, list_file, out_dir, ("salient",),
                   **options)["salient"]


def summary_lines(result):
    """The lines printed for one result: files and images, then the experiment's own."""
    first = (f"{result['experiment']}: {result['images']} images ({result['images_run']} run, "
             f"{result['images_cached']} from the cache); table {result['csv']}; "
             f"figure {result['png']}")
    lines = [first] + list(SPECS[result["experiment"]].summary(result))
    if result.get("images_skipped"):
        lines.append(f"  {result['images_skipped']} image(s) skipped as unreadable "
                     f"(--skip-bad-images), first: {result['skipped_images'][0]}")
    return lines


def run_and_report(model, weights, data_root, list_file, out_dir, experiment="all", *,
                   mask="heat", class_names=None, fractions=FRACTIONS, **options):
    """The command line's call: run ``experiment`` (a name or 'all') and print the
    summary. ``mask``: 'heat', 'disc' or 'parts' (the true parts of a synthetic data set);
    ``class_names`` and ``fractions`` may be comma-separated text; the other options as
    ``run_all``. Returns the exit status 0."""
    if mask not in MASK_CHOICES:
        raise ToolkitError(f"--mask must be one of {', '.join(MASK_CHOICES)}, got {mask!r}")
    if mask == "parts":
        options["mask_fn"] = synthetic_part_mask_fn(data_root)
    if isinstance(class_names, str):
        class_names = parse_class_names(class_names)
    if isinstance(fractions, str):
        fractions = parse_fractions(fractions)
    results = run_all(model, weights, data_root, list_file, out_dir, experiment,
                      mask_mode="heat" if mask == "parts" else mask, class_names=class_names,
                      fractions=fractions, **options)
    for result in results.values():
        for line in summary_lines(result):
            print(line)
    return 0
