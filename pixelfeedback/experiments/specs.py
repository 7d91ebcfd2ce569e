"""One ``Experiment`` spec per experiment: everything the runner, the command line and the
summary need to know about it, so that adding an experiment touches this file alone (plus
its record builder, table and figure functions).
"""
import dataclasses
import typing

from pixelfeedback.experiments import figures, records, tables
from pixelfeedback.experiments.measures import nan_mean
from pixelfeedback.fixations import SHIFTS
from pixelfeedback.reports import fmt


@dataclasses.dataclass(frozen=True)
class Experiment:
    """What makes one experiment.

    ``settings``: the names of the ``Session.setting_values`` its records depend on,
    beyond the model, data and input (which every experiment's records depend on).
    ``table(records, session)`` -> (rows, extra result fields); ``figure(path, rows,
    session)`` draws the summary figure; ``summary(result)`` -> the lines printed below
    the common one. ``figures_dir``: a folder of per-image figures in the output folder.
    ``reforwards``: its records run their own forward passes (which replace the net's
    blobs), so it comes after the experiments that read the image's forward pass.
    """
    name: str
    stem: str
    help: str
    build_record: typing.Callable
    settings: typing.Tuple[str, ...]
    columns: typing.Callable
    table: typing.Callable
    figure: typing.Callable
    summary: typing.Callable = lambda result: []
    figures_dir: typing.Optional[str] = None
    reforwards: bool = False


def _location_table(recs, session):
    rows, scores = tables.location_table(recs, session.names)
    return rows, dict(mean_iou=scores["mean_iou"], pixel_accuracy=scores["pixel_accuracy"])


def _location_summary(result):
    mean = result["rows"][-1]
    return [f"  mean over the {len(result['rows']) - 1} object classes (the CSV's "
            f"'{tables.MEAN_ROW}' row): % inside {fmt(mean['mean_pct_inside'])}, "
            f"IoU {fmt(mean['iou'])}"]


def _shift_summary(result):
    mean = result["rows"][-1]
    return [f"  mean % inside over the {len(result['rows']) - 1} object classes (the CSV's "
            f"'{tables.MEAN_ROW}' row): "
            + ", ".join(f"{variant} {fmt(mean[variant])}" for variant in SHIFTS)]


def _salient_table(recs, session):
    skipped = [(record["image"], name) for record in recs for name in record.get("skipped", ())]
    return tables.salient_table(recs), dict(skipped=skipped)


def _salient_summary(result):
    rows = result["rows"]
    lines = [f"  {len(rows)} masked objects; mean drop over them "
             f"{fmt(nan_mean([r['drop'] for r in rows]))} "
             f"({fmt(nan_mean([r['drop_pct'] for r in rows]))} %); per-image figures in "
             f"{result['figures_dir']}"]
    if result["skipped"]:
        lines.append(f"  {len(result['skipped'])} class(es) skipped: no fixation left after "
                     "outlier removal")
    return lines


LOCATION = Experiment(
    name="location", stem="location",
    help="experiment 1 (Figure 2.6): % of the fixations inside the object, beside the IoU",
    build_record=records.location_record, settings=("shift", "void"),
    columns=lambda session: tables.LOCATION_COLUMNS, table=_location_table,
    figure=lambda path, rows, session: figures.location_figure(path, rows[:-1]),
    summary=_location_summary)

SHIFT = Experiment(
    name="shift", stem="shift",
    help="experiment 2 (Figure 2.7): experiment 1 under the none/partial/full shift",
    build_record=records.shift_record, settings=("void",),
    columns=lambda session: tables.SHIFT_COLUMNS,
    table=lambda recs, session: (tables.shift_table(recs, session.names), {}),
    figure=lambda path, rows, session: figures.shift_figure(path, rows),
    summary=_shift_summary)

K_NEEDED = Experiment(
    name="k-needed", stem="k_needed",
    help="experiment 3 (Figure 2.8): the K that captures x of a unit's activation, per layer",
    build_record=records.k_needed_record, settings=("shift", "fractions"),
    columns=lambda session: tables.k_needed_columns(session.options.fractions),
    table=lambda recs, session: (tables.k_needed_table(recs, session.options.fractions,
                                                       session.layer_order), {}),
    figure=lambda path, rows, session: figures.k_needed_figure(path, rows,
                                                               session.options.fractions))

SALIENT = Experiment(
    name="salient", stem="salient",
    help="experiment 4 (Figures 2.9 to 2.11): mask the densest fixations, segment again",
    build_record=records.salient_record,
    settings=("shift", "heatmap", "mask", "mask_threshold", "mask_radius",
              "class_names"),
    columns=lambda session: tables.SALIENT_COLUMNS, table=_salient_table,
    figure=lambda path, rows, session: figures.salient_summary_figure(path, rows,
                                                                      session.names),
    summary=_salient_summary, figures_dir="salient", reforwards=True)

SPECS = {spec.name: spec for spec in (LOCATION, SHIFT, K_NEEDED, SALIENT)}
EXPERIMENTS = tuple(SPECS)
