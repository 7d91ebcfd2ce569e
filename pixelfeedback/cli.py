"""The one entry wrapper of the command-line scripts, and the flags they share.

Every script in ``tools/`` is ``argparse`` plus one library call::

    def main(argv=None):
        return cli.main(build_parser(), library_function, argv)

    if __name__ == "__main__":
        sys.exit(main())

``main`` does the process setup once, at call time (importing this module changes nothing),
and turns every error a user can fix into ``error: <message>`` and exit status 2, never a
traceback. The ``add_*`` helpers give ``--gpu``, ``--mean``, ``--out`` and ``--size`` one
meaning in every tool; the type functions validate numbers with messages naming the range.
"""
import argparse
import errno
import math
import os
import sys

from pixelfeedback.paths import REPO_ROOT
from python_layers import ToolkitError

EXIT_OK = 0
EXIT_USER_ERROR = 2      # argparse uses 2 for usage errors too
EXIT_INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for Ctrl-C


# ----------------------------------------------------------------------------- the wrapper

def prepare_process():
    """The process setup every tool needs, done before Caffe is imported: quiet glog
    (unless the user set ``GLOG_minloglevel``) and the repository root on the import path
    (Caffe imports ``python_layers.*`` for Python layers)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)


def main(parser, command, argv=None):
    """Parse ``argv`` (default ``sys.argv[1:]``) with ``parser``, then run ``command(args)``.

    Returns the exit status rather than exiting, so tests can call a script's ``main``
    in-process: 0 (or the int ``command`` returned; any other result means 0); 2 with
    ``error: <message>`` on stderr for a ToolkitError, an OSError (naming its path) or a
    missing Caffe; 130 on Ctrl-C.
    argparse's own usage errors and ``--help`` return their status (2, 0) the same way.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # argparse already printed usage/help
        return _exit_status(exc.code)
    prepare_process()
    try:
        status = command(args)
    except ToolkitError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("\ninterrupted: stopped by the user; finished work is kept; run the same "
              "command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        return _fail(describe_os_error(exc, out_flag=_out_flag(parser)))
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "caffe":
            raise
        return _fail(f"cannot import Caffe ({exc}); build it and the venv with `make setup`, "
                     "then run the tool with .venv/bin/python")
    # A command returns its exit status, or its result (a report, a table), which means 0.
    return status if isinstance(status, int) and not isinstance(status, bool) else EXIT_OK


def _exit_status(code):
    """sys.exit's argument as a status: None -> 0, an int as is, anything else -> 1."""
    if code is None:
        return EXIT_OK
    return code if isinstance(code, int) else 1


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def _out_flag(parser):
    """The tool's output folder flag, ``--out`` (or ``--dest`` for the fetch tools), when
    it has one (then the advice names it), else None."""
    options = getattr(parser, "_option_string_actions", {})
    return next((flag for flag in ("--out", "--dest") if flag in options), None)


def describe_os_error(exc, out_flag="--out"):
    """A one-line message for an OSError that names its path and says what to do.

    ``out_flag``: the flag to suggest for choosing another output location (None: the
    tool has none, so the advice says "another location").
    """
    path = exc.filename
    reason = exc.strerror or str(exc)
    if path is None:
        return reason
    path = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    elsewhere = f"choose another {out_flag}" if out_flag else "choose another location"
    code = exc.errno
    if code == errno.EROFS:
        return f"cannot write {path}: {reason}; {elsewhere}"
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        from pixelfeedback.files import free_space_text

        return (f"cannot write {path}: {reason} ({free_space_text(path)}); free some space "
                f"or {elsewhere} (finished work is kept)")
    if code in (errno.EACCES, errno.EPERM):
        return (f"cannot access {path}: {reason}; check its permissions"
                + (f", or {elsewhere} for the output" if out_flag else ""))
    if code == errno.ENOTDIR:
        return (f"cannot use {path}: {reason} (a part of the path is a file, not a folder); "
                f"{elsewhere} or move that file away")
    if code == errno.EISDIR:
        return (f"cannot use {path}: {reason} (a file is expected there, not a folder); "
                "give the path of a file")
    if code == errno.EEXIST:
        return f"cannot create {path}: {reason}; remove it or {elsewhere}"
    if code == errno.ENOENT:
        return f"cannot find {path}: {reason}; check the path and that its folder exists"
    return f"cannot use {path}: {reason}"


# ----------------------------------------------------------------------------- number types

def _type_error(requirement, text):
    return argparse.ArgumentTypeError(f"must be {requirement}, got {text!r}")


def _float(text, requirement):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise _type_error(requirement, text) from None
    if not math.isfinite(value):
        raise _type_error(requirement, text)
    return value


def finite_float(text):
    """argparse type: any finite number (not nan or inf)."""
    return _float(text, "a finite number")


def float_in(low=None, high=None, low_inclusive=True, high_inclusive=True):
    """argparse type factory: a finite number within the bounds given (None: unbounded).

    ``float_in(0, 1, low_inclusive=False)`` accepts (0, 1] and says
    "must be a finite number > 0 and <= 1, got '0'".
    """
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_inclusive else '>'} {low:g}")
    if high is not None:
        parts.append(f"{'<=' if high_inclusive else '<'} {high:g}")
    requirement = "a finite number" + (" " + " and ".join(parts) if parts else "")

    def parse(text):
        value = _float(text, requirement)
        if low is not None and (value < low or (value == low and not low_inclusive)):
            raise _type_error(requirement, text)
        if high is not None and (value > high or (value == high and not high_inclusive)):
            raise _type_error(requirement, text)
        return value

    parse.__name__ = "float_in"
    return parse


positive_float = float_in(0, low_inclusive=False)
positive_float.__doc__ = "argparse type: a finite number > 0."
positive_float.__name__ = "positive_float"
nonnegative_float = float_in(0)
nonnegative_float.__doc__ = "argparse type: a finite number >= 0."
nonnegative_float.__name__ = "nonnegative_float"
fraction = float_in(0, 1)
fraction.__doc__ = "argparse type: a finite number in [0, 1]."
fraction.__name__ = "fraction"


def _checked_int(requirement, accept, name):
    """argparse type: an integer for which ``accept(value)`` holds, else "must be
    <requirement>, got '<text>'"."""
    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise _type_error(requirement, text) from None
        if not accept(value):
            raise _type_error(requirement, text)
        return value

    parse.__name__ = name
    return parse


def int_at_least(minimum):
    """argparse type factory: an integer >= ``minimum`` ("must be an integer >= 1, got 'x'")."""
    return _checked_int(f"an integer >= {minimum}", lambda value: value >= minimum,
                        "int_at_least")


def int_between(minimum, maximum):
    """argparse type factory: an integer in [``minimum``, ``maximum``]."""
    return _checked_int(f"an integer from {minimum} to {maximum}",
                        lambda value: minimum <= value <= maximum, "int_between")


def size_8k_plus_1(minimum=9):
    """argparse type factory: an image or crop size of the form 8k+1 and >= ``minimum``, so
    that DeepLab-LargeFOV's stride 8 divides it exactly (129, 321, 513)."""
    return _checked_int(f"an integer 8k+1 >= {minimum} (e.g. 129, 321, 513)",
                        lambda value: value >= minimum and (value - 1) % 8 == 0,
                        "size_8k_plus_1")


positive_int = int_at_least(1)
positive_int.__doc__ = "argparse type: an integer >= 1."
positive_int.__name__ = "positive_int"
nonnegative_int = int_at_least(0)
nonnegative_int.__doc__ = "argparse type: an integer >= 0."
nonnegative_int.__name__ = "nonnegative_int"


def mean_type(text):
    """argparse type: a BGR mean 'B,G,R' -> (b, g, r) floats, three finite numbers."""
    requirement = "three comma-separated finite numbers B,G,R (e.g. 104.008,116.669,122.675)"
    parts = str(text).split(",")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(_float(part, requirement) for part in parts)
    except (ValueError, argparse.ArgumentTypeError):
        raise _type_error(requirement, text) from None


def comma_list(item_type, what):
    """argparse type factory: a non-empty comma-separated list of ``item_type`` values (a
    type of this module such as ``nonnegative_float``), none twice. A list or tuple (a
    library caller's value) is checked item by item the same way.

    ``comma_list(nonnegative_int, "integers >= 0")("0,x")`` says
    "must be a comma-separated list of integers >= 0, got '0,x' ('x' is not one)".
    """
    requirement = f"must be a comma-separated list of {what}"

    def parse(text):
        if isinstance(text, (list, tuple)):
            parts, shown = list(text), ",".join(map(str, text))
        else:
            parts = [part.strip() for part in str(text).split(",") if part.strip()]
            shown = text
        if not parts:
            raise argparse.ArgumentTypeError(f"{requirement}, got {shown!r} (none given)")
        values = []
        for part in parts:
            try:
                value = item_type(part)
            except (argparse.ArgumentTypeError, TypeError, ValueError):
                raise argparse.ArgumentTypeError(
                    f"{requirement}, got {shown!r} ({str(part)!r} is not one)") from None
            if value in values:
                raise argparse.ArgumentTypeError(
                    f"{requirement}, got {shown!r} ({str(part)!r} twice)")
            values.append(value)
        return tuple(values)

    parse.__name__ = "comma_list"
    return parse


def one_of(choices, what):
    """argparse type factory: one of ``choices`` (strings), e.g. a loss name."""
    def parse(text):
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"must be {what}: one of {', '.join(choices)}; got {text!r}")
        return text

    parse.__name__ = "one_of"
    return parse


def shard_spec(text):
    """argparse type: ``I/N`` (1 <= I <= N) -> (I, N); a pair is checked the same way."""
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).split("/")
    try:
        index, count = (int(part) for part in parts)
    except (TypeError, ValueError):
        index = count = None
    if index is None or not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"must be I/N, this process's part I of N (1 <= I <= N), e.g. 2/4; got {text!r}")
    return index, count


def step_schedule(text):
    """argparse type: ``BASE_LR,GAMMA,STEPSIZE,DONE`` of a step schedule -> {"base_lr",
    "gamma", "stepsize", "done"} (a dict with those keys is checked the same way);
    ``stage1`` (what ``--step-control`` alone gives: argparse passes its const through
    this too) stays ``"stage1"``, DeepLab's stage-1 schedule continued from the baseline's
    iterations; ``none`` (or None) is no step control."""
    if text == "stage1":
        return "stage1"
    if text is None or text == "none":
        return None
    keys = ("base_lr", "gamma", "stepsize", "done")
    if isinstance(text, dict):
        parts = [text[key] for key in keys] if sorted(text) == sorted(keys) else []
    else:
        parts = [part.strip() for part in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        base_lr, gamma = positive_float(parts[0]), float_in(0, 1, low_inclusive=False)(parts[1])
        stepsize, done = positive_int(parts[2]), nonnegative_int(parts[3])
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"must be BASE_LR,GAMMA,STEPSIZE,DONE (the baseline's step schedule and the "
            f"iteration it stopped at; base_lr > 0, 0 < gamma <= 1), e.g. 0.001,0.1,2000,6000; "
            f"got {text!r}") from None
    return dict(zip(keys, (base_lr, gamma, stepsize, done)))


# ----------------------------------------------------------------------------- shared flags

def add_gpu(parser):
    """``--gpu ID``: an int >= 0, default None (= CPU). Check it with
    ``pixelfeedback.nets.loading.use_device`` (never Caffe's abort)."""
    return parser.add_argument("--gpu", type=nonnegative_int, default=None, metavar="ID",
                               help="run Caffe on GPU ID (default: CPU)")


def add_mean(parser, default_help, default=None):
    """``--mean B,G,R`` (a tuple of three floats; default ``default``, usually None for
    "the tool's own"); ``default_help`` says what that default is."""
    return parser.add_argument("--mean", type=mean_type, default=default, metavar="B,G,R",
                               help="per-channel mean subtracted from the BGR image, as "
                                    f"three comma-separated numbers (default: {default_help})")


def add_out(parser, default, help, required=False):
    """``--out PATH`` with ``default`` (shown in the help when not None)."""
    if default is not None:
        help = f"{help} (default: %(default)s)"
    return parser.add_argument("--out", default=default, metavar="PATH", help=help,
                               required=required)


def add_size(parser, default, help, minimum=0):
    """``--size N``: an int >= ``minimum`` (0 unless the tool says otherwise)."""
    if default is not None:
        help = f"{help} (default: %(default)s)"
    return parser.add_argument("--size", type=int_at_least(minimum), default=default,
                               metavar="N", help=help)


def add_progress(parser, *aliases):
    """``--no-progress`` (and ``aliases``); with ``show_progress`` the bars also switch
    themselves off when stderr is not a terminal, so a redirected log holds no bar redraws."""
    return parser.add_argument("--no-progress", *aliases, dest="no_progress", action="store_true",
                               help="no progress bars (they are off anyway when stderr is not "
                                    "a terminal, e.g. redirected to a log file)")


def show_progress(args, stream=None):
    """Whether a tool with ``add_progress`` shows its bars: not ``--no-progress``, and
    ``stream`` (stderr, where the bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not args.no_progress and bool(isatty and isatty())
