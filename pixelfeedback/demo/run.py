"""The demo's steps, in order: data, baseline, fixations on the part, experiments 1 and 4,
Table 3.1 in small, the report (tools/demo.py runs them; each caches its results).
"""
import os
import time

import numpy as np

from pixelfeedback import evaluation, experiments, heatmap, pipeline, reports, sweep, synthetic
from pixelfeedback.demo.model import (
    DEMO_WEIGHTS, RECIPE, SETTINGS, committed_baseline, demo_model_files, export_baseline,
    model_spec, recipe_id)
from pixelfeedback.demo.report import write_report
from pixelfeedback.nets import largefov, registry
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.runfolder import RunFolder
from pixelfeedback.training import parse_losses, train
from python_layers import voc_io


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


def make_data(data_dir, val_images, progress=True):
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
    strip = cv2.resize(np.hstack(rows), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    return heatmap.write_png(path, strip)


def train_baseline(data, out_dir, progress=True):
    """`caffe train` of the reduced-width LargeFOV from scratch; resumes from snapshots and
    skips when the final snapshot exists. Returns (caffemodel, losses)."""
    recipe = RECIPE["baseline"]
    os.makedirs(out_dir, exist_ok=True)
    solver = largefov.write_experiment(
        out_dir, loss="softmax", stage="baseline", data_root=data["root"],
        list_file=data["train_list"], batch_size=recipe["batch_size"], crop=recipe["crop"],
        width_div=RECIPE["net"]["width_div"], num_classes=RECIPE["net"]["num_classes"],
        seed=recipe["seed"], iterations=recipe["iterations"], snapshot=recipe["snapshot"],
        base_lr=recipe["base_lr"], solver_overrides=recipe["solver"])
    final = os.path.join(out_dir, f"baseline_iter_{recipe['iterations']}.caffemodel")
    log = os.path.join(out_dir, "train.log")
    if os.path.isfile(final):
        return final, parse_losses(open(log).read())
    if progress:
        print(f"   training {recipe['iterations']} iterations with caffe train (log: {log}); "
              "about 20 minutes on 2 cores", flush=True)
    losses = train(solver, out_dir)
    return final, losses


PART_SHARE_COLUMNS = ("image", "class", "detected", "part_area_share", "points_in_body",
                      "points_on_part", "points_total", "share_on_part")


def part_shares(deploy, weights, data, image_count, out_dir):
    """Per object of the val images: the share of its class's fixation points (weighted by
    multiplicity) inside its body that fall on the part, and the part's share of the area.

    Returns (records, figure paths). Writes part_shares.csv and one fixation figure per image.
    """
    spec = model_spec(deploy, weights)
    net = pipeline.load_model(spec)
    tracker = pipeline.make_tracker(net, deploy)
    size = RECIPE["data"]["size"]
    records, figures = [], []
    pairs = voc_io.read_list(data["val_list"], data["root"])[:image_count]
    for image_path, _ in pairs:
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        image = voc_io.read_image(image_path)
        annotation = synthetic.load_annotation(data["root"], image_id)
        input_data, image, _ = pipeline.prepare_input(image, size, registry.DEEPLAB_MEAN)
        results = pipeline.run_fixations(net, tracker, input_data, image,
                                         pipeline.DEFAULT_SCORE_BLOB,
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
        _, figure = pipeline.write_outputs(os.path.join(out_dir, "fixations"), image_id, image,
                                     results)
        figures.append(figure)
    rows = [dict(r, share_on_part=(r["points_on_part"] / r["points_in_body"]
                                   if r["points_in_body"] else float("nan")))
            for r in records]
    reports.write_csv(os.path.join(out_dir, "part_shares.csv"), rows, PART_SHARE_COLUMNS)
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


def run_demo(out="runs/demo", data_dir="data/synthetic", quick=False, retrain=False,
             export=False, restart=False, progress=True):
    """Run every step; returns the summary dict (also written to <out>/summary.json).

    ``out`` is a run folder (pixelfeedback.runfolder): a rerun of the same mode and recipe
    reuses every cached step; another mode (--quick against the full run) or recipe is
    refused, naming what differs, unless ``restart`` discards the folder's contents.
    """
    mode = "quick" if quick else "full"
    run_settings = {"mode": mode, "steps": SETTINGS[mode], "recipe_id": recipe_id(),
                    "retrain": bool(retrain)}
    with RunFolder(out, run_settings, what="demo run", restart=restart) as folder:
        return _run_steps(folder.root, data_dir, mode, retrain, export, progress)


def _run_steps(out, data_dir, mode, retrain, export, progress):
    settings = SETTINGS[mode]
    timings, summary = [], {"mode": mode, "settings": settings}
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
        cfg = sweep.SweepConfig(
            out=os.path.join(out, "table"), data_root=data["root"],
            train_list=data["train_list"], val_list=data["val_subset"], init_weights=weights,
            losses=settings["losses"], lambdas=settings["lambdas"], seeds=settings["seeds"],
            iterations=settings["finetune_iterations"], batch_size=10,
            crop=RECIPE["data"]["size"], test_size=RECIPE["data"]["size"],
            width_div=RECIPE["net"]["width_div"], num_classes=5, progress=progress,
            base_lr=settings["finetune_lr"], class_names=synthetic.CLASS_NAMES)
        results = sweep.run_sweep(cfg)
        table_rows, table_md = sweep.write_table(cfg, results,
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
