"""The four experiments of thesis chapter 2 (sections 2.3 and 2.4, Figures 2.6 to 2.11).

1. location (Figure 2.6): per image and per class detected at the score blob (background
   skipped), the % of the class's image-plane fixation points (weighted by the data channels
   fixated there, inside the image) that lie on the class's ground-truth mask; averaged per
   class over the images, beside the class IoU over the same images (one confusion matrix
   from the same forward passes: scores zoomed bilinearly to the input as DeepLab's x8
   Interp, cropped to the image, argmax). Points on void (255) pixels are left out of both
   counts (``void="skip"``) or count as outside (``void="outside"``).
   -> location.csv (class, images, mean_pct_inside, iou; a last 'mean' row averages the
   object-class rows above it) and location.png.
2. shift (Figure 2.7): experiment 1's % inside under the no / partial / full shift variants.
   -> shift.csv (class, images, none, partial, full; + 'mean' row) and shift.png.
3. k-needed (Figure 2.8): at every fixation unit of every layer with a choice, the K that
   captures x of its positive contribution (x = 0.1 ... 0.9), averaged over all units of all
   classes of all images. -> k_needed.csv (layer, units, k_at_10 ... k_at_90, input side
   first) and k_needed.png (curves and a layer x x heat map).
4. salient (Figures 2.9 to 2.11): per image and detected class present in the ground truth,
   mask the densest fixation region (the connected part of heat >= mask_threshold around
   the heat map's peak, or a disc of mask_radius x the image diagonal around it) with the
   mean colour (exactly 0 after mean subtraction), or what a ``mask_fn`` hides (e.g. the
   synthetic data set's true part), segment again, and compare the class's score map
   (zoomed to the image) over the object's ground-truth pixels outside the mask.
   -> salient.csv (image, class, mean_before, mean_after, drop, drop_pct, acc_before,
   acc_after, object_pixels, mask_pixels), salient.png (per-class means) and
   salient/<image>.png for the first ``figures`` images: original | masked | prediction
   before | after | activation before | after | difference (before - after).

``run_all`` runs any of them in one pass: one forward per image, one trace per shift
variant, and one more forward per masked object; per-image records make a rerun resume
(``runner`` says how the output folder is laid out).

Rooms: ``measures`` (pure functions of arrays), ``tables`` (rows from the records),
``figures``, ``records`` (what one image contributes), ``specs`` (one ``Experiment`` spec
per experiment: adding one touches that file), ``runner`` (options, session, the pass).
"""
from pixelfeedback.experiments.figures import (SalientPanel, k_needed_figure, location_figure,
                                               salient_image_figure, salient_summary_figure,
                                               shift_figure)
from pixelfeedback.experiments.measures import (DEFAULT_MASK_RADIUS, DEFAULT_MASK_THRESHOLD,
                                                FRACTIONS, MASK_MODES, VOID_RULES,
                                                activation_change, check_fractions,
                                                check_mask_options, class_accuracy,
                                                densest_region, mask_with_mean, masked_input,
                                                nan_mean, parse_fractions, percent_inside)
from pixelfeedback.experiments.records import synthetic_part_mask_fn
from pixelfeedback.experiments.runner import (DEFAULT_FIGURES, MASK_CHOICES, ExperimentOptions,
                                              fixation_location, k_needed, run_all,
                                              run_and_report, salient_parts, shift_variants,
                                              summary_lines)
from pixelfeedback.experiments.specs import EXPERIMENTS, SPECS, Experiment
from pixelfeedback.experiments.tables import (LOCATION_COLUMNS, SALIENT_COLUMNS, SHIFT_COLUMNS,
                                              fraction_column, k_needed_columns,
                                              k_needed_table, location_table, salient_table,
                                              shift_table)

__all__ = [
    "DEFAULT_FIGURES", "DEFAULT_MASK_RADIUS", "DEFAULT_MASK_THRESHOLD", "EXPERIMENTS",
    "Experiment", "ExperimentOptions", "FRACTIONS", "LOCATION_COLUMNS", "MASK_CHOICES",
    "MASK_MODES", "SALIENT_COLUMNS", "SHIFT_COLUMNS", "SPECS", "SalientPanel", "VOID_RULES",
    "activation_change", "check_fractions", "check_mask_options", "class_accuracy",
    "densest_region", "fixation_location", "fraction_column", "k_needed", "k_needed_columns",
    "k_needed_figure", "k_needed_table", "location_figure", "location_table",
    "mask_with_mean", "masked_input", "nan_mean", "parse_fractions", "percent_inside",
    "run_all", "run_and_report", "salient_image_figure",
    "salient_parts", "salient_summary_figure", "salient_table", "shift_figure",
    "shift_table", "shift_variants", "summary_lines", "synthetic_part_mask_fn",
]
