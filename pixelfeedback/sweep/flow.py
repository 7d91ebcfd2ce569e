"""The flow of activation from the discriminative part (thesis section 2.4), measured on a
run's own weights (issue 27): experiment 4 with the true parts of a synthetic data set
painted over (``experiments.synthetic_part_mask_fn``) on the first ``flow_images`` val
images; its drop of the class's activation on the rest of the body, in % of the activation
before, pooled over the objects (lower: the activation reaches beyond the part, what the
losses should encourage). Pooled, not a mean of each object's %, which an object whose
activation before is near zero would swamp."""
import math
import os

from pixelfeedback.nets import largefov
from pixelfeedback.nets.netspec import write_net
from python_layers import ToolkitError

FLOW_DIR = "flow"   # in the run's folder: experiment 4's own run folder (cached, resumable)


def check_flow_data(cfg):
    """``--flow-images`` needs the parts' annotations of a tools/synthetic.py data set."""
    if cfg.flow_images and not os.path.isdir(os.path.join(cfg.data_root, "Objects")):
        raise ToolkitError(f"--flow-images needs a data set made by tools/synthetic.py: "
                           f"{cfg.data_root} has no Objects/ (the parts to paint over); "
                           "leave --flow-images out for other data")


def flow_measure(cfg, weights, run_dir):
    """{"drop_pct": 100 x the summed drop / the summed |activation before| over the objects,
    "mean_before", "mean_after": the objects' mean activations, "objects", "images"} of
    experiment 4 on ``weights`` (the run's own), or None without ``cfg.flow_images``."""
    if not cfg.flow_images:
        return None
    from pixelfeedback import experiments

    deploy = os.path.join(run_dir, "deploy.prototxt")
    write_net(largefov.deploy_net(cfg.width_div, cfg.num_classes, size=cfg.test_size), deploy)
    result = experiments.run_all(
        deploy, weights, cfg.data_root, cfg.val_list, os.path.join(run_dir, FLOW_DIR),
        experiments=("salient",), num_classes=cfg.num_classes, class_names=cfg.class_names,
        size=cfg.test_size, limit=cfg.flow_images, figures=0, progress=False,
        mask_fn=experiments.synthetic_part_mask_fn(cfg.data_root))["salient"]
    rows = [row for row in result["rows"]
            if math.isfinite(row["mean_before"]) and math.isfinite(row["mean_after"])]
    before = sum(abs(row["mean_before"]) for row in rows)
    drop = sum(row["mean_before"] - row["mean_after"] for row in rows)
    return {"drop_pct": 100.0 * drop / before if before else None, "objects": len(rows),
            "mean_before": sum(r["mean_before"] for r in rows) / len(rows) if rows else None,
            "mean_after": sum(r["mean_after"] for r in rows) / len(rows) if rows else None,
            "images": result["images"]}
