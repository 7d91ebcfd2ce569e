"""Table 3.1 written out: Markdown (with what each column means), CSV and the figure
(``figure.table_figure``), from the rows of ``summary.summarize``."""
import csv
import io
import os

from pixelfeedback import files, reports
from pixelfeedback.sweep.plan import BASELINE, CONTROL, CONTROL_STEP, LOSS_TITLES
from pixelfeedback.sweep.settings import recorded_value
from pixelfeedback.sweep.summary import loss_scale, summarize

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
             "| paired Δ ± CI | MDE | gain? | thesis |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        own = row["loss"] in (CONTROL, BASELINE)
        paired = "—" if own else "{} ± {}".format(reports.fmt(row["paired_diff"], signed=True),
                                                   reports.fmt(row["paired_ci"]))
        lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            LOSS_TITLES[row["loss"]],
            "—" if row["loss"] == BASELINE else "0" if row["loss"] in (CONTROL, CONTROL_STEP)
            else f"{row['lam']:g}", row["n"], reports.fmt(row["mean"]), reports.fmt(row["ci"]),
            "—" if own else reports.fmt(row["diff"], signed=True),
            "—" if own else reports.fmt(row["diff_ci"]),
            "—" if own else row["paired_n"], paired,
            "—" if own else reports.fmt(row["paired_mde"]),
            "—" if own else row["gain"], reports.fmt(row["thesis"])))
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
              "row, or the control's when no baseline was trained; the thesis had no control)."]
    return "\n".join(lines) + "\n"


def table_csv(rows, scale=None):
    """The table as CSV; ``scale`` (``loss_scale``) adds the template term's normalisation
    and label pixels per batch to every row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["loss", "lambda", "seeds", "mean_iou", "ci95", "diff_vs_control",
                     "diff_ci95", "paired_seeds", "paired_diff", "paired_ci95", "paired_mde80",
                     "gain", "thesis", "normalize", "label_pixels_per_batch"])
    normalize = "/".join(scale["normalize"]) if scale else ""
    pixels = "/".join(map(str, scale["pixels"])) if scale else ""
    for row in rows:
        writer.writerow([row["loss"], row["lam"], row["n"], row["mean"], row["ci"], row["diff"],
                         row["diff_ci"], row["paired_n"], row["paired_diff"], row["paired_ci"],
                         row["paired_mde"], row["gain"],
                         "" if row["thesis"] is None else row["thesis"], normalize, pixels])
    return out.getvalue()


TABLE_FILES = ("table31.md", "table31.csv", "table31.png")


def write_table(cfg, results, title="Table 3.1"):
    """table31.md, table31.csv and the figure table31.png in ``cfg.out``, from every
    finished run in ``results`` (whatever cells ``cfg`` names). Returns (rows, markdown)."""
    from pixelfeedback.sweep.figure import table_figure

    rows = summarize(results)
    scale = loss_scale(results, cfg.batch_size, cfg.crop)
    seen_val = any(recorded_value(record, "val_trained_init") for record in results)
    markdown = table_markdown(rows, title, scale, seen_val)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[0]), markdown)
    files.write_text(os.path.join(cfg.out, TABLE_FILES[1]), table_csv(rows, scale))
    subtitle = None
    if scale:
        subtitle = "normalize " + "/".join(scale["normalize"]) + "".join(
            f", ≤ {p:,} label pixels per batch" for p in scale["pixels"][:1])
    if seen_val:
        subtitle = (subtitle + "; " if subtitle else "") + SEEN_VAL
    table_figure(os.path.join(cfg.out, TABLE_FILES[2]), rows,
                 title=title + ": paired Δ mIoU vs the poly control", subtitle=subtitle)
    return rows, markdown
