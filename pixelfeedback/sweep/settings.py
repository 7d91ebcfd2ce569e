"""Every setting of the Table 3.1 sweep, each defined once: its name, flag, default, the
check of its values (an argparse type, which also checks a library caller's value) and its
role: whether it decides a run's result (the run folder's fingerprint), whether every
result records it, and which setting it only matters with.

``tools/reproduce_table.py`` makes its flags from ``SETTINGS`` (``add_arguments``);
``plan.SweepConfig`` takes its attributes, defaults and checks from it; the fingerprint and
the result records are derived from the roles. Adding a setting means one ``Setting`` here
and the code that uses it.
"""
import argparse
import os

from pixelfeedback import cli
from pixelfeedback.nets.largefov import DEFAULT_DATA_ROOT, FINETUNE, STAGE1
from pixelfeedback.nets.registry import MODELS
from pixelfeedback.runfolder import RunFolder
from pixelfeedback import thesis
from python_layers import ToolkitError
from python_layers.template_similarity import ALL_LOSS_NAMES, DEFAULT_PARAMS, NORMALIZATIONS

_MISSING = object()


class Setting:
    """One setting. ``parse`` checks a value (text from the command line, or a library
    caller's value) and returns it in its type, raising argparse.ArgumentTypeError.
    ``decides``: part of the fingerprint (a rerun with another value is refused).
    ``path``: a file or folder, made absolute and fingerprinted as ``RunFolder.path``.
    ``needs``: the setting this one matters only with; without it the fingerprint holds
    None (``omit_unneeded``: nothing, for settings added after folders were made without
    them; ``was``: the setting whose value it had in such folders, so that they resume).
    ``recorded``: every result file holds it; ``legacy`` is what a result written before
    it was recorded was run with. ``content``: a file whose contents decide the results:
    the fingerprint also holds its digest (``RunFolder``'s ``contents``), so that a file
    replaced under the same path is refused, naming it."""

    def __init__(self, name, default, parse=None, help=None, *, flag=None, decides=False,
                 path=False, needs=None, omit_unneeded=False, omit_unset=False, was=None,
                 recorded=False, legacy=_MISSING, content=False, adder=None,
                 **argparse_options):
        self.name, self.default, self.parse, self.help = name, default, parse, help
        self.adder = adder  # a pixelfeedback.cli add_* helper that owns the flag's wording
        self.flag = flag if flag is not None else "--" + name.replace("_", "-")
        self.dest = self.flag[2:].replace("-", "_")  # its attribute of a parsed command line
        self.decides, self.path, self.needs = decides, path, needs
        self.omit_unneeded, self.omit_unset, self.was = omit_unneeded, omit_unset, was
        self.recorded, self.legacy, self.content = recorded, legacy, content
        self.argparse_options = argparse_options

    def check(self, value):
        """A library caller's value, checked by the flag's own parser: ToolkitError naming
        the flag."""
        if value is None and self.default is None:
            return None
        if self.path:
            return os.path.abspath(os.fspath(value))
        if self.parse is None:
            return value
        try:
            return self.parse(value)
        except argparse.ArgumentTypeError as exc:
            raise ToolkitError(f"{self.flag} {exc}") from None

    def given(self, cfg):
        """Whether ``cfg`` holds another value than this setting's default."""
        default = self.default
        if self.path and default is not None:
            default = os.path.abspath(default)
        return getattr(cfg, self.name) != default

    def stored(self, cfg):
        """(include, value) of this setting in the fingerprint of ``cfg``."""
        value = getattr(cfg, self.name)
        if self.needs and not getattr(cfg, self.needs):
            return not self.omit_unneeded, None
        if value is None and self.omit_unset:
            return False, None
        return True, RunFolder.path(value) if self.path and value is not None else value

    def add_to(self, parser):
        """The setting's flag on ``parser``."""
        if self.adder is not None:
            return self.adder(parser, self)
        options = dict(self.argparse_options)
        if self.parse is not None and "action" not in options and "choices" not in options:
            options["type"] = self.parse
        default = self.default
        if isinstance(default, tuple) and default:
            default = ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
        return parser.add_argument(self.flag, dest=self.dest, default=default,
                                   help=self.help, **options)


def _width_divisor(text):
    value = cli.positive_int(text)
    if 64 % value:
        raise argparse.ArgumentTypeError(f"must divide 64 (1, 2, 4, ... 64), got {text!r}")
    return value


def loss_list(text):
    """argparse type: comma-separated template loss names, none twice (a list or tuple of
    names is checked the same way)."""
    names = list(text) if isinstance(text, (list, tuple)) else [
        part.strip() for part in str(text).split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"is empty; name one or more of {', '.join(ALL_LOSS_NAMES)}")
    for index, name in enumerate(names):
        if name not in ALL_LOSS_NAMES:
            raise argparse.ArgumentTypeError(
                f"unknown loss {name!r}; choose from {', '.join(ALL_LOSS_NAMES)}")
        if name in names[:index]:
            raise argparse.ArgumentTypeError(f"names {name!r} twice; give each once")
    return tuple(names)


lambda_list = cli.comma_list(cli.nonnegative_float, "finite numbers >= 0 (loss weights)")
seed_list = cli.comma_list(cli.nonnegative_int, "integers >= 0 (seeds)")
_gpu_list = cli.comma_list(cli.nonnegative_int, "GPU ids (integers >= 0)")


def device_list(text):
    """argparse type: comma-separated GPU ids, one worker each. A library caller's list may
    also hold None for a CPU worker."""
    if isinstance(text, (list, tuple)) and None in text:
        gpus = [device for device in text if device is not None]
        if gpus:
            _gpu_list(gpus)  # ids >= 0, none twice
        return tuple(None if device is None else int(device) for device in text)
    return _gpu_list(text)


size_8k_plus_1 = cli.size_8k_plus_1()

SEEDS = (0, 1, 2)  # runs per cell by default
# Stage 1's ImageNet init when no trained weights are given: the fair protocol's start.
IMAGENET_INIT = os.path.join("weights", MODELS["largefov-init"].weights)

NORMALIZE_HELP = ("the template term's normalisation: none (default) = Algorithm 3 literally, "
                  "the sum over the batch's pixels divided by the classes; valid = also "
                  "divided by the valid pixels, so the same lambda is about batch x label "
                  "pixels times weaker (16810 at batch 10, crop 321)")

SETTINGS = (
    Setting("out", "runs/table31", None, path=True, adder=lambda parser, own: cli.add_out(
        parser, own.default, "output folder (a run folder: results, runs, table)")),
    Setting("data_root", DEFAULT_DATA_ROOT, None,
            "VOC 2012 folder holding JPEGImages/ and the label folders", decides=True,
            path=True),
    Setting("train_list", FINETUNE.list_file, None,
            "DeepLab list file of the fine-tuning images (the default is VOC 2012 train, "
            "1,464 images: the thesis's 'train' with 1456 images is ambiguous between it "
            "and train_aug)", decides=True, path=True, content=True),
    Setting("val_list", "data/lists/val.txt", None, "list file evaluated", decides=True,
            path=True, content=True),
    Setting("init_weights", None, None,
            "skip stage 1 and fine-tune from these trained LargeFOV weights (your own "
            "stage-1 baseline); weights that have seen VOC 2012 val, such as the released "
            "train2_iter_8000, also need --val-trained-init", decides=True, path=True,
            content=True),
    Setting("val_trained_init", False, None,
            "allow --init-weights that have seen VOC 2012 val (the released "
            "train2_iter_8000, fine-tuned on train+val): its val mIoU is then no fair "
            "measurement, and the table's title and CSV say so", recorded=True, legacy=False,
            action="store_true"),
    Setting("losses", thesis.LOSSES, loss_list,
            "comma-separated template losses: " + ", ".join(ALL_LOSS_NAMES)),
    Setting("lambdas", thesis.LAMBDAS, lambda_list,
            "comma-separated loss weights (finite, >= 0)"),
    Setting("normalize", DEFAULT_PARAMS["normalize"], cli.one_of(NORMALIZATIONS, "a normalisation"),
            NORMALIZE_HELP, decides=True, recorded=True, legacy="valid",
            choices=NORMALIZATIONS),
    Setting("seeds", SEEDS, seed_list, "comma-separated seeds, integers >= 0 (runs per cell)"),
    Setting("iterations", FINETUNE.iterations, cli.positive_int,
            "fine-tuning iterations (the thesis gives none; 2000 is this project's choice, "
            "SPEC section 3)", decides=True),
    Setting("snapshot_every", None, cli.positive_int,
            "solver snapshot interval, 1..iterations (default: a quarter of the iterations)",
            metavar="N"),
    Setting("keep_snapshots", 2, cli.nonnegative_int,
            "snapshots kept per run once its training finished, newest first (the final "
            "weights are always kept)", metavar="N"),
    Setting("batch_size", FINETUNE.batch_size, cli.positive_int, "fine-tuning batch size",
            decides=True),
    Setting("crop", FINETUNE.crop, size_8k_plus_1, "training crop (8k+1)", decides=True),
    Setting("test_size", 513, size_8k_plus_1,
            "test input size (8k+1, at least the largest val image)", decides=True),
    Setting("width_div", 1, _width_divisor,
            "divide every layer's channels (1 = the real LargeFOV)", decides=True),
    Setting("num_classes", 21, cli.int_at_least(2), "classes of fc8", decides=True),
    Setting("base_lr", None, cli.positive_float,
            "fine-tuning learning rate (default: the thesis's 1e-4)", decides=True),
    Setting("gpu", None, cli.nonnegative_int, adder=lambda parser, own: cli.add_gpu(parser)),
    Setting("devices", None, device_list,
            "run one worker per GPU (comma-separated ids, e.g. 0,1,2,3), each taking the "
            "next run no one holds", flag="--gpus", metavar="IDS"),
    Setting("workers", None, cli.positive_int,
            "on the CPU: this many trainings at once, each in its own worker process taking "
            "the next run no one holds (default: one per core this process may use); not "
            "used with --gpu or --gpus", metavar="N"),
    Setting("threads", None, cli.positive_int,
            "on the CPU: the threads each training and its evaluation may use (default: the "
            "cores divided by --workers, so one each); every result records it", metavar="N"),
    Setting("shard", None, cli.shard_spec,
            "do only part I of N of the runs (every N-th), so that N processes or machines "
            "sharing --out split the sweep; any of them may rerun to write the whole table "
            "(docker/slurm_table31.sh is an example)", metavar="I/N"),
    Setting("step_control", "stage1", cli.step_schedule,
            "the step-schedule control: the baseline's step schedule continued from its "
            "iteration DONE, lambda 0 (stage1, the default: DeepLab's stage-1 schedule "
            "0.001,0.1,2000 continued from --baseline-iterations; none: no step control)",
            decides=True, omit_unset=True, nargs="?", const="stage1",
            metavar="BASE_LR,GAMMA,STEPSIZE,DONE|stage1|none"),
    Setting("baseline_from", None, None,
            "train DeepLab's stage-1 baseline from this ImageNet init and fine-tune from it "
            f"(the default when --init-weights is not given: {IMAGENET_INIT})",
            decides=True, path=True, content=True, metavar="IMAGENET_CAFFEMODEL"),
    Setting("baseline_list", STAGE1.list_file, None,
            "training list of the stage-1 baseline (DeepLab's train_aug, 10,582 images)",
            decides=True, path=True, content=True, needs="baseline_from"),
    Setting("baseline_batch_size", STAGE1.batch_size, cli.positive_int,
            "batch size of the stage-1 baseline (20: the recipe of the thesis's baseline "
            "0.6225; DeepLab's published train.prototxt has 30)", decides=True,
            needs="baseline_from", omit_unneeded=True, was="batch_size"),
    Setting("baseline_iterations", STAGE1.iterations, cli.positive_int,
            "iterations of the stage-1 baseline (step schedule: lr 1e-3, x0.1 every 2000)",
            decides=True, needs="baseline_from"),
    Setting("flow_images", None, cli.positive_int,
            "also measure the flow of activation from the part on each run's own weights: "
            "experiment 4 with the true parts painted over, on the first N val images (a "
            "tools/synthetic.py data set; the table adds it beside the pairs)", decides=True,
            omit_unset=True, metavar="N"),
    Setting("restart", False, None,
            "discard what --out holds (runs of other settings included) and start afresh",
            action="store_true"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def add_arguments(parser):
    """Every sweep setting's flag on ``parser`` (tools/reproduce_table.py)."""
    for setting in SETTINGS:
        setting.add_to(parser)


def folder_history(cfg):
    """{name: value} for the settings added after folders were made without them: the
    value they had there (that of the setting ``was`` names), for ``RunFolder``'s
    ``absent_means`` so that such a folder resumes when it is the same."""
    return {setting.name: getattr(cfg, setting.was) for setting in SETTINGS if setting.was}


def record_fields(cfg):
    """The settings every result file records, with their values in ``cfg``."""
    return {setting.name: getattr(cfg, setting.name) for setting in SETTINGS
            if setting.recorded}


def recorded_value(record, name):
    """A recorded setting read back from a result: its value, or what results written
    before it was recorded were run with."""
    setting = BY_NAME[name]
    return record.get(name, setting.legacy)
