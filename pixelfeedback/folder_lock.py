"""The lock of a run folder (``pixelfeedback.runfolder``): an ``fcntl.flock`` on
``<folder>/.lock``, exclusive or shared between cooperating processes, which the OS drops
when its process dies (so ``kill -9`` leaves no stale lock), holding the (last) holder's
PID and command line for the message a second process gets (``in_use_error``)."""
import errno
import fcntl
import os
import sys
import time

from python_layers import ToolkitError

LOCK_NAME = ".lock"
LOCK_WAIT_S = 1.0     # how long to wait for a new holder to write its PID into the lock
_COMMAND_CHARS = 200  # the holder's command line is cut to this length in messages


def _command_line():
    """This process's command line, for the lock file."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        args = [sys.executable] + sys.argv
    return " ".join(args).replace("\n", " ")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class FolderInUse(ToolkitError):
    """Another process holds the run folder (its message names the PID)."""


class FolderLock:
    """A ``flock`` on ``<folder>/.lock`` (exclusive, or shared between cooperating
    processes) holding the (last) holder's PID and command."""

    def __init__(self, fd, path=None):
        self.fd, self.path = fd, path

    @classmethod
    def try_acquire(cls, folder, create=True, shared=False):
        """The lock; or (pid, command) of the process holding it (pid None if unknown);
        or None when ``create`` is false and there is no lock file.

        A holder may have taken the lock but not yet written its PID: wait a moment for it.
        A lock file deleted or replaced while we waited (a parent restarting) is retried.
        """
        path = os.path.join(folder, LOCK_NAME)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
            except FileNotFoundError:
                if create:
                    raise
                return None
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = _read_holder(path)
                if holder[0] is not None or time.monotonic() > deadline:
                    return holder
                time.sleep(0.05)
                continue
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            return cls(fd, path)

    def write_holder(self):
        text = f"{os.getpid()}\n{_command_line()}\n".encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text, 0)
        except OSError as exc:   # a full disk: name the file (the tools add the free space)
            raise OSError(exc.errno, exc.strerror, self.path) from None

    def share(self):
        """Turn an exclusive lock into a shared one."""
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _read_holder(path):
    """(pid, command) written in a lock file by a live holder, else (None, None)."""
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None, None
    if not _pid_alive(pid):  # a dead holder's leftover, not yet overwritten
        return None, None
    return pid, (lines[1] if len(lines) > 1 else "")


def in_use_error(name, holder):
    """The error for ``name`` held by ``holder`` ((pid, command) from ``try_acquire``)."""
    pid, command = holder
    if pid == os.getpid():  # a bug of the caller, not another process: never skipped
        return ToolkitError(f"{name} is already open in this process ({pid}); close that "
                            "RunFolder first")
    if pid is None:
        who = "another process"
    else:
        if len(command) > _COMMAND_CHARS:
            command = command[:_COMMAND_CHARS - 3] + "..."
        who = f"process {pid} ({command})" if command else f"process {pid}"
    return FolderInUse(f"{name} is in use by {who}; wait for it to finish or stop it")
