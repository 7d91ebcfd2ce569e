"""What a sweep runs: its configuration (the settings of ``settings.SETTINGS``), the runs it
plans (the optional stage-1 baseline, the controls, every loss x lambda x seed), their names
and result files, and how many snapshots each writes."""
import collections
import os

from pixelfeedback.nets.largefov import STAGE1
from pixelfeedback.sweep.settings import BY_NAME, IMAGENET_INIT, SETTINGS
from python_layers.thread_pool import available_cores
from python_layers.template_similarity import ALL_LOSS_NAMES

CONTROL = "control"
CONTROL_STEP = "control_step"  # the baseline's step schedule continued, lambda 0
BASELINE = "baseline"  # DeepLab's stage-1 training (optional), the fine-tunes' start

LOSS_TITLES = {  # "selective_cosine" -> "selective cosine", and the runs without a loss
    **{name: name.replace("_", " ") for name in ALL_LOSS_NAMES},
    "correlation_printed": "correlation, Eq. 3.1 as printed",
    "selective_correlation_printed": "selective correlation, Eq. 3.1 as printed",
    CONTROL: "control (softmax only)", BASELINE: "stage-1 baseline (before fine-tuning)",
    CONTROL_STEP: "control, step schedule continued",
}

# DeepLab-LargeFOV's stage-1 schedule (SPEC section 2): what --step-control continues.
STAGE1_STEP_SCHEDULE = {"base_lr": STAGE1.base_lr, "gamma": STAGE1.gamma,
                        "stepsize": STAGE1.stepsize}

Run = collections.namedtuple("Run", ["loss", "lam", "seed"])


class SweepConfig(object):
    """Everything a sweep needs: every setting of ``settings.SETTINGS`` (its default there;
    a value given here is checked by the setting's own parser, a ToolkitError naming its
    flag), plus ``progress``, the ``class_names`` of the evaluation and ``control_seeds``
    (the controls' seeds when not ``seeds``: ``driver.run_sequential`` gives the controls
    more). Without ``init_weights`` the sweep trains stage 1 from ``baseline_from``
    (default: the ImageNet init), the fair protocol."""

    def __init__(self, progress=True, class_names=None, control_seeds=None, **values):
        unknown = sorted(set(values) - set(BY_NAME))
        if unknown:
            raise TypeError(f"SweepConfig got unknown settings: {', '.join(unknown)}")
        self._set({name: BY_NAME[name].check(value) for name, value in values.items()})
        self.progress = progress
        self.class_names = list(class_names) if class_names else None
        self.control_seeds = tuple(int(s) for s in control_seeds) if control_seeds else None

    @classmethod
    def from_args(cls, args, progress=True):
        """The configuration of a parsed command line (``settings.add_arguments``): its
        values were checked by argparse already."""
        cfg = cls.__new__(cls)
        cfg._set({setting.name: getattr(args, setting.dest) for setting in SETTINGS})
        cfg.progress, cfg.class_names, cfg.control_seeds = progress, None, None
        return cfg

    def _set(self, values):
        for setting in SETTINGS:
            value = values.get(setting.name, setting.default)
            if setting.path and value is not None:
                value = os.path.abspath(os.fspath(value))
            setattr(self, setting.name, value)
        if self.devices is not None:
            self.devices = list(self.devices)
        if self.init_weights is None and self.baseline_from is None:  # the fair protocol
            self.baseline_from = os.path.abspath(IMAGENET_INIT)
        if self.snapshot_every is None:
            self.snapshot_every = max(self.iterations // 4, 1)
        if self.step_control == "stage1":
            self.step_control = dict(STAGE1_STEP_SCHEDULE, done=self.baseline_iterations)
        elif self.step_control:
            self.step_control = dict(self.step_control)

    def fingerprint(self):
        """The settings that decide each run's result: the run folder refuses others. Which
        losses, lambdas and seeds are run is not among them, so a sweep can be extended.
        ``contents`` holds the digests of the files whose contents decide the results."""
        from pixelfeedback.runfolder import CONTENTS, content_digest

        entries, contents = {}, {}
        for setting in SETTINGS:
            if setting.decides:
                include, value = setting.stored(self)
                if include:
                    entries[setting.name] = value
                if include and setting.content and value is not None:
                    contents[setting.name] = content_digest(getattr(self, setting.name))
        entries[CONTENTS] = contents
        return entries

    def on_gpus(self):
        return self.gpu is not None or self.devices is not None

    def trainers(self):
        """The devices of the worker processes (GPU ids, None for a CPU worker), or None
        when this process trains the runs itself, one after the other. On the CPU: one
        worker per core unless ``workers`` says otherwise."""
        if self.devices:
            return list(self.devices)
        workers = None if self.on_gpus() else self.workers or available_cores()
        return [None] * workers if workers and workers > 1 else None

    def training_threads(self):
        """The CPU threads of each training and its evaluation (None on GPUs): ``threads``,
        else the cores shared out among the workers (one each by default)."""
        if self.on_gpus():
            return None
        return self.threads or max(1, available_cores() // len(self.trainers() or [None]))

    def control_seed_list(self):
        """The seeds of the controls: ``control_seeds``, else ``seeds``."""
        return self.control_seeds or self.seeds

    def runs(self):
        """The optional baseline, the control (and the step control) for every seed, then
        every loss x lambda x seed."""
        planned = [Run(BASELINE, 0.0, self.seeds[0])] if self.baseline_from else []
        planned += [Run(CONTROL, 0.0, seed) for seed in self.control_seed_list()]
        if self.step_control:
            planned += [Run(CONTROL_STEP, 0.0, seed) for seed in self.control_seed_list()]
        planned += [Run(loss, float(lam), seed) for loss in self.losses
                    for lam in self.lambdas for seed in self.seeds]
        return planned

    def shard_runs(self):
        """The runs this process takes on: all, or its shard's (every n-th fine-tune; the
        baseline, which every fine-tune needs, belongs to every shard)."""
        planned = self.runs()
        if not self.shard:
            return planned
        index, count = self.shard
        tunes = [run for run in planned if run.loss != BASELINE]
        return [run for run in planned if run.loss == BASELINE] + tunes[index - 1::count]


def run_name(run):
    """``baseline``, ``control_seed0``, ``cosine_lam0.1_seed2``: a run's folder and file
    stem (names only: a run's lambda is read from its record, never from its name)."""
    if run.loss == BASELINE:
        return "baseline"
    if run.loss in (CONTROL, CONTROL_STEP):
        return f"{run.loss}_seed{run.seed}"
    return f"{run.loss}_lam{run.lam:g}_seed{run.seed}"


def result_file(run):
    """The run's result, relative to the sweep folder."""
    return os.path.join("results", run_name(run) + ".json")


def baseline_snapshot_every(cfg):
    """The stage-1 baseline snapshots four times, so an interrupted one resumes."""
    return max(cfg.baseline_iterations // 4, 1)


def snapshot_counts(cfg, run):
    """(snapshots written, snapshots kept) of one run: Caffe snapshots every interval and
    at the end."""
    if run.loss == BASELINE:
        iterations, every = cfg.baseline_iterations, baseline_snapshot_every(cfg)
    else:
        iterations, every = cfg.iterations, cfg.snapshot_every
    written = -(-iterations // every)
    return written, min(written, cfg.keep_snapshots)
