"""The sweep from start to table: every check first, then the runs not finished yet (this
process, its shard, or one worker per device), the sequential seed rule, and the table
written and printed."""
import copy
import os
import sys

from pixelfeedback.messages import note
from pixelfeedback.sweep import checks
from pixelfeedback.sweep.plan import LOSS_TITLES, result_file, run_name
from pixelfeedback.sweep.store import (load_results, open_sweep_folder, planned_run_names,
                                       record_plan, table_lock)
from pixelfeedback.sweep.summary import summarize, target_met
from pixelfeedback.sweep.table import TABLE_FILES, write_table
from pixelfeedback.sweep.workers import run_on_devices, run_planned
from python_layers import ToolkitError
from python_layers.template_similarity import ALL_LOSS_NAMES


def run_sweep(cfg, on_result=None):
    """Run every run of this process (all, or its ``cfg.shard``) not finished yet; returns
    all result records of the folder.

    ``cfg.out`` is a shared run folder (pixelfeedback.runfolder): other settings are
    refused unless ``cfg.restart``; processes of the same settings split the runs, each
    run locked by the one training it. Everything is checked first (``checks.check``): a
    bad setting, file or image fails before any run trains and before anything is written.
    With ``cfg.devices`` (GPUs) or ``cfg.workers`` (CPU), one worker process per device
    takes the next free run."""
    checks.check(cfg)
    with open_sweep_folder(cfg, cfg.restart) as folder:
        if cfg.val_trained_init and not cfg.baseline_from:
            warn_val_contamination(cfg.init_weights)
        record_plan(folder, cfg)
        if cfg.trainers():
            busy = run_on_devices(cfg, folder, on_result)
        else:
            busy = run_planned(cfg, folder, on_result)
        # a run another process held may have finished since (the baseline always has)
        busy = [run for run in busy if not folder.has(result_file(run))]
        if busy:
            print(f"{len(busy)} run(s) were being trained by other processes "
                  f"({', '.join(run_name(r) for r in busy[:3])}{', ...' if len(busy) > 3 else ''}); "
                  "the table lacks them until they finish: rerun to wait for them",
                  file=sys.stderr, flush=True)
        return load_results(cfg.out)


def run_sequential(cfg, more_seeds, half_width, effect):
    """The sweep with a sequential rule fixed in advance: every loss cell gets
    ``cfg.seeds``, both controls those and ``more_seeds`` (so every later pair has its
    controls); then each loss cell whose paired interval misses the target
    (``summary.target_met``) gets ``more_seeds`` too, once. Returns (all results, the
    cells (loss, lambda) that were extended)."""
    more_seeds = tuple(int(s) for s in more_seeds)
    control_seeds = cfg.seeds + tuple(s for s in more_seeds if s not in cfg.seeds)
    first = copy.copy(cfg)
    first.control_seeds = control_seeds
    results = run_sweep(first)
    # decided on the first seeds alone, so that a resumed sweep extends the same cells
    first_seeds = [r for r in results if r["loss"] not in ALL_LOSS_NAMES or r["seed"] in cfg.seeds]
    rows = summarize(first_seeds, cfg.losses, cfg.lambdas)
    extended = [(row["loss"], row["lam"]) for row in rows if more_seeds
                and row["loss"] in cfg.losses and not target_met(row, half_width, effect)]
    for loss in cfg.losses:
        lambdas = [lam for cell_loss, lam in extended if cell_loss == loss]
        if not lambdas:
            continue
        more = copy.copy(first)
        more.losses, more.lambdas, more.seeds, more.restart = (loss,), tuple(lambdas), \
            more_seeds, False
        if cfg.progress:
            note(f"{LOSS_TITLES[loss]} at λ {', '.join(f'{x:g}' for x in lambdas)}: the "
                 f"paired interval misses the target; adding seeds "
                 f"{', '.join(map(str, more_seeds))}")
        results = run_sweep(more)
    return results, extended


def warn_val_contamination(weights):
    print(f"WARNING: {weights} has seen VOC 2012 val (--val-trained-init): the val mIoU of "
          "its fine-tunes is not a fair measurement, and the table says so. For numbers to "
          "compare, leave --init-weights out: the sweep then trains stage 1 from the ImageNet "
          "init first.", file=sys.stderr, flush=True)


def run_and_report(cfg, table_only=False):
    """Run (or, with ``table_only``, only tabulate) the sweep and print the table."""
    if not table_only:
        run_sweep(cfg)
    elif not os.path.isdir(os.path.join(cfg.out, "results")):
        raise ToolkitError(f"{cfg.out} holds no finished runs (no results/); run the sweep "
                           "first, without --table-only")
    else:
        note("--table-only: the table is rebuilt from every finished run in --out; the "
             "other settings given do nothing")
    with table_lock(cfg.out):
        results = load_results(cfg.out)
        _, markdown = write_table(cfg, results)
    print(markdown)
    finished = {record["run"] for record in results}
    planned = planned_run_names(cfg.out)
    missing = [name for name in planned if name not in finished]
    if missing:
        print(f"{len(missing)} of the {len(planned)} runs planned in {cfg.out} are not "
              f"finished yet (first: {missing[0]}): other shards or workers may still be "
              "training them; rerun the sweep to complete the table")
    print(f"written: {os.path.join(cfg.out, TABLE_FILES[0])} and {TABLE_FILES[1]}")
    return results


def run_from_args(args):
    """tools/reproduce_table.py: the sweep of a parsed command line."""
    from pixelfeedback import cli
    from pixelfeedback.sweep.plan import SweepConfig

    cfg = SweepConfig.from_args(args, progress=cli.show_progress(args))
    return run_and_report(cfg, table_only=args.table_only)
