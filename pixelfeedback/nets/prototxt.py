"""The checked-in ``prototxt/`` folder: every generated net and solver, written from the
NetSpec builders (LargeFOV's and the registry's deploy nets), and the one check that the
checked-in files are current (``tools/make_prototxt.py --check``; a test runs it).
"""
import collections
import os
import sys

from pixelfeedback import files
from pixelfeedback.nets import registry
from pixelfeedback.nets.largefov import (
    DEFAULT_DATA_ROOT, DEFAULT_NORMALIZE, DEFAULT_SEED, FINETUNE, SNAPSHOT_DIR, STAGE1, TABLE31_LOSSES,
    baseline_solver, deploy_net, experiment_name, solver, test_net, train_net)
from pixelfeedback.nets.netspec import to_text
from pixelfeedback.paths import PROTOTXT_DIR, REPO_ROOT


def render_all(lam=0.01, data_root=DEFAULT_DATA_ROOT, list_file=FINETUNE.list_file,
               batch_size=FINETUNE.batch_size, crop=FINETUNE.crop,
               iterations=FINETUNE.iterations, baseline_list=STAGE1.list_file,
               baseline_batch_size=STAGE1.batch_size, baseline_iterations=STAGE1.iterations,
               seed=DEFAULT_SEED, width_div=1, num_classes=21, test_size=513, out_dir=None,
               normalize=DEFAULT_NORMALIZE):
    """{file name: text} of every generated net and solver: LargeFOV's (the fine-tunes with
    these options, the stage-1 baseline with its own list, batch and iterations) and the
    registry's other deploy nets (see ``write_all``)."""
    out_dir = os.path.abspath(out_dir) if out_dir else PROTOTXT_DIR
    texts = collections.OrderedDict()
    common = dict(data_root=data_root, crop=crop, width_div=width_div,
                  num_classes=num_classes, seed=seed)
    data = {"baseline": dict(common, list_file=baseline_list, batch_size=baseline_batch_size),
            "finetune": dict(common, list_file=list_file, batch_size=batch_size)}
    runs = [("softmax", "baseline")] + [(loss, "finetune") for loss in TABLE31_LOSSES]
    for loss, stage in runs:
        name = experiment_name(loss, stage)
        net_file = f"train_{name}.prototxt"
        texts[net_file] = to_text(train_net(loss, lam, stage=stage, normalize=normalize,
                                            **data[stage]))
        prefix = os.path.join(REPO_ROOT, SNAPSHOT_DIR, name)
        net_path = os.path.join(out_dir, net_file)
        if stage == "baseline":
            s = baseline_solver(net_path, baseline_iterations, seed=seed, snapshot_prefix=prefix)
        else:
            s = solver(net_path, iterations, seed=seed, snapshot_prefix=prefix)
        texts[f"solver_{name}.prototxt"] = to_text(s)
    texts["test.prototxt"] = to_text(test_net(width_div, num_classes, test_size))
    texts["deploy.prototxt"] = to_text(deploy_net(width_div, num_classes, test_size))
    for build, file_name in registry.published_deploy_nets().values():   # at full size
        texts[file_name] = to_text(build())
    return texts


def write_all(out_dir=None, **options):
    """Write train_{baseline,control,cosine,correlation,selective_cosine,
    selective_correlation}, solver_<same>, test, deploy and the registry's deploy_*.prototxt
    into ``out_dir`` (default: the repository's prototxt/). Returns the paths written."""
    out_dir = os.path.abspath(out_dir) if out_dir else PROTOTXT_DIR
    paths = []
    for name, text in render_all(out_dir=out_dir, **options).items():
        path = os.path.join(out_dir, name)
        files.write_text(path, text)
        paths.append(path)
    return paths


def stale_files(out_dir=None, **options):
    """Generated files in ``out_dir`` missing or differing from what ``write_all`` would
    write now (other files there are not looked at)."""
    out_dir = os.path.abspath(out_dir) if out_dir else PROTOTXT_DIR
    stale = []
    for name, text in render_all(out_dir=out_dir, **options).items():
        path = os.path.join(out_dir, name)
        current = open(path).read() if os.path.isfile(path) else None
        if current != text:
            stale.append(path)
    return stale


def write_or_check(out_dir=None, check=False, **options):
    """What tools/make_prototxt.py does: write every generated file, or with ``check`` list
    the stale ones and return 1 when there are any."""
    if check:
        stale = stale_files(out_dir, **options)
        for path in stale:
            print(f"out of date: {path}")
        if stale:
            print("run tools/make_prototxt.py to regenerate them", file=sys.stderr)
            return 1
        print("all generated prototxt files are current")
        return 0
    for path in write_all(out_dir, **options):
        print(f"wrote {path}")
    return 0
