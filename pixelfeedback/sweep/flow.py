"""The flow of activation from the discriminative part (thesis section 2.4), measured on a
run's own weights (issue 27): experiment 4 with the true parts of a synthetic data set
painted over (``experiments.synthetic_part_mask_fn``) on the first ``flow_images`` val
images; its drop of the class's activation on the rest of the body, in % (lower: the
activation reaches beyond the part, what the losses should encourage)."""
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
    """{"drop_pct": mean over the objects, "objects": how many, "images": how many} of
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
    drops = [row["drop_pct"] for row in result["rows"] if math.isfinite(row["drop_pct"])]
    return {"drop_pct": sum(drops) / len(drops) if drops else None, "objects": len(drops),
            "images": result["images"]}
