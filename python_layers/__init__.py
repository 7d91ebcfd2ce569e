"""Caffe Python layers of the toolkit and the NumPy maths they call.

Caffe loads these as ``python_param { module: "python_layers.<name>" layer: ... }``;
the repository root must be on ``PYTHONPATH`` (the venv's ``caffe`` wrapper and
``caffe_toolkit.pth`` see to that).
"""
import functools
import os
import sys


class ToolkitError(Exception):
    """An error the user can fix. The message names the thing and says what to do.

    Command-line tools print it without a traceback and exit with status 2.
    """


def in_caffe_tool():
    """Whether this Python runs embedded in the ``caffe`` tool (``caffe train``), not in a
    Python process of its own (``caffe.Net`` in a script, the toolkit, pytest). The
    embedded interpreter has no command line (``sys.orig_argv`` is empty)."""
    return not getattr(sys, "orig_argv", [sys.executable])


def one_line_errors(method):
    """Decorator for a layer's ``setup`` / ``reshape``: a ``ToolkitError`` (a bad
    ``param_str``, a wrong bottom) stops ``caffe train`` with one line ``error: <message>``
    on stderr and exit status 2, where Caffe would print a Python traceback and exit 1. In a
    Python process (``caffe.Net``) the error is raised as it is: the toolkit's tools print
    it as one line, a script of the user's own can catch it, and no library call ends its
    process."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except ToolkitError as exc:
            if not in_caffe_tool():
                raise
            sys.stdout.flush()
            sys.stderr.write(f"error: {exc}\n")
            sys.stderr.flush()
            os._exit(2)
    return wrapper


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent):
    """A function that makes the process calling it get SIGKILL when process ``parent``
    (its parent) dies, and exit at once if that one is already gone (Linux's
    PR_SET_PDEATHSIG); None where there is no prctl. Made before a fork, called in the
    child (a ``preexec_fn``, or first thing in a worker process)."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec():
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
