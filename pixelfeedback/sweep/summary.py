"""The rows of Table 3.1 from the result records: per cell (loss, lambda) the mean and its
95 % interval over seeds, the difference to the poly control with Welch's interval, and the
paired difference over the seeds both have (the runs of a seed share initial weights and
data order) with its interval, minimum detectable effect and verdict."""
import collections

import numpy as np

from pixelfeedback import metrics, thesis
from pixelfeedback.nets import largefov
from pixelfeedback.sweep.plan import BASELINE, CONTROL, CONTROL_STEP
from pixelfeedback.sweep.settings import recorded_value
from python_layers.template_similarity import ALL_LOSS_NAMES

NO_PAIRS = dict(paired_n=0, paired_diff=float("nan"), paired_ci=float("nan"),
                paired_mde=float("nan"), gain="n/a")


def paired_fields(values, control):
    """The paired comparison of one cell with the control over the seeds both have
    ({seed: mean IoU} each): metrics.paired_difference of loss - control, and its verdict."""
    seeds = sorted(set(values) & set(control))
    if not seeds:
        return dict(NO_PAIRS)
    paired = metrics.paired_difference([values[s] for s in seeds], [control[s] for s in seeds])
    return dict(paired_n=paired.n, paired_diff=paired.mean, paired_ci=paired.half_width,
                paired_mde=paired.mde, gain=metrics.paired_verdict(paired))


def table_cells(results):
    """(losses, lambdas) of the loss runs among ``results``: the losses in Table 3.1's
    order, the lambdas ascending. A table built from a folder shows every finished cell,
    whatever the command line that rebuilds it names."""
    present = {(r["loss"], r["lambda"]) for r in results if r["loss"] in ALL_LOSS_NAMES}
    return (tuple(loss for loss in ALL_LOSS_NAMES if any(cell[0] == loss for cell in present)),
            tuple(sorted({lam for _, lam in present})))


# What else the table measures per run besides mIoU (issue 27): the thesis's two mechanisms.
# The share of each correlated pair's pixels predicted as its partner (lower: told apart
# better), and experiment 4's flow (the drop of the class's activation on the rest of the
# body when the part is masked: lower means activation spread beyond the part).
MEASURES = {**{f"pair_{a}_{b}": (lambda r, key=f"{a}/{b}": (r.get("pair_confusion") or {})
                                  .get(key)) for a, b in thesis.CORRELATED_PAIRS},
            "flow_drop_pct": lambda r: (r.get("flow") or {}).get("drop_pct")}
MEASURE_TITLES = {**{f"pair_{a}_{b}": f"{a}/{b} confused" for a, b in thesis.CORRELATED_PAIRS},
                  "flow_drop_pct": "flow: drop % with the part masked"}


def summarize(results, losses=None, lambdas=None):
    """Rows of the table: one per loss and lambda (and the controls), with statistics: the
    mean and its CI over seeds; the difference to the control with Welch's (unpaired)
    interval; the paired difference (same seeds) with its interval, minimum detectable
    effect at 80 % power and verdict ``gain`` ("yes" only where the paired interval lies
    above zero, "worse" below it, "no", or "n/a" with fewer than two pairs). Each row also
    holds ``lam_voc`` (lambda at VOC's strength), ``diverged`` (runs that went
    non-finite, scored by their last finite weights) and ``measures``: the same statistics
    of every ``MEASURES`` entry the records hold. ``losses`` and ``lambdas`` default to
    every cell the results hold (``table_cells``)."""
    cells = table_cells(results)
    losses = cells[0] if losses is None else losses
    lambdas = cells[1] if lambdas is None else lambdas
    records = collections.defaultdict(dict)
    for record in results:
        records[(record["loss"], record["lambda"])][record["seed"]] = record
    by_cell = {cell: {seed: r["mean_iou"] for seed, r in runs.items()}
               for cell, runs in records.items()}
    control = by_cell.get((CONTROL, 0.0), {})
    rows = []
    baseline = list(by_cell.get((BASELINE, 0.0), {}).values())
    own = dict(NO_PAIRS, gain="")
    if baseline:
        rows.append(dict(loss=BASELINE, lam=0.0, n=len(baseline), mean=float(np.mean(baseline)),
                         ci=float("nan"), diff=float("nan"), diff_ci=float("nan"), **own,
                         thesis=thesis.BASELINE))
    if control:
        ci = metrics.mean_ci(list(control.values()))
        rows.append(dict(loss=CONTROL, lam=0.0, n=ci.n, mean=ci.mean, ci=ci.half_width,
                         diff=0.0, diff_ci=float("nan"), **own,
                         thesis=None if baseline else thesis.BASELINE))
    step = by_cell.get((CONTROL_STEP, 0.0))
    if step:  # its paired difference to the poly control: minus what the switch does
        rows.append(_cell_row(CONTROL_STEP, 0.0, step, control, thesis=None))
    for loss in losses:
        for lam in lambdas:
            cell = by_cell.get((loss, lam))
            if cell:
                rows.append(_cell_row(loss, lam, cell, control, thesis.thesis_value(loss, lam)))
    control_records = records.get((CONTROL, 0.0), {})
    for row in rows:
        cell = records[(row["loss"], row["lam"])]
        row.update(lam_voc=_voc_lambda(row, cell), diverged=sum(
            bool(r.get("diverged")) for r in cell.values()),
            measures=_measures(cell, control_records, own=row["loss"] in (CONTROL, BASELINE)))
    return rows


def _cell_row(loss, lam, cell, control, thesis):
    """One row compared with the control: {seed: mean IoU} each."""
    values = list(cell.values())
    ci = metrics.mean_ci(values)
    diff, diff_half = (metrics.welch_ci(values, list(control.values())) if control
                       else (float("nan"),) * 2)
    return dict(loss=loss, lam=lam, n=ci.n, mean=ci.mean, ci=ci.half_width, diff=diff,
                diff_ci=diff_half, **paired_fields(cell, control), thesis=thesis)


def _voc_lambda(row, cell):
    """The row's lambda at VOC's strength (``largefov.voc_equivalent_lambda``), from the
    scale its runs recorded; None without a template loss or a recorded pixel count."""
    record = next(iter(cell.values()))
    pixels = record.get("label_pixels_per_batch")
    if row["loss"] not in ALL_LOSS_NAMES or not pixels:
        return None
    return largefov.voc_equivalent_lambda(row["lam"], recorded_value(record, "normalize"),
                                          pixels)


def _measures(cell, control, own):
    """{measure: its mean and CI over seeds, and (unless ``own``) its paired difference to
    the control} for each MEASURES entry the cell's records ({seed: record}) hold."""
    found = {}
    for name, read in MEASURES.items():
        values = {seed: read(r) for seed, r in cell.items() if read(r) is not None}
        if not values:
            continue
        ci = metrics.mean_ci(list(values.values()))
        fields = dict(mean=ci.mean, ci=ci.half_width)
        if not own:
            theirs = {seed: read(r) for seed, r in control.items() if read(r) is not None}
            fields.update(paired_fields(values, theirs))
        found[name] = fields
    return found


def target_met(row, half_width, effect):
    """Whether a table row's paired comparison is precise enough: its 95 % interval is at
    most +-``half_width``, or its effect is beyond +-``effect`` with an interval that
    excludes zero (mIoU, not points)."""
    ci, diff = row["paired_ci"], row["paired_diff"]
    if not (np.isfinite(ci) and np.isfinite(diff)):
        return False
    return ci <= half_width or (abs(diff) > effect and abs(diff) > ci)


def loss_scale(results, batch_size=None, crop=None):
    """The template term's scale the loss runs among ``results`` were trained at:
    {"normalize": [names], "pixels": [label pixels per batch]} (on ``none`` lambda's
    weight grows with the pixels), or None without loss runs. ``batch_size`` and ``crop``
    stand in for records that lack the pixel count."""
    loss_runs = [r for r in results if r["loss"] in ALL_LOSS_NAMES]
    if not loss_runs:
        return None
    pixels = sorted({r["label_pixels_per_batch"] for r in loss_runs
                     if r.get("label_pixels_per_batch")})
    if not pixels and batch_size and crop:
        pixels = [largefov.label_positions_per_batch(batch_size, crop)]
    return {"normalize": sorted({recorded_value(r, "normalize") for r in loss_runs}),
            "pixels": pixels}
