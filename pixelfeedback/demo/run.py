"""The demo's steps, in order: data, baseline, fixations on the part, experiments 1 and 4,
Table 3.1 in small, the report (tools/demo.py runs them; each caches its results).
"""
import os
import time

import numpy as np

from pixelfeedback import (evaluation, experiments, files, fixation_outputs, heatmap,
                           part_masking, pipeline, reports, synthetic)
from pixelfeedback.demo.model import (
    BASELINES, DEMO_WEIGHTS_DIR, EFFECT_TARGET, POWER_TARGET, RECIPE, SETTINGS, baseline_of,
    committed_baseline, demo_model_files, export_baseline, init_weights, model_spec, recipe_id,
    step_control, weights_files)
from pixelfeedback.demo.report import table_findings, write_report
from pixelfeedback.nets import largefov, registry
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.runfolder import RunFolder
from pixelfeedback.sweep.driver import run_sequential
from pixelfeedback.sweep.plan import SweepConfig
from pixelfeedback.sweep.table import TABLE_FILES, write_table
from pixelfeedback.training import parse_losses, train, training_seconds, weights_problem
from python_layers import ToolkitError, voc_io


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


def make_data(data_dir, settings, recipe=RECIPE, progress=True):
    """The recipe's data set with the run's counts (train and val images depend only on the
    seed and their index, so a smaller set is a prefix of the recipe's), and the list of its
    last training images that the export evaluates (as many as the val images; the first
    300 are those the initial weights fitted)."""
    data = recipe["data"]
    info = synthetic.generate(data_dir, n_train=settings["train_images"],
                              n_val=settings["val_images"], size=data["size"], seed=data["seed"],
                              progress=progress, difficulty=data.get("difficulty", "default"))
    train_pairs = open(info["train_list"]).read().splitlines()[-settings["val_images"]:]
    info["train_subset"] = os.path.join(data_dir, "lists", f"train_last{len(train_pairs)}.txt")
    files.write_text(info["train_subset"], "\n".join(train_pairs) + "\n")
    print(f"   {data_dir}: {settings['train_images']} train, {settings['val_images']} val "
          f"images ({'generated' if info['generated'] else 'already there'})")
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


def train_baseline(data, out_dir, recipe=RECIPE, progress=True):
    """`caffe train` of the reduced-width LargeFOV from the recipe's initial weights (from
    scratch when it names none); resumes from snapshots and skips when the final snapshot
    exists. Returns (caffemodel, losses, training seconds of all sessions)."""
    init = init_weights(recipe) if recipe.get("init") else None
    net, recipe = recipe["net"], recipe["baseline"]
    os.makedirs(out_dir, exist_ok=True)
    solver = largefov.write_experiment(
        out_dir, loss="softmax", stage="baseline", data_root=data["root"],
        list_file=data["train_list"], batch_size=recipe["batch_size"], crop=recipe["crop"],
        width_div=net["width_div"], num_classes=net["num_classes"], seed=recipe["seed"],
        iterations=recipe["iterations"], snapshot=recipe["snapshot"], base_lr=recipe["base_lr"],
        solver_overrides=recipe["solver"])
    final = os.path.join(out_dir, f"baseline_iter_{recipe['iterations']}.caffemodel")
    log = os.path.join(out_dir, "train.log")
    if not os.path.isfile(final) or weights_problem(final):  # missing, or cut by a kill
        if progress:
            print(f"   training {recipe['iterations']} iterations with caffe train (log: {log});"
                  " about 10 minutes on 2 cores", flush=True)
        train(solver, out_dir, init)
    log_text = open(log).read()  # all sessions: an interrupted training resumes
    return final, parse_losses(log_text), training_seconds(log_text)


PART_SHARE_COLUMNS = ("image", "class", "detected", "part_area_share", "points_in_body",
                      "points_on_part", "points_total", "share_on_part")


def part_shares(deploy, weights, data, image_count, out_dir, size):
    """Per object of the val images: the share of its class's fixation points (weighted by
    multiplicity) inside its body that fall on the part, and the part's share of the area.

    Returns (records, figure paths). Writes part_shares.csv and one fixation figure per image.
    """
    spec = model_spec(deploy, weights)
    net = pipeline.load_model(spec)
    tracker = pipeline.make_tracker(net, deploy)
    records, figures = [], []
    pairs = voc_io.read_list(data["val_list"], data["root"])[:image_count]
    for image_path, _ in pairs:
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        image = voc_io.read_image(image_path)
        annotation = part_masking.load_annotation(data["root"], image_id)
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
        _, figure = fixation_outputs.write_outputs(os.path.join(out_dir, "fixations"), image_id, image,
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


def demo_mode(quick=False, table31=False, hard=False):
    """The SETTINGS key of tools/demo.py's flags: "quick", "table31", "full", "table31-hard"
    or, with ``quick``, "quick-hard"."""
    if table31 and (quick or hard):
        other = "--quick" if quick else "--table31-hard"
        raise ToolkitError(f"{other} and --table31-small are two different runs; pass one")
    if hard:
        return "quick-hard" if quick else "table31-hard"
    return "quick" if quick else "table31" if table31 else "full"


def demo_folders(quick=False, table31=False, hard=False, out=None, data_dir=None):
    """(output folder, data folder) of tools/demo.py: ``out`` and ``data_dir`` when given,
    else each table its own output and each data set (difficulty, image count) its own
    folder."""
    default_out = "runs/table31-hard" if hard else "runs/table31-small" if table31 \
        else "runs/demo"
    data = "data/synthetic-hard" if hard else "data/synthetic"
    return out or default_out, data_dir or (data + "-quick" if quick else data)


def run_demo(out="runs/demo", data_dir="data/synthetic", quick=False, retrain=False,
             export=False, restart=False, progress=True, table31=False, recipe=None,
             weights_dir=DEMO_WEIGHTS_DIR, hard=False):
    """Run every step; returns the summary dict (also written to <out>/summary.json).

    The mode (``demo_mode``) is "quick" (the tests), "table31" (the powered Table 3.1 in
    small: make table31-small), "full" (make demo: the same fine-tunes, fewer cells),
    "table31-hard" (``hard``: the harder tier, make table31-hard) or "quick-hard" (its quick
    run). ``out`` is a run folder (pixelfeedback.runfolder): a rerun of the same mode and
    recipe reuses every cached step; another mode or recipe is refused, naming what differs,
    unless ``restart`` discards the folder's contents. The baseline is the mode's
    (BASELINES) in ``weights_dir`` when ``recipe`` (default: that baseline's) made it, else
    (or with ``retrain``) trained; ``export`` copies a trained one into ``weights_dir`` with
    its recipe file.
    """
    mode = demo_mode(quick, table31, hard)
    recipe = BASELINES[baseline_of(mode)]["recipe"] if recipe is None else recipe
    run_settings = {"mode": mode, "steps": SETTINGS[mode], "recipe_id": recipe_id(recipe),
                    "retrain": bool(retrain)}
    with RunFolder(out, run_settings, what="demo run", restart=restart) as folder:
        return _run_steps(folder.root, data_dir, mode, retrain, export, progress, recipe,
                          weights_dir)


def baseline_step(data, out, test, recipe, weights_dir, retrain, export, progress,
                  baseline="demo"):
    """Step 2: the baseline ``baseline`` (a key of BASELINES) in ``weights_dir`` made by
    ``recipe`` (or a new one trained, and with ``export`` copied there), evaluated on the
    run's val images. Returns (weights, the summary's "baseline" entry)."""
    meta = None if retrain else committed_baseline(recipe, weights_dir, baseline)
    if meta:
        weights = weights_files(weights_dir, baseline)[0]
        print(f"   using the committed baseline {shown_path(weights)} (made by this recipe; "
              f"trained {meta['train_seconds']} s; --retrain to train it again)")
        losses, train_seconds = None, meta["train_seconds"]
    else:
        weights, losses, train_seconds = train_baseline(
            data, os.path.join(out, "baseline"), recipe, progress)
    num_classes, size = recipe["net"]["num_classes"], recipe["data"]["size"]

    def evaluate(list_name, folder):
        return evaluation.evaluate((test, weights), data[list_name], data["root"],
                                   os.path.join(out, "baseline", folder),
                                   num_classes=num_classes, size=size, progress=progress,
                                   class_names=synthetic.CLASS_NAMES)

    metrics = evaluate("val_list", "eval")
    chance = all_background_miou(metrics)
    summary = {"weights": shown_path(weights), "mean_iou": metrics["mean_iou"],
               "class_iou": metrics["class_iou"], "pixel_accuracy": metrics["pixel_accuracy"],
               "val_images": metrics["num_images"], "all_background_mean_iou": chance,
               "train_seconds": round(train_seconds), "committed": bool(meta)}
    if meta and "train_mean_iou" in meta:
        summary.update(train_mean_iou=meta["train_mean_iou"], train_images=meta["train_images"])
    print(f"   val mean IoU {metrics['mean_iou']:.3f} on {metrics['num_images']} images "
          f"(all-background prediction: {chance:.3f})")
    if export and not meta:
        train_metrics = evaluate("train_subset", "eval_train")
        export_baseline(weights, losses, metrics, train_seconds, train_metrics, recipe,
                        weights_dir, baseline)
        summary.update(train_mean_iou=train_metrics["mean_iou"],
                       train_images=train_metrics["num_images"])
        print(f"   mean IoU {train_metrics['mean_iou']:.3f} on {train_metrics['num_images']} "
              f"training images; exported to {shown_path(weights_dir)}")
    return weights, summary


def shown_path(path):
    """A path as the report shows it: relative to the repository when inside it."""
    relative = os.path.relpath(path, REPO_ROOT)
    return path if relative.startswith(os.pardir) else relative


def _run_steps(out, data_dir, mode, retrain, export, progress, recipe, weights_dir):
    settings = SETTINGS[mode]
    size = recipe["data"]["size"]
    timings, summary = [], {"mode": mode, "settings": settings,
                            "difficulty": synthetic.difficulty_knobs(
                                recipe["data"].get("difficulty", "default"))}
    started = time.time()

    with Step(timings, "1. data: synthetic discriminative-parts set"):
        data = make_data(os.path.abspath(data_dir), settings, recipe, progress)
        data_figure(data["root"], os.path.join(out, "data.png"))

    deploy, test = demo_model_files(out, recipe)
    with Step(timings, "2. baseline: reduced-width DeepLab-LargeFOV"):
        weights, summary["baseline"] = baseline_step(data, out, test, recipe, weights_dir,
                                                     retrain, export, progress,
                                                     baseline_of(mode))

    with Step(timings, "3. segmentation fixations: on the part or on the body?"):
        rows, figures = part_shares(deploy, weights, data, settings["fixation_images"], out,
                                    size)
        summary["part_shares"] = summarize_part_shares(rows)
        summary["fixation_figures"] = [os.path.relpath(f, out) for f in figures]
        s = summary["part_shares"]
        if s.get("objects_traced"):
            print(f"   {s['mean_share_on_part']:.0%} of the fixations on an object lie on its "
                  f"part, which covers {s['mean_part_area_share']:.0%} of it "
                  f"(median enrichment x{s['median_enrichment']:.1f})")

    with Step(timings, "4. experiments 1 and 4: fixation location, masked parts"):
        exp = experiments.run_all(
            deploy, weights, data["root"], data["val_list"], os.path.join(out, "experiments"),
            experiments=("location", "salient"), num_classes=recipe["net"]["num_classes"],
            class_names=synthetic.CLASS_NAMES, size=size,
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

    with Step(timings, "5. Table 3.1 in small: the controls and the losses"):
        cfg = SweepConfig(
            out=os.path.join(out, "table"), data_root=data["root"],
            train_list=data["train_list"], val_list=data["val_list"], init_weights=weights,
            losses=settings["losses"], lambdas=settings["lambdas"], seeds=settings["seeds"],
            iterations=settings["finetune_iterations"], batch_size=10, crop=size,
            test_size=size, width_div=recipe["net"]["width_div"],
            num_classes=recipe["net"]["num_classes"], progress=progress,
            base_lr=settings["finetune_lr"], class_names=synthetic.CLASS_NAMES,
            step_control=step_control(recipe) if settings["step_control"] else None,
            normalize=settings["normalize"], flow_images=settings.get("flow_images"))
        results, extended = run_sequential(cfg, settings["more_seeds"], POWER_TARGET,
                                                 EFFECT_TARGET)
        table_rows, table_md = write_table(cfg, results, title="Table 3.1 on synthetic data"
                                           + (" (the hard variant)"
                                              if baseline_of(mode) == "hard" else ""))
        summary["table"] = {"rows": table_rows, "markdown": table_md,
                            "findings": table_findings(table_rows),
                            "extended": [[loss, lam] for loss, lam in extended],
                            "normalize": settings["normalize"],
                            "label_pixels_per_batch": largefov.label_positions_per_batch(
                                cfg.batch_size, cfg.crop),
                            "figure": "table/" + TABLE_FILES[2],
                            "mechanisms_figure": "table/" + TABLE_FILES[3],
                            "runs": len(results),
                            "train_seconds": round(sum(r.get("train_seconds", 0)
                                                       for r in results), 1)}
        for line in summary["table"]["findings"]:
            print("   " + line)

    summary["timings"] = [(title, round(seconds, 1)) for title, seconds in timings]
    summary["total_seconds"] = round(time.time() - started, 1)
    files.write_json(os.path.join(out, "summary.json"), summary)
    report = write_report(out, summary, recipe)
    print(f"\nreport: {report}  (total {summary['total_seconds']:.0f} s)")
    return summary


def all_background_miou(metrics):
    """Mean IoU of predicting background everywhere on the same images (the chance floor):
    background's IoU is then its share of the valid pixels, every other class's is 0."""
    confusion = np.asarray(metrics["confusion"], float)  # rows: ground truth
    return float(confusion[0].sum() / confusion.sum() / len(metrics["class_iou"]))
