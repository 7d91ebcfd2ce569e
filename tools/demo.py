#!/usr/bin/env python
"""The main job: the whole thesis on a generated "discriminative parts" data set, on a CPU,
with real Caffe, in minutes, with nothing downloaded.

1. generate the synthetic data set (tools/synthetic.py: cat/dog and chair/sofa share a body
   and differ only by a small part);
2. the baseline: a reduced-width DeepLab-LargeFOV trained from scratch with `caffe train`
   (the trained model is committed under weights/demo/ with the recipe that made it, and
   reused while the recipe matches; --retrain trains it again);
3. segmentation fixations on val images, and the share of fixations that fall on the
   discriminative part against the part's share of the object's area (the synthetic
   analogue of experiment 1, where the answer is known by construction);
4. experiment 4: mask the part, segment again, and measure the drop of the class's
   activation over the rest of the body;
5. Table 3.1 in small: the control and the four template-similarity losses at three
   weights, two seeds each, fine-tuned from the baseline as the thesis does (fc6-fc8 only);
6. a Markdown report with its figures: <out>/report.md.

Every step caches its results, so a second run only rewrites the report.
"""
import argparse
import hashlib
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from python_layers import ToolkitError, voc_io  # noqa: E402
from tools import REPO_ROOT  # noqa: E402
from tools.download import file_digest  # noqa: E402

DEMO_WEIGHTS_DIR = os.path.join(REPO_ROOT, "weights", "demo")
DEMO_WEIGHTS = os.path.join(DEMO_WEIGHTS_DIR, "largefov_synthetic.caffemodel")
DEMO_RECIPE_FILE = os.path.join(DEMO_WEIGHTS_DIR, "recipe.json")

# The baseline's recipe: the committed model is the product of exactly this.
RECIPE = {
    "data": {"size": 129, "n_train": 300, "n_val": 60, "seed": 0},
    "net": {"width_div": 8, "num_classes": 5},
    # From scratch, so not DeepLab's step SGD from an ImageNet init: Adam, poly decay.
    "baseline": {"iterations": 5000, "batch_size": 10, "crop": 129, "base_lr": 1e-3,
                 "solver": {"type": "Adam", "lr_policy": "poly", "power": 0.9,
                            "momentum2": 0.999},
                 "seed": 0, "snapshot": 1000},
}

# The run: full, and --quick for the tests (same model, fewer images and runs).
SETTINGS = {
    "full": {"val_images": 60, "fixation_images": 12, "experiment_images": 30,
             "losses": ("correlation", "cosine", "selective_correlation", "selective_cosine"),
             "lambdas": (0.01, 0.1, 1.0), "seeds": (0, 1), "finetune_iterations": 100,
             "finetune_lr": 1e-3},
    "quick": {"val_images": 12, "fixation_images": 4, "experiment_images": 6,
              "losses": ("cosine", "selective_cosine"), "lambdas": (0.1,), "seeds": (0,),
              "finetune_iterations": 10, "finetune_lr": 1e-3},
}


def recipe_id(recipe=RECIPE):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class Step(object):
    """Prints a step's title and, when it ends, how long it took (kept for the report)."""

    def __init__(self, timings, title):
        self.timings, self.title = timings, title

    def __enter__(self):
        print(f"\n== {self.title}", flush=True)
        self.started = time.time()
        return self

    def __exit__(self, *exc):
        seconds = time.time() - self.started
        self.timings.append((self.title, seconds))
        print(f"   ({seconds:.0f} s)", flush=True)


# --- 1. data --------------------------------------------------------------------------------

def make_data(data_dir, val_images, progress=True):
    from tools import synthetic
    info = synthetic.generate(data_dir, progress=progress, **{
        k: RECIPE["data"][k] for k in ("n_train", "n_val", "size", "seed")})
    val_pairs = open(info["val_list"]).read().splitlines()[:val_images]
    subset = os.path.join(data_dir, "lists", f"val_first{val_images}.txt")
    voc_io.write_text(subset, "\n".join(val_pairs) + "\n")
    info["val_subset"] = subset
    print(f"   {data_dir}: {RECIPE['data']['n_train']} train, {RECIPE['data']['n_val']} val "
          f"images ({'generated' if info['generated'] else 'already there'}); "
          f"evaluating on {len(val_pairs)}")
    return info


def data_figure(data_dir, path, count=4):
    """A strip of val images over their label maps."""
    import cv2
    rows = []
    for image_path, label_path in voc_io.read_list(
            os.path.join(data_dir, "lists", "val.txt"), data_dir)[:count]:
        image = voc_io.read_image(image_path)
        label = voc_io.voc_palette()[voc_io.read_label(label_path)][:, :, ::-1]
        rows.append(np.vstack([image, label]))
    from tools import heatmap
    strip = cv2.resize(np.hstack(rows), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    return heatmap.write_png(path, strip)


# --- 2. the baseline --------------------------------------------------------------------------

def committed_baseline():
    """The committed model when it was made by this recipe, else None."""
    if not (os.path.isfile(DEMO_WEIGHTS) and os.path.isfile(DEMO_RECIPE_FILE)):
        return None
    with open(DEMO_RECIPE_FILE) as f:
        meta = json.load(f)
    if meta.get("recipe_id") != recipe_id() or meta.get("sha256") != file_digest(DEMO_WEIGHTS):
        return None
    return meta


def train_baseline(data, out_dir, progress=True):
    """`caffe train` of the reduced-width LargeFOV from scratch; resumes from snapshots and
    skips when the final snapshot exists. Returns (caffemodel, losses)."""
    from tools import netdef, reproduce_table
    recipe = RECIPE["baseline"]
    os.makedirs(out_dir, exist_ok=True)
    solver = netdef.write_experiment(
        out_dir, loss="softmax", stage="baseline", data_root=data["root"],
        list_file=data["train_list"], batch_size=recipe["batch_size"], crop=recipe["crop"],
        width_div=RECIPE["net"]["width_div"], num_classes=RECIPE["net"]["num_classes"],
        seed=recipe["seed"], iterations=recipe["iterations"], snapshot=recipe["snapshot"],
        base_lr=recipe["base_lr"], solver_overrides=recipe["solver"])
    final = os.path.join(out_dir, f"baseline_iter_{recipe['iterations']}.caffemodel")
    log = os.path.join(out_dir, "train.log")
    if os.path.isfile(final):
        return final, reproduce_table.parse_losses(open(log).read())
    if progress:
        print(f"   training {recipe['iterations']} iterations with caffe train (log: {log}); "
              "about 20 minutes on 2 cores", flush=True)
    losses = reproduce_table.train(solver, out_dir)
    return final, losses


def export_baseline(weights, losses, metrics, seconds):
    """Commit-ready copy of a freshly trained baseline with its recipe (weights/demo/)."""
    os.makedirs(DEMO_WEIGHTS_DIR, exist_ok=True)
    with voc_io.atomic_path(DEMO_WEIGHTS) as tmp:
        shutil.copyfile(weights, tmp)
    meta = {"recipe": RECIPE, "recipe_id": recipe_id(), "sha256": file_digest(DEMO_WEIGHTS),
            "val_mean_iou": metrics["mean_iou"], "val_class_iou": metrics["class_iou"],
            "val_images": metrics.get("num_images"), "train_seconds": round(seconds),
            "first_loss": losses[0][1] if losses else None,
            "last_loss": losses[-1][1] if losses else None,
            "made_by": "python tools/demo.py --retrain --export"}
    voc_io.write_json(DEMO_RECIPE_FILE, meta)
    return meta


def demo_model_files(work_dir):
    """(deploy prototxt, test prototxt) of the demo net, written into work_dir."""
    from tools import netdef
    size, net = RECIPE["data"]["size"], RECIPE["net"]
    deploy = os.path.join(work_dir, "deploy.prototxt")
    test = os.path.join(work_dir, "test.prototxt")
    voc_io.write_text(deploy, netdef.to_text(netdef.deploy_net(size=size, **net)))
    voc_io.write_text(test, netdef.to_text(netdef.test_net(size=size, **net)))
    return deploy, test


# --- 3. fixations on the part ------------------------------------------------------------------

PART_SHARE_COLUMNS = ("image", "class", "detected", "part_area_share", "points_in_body",
                      "points_on_part", "points_total", "share_on_part")


def part_shares(deploy, weights, data, image_count, out_dir):
    """Per object of the val images: the share of its class's fixation points (weighted by
    multiplicity) inside its body that fall on the part, and the part's share of the area.

    Returns (records, figure paths). Writes part_shares.csv and one fixation figure per image.
    """
    from tools import seg_fixations as sf
    from tools import synthetic, zoo
    spec = sf.ModelSpec("demo", deploy, weights, sf.DEFAULT_SCORE_BLOB, zoo.DEEPLAB_MEAN,
                        "segmentation", synthetic.CLASS_NAMES, None)
    net = sf.load_net(spec)
    tracker = sf.make_tracker(net, deploy)
    size = RECIPE["data"]["size"]
    records, figures = [], []
    pairs = voc_io.read_list(data["val_list"], data["root"])[:image_count]
    for image_path, _ in pairs:
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        image = voc_io.read_image(image_path)
        annotation = synthetic.load_annotation(data["root"], image_id)
        input_data, image, _ = sf.prepare_input(image, size, zoo.DEEPLAB_MEAN)
        results = sf.run_fixations(net, tracker, input_data, image, sf.DEFAULT_SCORE_BLOB,
                                   names=synthetic.CLASS_NAMES)
        by_class = {r.class_id: r for r in results}
        for obj in annotation["objects"]:
            body, part = obj["body_mask"], obj["part_mask"]
            if not part.any():
                continue
            result = by_class.get(obj["class_id"])
            record = {"image": image_id, "class": obj["class_name"], "detected": result is not None,
                      "part_area_share": float(part.sum() / body.sum()),
                      "points_in_body": 0.0, "points_on_part": 0.0, "points_total": 0.0}
            if result is not None and len(result.points):
                ys, xs = result.points[:, 0], result.points[:, 1]
                weights_ = result.counts.astype(float)
                record["points_total"] = float(weights_.sum())
                record["points_in_body"] = float(weights_[body[ys, xs]].sum())
                record["points_on_part"] = float(weights_[part[ys, xs]].sum())
            records.append(record)
        _, figure = sf.write_outputs(os.path.join(out_dir, "fixations"), image_id, image,
                                     results)
        figures.append(figure)
    rows = [dict(r, share_on_part=(r["points_on_part"] / r["points_in_body"]
                                   if r["points_in_body"] else float("nan")))
            for r in records]
    from tools import experiments
    experiments.write_csv(os.path.join(out_dir, "part_shares.csv"), rows, PART_SHARE_COLUMNS)
    return rows, figures


def summarize_part_shares(rows):
    used = [r for r in rows if r["points_in_body"] > 0]
    if not used:
        return {"objects": len(rows), "objects_traced": 0}
    share = np.array([r["share_on_part"] for r in used])
    area = np.array([r["part_area_share"] for r in used])
    return {"objects": len(rows), "objects_traced": len(used),
            "mean_share_on_part": float(share.mean()), "mean_part_area_share": float(area.mean()),
            "median_enrichment": float(np.median(share / area)),
            "objects_part_over_area": int((share > area).sum())}


# --- the run ----------------------------------------------------------------------------------

def run_demo(out="runs/demo", data_dir="data/synthetic", quick=False, retrain=False,
             export=False, progress=True):
    """Run every step; returns the summary dict (also written to <out>/summary.json)."""
    from tools import evaluate as evaluation
    from tools import experiments, reproduce_table, synthetic

    settings = SETTINGS["quick" if quick else "full"]
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    timings, summary = [], {"mode": "quick" if quick else "full", "settings": settings}
    started = time.time()

    with Step(timings, "1. data: synthetic discriminative-parts set"):
        data = make_data(os.path.abspath(data_dir), settings["val_images"], progress)
        data_figure(data["root"], os.path.join(out, "data.png"))

    deploy, test = demo_model_files(out)
    with Step(timings, "2. baseline: reduced-width DeepLab-LargeFOV"):
        meta = None if retrain else committed_baseline()
        if meta:
            weights = DEMO_WEIGHTS
            print(f"   using the committed baseline {os.path.relpath(weights, REPO_ROOT)} "
                  f"(made by this recipe; trained {meta['train_seconds']} s; --retrain to "
                  "train it again)")
            losses, train_seconds = None, meta["train_seconds"]
        else:
            t0 = time.time()
            weights, losses = train_baseline(data, os.path.join(out, "baseline"), progress)
            train_seconds = time.time() - t0
        metrics = evaluation.evaluate((test, weights), data["val_subset"], data["root"],
                                      os.path.join(out, "baseline", "eval"),
                                      num_classes=RECIPE["net"]["num_classes"],
                                      size=RECIPE["data"]["size"], progress=progress,
                                      class_names=synthetic.CLASS_NAMES)
        chance = all_background_miou(metrics)
        summary["baseline"] = {"weights": os.path.relpath(weights, REPO_ROOT),
                               "mean_iou": metrics["mean_iou"], "class_iou": metrics["class_iou"],
                               "pixel_accuracy": metrics["pixel_accuracy"],
                               "all_background_mean_iou": chance,
                               "train_seconds": round(train_seconds)}
        print(f"   val mean IoU {metrics['mean_iou']:.3f} (all-background prediction: "
              f"{chance:.3f})")
        if export and not meta:
            full_eval = evaluation.evaluate(
                (test, weights), data["val_list"], data["root"],
                os.path.join(out, "baseline", "eval_full"), num_classes=5,
                size=RECIPE["data"]["size"], progress=progress,
                class_names=synthetic.CLASS_NAMES)
            export_baseline(weights, losses, full_eval, train_seconds)
            print(f"   exported to {os.path.relpath(DEMO_WEIGHTS, REPO_ROOT)}")

    with Step(timings, "3. segmentation fixations: on the part or on the body?"):
        rows, figures = part_shares(deploy, weights, data, settings["fixation_images"], out)
        summary["part_shares"] = summarize_part_shares(rows)
        summary["fixation_figures"] = [os.path.relpath(f, out) for f in figures]
        s = summary["part_shares"]
        if s.get("objects_traced"):
            print(f"   {s['mean_share_on_part']:.0%} of the fixations on an object lie on its "
                  f"part, which covers {s['mean_part_area_share']:.0%} of it "
                  f"(median enrichment x{s['median_enrichment']:.1f})")

    with Step(timings, "4. experiments 1 and 4: fixation location, masked parts"):
        exp = experiments.run_all(
            deploy, weights, data["root"], data["val_subset"], os.path.join(out, "experiments"),
            experiments=("location", "salient"), num_classes=5,
            class_names=synthetic.CLASS_NAMES, size=RECIPE["data"]["size"],
            limit=settings["experiment_images"], mask_fn=experiments.synthetic_part_mask_fn(
                data["root"]), figures=4, progress=progress)
        salient = exp["salient"]["rows"]
        drops = [r["drop_pct"] for r in salient if np.isfinite(r["drop_pct"])]
        summary["salient"] = {"objects": len(salient),
                              "mean_drop_pct": float(np.mean(drops)) if drops else None,
                              "objects_with_drop": int(sum(d > 0 for d in drops)),
                              "csv": os.path.relpath(exp["salient"]["csv"], out),
                              "figures": [os.path.relpath(f, out)
                                          for f in exp["salient"]["figures"]]}
        summary["location"] = {"csv": os.path.relpath(exp["location"]["csv"], out),
                               "png": os.path.relpath(exp["location"]["png"], out),
                               "rows": exp["location"]["rows"]}
        if drops:
            print(f"   masking the part lowers the class activation on the rest of the body "
                  f"by {np.mean(drops):.0f} % on average ({summary['salient']['objects_with_drop']}"
                  f" of {len(drops)} objects)")

    with Step(timings, "5. Table 3.1 in small: control and the four losses"):
        cfg = reproduce_table.SweepConfig(
            out=os.path.join(out, "table"), data_root=data["root"],
            train_list=data["train_list"], val_list=data["val_subset"], init_weights=weights,
            losses=settings["losses"], lambdas=settings["lambdas"], seeds=settings["seeds"],
            iterations=settings["finetune_iterations"], batch_size=10,
            crop=RECIPE["data"]["size"], test_size=RECIPE["data"]["size"],
            width_div=RECIPE["net"]["width_div"], num_classes=5, progress=progress,
            base_lr=settings["finetune_lr"], class_names=synthetic.CLASS_NAMES)
        results = reproduce_table.run_sweep(cfg)
        table_rows, table_md = reproduce_table.write_table(cfg, results,
                                                           title="Table 3.1 on synthetic data")
        summary["table"] = {"rows": table_rows, "markdown": table_md}

    summary["timings"] = [(title, round(seconds, 1)) for title, seconds in timings]
    summary["total_seconds"] = round(time.time() - started, 1)
    voc_io.write_json(os.path.join(out, "summary.json"), summary)
    report = write_report(out, summary)
    print(f"\nreport: {report}  (total {summary['total_seconds']:.0f} s)")
    return summary


def all_background_miou(metrics):
    """Mean IoU of predicting background everywhere on the same images (the chance floor):
    background's IoU is then its share of the valid pixels, every other class's is 0."""
    confusion = np.asarray(metrics["confusion"], float)  # rows: ground truth
    return float(confusion[0].sum() / confusion.sum() / len(metrics["class_iou"]))


def _number(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value):
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.0%}"


def write_report(out, summary):
    """<out>/report.md: every step's result with its figures beside it."""
    b, s, sal = summary["baseline"], summary["part_shares"], summary["salient"]
    class_rows = "\n".join(f"| {name} | {_number(iou)} |" for name, iou in b["class_iou"].items())
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
        f"Of the fixations that land on an object, {_pct(s.get('mean_share_on_part'))} lie on "
        f"its discriminative part, which covers {_pct(s.get('mean_part_area_share'))} of the "
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--data", default="data/synthetic",
                        help="where the synthetic data set goes (default data/synthetic)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer images and fine-tunes (a few minutes; what the tests run)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the baseline again instead of using weights/demo/")
    parser.add_argument("--export", action="store_true",
                        help="with --retrain: copy the new baseline into weights/demo/")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        run_demo(args.out, args.data, args.quick, args.retrain, args.export,
                 progress=not args.no_progress)
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished steps are cached; run again to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
