"""Everything a sweep checks before its first run trains, so that a bad argument fails in
seconds, not after hours of training: the combinations of settings (each value was checked
where it entered), the GPUs, the list files and every image and label they name, the disk
the snapshots need, and the initial weights (they load into the net to be trained and are
finite). Errors are ToolkitErrors naming the flag and what to do."""
import os
import shutil

from pixelfeedback.data_lists import check_list
from pixelfeedback.messages import note
from pixelfeedback.nets import largefov, registry
from pixelfeedback.nets.loading import check_gpu
from pixelfeedback.nets.netspec import write_net
from pixelfeedback.sweep.flow import check_flow_data
from pixelfeedback.sweep.plan import result_file, snapshot_counts
from pixelfeedback.sweep.settings import SETTINGS
from python_layers import ToolkitError


def check(cfg):
    """Every check, in the order that fails fastest; ``driver.run_sweep`` calls it first."""
    check_combinations(cfg)
    if cfg.gpu is not None:
        check_gpu(cfg.gpu, "--gpu")
    for device in cfg.devices or []:
        if device is not None:  # None: a CPU worker
            check_gpu(device, "--gpus")
    check_files(cfg)
    check_flow_data(cfg)
    check_disk(cfg)
    check_init_weights(cfg)


def check_combinations(cfg):
    """What no single setting can check alone."""
    if not 1 <= cfg.snapshot_every <= cfg.iterations:
        raise ToolkitError(f"the snapshot interval (--snapshot-every) must be an integer "
                           f"between 1 and the iterations ({cfg.iterations}), got "
                           f"{cfg.snapshot_every!r}")
    controls = cfg.control_seed_list()
    repeated = [seed for i, seed in enumerate(controls) if seed in controls[:i]]
    if repeated:
        raise ToolkitError(f"the control seeds name {repeated[0]!r} twice; give each once")
    if cfg.step_control:
        largefov.continued_step_schedule(iterations=cfg.iterations, **cfg.step_control)
    if cfg.devices is not None and cfg.gpu is not None:
        raise ToolkitError("give either --gpu (one GPU) or --gpus (one worker per GPU), "
                           "not both")
    if cfg.on_gpus() and (cfg.workers or cfg.threads):
        note("--workers and --threads do nothing with --gpu or --gpus: each GPU's worker "
             "trains one run at a time")
    check_init_provenance(cfg)


def trained_on(weights):
    """The splits the registry says ``weights`` (by file name) were trained on, or None."""
    for model in registry.MODELS.values():
        if os.path.basename(weights) == model.weights:
            return model.trained_on
    return None


def check_init_provenance(cfg):
    """Fine-tunes may start from weights that have seen VOC 2012 val only when the user says
    so (``--val-trained-init``); a flag that does nothing here says so."""
    if cfg.baseline_from:
        if cfg.init_weights:
            note(f"--init-weights is not used: the fine-tunes start from the stage-1 "
                 f"baseline trained from {cfg.baseline_from} (--baseline-from)")
        if cfg.val_trained_init:
            note("--val-trained-init does nothing: the sweep trains stage 1 and fine-tunes "
                 "from it (give --init-weights instead of --baseline-from to start from "
                 "trained weights)")
        return
    given = [s.flag for s in SETTINGS if s.needs == "baseline_from" and s.given(cfg)]
    if given:
        note(f"{', '.join(given)} do(es) nothing: there is no stage 1 when the fine-tunes "
             "start from --init-weights")
    seen = trained_on(cfg.init_weights) or ()
    if "voc2012_val" in seen and not cfg.val_trained_init:
        raise ToolkitError(
            f"--init-weights {cfg.init_weights} has seen VOC 2012 val (the released "
            "DeepLab-LargeFOV, fine-tuned on train+val): its fine-tunes' val mIoU would not be "
            "a fair measurement. Leave --init-weights out to train stage 1 from the ImageNet "
            "init (the fair protocol), or pass --val-trained-init to use these weights anyway "
            "(the table then says so)")


def check_files(cfg):
    """The initial weights, the list files and every image and label they name."""
    if cfg.baseline_from:
        if not os.path.isfile(cfg.baseline_from):
            raise ToolkitError(f"stage-1 initial weights (--baseline-from) not found: "
                               f"{cfg.baseline_from} (python weights/fetch.py largefov-init "
                               "fetches vgg16_20M.caffemodel)")
    elif not os.path.isfile(cfg.init_weights):
        raise ToolkitError(f"initial weights not found: {cfg.init_weights} "
                           "(python weights/fetch.py largefov, or pass --init-weights)")
    sizes = {}  # (image, label) -> image size, so a list given twice is read once
    labels = dict(sizes=sizes, progress=cfg.progress, num_classes=cfg.num_classes,
                  classes_flag="--num-classes")  # every label's mode and values too
    check_list(cfg.train_list, cfg.data_root, "--train-list", **labels)
    check_list(cfg.val_list, cfg.data_root, "--val-list", max_size=cfg.test_size,
               max_size_name="the test size", size_flag="--test-size", unique_names=True,
               **labels)
    if cfg.baseline_from:
        check_list(cfg.baseline_list, cfg.data_root, "--baseline-list", **labels)


def check_init_weights(cfg):
    """The initial weights load into the net the sweep trains (layer by layer, shapes as
    ``--width-div`` and ``--num-classes`` make them) and hold no NaN or inf, so that broken
    or mismatched weights are refused before the first `caffe train`. The stage-1
    baseline's ImageNet init (``--baseline-from``) has no fc8 of ours: only the layers it
    has are checked."""
    import tempfile

    from pixelfeedback.nets.loading import load_net
    from pixelfeedback.nets.weights import check_finite_params

    path = cfg.baseline_from or cfg.init_weights
    flag = "--baseline-from" if cfg.baseline_from else "--init-weights"
    with tempfile.TemporaryDirectory(prefix="sweep-check-") as tmp:
        deploy = os.path.join(tmp, "deploy.prototxt")
        # parameter shapes do not depend on the input size: a small one builds fast
        write_net(largefov.deploy_net(cfg.width_div, cfg.num_classes, size=65), deploy)
        try:
            net = load_net(deploy, path, require_all=not cfg.baseline_from)
        except ToolkitError as exc:
            raise ToolkitError(
                f"the initial weights ({flag}) do not fit the net this sweep trains "
                f"(--width-div {cfg.width_div}, --num-classes {cfg.num_classes}): {exc}. Pass "
                f"the --width-div and --num-classes they were trained with, or other "
                f"weights") from None
    try:
        check_finite_params(net, path)
    except ToolkitError as exc:
        raise ToolkitError(f"the initial weights ({flag}) are unusable: {exc}") from None


def disk_needed(cfg):
    """Bytes the snapshots of the runs still to do need at most, and how it is made up.

    A snapshot is the net's .caffemodel (about the initial weights' file) plus its
    .solverstate (the momentum history: as much again). A finished run keeps its newest
    ``keep_snapshots`` (at least the final .caffemodel); the run in training holds all it
    wrote until it finishes."""
    weights = cfg.init_weights if not cfg.baseline_from else cfg.baseline_from
    weights_bytes = os.path.getsize(weights)
    snapshot_bytes = 2 * weights_bytes
    pending = [run for run in cfg.shard_runs() if cfg.restart or not os.path.exists(
        os.path.join(cfg.out, result_file(run)))]
    kept, peak = 0, 0
    for run in pending:
        written, keep = snapshot_counts(cfg, run)
        kept_bytes = max(keep * snapshot_bytes, weights_bytes)
        kept += kept_bytes
        peak = max(peak, written * snapshot_bytes - kept_bytes)
    trainers = len(cfg.devices) if cfg.devices else 1  # each holds its run's snapshots
    return kept + trainers * peak, dict(runs=len(pending), snapshot_bytes=snapshot_bytes)


def _existing_folder(path):
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def human_bytes(count):
    """``20.0 MB``: decimal units, as disks are sold."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000.0


def check_disk(cfg):
    """The snapshots' disk need against the free space of --out's filesystem."""
    need, parts = disk_needed(cfg)
    free = shutil.disk_usage(_existing_folder(cfg.out)).free
    if need > free:
        raise ToolkitError(
            f"the sweep's snapshots need about {human_bytes(need)} but the filesystem of "
            f"{cfg.out} has {human_bytes(free)} free ({parts['runs']} runs to do, "
            f"{human_bytes(parts['snapshot_bytes'])} a snapshot (.caffemodel and .solverstate), "
            f"{cfg.keep_snapshots} kept per run plus those of the run in training); free some "
            "space, pass another --out, or keep fewer (--keep-snapshots) or write fewer "
            "(--snapshot-every)")
    return need, free
