"""The worker threads of the Python layers' NumPy work (the template-similarity loss).

NumPy's element-wise passes and matrix products release the GIL, so pixel blocks handed to
a few threads use the cores that Caffe's own layers leave idle while a Python layer runs.
The pool size is one setting, ``THREADS_ENV`` (default: the cores this process may use,
``os.sched_getaffinity``). Importing this module starts no thread: the pool starts on the
first ``pool_map`` that needs more than one thread.
"""
import os
import threading

from python_layers import ToolkitError

THREADS_ENV = "PIXELFEEDBACK_LOSS_THREADS"

_pools = {}
_pools_lock = threading.Lock()


def default_threads():
    """``$PIXELFEEDBACK_LOSS_THREADS`` if set, else the cores this process may run on."""
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ToolkitError(f"{THREADS_ENV} must be a positive integer (the loss's worker "
                               f"threads), got {text!r}; unset it to use every core")
        return int(text)
    return available_cores()


def available_cores():
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, os.cpu_count() or 1)


def positive_count(name, value):
    """``value`` checked as a count of threads or processes (an integer >= 1, not a bool);
    the error names ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def resolve_threads(threads):
    """``threads`` checked (``positive_count``), or ``default_threads()`` when None."""
    return default_threads() if threads is None else positive_count("threads", threads)


def pool_map(function, tasks, threads=None):
    """``[function(task) for task in tasks]``, in order, over ``threads`` worker threads
    (``resolve_threads``); one thread or one task runs here, on the caller's thread."""
    tasks = list(tasks)
    threads = resolve_threads(threads)
    if threads <= 1 or len(tasks) <= 1:
        return [function(task) for task in tasks]
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            from concurrent.futures import ThreadPoolExecutor
            pool = _pools[threads] = ThreadPoolExecutor(threads, "pixelfeedback-loss")
    return list(pool.map(function, tasks))


class single_threaded_blas:
    """Context: the OpenBLAS copies inside the NumPy and SciPy wheels (``numpy.libs``,
    ``scipy.libs``) run one thread inside, so that the pool's threads, not OpenBLAS's,
    share the cores (OpenBLAS threading a thin product of one item costs more than it
    gains). A NumPy or SciPy linked to a system BLAS (which Caffe may share) is left alone."""

    def __enter__(self):
        self.before = []
        for get, put in _wheel_openblas():
            threads = get()
            if threads != 1:
                put(1)
                self.before.append((put, threads))
        return self

    def __exit__(self, *exc):
        for put, threads in self.before:
            put(threads)
        return False


_openblas = []


def _wheel_openblas():
    """[(get_num_threads, set_num_threads)] of the OpenBLAS in NumPy's and SciPy's wheels."""
    if not _openblas:
        _openblas.append([found for package in ("numpy", "scipy")
                          for found in [_find_wheel_openblas(package)] if found])
    return _openblas[0]


def _find_wheel_openblas(package):
    import ctypes
    import importlib
    try:   # loaded first: its OpenBLAS needs the libraries the package loads
        module = importlib.import_module(package)
    except ImportError:
        return None
    libs = os.path.join(os.path.dirname(os.path.dirname(module.__file__)), package + ".libs")
    try:
        names = sorted(name for name in os.listdir(libs) if "openblas" in name)
    except OSError:
        return None
    for name in names:
        try:
            lib = ctypes.CDLL(os.path.join(libs, name))
        except OSError:
            continue
        for prefix, suffix in (("", "64_"), ("", ""), ("scipy_", "64_"), ("scipy_", "")):
            get = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                return get, put
    return None
