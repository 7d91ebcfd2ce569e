"""The demo's report: runs/demo/report.md, every step's result beside its figures."""
import os

from pixelfeedback import reports
from pixelfeedback.demo.model import RECIPE
from python_layers import voc_io


def write_report(out, summary):
    """<out>/report.md: every step's result with its figures beside it."""
    b, s, sal = summary["baseline"], summary["part_shares"], summary["salient"]
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
        "stripes, dot, cross) tells the pair apart. Val images over their labels:", "",
        "![data](data.png)", "",
        "## 2. Baseline", "",
        f"Reduced-width DeepLab-LargeFOV (channels / {RECIPE['net']['width_div']}), "
        f"{RECIPE['baseline']['iterations']} iterations from scratch (`{b['weights']}`).", "",
        f"Val mean IoU **{b['mean_iou']:.3f}** (predicting background everywhere: "
        f"{b['all_background_mean_iou']:.3f}); pixel accuracy {b['pixel_accuracy']:.3f}.", "",
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
              "Fine-tuned from the baseline with only fc6-fc8 learning, poly schedule; the "
              "control is the same fine-tune with the softmax loss alone.", "",
              summary["table"]["markdown"], "## Timings", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {title} | {seconds:.0f} |" for title, seconds in summary["timings"]]
    path = os.path.join(out, "report.md")
    voc_io.write_text(path, "\n".join(lines) + "\n")
    return path
