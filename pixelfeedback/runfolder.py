"""One run folder: the resume guard shared by evaluation, the experiments, the Table 3.1
sweep and the demo.

A run folder holds the results of one set of settings. Opening it

1. takes an exclusive lock (``.lock``, an ``fcntl.flock`` that the OS drops when its process
   dies, so ``kill -9`` leaves no stale lock); a second process gets an error naming the
   first one's PID and command line (``pixelfeedback.folder_lock``);
2. removes the temporaries a crashed writer left (``.tmp-*``, what
   ``pixelfeedback.files.atomic_path`` makes), which is safe because nobody else may write
   while we hold the lock;
3. compares the settings with ``settings.json``: equal settings resume, other settings
   refuse with a message naming each differing setting, ``restart=True`` starts afresh.

Paths in the settings are marked with ``RunFolder.path(p)``: one inside the run folder is
stored relative to it and any other one made absolute, so that a moved or copied folder
still resumes. Finished files are written atomically; ``has``/``listing`` never see a
temporary. Nested run folders (a demo folder holding an experiments folder) each have
their own lock and settings; restarting the parent deletes the children too.

    with RunFolder(out, {"mode": mode, "weights": RunFolder.path(weights)},
                   what="demo run", restart=args.restart) as run:
        records = run.records("per_image")
        for image_id in ids:
            if not records.has(image_id):
                records.write(image_id, compute(image_id))
"""
import contextlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np

from pixelfeedback import files
from pixelfeedback.folder_lock import (LOCK_NAME, LOCK_WAIT_S, FolderInUse, FolderLock,
                                       in_use_error)
from python_layers import ToolkitError

CONTENTS = "contents"  # the settings key of the content digests (content_digest)
SETTINGS_NAME = "settings.json"
TMP_PREFIX = ".tmp-"  # files.atomic_path's temporaries


def content_digest(path):
    """``sha256:<hex>`` of the file at ``path`` (None when there is none): what a run folder's
    settings hold of the files whose contents decide its results (initial weights, list
    files), so that a file changed under the same path is refused, naming it."""
    import hashlib

    if path is None or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


class SettingPath(os.PathLike):
    """A path in a run's settings (made by ``RunFolder.path``): stored relative to the run
    folder when it lies inside it, else absolute."""

    def __init__(self, path):
        self.value = os.fspath(path)

    def __fspath__(self):
        return self.value

    def __repr__(self):
        return f"RunFolder.path({self.value!r})"

    def __eq__(self, other):
        return isinstance(other, SettingPath) and other.value == self.value

    def __hash__(self):
        return hash(self.value)


def json_safe(value, base=None, _where="settings"):
    """``value`` as it reads back from JSON: tuples -> lists, NaN -> None, NumPy scalars
    and arrays -> Python, dict keys -> str, unmarked path objects -> str. A
    ``SettingPath`` becomes relative to the folder ``base`` when it lies inside it, else
    absolute. Anything else that JSON cannot hold is a TypeError naming where it is."""
    if isinstance(value, SettingPath):
        return _stored_path(value.value, base)
    if isinstance(value, dict):
        return {str(k): json_safe(v, base, f"{_where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, base, f"{_where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), base, _where)
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{_where} is a {type(value).__name__}, which JSON cannot hold")


def _stored_path(path, base):
    """How a settings path is stored: relative to ``base`` when inside it, else absolute."""
    path = os.path.abspath(os.path.expanduser(path))
    if base is None:
        return path
    relative = _inside(path, base)
    if relative is None:  # the same place reached through a symbolic link?
        real = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        relative = _inside(real, os.path.realpath(base))
    return path if relative is None else relative


def _inside(path, folder):
    """``path`` relative to ``folder`` when it lies inside (or is) it, else None."""
    relative = os.path.relpath(path, folder)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return None
    return relative


def _equal(a, b):
    """JSON equality that keeps True apart from 1 (Python's == does not)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return isinstance(a, bool) == isinstance(b, bool) and a == b


_ABSENT = object()


def settings_diff(stored, current, _prefix=""):
    """[(key, stored value, current value)] of the settings that differ, nested dicts
    walked with dotted keys; a missing key has the value ``_ABSENT``. Key order is
    irrelevant."""
    diffs = []
    for key in sorted(set(stored) | set(current)):
        old, new = stored.get(key, _ABSENT), current.get(key, _ABSENT)
        name = _prefix + key
        if isinstance(old, dict) and isinstance(new, dict):
            diffs.extend(settings_diff(old, new, name + "."))
        elif old is _ABSENT or new is _ABSENT or not _equal(old, new):
            diffs.append((name, old, new))
    return diffs


def _show(value):
    if value is _ABSENT:
        return "absent"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _article(phrase):
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _nested_run_folders(folder):
    """Run folders below ``folder`` (folders holding a lock file), outermost first."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        if dirpath != folder and LOCK_NAME in filenames:
            found.append(dirpath)
    return found


def discard_summary(folder, shown=6):
    """What a restart of ``folder`` deletes, in words ('' when nothing but its lock and
    settings): the files (count, size) and per top-level entry the files and nested run
    folders it holds (a sweep's finished runs), e.g. '9 files (1.2 MB): results/ (2 files),
    runs/ (2 run folders, 6 files), table.md'. Temporaries are not counted."""
    def counted(number, noun):
        return f"{number} {noun}" + ("" if number == 1 else "s")

    parts, files, size = [], 0, 0
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name in (LOCK_NAME, SETTINGS_NAME) or entry.name.startswith(TMP_PREFIX):
            continue
        if not entry.is_dir(follow_symlinks=False):
            files += 1
            size += entry.stat(follow_symlinks=False).st_size
            parts.append(entry.name)
            continue
        inner_files = inner_folders = 0
        for dirpath, dirnames, filenames in os.walk(entry.path):
            inner_folders += LOCK_NAME in filenames
            for name in filenames:
                if name in (LOCK_NAME, SETTINGS_NAME) or name.startswith(TMP_PREFIX):
                    continue
                inner_files += 1
                try:
                    size += os.lstat(os.path.join(dirpath, name)).st_size
                except OSError:
                    pass
        files += inner_files
        counts = ([counted(inner_folders, "run folder")] if inner_folders else []) \
            + [counted(inner_files, "file")]
        parts.append(f"{entry.name}/ ({', '.join(counts)})")
    if not parts:
        return ""
    listed = ", ".join(parts[:shown]) + (", ..." if len(parts) > shown else "")
    return f"{counted(files, 'file')} ({size / 1e6:.1f} MB): {listed}"


def _remove_temporaries(folder):
    """Delete ``.tmp-*`` below ``folder``, except inside nested run folders that another
    open RunFolder holds (their writers are alive); the others are swept under their lock."""
    for entry in list(os.scandir(folder)):
        try:
            if entry.name.startswith(TMP_PREFIX):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                if os.path.lexists(os.path.join(entry.path, LOCK_NAME)):
                    lock = FolderLock.try_acquire(entry.path, create=False)
                    if isinstance(lock, FolderLock):
                        try:
                            _remove_temporaries(entry.path)
                        finally:
                            lock.release()
                else:
                    _remove_temporaries(entry.path)
        except FileNotFoundError:  # gone meanwhile
            pass


class RunFolder:
    """A locked folder of results valid for one set of settings (see the module doc).

    path: the folder (created when missing). settings: a JSON-able dict of everything that
    decides the results; mark paths with ``RunFolder.path(p)``. what: a noun phrase for
    messages ("demo run", "evaluation"). restart: discard whatever the folder holds.
    hint_flag / out_flag: the command-line options the messages suggest (None: library
    wording). Use it as a context manager, or call ``close()``, to release the lock.

    absent_means: {key: value} of settings added after folders were made without them: a
    folder whose settings.json lacks the key resumes when the current value is the one its
    runs had (settings.json is left as it is).
    adopt: keys compared only where both sides have them (the content digests, which older
    folders lack and library callers that check nothing may not compute): a folder that
    lacks one takes this opener's value into its settings.json.

    shared: cooperating processes of the same settings (the shards of a sweep) may hold the
    folder at once; each locks the items it works on (``try_child``). The first one in
    claims the folder as above; the others only compare the settings (no temporaries are
    swept while others write). A restart, or an unshared opener, is refused while any
    sharer holds it.
    """

    path = staticmethod(SettingPath)  # RunFolder.path(p): mark a path in the settings

    def __init__(self, path, settings, *, what="run", restart=False, hint_flag="--restart",
                 out_flag="--out", shared=False, absent_means=None, adopt=()):
        self.name = os.fspath(path)  # as given, for messages
        self.root = os.path.abspath(self.name)
        self.what = what
        self._lock = None
        if not isinstance(settings, dict):
            raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
        self.settings = json_safe(settings, self.root)
        # settings added after folders were made without them: {key: the value they had}
        self.absent_means = json_safe(absent_means or {}, self.root)
        self.adopt = tuple(adopt)
        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            raise ToolkitError(f"{self.name} is a file, not a folder; pass another "
                               f"{out_flag or 'folder'}") from None
        except OSError as exc:
            raise ToolkitError(f"cannot create {self.name}: {exc.strerror}") from None
        try:
            lock, joined = self._acquire(shared and not restart)
        except OSError as exc:
            raise ToolkitError(f"cannot lock {self.name}: {exc.strerror} (run folders need a "
                               "file system with flock locks)") from None
        self._lock = lock
        try:
            if not joined:  # the lock file names the process that claimed the folder
                lock.write_holder()
            self._claim(restart, hint_flag, out_flag, joined)
            if shared and not joined:
                lock.share()
        except BaseException:
            self.close()
            raise

    def _acquire(self, shared):
        """(lock, joined): the exclusive lock, or with ``shared`` a shared one when others
        share the folder already (joined). A sharer still claiming holds it exclusively for
        a moment: wait for it."""
        deadline = time.monotonic() + 3 * LOCK_WAIT_S
        while True:
            lock = FolderLock.try_acquire(self.root)
            if isinstance(lock, FolderLock):
                return lock, False
            if shared:
                joined = FolderLock.try_acquire(self.root, shared=True)
                if isinstance(joined, FolderLock):
                    return joined, True
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
            raise in_use_error(self.name, lock)

    # --- opening --------------------------------------------------------------------------

    def _claim(self, restart, hint_flag, out_flag, joined=False):
        """Resume, refuse or start afresh, by the settings recorded in settings.json;
        ``joined`` (a sharer came first): compare only, touch nothing."""
        settings_file = os.path.join(self.root, SETTINGS_NAME)
        other = f"pass another {out_flag}" if out_flag else "use another folder"
        again = f"{hint_flag} to discard it" if hint_flag else "restart=True to discard it"
        if not os.path.exists(settings_file):
            names = sorted(os.listdir(self.root))
            leftovers = [n for n in names if n != LOCK_NAME and not n.startswith(TMP_PREFIX)]
            if leftovers:  # never adopt, sweep nor wipe a folder that is no run folder
                shown = ", ".join(leftovers[:3]) + (", ..." if len(leftovers) > 3 else "")
                raise ToolkitError(
                    f"{self.name} is not empty ({shown}) but holds no {SETTINGS_NAME}, so "
                    f"it is no run folder of this toolkit (or one of an older version); "
                    f"{other}, or empty it yourself")
            _remove_temporaries(self.root)  # a run cut short before its settings.json
        elif restart:
            self._clear(hint_flag)
        else:
            if not joined:
                _remove_temporaries(self.root)
            try:
                with open(settings_file) as f:
                    stored = json.load(f)
                if not isinstance(stored, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                raise ToolkitError(f"{settings_file} is unreadable ({exc}); {other}, or "
                                   f"{again}") from None
            adopted = {key: self.settings[key] for key in self.adopt
                       if key not in stored and key in self.settings}
            compared = {key: value for key, value in self.settings.items()
                        if key not in self.adopt or key in stored}
            stored_compared = {key: value for key, value in stored.items()
                               if key not in self.adopt or key in self.settings}
            diffs = [(key, old, new) for key, old, new in settings_diff(stored_compared, compared)
                     if not (old is _ABSENT and key in self.absent_means
                             and _equal(new, self.absent_means[key]))]
            if not diffs:
                if adopted and not joined:  # an older folder: record what it lacked
                    files.write_json(settings_file, dict(stored, **adopted))
                return
            listed = "; ".join(f"{key}: {_show(old)} there, {_show(new)} now"
                               for key, old, new in diffs)
            raise ToolkitError(f"{self.name} holds {_article(self.what)} {self.what} of other "
                               f"settings ({listed}); {other}, or {again}")
        files.write_json(settings_file, self.settings)

    def _clear(self, hint_flag=None):
        """Delete everything but our lock, nested run folders included (refused while
        another process holds one of them), after saying on stderr what goes
        (``discard_summary``). settings.json goes last, so that a restart cut short still
        refuses other settings."""
        held = []
        try:
            for child in _nested_run_folders(self.root):
                lock = FolderLock.try_acquire(child, create=False)
                if lock is None:
                    continue  # removed meanwhile
                if not isinstance(lock, FolderLock):
                    shown = os.path.join(self.name, os.path.relpath(child, self.root))
                    raise in_use_error(shown, lock)
                held.append(lock)
            summary = discard_summary(self.root)
            if summary:
                print(f"{hint_flag or 'restart'}: discarding the {self.what} in {self.name}: "
                      f"{summary}", file=sys.stderr, flush=True)
            for entry in os.scandir(self.root):
                if entry.name in (LOCK_NAME, SETTINGS_NAME):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
            settings_file = os.path.join(self.root, SETTINGS_NAME)
            if os.path.lexists(settings_file):
                os.unlink(settings_file)
        finally:
            for lock in held:
                lock.release()

    # --- files ----------------------------------------------------------------------------

    def file(self, *parts):
        """The absolute path of ``parts`` inside the folder (ValueError if it leaves it)."""
        path = os.path.normpath(os.path.join(self.root, *[os.fspath(p) for p in parts]))
        if _inside(path, self.root) is None:
            raise ValueError(f"{os.path.join(*parts)!r} is not inside the run folder {self.name}")
        return path

    def _target(self, rel):
        """The path a write goes to; never the lock, the settings or a temporary."""
        self._check_open()
        path = self.file(rel)
        name = os.path.basename(path)
        if name.startswith(TMP_PREFIX) or path in (self.file(LOCK_NAME), self.file(SETTINGS_NAME)):
            raise ValueError(f"{rel!r} is reserved in the run folder {self.name}")
        return path

    def _check_open(self):
        if self._lock is None:
            raise RuntimeError(f"the run folder {self.name} is closed")

    def resolve(self, stored):
        """A path as stored in the settings, made absolute again (relative = inside)."""
        return os.path.normpath(os.path.join(self.root, stored))

    def has(self, rel):
        """Whether ``rel`` is a finished file (a temporary never is)."""
        path = self.file(rel)
        return not os.path.basename(path).startswith(TMP_PREFIX) and os.path.isfile(path)

    @contextlib.contextmanager
    def atomic(self, rel):
        """Yield a temporary path beside ``rel``; it is renamed onto ``rel`` when the body
        succeeds and deleted when it raises (files.atomic_path)."""
        with files.atomic_path(self._target(rel)) as tmp:
            yield tmp

    def write_json(self, rel, obj):
        """Write JSON atomically (NaN as null, sorted keys)."""
        files.write_json(self._target(rel), json_safe(obj, self.root, rel))

    def read_json(self, rel):
        with open(self.file(rel)) as f:
            return json.load(f)

    def write_text(self, rel, text):
        files.write_text(self._target(rel), text)

    def listing(self, rel_dir="", suffix=None):
        """Sorted absolute paths of the finished files in ``rel_dir`` (not recursive):
        never a temporary, nor a run folder's lock and settings."""
        folder = self.file(rel_dir)
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        run_folder = LOCK_NAME in names
        paths = []
        for name in sorted(names):
            if name.startswith(TMP_PREFIX) or name == LOCK_NAME:
                continue
            if run_folder and name == SETTINGS_NAME:
                continue
            if suffix is not None and not name.endswith(suffix):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                paths.append(path)
        return paths

    # --- nested things --------------------------------------------------------------------

    def child(self, rel, settings, **kwargs):
        """A nested RunFolder at ``rel`` with its own lock and settings."""
        self._check_open()
        child = RunFolder(self.file(rel), settings, **kwargs)
        child.name = os.path.join(self.name, rel)
        return child

    def try_child(self, rel, settings, **kwargs):
        """``child``, or None while another process holds it (sharers split work so)."""
        try:
            return self.child(rel, settings, **kwargs)
        except FolderInUse:
            return None

    def records(self, name):
        """Per-item JSON results in ``<folder>/<name>/<item id>.json``."""
        return Records(self, name)

    # --- closing --------------------------------------------------------------------------

    def close(self):
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def closed(self):
        return self._lock is None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __fspath__(self):
        return self.root

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the OS releases the lock anyway
            pass

    def __repr__(self):
        return f"RunFolder({self.name!r}, what={self.what!r}{', closed' if self.closed else ''})"


class Records:
    """Per-item results of a run folder, one JSON file per item id, written atomically
    (NaN stored as null, read back as None)."""

    def __init__(self, folder, name):
        self.folder = folder
        self.name = name
        self.dir = folder.file(name)

    def path(self, item_id):
        item_id = str(item_id)
        if (not item_id or item_id.startswith(".") or os.sep in item_id
                or (os.altsep and os.altsep in item_id)):
            raise ValueError(f"{item_id!r} is not a usable item id (no '/', no leading '.')")
        return os.path.join(self.dir, item_id + ".json")

    def _rel(self, item_id):
        return os.path.relpath(self.path(item_id), self.folder.root)

    def has(self, item_id):
        return self.folder.has(self._rel(item_id))

    def read(self, item_id):
        return self.folder.read_json(self._rel(item_id))

    def write(self, item_id, record):
        self.folder.write_json(self._rel(item_id), record)

    def ids(self):
        """Sorted ids of the finished records."""
        return [os.path.basename(p)[:-len(".json")]
                for p in self.folder.listing(self.name, suffix=".json")]

    def __contains__(self, item_id):
        return self.has(item_id)
