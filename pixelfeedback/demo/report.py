"""The demo's report: runs/demo/report.md, every step's result beside its figures, and the
findings of its Table 3.1 in small stated as measured."""
import collections
import os

from pixelfeedback import files, reports
from pixelfeedback.sweep.plan import CONTROL_STEP, LOSS_TITLES
from pixelfeedback.sweep.summary import MEASURE_TITLES, target_met
from python_layers.template_similarity import ALL_LOSS_NAMES
from pixelfeedback.demo.model import EFFECT_TARGET, POWER_TARGET, RECIPE
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.synthetic import DIFFICULTIES

# The powered table as measured on the earlier scale (normalize valid), shown beside
# today's so that the two scales stand side by side.
VALID_TABLE = os.path.join(REPO_ROOT, "docs", "table31-small-valid.md")

VERDICTS = {"yes": "gain", "worse": "harm", "no": "no detectable change", "n/a": "undecided"}


def points(value, signed=True):
    """A mean IoU difference in points (0.01234 -> '+1.234')."""
    return reports.fmt(None if value is None else 100 * value, 3, signed)


def _difference(diff, half_width, mde, verdict):
    return (f"{points(diff)} ± {points(half_width, False)} points, MDE "
            f"{points(mde, False)} ({VERDICTS[verdict]})")


def table_findings(rows, target=POWER_TARGET, effect=EFFECT_TARGET):
    """What the table (``sweep.summary.summarize``'s rows) shows, as sentences: the schedule switch
    alone (poly control - step control: minus the step control's paired difference), each
    loss cell against the poly control (gain, harm or no detectable change by its paired
    95 % interval), and how many cells met the power target (paired interval within
    +-``target``, or an effect beyond +-``effect`` whose interval excludes zero)."""
    lines = []
    for row in rows:
        if row["loss"] == CONTROL_STEP and row["paired_n"]:
            verdict = {"yes": "worse", "worse": "yes"}.get(row["gain"], row["gain"])
            lines.append(f"Schedule switch alone (poly control - step control, "
                         f"{row['paired_n']} seeds): " + _difference(
                             -row["paired_diff"], row["paired_ci"], row["paired_mde"],
                             verdict) + ".")
    cells = [row for row in rows if row["loss"] in ALL_LOSS_NAMES and row["paired_n"]]
    if not cells:
        return lines
    counts = collections.Counter(row["gain"] for row in cells)
    met = sum(target_met(row, target, effect) for row in cells)
    widest = max(cells, key=lambda row: row["paired_ci"])
    lines.append("Losses against the poly control: " + ", ".join(
        f"{counts[v]} {VERDICTS[v]}" for v in VERDICTS if counts[v]) + f" of {len(cells)} cells.")
    lines.append(f"Power: {met} of {len(cells)} cells meet the target (paired 95 % interval "
                 f"within ±{points(target, False)} points, or an effect beyond "
                 f"±{points(effect, False)} points whose interval excludes zero; widest "
                 f"interval ±{points(widest['paired_ci'], False)}: "
                 f"{LOSS_TITLES[widest['loss']]} λ={widest['lam']:g}).")
    largest = max(cells, key=lambda row: abs(row["paired_diff"]))
    lines.append(f"Largest paired difference of any cell: {points(largest['paired_diff'])} points "
                 f"({LOSS_TITLES[largest['loss']]} λ={largest['lam']:g}); the thesis "
                 "reports +1.5 points for the selective cosine at λ=0.05.")
    lines += [f"- {LOSS_TITLES[row['loss']]} λ={row['lam']:g}: " + _difference(
        row["paired_diff"], row["paired_ci"], row["paired_mde"], row["gain"]) for row in cells]
    return lines + mechanism_findings(cells)


def mechanism_findings(cells):
    """Per measure of the two mechanisms (``summary.MEASURES``), how many loss cells lower
    it, raise it, or leave it within their paired 95 % interval: a sentence each, stated as
    measured whichever way it goes."""
    lines = []
    for name, title in MEASURE_TITLES.items():
        found = [row["measures"][name] for row in cells
                 if "paired_diff" in row["measures"].get(name, {})]
        if not found:
            continue
        counts = collections.Counter(m["gain"] for m in found)
        lines.append(f"{title[0].upper() + title[1:]} against the poly control: lower in "
                     f"{counts['worse']}, higher in {counts['yes']}, no detectable change in "
                     f"{counts['no']} of {len(found)} cells"
                     + (f" ({counts['n/a']} undecided)" if counts["n/a"] else "")
                     + " (paired 95 % intervals).")
    return lines


def difficulty_sentence(knobs):
    """What the data's difficulty knobs (``synthetic.DIFFICULTIES``) are, where they are not
    the default's; "" for the default data set."""
    if not knobs or knobs == DIFFICULTIES["default"]:
        return ""
    return (f" This is the hard variant: parts {knobs['part_scale']:g} times the default's "
            f"side, drawn at {knobs['part_contrast']:.0%} contrast over the body, body "
            f"texture {knobs['texture_strength']:g} times as strong.")


def write_report(out, summary, recipe=RECIPE):
    """<out>/report.md: every step's result with its figures beside it."""
    b, s, sal = summary["baseline"], summary["part_shares"], summary["salient"]
    baseline, settings, table = recipe["baseline"], summary["settings"], summary["table"]
    class_rows = "\n".join(f"| {name} | {reports.fmt(iou, 3)} |"
                           for name, iou in b["class_iou"].items())
    location_rows = "\n".join(
        f"| {r['class']} | {r['images']} | {r['mean_pct_inside']:.1f} | {r['iou']:.3f} |"
        for r in summary["location"]["rows"] if isinstance(r.get("iou"), float))
    lines = [
        "# The thesis on synthetic data", "",
        f"Mode: {summary['mode']}. Made by `python tools/demo.py` with real Caffe; "
        f"total {summary['total_seconds']:.0f} s.", "",
        "## 1. Data", "",
        "Cat and dog share one body, chair and sofa another; only a small part (checker, "
        "stripes, dot, cross) tells the pair apart." + difficulty_sentence(
            summary.get("difficulty")) + " Val images over their labels:", "",
        "![data](data.png)", "",
        "## 2. Baseline", "",
        f"Reduced-width DeepLab-LargeFOV (channels / {recipe['net']['width_div']}), "
        f"{baseline['iterations']} iterations on {recipe['data']['n_train']} training images, "
        f"{baseline['solver']['type']} with DeepLab's step schedule ({baseline['base_lr']:g}, "
        f"x{baseline['solver'].get('gamma', 1):g} every "
        f"{baseline['solver'].get('stepsize', '-')} iterations), "
        + (f"from `{recipe['init']['weights']}` ({recipe['init']['made_by']})"
           if recipe.get("init") else "from scratch") + f": `{b['weights']}`.", "",
        f"Val mean IoU **{b['mean_iou']:.3f}** on {b.get('val_images', '?')} images (predicting "
        f"background everywhere: {b['all_background_mean_iou']:.3f}); pixel accuracy "
        f"{b['pixel_accuracy']:.3f}." + (
            f" On {b['train_images']} of its training images: {b['train_mean_iou']:.3f}"
            + (" (close to val's: it did not memorise them)."
               if abs(b["train_mean_iou"] - b["mean_iou"]) < 0.03 else ".")
            if "train_mean_iou" in b else ""), "",
        "| class | IoU |", "|---|---|", class_rows, "",
        "## 3. Segmentation fixations", "",
        "Of the fixations that land on an object, "
        f"{reports.share(s.get('mean_share_on_part'))} lie on its discriminative part, which "
        f"covers {reports.share(s.get('mean_part_area_share'))} of the "
        f"object (median enrichment x{s.get('median_enrichment', float('nan')):.1f}; "
        f"{s.get('objects_part_over_area', 0)} of {s.get('objects_traced', 0)} traced objects "
        "above their part's area share). Table: `part_shares.csv`.", "",
    ]
    lines += [f"![fixations]({f})" for f in summary["fixation_figures"][:4]] + [""]
    lines += [
        "Experiment 1 (Figure 2.6): % of a class's fixations inside its ground truth, beside "
        "its IoU:", "", "| class | images | % inside | IoU |", "|---|---|---|---|",
        location_rows, "", f"![location]({summary['location']['png']})", "",
        "## 4. Masking the part (experiment 4)", "",
        f"Painting the part over with the body's own texture lowers the class's activation on "
        f"the rest of the body by **{sal['mean_drop_pct']:.0f} %** on average "
        f"({sal['objects_with_drop']} of {sal['objects']} objects): activation flows from the "
        "discriminative part across the object (thesis section 2.4). Table: "
        f"`{sal['csv']}`." if sal["mean_drop_pct"] is not None else
        "No object could be masked.", "",
    ]
    lines += [f"![salient]({f})" for f in sal["figures"][:3]] + [""]
    lines += ["## 5. Table 3.1 in small", "",
              f"Fine-tuned from the baseline as the thesis did: only fc6-fc8 learning, SGD with "
              f"the poly schedule from {settings['finetune_lr']:g}, "
              f"{settings['finetune_iterations']} iterations of batch 10, evaluated on "
              f"{settings['val_images']} val images. The template term: "
              f"`normalize: {table.get('normalize', 'valid')}` ("
              + ("Algorithm 3 literally, the sum over the batch's pixels divided by the "
                 "classes" if table.get("normalize") == "none" else "averaged over the valid "
                 "pixels, weaker than Algorithm 3's at the same λ") + "; at most "
              + f"{table.get('label_pixels_per_batch', 0):,} label pixels per batch). "
              + (f"Seeds, by a rule fixed in advance: every loss cell "
              f"{len(settings['seeds'])}, both controls "
              f"{len(settings['seeds']) + len(settings.get('more_seeds', ()))}; a loss cell "
              f"whose paired interval is wider than ±{points(POWER_TARGET, False)} points and is "
              f"not an effect beyond ±{points(EFFECT_TARGET, False)} points that excludes zero "
              f"gets {len(settings.get('more_seeds', ()))} more, once ("
              + (", ".join(f"{LOSS_TITLES[loss]} λ={lam:g}"
                           for loss, lam in table.get("extended", [])) or "none")
              + " needed them). " if settings.get("more_seeds") else
                 f"Seeds: {len(settings['seeds'])} per cell. ")
              + "The poly control is the same fine-tune with the softmax loss alone; "
              "the step control continues the baseline's step schedule instead (lambda 0), "
              "so poly control - step control is what the schedule switch alone does and "
              "loss - poly control what a loss adds. A loss run and both controls of one seed "
              "share the initial weights and the data order (paired). The baseline before "
              f"fine-tuning: {b['mean_iou']:.4f} on the same val images.", "",
              {"table31": "This is the powered table (`make table31-small`).",
               "full": "This is a reduced version of the powered table (`make table31-small`):"
                       " the same fine-tunes and val images, two of its cells and the poly "
                       "control at its rule's first stage (seeds 0-2, none added), so their "
                       "numbers are the powered table's first-stage ones; the step control "
                       "is left out here (the powered table runs it).",
               "quick": "Quick mode: a single short run per cell, no statistics.",
               "table31-hard": "This is the harder tier's table (`make table31-hard`): Table "
                               "3.1's four losses at three of its λ with the powered table's "
                               "fine-tune, controls and seed rule, on the hard variant of the "
                               "data, whose baseline was chosen by its val mIoU alone before "
                               "any loss ran on it (docs/table31.md, \"The harder tier\").",
               "quick-hard": "Quick mode on the hard data: a single short run per cell, no "
                             "statistics."}[summary["mode"]], "",
              "What it shows (paired 95 % intervals in mIoU points; target "
              f"±{points(POWER_TARGET, False)}):", ""]
    for line in table.get("findings", []):  # sentences are paragraphs, cells a list
        lines += [line] if line.startswith("- ") else [line, ""]
    lines += ["", f"![Table 3.1 in small]({table['figure']})", ""] if table.get("figure") \
        else [""]
    mechanisms = table.get("mechanisms_figure")
    if mechanisms and os.path.isfile(os.path.join(out, mechanisms)):
        lines += [f"![the two mechanisms]({mechanisms})", ""]
    lines += [table["markdown"]]
    if summary["mode"] in ("table31", "full") and os.path.isfile(VALID_TABLE):
        with open(VALID_TABLE) as f:
            lines += [f.read()]
    lines += ["## Timings", "",
              "Wall-clock seconds of each step in this invocation (a step whose results were "
              "already there takes seconds).", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {title} | {seconds:.0f} |" for title, seconds in summary["timings"]]
    lines += ["", "`caffe train` time read from the training logs, all sessions (also those "
              "of an interrupted and resumed run): "
              f"baseline {summary['baseline']['train_seconds']:.0f} s"
              + (" (when the committed model was trained; not trained in this run)"
                 if summary["baseline"].get("committed") else "")
              + f"; the {table.get('runs', 0)} Table 3.1 runs "
              f"{table.get('train_seconds', 0):.0f} s."]
    path = os.path.join(out, "report.md")
    files.write_text(path, "\n".join(lines) + "\n")
    return path
