"""Running `caffe train` from Python: the project's caffe tool, resuming from the newest
usable solver snapshot, Caffe's training log (progress, losses, the error that stopped it),
the final weights of a run, and pruning the older snapshots of a finished run.

One trainer per run, never an orphan: `caffe train` runs in its own process group (so
Ctrl-C in the terminal reaches only us, and we stop it) and gets a parent-death signal
(Linux ``PR_SET_PDEATHSIG``), so it dies with the process that started it, also on
``kill -9``. Everything Caffe prints goes to the run's ``train.log``; the terminal gets a
progress bar read from that log as it is written.

Resume is bit-identical: the data layer's batches and the dropout masks are functions of
(seed, iteration) (python_layers.seg_data), and the trainer is told the iteration it
resumes from; the solverstate holds the rest (weights, momentum, iteration). A snapshot
that cannot be read back (empty, truncated, inconsistent) is set aside as ``*.corrupt`` with
a warning naming it, and training resumes from the previous one; the ``.corrupt`` files go
once the run finishes. A failure on a full disk (the log says ENOSPC, or the run folder's
file system has no room for one more snapshot) is reported as such, naming the mount and
the free space. Each session's command line starts a line of its own in the log, so
``resumed_from`` and ``training_seconds`` read a failed and rerun session as a resume.
A non-finite loss in the log stops the trainer at once: ``TrainingDiverged`` names the
iteration, the run folder and its last snapshot with finite weights.
"""
import datetime
import errno
import glob
import math
import os
import re
import shutil
import signal
import subprocess
import sys

from pixelfeedback import files
from pixelfeedback.files import disk_space
from pixelfeedback.paths import REPO_ROOT
from pixelfeedback.messages import note
from python_layers import ToolkitError, die_with_parent


def caffe_binary():
    """The `caffe` tool of this venv (a wrapper that makes python_layers importable)."""
    candidate = os.path.join(sys.prefix, "bin", "caffe")
    if os.path.exists(candidate):
        return candidate
    found = shutil.which("caffe")
    if not found:
        raise ToolkitError("the caffe tool was not found; run `make setup` and "
                           "`source .venv/bin/activate`")
    return found


# --- Caffe's training log ----------------------------------------------------------------

LOSS_LINE = re.compile(r"Iteration (\d+).*?, loss = ([-+0-9.eEnaif]+)")
COMMAND_PREFIX = "$ "  # how train() records each caffe command line in the log
_RESUME_ARG = re.compile(r" -snapshot \S*_iter_(\d+)\.solverstate")
# A glog line: severity, date (yyyymmdd from glog 0.6 on, as this Caffe writes; mmdd
# before), time, thread, file:line] message.
GLOG_LINE = re.compile(r"^(?P<severity>[IWEF])(?P<date>\d{8}|\d{4}) "
                       r"(?P<time>\d\d:\d\d:\d\d\.\d+)\s+\d+ [^\]]+\] ?(?P<message>.*)$")
_PYTHON_ERROR = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)): (.+)$")
_LAYER_ERROR = re.compile(r"^error: (.+)$")  # python_layers.one_line_errors under caffe train


# A command line ``train`` wrote after an unterminated last line (logs of older versions,
# whose previous session died mid-line, e.g. on a full disk).
_GLUED_COMMAND = re.compile(r"(?<=[^\n])(\$ \S*caffe(?:\.bin)? train )")


def _log_lines(log_text):
    """The lines of a training log, every command line ``train`` wrote on its own line."""
    return _GLUED_COMMAND.sub(r"\n\1", log_text).splitlines()


def parse_losses(log_text):
    """(iteration, loss) pairs from Caffe's training log."""
    return [(int(m.group(1)), float(m.group(2))) for m in LOSS_LINE.finditer(log_text)]


def resumed_from(log_text):
    """The iterations a run's training was resumed from, in order, read from the command
    lines ``train`` writes into the log ([] when it ran in one go)."""
    return [int(m.group(1)) for line in _log_lines(log_text)
            if line.startswith(COMMAND_PREFIX) for m in _RESUME_ARG.finditer(line)]


def _glog_time(match, year_of_short_dates=2000):
    """The datetime of a glog line; a mmdd date (older glog) gets a fixed leap year."""
    date = match.group("date")
    if len(date) == 4:
        date = f"{year_of_short_dates}{date}"
    return datetime.datetime.strptime(f"{date} {match.group('time')}", "%Y%m%d %H:%M:%S.%f")


def training_seconds(log_text):
    """Seconds `caffe train` ran for this log, summed over its sessions (each starts at a
    command line ``train`` wrote): first to last glog time stamp of each. Read from the log,
    so it also counts a session that was killed and resumed."""
    total, first, last = 0.0, None, None
    for line in _log_lines(log_text) + [COMMAND_PREFIX]:
        if line.startswith(COMMAND_PREFIX):
            if first is not None:
                seconds = (last - first).total_seconds()
                total += seconds if seconds >= 0 else seconds + 365 * 86400  # new year
            first = last = None
            continue
        match = GLOG_LINE.match(line)
        if match:
            last = _glog_time(match)
            first = first or last
    return total


def last_error(log_text):
    """The line of a training log that says why `caffe train` stopped: the last glog error
    (``E``/``F``, without its prefix), Python exception or layer error (``error: ...``,
    without its prefix), else the last line that is no stack frame; None for an empty
    log."""
    found = None
    for line in log_text.splitlines():
        glog = GLOG_LINE.match(line)
        if glog and glog.group("severity") in "EF":
            found = glog.group("message").strip()
            continue
        python = _PYTHON_ERROR.match(line.strip())
        if python:
            found = line.strip()
        layer = _LAYER_ERROR.match(line.strip())
        if layer:
            found = layer.group(1)
    if found:
        return found
    frames = re.compile(r"^\s*(@|\*\*\*|File |Traceback|\$ )")
    lines = [line.strip() for line in log_text.splitlines() if line.strip()
             and not frames.match(line)]
    return lines[-1] if lines else None


NO_SPACE_TEXT = "No space left on device"  # strerror(ENOSPC), as glog and Python write it


def no_space_message(run_dir, log_text="", space=None):
    """"no space left on <mount> (<filesystem>), N MB free; ..." when the log says ENOSPC
    or the run folder's file system has less room than one more snapshot (at least 1 MB),
    else None. ``space``: ``disk_space(run_dir)`` (tests pass their own)."""
    mount, filesystem, free = space or disk_space(run_dir)
    sizes = [os.path.getsize(p) for paths in snapshots(run_dir).values() for p in paths
             if os.path.isfile(p)]
    if NO_SPACE_TEXT not in log_text and free >= max([2 ** 20] + sizes):
        return None
    where = f"{mount} ({filesystem})" if filesystem else mount
    return (f"no space left on {where}, {free / 1e6:.0f} MB free; free space and rerun to "
            f"resume (the run folder: {run_dir})")


def _max_iter(solver_path):
    with open(solver_path) as f:
        match = re.search(r"^\s*max_iter:\s*(\d+)", f.read(), re.M)
    return int(match.group(1)) if match else None


# --- snapshots ---------------------------------------------------------------------------

SNAPSHOT_FILE = re.compile(r"_iter_(\d+)\.(caffemodel|solverstate)$")
CORRUPT_SUFFIX = files.CORRUPT_SUFFIX


def snapshots(run_dir):
    """{iteration: [paths]} of the ``*_iter_<N>.caffemodel`` / ``.solverstate`` files in
    run_dir (Caffe's snapshot names)."""
    found = {}
    for path in glob.glob(os.path.join(run_dir, "*_iter_*")):
        match = SNAPSHOT_FILE.search(path)
        if match:
            found.setdefault(int(match.group(1)), []).append(path)
    return found


def _complete_blobs(blobs):
    """The shapes of BlobProtos, or None when one holds fewer values than its shape says."""
    from pixelfeedback.nets.weights import blob_shape

    shapes = []
    for blob in blobs:
        shape = blob_shape(blob)
        if len(blob.data) != math.prod(shape):
            return None
        shapes.append(shape)
    return shapes


def _parse(message, path):
    """Parse the protobuf file ``path`` into ``message``; why it cannot be, or None."""
    from google.protobuf.message import DecodeError

    try:
        if os.path.getsize(path) == 0:
            return "is empty (0 bytes: written on a full disk?)"
        with open(path, "rb") as f:
            message.ParseFromString(f.read())
    except (OSError, DecodeError, RuntimeError) as exc:
        return f"cannot be read ({exc})"
    return None


def _weights_shapes(caffemodel):
    """The parameter shapes of a caffemodel, or why it is unusable (a str)."""
    from caffe.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    problem = _parse(net, caffemodel)
    if problem:
        return problem
    params = _complete_blobs(b for layer in list(net.layer) + list(net.layers)
                             for b in layer.blobs)
    return params or "are incomplete (truncated?)"


def weights_problem(caffemodel):
    """Why the snapshot weights ``caffemodel`` are unusable (empty, unreadable,
    truncated), or None."""
    shapes = _weights_shapes(caffemodel)
    return shapes if isinstance(shapes, str) else None


def snapshot_problem(solverstate):
    """Why `caffe train -snapshot` could not resume from ``solverstate``, or None: it and
    the weights it names must parse, hold every value their shapes say, agree on the
    iteration, and the momentum history must match the weights blob for blob (a truncated
    .solverstate otherwise aborts Caffe with "Incorrect length of history blobs")."""
    from caffe.proto import caffe_pb2

    state = caffe_pb2.SolverState()
    problem = _parse(state, solverstate)
    if problem:
        return problem
    match = SNAPSHOT_FILE.search(solverstate)
    if match and state.iter != int(match.group(1)):
        return f"holds iteration {state.iter}, not the {match.group(1)} of its name"
    weights = state.learned_net
    if not weights:
        return "names no weights file (learned_net)"
    weights = os.path.join(REPO_ROOT, weights)  # relative to `caffe train`'s directory
    if not os.path.isfile(weights):
        return f"names weights {weights}, which do not exist"
    params = _weights_shapes(weights)
    if isinstance(params, str):
        return f"names weights {weights}, which {params}"
    history = _complete_blobs(state.history)
    if history is None or not history or len(history) % len(params) \
            or any(shape != params[i % len(params)] for i, shape in enumerate(history)):
        return (f"has a momentum history of {len(state.history)} blob(s) that does not match "
                f"the {len(params)} blob(s) of its weights (truncated?)")
    return None


def usable_snapshot(run_dir, warn=None):
    """The newest .solverstate of run_dir that can be resumed from and its iteration, or
    (None, 0). Newer unusable ones are renamed ``*.corrupt`` (with their weights), each
    with a warning naming it (``warn``: a function of one message; default stderr)."""
    warn = warn or _warn
    by_iteration = snapshots(run_dir)
    for iteration in sorted(by_iteration, reverse=True):
        states = [p for p in by_iteration[iteration] if p.endswith(".solverstate")]
        if not states:  # weights alone (cut short before the state): never a resume point
            for path in by_iteration[iteration]:
                problem = weights_problem(path)
                if problem:
                    _set_aside([path], f"snapshot {path} {problem}", warn)
            continue
        problem = snapshot_problem(states[0])
        if problem is None:
            return states[0], iteration
        _set_aside(by_iteration[iteration], f"snapshot {states[0]} {problem}", warn,
                   ", resuming from the one before")
    return None, 0


def _warn(message):
    note(message)


def _set_aside(paths, problem, warn, then=""):
    """Rename ``paths`` to ``*.corrupt`` (deleted once the run finishes) with a warning."""
    names = ", ".join(files.set_aside(paths))
    warn(f"WARNING: {problem}; set aside as {names}{then}")


def remove_set_aside(run_dir):
    """Delete the ``*.corrupt`` snapshots of ``run_dir`` (once its training finished);
    returns their paths."""
    removed = sorted(glob.glob(os.path.join(run_dir, "*" + CORRUPT_SUFFIX)))
    for path in removed:
        os.remove(path)
    return removed


def final_weights(run_dir, iterations):
    """The ``*_iter_<iterations>.caffemodel`` of run_dir. Missing, or unusable (empty,
    truncated: set aside as ``.corrupt``), it is an error that says to rerun."""
    matches = glob.glob(os.path.join(run_dir, f"*_iter_{iterations}.caffemodel"))
    if not matches:
        raise ToolkitError(f"no snapshot for iteration {iterations} in {run_dir}; "
                           "the training did not finish (rerun to resume)")
    problem = weights_problem(matches[0])
    if problem:
        _set_aside(matches[:1], f"snapshot {matches[0]} {problem}", _warn)
        raise ToolkitError(f"the final weights {matches[0]} {problem}; set aside, so a rerun "
                           "trains the last iterations again (rerun to resume)")
    return matches[0]


def prune_snapshots(run_dir, keep, final_iteration):
    """After a finished training: delete the snapshots of run_dir older than the newest
    ``keep`` (a snapshot is its .caffemodel and .solverstate pair). The final weights
    (``*_iter_<final_iteration>.caffemodel``) are always kept, also with ``keep`` 0. Only
    call it once the training reached ``final_iteration``: the resume needs the newest
    .solverstate. Returns the deleted paths."""
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    by_iteration = snapshots(run_dir)
    newest = sorted(by_iteration, reverse=True)[:keep]
    deleted = []
    for iteration, paths in sorted(by_iteration.items()):
        if iteration in newest:
            continue
        for path in sorted(paths):
            if iteration == final_iteration and path.endswith(".caffemodel"):
                continue
            os.remove(path)
            deleted.append(path)
    return deleted


# --- one trainer -------------------------------------------------------------------------

def _stop(process):
    """Stop a trainer and its process group (TERM, then KILL after 10 s)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class _LogTail:
    """The complete new lines of a log as it is written, from byte ``offset`` on."""

    def __init__(self, log_path, offset):
        self.log_path, self.offset, self.pending = log_path, offset, ""

    def read(self):
        with open(self.log_path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset = f.tell()
        text, self.pending = self.pending + text, ""
        if text and not text.endswith("\n"):
            text, _, self.pending = text.rpartition("\n")
        return text


class _LogProgress:
    """A progress bar for one `caffe train` (iteration, loss, time per iteration, ETA),
    fed the new lines of its log."""

    def __init__(self, total, start, description):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, desc=description, unit="it",
                        leave=False, dynamic_ncols=True)

    def update(self, text):
        for iteration, loss in parse_losses(text):
            self.bar.update(max(iteration - self.bar.n, 0))
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        self.bar.refresh()

    def close(self):
        self.bar.close()


class TrainingDiverged(ToolkitError):
    """`caffe train` logged a non-finite loss and was stopped there. ``iteration``: the
    iteration of that loss; ``run_dir`` and ``log_path``: the run's folder and log;
    ``last_finite_weights``: the newest snapshot .caffemodel written before that iteration
    whose values are all finite (``last_finite_snapshot``), or None. Pickles (for the
    sweep's worker processes)."""

    def __init__(self, message, iteration, run_dir, log_path, last_finite_weights):
        super().__init__(message, iteration, run_dir, log_path, last_finite_weights)
        self.iteration, self.run_dir, self.log_path = iteration, run_dir, log_path
        self.last_finite_weights = last_finite_weights

    def __str__(self):
        return self.args[0]

    @classmethod
    def stopped(cls, iteration, loss, run_dir, log_path, solver_path):
        """The error of a training stopped at ``iteration`` for the non-finite ``loss``."""
        weights = last_finite_snapshot(run_dir, before=iteration)
        kept = (f"the last finite snapshot is {weights}" if weights
                else "no snapshot before it holds finite weights")
        return cls(f"the training loss became non-finite ({loss} at iteration {iteration}) "
                   f"for {solver_path}: caffe train was stopped there; {kept}; see "
                   f"{log_path} (a lower learning rate or lambda may help)",
                   iteration, run_dir, log_path, weights)


def first_non_finite_loss(log_text):
    """(iteration, loss text) of the first non-finite loss of a training log, or None."""
    for match in LOSS_LINE.finditer(log_text):
        if not math.isfinite(float(match.group(2))):
            return int(match.group(1)), match.group(2)
    return None


def last_finite_snapshot(run_dir, before=None):
    """The newest ``*_iter_<N>.caffemodel`` of run_dir (N < ``before`` when given) that
    reads back whole and holds no NaN or inf (one streaming pass each), or None."""
    from pixelfeedback.nets.weights import scan_caffemodel

    by_iteration = snapshots(run_dir)
    for iteration in sorted(by_iteration, reverse=True):
        if before is not None and iteration >= before:
            continue
        for path in by_iteration[iteration]:
            if not path.endswith(".caffemodel"):
                continue
            try:
                layers = scan_caffemodel(path)
            except ToolkitError:
                continue
            if not any(blob.non_finite for blobs in layers.values() for blob in blobs):
                return path
    return None


def _kill(process):
    """Stop a trainer and its process group at once (SIGKILL: nothing more is written)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()


def threads_env(threads):
    """The environment that caps a process at ``threads`` CPU threads: OpenBLAS's (Caffe's
    matrix products), OpenMP's and the template loss's pool (``PIXELFEEDBACK_LOSS_THREADS``);
    {} for None (their defaults: every core)."""
    if threads is None:
        return {}
    from python_layers.thread_pool import THREADS_ENV

    return {name: str(threads) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                            THREADS_ENV)}


def train(solver_path, run_dir, init_weights=None, gpu=None, log_name="train.log",
          progress=False, description="train", threads=None):
    """`caffe train` from the repository root; resumes from the newest usable snapshot.

    Returns the (iteration, loss) pairs of the log (of all sessions of this run). A crash
    is a ToolkitError quoting the log's last error line and naming the log. A non-finite
    loss in the log stops `caffe train` at once (the log is read every 0.2 s) and raises
    ``TrainingDiverged`` (its iteration, the run folder, the last finite snapshot).
    ``progress``: a bar read from the log (titled ``description``). ``threads``: the CPU
    threads `caffe train` may use (``threads_env``; None: every core).
    """
    from python_layers.seg_data import START_BATCH_ENV  # imports Caffe

    command = [caffe_binary(), "train", "-solver", solver_path]
    snapshot, start = usable_snapshot(run_dir)
    if snapshot:
        command += ["-snapshot", snapshot]
    elif init_weights:
        if not os.path.isfile(init_weights):
            raise ToolkitError(f"initial weights not found: {init_weights} "
                               "(python weights/fetch.py largefov, or pass --init-weights)")
        command += ["-weights", init_weights]
    if gpu is not None:
        command += ["-gpu", str(gpu)]
    log_path = os.path.join(run_dir, log_name)
    # The log is parsed; the data layer starts at the resumed iteration's batch (our
    # solvers keep iter_size 1: one batch per iteration).
    env = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0",
               **{START_BATCH_ENV: str(start)}, **threads_env(threads))
    try:
        log = _open_log(log_path, COMMAND_PREFIX + " ".join(command) + "\n")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise ToolkitError(no_space_message(run_dir, NO_SPACE_TEXT)) from None
        raise
    with log:
        offset = log.tell()
        tail = _LogTail(log_path, offset)
        bar = _LogProgress(_max_iter(solver_path), start, description) if progress else None
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                   preexec_fn=die_with_parent(os.getpid()))
        diverged = None
        try:
            while diverged is None:
                try:
                    status = process.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    text = tail.read()
                    diverged = first_non_finite_loss(text)
                    if bar:
                        bar.update(text)
            if diverged:
                _kill(process)
        finally:
            if process.poll() is None:  # we are being interrupted: never leave it behind
                _stop(process)
            if bar:
                bar.update(tail.read())
                bar.close()
    with open(log_path, "rb") as f:
        data = f.read()
    text = data.decode(errors="replace")
    diverged = first_non_finite_loss(data[offset:].decode(errors="replace"))
    if diverged:   # seen here, or by the caffe wrapper's guard, which stopped it (exit 3)
        usable_snapshot(run_dir)
        raise TrainingDiverged.stopped(*diverged, run_dir, log_path, solver_path)
    if status != 0:
        how = (f"killed by signal {signal.Signals(-status).name}" if status < 0
               else f"exit {status}")
        session = data[offset:].decode(errors="replace")
        usable_snapshot(run_dir)  # sets aside what the failed session left unusable
        full = no_space_message(run_dir, session)
        if full:
            raise ToolkitError(f"caffe train failed ({how}) for {solver_path}: {full}")
        cause = last_error(session) or "no error in the log"
        raise ToolkitError(f"caffe train failed ({how}) for {solver_path}: {cause} "
                           f"(the whole log: {log_path})")
    losses = parse_losses(text)
    diverged = first_non_finite_loss(text)   # in an earlier session of this run
    if diverged:
        raise TrainingDiverged.stopped(*diverged, run_dir, log_path, solver_path)
    remove_set_aside(run_dir)
    return losses


def _open_log(log_path, header):
    """The log opened for appending, ``header`` written on a line of its own (after a
    newline when an earlier session's last line was cut short)."""
    log = open(log_path, "ab+")
    try:
        log.seek(0, os.SEEK_END)
        if log.tell():
            log.seek(-1, os.SEEK_END)
            if log.read(1) != b"\n":
                header = "\n" + header
        log.write(header.encode())
        log.flush()
    except BaseException:
        log.close()
        raise
    return log
