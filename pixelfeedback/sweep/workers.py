"""Who trains which run: this process in plan order, or one worker process per device
(``--gpus``, or ``--workers`` CPU workers), each taking the next run no one holds; the
progress bar over the sweep's runs; waiting for the stage-1 baseline that another process
trains."""
import copy
import os
import sys
import time

from pixelfeedback import reports
from pixelfeedback.messages import note
from pixelfeedback.sweep.one_run import run_one
from pixelfeedback.sweep.plan import BASELINE, Run, result_file
from pixelfeedback.sweep.store import load_results, open_sweep_folder, read_result
from pixelfeedback.training import threads_env
from python_layers import ToolkitError, die_with_parent


class SweepProgress:
    """One bar for the sweep (runs finished of this process's runs) and a line per run."""

    def __init__(self, cfg, folder, runs, lines=True):
        from tqdm import tqdm

        self.folder, self.runs, self.lines = folder, runs, lines
        self.seen = {run for run in runs if folder.has(result_file(run))}
        self.bar = tqdm(total=len(runs), initial=len(self.seen), desc="Table 3.1 sweep",
                        unit="run", disable=not cfg.progress, dynamic_ncols=True)

    def done(self, record):
        if not self.lines:  # a worker process: its parent writes the line
            return
        self.bar.write(f"{record['run']}: mean IoU {record['mean_iou']:.4f}, loss "
                       f"{reports.fmt(record['first_loss'])} -> "
                       f"{reports.fmt(record['last_loss'])}, {record['seconds']:.0f} s"
                       + (f", resumed from iteration {record['resumed_from'][-1]}"
                          if record.get("resumed") else ""), file=sys.stderr)
        self.bar.update(1)

    def poll(self):
        """Count the runs other processes finished (the parent of device workers)."""
        for run in self.runs:
            if run not in self.seen:
                record = read_result(self.folder, run)
                if record is not None:
                    self.seen.add(run)
                    self.done(record)

    def close(self):
        self.bar.close()


def run_planned(cfg, folder, on_result=None, lines=True):
    """This process's runs in order; returns those other processes held. ``lines``: a
    line per finished run (a worker process leaves them to its parent)."""
    runs = cfg.shard_runs()
    bar = SweepProgress(cfg, folder, runs, lines)
    busy = []
    try:
        for run in runs:
            if run.loss != BASELINE and cfg.baseline_from:
                wait_for_baseline(cfg, folder)
            done = folder.has(result_file(run))
            record = run_one(cfg, folder, run)
            if record is None:
                busy.append(run)
                continue
            if not done:
                bar.seen.add(run)
                bar.done(record)
            if on_result:
                on_result(record)
    finally:
        bar.close()
    return busy


def wait_for_baseline(cfg, folder, poll_s=5.0):
    """The fine-tunes need the baseline: train it, or wait while another process does."""
    baseline = Run(BASELINE, 0.0, cfg.seeds[0])
    waited = False
    while run_one(cfg, folder, baseline) is None:
        if not waited and cfg.progress:
            note("waiting for the stage-1 baseline, which another process is training")
        waited = True
        time.sleep(poll_s)


def _device_worker(cfg, device, parent, errors):
    """One worker process of ``--gpus``: the runs no other worker holds, on ``device``.
    It dies with the sweep process (as each of its trainers dies with it)."""
    dies_with_parent = die_with_parent(parent)
    if dies_with_parent:
        dies_with_parent()
    os.environ.update(threads_env(cfg.threads))  # before Caffe loads (its evaluation)
    cfg.gpu, cfg.devices, cfg.workers, cfg.progress = device, None, 1, False
    try:
        with open_sweep_folder(cfg) as folder:
            run_planned(cfg, folder, lines=False)
    except ToolkitError as exc:
        errors.put(f"{'CPU' if device is None else f'GPU {device}'}: {exc}")
        sys.exit(2)


def run_on_devices(cfg, folder, on_result):
    """One worker process per device, each taking the next run no one holds; the parent
    shows the progress. A worker's error stops nothing else and is raised at the end.
    Returns the runs not finished when the workers stopped."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    errors = context.Queue()
    trainers = cfg.trainers()
    cfg = copy.copy(cfg)
    cfg.threads = cfg.training_threads()  # resolved here, for every worker alike
    runs = cfg.shard_runs()
    bar = SweepProgress(cfg, folder, runs)
    workers = [context.Process(target=_device_worker, args=(cfg, device, os.getpid(), errors),
                               name=f"sweep-{'cpu' if device is None else 'gpu'}-worker-{i}",
                               daemon=True)
               for i, device in enumerate(trainers)]
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            bar.poll()
            time.sleep(1.0)
        bar.poll()
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
        bar.close()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    failed = [w for w in workers if w.exitcode not in (0, 2)]
    if messages or failed:
        messages += [f"worker {w.name} stopped with exit code {w.exitcode}" for w in failed]
        raise ToolkitError("a sweep worker failed: " + "; ".join(messages))
    if on_result:
        for record in load_results(cfg.out):
            on_result(record)
    return [run for run in runs if not folder.has(result_file(run))]
