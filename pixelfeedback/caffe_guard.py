"""Guarding the documented route ``caffe train -solver S [-weights W] [-gpu N]``.

The venv's ``caffe`` wrapper (written by docker/build_caffe.sh) runs tools/caffe_guard.py
for ``caffe train``; every other command (``caffe time``, ``caffe device_query``, ...) goes
to the binary unchanged, and so do all flags. Before Caffe starts, what it would abort on
with a C++ stack (exit 134) or train through without a word is one line ``error: ...``
and exit 2:

- ``-gpu`` on a CPU-only build or a device that does not exist (``loading.check_gpu``);
- ``-weights`` missing, empty, cut short, not a caffemodel, holding NaN or inf, or not
  fitting the solver's train net (a blob count or shape Caffe would abort on), read in one
  streaming pass (``weights.fit_report``); layers of the net the file does not set (e.g.
  ``fc8_voc12`` from an ImageNet init) get one warning line naming them;
- ``-weights`` together with ``-snapshot``.

While Caffe trains, its log (stderr) passes through line by line; a non-finite loss
(``Iteration N, loss = nan``) stops it at once with ``error: ...`` and exit status
``EXIT_DIVERGED``. A trainer killed by a signal makes the guard die of the same signal,
so callers see what they saw of the bare tool.
"""
import math
import os
import signal
import subprocess
import sys
import tempfile

from pixelfeedback.training import LOSS_LINE
from python_layers import ToolkitError, die_with_parent

EXIT_DIVERGED = 3
# gflags/glog flags of the caffe tool that take no value (all others take one: -flag value)
_FLAGS_WITHOUT_VALUE = {"help", "helpfull", "helpshort", "helpxml", "helppackage", "version",
                        "logtostderr", "alsologtostderr", "colorlogtostderr", "log_prefix",
                        "stop_logging_if_full_disk", "timestamp_in_logfile_name"}
_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


def parse_command(arguments):
    """(action, {flag: value}) of a caffe command line, read as gflags reads it
    (``-f v``, ``-f=v``, ``--f v``, ``--f=v``; the last of a repeated flag wins; ``--``
    ends the flags); the action is the first argument that is no flag or flag value."""
    action, flags, index = None, {}, 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if argument == "--":
            action = action or (arguments[index] if index < len(arguments) else None)
            break
        if not argument.startswith("-") or argument == "-":
            action = action or argument
            continue
        name, equals, value = argument.lstrip("-").partition("=")
        bare = name[2:] if name.startswith("no") else name
        if not equals and name not in _FLAGS_WITHOUT_VALUE and bare not in _FLAGS_WITHOUT_VALUE:
            value = arguments[index] if index < len(arguments) else ""
            index += 1
        flags[name] = value
    return action, flags


def guard(binary, arguments, environment):
    """Run ``binary`` (the real caffe tool) with ``arguments`` as the wrapper's caller asked;
    ``caffe train`` checked first and watched (see the module docstring). Returns the exit
    status; other actions replace this process with the binary."""
    action, flags = parse_command(arguments)
    if action != "train":
        os.execve(binary, [binary] + list(arguments), environment)
    check_train(flags)
    return run_watched([binary] + list(arguments), environment, flags.get("solver"))


def check_train(flags):
    """Check the flags of ``caffe train`` as far as Caffe would abort on them (see the
    module docstring); raises ToolkitError, prints the missing-layers warning."""
    if flags.get("gpu"):
        check_gpus(flags["gpu"])
    weights = [w for w in flags.get("weights", "").split(",") if w]
    if not weights:
        return
    if flags.get("snapshot"):
        raise ToolkitError("caffe train takes -snapshot (resume a training) or -weights "
                           "(start from weights), not both; drop one")
    solver = flags.get("solver")
    if not solver:
        raise ToolkitError("caffe train needs -solver (the solver prototxt)")
    for path in weights:
        if not os.path.isfile(path):
            raise ToolkitError(f"-weights {path} not found; give the path of a .caffemodel "
                               "(python weights/fetch.py fetches the published ones)")
    shapes = train_net_shapes(solver)
    unset = None
    for path in weights:
        unset = check_weights_file(path, shapes, solver, unset)
    if unset:
        print(f"WARNING: -weights {','.join(weights)} has no weights for layer(s) "
              f"{', '.join(unset)} of the net of {solver}; they start from their fillers "
              "(as expected for a new last layer on an ImageNet initialisation)",
              file=sys.stderr, flush=True)


def check_gpus(value):
    """``-gpu`` ids (``0``, ``0,1``, ``all``) usable by this Caffe (``loading.check_gpu``)."""
    from pixelfeedback.nets.loading import check_gpu

    ids = value.split(",")
    if value != "all" and not all(i.strip().isdigit() for i in ids):
        raise ToolkitError(f"-gpu takes GPU ids (0, 0,1 or all), got {value!r}")
    for device in [0] if value == "all" else sorted({int(i) for i in ids}):
        check_gpu(device, flag="-gpu")


def check_weights_file(path, shapes, solver, unset=None):
    """Raise ToolkitError unless the caffemodel ``path`` fits the layer ``shapes`` of the
    net of ``solver`` and holds only finite values; returns the layers with parameters
    that neither it nor the files before it (``unset``: their leftovers) set."""
    from pixelfeedback.nets.weights import fit_report

    try:
        mismatches, missing, non_finite = fit_report(path, shapes)
    except ToolkitError as exc:
        raise ToolkitError(f"-weights: {exc}") from None
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        raise ToolkitError(
            f"-weights {path} does not fit the net of {solver}: {mismatches[0]}{more}; Caffe "
            "would abort copying it. Use weights of this net (the same layers, width and "
            "number of classes), or rename the layer in the net so that it is not copied")
    if non_finite:
        raise ToolkitError(f"-weights {path}: {non_finite[0]}; these weights are broken (a "
                           "diverged training?): use an earlier snapshot or other weights")
    return [name for name in (missing if unset is None else unset) if name in missing]


def train_net_shapes(solver):
    """{layer: [parameter shapes]} of every layer of the solver's train net, built once by
    Caffe in the TRAIN phase with the solver's train_state (parameters only: activations
    are allocated lazily), its Python layers closed again."""
    from pixelfeedback.nets.loading import check_prototxt

    parameters = read_solver(solver)
    sources = [f for f in ("train_net_param", "train_net", "net_param", "net")
               if parameters.HasField(f)]
    if len(sources) != 1:
        raise ToolkitError(f"solver {solver} must name exactly one train net (net: or "
                           f"train_net:), it names {len(sources) or 'none'}")
    import caffe

    caffe.init_log(2)   # this process's own Caffe logs errors only (the trainer logs apart)

    with tempfile.TemporaryDirectory(prefix="caffe-guard-") as tmp:
        net_path = getattr(parameters, sources[0])
        if sources[0].endswith("_param"):
            inline, net_path = net_path, os.path.join(tmp, "net.prototxt")
            with open(net_path, "w") as f:
                f.write(str(inline))
        elif not os.path.isfile(net_path):
            raise ToolkitError(f"the net {net_path} of solver {solver} not found (a relative "
                               "path is read from the directory caffe runs in)")
        check_prototxt(net_path, phase="TRAIN")
        state = parameters.train_state
        net = caffe.Net(net_path, caffe.TRAIN, level=state.level, stages=list(state.stage))
    shapes = {name: [tuple(blob.shape) for blob in layer.blobs]
              for name, layer in zip(net._layer_names, net.layers)}
    for layer in net.layers:
        close = getattr(layer, "close", None)   # the data layer's prefetch thread
        if callable(close):
            close()
    del net
    return shapes


def read_solver(solver):
    """The SolverParameter of the text prototxt ``solver``."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    if not os.path.isfile(solver):
        raise ToolkitError(f"-solver {solver} not found; give the path of a solver prototxt")
    parameters = caffe_pb2.SolverParameter()
    try:
        with open(solver) as f:
            text_format.Merge(f.read(), parameters)
    except (text_format.ParseError, UnicodeDecodeError) as exc:
        raise ToolkitError(f"-solver {solver} is not a solver prototxt this Caffe reads "
                           f"({exc}); fix that line") from None
    return parameters


def run_watched(command, environment, solver=None):
    """Run ``command`` (caffe train), its stderr passed through line by line; stop it at
    the first non-finite loss (returns ``EXIT_DIVERGED`` after an ``error:`` line). The
    signals a terminal or a caller sends are forwarded; the trainer dies with this process
    (parent-death signal). Returns its exit status, or dies of the signal that killed it."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, env=environment,
                               preexec_fn=die_with_parent(os.getpid()))

    def forward(signum, _frame):
        if process.poll() is None:
            process.send_signal(signum)

    for signum in _FORWARDED_SIGNALS:   # kept until this process ends
        signal.signal(signum, forward)
    diverged = None
    for line in iter(process.stderr.readline, b""):
        _write(line)
        if diverged is None:
            found = LOSS_LINE.search(line.decode(errors="replace"))
            if found and not math.isfinite(float(found.group(2))):
                diverged = (int(found.group(1)), found.group(2))
                # SIGKILL: on SIGINT Caffe snapshots the NaN weights, on SIGTERM glog
                # prints a stack
                process.kill()
    status = process.wait()
    if diverged:
        iteration, loss = diverged
        where = f" in {solver}" if solver else ""
        _write(f"error: the training loss is {loss} at iteration {iteration}: caffe train "
               f"stopped (a lower base_lr{where} or loss weight may help; the snapshots "
               "written before it are kept)\n".encode())
        return EXIT_DIVERGED
    if status < 0:   # die as the trainer died, as the bare tool would have
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


def _write(data):
    """Write bytes to stderr unbuffered; a closed stderr stops the echo, not the training."""
    try:
        while data:
            data = data[os.write(2, data):]
    except OSError:
        pass
