"""Per-image records of the experiments: what one forwarded image contributes to a table,
as a JSON-able dict (NaN is stored as null), so that a run resumes from them.

Every builder is ``build(image, session, figure_path) -> dict`` with ``image`` a
``runner.ForwardedImage``, ``session`` the ``runner.Session`` (net, trackers, names,
options) and ``figure_path`` where to draw the image's figure (None: no figure).
"""
import os

import numpy as np

from pixelfeedback import metrics, part_masking
from pixelfeedback.experiments import figures
from pixelfeedback.experiments.measures import (activation_change, class_accuracy,
                                                densest_region, masked_input, percent_inside)
from pixelfeedback.fixations import SHIFTS, k_needed_per_layer, run_forward
from pixelfeedback.pipeline import prediction_from_scores, prepare_input
from python_layers import ToolkitError


def _location_entries(image, points_by_class, void):
    """{class id: % inside and its weights} of one image's traced classes."""
    entries = {}
    for class_id, (points, counts) in points_by_class.items():
        pct, inside, total = percent_inside(points, counts, image.label, class_id, void)
        entries[str(class_id)] = dict(pct_inside=pct, weight_inside=inside,
                                      weight_counted=total, points=len(points))
    return entries


def location_record(image, session, figure_path=None):
    """Experiment 1: % inside per detected class, and the image's confusion matrix."""
    options = session.options
    return dict(image=image.id,
                classes=_location_entries(image, image.points(options.shift), options.void),
                confusion=metrics.confusion_matrix(image.prediction, image.label,
                                                   session.num_classes))


def shift_record(image, session, figure_path=None):
    """Experiment 2: % inside per detected class under every shift variant."""
    return dict(image=image.id, variants={
        variant: _location_entries(image, image.points(variant), session.options.void)
        for variant in SHIFTS})


def k_needed_record(image, session, figure_path=None):
    """Experiment 3: per layer, the units walked and the sum of their K per fraction (sums,
    not means, so that the table can average over all units of all images)."""
    if not image.classes:
        return dict(image=image.id, layers=[])
    options = session.options
    means, counts = k_needed_per_layer(
        session.tracker(options.shift), session.model.score_blob, items=(0,),
        classes=image.classes, skip_background=False, fractions=np.asarray(options.fractions),
        return_counts=True, seed_region=image.region)
    return dict(image=image.id, layers=[[name, int(counts[name]),
                                         (np.asarray(means[name]) * counts[name]).tolist()]
                                        for name in means])


def _hidden_by_hook(session, image, class_id, heat):
    """(masked image, mask, net input) from the session's ``mask_fn``, shapes checked."""
    height, width = image.image.shape[:2]
    masked_image, mask = session.options.mask_fn(image.image, image.id, class_id, heat)
    masked_image, mask = np.asarray(masked_image), np.asarray(mask, bool)
    if masked_image.shape != image.image.shape or mask.shape != (height, width):
        raise ToolkitError(
            f"mask_fn returned an image of shape {masked_image.shape} and a mask of shape "
            f"{mask.shape} for image {image.id}; expected {image.image.shape} and "
            f"{(height, width)}")
    data, _, _ = prepare_input(masked_image, session.size, session.model.mean)
    return masked_image, mask, data


def salient_record(image, session, figure_path=None):
    """Experiment 4: mask each detected class present in the ground truth, forward again,
    compare the class's scores over the object's pixels outside the mask.

    The net's blobs then hold the last masked input: run it after the other experiments.
    """
    options = session.options
    score_blob = session.model.score_blob
    rows, panels, skipped = [], [], []
    height, width = image.image.shape[:2]
    for result in image.results:
        class_id = result.class_id
        in_truth = image.label == class_id
        if not in_truth.any():
            continue   # a false detection: no object to mask
        if options.mask_fn is not None:
            masked_image, mask, data = _hidden_by_hook(session, image, class_id,
                                                       result.heat.heat)
        else:
            if result.heat.peak is None:
                skipped.append(session.names[class_id])
                continue   # every point an outlier: no densest region
            mask = densest_region(result.heat.heat, options.mask_mode, options.mask_threshold,
                                  options.mask_radius)
            masked_image, data = masked_input(image.image, mask, session.size,
                                              session.model.mean)
        run_forward(session.net, data[None], "data")
        prediction, zoomed = prediction_from_scores(session.net.blobs[score_blob].data[0],
                                                    data.shape[1:], (height, width))
        region = in_truth & ~mask
        row = {"image": image.id, "class": session.names[class_id]}
        row.update(activation_change(image.zoomed[class_id], zoomed[class_id], region))
        row.update(acc_before=class_accuracy(image.prediction, region, class_id),
                   acc_after=class_accuracy(prediction, region, class_id),
                   object_pixels=int(region.sum()), mask_pixels=int(mask.sum()))
        rows.append(row)
        if figure_path is not None:
            panels.append(figures.SalientPanel(
                session.names[class_id], in_truth, masked_image, mask, image.prediction,
                prediction, image.zoomed[class_id], zoomed[class_id]))
    if panels:
        figures.salient_image_figure(figure_path, image.image, panels)
    return dict(image=image.id, rows=rows, skipped=skipped)


def synthetic_part_mask_fn(data_root, fill="body", grow=1):
    """A ``mask_fn`` for a tools/synthetic.py data set: hide the true discriminative part of
    every object of the class (``part_masking.mask_part``); the mask is the painted region.
    Its ``settings_key`` tells it apart from other hooks in the run's settings."""
    import cv2

    if not os.path.isdir(os.path.join(data_root, "Objects")):
        raise ToolkitError(f"{data_root} has no Objects/ annotations: masking the true parts "
                           "needs a data set made by tools/synthetic.py (use --mask heat or "
                           "disc for other data)")

    def mask_fn(image, image_id, class_id, heat):
        annotation = part_masking.load_annotation(data_root, image_id)
        masked, mask = np.asarray(image), np.zeros(np.shape(image)[:2], bool)
        for index, obj in enumerate(annotation["objects"]):
            if obj["class_id"] != class_id or not obj["part_mask"].any():
                continue
            masked = part_masking.mask_part(masked, annotation, index, fill=fill, grow=grow)
            part = obj["part_mask"].astype(np.uint8)
            if grow > 0:
                part = cv2.dilate(part, np.ones((2 * grow + 1,) * 2, np.uint8))
            mask |= part.astype(bool) & obj["body_mask"]
        return masked, mask

    mask_fn.settings_key = f"synthetic_parts(fill={fill!r}, grow={grow})"
    return mask_fn

