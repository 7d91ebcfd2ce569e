"""The sweep's folder: one shared run folder (pixelfeedback.runfolder) holding the result of
every finished run (``results/<run>.json``), each run's training folder (``runs/<run>/``),
and the plans of every sweep that ran into it (``plans/<hash>.json``), so that a table
rebuilt later counts what is unfinished against all of them."""
import contextlib
import fcntl
import glob
import hashlib
import json
import os

from pixelfeedback import files
from pixelfeedback.messages import note
from pixelfeedback.runfolder import CONTENTS, RunFolder
from pixelfeedback.sweep.plan import result_file, run_name
from pixelfeedback.sweep.settings import folder_history

PLANS_DIR = "plans"


def open_sweep_folder(cfg, restart=False):
    """The sweep's run folder, shared by the processes of these settings (shards, GPU
    workers, a second sweep that helps): each takes the runs no one holds."""
    return RunFolder(cfg.out, cfg.fingerprint(), what="Table 3.1 sweep", restart=restart,
                     shared=True, absent_means=folder_history(cfg), adopt=(CONTENTS,))


def record_plan(folder, cfg):
    """Note the runs this sweep plans (all shards', one file per distinct plan)."""
    names = [run_name(run) for run in cfg.runs()]
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    rel = os.path.join(PLANS_DIR, digest + ".json")
    if not folder.has(rel):
        folder.write_json(rel, names)


def planned_run_names(out):
    """Every run any sweep into ``out`` planned (``record_plan``), in first-seen order. A
    plan that does not read (the sweep's own note, cut short) is set aside with a warning;
    the next sweep into the folder notes its plan again."""
    names = []
    for path in sorted(glob.glob(os.path.join(out, PLANS_DIR, "*.json"))):
        try:
            with open(path) as f:
                plan = json.load(f)
            if not isinstance(plan, list) or not all(isinstance(n, str) for n in plan):
                raise ValueError("not a list of run names")
        except ValueError as exc:
            set_aside = files.set_aside([path])[0]
            note(f"WARNING: {os.path.join(PLANS_DIR, os.path.basename(path))} is unreadable "
                 f"({exc}); set aside as {set_aside}: the runs it planned are not counted "
                 "until a sweep with those settings runs again")
            continue
        names += [name for name in plan if name not in names]
    return names


def _read_record(path):
    """The result record at ``path``, or None after setting an unreadable one aside (empty
    or cut short by a crash on a filesystem without atomic rename, or edited by hand): its
    run counts as unfinished and is redone."""
    try:
        with open(path) as f:
            record = json.load(f)
        if isinstance(record, dict) and "run" in record and "mean_iou" in record:
            return record
        problem = "is no result record"
    except ValueError as exc:
        problem = f"is unreadable ({exc})"
    except FileNotFoundError:  # set aside by another process meanwhile
        return None
    try:
        names = files.set_aside([path])
    except FileNotFoundError:
        return None
    note(f"WARNING: {os.path.join('results', os.path.basename(path))} {problem}; set aside "
         f"as {names[0]}: its run is redone (its training, if finished, is kept)")
    return None


def read_result(folder, run):
    """The record of a finished ``run`` in the sweep folder, else None."""
    rel = result_file(run)
    return _read_record(folder.file(rel)) if folder.has(rel) else None


def load_results(out):
    """The result records of every finished run in ``out`` (unreadable ones set aside)."""
    records = (_read_record(path)
               for path in sorted(glob.glob(os.path.join(out, "results", "*.json"))))
    return [record for record in records if record is not None]


@contextlib.contextmanager
def table_lock(out):
    """Shards finishing at once write the table one after the other, each from the results
    as they are when it writes (so the last one written is complete)."""
    with open(os.path.join(out, ".table.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
