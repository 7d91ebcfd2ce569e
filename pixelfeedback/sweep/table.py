"""Table 3.1 written out: Markdown (with what each column means), CSV and the figure
(``figure.table_figure``), from the rows of ``summary.summarize``."""
import csv
import io
import os

from pixelfeedback import files, reports
from pixelfeedback.sweep.plan import BASELINE, CONTROL, CONTROL_STEP, LOSS_TITLES
from pixelfeedback.sweep.settings import recorded_value
from pixelfeedback.sweep.summary import MEASURE_TITLES, MEASURES, loss_scale, summarize

NORMALIZE_TITLES = {
    "none": "normalize none: Algorithm 3 literally, the sum over the batch's pixels divided by "
            "the classes",
    "valid": "normalize valid: also divided by the valid pixels, so the same λ is up to "
             "(pixels per batch) times weaker than Algorithm 3's",
}


SEEN_VAL = ("fine-tuned from weights that have seen VOC 2012 val (--val-trained-init): "
            "not a fair val measurement")


def table_markdown(rows, title="Table 3.1", scale=None, seen_val=False):
    """The table as Markdown: our mean +- CI, the difference to the control (Welch and
    paired), the minimum detectable effect, whether the cell is a gain, the thesis.
    ``scale`` (``loss_scale``) goes into the title and a line under it; ``seen_val`` (the
    initial weights have seen val) into the title."""
    heading = title + (f" — {SEEN_VAL}" if seen_val else "")
    if scale:
        heading += " (normalize " + "/".join(scale["normalize"]) + "".join(
            ", ≤ " + " or ".join(f"{p:,}" for p in scale["pixels"]) + " label pixels per batch"
            for _ in scale["pixels"][:1]) + ")"
    lines = [f"### {heading}: val mean IoU, mean ± 95 % CI over seeds", ""]
    if scale:
        lines += ["Template loss: " + "; ".join(NORMALIZE_TITLES.get(n, f"normalize {n}")
                                                for n in scale["normalize"]) + ".", ""]
    lines += [
             "| loss | λ | seeds | mean IoU | ± CI | Δ vs control | ± Welch CI | pairs "
             "| paired Δ ± CI | MDE | gain? | thesis | λ at VOC |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        own = row["loss"] in (CONTROL, BASELINE)
        paired = "—" if own else "{} ± {}".format(reports.fmt(row["paired_diff"], signed=True),
                                                   reports.fmt(row["paired_ci"]))
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            LOSS_TITLES[row["loss"]],
            "—" if row["loss"] == BASELINE else "0" if row["loss"] in (CONTROL, CONTROL_STEP)
            else f"{row['lam']:g}",
            f"{row['n']}" + (f" ({row['diverged']} diverged)" if row.get("diverged") else ""),
            reports.fmt(row["mean"]), reports.fmt(row["ci"]),
            "—" if own else reports.fmt(row["diff"], signed=True),
            "—" if own else reports.fmt(row["diff_ci"]),
            "—" if own else row["paired_n"], paired,
            "—" if own else reports.fmt(row["paired_mde"]),
            "—" if own else row["gain"], reports.fmt(row["thesis"]),
            "—" if row.get("lam_voc") is None else f"{row['lam_voc']:.2g}"))
    lines += ["", "A loss run and the control run of the same seed start from the same weights "
              "and see the same data order, so the comparison is paired: paired Δ is the mean "
              "of (loss − control) over the seeds both have (pairs), ± its 95 % Student-t "
              "interval t(0.975, n−1)·sd/√n. A cell is a gain (gain? yes) only where that "
              "interval lies above zero (worse: below zero; n/a: fewer than two pairs). MDE is "
              "the smallest true difference this many pairs would detect with 80 % power, "
              "(t(0.975, n−1) + t(0.80, n−1))·sd/√n: a smaller effect can hide in a \"no\". "
              "The Welch CI beside Δ ignores the pairing (wider when seeds matter). On the "
              "step-schedule control's row (the baseline's step schedule continued, λ = 0), "
              "−Δ is what the switch to the poly schedule alone does. The "
              "thesis's column is its single run (its baseline, 0.6225, sits on the baseline's "
              "row, or the control's when no baseline was trained; the thesis had no control). "
              "λ at VOC is the λ that weighs the template term as strongly on VOC at the "
              "thesis's scale (Algorithm 3's sum, batch 10 at crop 321: 16,810 label pixels "
              "per batch): compare a cell with the thesis's column at that λ, not at its own. "
              "A diverged run (its loss went non-finite) is scored by its last finite weights."]
    lines += mechanisms_markdown(rows)
    return "\n".join(lines) + "\n"


def mechanisms_markdown(rows):
    """The table's second part (issue 27): per cell, the measures of the thesis's two
    mechanisms (``summary.MEASURES``) with their paired difference to the poly control;
    no lines when no row has any."""
    names = [name for name in MEASURES if any(name in row["measures"] for row in rows)]
    if not names:
        return []
    lines = ["", "#### The two mechanisms: correlated classes told apart, activation flowing "
             "from the part", "",
             "| loss | λ | " + " | ".join(f"{MEASURE_TITLES[n]} | paired Δ ± CI" for n in names)
             + " |", "|---|---|" + "---|---|" * len(names)]
    for row in rows:
        cells = []
        for name in names:
            m = row["measures"].get(name)
            cells += ["—", "—"] if m is None else [
                f"{reports.fmt(m['mean'])} ± {reports.fmt(m['ci'])}",
                "—" if "paired_diff" not in m else
                f"{reports.fmt(m['paired_diff'], signed=True)} ± {reports.fmt(m['paired_ci'])}"]
        lam = "—" if row["loss"] == BASELINE else f"{row['lam']:g}"
        lines.append(f"| {LOSS_TITLES[row['loss']]} | {lam} | " + " | ".join(cells) + " |")
    lines += ["", "A pair's share: its two classes' pixels predicted as the other one "
              "(lower: the pair told apart better; the thesis expects the losses to lower it). "
              "Flow: experiment 4's drop of the class's activation on the rest of the body "
              "when the discriminative part is painted over (lower: the activation spreads "
              "beyond the part, what the thesis expects). Paired as the mIoU is."]
    return lines


MEASURE_COLUMNS = ("", "_ci95", "_paired_diff", "_paired_ci95")
MEASURE_FIELDS = ("mean", "ci", "paired_diff", "paired_ci")


def table_csv(rows, scale=None, seen_val=False):
    """The table as CSV; ``scale`` (``loss_scale``) adds the template term's normalisation
    and label pixels per batch to every row, then come lambda at VOC's strength, the
    diverged runs, whether the initial weights have seen val, and each measure of the two
    mechanisms (mean, CI, paired difference to the control and its CI)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["loss", "lambda", "seeds", "mean_iou", "ci95", "diff_vs_control",
                     "diff_ci95", "paired_seeds", "paired_diff", "paired_ci95", "paired_mde80",
                     "gain", "thesis", "normalize", "label_pixels_per_batch", "lambda_voc",
                     "diverged", "init_seen_val"]
                    + [name + column for name in MEASURES for column in MEASURE_COLUMNS])
    normalize = "/".join(scale["normalize"]) if scale else ""
    pixels = "/".join(map(str, scale["pixels"])) if scale else ""
    for row in rows:
        measures = row.get("measures", {})
        writer.writerow([row["loss"], row["lam"], row["n"], row["mean"], row["ci"], row["diff"],
                         row["diff_ci"], row["paired_n"], row["paired_diff"], row["paired_ci"],
                         row["paired_mde"], row["gain"],
                         "" if row["thesis"] is None else row["thesis"], normalize, pixels,
                         "" if row.get("lam_voc") is None else row["lam_voc"],
                         row.get("diverged", 0), seen_val]
                        + [measures.get(name, {}).get(field, "") for name in MEASURES
                           for field in MEASURE_FIELDS])
    return out.getvalue()


TABLE_FILES = ("table31.md", "table31.csv", "table31.png", "table31_mechanisms.png")


def write_table(cfg, results, title="Table 3.1"):
    """table31.md, table31.csv, the figure table31.png and (when the records hold the
    correlated pairs or the flow) table31_mechanisms.png in ``cfg.out``, from every
    finished run in ``results`` (whatever cells ``cfg`` names). Returns (rows, markdown)."""
    from pixelfeedback.sweep.figure import mechanisms_figure, table_figure

    rows = summarize(results)
    scale = loss_scale(results, cfg.batch_size, cfg.crop)
    seen_val = any(recorded_value(record, "val_trained_init") for record in results)
    markdown = table_markdown(rows, title, scale, seen_val)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[0]), markdown)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[1]), table_csv(rows, scale, seen_val))
    subtitle = None
    if scale:
        subtitle = "normalize " + "/".join(scale["normalize"]) + "".join(
            f", ≤ {p:,} label pixels per batch" for p in scale["pixels"][:1])
    if seen_val:
        subtitle = (subtitle + "; " if subtitle else "") + SEEN_VAL
    drawn = [table_figure(os.path.join(cfg.out, TABLE_FILES[2]), rows,
                          title=title + ": paired Δ mIoU vs the poly control",
                          subtitle=subtitle),
             mechanisms_figure(os.path.join(cfg.out, TABLE_FILES[3]), rows, title=title)]
    for name, path in zip(TABLE_FILES[2:], drawn):  # an earlier table's figure is not this one's
        if path is None and os.path.exists(os.path.join(cfg.out, name)):
            os.remove(os.path.join(cfg.out, name))
    return rows, markdown
